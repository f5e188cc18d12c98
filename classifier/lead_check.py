"""Two-lead evidence against a VTACH call: the patient's own steady rhythm on one lead.

ICU false VT/VF alarms (CinC 2015) are mostly artefact on one lead, or on both, while at least
one lead still shows the patient's ordinary rhythm. Ventricular tachycardia, by definition, runs
at 100 bpm or more. So a lead whose every R-R interval in the window lies within 20% of the
median, at under 100 bpm, over at least 6 beats, contradicts a VT call. "Every" is deliberate:
a run of three fast beats in a sinus window breaks it and keeps its VT call.

How it was chosen: a first version also asked for every QRS under 120 ms; on the odd-numbered
CinC 2015 false VF/flutter alarms it found the steady rhythm in 2 of 24 records against 11 of 24
without that condition, because the QRS-width estimate is unreliable on ICU leads (widths of
200-320 ms on ordinary beats). Neither version set aside any of 1,165 ten-second windows inside
the VT/VF episodes of vfdb and mitdb, nor any true CinC 2015 VF or tachycardia alarm. Known blind
spot, found later: a pacemaker firing through VT (vfdb/602, training) draws a steady 60 bpm on
one lead, and 25 of its VT windows are set aside (README, Limits). Pure numpy on model-rate
samples (mV).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from classifier.qrs import detect_qrs, rr_deviation

#: VT is 100 bpm or more.
VT_RATE_BPM = 100.0
#: Every R-R within this fraction of the median: a regular rhythm, no run of early beats.
RR_TOLERANCE = 0.2
#: Enough beats to call a rhythm (about 5 s at 60 bpm).
MIN_BEATS = 6


@dataclass(frozen=True, slots=True)
class OrdinaryBeats:
    lead: int  # -1: both leads
    beats: int
    rate_bpm: float
    spread: float  # largest R-R deviation from the median, as a fraction of it

    def explain(self) -> str:
        where = "both leads show" if self.lead < 0 else f"lead {self.lead + 1} shows"
        aside = ", one premature beat aside" if self.lead < 0 else ""
        return (
            f"{where} a steady rhythm of {self.beats} beats at {self.rate_bpm:.0f} bpm "
            f"(every R-R within {100 * self.spread:.0f}% of the median{aside}), which VT is not"
        )


def ordinary_beats(x: NDArray[np.floating], fs: float) -> tuple[int, float, float] | None:
    """(beats, rate bpm, R-R spread) if one lead ``x`` (mV, ``fs`` Hz) shows a steady rhythm
    under 100 bpm throughout; None otherwise."""
    found = _rhythm(x, fs)
    if found is None or found[2] > RR_TOLERANCE:
        return None
    return found[:3]


def _rhythm(x: NDArray[np.floating], fs: float) -> tuple[int, float, float, float] | None:
    """(beats, rate bpm, R-R spread, the spread without one isolated premature beat) of a lead
    under 100 bpm; None if too few beats or too fast."""
    beats = detect_qrs(x, fs)
    if beats.size < MIN_BEATS:
        return None
    med, dev = rr_deviation(np.diff(beats) / fs)
    if med <= 0 or 60.0 / med >= VT_RATE_BPM:
        return None
    spread = np.abs(dev)
    return int(beats.size), 60.0 / med, float(np.max(spread)), float(np.max(spread[~_one_premature_beat(dev)]))


def _one_premature_beat(dev: NDArray[np.floating]) -> NDArray[np.bool_]:
    """The intervals of one isolated premature beat (early, then the pause after it), if that is
    all that breaks the rhythm: one beat is no run, and VT is three or more in a row. ``dev``:
    each R-R's signed deviation from the median, as a fraction of it."""
    off = np.flatnonzero(np.abs(dev) > RR_TOLERANCE)
    early, late = dev < 0, dev > 0
    mask = np.zeros(dev.size, dtype=bool)
    if off.size == 2 and off[1] == off[0] + 1 and early[off[0]] and late[off[1]]:
        mask[off] = True
    elif off.size == 1 and ((off[0] == dev.size - 1 and early[off[0]]) or (off[0] == 0 and late[0])):
        mask[off] = True  # the pair cut by the window's edge
    return mask


def contradicts_vt(sig: NDArray[np.floating], usable: NDArray[np.bool_], fs: float) -> OrdinaryBeats | None:
    """The first usable lead of ``sig`` (2, n) with ordinary beats throughout; else both leads,
    when each shows the same steady rhythm but for one premature beat (a pacemaker firing
    through VT draws a steady rhythm on one lead, not on both); else None."""
    found = {
        k: _rhythm(np.nan_to_num(np.asarray(sig[k], dtype=np.float64)), fs)
        for k in range(min(2, sig.shape[0]))
        if usable[k]
    }
    for k, r in found.items():
        if r is not None and r[2] <= RR_TOLERANCE:
            return OrdinaryBeats(k, r[0], r[1], r[2])
    both = [r for r in found.values() if r is not None]
    if len(both) == 2:
        (beats, rate_a, _, a), (_, rate_b, _, b) = both
        if max(a, b) <= RR_TOLERANCE and abs(rate_a - rate_b) <= RR_TOLERANCE * min(rate_a, rate_b):
            return OrdinaryBeats(-1, beats, rate_a, max(a, b))
    return None
