"""Per-stream state: sequence and gap checks, resampling into the ring buffer, the pause tracker.

Everything here is synchronous and O(frame): the daemon calls it from the event loop.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from classifier.constants import MODEL_FS
from monitor.resample import StreamResampler
from monitor.ringbuffer import RingBuffer
from monitor.wire import Frame, WireError

#: A timestamp jump larger than this (seconds) between consecutive frames is a gap.
GAP_TOLERANCE_S = 0.5


@dataclass(slots=True)
class IngestResult:
    """What one accepted frame did: samples written and the length of any gap before it (s)."""

    written: int
    gap_s: float = 0.0
    restarted: bool = False


#: Slope hits closer than this belong to one QRS complex...
_HIT_GAP_S = 0.12
#: ...unless the complex would grow longer than a QRS can be (VT and VF keep hitting).
_QRS_MAX_S = 0.2


@dataclass(slots=True)
class PauseTracker:
    """Cheap per-frame R-R gap check on the model-rate signal.

    The slope over two samples (x[n] - x[n-2], about 8-50 Hz at 128 Hz) follows each lead; a
    slope above 35% of the typical QRS slope (90th percentile of recent per-frame maxima)
    counts as a hit, and hits are grouped into QRS complexes. Gaps run from QRS onset to QRS
    onset, like the R-R interval they stand for (timing from the end of a QRS would shorten
    every gap by the QRS width). A gap that ends inside a frame is kept in ``closed_gap``, so
    a pause a little over the threshold is not lost between two frame ends. The open gap grows
    between frames, never on missing data. Plain numpy on a few dozen samples a frame.
    """

    prev: NDArray[np.float64] | None = None  # the last two samples of each lead
    maxima: NDArray[np.float64] = field(default_factory=lambda: np.zeros((2, 64)))
    n_max: int = 0
    level: NDArray[np.float64] = field(default_factory=lambda: np.zeros(2))
    last_beat_t: float | None = None  # onset of the latest QRS, stream seconds
    last_hit_t: float | None = None
    closed_gap: float = 0.0  # longest onset-to-onset gap that ended in the latest frame, s
    closed_at: float = 0.0  # when that gap ended (the onset of the QRS that closed it)
    usable: NDArray[np.bool_] = field(default_factory=lambda: np.ones(2, dtype=bool))

    def reset(self) -> None:
        self.prev = None
        self.n_max = 0
        self.last_beat_t = None
        self.last_hit_t = None
        self.closed_gap = 0.0

    def update(self, block: NDArray[np.float32], t_end: float) -> None:
        """Feed a (2, n) model-rate block whose last sample is at stream time ``t_end``."""
        n = block.shape[1]
        self.closed_gap = 0.0
        if n == 0:
            return
        x = np.nan_to_num(block.astype(np.float64))
        ext = x if self.prev is None else np.concatenate([self.prev, x], axis=1)
        self.prev = ext[:, -2:].copy()
        if ext.shape[1] < 3:
            return
        slope = np.abs(ext[:, 2:] - ext[:, :-2])  # aligned with the last len-2 samples
        peak = slope.max(axis=1)
        if self.n_max >= 16:
            if self.n_max % 8 == 0:
                self.level = np.percentile(self.maxima[:, : min(self.n_max, 64)], 90, axis=1)
            hits = (slope >= 0.35 * self.level[:, None]) & self.usable[:, None]
            cols = np.flatnonzero(hits.any(axis=0))
            if cols.size:
                self._group_hits(t_end - (slope.shape[1] - 1 - cols) / MODEL_FS)
        else:
            self.last_beat_t = t_end  # still learning the QRS level: no judgement yet
            if self.n_max == 15:
                self.level = np.percentile(self.maxima[:, :15], 90, axis=1)
        # Frames inside a pause must not drag the QRS level down.
        if self.gap(t_end) < 1.5:
            self.maxima[:, self.n_max % 64] = peak
            self.n_max += 1

    def _group_hits(self, times: NDArray[np.float64]) -> None:
        onset, last = self.last_beat_t, self.last_hit_t
        for t in times.tolist():
            if last is None or onset is None or t - last > _HIT_GAP_S or t - onset > _QRS_MAX_S:
                if onset is not None and t - onset > self.closed_gap:
                    self.closed_gap, self.closed_at = t - onset, t
                onset = t
            last = t
        self.last_beat_t, self.last_hit_t = onset, last

    def gap(self, now: float) -> float:
        return 0.0 if self.last_beat_t is None else now - self.last_beat_t


class StreamState:
    """One patient stream: buffer at the model rate plus the bookkeeping that validates frames."""

    def __init__(self, stream_id: str, fs: float, channels: int, buffer_s: float) -> None:
        self.stream_id = stream_id
        self.fs = fs
        self.channels = channels
        self.buffer = RingBuffer(2, int(buffer_s * MODEL_FS))
        self.resampler = StreamResampler(fs, MODEL_FS, channels)
        self.pause = PauseTracker()
        self.next_seq: int | None = None
        self.t_end = math.nan  # stream time just after the newest sample
        self.valid_from = 0  # buffer.total index where the current gap-free stretch began
        self.last_wall = 0.0
        self.last_eval_total = 0
        self.suspect = False  # last verdict uncertain or abnormal: evaluate again sooner
        # Latest verdict, for the console.
        self.heart_rate = math.nan
        self.current = "-"
        self.confidence = 0.0
        self.quality = ("-", "-")
        self.gap_open = False

    @property
    def valid_samples(self) -> int:
        return min(self.buffer.total - self.valid_from, self.buffer.capacity)

    def time_of(self, index: int) -> float:
        """Stream time of absolute buffer index ``index``."""
        return self.t_end - (self.buffer.total - index) / MODEL_FS

    def ingest(self, frame: Frame, wall: float) -> IngestResult:
        """Check sequence, rate and timing; write the frame; raise WireError to reject it."""
        if frame.fs != self.fs:
            raise WireError("rate_change", f"{self.stream_id}: {frame.fs} Hz after {self.fs} Hz")
        if frame.samples.shape[0] != self.channels:
            raise WireError(
                "bad_channels", f"{self.stream_id}: {frame.samples.shape[0]} channels after {self.channels}"
            )
        restarted = False
        gap_s = 0.0
        if self.next_seq is not None:
            if frame.seq == 0 and self.next_seq > 1:
                restarted = True  # the sender restarted: begin a new stretch
                gap_s = max(0.0, frame.t0 - self.t_end)
            elif frame.seq < self.next_seq:
                raise WireError(
                    "duplicate" if frame.seq == self.next_seq - 1 else "out_of_order",
                    f"{self.stream_id}: seq {frame.seq}, expected {self.next_seq}",
                )
            else:
                jump = frame.t0 - self.t_end
                if jump < -GAP_TOLERANCE_S:
                    raise WireError("out_of_order", f"{self.stream_id}: t0 {frame.t0:.3f} before {self.t_end:.3f}")
                if frame.seq > self.next_seq or jump > GAP_TOLERANCE_S:
                    gap_s = max(jump, 0.0)
        if self.next_seq is not None and (gap_s > 0 or restarted or frame.seq > self.next_seq):
            self._mark_gap(gap_s)
        out = self.resampler.process(frame.samples)
        if out.shape[0] == 1:
            out = np.vstack([out, np.full_like(out, np.nan)])
        self.buffer.write(out)
        self.next_seq = frame.seq + 1
        self.t_end = frame.t0 + frame.duration
        self.last_wall = wall
        self.pause.update(out, self.t_end - 1.0 / MODEL_FS)
        return IngestResult(out.shape[1], gap_s, restarted)

    def _mark_gap(self, gap_s: float) -> None:
        """Missing data: fill the buffer with NaN for its length and start a new valid stretch."""
        n = min(round(gap_s * MODEL_FS), self.buffer.capacity)
        if n:
            self.buffer.write(np.full((2, n), np.nan, dtype=np.float32))
        self.valid_from = self.buffer.total
        self.resampler = StreamResampler(self.fs, MODEL_FS, self.channels)
        self.pause.reset()
        self.gap_open = True

    def window(self, seconds: float) -> tuple[NDArray[np.float32], float]:
        """The newest gap-free ``seconds`` (or less) and the stream time of its first sample."""
        n = min(int(seconds * MODEL_FS), self.valid_samples)
        return self.buffer.latest(n), self.time_of(self.buffer.total - n)
