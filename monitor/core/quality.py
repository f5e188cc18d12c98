"""Per-lead signal quality on model-rate samples (mV). Pure numpy."""

from __future__ import annotations

from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

from classifier.dsp import moving_average
from classifier.preprocess import FLAT_MV


class LeadQuality(StrEnum):
    OK = "ok"
    FLAT = "flat"
    SATURATED = "saturated"
    NOISY = "noisy"
    MISSING = "missing"


#: Amplitude (mV) beyond which a lead is considered clipped at the front end.
SATURATION_MV = 10.0
#: High-frequency residual over amplitude range beyond which a lead is noise.
NOISE_RATIO = 0.14


def lead_quality(x: NDArray[np.floating], fs: float) -> LeadQuality:
    """Judge one lead: missing (NaN), flat (lead off), saturated (stuck at a rail) or noisy.

    Noisy means the high-frequency residual (signal minus its 5-sample moving average) is
    large against the lead's amplitude range: 0.14 is above the 99.9th percentile of that
    ratio over 10 s stretches of the shared records (0.10) and below white noise (0.20).
    """
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0 or np.isnan(x).mean() > 0.5:
        return LeadQuality.MISSING
    x = x[np.isfinite(x)]
    lo, hi = np.percentile(x, [1.0, 99.0])
    if hi - lo < FLAT_MV:
        return LeadQuality.FLAT
    top = np.max(np.abs(x))
    if top >= SATURATION_MV and np.mean(np.abs(np.abs(x) - top) < 1e-3) > 0.1:
        return LeadQuality.SATURATED
    if hi - lo > 8.0:
        return LeadQuality.NOISY
    if x.size > 10 and np.std(x - moving_average(x, 5)) / (hi - lo) > NOISE_RATIO:
        return LeadQuality.NOISY
    return LeadQuality.OK


def usable(q: LeadQuality) -> bool:
    return q is LeadQuality.OK
