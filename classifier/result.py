"""The result type every classifier returns."""

from __future__ import annotations

from dataclasses import dataclass

from classifier.constants import EventType


@dataclass(frozen=True, slots=True)
class Classification:
    """One decision on one window.

    ``event_index`` counts input samples from the start of the window (None for NORMAL);
    ``source`` is "ml" or "rules"; ``heart_rate_bpm`` is NaN when no beats were found.
    """

    event: EventType
    confidence: float
    event_index: int | None
    explanation: str
    source: str
    heart_rate_bpm: float = float("nan")

    def as_tuple(self) -> tuple[EventType, float, int | None, str]:
        return self.event, self.confidence, self.event_index, self.explanation
