"""Pacemaker pulse rejection on a live stream (``classifier.pacer`` frame by frame, no seams)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from classifier.pacer import PACE_MIN_FS, PACE_MIN_MV, max_width, reject_pulses, screen_mv, tail_samples


class PaceRejector:
    """``reject_pulses`` on a stream of (channels, n) frames at ``fs`` Hz with no seams.

    Samples pass at once, undelayed, unless the newest ones hold a jump that could belong to a
    pulse: those then wait for the next frame (at most ``held`` samples, 11-16 ms at 250-1000 Hz),
    so that the pulse is judged with both flanks and its recharge. The samples last given out stay
    as read-only context, so a pulse cut by a frame end is still seen whole. ECG without such
    jumps (all of the Holter and handheld records here) passes sample for sample, on the same
    timeline. Below ``PACE_MIN_FS`` nothing is judged.
    """

    def __init__(self, fs: float, channels: int, min_mv: float = PACE_MIN_MV) -> None:
        self.fs = fs
        self.channels = channels
        self.min_mv = min_mv
        self.active = fs >= PACE_MIN_FS
        self.held = max_width(fs) + tail_samples(fs)  # the most samples ever held back
        self._screen = screen_mv(fs, min_mv)
        self._given: NDArray[np.float64] | None = None  # the newest samples given out: context
        self._pending: NDArray[np.float64] | None = None  # samples held back
        #: Pulses replaced so far (counted per lead).
        self.rejected = 0

    @property
    def pending(self) -> int:
        """Samples held back now."""
        return 0 if self._pending is None else self._pending.shape[1]

    def process(self, frame: NDArray[np.floating]) -> NDArray[np.float64]:
        x = np.asarray(frame, dtype=np.float64)
        if not self.active or x.shape[1] == 0:
            return x
        parts = [p for p in (self._given, self._pending) if p is not None]
        ext = np.concatenate([*parts, x], axis=1) if parts else x.copy()
        start = 0 if self._given is None else self._given.shape[1]  # first sample not given out
        n = ext.shape[1]
        hold = 0
        if (np.abs(np.diff(ext, axis=1)) > self._screen).any():  # else no pulse, nothing to hold
            # NaN never compares, so it is never part of a pulse.
            self.rejected += reject_pulses(ext, self.fs, self.min_mv, first=start)
            end = ext[:, max(0, n - self.held - 1) :]
            if end.shape[1] > 1 and (np.abs(np.diff(end, axis=1)) > self._screen).any():
                hold = min(self.held, n - start)
        out = ext[:, start : n - hold]
        self._pending = ext[:, n - hold :].copy() if hold else None
        self._given = ext[:, max(0, n - hold - self.held - 1) : n - hold].copy()
        return out

    def flush(self) -> NDArray[np.float64]:
        """Give out what is held, as judged so far, and forget the context: the stream breaks
        here (a gap, a bridged loss), and what comes next is not these samples' neighbour."""
        out = self._pending if self._pending is not None else np.zeros((self.channels, 0))
        self._given = self._pending = None
        return out
