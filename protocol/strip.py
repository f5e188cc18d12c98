"""The alarm strip and the bed telemetry messages, version 1 (JSON).

An alarm message stays small for pagers; the ECG that justifies it travels beside it as a
*strip*, linked by ``Alarm.strip_id``: both leads from about 8 s before onset to detection (at
most ``MAX_STRIP_S``), with the detected beats. *Telemetry* is the low-rate per-bed feed a
central station draws: the newest samples decimated for a screen, heart rate, rhythm call, lead
quality and the active alarms.

Samples travel as int16 counts (``mV * gain``), little-endian, base64, one string per lead. The
count ``NO_DATA`` (-32768) marks a sample with no data (a gap, or a missing second lead), so
nothing is faked. Readers check ``schema`` and the sizes, and raise ``ValueError`` on a message
they cannot trust.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from protocol.alarm import Alarm
from protocol.wire import is_valid_stream_id

SCHEMA: Final = 1
#: int16 count that means "no sample here" (gap, lead absent).
NO_DATA: Final = -32768
#: Counts per mV on the wire: 5 uV resolution, +-163 mV range.
GAIN: Final = 200.0
#: Strip geometry, seconds of stream time.
PRE_ONSET_S: Final = 8.0
MAX_STRIP_S: Final = 20.0
#: A strip or telemetry message never holds more samples per lead than this (reader's bound).
MAX_SAMPLES: Final = 60 * 1000


def encode_lead(mv: NDArray[np.floating], gain: float = GAIN) -> str:
    """mV (NaN = no data) -> base64 of int16 counts; values beyond int16 are clipped."""
    x = np.asarray(mv, dtype=np.float64)
    counts = np.full(x.shape, NO_DATA, dtype="<i2")
    ok = np.isfinite(x)
    counts[ok] = np.clip(np.round(x[ok] * gain), NO_DATA + 1, 32767).astype("<i2")
    return base64.b64encode(counts.tobytes()).decode("ascii")


def decode_lead(text: str, gain: float = GAIN) -> NDArray[np.float32]:
    """The inverse of ``encode_lead``: mV as float32, NaN where there was no data."""
    raw = base64.b64decode(text.encode("ascii"), validate=True)
    if len(raw) % 2 or len(raw) // 2 > MAX_SAMPLES:
        raise ValueError(f"lead of {len(raw)} bytes: not whole int16 samples, or over {MAX_SAMPLES} samples")
    counts = np.frombuffer(raw, dtype="<i2")
    out = counts.astype(np.float32) / np.float32(gain)
    out[counts == NO_DATA] = np.nan
    return out


#: What ``strip_id_for`` makes: also the strip's file name, so nothing else is accepted.
STRIP_ID_RE: Final = re.compile(r"[A-Za-z0-9_:-]{1,64}\.[A-Z_]{1,16}\.-?[0-9]{1,20}")


def _object(text: str | bytes) -> dict[str, Any]:
    data = json.loads(text)
    if not isinstance(data, dict):
        raise ValueError(f"expected a JSON object, got {type(data).__name__}")
    return data


@contextmanager
def _malformed(kind: str) -> Iterator[None]:
    """Any failure while reading a message (deep nesting, a list where a number belongs, a huge
    integer) becomes the ValueError that readers catch."""
    try:
        yield
    except ValueError:
        raise
    except (AttributeError, IndexError, KeyError, TypeError, OverflowError, RecursionError) as exc:
        raise ValueError(f"malformed {kind}: {type(exc).__name__}: {str(exc)[:120]}") from None


def strip_id_for(alarm: Alarm) -> str:
    """``<stream>.<event>.<detected ms>``: unique per alarm message, and a safe file name."""
    return f"{alarm.stream_id}.{alarm.event}.{round(alarm.detected_time * 1000)}"


def _leads_of(data: dict[str, Any], gain: float) -> list[NDArray[np.float32]]:
    leads = [decode_lead(s, gain) for s in data["leads"]]
    if not 1 <= len(leads) <= 2 or len({len(x) for x in leads}) != 1:
        raise ValueError("need one or two leads of equal length")
    return leads


def _finite(data: dict[str, Any], *keys: str) -> None:
    for k in keys:
        v = data.get(k)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            raise ValueError(f"{k}: {v!r} is not a finite number")


def _alarm_of(data: Any) -> Alarm:
    """The embedded alarm, with its types checked (a strip is rendered without further checks)."""
    if not isinstance(data, dict):
        raise ValueError("alarm: not an object")
    _finite(data, "confidence", "onset_time", "detected_time", "published_at")
    return Alarm.from_dict(data)


def _check_schema(data: dict[str, Any], kind: str) -> None:
    if data.get("kind") != kind or data.get("schema") != SCHEMA:
        raise ValueError(
            f"not a {kind} message of schema {SCHEMA}: kind {data.get('kind')!r} schema {data.get('schema')!r}"
        )


@dataclass(frozen=True, slots=True)
class Strip:
    """The ECG behind one alarm message. ``t0``: stream time of the first sample (s); ``fs`` Hz;
    ``leads`` in mV (NaN = no data); ``beats``: sample indices of the detected beats."""

    alarm: Alarm
    t0: float
    fs: float
    leads: tuple[NDArray[np.float32], ...]
    beats: tuple[int, ...] = ()
    heart_rate: float = math.nan

    @property
    def strip_id(self) -> str:
        return self.alarm.strip_id or strip_id_for(self.alarm)

    @property
    def duration(self) -> float:
        return len(self.leads[0]) / self.fs if self.leads else 0.0

    def to_json(self) -> str:
        return json.dumps(
            {
                "schema": SCHEMA,
                "kind": "strip",
                "strip_id": self.strip_id,
                "alarm": asdict(self.alarm),
                "t0": round(self.t0, 4),
                "fs": self.fs,
                "gain": GAIN,
                "leads": [encode_lead(x) for x in self.leads],
                "beats": list(self.beats),
                "heart_rate": None if not math.isfinite(self.heart_rate) else round(self.heart_rate, 1),
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Strip:
        """The strip, or ValueError for anything malformed (never another exception: a hostile
        message must not end the subscriber or the station that reads it)."""
        with _malformed("strip"):
            strip = cls._parse(_object(text))
        if not STRIP_ID_RE.fullmatch(strip.strip_id):
            raise ValueError(f"strip id {strip.strip_id[:80]!r} is not <stream>.<EVENT>.<ms>")
        return strip

    @classmethod
    def _parse(cls, data: dict[str, Any]) -> Strip:
        _check_schema(data, "strip")
        _finite(data, "fs", "gain", "t0")
        fs, gain = float(data["fs"]), float(data["gain"])
        if not (1.0 <= fs <= 2000.0 and 0.01 <= gain <= 1e6):
            raise ValueError(f"strip rate {fs} Hz or gain {gain} out of range")
        leads = _leads_of(data, gain)
        if len(leads[0]) > (MAX_STRIP_S + 1.0) * fs:
            raise ValueError(f"strip of {len(leads[0]) / fs:.1f} s: longer than {MAX_STRIP_S:.0f} s")
        beats = tuple(int(b) for b in data.get("beats", []))
        if any(not 0 <= b < len(leads[0]) for b in beats):
            raise ValueError("beat index outside the strip")
        hr = data.get("heart_rate")
        return cls(
            alarm=_alarm_of(data.get("alarm")),
            t0=float(data["t0"]),
            fs=fs,
            leads=tuple(leads),
            beats=beats,
            heart_rate=math.nan if hr is None else float(hr),
        )


@dataclass(frozen=True, slots=True)
class Telemetry:
    """One bed's low-rate screen feed. ``leads``: the samples since the last message, ending at
    ``t_end`` (stream time), at ``fs`` Hz; ``alarms``: active event -> priority."""

    stream_id: str
    t_end: float
    fs: float
    leads: tuple[NDArray[np.float32], ...]
    heart_rate: float
    rhythm: str
    confidence: float
    quality: tuple[str, str]
    alarms: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "schema": SCHEMA,
                "kind": "telemetry",
                "stream_id": self.stream_id,
                "t_end": round(self.t_end, 4),
                "fs": self.fs,
                "gain": GAIN,
                "leads": [encode_lead(x) for x in self.leads],
                "heart_rate": None if not math.isfinite(self.heart_rate) else round(self.heart_rate, 1),
                "rhythm": self.rhythm,
                "confidence": round(self.confidence, 3),
                "quality": list(self.quality),
                "alarms": self.alarms,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Telemetry:
        """The telemetry, or ValueError for anything malformed; every number finite, so one bed's
        bad message cannot break a page that shows all beds."""
        with _malformed("telemetry"):
            t = cls._parse(_object(text))
        if not is_valid_stream_id(t.stream_id):
            raise ValueError(f"telemetry stream id {t.stream_id[:80]!r} is not valid")
        if not (math.isfinite(t.confidence) and (math.isnan(t.heart_rate) or math.isfinite(t.heart_rate))):
            raise ValueError("telemetry confidence or heart rate not finite")
        return t

    @classmethod
    def _parse(cls, data: dict[str, Any]) -> Telemetry:
        _check_schema(data, "telemetry")
        _finite(data, "fs", "gain", "t_end")
        fs, gain = float(data["fs"]), float(data["gain"])
        if not (1.0 <= fs <= 2000.0 and 0.01 <= gain <= 1e6):
            raise ValueError(f"telemetry rate {fs} Hz or gain {gain} out of range")
        hr = data.get("heart_rate")
        q = data.get("quality", ["-", "-"])
        return cls(
            stream_id=str(data["stream_id"]),
            t_end=float(data["t_end"]),
            fs=fs,
            leads=tuple(_leads_of(data, gain)) if data.get("leads") else (),
            heart_rate=math.nan if hr is None else float(hr),
            rhythm=str(data.get("rhythm", "-")),
            confidence=float(data.get("confidence", 0.0)),
            quality=(str(q[0]), str(q[1])),
            alarms={str(k): str(v) for k, v in dict(data.get("alarms", {})).items()},
        )
