"""The alarm message, version 1, as published (JSON), and the event names and priorities."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, Final

#: Rhythm events.
VTACH: Final = "VTACH"
AF: Final = "AF"
PAUSE: Final = "PAUSE"
#: Technical (equipment) alarms beside the rhythm events.
NO_SIGNAL: Final = "NO_SIGNAL"
LEADS_OFF: Final = "LEADS_OFF"

PRIORITY: Final[dict[str, str]] = {VTACH: "high", PAUSE: "high", AF: "medium", NO_SIGNAL: "low", LEADS_OFF: "low"}
EVENTS: Final[tuple[str, ...]] = tuple(PRIORITY)


class AlarmState(StrEnum):
    ONSET = "onset"
    ONGOING = "ongoing"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Alarm:
    """One alarm message, as published (JSON). Times: stream clock, except ``published_at``."""

    stream_id: str
    event: str
    state: str
    priority: str
    confidence: float
    onset_time: float
    detected_time: float
    published_at: float
    source: str
    model_version: str
    explanation: str
    #: The linked strip message (``protocol.strip``) for onsets of rhythm events; "" for none.
    strip_id: str = ""
    schema: int = 1

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Alarm:
        data: dict[str, Any] = json.loads(text)
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
