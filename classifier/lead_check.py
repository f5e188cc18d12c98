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

from classifier.qrs import detect_qrs

#: VT is 100 bpm or more.
VT_RATE_BPM = 100.0
#: Every R-R within this fraction of the median: a regular rhythm, no run of early beats.
RR_TOLERANCE = 0.2
#: Enough beats to call a rhythm (about 5 s at 60 bpm).
MIN_BEATS = 6


@dataclass(frozen=True, slots=True)
class OrdinaryBeats:
    lead: int
    beats: int
    rate_bpm: float
    spread: float  # largest R-R deviation from the median, as a fraction of it

    def explain(self) -> str:
        return (
            f"lead {self.lead + 1} shows a steady rhythm of {self.beats} beats at {self.rate_bpm:.0f} bpm "
            f"(every R-R within {100 * self.spread:.0f}% of the median), which VT is not"
        )


def ordinary_beats(x: NDArray[np.floating], fs: float) -> tuple[int, float, float] | None:
    """(beats, rate bpm, R-R spread) if one lead ``x`` (mV, ``fs`` Hz) shows a steady rhythm
    under 100 bpm throughout; None otherwise."""
    beats = detect_qrs(x, fs)
    if beats.size < MIN_BEATS:
        return None
    rr = np.diff(beats) / fs
    med = float(np.median(rr))
    spread = float(np.max(np.abs(rr - med))) / med if med > 0 else np.inf
    if med <= 0 or 60.0 / med >= VT_RATE_BPM or spread > RR_TOLERANCE:
        return None
    return int(beats.size), 60.0 / med, spread


def contradicts_vt(sig: NDArray[np.floating], usable: NDArray[np.bool_], fs: float) -> OrdinaryBeats | None:
    """The first usable lead of ``sig`` (2, n) with ordinary beats throughout, or None."""
    for lead in range(min(2, sig.shape[0])):
        if not usable[lead]:
            continue
        found = ordinary_beats(np.nan_to_num(np.asarray(sig[lead], dtype=np.float64)), fs)
        if found is not None:
            return OrdinaryBeats(lead, *found)
    return None
