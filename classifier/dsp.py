"""Pure numpy/scipy signal helpers. Every function states its units.

Rates are in Hz, durations in seconds, indices in samples, amplitudes in mV.
"""

from __future__ import annotations

from fractions import Fraction
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray
from scipy import signal

FloatArray = NDArray[np.float64]


@lru_cache(maxsize=64)
def _bandpass_sos(low_hz: float, high_hz: float, fs: float, order: int) -> NDArray[np.float64]:
    nyq = fs / 2.0
    high = min(high_hz, 0.95 * nyq)
    sos: NDArray[np.float64] = signal.butter(
        order, [low_hz / nyq, high / nyq], btype="bandpass", output="sos"
    )
    return sos


def bandpass(x: NDArray[np.floating], fs: float, low_hz: float, high_hz: float, order: int = 2) -> FloatArray:
    """Zero-phase band-pass of ``x`` (last axis is time, ``fs`` in Hz)."""
    sos = _bandpass_sos(float(low_hz), float(high_hz), float(fs), order)
    x = np.asarray(x, dtype=np.float64)
    padlen = min(3 * (2 * len(sos) + 1), x.shape[-1] - 1)
    if padlen < 1:
        return x.copy()
    out: FloatArray = signal.sosfiltfilt(sos, x, axis=-1, padlen=padlen)
    return out


def resample(x: NDArray[np.floating], fs_in: float, fs_out: float) -> FloatArray:
    """Polyphase resampling along the last axis from ``fs_in`` to ``fs_out`` Hz.

    The rational approximation keeps the rate error below 1e-4 for any real-world rate.
    """
    x = np.asarray(x, dtype=np.float64)
    if abs(fs_in - fs_out) < 1e-9:
        return x.copy()
    frac = Fraction(fs_out / fs_in).limit_denominator(1000)
    out: FloatArray = signal.resample_poly(x, frac.numerator, frac.denominator, axis=-1)
    return out


def fill_nan(x: NDArray[np.floating]) -> tuple[FloatArray, NDArray[np.bool_]]:
    """Replace NaN/inf runs by linear interpolation; return the signal and the mask of filled samples.

    An all-invalid signal becomes zeros (a flat lead), which the quality check then rejects.
    """
    x = np.array(x, dtype=np.float64, copy=True)
    bad = ~np.isfinite(x)
    if not bad.any():
        return x, bad
    if bad.all():
        x[:] = 0.0
        return x, bad
    idx = np.arange(x.size)
    x[bad] = np.interp(idx[bad], idx[~bad], x[~bad])
    return x, bad


def robust_scale(x: NDArray[np.floating]) -> FloatArray:
    """Centre on the median and scale by the 1-99 percentile range, so leads of any gain look alike."""
    x = np.asarray(x, dtype=np.float64)
    if x.size == 0:
        return x.copy()
    med = np.median(x)
    lo, hi = np.percentile(x, [1.0, 99.0])
    spread = hi - lo
    if spread < 1e-6:
        return np.zeros_like(x)
    out: FloatArray = (x - med) / spread
    return np.clip(out, -8.0, 8.0)


def moving_average(x: NDArray[np.floating], width: int) -> FloatArray:
    """Causal-centred moving average over ``width`` samples (cumsum based, O(n))."""
    x = np.asarray(x, dtype=np.float64)
    width = max(1, int(width))
    c = np.cumsum(np.concatenate(([0.0], x)))
    out = (c[width:] - c[:-width]) / width
    pad_left = (width - 1) // 2
    pad_right = x.size - out.size - pad_left
    result: FloatArray = np.pad(out, (pad_left, pad_right), mode="edge")
    return result
