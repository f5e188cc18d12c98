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
    sos: NDArray[np.float64] = signal.butter(order, [low_hz / nyq, high / nyq], btype="bandpass", output="sos")
    return sos


def bandpass(x: NDArray[np.floating], fs: float, low_hz: float, high_hz: float, order: int = 2) -> FloatArray:
    """Zero-phase band-pass of ``x`` (last axis is time, ``fs`` in Hz)."""
    sos = _bandpass_sos(float(low_hz), float(high_hz), float(fs), order)
    xa: FloatArray = np.asarray(x, dtype=np.float64)
    padlen = min(3 * (2 * len(sos) + 1), xa.shape[-1] - 1)
    if padlen < 1:
        return xa.copy()
    out: FloatArray = signal.sosfiltfilt(sos, xa, axis=-1, padlen=padlen)
    return out


def resample(x: NDArray[np.floating], fs_in: float, fs_out: float) -> FloatArray:
    """Polyphase resampling along the last axis from ``fs_in`` to ``fs_out`` Hz.

    The rational approximation keeps the rate error below 1e-4 for any real-world rate.
    """
    xa: FloatArray = np.asarray(x, dtype=np.float64)
    if abs(fs_in - fs_out) < 1e-9:
        return xa.copy()
    frac = Fraction(fs_out / fs_in).limit_denominator(1000)
    out: FloatArray = signal.resample_poly(xa, frac.numerator, frac.denominator, axis=-1)
    return out


def fill_nan(x: NDArray[np.floating]) -> tuple[FloatArray, NDArray[np.bool_]]:
    """Replace NaN/inf runs by linear interpolation; return the signal and the mask of filled samples.

    An all-invalid signal becomes zeros (a flat lead), which the quality check then rejects.
    """
    xa: FloatArray = np.array(x, dtype=np.float64, copy=True)
    bad: NDArray[np.bool_] = ~np.isfinite(xa)
    if not bad.any():
        return xa, bad
    if bad.all():
        xa[:] = 0.0
        return xa, bad
    idx = np.arange(xa.size)
    xa[bad] = np.interp(idx[bad], idx[~bad], xa[~bad])
    return xa, bad


def moving_average(x: NDArray[np.floating], width: int) -> FloatArray:
    """Causal-centred moving average over ``width`` samples (cumsum based, O(n))."""
    xa: FloatArray = np.asarray(x, dtype=np.float64)
    width = max(1, int(width))
    c = np.cumsum(np.concatenate(([0.0], xa)))
    out = (c[width:] - c[:-width]) / width
    pad_left = (width - 1) // 2
    pad_right = xa.size - out.size - pad_left
    result: FloatArray = np.pad(out, (pad_left, pad_right), mode="edge")
    return result
