"""``ecg-monitor score``: alarm episodes against ground truth, in the spirit of ANSI/AAMI EC57.

A truth episode is detected when an alarm of its event is active at some point between its
onset and ``grace_s`` after its end. An alarm episode (onset to resolved) is a true alarm when
it overlaps a truth episode of its event in the same way, else a false alarm. Latency runs
from the truth onset to the first matching alarm's decision (``detected_time``); for PAUSE it
runs from the moment the gap reached its threshold, since no monitor can know sooner.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from protocol.alarm import Alarm

EVENTS = ("AF", "VTACH", "PAUSE")


@dataclass(frozen=True, slots=True)
class TruthEpisode:
    stream_id: str
    event: str
    onset: float
    end: float


@dataclass(frozen=True, slots=True)
class AlarmEpisode:
    stream_id: str
    event: str
    onset: float
    detected: float
    resolved: float


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    rows = []
    with Path(path).open(encoding="utf-8") as fh:
        for i, line in enumerate(fh, 1):
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{i}: not JSON ({exc})") from None
    return rows


def alarm_episodes(alarms: list[Alarm], session_end: dict[str, float]) -> list[AlarmEpisode]:
    """Pair onset and resolved messages into episodes; an unresolved one lasts to session end."""
    open_: dict[tuple[str, str], Alarm] = {}
    out: list[AlarmEpisode] = []
    for a in sorted(alarms, key=lambda a: (a.detected_time, a.published_at)):
        key = (a.stream_id, a.event)
        if a.state == "onset" and key not in open_:
            open_[key] = a
        elif a.state == "resolved" and key in open_:
            o = open_.pop(key)
            out.append(AlarmEpisode(a.stream_id, a.event, o.onset_time, o.detected_time, a.detected_time))
    for (sid, ev), o in open_.items():
        out.append(AlarmEpisode(sid, ev, o.onset_time, o.detected_time, session_end.get(sid, o.detected_time) + 1e9))
    return out


def score(
    truth_rows: list[dict[str, Any]],
    alarms: list[Alarm],
    pause_threshold_s: float = 3.0,
    grace_s: float = 10.0,
) -> dict[str, Any]:
    sessions = {r["stream_id"]: (float(r["onset"]), float(r["end"])) for r in truth_rows if r["event"] == "SESSION"}
    truth = [
        TruthEpisode(r["stream_id"], r["event"], float(r["onset"]), float(r["end"]))
        for r in truth_rows
        if r["event"] in EVENTS and (r["event"] != "PAUSE" or float(r["end"]) - float(r["onset"]) >= pause_threshold_s)
    ]
    streams = set(sessions) | {t.stream_id for t in truth}
    alarms = [a for a in alarms if a.stream_id in streams]
    eps = alarm_episodes(alarms, {k: v[1] for k, v in sessions.items()})
    hours = sum(end - start for start, end in sessions.values()) / 3600.0
    result: dict[str, Any] = {"hours": round(hours, 4), "events": {}}
    for ev in EVENTS:
        t_ev = [t for t in truth if t.event == ev]
        a_ev = [a for a in eps if a.event == ev]

        def overlaps(t: TruthEpisode, a: AlarmEpisode) -> bool:
            return t.stream_id == a.stream_id and a.detected <= t.end + grace_s and a.resolved >= t.onset

        detected, latencies = 0, []
        for t in t_ev:
            hits = [a for a in a_ev if overlaps(t, a)]
            if hits:
                detected += 1
                ref = t.onset + (pause_threshold_s if ev == "PAUSE" else 0.0)
                latencies.append(max(0.0, min(a.detected for a in hits) - ref))
        true_alarms = sum(1 for a in a_ev if any(overlaps(t, a) for t in t_ev))
        false_alarms = len(a_ev) - true_alarms
        lat = np.asarray(latencies)
        result["events"][ev] = {
            "episodes": len(t_ev),
            "detected": detected,
            "sensitivity": detected / len(t_ev) if t_ev else None,
            "alarms": len(a_ev),
            "true_alarms": true_alarms,
            "ppv": true_alarms / len(a_ev) if a_ev else None,
            "false_alarms": false_alarms,
            "false_alarms_per_hour": false_alarms / hours if hours > 0 else None,
            "latency_p50_s": float(np.percentile(lat, 50)) if lat.size else None,
            "latency_p95_s": float(np.percentile(lat, 95)) if lat.size else None,
        }
    return result


def format_table(result: dict[str, Any]) -> str:
    def f(v: Any, pct: bool = False) -> str:
        if v is None:
            return "-"
        return f"{100 * v:.1f}%" if pct else (f"{v:.2f}" if isinstance(v, float) else str(v))

    lines = [
        f"scored {result['hours']:.3f} h of monitoring",
        f"{'event':<7} {'episodes':>8} {'detected':>8} {'Se':>7} {'alarms':>6} {'PPV':>7} {'FA/h':>6} {'p50 s':>6} {'p95 s':>6}",
    ]
    for ev, r in result["events"].items():
        lines.append(
            f"{ev:<7} {r['episodes']:>8} {r['detected']:>8} {f(r['sensitivity'], True):>7} {r['alarms']:>6} "
            f"{f(r['ppv'], True):>7} {f(r['false_alarms_per_hour']):>6} {f(r['latency_p50_s']):>6} {f(r['latency_p95_s']):>6}"
        )
    return "\n".join(lines)
