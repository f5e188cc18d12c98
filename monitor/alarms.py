"""Alarm messages and the per-stream, per-event alarm state machine. No I/O here."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

#: Technical (equipment) alarms beside the rhythm events.
NO_SIGNAL = "NO_SIGNAL"
LEADS_OFF = "LEADS_OFF"

PRIORITY = {"VTACH": "high", "PAUSE": "high", "AF": "medium", NO_SIGNAL: "low", LEADS_OFF: "low"}


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
    schema: int = 1

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> Alarm:
        data: dict[str, Any] = json.loads(text)
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


@dataclass(frozen=True, slots=True)
class AlarmPolicy:
    """How much evidence turns observations into an alarm and back.

    ``onset_count`` consecutive positive observations, or one at ``instant_confidence``,
    raise the alarm; ``clear_s`` seconds without a positive resolve it. High-priority
    alarms latch: they need ``latch_clear_s`` instead, so a VT that flickers stays one alarm.
    """

    onset_count: int = 2
    instant_confidence: float = 0.9
    clear_s: float = 10.0
    latch_clear_s: float = 20.0
    ongoing_every_s: float = 30.0


DEFAULT_POLICIES: dict[str, AlarmPolicy] = {
    "VTACH": AlarmPolicy(onset_count=2, instant_confidence=0.85),
    "PAUSE": AlarmPolicy(onset_count=1, instant_confidence=0.0, clear_s=6.0, latch_clear_s=6.0),
    "AF": AlarmPolicy(onset_count=3, instant_confidence=1.01, clear_s=30.0),
    NO_SIGNAL: AlarmPolicy(onset_count=1, instant_confidence=0.0, clear_s=2.0, latch_clear_s=2.0),
    LEADS_OFF: AlarmPolicy(onset_count=2, instant_confidence=1.01, clear_s=4.0, latch_clear_s=4.0),
}


@dataclass(slots=True)
class Observation:
    """One verdict on one event for one stream at ``time`` (stream clock)."""

    present: bool
    time: float
    confidence: float = 0.0
    onset_time: float | None = None
    source: str = "rules"
    explanation: str = ""


@dataclass(slots=True)
class EventTracker:
    """State machine of one event on one stream: idle -> onset -> ongoing -> resolved -> idle."""

    event: str
    policy: AlarmPolicy
    active: bool = False
    streak: int = 0
    first_onset: float | None = None
    last_positive: float = 0.0
    last_emit: float = 0.0
    onset_time: float = 0.0
    best: Observation | None = field(default=None)

    @property
    def latched(self) -> bool:
        return PRIORITY.get(self.event) == "high"

    def observe(self, obs: Observation) -> tuple[AlarmState, Observation] | None:
        """Feed one observation; return the state to publish, if any."""
        if obs.present:
            self.streak += 1
            self.last_positive = obs.time
            if self.first_onset is None:
                self.first_onset = obs.onset_time if obs.onset_time is not None else obs.time
            if not self.active:
                if self.streak >= self.policy.onset_count or obs.confidence >= self.policy.instant_confidence:
                    self.active = True
                    self.onset_time = self.first_onset
                    self.last_emit = obs.time
                    self.best = obs
                    return AlarmState.ONSET, obs
                return None
            if obs.time - self.last_emit >= self.policy.ongoing_every_s:
                self.last_emit = obs.time
                return AlarmState.ONGOING, obs
            return None
        self.streak = 0
        if not self.active:
            self.first_onset = None
            return None
        hold = self.policy.latch_clear_s if self.latched else self.policy.clear_s
        if obs.time - self.last_positive >= hold:
            self.active = False
            self.first_onset = None
            return AlarmState.RESOLVED, obs
        return None
