"""What the station knows: every bed's latest telemetry and recent waveform, the alarm list and
the strips. Synchronous and bounded, with the clock passed in; the web layer only reads it.

Bounds hold for any number of beds and any alarm rate: ``WAVE_CHUNKS`` telemetry chunks per bed,
``MAX_ALARMS`` alarms in the list, ``MAX_STRIPS`` strips. A bed silent for ``STALE_S`` is shown
stale (its daemon or its sender is gone); after ``FORGET_S`` it leaves the page.
"""

from __future__ import annotations

import math
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np

from protocol.alarm import PRIORITY, Alarm, AlarmState
from protocol.strip import Strip, Telemetry

#: Telemetry chunks kept per bed (about one per second): what a newly opened page starts with.
WAVE_CHUNKS: Final = 8
MAX_ALARMS: Final = 500
MAX_STRIPS: Final = 300
STALE_S: Final = 5.0
FORGET_S: Final = 600.0
RANK: Final = {"high": 3, "medium": 2, "low": 1}


@dataclass(slots=True)
class Chunk:
    seq: int
    t_end: float
    fs: float
    lead: list[float | None]  # the lead shown: mV rounded to 10 uV, None = no data


@dataclass(slots=True)
class BedView:
    stream_id: str
    source: str
    last_seen: float
    heart_rate: float = math.nan
    rhythm: str = "-"
    confidence: float = 0.0
    quality: tuple[str, str] = ("-", "-")
    alarms: dict[str, str] = field(default_factory=dict)  # active event -> priority
    #: Stream time of the last alarm message applied: telemetry built before it is older news.
    alarm_t: float = -math.inf
    chunks: deque[Chunk] = field(default_factory=lambda: deque(maxlen=WAVE_CHUNKS))
    seq: int = 0

    def top_priority(self) -> int:
        return max((RANK.get(p, 0) for p in self.alarms.values()), default=0)

    def summary(self, now: float) -> dict[str, Any]:
        return {
            "id": self.stream_id,
            "source": self.source,
            "hr": None if not math.isfinite(self.heart_rate) else round(self.heart_rate),
            "rhythm": self.rhythm,
            "confidence": round(self.confidence, 2),
            "quality": list(self.quality),
            "alarms": [
                {"event": e, "priority": p} for e, p in sorted(self.alarms.items(), key=lambda kv: -RANK[kv[1]])
            ],
            "stale": now - self.last_seen > STALE_S,
        }


def _shown_lead(t: Telemetry) -> list[float | None]:
    """Lead 1 unless it is judged unusable and lead 2 is fine."""
    idx = 1 if len(t.leads) > 1 and t.quality[0] != "ok" and t.quality[1] == "ok" else 0
    x = t.leads[idx]
    return [None if not np.isfinite(v) else round(float(v), 2) for v in x]


class StationState:
    def __init__(self) -> None:
        self.beds: dict[str, BedView] = {}
        self.alarms: deque[dict[str, Any]] = deque(maxlen=MAX_ALARMS)
        self.alarm_seq = 0
        self.strips: OrderedDict[str, Strip] = OrderedDict()
        self.counts = {"telemetry": 0, "alarm": 0, "strip": 0}

    def on_message(self, msg: Alarm | Strip | Telemetry, source: str, now: float) -> None:
        if isinstance(msg, Telemetry):
            self._telemetry(msg, source, now)
        elif isinstance(msg, Alarm):
            self._alarm(msg, source, now)
        else:
            self.counts["strip"] += 1
            self.strips[msg.strip_id] = msg
            self.strips.move_to_end(msg.strip_id)
            while len(self.strips) > MAX_STRIPS:
                self.strips.popitem(last=False)

    def _bed(self, sid: str, source: str, now: float) -> BedView:
        bed = self.beds.get(sid)
        if bed is None:
            bed = self.beds[sid] = BedView(sid, source, now)
        bed.source, bed.last_seen = source, now
        return bed

    def _telemetry(self, t: Telemetry, source: str, now: float) -> None:
        self.counts["telemetry"] += 1
        bed = self._bed(t.stream_id, source, now)
        bed.heart_rate, bed.rhythm, bed.confidence, bed.quality = t.heart_rate, t.rhythm, t.confidence, t.quality
        if t.t_end >= bed.alarm_t:
            # Telemetry and alarms come over separate connections (subscribe.messages_from), so an
            # alarm can overtake telemetry sent before it: never let that undo the alarm's change.
            bed.alarms = {e: p for e, p in t.alarms.items() if p in RANK}
        if t.leads:
            bed.seq += 1
            bed.chunks.append(Chunk(bed.seq, t.t_end, t.fs, _shown_lead(t)))

    def _alarm(self, a: Alarm, source: str, now: float) -> None:
        # A NaN or infinite number cannot be sent to the page (strict JSON): one such alarm in the
        # list would blank every bed's view. Refused here; the feed logs it as not shown.
        if not all(math.isfinite(v) for v in (a.confidence, a.onset_time, a.detected_time, a.published_at)):
            raise ValueError(f"alarm for {a.stream_id!r} has a number that is not finite")
        self.counts["alarm"] += 1
        bed = self._bed(a.stream_id, source, now)
        bed.alarm_t = a.detected_time  # not a max: after a clock step back, alarm times follow the new clock
        if a.state == AlarmState.RESOLVED.value:
            bed.alarms.pop(a.event, None)
        elif a.event in PRIORITY:
            bed.alarms[a.event] = PRIORITY[a.event]
        self.alarm_seq += 1
        self.alarms.append(
            {
                "n": self.alarm_seq,
                "id": a.stream_id,
                "event": a.event,
                "state": a.state,
                "priority": a.priority,
                "confidence": a.confidence,
                "onset": a.onset_time,
                "detected": a.detected_time,
                "published": a.published_at,
                "explanation": a.explanation,
                "strip": a.strip_id or None,
                "source": source,
            }
        )

    def alarms_since(self, n: int) -> list[dict[str, Any]]:
        return [a for a in self.alarms if a["n"] > n]

    def forget_silent(self, now: float) -> int:
        gone = [sid for sid, b in self.beds.items() if now - b.last_seen > FORGET_S]
        for sid in gone:
            del self.beds[sid]
        return len(gone)

    def view(self, *, page: int, per_page: int, query: str, alarms_first: bool) -> tuple[list[BedView], int, int]:
        """The beds of one page: filtered by id substring, alarming beds first if asked.
        Returns (beds, matching count, page actually shown)."""
        q = query.strip().lower()
        beds = [b for b in self.beds.values() if q in b.stream_id.lower()] if q else list(self.beds.values())
        if alarms_first:
            beds.sort(key=lambda b: (-b.top_priority(), b.stream_id))
        else:
            beds.sort(key=lambda b: b.stream_id)
        pages = max(1, math.ceil(len(beds) / per_page))
        page = min(max(page, 0), pages - 1)
        return beds[page * per_page : (page + 1) * per_page], len(beds), page
