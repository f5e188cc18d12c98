"""Bring raw two-lead ECG of any rate into the model's input form.

Shared by training and inference so that the model sees the same thing in both.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from classifier.constants import MODEL_FS, SEGMENT_LEN
from classifier.dsp import bandpass, fill_nan, resample
from classifier.pacer import reject_pulses
from classifier.qrs import detect_from_energy, qrs_energy
from protocol.wire import MAX_FS, MIN_FS

#: Model input channels: two leads plus the R-R rhythm channel.
INPUT_CHANNELS = 3

#: A lead whose 1-99 percentile range is below this (mV) is treated as flat / lead off.
FLAT_MV = 0.05


def check_leads(
    ch1: NDArray[np.floating], ch2: NDArray[np.floating] | None, fs: float
) -> tuple[NDArray[np.float64], NDArray[np.float64] | None]:
    """The leads as 1-D float arrays, or ValueError saying what is wrong: a rate no ECG device
    uses (outside the wire format's 50-2000 Hz: 1 Hz read 10 s as 41 min and called a PAUSE),
    two leads passed as one (a (2, n) array would be read end to end as one lead), or leads of
    different lengths."""
    if not np.isfinite(fs) or not MIN_FS <= fs <= MAX_FS:
        raise ValueError(f"sampling rate must be {MIN_FS:.0f}-{MAX_FS:.0f} Hz, got {fs!r}")
    out: list[NDArray[np.float64]] = []
    for name, ch in (("ch1", ch1), ("ch2", ch2)):
        if ch is None:
            continue
        x = np.asarray(ch, dtype=np.float64)
        if sum(d > 1 for d in x.shape) > 1:
            raise ValueError(f"{name} must be one lead (1-D), got shape {x.shape}: pass the second lead as ch2")
        out.append(x.ravel())
    if len(out) == 2 and out[1].size != out[0].size:
        raise ValueError(f"leads differ in length: {out[0].size} vs {out[1].size} samples")
    return out[0], (out[1] if len(out) == 2 else None)


def to_model_rate(
    ch1: NDArray[np.floating], ch2: NDArray[np.floating] | None, fs: float
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Return a (2, n) signal at ``MODEL_FS`` with NaN gaps filled, and which leads carry signal.

    A missing ``ch2`` becomes a zero lead marked unusable.
    """
    a, b = check_leads(ch1, ch2, fs)
    leads = [a] if b is None else [a, b]
    usable = []
    filled = []
    for lead in leads:
        x, bad = fill_nan(lead)
        filled.append(x)
        usable.append(bool(bad.mean() < 0.5) if bad.size else False)
    raw = np.vstack(filled)
    reject_pulses(raw, fs)  # at the input rate, as the daemon does before it resamples
    sig = resample(raw, fs, MODEL_FS)
    if ch2 is None:
        sig = np.vstack([sig, np.zeros_like(sig)])
        usable.append(False)
    ok = np.array(usable, dtype=bool)
    for i in range(2):
        if ok[i] and lead_is_flat(sig[i]):
            ok[i] = False
    return sig, ok


def lead_is_flat(x: NDArray[np.floating]) -> bool:
    """True when the lead carries no ECG (lead off, disconnected, saturated flat)."""
    if x.size == 0:
        return True
    lo, hi = np.percentile(x, [1.0, 99.0])
    return bool(hi - lo < FLAT_MV)


def rhythm_channel(beats: NDArray[np.integer], n: int, fs: float = MODEL_FS) -> NDArray[np.float32]:
    """Each sample holds (R-R interval it lies in / median R-R) - 1, clipped to [-1, 3].

    After the last beat the open interval so far is used, so a running pause shows as a
    rising value. Gives the network the rhythm that AF and pauses are defined by.
    """
    out = np.zeros(n, dtype=np.float32)
    beats = np.asarray(beats, dtype=np.int64)
    if beats.size < 2:
        if beats.size == 1:
            out[beats[0] :] = np.clip((n - beats[0]) / fs - 1.0, -1.0, 3.0)
        return out
    rr = np.diff(beats).astype(np.float64)
    med = float(np.median(rr))
    rel = np.clip(rr / med - 1.0, -1.0, 3.0)
    out[beats[0] : beats[-1]] = np.repeat(rel, rr.astype(np.int64))
    out[: beats[0]] = np.clip(beats[0] / med - 1.0, -1.0, 3.0)
    out[beats[-1] :] = np.clip((n - beats[-1]) / med - 1.0, -1.0, 3.0)
    return out


def normalize_batch(
    segs: NDArray[np.floating], usable: NDArray[np.bool_] | None = None
) -> tuple[NDArray[np.float32], list[NDArray[np.int64]]]:
    """Model inputs (B, 3, n) from (B, 2, n) model-rate segments in mV, filtered in one pass.

    Each lead is band-passed 0.5-40 Hz and robust-scaled; an unusable or flat lead becomes
    zeros, as lead-drop augmentation does in training. Channel 3 is the rhythm channel from
    QRS detection on the first usable lead. Also returns each segment's detected beats.
    """
    x = np.nan_to_num(np.asarray(segs, dtype=np.float64))
    b, _, n = x.shape
    ok = np.ones((b, 2), dtype=bool) if usable is None else np.asarray(usable, dtype=bool).reshape(b, 2).copy()
    lo, hi = np.percentile(x, [1.0, 99.0], axis=-1)
    ok &= (hi - lo) >= FLAT_MV
    out = np.zeros((b, INPUT_CHANNELS, n), dtype=np.float32)
    beats: list[NDArray[np.int64]] = [np.zeros(0, dtype=np.int64)] * b
    if not ok.any():
        return out, beats
    filt = bandpass(x.reshape(b * 2, n), MODEL_FS, 0.5, 40.0, order=2).reshape(b, 2, n)
    med = np.median(filt, axis=-1, keepdims=True)
    flo, fhi = np.percentile(filt, [1.0, 99.0], axis=-1, keepdims=True)
    spread = np.maximum(fhi - flo, 1e-6)
    scaled = np.clip((filt - med) / spread, -8.0, 8.0)
    out[:, :2] = np.where(ok[:, :, None], scaled, 0.0)
    has = ok.any(axis=1)
    lead = np.argmax(ok, axis=1)
    rows = np.flatnonzero(has)
    if rows.size:
        bp, mwi = qrs_energy(x[rows, lead[rows]], MODEL_FS)
        for k, r in enumerate(rows.tolist()):
            beats[r] = detect_from_energy(bp[k], mwi[k], MODEL_FS)
            out[r, 2] = rhythm_channel(beats[r], n)
    return out, beats


def normalize_segment(seg: NDArray[np.floating], usable: NDArray[np.bool_] | None = None) -> NDArray[np.float32]:
    """Model input (3, n) of one (2, n) segment; see ``normalize_batch``."""
    ok = None if usable is None else np.asarray(usable, dtype=bool)[None, :]
    return normalize_batch(np.asarray(seg)[None], ok)[0][0]


def segment_starts(n: int, hop: int) -> list[int]:
    """Start indices of model segments covering ``n`` samples, the last one flush with the end."""
    if n <= SEGMENT_LEN:
        return [0]
    starts = list(range(0, n - SEGMENT_LEN + 1, hop))
    if starts[-1] != n - SEGMENT_LEN:
        starts.append(n - SEGMENT_LEN)
    return starts


def fit_length(seg: NDArray[np.floating]) -> NDArray[np.float64]:
    """Left-pad a (2, n) segment shorter than ``SEGMENT_LEN`` with its edge value; crop longer ones."""
    sa: NDArray[np.float64] = np.asarray(seg, dtype=np.float64)
    n = sa.shape[-1]
    if n >= SEGMENT_LEN:
        return sa[..., n - SEGMENT_LEN :]
    return np.pad(sa, ((0, 0), (SEGMENT_LEN - n, 0)), mode="edge")
