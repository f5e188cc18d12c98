"""All beds of one daemon: admission, forgetting, and the queue of windows due for the classifier.

Pure and synchronous like ``Bedside``. Admission is bounded so junk stream ids cannot push out
real beds: a new id is *pending* until it has sent ``admit_after_s`` of contiguous data; pending
ids raise no alarms, live in a table of ``max_pending`` (default ``max_beds``) where the least
recently heard id makes room for a newcomer if it has gone quiet or the newcomer comes back
after being refused (``too_many_pending``): real senders send on, one-shot junk does not. They
are forgotten after ``forget_pending_s`` of silence. Only admitted beds count
against ``max_beds``.

Overload: windows are classified oldest-due first. When the oldest has waited past
``shed_after_s`` and more are due than the classifier can take in that time at its measured rate,
the oldest-due ones are shed (counted); their beds come due again at their next hop. Alarms and the per-frame pause rule never depend on it.

``now`` arguments are the daemon's monotonic clock (seconds).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from monitor.core.analysis import WindowJob, WindowResult
from monitor.core.bedside import Bedside, FrameOutcome
from monitor.core.detection import DetectionConfig
from protocol.alarm import Alarm
from protocol.wire import Frame, WireError

#: A pending id silent this long (s) may be pushed out by a newcomer when the table is full.
PENDING_QUIET_S = 1.0


@dataclass(slots=True)
class WardCounters:
    """Monotonic counts the daemon exports; the ward only adds to them."""

    admitted: int = 0
    forgotten: int = 0
    pending_evicted: int = 0
    pending_forgotten: int = 0
    superseded: int = 0  # a bed came due again before its queued window was taken
    shed: int = 0  # due windows dropped under overload
    resyncs: int = 0
    restored: int = 0
    stale_results: int = 0  # window results dropped: the bed had a gap or resync since


class Ward:
    def __init__(
        self,
        config: DetectionConfig,
        *,
        max_beds: int = 2000,
        max_pending: int | None = None,
        shed_after_s: float = 4.0,
        model_version: str = "rules",
    ) -> None:
        self.config = config
        self.max_beds = max_beds
        self.max_pending = max_pending if max_pending is not None else max(64, max_beds)
        self.shed_after_s = shed_after_s
        self.model_version = model_version
        self.beds: dict[str, Bedside] = {}  # admitted
        self.pending: OrderedDict[str, Bedside] = OrderedDict()  # least recently heard first
        self.counters = WardCounters()
        self._knocked: OrderedDict[str, float] = OrderedDict()  # ids refused while pending was full
        self._due: OrderedDict[str, float] = OrderedDict()  # bed -> when it came due (monotonic s)
        self._calm_until = 0.0  # while shedding, suspect beds are not re-checked sooner

    def __len__(self) -> int:
        return len(self.beds)

    def get(self, stream_id: str) -> Bedside | None:
        return self.beds.get(stream_id) or self.pending.get(stream_id)

    # -- frames -------------------------------------------------------------------------

    def on_frame(self, frame: Frame, now: float) -> FrameOutcome:
        """Route a decoded frame to its bed; raise ``WireError`` to reject it."""
        sid = frame.stream_id
        bed = self.beds.get(sid)
        if bed is None:
            bed = self.pending.get(sid)
            if bed is None:
                if len(self.beds) >= self.max_beds:
                    raise WireError("too_many_streams", f"{sid}: {self.max_beds} beds admitted")
                if len(self.pending) >= self.max_pending:
                    # Make room by pushing out the least recently heard id, but only if it has
                    # gone quiet (junk sends a frame and goes) or the newcomer knocks a second
                    # time (a real sender sends on; one-shot junk never does). A newcomer that
                    # cannot come in now is refused, counted, and remembered for its next frame.
                    oldest_sid, oldest = next(iter(self.pending.items()))
                    if now - oldest.last_now < PENDING_QUIET_S and self._knocked.pop(sid, None) is None:
                        self._knocked[sid] = now
                        if len(self._knocked) > self.max_pending:
                            self._knocked.popitem(last=False)
                        raise WireError("too_many_pending", f"{sid}: {self.max_pending} new stream ids pending")
                    del self.pending[oldest_sid]
                    self.counters.pending_evicted += 1
                bed = Bedside(sid, self.config, now, self.model_version)
                self.pending[sid] = bed
            else:
                self.pending.move_to_end(sid)
        out = bed.on_frame(frame, now)
        if out.admitted and sid in self.pending:
            del self.pending[sid]
            if len(self.beds) >= self.max_beds:
                raise WireError("too_many_streams", f"{sid}: {self.max_beds} beds admitted")
            self.beds[sid] = bed
            self.counters.admitted += 1
        if out.ingest is not None and out.ingest.resynced:
            self.counters.resyncs += 1
        if out.due:
            if sid in self._due:
                self.counters.superseded += 1  # keeps its place; the newest window is taken
            else:
                self._due[sid] = now
        return out

    # -- windows ------------------------------------------------------------------------

    @property
    def due_count(self) -> int:
        return len(self._due)

    def take_due(self, max_n: int, now: float, rate_per_s: float | None = None) -> list[WindowJob]:
        """Up to ``max_n`` windows, oldest-due first, after shedding what cannot be done in time.

        ``rate_per_s``: windows per second the classifier has been managing lately (None while
        unknown: nothing is shed).
        """
        waited = now - next(iter(self._due.values())) if self._due else 0.0
        if rate_per_s is not None and rate_per_s > 0 and waited > self.shed_after_s:
            # A real backlog (the oldest due window has waited past shed_after_s): keep what the
            # classifier can do in that time, oldest-due first shed. A burst (every bed filling
            # its buffer at once after a start) is not a backlog and sheds nothing.
            keep = max(max_n, int(rate_per_s * self.shed_after_s))
            excess = len(self._due) - keep
            if excess > 0:
                for _ in range(excess):
                    self._due.popitem(last=False)
                self.counters.shed += excess
                self._calm_until = now + 2 * self.config.hop_s
        jobs: list[WindowJob] = []
        while self._due and len(jobs) < max_n:
            sid, _ = self._due.popitem(last=False)
            bed = self.beds.get(sid)
            job = bed.take_window() if bed is not None else None
            if job is not None:
                jobs.append(job)
        return jobs

    def on_results(self, results: list[WindowResult], now: float) -> list[Alarm]:
        calm = now < self._calm_until
        alarms: list[Alarm] = []
        for r in results:
            bed = self.beds.get(r.job.stream_id)
            if bed is None:
                continue
            if not bed.is_current(r.job):
                self.counters.stale_results += 1
                continue
            alarms += bed.on_result(r, now, calm=calm)
        return alarms

    # -- time ---------------------------------------------------------------------------

    def on_tick(self, now: float) -> list[Alarm]:
        """Silence: NO_SIGNAL for quiet beds, forget long-silent ones (resolving their alarms)."""
        alarms: list[Alarm] = []
        for sid, bed in list(self.beds.items()):
            silent = now - bed.last_now
            if silent > self.config.forget_s:
                alarms += bed.close(now, f"no data for {silent:.0f} s: this bed is no longer monitored")
                del self.beds[sid]
                self._due.pop(sid, None)
                self.counters.forgotten += 1
            else:
                alarms += bed.on_tick(now)
        while self.pending:
            sid, bed = next(iter(self.pending.items()))
            if now - bed.last_now <= self.config.forget_pending_s:
                break
            del self.pending[sid]
            self.counters.pending_forgotten += 1
        return alarms

    def restore(self, alarms: list[Alarm], now: float) -> int:
        """Beds with alarms active when the daemon stopped; returns how many alarms continue."""
        by_bed: dict[str, list[Alarm]] = {}
        for a in alarms:
            by_bed.setdefault(a.stream_id, []).append(a)
        n = 0
        for sid, group in by_bed.items():
            bed = self.beds.get(sid)
            if bed is None:
                if len(self.beds) >= self.max_beds:
                    continue
                bed = self.beds[sid] = Bedside(sid, self.config, now, self.model_version)
            bed.restore(group, now)
            n += sum(1 for a in group if a.event in bed.trackers)
        self.counters.restored += n
        return n

    def active_alarms(self, stream_id: str) -> list[str]:
        bed = self.beds.get(stream_id)
        return bed.active_alarms() if bed is not None else []
