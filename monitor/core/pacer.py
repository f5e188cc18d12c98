"""Pacemaker pulse rejection on a live stream (``classifier.pacer`` frame by frame, no seams)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from classifier.pacer import PACE_MIN_FS, PACE_MIN_MV, max_width, reject_pulses, screen_mv, tail_samples


class PaceRejector:
    """``reject_pulses`` on a stream of (channels, n) frames at ``fs`` Hz with no seams.

    Samples pass at once, undelayed, unless the end of a frame holds a jump that could belong to
    a pulse: then its newest samples wait for the next frame (11-16 ms), so that the pulse is
    judged with both flanks and its recharge. ECG without such jumps (all of the Holter and
    handheld records here) passes sample for sample as it came, on the same timeline. Below
    ``PACE_MIN_FS`` nothing is judged.
    """

    def __init__(self, fs: float, channels: int, min_mv: float = PACE_MIN_MV) -> None:
        self.fs = fs
        self.channels = channels
        self.min_mv = min_mv
        self.active = fs >= PACE_MIN_FS
        self.held = max_width(fs) + tail_samples(fs)  # the most samples ever held back
        self._screen = screen_mv(fs, min_mv)
        self._last: NDArray[np.float64] | None = None  # the last sample given out: a left flank
        self._pending: NDArray[np.float64] | None = None  # samples held back
        #: Pulses replaced so far (counted per lead).
        self.rejected = 0

    def process(self, frame: NDArray[np.floating]) -> NDArray[np.float64]:
        x = np.asarray(frame, dtype=np.float64)
        if not self.active or x.shape[1] == 0:
            return x
        parts = [p for p in (self._last, self._pending) if p is not None]
        ext = np.concatenate([*parts, x], axis=1) if parts else x.copy()
        start = 0 if self._last is None else 1  # the last sample given out is only a flank now
        n = ext.shape[1]
        hold = 0
        if (np.abs(np.diff(ext, axis=1)) > self._screen).any():  # else no pulse, nothing to hold
            self.rejected += reject_pulses(ext, self.fs, self.min_mv)  # NaN never compares: never a pulse
            end = ext[:, max(start, n - self.held - 1) :]
            if end.shape[1] > 1 and (np.abs(np.diff(end, axis=1)) > self._screen).any():
                hold = min(self.held, n - start)
        out = ext[:, start : n - hold]
        self._pending = ext[:, n - hold :].copy() if hold else None
        if out.shape[1]:
            self._last = out[:, -1:].copy()
        return out
