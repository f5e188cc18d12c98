"""The per-stream, per-event alarm state machine and its policies. No I/O here."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from protocol.alarm import AF, LEADS_OFF, NO_SIGNAL, PAUSE, PRIORITY, VTACH, Alarm, AlarmState

#: ``instant_confidence`` that no observation reaches: onset needs ``onset_count`` positives.
NEVER = math.inf


@dataclass(frozen=True, slots=True)
class AlarmPolicy:
    """How much evidence turns observations into an alarm and back.

    ``onset_count`` consecutive positive observations, or one at ``instant_confidence``,
    raise the alarm once the event has lasted ``min_duration_s``; ``clear_s`` seconds without a positive resolve it. High-priority
    alarms latch: they need ``latch_clear_s`` instead, so a VT that flickers stays one alarm.
    """

    onset_count: int = 2
    instant_confidence: float = 0.9
    clear_s: float = 10.0
    latch_clear_s: float = 20.0
    ongoing_every_s: float = 30.0
    #: The event must also have been seen without a break for this long (stream s) before onset.
    min_duration_s: float = 0.0


DEFAULT_POLICIES: dict[str, AlarmPolicy] = {
    VTACH: AlarmPolicy(onset_count=2, instant_confidence=0.85),
    PAUSE: AlarmPolicy(onset_count=1, instant_confidence=0.0, clear_s=6.0, latch_clear_s=6.0),
    # An AF episode is AF that lasts 30 s (the usual clinical definition): shorter runs of
    # irregular windows, mostly ectopy, raise nothing.
    AF: AlarmPolicy(onset_count=3, instant_confidence=NEVER, clear_s=30.0, min_duration_s=30.0),
    NO_SIGNAL: AlarmPolicy(onset_count=1, instant_confidence=0.0, clear_s=2.0, latch_clear_s=2.0),
    LEADS_OFF: AlarmPolicy(onset_count=2, instant_confidence=NEVER, clear_s=4.0, latch_clear_s=4.0),
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

    @classmethod
    def restored(cls, alarm: Alarm, policy: AlarmPolicy) -> EventTracker:
        """An active tracker continuing ``alarm`` after a restart: same onset, no second onset."""
        return cls(
            alarm.event,
            policy,
            active=True,
            first_onset=alarm.onset_time,
            last_positive=alarm.detected_time,
            last_emit=alarm.detected_time,
            onset_time=alarm.onset_time,
        )

    def shift(self, dt: float) -> None:
        """Move every stored time by ``dt``: the stream clock jumped and the bed follows it."""
        self.last_positive += dt
        self.last_emit += dt
        self.onset_time += dt
        if self.first_onset is not None:
            self.first_onset += dt

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
                lasted = obs.time - self.first_onset >= self.policy.min_duration_s
                if lasted and (
                    self.streak >= self.policy.onset_count or obs.confidence >= self.policy.instant_confidence
                ):
                    self.active = True
                    self.onset_time = self.first_onset
                    self.last_emit = obs.time
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
            why = f"not seen for {obs.time - self.last_positive:.1f} s (clears after {hold:.0f} s)"
            return AlarmState.RESOLVED, replace(
                obs, explanation=f"{why}; {obs.explanation}" if obs.explanation else why
            )
        return None
