"""Training-time augmentation on raw model-rate segments (mV), before normalisation."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from classifier.constants import MODEL_FS, SEGMENT_LEN

Array = NDArray[np.float64]


def stretch_to(seg: NDArray[np.floating], n: int) -> Array:
    """Linearly resample a (leads, m) segment onto ``n`` samples (a time stretch by n/m)."""
    seg = np.asarray(seg, dtype=np.float64)
    src = np.linspace(0.0, seg.shape[1] - 1, n)
    return np.stack([np.interp(src, np.arange(seg.shape[1]), lead) for lead in seg])


def augment(seg: Array, rng: np.random.Generator, lead_swap: float = 0.0) -> Array:
    """Random gain, inversion, noise, baseline wander, lead swap and lead loss on a (2, n) segment."""
    x = np.array(seg, dtype=np.float64, copy=True)
    if lead_swap and rng.random() < lead_swap:
        x = x[::-1].copy()
    n = x.shape[1]
    t = np.arange(n) / MODEL_FS
    for i in range(2):
        x[i] *= rng.uniform(0.5, 2.0)
        if rng.random() < 0.1:
            x[i] = -x[i]
        if rng.random() < 0.5:
            x[i] += rng.normal(0.0, rng.uniform(0.005, 0.06), n)
        if rng.random() < 0.5:
            f = rng.uniform(0.05, 0.5)
            x[i] += rng.uniform(0.05, 0.6) * np.sin(2 * np.pi * f * t + rng.uniform(0, 2 * np.pi))
    r = rng.random()
    if r < 0.08:
        x[1] = rng.normal(0.0, 0.003, n)  # lead 2 off
    elif r < 0.12:
        x[0] = rng.normal(0.0, 0.003, n)  # lead 1 off
    return x


def splice_pause(
    signal: NDArray[np.floating],
    beats: NDArray[np.int64],
    rng: np.random.Generator,
    gap_s: float,
) -> tuple[Array, int] | None:
    """Build a (2, SEGMENT_LEN) segment with an R-R gap of ``gap_s`` cut from real beats.

    The stretch before the last beat and after the next one are real ECG; the gap is a
    ramp between them with a little noise. Returns (segment, index of the last beat before
    the gap) or None when the record has no room.
    """
    gap = int(gap_s * MODEL_FS)
    if beats.size < 10 or gap > SEGMENT_LEN - int(2 * MODEL_FS):
        return None
    pre_len = int(rng.integers(int(0.8 * MODEL_FS), SEGMENT_LEN - gap - int(0.6 * MODEL_FS)))
    for _ in range(10):
        i = int(rng.integers(2, beats.size - 6))
        b_i = int(beats[i])
        if b_i - pre_len < 0:
            continue
        # Resume at a later beat far enough on that the rest of the segment is real signal.
        j = i + int(rng.integers(1, 4))
        b_j = int(beats[j])
        post_needed = SEGMENT_LEN - pre_len - gap
        if b_j + post_needed > signal.shape[1]:
            continue
        edge = int(0.12 * MODEL_FS)
        pre = np.asarray(signal[:, b_i - pre_len : b_i + edge], dtype=np.float64)
        post = np.asarray(signal[:, b_j - edge : b_j - edge + post_needed + edge], dtype=np.float64)
        fill_len = SEGMENT_LEN - pre.shape[1] - post.shape[1]
        if fill_len <= 0 or not (np.isfinite(pre).all() and np.isfinite(post).all()):
            continue
        ramp = np.linspace(0.0, 1.0, fill_len + 2)[1:-1]
        fill = pre[:, -1:] * (1 - ramp) + post[:, :1] * ramp
        fill += rng.normal(0.0, 0.01, fill.shape)
        return np.concatenate([pre, fill, post], axis=1), pre_len
    return None
