"""Pacemaker pulse rejection at the sender's rate, before anything counts beats. Pure numpy.

A pacemaker pulse lasts 0.1-2 ms. Sampled by a monitor front end at 250-1000 Hz it is a spike
of one or two samples that stands clear of both neighbours, narrower than any QRS (whose
sharpest wave spans several samples at these rates). Left in, the resampler's anti-alias filter
smears it into a QRS-like blip at the model rate, and through loss of capture (the pacemaker
fires, the heart does not answer: asystole) the pause tracker counts the pulses as beats and
no PAUSE alarm comes. Heart-rate meters are required to reject such pulses (IEC 60601-2-27).

A run of at most ``max_width`` samples that lies wholly beyond both flanking samples, above both
or below both, with its extreme more than ``PACE_MIN_MV`` beyond them (twice that for a run
longer than 4 ms: the tip of a sharp QRS spans two samples at 250 Hz), and whose left flank is
not on a steep ramp (one of the two steps into it is under a third of that; a pulse rises off
the baseline, a QRS tip arrives on its upstroke), is a pulse. It and the ``PACE_TAIL_S`` after
it, where its recharge swings the other way, are replaced by the straight line from the left
flank to the first sample after the recharge. On
the shared records no QRS stands that far clear of its neighbours (measured in the README), so
ordinary ECG passes unchanged.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

#: How far (mV) a pulse must stand clear of both flanking samples.
PACE_MIN_MV = 1.0
#: Longest pulse (s) rejected, front-end smearing included.
PACE_MAX_S = 0.002
#: After a pulse, its recharge (an opposite swing of a fifth or so of it, over a few ms) is taken
#: out with it: this long (s) after the run.
PACE_TAIL_S = 0.008
#: Runs longer than this (s) must stand twice as far clear.
PACE_NARROW_S = 0.004
#: Below this rate (a sample longer than 5 ms) a pulse cannot be told from the tip of a QRS,
#: and a front end sampling that slowly has smeared it already: nothing is rejected.
PACE_MIN_FS = 200.0


def tail_samples(fs: float) -> int:
    """Samples after a pulse replaced with it (its recharge)."""
    return max(1, round(PACE_TAIL_S * fs))


def max_width(fs: float) -> int:
    """Widest run (samples) treated as a pulse at ``fs`` Hz: 2 ms, one sample more for a pulse
    that straddles two sampling instants."""
    return max(1, int(np.ceil(PACE_MAX_S * fs))) + 1


def screen_mv(fs: float, min_mv: float = PACE_MIN_MV) -> float:
    """A jump between two samples that every pulse has somewhere on its edges: its extreme
    lies more than ``min_mv`` beyond the flanks, at most half the widest run plus one steps away."""
    return min_mv / ((max_width(fs) + 2) // 2)


def reject_pulses(x: NDArray[np.float64], fs: float, min_mv: float = PACE_MIN_MV, first: int = 1) -> int:
    """Replace pulses in ``x`` (channels, n; mV at ``fs`` Hz) in place; returns how many.

    Samples before ``first`` are read, never written (a stream's samples already given out): a
    pulse that began there is cut from ``first`` on. A pulse whose recharge runs past the end is
    left for a later call (a stream holds those samples back).
    """
    width, tail = max_width(fs), tail_samples(fs)
    n = x.shape[1]
    first = max(first, 1)
    if fs < PACE_MIN_FS or n < 3:
        return 0
    step = np.abs(np.diff(x, axis=1, prepend=x[:, :1]))  # step[:, j]: from sample j - 1 to j
    if not (step > screen_mv(fs, min_mv)).any():
        return 0
    found = 0
    # The smaller of the two steps into the left flank: a pulse rises off the baseline (its own
    # smeared leading edge can make one of them steep), a QRS tip arrives on a ramp (both steep).
    step_in = np.minimum(step, np.concatenate([np.zeros((x.shape[0], 1)), step[:, :-1]], axis=1))
    for w in range(1, min(width, n - 2) + 1):
        left, right = x[:, : n - w - 1], x[:, w + 1 :]
        runs = np.lib.stride_tricks.sliding_window_view(x[:, 1 : n - 1], w, axis=1)
        top, bottom = runs.max(axis=2), runs.min(axis=2)
        hi, lo = np.maximum(left, right), np.minimum(left, right)
        clear = min_mv if w / fs <= PACE_NARROW_S + 1e-9 else 2 * min_mv
        # Every sample of the run beyond both flanks, its extreme more than ``clear`` beyond,
        # and the left flank not on a steep ramp.
        hit = ((bottom > hi) & (top - hi > clear)) | ((top < lo) & (lo - bottom > clear))
        hit &= step_in[:, : n - w - 1] <= clear / 3
        done = np.zeros(x.shape[0], dtype=np.int64)  # per lead: replaced up to here in this pass
        for c, s in zip(*np.nonzero(hit), strict=True):
            r = s + w + 1 + tail  # the run, its recharge, then the first sample kept
            if s < done[c] or r > n - 1 or r <= first or not np.isfinite(x[c, r]):
                continue  # inside one just replaced, not all here yet, given out, or no anchor
            done[c] = r
            a, b = x[c, s], x[c, r]
            lo_i = max(s + 1, first)
            x[c, lo_i:r] = a + (b - a) * (np.arange(lo_i, r) - s) / (r - s)
            found += 1
    return found
