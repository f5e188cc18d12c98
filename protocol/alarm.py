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
        """Parse one message; ValueError (JSON errors included) if it is not a valid alarm."""
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, obj: object) -> Alarm:
        """An alarm from a decoded JSON object, its names and types checked (ValueError if bad):
        whoever reads alarms off a wire or a file must not meet a string where a number goes
        later, in a printer or a sort. Unknown keys are ignored (newer senders may add some)."""
        if not isinstance(obj, dict):
            raise ValueError(f"alarm: expected an object, got {type(obj).__name__}")
        for k in _STR_FIELDS:
            if not isinstance(obj.get(k), str):
                raise ValueError(f"alarm.{k}: missing or not a string")
        for k in _NUM_FIELDS:
            v = obj.get(k)
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise ValueError(f"alarm.{k}: missing or not a number")
        if obj["state"] not in STATES:
            raise ValueError(f"alarm.state: {obj['state']!r} is not one of {sorted(STATES)}")
        if not isinstance(obj.get("strip_id", ""), str):
            raise ValueError("alarm.strip_id: not a string")
        schema = obj.get("schema", 1)
        if isinstance(schema, bool) or not isinstance(schema, int):
            raise ValueError("alarm.schema: not an integer")
        kw: dict[str, Any] = {k: obj[k] for k in cls.__dataclass_fields__ if k in obj}
        kw.update({k: float(obj[k]) for k in _NUM_FIELDS})
        return cls(**kw)


_STR_FIELDS: Final = ("stream_id", "event", "state", "priority", "source", "model_version", "explanation")
_NUM_FIELDS: Final = ("confidence", "onset_time", "detected_time", "published_at")
#: The values of ``Alarm.state``.
STATES: Final = frozenset(s.value for s in AlarmState)
