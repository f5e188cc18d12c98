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
from monitor.core.pacer import PaceRejector
from monitor.core.pause import PauseTracker
from monitor.core.resample import StreamResampler
from monitor.core.ringbuffer import RingBuffer
from protocol.wire import Frame, WireError

#: A timestamp jump larger than this (seconds) between consecutive frames is a gap: NaN in the
#: buffer, a new gap-free stretch, NO_SIGNAL. A smaller one (a lost or late frame) is bridged.
GAP_TOLERANCE_S = 0.5
#: A forward jump larger than this (seconds) is taken only once later frames confirm it: one
#: glitched timestamp must not throw the bed an hour ahead.
MAX_FORWARD_JUMP_S = 300.0
#: Frames that continue one another but not the stream confirm a new timeline after
#: ``resync_frames`` of them, or after this much signal (s) if that comes first (large frames).
RESYNC_MIN_S = 1.0


@dataclass(slots=True)
class IngestResult:
    """What one accepted frame did.

    ``gap_s``: seconds of missing data before it. ``restarted``: the sender began again at seq 0.
    ``resynced``: the stream followed a new timeline (clock jump, sequence jump, new rate or lead
    count) confirmed by the frames before this one; ``resync_s`` is its jump (new minus old, s).
    ``bridged_s``: a short loss (under ``GAP_TOLERANCE_S``) filled by holding the last sample.
    ``pace_pulses``: pacemaker pulses taken out of it (per lead; ``monitor.core.pacer``).
    """

    written: int
    gap_s: float = 0.0
    restarted: bool = False
    resynced: bool = False
    resync_s: float = 0.0
    bridged_s: float = 0.0
    pace_pulses: int = 0


@dataclass(slots=True)
class _Candidate:
    """Frames that continue one another but not the stream: a possible new timeline."""

    next_seq: int
    t_end: float
    fs: float
    channels: int
    count: int
    span_s: float


class StreamState:
    """One patient stream: buffer at the model rate plus the bookkeeping that validates frames."""

    def __init__(self, stream_id: str, fs: float, channels: int, buffer_s: float, resync_frames: int = 5) -> None:
        self.stream_id = stream_id
        self.fs = fs
        self.channels = channels
        self.resync_frames = resync_frames
        self.buffer = RingBuffer(2, int(buffer_s * MODEL_FS))
        self.pacer = PaceRejector(fs, channels)
        self.resampler = StreamResampler(fs, MODEL_FS, channels)
        self.pause = PauseTracker()
        self.next_seq: int | None = None
        self.t_end = math.nan  # stream time just after the newest sample
        self.valid_from = 0  # buffer.total index where the current gap-free stretch began
        self.contiguous_s = 0.0  # stream seconds since the last gap, restart or resync
        self.epoch = 0  # +1 at every discontinuity: a window taken before it is stale after it
        self._candidate: _Candidate | None = None

    @property
    def valid_samples(self) -> int:
        return min(self.buffer.total - self.valid_from, self.buffer.capacity)

    def time_of(self, index: int) -> float:
        """Stream time of absolute buffer index ``index``."""
        return self.t_end - (self.buffer.total - index) / MODEL_FS

    def ingest(self, frame: Frame) -> IngestResult:
        """Check format, sequence and timing; write the frame; raise WireError to reject it.

        Time leads: a frame that continues the stream's clock is taken whatever its sequence
        number (a lost frame is bridged, a sequence glitch is rebased); sequence numbers only
        tell a duplicate apart. A frame behind the stream, one far ahead of it, or one in another
        rate or lead count is rejected, but if such frames continue one another for
        ``resync_frames`` frames (or ``RESYNC_MIN_S``), the stream was wrong: it follows them
        from then on. So one glitched frame costs nothing and a real clock step a second.
        """
        result = IngestResult(0)
        if self.next_seq is not None:
            dt = frame.t0 - self.t_end
            behind = -dt > min(GAP_TOLERANCE_S, max(0.5 * frame.duration, 0.02))
            reason = ""
            if frame.fs != self.fs:
                reason = "rate_change"
            elif frame.samples.shape[0] != self.channels:
                reason = "bad_channels"
            elif behind:
                reason = "duplicate" if frame.seq == self.next_seq - 1 else "out_of_order"
            elif dt > MAX_FORWARD_JUMP_S:
                reason = "clock_jump"
            if reason:
                if not self._continues_candidate(frame):
                    raise WireError(
                        reason,
                        f"{self.stream_id}: seq {frame.seq} t0 {frame.t0:.3f} at {frame.fs:g} Hz x "
                        f"{frame.samples.shape[0]}, expected seq {self.next_seq} t0 {self.t_end:.3f} at "
                        f"{self.fs:g} Hz x {self.channels}",
                    )
                result.resynced, result.resync_s = True, dt
                self._reformat(frame.fs, frame.samples.shape[0])
                self._mark_gap(max(dt, 0.0))
            elif frame.seq == 0 and self.next_seq > 1:
                result.restarted, result.gap_s = True, max(dt, 0.0)  # the sender restarted
                self._mark_gap(result.gap_s)
            elif dt > GAP_TOLERANCE_S:
                result.gap_s = dt
                self._mark_gap(dt)
            elif dt * MODEL_FS >= 1.0:
                result.bridged_s = dt
                self._bridge(dt)
        self._candidate = None
        before = self.pacer.rejected
        raw = self.pacer.process(frame.samples)
        result.pace_pulses = self.pacer.rejected - before
        self.next_seq = frame.seq + 1
        self.t_end = frame.t0 + frame.duration
        self.contiguous_s += frame.duration
        result.written = self._write(raw)
        return result

    def _write(self, raw: NDArray[np.floating]) -> int:
        """Resample ``raw`` (sender-rate samples that end at ``t_end``, less what the pace
        rejector holds back) into the buffer and the pause tracker; how many were written."""
        if raw.shape[1] == 0:  # all held back: nothing to resample yet
            return 0
        out = self.resampler.process(raw)
        if out.shape[0] == 1:
            out = np.vstack([out, np.full_like(out, np.nan)])
        self.buffer.write(out)
        self.pause.update(out, self.t_end - self.pacer.pending / self.fs - 1.0 / MODEL_FS)
        return int(out.shape[1])

    def _continues_candidate(self, frame: Frame) -> bool:
        """Track frames the stream rejects; True once enough of them continue one another."""
        c = self._candidate
        ch = frame.samples.shape[0]
        if (
            c is not None
            and frame.seq == c.next_seq
            and abs(frame.t0 - c.t_end) <= GAP_TOLERANCE_S
            and (frame.fs, ch) == (c.fs, c.channels)
        ):
            c.next_seq, c.t_end = frame.seq + 1, frame.t0 + frame.duration
            c.count += 1
            c.span_s += frame.duration
        else:
            c = self._candidate = _Candidate(frame.seq + 1, frame.t0 + frame.duration, frame.fs, ch, 1, frame.duration)
        return c.count >= self.resync_frames or (c.count >= 2 and c.span_s >= RESYNC_MIN_S)

    def _reformat(self, fs: float, channels: int) -> None:
        self.fs, self.channels = fs, channels

    def _bridge(self, dt: float) -> None:
        """A lost or late frame under the gap tolerance: hold the last sample for its length, so
        the stretch stays gap-free (the classifier and the pause tracker carry on)."""
        self._write(self.pacer.flush())  # the samples held back come before the loss
        n = round(dt * MODEL_FS)
        last = self.buffer.latest(1)
        fill = np.repeat(np.nan_to_num(last), n, axis=1) if last.shape[1] else np.zeros((2, n), dtype=np.float32)
        self.buffer.write(fill.astype(np.float32))
        self.pause.update(fill, self.t_end + dt - 1.0 / MODEL_FS)

    def _mark_gap(self, gap_s: float) -> None:
        """Missing data: fill the buffer with NaN for its length and start a new valid stretch."""
        self._write(self.pacer.flush())  # the samples held back come before the gap
        n = round(min(gap_s, self.buffer.capacity / MODEL_FS) * MODEL_FS)  # no overflow on huge gaps
        if n:
            self.buffer.write(np.full((2, n), np.nan, dtype=np.float32))
        self.valid_from = self.buffer.total
        self.contiguous_s = 0.0
        self.epoch += 1
        self.pacer = PaceRejector(self.fs, self.channels)
        self.resampler = StreamResampler(self.fs, MODEL_FS, self.channels)
        self.pause.reset()

    def window(self, seconds: float) -> tuple[NDArray[np.float32], float]:
        """The newest gap-free ``seconds`` (or less) and the stream time of its first sample."""
        n = min(int(seconds * MODEL_FS), self.valid_samples)
        return self.buffer.latest(n), self.time_of(self.buffer.total - n)
