"""Atrial activity before each beat: the P-wave evidence that R-R intervals cannot give.

Irregular R-R alone cannot tell AF from frequent ectopy, sinus arrhythmia or wandering
pacemakers: all of them keep a P wave before most beats, AF has none. Before each detected beat
the stretch where a P wave sits is cut out; in a sinus rhythm those stretches repeat (a
consistent, visible average), in AF they are fibrillatory baseline that averages away. Pure numpy;
beat indices in samples, times in seconds, amplitudes in mV of a 0.5-40 Hz band-passed lead.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from numpy.typing import NDArray

from classifier.dsp import bandpass

#: Where a P wave sits, relative to the detected beat (s): before the QRS, after the previous T.
P_FROM_S: Final = -0.30
P_TO_S: Final = -0.08
#: Half-width of the QRS, for its amplitude (s).
QRS_HALF_S: Final = 0.05
#: Fewer usable beats than this: no atrial judgement (the features come back NaN).
MIN_BEATS: Final = 4

ATRIAL_FEATURES: Final[tuple[str, ...]] = (
    "p_consistency",  # median correlation of each beat's pre-QRS stretch with their median: high in sinus
    "p_amplitude",  # peak-to-peak of that median stretch / median QRS amplitude: a visible P wave
)
# The RMS of each stretch about the median (the fibrillatory baseline) was tried as a third
# feature: it helped on validation but, fitted without the handheld CinC 2017 recordings, it
# called 35% of their non-AF windows AF (their noise looks like fibrillation), so it is left out.


def atrial_features(
    lead_mv: NDArray[np.floating], beats: NDArray[np.integer], fs: float, *, filtered: bool = False
) -> NDArray[np.float64]:
    """The ``ATRIAL_FEATURES`` of one lead (mV, any length) and its detected beats (samples).

    ``filtered``: the lead is already band-passed 0.5-40 Hz (the model's input, whose robust
    scaling the features do not see: both are ratios of one lead), which saves the filter.
    NaN where fewer than ``MIN_BEATS`` beats have a whole P stretch inside the signal, so that a
    model can treat the evidence as missing rather than as absent P waves.
    """
    x = np.nan_to_num(np.asarray(lead_mv, dtype=np.float64))
    if not filtered:
        x = bandpass(x, fs, 0.5, 40.0, order=2)
    b = np.asarray(beats, dtype=np.int64)
    p0, p1, q = round(P_FROM_S * fs), round(P_TO_S * fs), round(QRS_HALF_S * fs)
    b = b[(b + p0 >= 0) & (b + q < x.size)]
    if b.size < MIN_BEATS or p1 - p0 < 4:
        return np.full(len(ATRIAL_FEATURES), np.nan)
    p = x[b[:, None] + np.arange(p0, p1)[None, :]]
    p = p - p.mean(axis=1, keepdims=True)
    qrs = x[b[:, None] + np.arange(-q, q + 1)[None, :]]
    qrs_amp = max(float(np.median(qrs.max(axis=1) - qrs.min(axis=1))), 1e-3)
    template = np.median(p, axis=0)
    template = template - template.mean()
    t_norm = float(np.sqrt((template * template).sum()))
    p_norm = np.sqrt((p * p).sum(axis=1))
    corr = (p @ template) / np.maximum(p_norm * t_norm, 1e-12) if t_norm > 1e-9 else np.zeros(b.size)
    return np.array(
        [
            float(np.median(corr)),
            float(template.max() - template.min()) / qrs_amp,
        ]
    )
