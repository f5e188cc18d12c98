"""QRS detection: a Pan-Tompkins style detector, vectorised except for the per-peak decision.

Candidate peaks of the integrated energy are found with numpy; the adaptive thresholds,
search-back and T-wave rejection then walk the candidates (a few per second), never samples.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import signal

from classifier.dsp import bandpass, fill_nan

IntArray = NDArray[np.int64]

_REFRACTORY_S = 0.2
_T_WAVE_WINDOW_S = 0.36
_MWI_S = 0.15


def qrs_energy(x: NDArray[np.floating], fs: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Band-passed signal (5-18 Hz) and its moving-window-integrated squared slope.

    Works on the last axis, so a whole batch of windows is filtered in one call.
    """
    filt = bandpass(x, fs, 5.0, 18.0, order=2)
    slope = np.gradient(filt, axis=-1) * fs
    sq = slope * slope
    width = max(1, round(_MWI_S * fs))
    kernel = np.ones(width) / width
    mwi = (
        np.apply_along_axis(np.convolve, -1, sq, kernel, mode="same")
        if sq.ndim > 1
        else np.convolve(sq, kernel, mode="same")
    )
    return filt, mwi


def detect_qrs(x: NDArray[np.floating], fs: float) -> IntArray:
    """Return R-peak sample indices of one lead ``x`` sampled at ``fs`` Hz.

    NaN or inf samples are interpolated first; a flat or too short input gives no beats.
    """
    x, _ = fill_nan(np.asarray(x, dtype=np.float64))
    if x.size < int(0.5 * fs) or float(np.ptp(x)) < 1e-6:
        return np.zeros(0, dtype=np.int64)
    filt, mwi = qrs_energy(x, fs)
    return detect_from_energy(filt, mwi, fs)


def rr_deviation(rr: NDArray[np.floating]) -> tuple[float, NDArray[np.float64]]:
    """Median of the R-R intervals ``rr`` (any unit) and each interval's signed deviation from it,
    as a fraction of it: every steadiness test (steady rhythm, rhythm back after a pause) reads
    the same numbers, so they cannot drift apart."""
    x = np.asarray(rr, dtype=np.float64)
    med = float(np.median(x))
    dev: NDArray[np.float64] = (x - med) / max(med, 1e-12)
    return med, dev


def detect_from_energy(filt: NDArray[np.float64], mwi: NDArray[np.float64], fs: float) -> IntArray:
    """The decision stage of ``detect_qrs`` on precomputed ``qrs_energy`` output of one lead."""
    refractory = int(_REFRACTORY_S * fs)
    peaks, _ = signal.find_peaks(mwi, distance=max(1, refractory))
    if peaks.size == 0:
        return np.zeros(0, dtype=np.int64)
    heights = mwi[peaks]
    slopes = np.abs(np.gradient(filt))

    # Initialise from the first 2 s as Pan & Tompkins do.
    init = peaks[peaks < int(2 * fs)]
    spk = float(np.max(mwi[: int(2 * fs)])) * 0.5 if init.size else float(np.max(heights)) * 0.5
    npk = float(np.mean(mwi[: int(2 * fs)])) * 0.5
    rr_avg = 0.8 * fs
    beats: list[int] = []
    last_slope = 0.0
    pending: list[int] = []  # candidates rejected since the last beat, for search-back
    t_win = int(_T_WAVE_WINDOW_S * fs)
    half_qrs = max(1, int(0.075 * fs))

    def slope_at(p: int) -> float:
        lo = max(0, p - 2 * half_qrs)
        return float(np.max(slopes[lo : p + 1]))

    for p, h in zip(peaks.tolist(), heights.tolist(), strict=True):
        thr = npk + 0.25 * (spk - npk)
        if beats and p - beats[-1] > rr_avg:
            # An expected beat is overdue: lower the bar, halving every 0.5 s, to at most a quarter.
            thr *= max(0.25, 0.5 ** ((p - beats[-1] - rr_avg) / (0.5 * fs)))
        if beats and p - beats[-1] > 1.66 * rr_avg and pending:
            # Search back for a missed beat with half the threshold.
            cand = [q for q in pending if mwi[q] > 0.5 * thr and q - beats[-1] > refractory]
            if cand:
                q = max(cand, key=lambda c: float(mwi[c]))
                beats.append(q)
                spk = 0.25 * float(mwi[q]) + 0.75 * spk
                last_slope = slope_at(q)
            pending = []
        if h > thr:
            s = slope_at(p)
            # A T wave: soon after a beat, half its slope, and less energy than a typical QRS.
            # The energy test keeps the wide, fast complexes of VT from being taken for T waves.
            if beats and p - beats[-1] < t_win and s < 0.5 * last_slope and h < spk:
                npk = 0.125 * h + 0.875 * npk
                continue
            if beats:
                rr = p - beats[-1]
                rr_avg = 0.875 * rr_avg + 0.125 * rr if 0.3 * fs < rr < 3.0 * fs else rr_avg
            beats.append(p)
            # Follow a drop in QRS energy (a wide ventricular rhythm) quickly, a rise slowly.
            spk = 0.5 * h + 0.5 * spk if h < 0.5 * spk else 0.125 * h + 0.875 * spk
            last_slope = s
            pending = []
        else:
            npk = 0.125 * h + 0.875 * npk
            pending.append(p)
    if not beats:
        return np.zeros(0, dtype=np.int64)
    return _refine(filt, np.asarray(beats, dtype=np.int64), fs)


def _refine(filt: NDArray[np.float64], beats: IntArray, fs: float) -> IntArray:
    """Move each energy peak to the largest band-passed deflection shortly before it."""
    back = int(0.15 * fs)
    fwd = int(0.05 * fs)
    n = filt.size
    lo = np.clip(beats - back, 0, n - 1)
    span = back + fwd + 1
    idx = lo[:, None] + np.arange(span)[None, :]
    idx = np.clip(idx, 0, n - 1)
    seg = np.abs(filt[idx])
    out = idx[np.arange(beats.size), np.argmax(seg, axis=1)]
    out = np.unique(out)
    if out.size > 1:
        keep = np.concatenate(([True], np.diff(out) > int(_REFRACTORY_S * fs * 0.8)))
        out = out[keep]
    return out.astype(np.int64)


def match_beats(ref: NDArray[np.integer], test: NDArray[np.integer], tol: int) -> tuple[int, int, int]:
    """Greedy one-to-one matching of two sorted beat lists within ``tol`` samples.

    Returns (true positives, false negatives, false positives).
    """
    ref = np.asarray(ref, dtype=np.int64)
    test = np.asarray(test, dtype=np.int64)
    if ref.size == 0 or test.size == 0:
        return 0, int(ref.size), int(test.size)
    j = np.searchsorted(test, ref)
    cand_l = np.clip(j - 1, 0, test.size - 1)
    cand_r = np.clip(j, 0, test.size - 1)
    dl = np.abs(test[cand_l] - ref)
    dr = np.abs(test[cand_r] - ref)
    nearest = np.where(dl <= dr, cand_l, cand_r)
    dist = np.minimum(dl, dr)
    ok = dist <= tol
    matched_test = nearest[ok]
    # Each test beat matches at most one reference beat.
    tp = int(np.unique(matched_test).size)
    return tp, int(ref.size) - tp, int(test.size) - tp
