"""R-R and QRS features from detected beats. Pure numpy; positions in samples, rates in Hz."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from classifier.dsp import moving_average


@dataclass(frozen=True, slots=True)
class RhythmFeatures:
    """What the rules decide on. Times in seconds, rate in bpm, QRS width in ms."""

    n_beats: int
    heart_rate_bpm: float
    irregularity: float
    max_rr_s: float
    max_rr_start: int
    tail_gap_s: float
    qrs_ms: NDArray[np.float64]
    rr_s: NDArray[np.float64]


def rr_irregularity(rr_s: NDArray[np.floating]) -> float:
    """Median absolute successive R-R difference over the median R-R.

    The median keeps an isolated ectopic beat (two large differences) from looking like AF.
    """
    rr = np.asarray(rr_s, dtype=np.float64)
    if rr.size < 3:
        return 0.0
    return float(np.median(np.abs(np.diff(rr))) / max(np.median(rr), 1e-6))


def qrs_widths_ms(x: NDArray[np.floating], beats: NDArray[np.integer], fs: float) -> NDArray[np.float64]:
    """Approximate QRS duration (ms) of each beat from the band-passed slope envelope.

    The width is the span around the R peak where the absolute slope stays above 20% of
    its local maximum, which tracks wide ventricular complexes well enough for a rule.
    """
    beats = np.asarray(beats, dtype=np.int64)
    if beats.size == 0:
        return np.zeros(0)
    # A 3-sample average is enough smoothing: baseline wander has no slope worth measuring.
    slope = np.abs(np.gradient(moving_average(np.nan_to_num(np.asarray(x, dtype=np.float64)), 3)))
    half = int(0.16 * fs)
    n = slope.size
    idx = np.clip(beats[:, None] + np.arange(-half, half + 1)[None, :], 0, n - 1)
    env = slope[idx]
    peak = env.max(axis=1, keepdims=True)
    above = env >= 0.2 * np.maximum(peak, 1e-9)
    # First and last sample above the level, per beat.
    first = np.argmax(above, axis=1)
    last = above.shape[1] - 1 - np.argmax(above[:, ::-1], axis=1)
    return (last - first + 1) * 1000.0 / fs


def rhythm_features(x: NDArray[np.floating], beats: NDArray[np.integer], fs: float) -> RhythmFeatures:
    """Features of one lead ``x`` (fs Hz) with its detected ``beats`` (sample indices)."""
    beats = np.asarray(beats, dtype=np.int64)
    n = int(np.asarray(x).size)
    rr = np.diff(beats) / fs
    hr = 60.0 / float(np.median(rr)) if rr.size else 0.0
    if rr.size:
        k = int(np.argmax(rr))
        max_rr, max_start = float(rr[k]), int(beats[k])
    else:
        max_rr, max_start = 0.0, 0
    tail = (n - 1 - int(beats[-1])) / fs if beats.size else n / fs
    widths = qrs_widths_ms(x, beats, fs) if beats.size else np.zeros(0)
    return RhythmFeatures(
        n_beats=int(beats.size),
        heart_rate_bpm=hr,
        irregularity=rr_irregularity(rr),
        max_rr_s=max_rr,
        max_rr_start=max_start,
        tail_gap_s=tail,
        qrs_ms=widths,
        rr_s=rr,
    )
