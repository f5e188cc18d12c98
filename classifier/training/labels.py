"""Turn PhysioNet reference annotations into alarm episodes and window labels.

All positions are sample indices at the record's own rate unless a function says otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from classifier.constants import EVENT_PRIORITY, PAUSE_THRESHOLD_S

#: Beat symbols of the MIT-BIH annotation code (non-beat labels are left out).
BEAT_SYMBOLS = frozenset("NLRBAaJSVrFejnE/fQ")

_RHYTHM_EVENT = {
    "AFIB": "AF",
    "AFL": "AF",
    "VT": "VTACH",
    "VFL": "VTACH",
    "VF": "VTACH",
    "VFIB": "VTACH",
    "ASYS": "PAUSE",
    "NOISE": "NOISE",
}

#: A run of this many ventricular beats or more, faster than 100 bpm, is a VT episode
#: in databases that carry beat labels but no rhythm labels (svdb).
VT_RUN_MIN_BEATS = 3
VT_RUN_MIN_BPM = 100.0

#: The subtype of a signal-quality annotation ('~') that sets every noise bit: in the MIT-BIH
#: 'atr' files each set bit marks one signal noisy, and -1 (all bits) marks every signal
#: unreadable, where the annotators could label no beats until the next '~'. It is the only
#: unreadable code in mitdb, svdb and vfdb (their '~' subtypes are -1, 0, 1, 2 and 3), so other
#: bit patterns are read as noisy, never as unreadable.
UNREADABLE = -1


@dataclass(frozen=True, slots=True)
class Episode:
    """One annotated stretch; ``event`` is AF, VTACH, PAUSE or NOISE; ``end`` is exclusive."""

    event: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class WindowLabel:
    """The label of one window. ``label`` is None when the window is ambiguous and left out."""

    label: str | None
    event_index: int | None
    reason: str


def rhythm_of(aux: str) -> str:
    """Normalise an ``aux_note`` rhythm string: '(AFIB\\x00' -> 'AFIB'."""
    return aux.strip().strip("\x00").lstrip("(").strip()


def extract_episodes(
    samples: Sequence[int] | NDArray[np.integer],
    symbols: Sequence[str],
    aux_notes: Sequence[str],
    fs: float,
    n_samples: int,
    pause_threshold_s: float = PAUSE_THRESHOLD_S,
    subtypes: Sequence[int] | NDArray[np.integer] | None = None,
) -> list[Episode]:
    """Episodes of AF, VTACH, PAUSE and NOISE from one record's reference annotations.

    - rhythm labels on '+' annotations hold until the next rhythm label;
    - '[' ... ']' marks ventricular flutter/fibrillation (VTACH);
    - an R-R gap of ``pause_threshold_s`` or more is a PAUSE starting at the last beat
      before the gap, unless the gap lies in VTACH or NOISE, or (given the annotations'
      ``subtypes``) overlaps a stretch marked unreadable on every signal: no beats are labelled
      there, so the gap says nothing about the heart;
    - where a record has no rhythm labels, runs of ventricular beats make VT episodes.
    """
    samples = np.asarray(samples, dtype=np.int64)
    episodes: list[Episode] = []
    current: tuple[str, int] | None = None
    has_rhythm = False
    for s, sym, aux in zip(samples.tolist(), symbols, aux_notes, strict=True):
        if sym == "+" and aux and rhythm_of(aux):
            has_rhythm = True
            if current is not None and current[0] in _RHYTHM_EVENT:
                episodes.append(Episode(_RHYTHM_EVENT[current[0]], current[1], s))
            current = (rhythm_of(aux), s)
    if current is not None and current[0] in _RHYTHM_EVENT:
        episodes.append(Episode(_RHYTHM_EVENT[current[0]], current[1], n_samples))

    vf_start: int | None = None
    for s, sym in zip(samples.tolist(), symbols, strict=True):
        if sym == "[":
            vf_start = s
        elif sym == "]" and vf_start is not None:
            episodes.append(Episode("VTACH", vf_start, s))
            vf_start = None
    if vf_start is not None:
        episodes.append(Episode("VTACH", vf_start, n_samples))

    beat_mask = np.array([sym in BEAT_SYMBOLS for sym in symbols], dtype=bool)
    beats = samples[beat_mask]
    beat_syms = [sym for sym in symbols if sym in BEAT_SYMBOLS]
    if not has_rhythm and beats.size:
        episodes.extend(_vt_runs(beats, beat_syms, fs))

    blocked = [e for e in episodes if e.event in ("VTACH", "NOISE")]
    if subtypes is not None:
        blocked += _unreadable(samples, symbols, subtypes, n_samples)
    if beats.size > 1:
        rr = np.diff(beats)
        for i in np.flatnonzero(rr >= pause_threshold_s * fs).tolist():
            start, end = int(beats[i]), int(beats[i + 1])
            if not any(b.start < end and start < b.end for b in blocked):
                episodes.append(Episode("PAUSE", start, end))
    return sorted(episodes, key=lambda e: (e.start, e.end))


def _unreadable(
    samples: NDArray[np.integer], symbols: Sequence[str], subtypes: Sequence[int] | NDArray[np.integer], n_samples: int
) -> list[Episode]:
    """Stretches from a '~' marking every signal unreadable to the next '~' (or the record's end)."""
    out: list[Episode] = []
    start: int | None = None
    for s, sym, sub in zip(samples.tolist(), symbols, subtypes, strict=True):
        if sym != "~":
            continue
        if start is not None:
            out.append(Episode("NOISE", start, s))
            start = None
        if int(sub) == UNREADABLE:
            start = s
    if start is not None:
        out.append(Episode("NOISE", start, n_samples))
    return out


def _vt_runs(beats: NDArray[np.int64], syms: Sequence[str], fs: float) -> list[Episode]:
    out: list[Episode] = []
    is_v = np.array([s == "V" for s in syms], dtype=bool)
    i = 0
    n = len(syms)
    while i < n:
        if not is_v[i]:
            i += 1
            continue
        j = i
        while j + 1 < n and is_v[j + 1]:
            j += 1
        count = j - i + 1
        if count >= VT_RUN_MIN_BEATS:
            rate = 60.0 * fs * (count - 1) / max(1, beats[j] - beats[i])
            if rate > VT_RUN_MIN_BPM:
                mean_rr = (beats[j] - beats[i]) / (count - 1)
                out.append(Episode("VTACH", int(beats[i]), int(beats[j] + mean_rr)))
        i = j + 1
    return out


def label_window(
    episodes: Iterable[Episode],
    start: int,
    end: int,
    fs: float,
    min_vtach_s: float = 2.0,
    min_af_fraction: float = 0.5,
    max_noise_fraction: float = 0.5,
    pause_threshold_s: float = PAUSE_THRESHOLD_S,
) -> WindowLabel:
    """Label the window [start, end) by the highest-priority event it contains.

    An event counts when the window holds enough of it: ``min_vtach_s`` of VTACH,
    ``pause_threshold_s`` of a pause, ``min_af_fraction`` of the window in AF. An event
    that only grazes the window makes it ambiguous: neither a positive nor a clean
    negative, so it is left out of training and scoring (and counted).
    """
    length = end - start
    need = {
        "VTACH": min_vtach_s * fs,
        "PAUSE": pause_threshold_s * fs,
        "AF": min_af_fraction * length,
    }
    cover = dict.fromkeys(("AF", "VTACH", "PAUSE", "NOISE"), 0)
    first: dict[str, int] = {}
    for ep in episodes:
        lo, hi = max(ep.start, start), min(ep.end, end)
        if hi > lo:
            cover[ep.event] += hi - lo
            first[ep.event] = min(first.get(ep.event, lo), lo)
    if cover["NOISE"] > max_noise_fraction * length:
        return WindowLabel(None, None, "noise")
    found = [e for e in need if cover[e] >= need[e] - 0.5]
    grazed = [e for e in need if 0 < cover[e] < need[e] - 0.5]
    best = max(found, key=EVENT_PRIORITY.__getitem__) if found else None
    top_grazed = max(grazed, key=EVENT_PRIORITY.__getitem__) if grazed else None
    if top_grazed is not None and (best is None or EVENT_PRIORITY[top_grazed] > EVENT_PRIORITY[best]):
        return WindowLabel(None, None, f"partial {top_grazed}")
    if best is None:
        return WindowLabel("NORMAL", None, "clean")
    return WindowLabel(best, first[best] - start, "event")
