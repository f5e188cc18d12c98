"""A preallocated multi-channel ring buffer. Writes and reads are numpy slices, never per sample."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


class RingBuffer:
    """Holds the last ``capacity`` samples of ``channels`` channels (float32)."""

    __slots__ = ("_buf", "capacity", "total")

    def __init__(self, channels: int, capacity: int) -> None:
        if capacity <= 0 or channels <= 0:
            raise ValueError("capacity and channels must be positive")
        self._buf = np.zeros((channels, capacity), dtype=np.float32)
        self.capacity = capacity
        self.total = 0  # samples ever written

    def __len__(self) -> int:
        return min(self.total, self.capacity)

    @property
    def nbytes(self) -> int:
        return int(self._buf.nbytes)

    def write(self, block: NDArray[np.floating]) -> None:
        """Append a (channels, n) block; only the last ``capacity`` samples are kept."""
        n = block.shape[1]
        if n == 0:
            return
        if n >= self.capacity:
            # Laid out where a sample-by-sample write would have left it: the newest sample just
            # before the write position, so ``latest`` reads them in order.
            self.total += n
            self._buf[:] = np.roll(block[:, -self.capacity :], self.total % self.capacity, axis=1)
            return
        pos = self.total % self.capacity
        first = min(n, self.capacity - pos)
        self._buf[:, pos : pos + first] = block[:, :first]
        if first < n:
            self._buf[:, : n - first] = block[:, first:]
        self.total += n

    def latest(self, n: int) -> NDArray[np.float32]:
        """A contiguous copy of the newest ``n`` samples (fewer if fewer were written)."""
        n = min(n, len(self))
        end = self.total % self.capacity
        start = end - n
        if start >= 0:
            return self._buf[:, start:end].copy()
        return np.concatenate([self._buf[:, start:], self._buf[:, :end]], axis=1)
