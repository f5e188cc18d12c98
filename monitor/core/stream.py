"""Per-stream signal state: sequence and clock checks, resampling into the ring buffer, the pause
tracker, and resynchronisation after a jump.

Everything here is synchronous and O(frame): the core calls it for every accepted frame.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from classifier.constants import MODEL_FS
from monitor.core.pause import PauseTracker
from monitor.core.resample import StreamResampler
from monitor.core.ringbuffer import RingBuffer
from protocol.wire import Frame, WireError

#: A timestamp jump larger than this (seconds) between consecutive frames is a gap.
GAP_TOLERANCE_S = 0.5


@dataclass(slots=True)
class IngestResult:
    """What one accepted frame did.

    ``gap_s``: seconds of missing data before it. ``restarted``: the sender began again at seq 0.
    ``resync_s``: the stream clock jumped by this much (new minus old, s) and the stream was
    resynchronised to the frames that followed the jump; 0.0 when not.
    """

    written: int
    gap_s: float = 0.0
    restarted: bool = False
    resynced: bool = False
    resync_s: float = 0.0


@dataclass(slots=True)
class _Candidate:
    """Frames that continue one another but not the stream: a possible new timeline."""

    next_seq: int
    t_end: float
    count: int


class StreamState:
    """One patient stream: buffer at the model rate plus the bookkeeping that validates frames."""

    def __init__(self, stream_id: str, fs: float, channels: int, buffer_s: float, resync_frames: int = 5) -> None:
        self.stream_id = stream_id
        self.fs = fs
        self.channels = channels
        self.resync_frames = resync_frames
        self.buffer = RingBuffer(2, int(buffer_s * MODEL_FS))
        self.resampler = StreamResampler(fs, MODEL_FS, channels)
        self.pause = PauseTracker()
        self.next_seq: int | None = None
        self.t_end = math.nan  # stream time just after the newest sample
        self.valid_from = 0  # buffer.total index where the current gap-free stretch began
        self.contiguous_s = 0.0  # stream seconds since the last gap, restart or resync
        self._candidate: _Candidate | None = None

    @property
    def valid_samples(self) -> int:
        return min(self.buffer.total - self.valid_from, self.buffer.capacity)

    def time_of(self, index: int) -> float:
        """Stream time of absolute buffer index ``index``."""
        return self.t_end - (self.buffer.total - index) / MODEL_FS

    def ingest(self, frame: Frame) -> IngestResult:
        """Check sequence, rate and timing; write the frame; raise WireError to reject it.

        A frame behind the stream's sequence or clock is rejected, but if ``resync_frames`` such
        frames in a row continue one another, the stream was wrong (one glitched frame jumped it
        ahead, or the device clock stepped back): the stream follows them from then on.
        """
        if frame.fs != self.fs:
            raise WireError("rate_change", f"{self.stream_id}: {frame.fs} Hz after {self.fs} Hz")
        if frame.samples.shape[0] != self.channels:
            raise WireError(
                "bad_channels", f"{self.stream_id}: {frame.samples.shape[0]} channels after {self.channels}"
            )
        restarted = resynced = False
        gap_s = resync_s = 0.0
        if self.next_seq is not None:
            if frame.seq == 0 and self.next_seq > 1:
                restarted = True  # the sender restarted: begin a new stretch
                gap_s = max(0.0, frame.t0 - self.t_end)
                resync_s = min(0.0, frame.t0 - self.t_end)
            else:
                jump = frame.t0 - self.t_end
                behind = frame.seq < self.next_seq or jump < -GAP_TOLERANCE_S
                if behind and self._continues_candidate(frame):
                    resynced, resync_s = True, jump
                elif behind:
                    if frame.seq == self.next_seq - 1:
                        reason = "duplicate"
                    else:
                        reason = "out_of_order"
                    raise WireError(
                        reason,
                        f"{self.stream_id}: seq {frame.seq} t0 {frame.t0:.3f}, expected "
                        f"seq {self.next_seq} t0 {self.t_end:.3f}",
                    )
                elif frame.seq > self.next_seq or jump > GAP_TOLERANCE_S:
                    gap_s = max(jump, 0.0)
        if self.next_seq is not None and (gap_s > 0 or restarted or resynced or frame.seq > self.next_seq):
            self._mark_gap(gap_s)
        self._candidate = None
        out = self.resampler.process(frame.samples)
        if out.shape[0] == 1:
            out = np.vstack([out, np.full_like(out, np.nan)])
        self.buffer.write(out)
        self.next_seq = frame.seq + 1
        self.t_end = frame.t0 + frame.duration
        self.contiguous_s += frame.duration
        self.pause.update(out, self.t_end - 1.0 / MODEL_FS)
        return IngestResult(out.shape[1], gap_s, restarted, resynced, resync_s)

    def _continues_candidate(self, frame: Frame) -> bool:
        """Track frames behind the stream; True once ``resync_frames`` of them continue each other."""
        c = self._candidate
        end = frame.t0 + frame.duration
        if c is not None and frame.seq == c.next_seq and abs(frame.t0 - c.t_end) <= GAP_TOLERANCE_S:
            c.next_seq, c.t_end, c.count = frame.seq + 1, end, c.count + 1
        else:
            c = self._candidate = _Candidate(frame.seq + 1, end, 1)
        return c.count >= self.resync_frames

    def _mark_gap(self, gap_s: float) -> None:
        """Missing data: fill the buffer with NaN for its length and start a new valid stretch."""
        n = round(min(gap_s, self.buffer.capacity / MODEL_FS) * MODEL_FS)  # no overflow on huge gaps
        if n:
            self.buffer.write(np.full((2, n), np.nan, dtype=np.float32))
        self.valid_from = self.buffer.total
        self.contiguous_s = 0.0
        self.resampler = StreamResampler(self.fs, MODEL_FS, self.channels)
        self.pause.reset()

    def window(self, seconds: float) -> tuple[NDArray[np.float32], float]:
        """The newest gap-free ``seconds`` (or less) and the stream time of its first sample."""
        n = min(int(seconds * MODEL_FS), self.valid_samples)
        return self.buffer.latest(n), self.time_of(self.buffer.total - n)
