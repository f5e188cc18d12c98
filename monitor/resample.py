"""Streaming resampler: causal anti-alias filter plus linear interpolation with carried phase.

Frame boundaries leave no seams: filter state and the fractional sample position carry over.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import signal


class StreamResampler:
    """Resample (channels, n) frames from ``fs_in`` to ``fs_out`` Hz, one frame at a time."""

    def __init__(self, fs_in: float, fs_out: float, channels: int) -> None:
        if fs_in <= 0 or fs_out <= 0:
            raise ValueError("rates must be positive")
        self.fs_in = fs_in
        self.fs_out = fs_out
        self.step = fs_in / fs_out  # input samples per output sample
        self._sos: NDArray[np.float64] | None = None
        self._zi: NDArray[np.float64] | None = None
        if fs_in > fs_out * 1.01:
            self._sos = signal.butter(4, 0.45 * fs_out / (fs_in / 2), output="sos")
            zi = signal.sosfilt_zi(self._sos)
            self._zi = np.repeat(zi[:, None, :], channels, axis=1)  # (sections, channels, 2)
        self._last: NDArray[np.float64] | None = None  # last input sample per channel
        self._pos = 0.0  # position of the next output sample, relative to _last (index 0)
        self._primed = False

    def process(self, frame: NDArray[np.floating]) -> NDArray[np.float32]:
        x: NDArray[np.float64] = np.asarray(frame, dtype=np.float64)
        if self._sos is not None and self._zi is not None:
            if not self._primed:
                self._zi = self._zi * x[None, :, :1]
            x, self._zi = signal.sosfilt(self._sos, x, axis=1, zi=self._zi)
        if self._last is None:
            ext = x
            pos = 0.0
        else:
            ext = np.concatenate([self._last[:, None], x], axis=1)
            pos = self._pos
        self._primed = True
        last_idx = ext.shape[1] - 1
        if pos > last_idx:
            self._pos = pos - last_idx
            self._last = ext[:, -1].copy()
            return np.zeros((x.shape[0], 0), dtype=np.float32)
        count = int(np.floor((last_idx - pos) / self.step)) + 1
        t = pos + self.step * np.arange(count)
        base = np.arange(ext.shape[1], dtype=np.float64)
        out = np.vstack([np.interp(t, base, ext[c]) for c in range(ext.shape[0])])
        self._pos = t[-1] + self.step - last_idx
        self._last = ext[:, -1].copy()
        return out.astype(np.float32)
