"""The monitor daemon: ingest, per-stream buffers, batched inference, alarms, metrics.

``Monitor`` is an async context manager that owns every task and connection it starts.
Leaving it shuts down in phases: stop ingest, finish the windows in flight, flush alarms,
close connections.
"""

from __future__ import annotations

import asyncio
import logging
import math
import signal
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack, suppress
from functools import partial
from types import TracebackType
from typing import Any, Self

import numpy as np
import zmq.asyncio
from prometheus_client import CollectorRegistry, start_http_server

from classifier.constants import MIN_WINDOW_S, MODEL_FS
from classifier.inference import MLECGClassifier
from classifier.rules import RuleBasedClassifier
from monitor.alarm_bus import AlarmBus
from monitor.alarms import (
    DEFAULT_POLICIES,
    LEADS_OFF,
    NO_SIGNAL,
    PRIORITY,
    Alarm,
    EventTracker,
    Observation,
)
from monitor.analysis import WindowJob, WindowResult, analyse
from monitor.clock import Clock, SystemClock
from monitor.config import MonitorConfig
from monitor.metrics import Metrics
from monitor.quality import LeadQuality, lead_quality
from monitor.shard import owns
from monitor.stream import StreamState
from monitor.transports import AlarmSink, RawFrame, SampleSource, make_sink, make_source
from monitor.transports.journal import JournalSink
from monitor.wire import WireError, decode

log = logging.getLogger(__name__)

HOUSEKEEPING_S = 0.5
#: A NORMAL call less confident than this makes the stream a suspect: evaluated every quarter hop.
SUSPECT_BELOW = 0.8
#: Suspect streams are evaluated this many times as often, so an onset is confirmed quickly.
SUSPECT_HOP_DIVISOR = 4
FORGET_STREAM_S = 600.0


class RateLimitedLog:
    """Logs a repeated condition at most once per ``every`` seconds, with the count since."""

    def __init__(self, logger: logging.Logger, every: float = 10.0) -> None:
        self.logger = logger
        self.every = every
        self._last: dict[str, float] = {}
        self._count: Counter[str] = Counter()

    def warning(self, key: str, msg: str) -> None:
        self._count[key] += 1
        now = time.monotonic()
        if now - self._last.get(key, -math.inf) >= self.every:
            self.logger.warning("%s (%d since last report)", msg, self._count[key])
            self._last[key] = now
            self._count[key] = 0


class Monitor:
    def __init__(
        self,
        config: MonitorConfig,
        *,
        registry: CollectorRegistry | None = None,
        clock: Clock | None = None,
        classifier: MLECGClassifier | RuleBasedClassifier | None = None,
        extra_sinks: list[AlarmSink] | None = None,
    ) -> None:
        self.config = config
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.clock = clock or SystemClock()
        self.classifier = classifier
        self.streams: dict[str, StreamState] = {}
        self.trackers: dict[tuple[str, str], EventTracker] = {}
        self.recent: list[Alarm] = []
        self.alarm_listeners: list[Callable[[Alarm], None]] = []
        self._extra_sinks = extra_sinks or []
        self._shard = config.shard_index()
        self._due: OrderedDict[str, None] = OrderedDict()
        self._due_event = asyncio.Event()
        self._stopping = False
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ecg-inference")
        self._ingest_stack = AsyncExitStack()
        self._stack = AsyncExitStack()
        self._ingest_tasks: list[asyncio.Task[None]] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._ctx: zmq.asyncio.Context | None = None
        self._bus: AlarmBus | None = None
        self._rejects = RateLimitedLog(log)
        self.model_version = "rules"

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        cfg = self.config
        loop = asyncio.get_running_loop()
        if self.classifier is None:
            if cfg.rules_only:
                self.classifier = RuleBasedClassifier()
            else:
                self.classifier = await loop.run_in_executor(
                    self._executor, partial(MLECGClassifier, cfg.model_path, precision=cfg.precision)
                )
        clf = self.classifier
        self.model_version = getattr(clf, "version", "rules")
        self.metrics.model.info(
            {"version": self.model_version, "source": clf.source, "precision": getattr(clf, "precision", "-")}
        )
        try:
            self._ctx = zmq.asyncio.Context()
            sinks = [make_sink(u, self._ctx, on_drop=self._on_sink_drop) for u in cfg.alarms]
            if cfg.journal:
                sinks.append(JournalSink(cfg.journal))
            self._bus = await self._stack.enter_async_context(AlarmBus(sinks + self._extra_sinks, self.metrics))
            if cfg.metrics_port:
                server, thread = start_http_server(cfg.metrics_port, cfg.metrics_host, registry=self.registry)
                self._stack.callback(thread.join, 2.0)
                self._stack.callback(server.shutdown)
                log.info("metrics on http://%s:%d/metrics", cfg.metrics_host, cfg.metrics_port)
            for url in cfg.ingest:
                src = make_source(url, self._ctx, cfg.mqtt_topic)
                await self._ingest_stack.enter_async_context(src)
                self._ingest_tasks.append(asyncio.create_task(self._ingest(src), name=f"ingest-{url}"))
        except BaseException:
            await self._close_all()
            raise
        self._tasks.append(asyncio.create_task(self._worker(), name="inference"))
        self._tasks.append(asyncio.create_task(self._housekeeping(), name="housekeeping"))
        log.info(
            "monitor up: ingest %s, alarms %s, classifier %s",
            ", ".join(cfg.ingest),
            ", ".join(cfg.alarms),
            self.model_version,
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.shutdown()

    async def shutdown(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        # 1. stop ingest
        for t in self._ingest_tasks:
            t.cancel()
        await asyncio.gather(*self._ingest_tasks, return_exceptions=True)
        await self._ingest_stack.aclose()
        # 2. finish the windows in flight (the worker drains what is due, then returns)
        self._due_event.set()
        worker, *_others = self._tasks
        try:
            await asyncio.wait_for(asyncio.shield(worker), timeout=30.0)
        except TimeoutError:
            log.warning("inference did not finish in 30 s; abandoning windows in flight")
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        # 3. flush alarms, 4. close connections
        if self._bus is not None:
            await self._bus.flush()
        await self._close_all()
        log.info("monitor stopped")

    async def _close_all(self) -> None:
        await self._ingest_stack.aclose()
        await self._stack.aclose()
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
        self._executor.shutdown(wait=True)

    # -- ingest -------------------------------------------------------------------------

    async def _ingest(self, source: SampleSource) -> None:
        async for raw in source.frames():
            self.accept(raw, source.name)

    def accept(self, raw: RawFrame, transport: str = "local") -> None:
        """Validate and take in one frame. Bad frames are counted by reason, never raised."""
        try:
            frame = decode(raw.payload)
            if raw.stream_hint is not None and raw.stream_hint != frame.stream_id:
                raise WireError("topic_mismatch", f"topic names {raw.stream_hint!r}, frame {frame.stream_id!r}")
            if not owns(frame.stream_id, *self._shard):
                self.metrics.other_shard.inc()
                return
            stream = self.streams.get(frame.stream_id)
            if stream is None:
                if len(self.streams) >= self.config.max_streams:
                    raise WireError("too_many_streams", f"limit {self.config.max_streams}")
                stream = StreamState(frame.stream_id, frame.fs, frame.samples.shape[0], self.config.buffer_s)
                self.streams[frame.stream_id] = stream
                log.info("new stream %s (%.0f Hz, %d leads)", frame.stream_id, frame.fs, frame.samples.shape[0])
            prev_end = stream.t_end
            result = stream.ingest(frame, self.clock.wall())
        except WireError as exc:
            self.metrics.rejected.labels(exc.reason).inc()
            self._rejects.warning(exc.reason, f"rejected frame: {exc}")
            return
        self.metrics.frames.labels(transport).inc()
        self.metrics.samples.inc(frame.n)
        if result.gap_s > 0 or result.restarted:
            self.metrics.gaps.inc()
            self._observe(
                stream.stream_id,
                NO_SIGNAL,
                Observation(
                    True, frame.t0, 1.0, prev_end, "rules", f"no data for {result.gap_s:.1f} s (gap in the stream)"
                ),
            )
        elif stream.gap_open:
            self._observe(stream.stream_id, NO_SIGNAL, Observation(False, stream.t_end))
        self._check_pause(stream)
        hop = self.config.hop_s / SUSPECT_HOP_DIVISOR if stream.suspect else self.config.hop_s
        if stream.buffer.total - stream.last_eval_total >= hop * MODEL_FS:
            stream.last_eval_total = stream.buffer.total
            if stream.stream_id in self._due:
                self.metrics.skipped.inc()  # the older window is superseded by this one
            else:
                self._due[stream.stream_id] = None
            self._due_event.set()

    def _check_pause(self, stream: StreamState) -> None:
        """The per-frame pause rule: no QRS for ``pause_threshold_s`` of valid signal.

        Both the gap still open and one that closed inside the latest frame count: a 3.1 s
        pause can end between two frame ends without either of them seeing 3.0 s.
        """
        now = stream.t_end
        tracker = stream.pause
        if not tracker.usable.any():
            return  # no lead to judge: that is a LEADS_OFF, not a pause
        threshold = self.config.pause_threshold_s
        gap, end = tracker.gap(now), now
        if tracker.closed_gap > gap:
            gap, end = tracker.closed_gap, tracker.closed_at
        onset = end - gap
        if gap < threshold or stream.valid_samples < (now - onset) * MODEL_FS:
            if gap < threshold:
                self._observe(stream.stream_id, "PAUSE", Observation(False, now))
            return
        # A flat line on every lead is a lead-off, not an asystole: no PAUSE then. Judge the
        # end of the gap, clear of the beat that opened it and of any that closed it.
        since_end = round((now - end) * MODEL_FS)
        span = int(min(gap - 0.5, 2.0) * MODEL_FS)
        stretch = stream.buffer.latest(span + since_end)[:, :span]
        if all(lead_quality(stretch[i], MODEL_FS) in (LeadQuality.FLAT, LeadQuality.MISSING) for i in range(2)):
            return
        self._observe(
            stream.stream_id,
            "PAUSE",
            Observation(
                True,
                now,
                min(0.99, 0.7 + 0.05 * (gap - threshold)),
                onset,
                "rules",
                f"no QRS for {gap:.2f} s (threshold {threshold:.1f} s)",
            ),
        )

    # -- inference ----------------------------------------------------------------------

    async def _worker(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._due_event.wait()
            self._due_event.clear()
            while self._due:
                ids: list[str] = []
                while self._due and len(ids) < self.config.max_batch:
                    ids.append(self._due.popitem(last=False)[0])
                jobs = []
                for sid in ids:
                    st = self.streams.get(sid)
                    if st is None or st.valid_samples < MIN_WINDOW_S * MODEL_FS:
                        continue  # buffer still filling after a start or a gap
                    sig, t0 = st.window(self.config.window_s)
                    jobs.append(WindowJob(sid, sig, t0))
                if not jobs:
                    continue
                t = time.perf_counter()
                clf = self.classifier
                assert clf is not None
                results = await loop.run_in_executor(self._executor, analyse, jobs, clf)
                self.metrics.inference_latency.observe(time.perf_counter() - t)
                self.metrics.batch_size.observe(len(jobs))
                for r in results:
                    self._apply(r)
            if self._stopping:
                return

    def _apply(self, r: WindowResult) -> None:
        sid = r.job.stream_id
        st = self.streams.get(sid)
        if st is not None:
            st.quality = (r.quality[0].value, r.quality[1].value)
            st.pause.usable = np.array([q is LeadQuality.OK for q in r.quality])
        t = r.t_end
        res = r.result
        if res is None:
            self._observe(
                sid,
                LEADS_OFF,
                Observation(
                    True,
                    t,
                    1.0,
                    r.job.t_start,
                    "rules",
                    f"no usable lead: lead 1 {r.quality[0].value}, lead 2 {r.quality[1].value}",
                ),
            )
            if st is not None:
                st.current, st.confidence, st.heart_rate = "LEADS_OFF", 0.0, math.nan
            return
        self._observe(sid, LEADS_OFF, Observation(False, t))
        if res.source == "rules":
            self.metrics.rules_only.inc(self.config.hop_s)
        if st is not None:
            st.current, st.confidence, st.heart_rate = res.event, res.confidence, res.heart_rate_bpm
            # Anything but a confident NORMAL is looked at again after a quarter hop (0.5 s by default).
            st.suspect = res.event != "NORMAL" or res.confidence < SUSPECT_BELOW
        for event in ("VTACH", "AF"):
            present = res.event == event
            self._observe(
                sid,
                event,
                Observation(
                    present,
                    t,
                    res.confidence if present else 0.0,
                    r.onset_time() if present else None,
                    res.source,
                    res.explanation,
                ),
            )
        if res.event == "PAUSE" and res.confidence >= 0.8:
            self._observe(
                sid, "PAUSE", Observation(True, t, res.confidence, r.onset_time(), res.source, res.explanation)
            )

    # -- alarms -------------------------------------------------------------------------

    def _observe(self, sid: str, event: str, obs: Observation) -> None:
        key = (sid, event)
        tracker = self.trackers.get(key)
        if tracker is None:
            if not obs.present:
                return
            tracker = self.trackers[key] = EventTracker(event, DEFAULT_POLICIES[event])
        emitted = tracker.observe(obs)
        if emitted is None:
            return
        state, o = emitted
        alarm = Alarm(
            stream_id=sid,
            event=event,
            state=state.value,
            priority=PRIORITY[event],
            confidence=round(float(o.confidence), 4),
            onset_time=round(tracker.onset_time, 3),
            detected_time=round(o.time, 3),
            published_at=round(self.clock.wall(), 3),
            source=o.source,
            model_version=self.model_version if o.source == "ml" else "rules",
            explanation=o.explanation,
        )
        if state.value == "onset":
            self.metrics.alarm_latency.labels(event).observe(max(0.0, o.time - tracker.onset_time))
        log.info("ALARM %s %s %s (%s) %s", sid, event, state.value, alarm.priority, o.explanation[:120])
        self.recent.append(alarm)
        del self.recent[:-50]
        for listener in self.alarm_listeners:
            listener(alarm)
        assert self._bus is not None
        self._bus.publish(alarm)

    def _on_sink_drop(self, sink: str) -> None:
        self.metrics.alarms_dropped.labels(sink).inc()

    def active_alarms(self, sid: str) -> list[str]:
        return [ev for (s, ev), tr in self.trackers.items() if s == sid and tr.active]

    # -- housekeeping -------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_S)
            wall = self.clock.wall()
            active = 0
            fill = 0.0
            for sid, st in list(self.streams.items()):
                silent = wall - st.last_wall
                if silent > FORGET_STREAM_S:
                    del self.streams[sid]
                    for key in [k for k in self.trackers if k[0] == sid]:
                        del self.trackers[key]
                    log.info("forgot stream %s after %.0f s of silence", sid, silent)
                    continue
                if silent > self.config.no_signal_s:
                    self._observe(
                        sid,
                        NO_SIGNAL,
                        Observation(True, st.t_end + silent, 1.0, st.t_end, "rules", f"no data for {silent:.1f} s"),
                    )
                    st.gap_open = True
                if silent < 60:
                    active += 1
                fill += len(st.buffer) / st.buffer.capacity
            self.metrics.streams.set(active)
            self.metrics.buffer_fill.set(fill / len(self.streams) if self.streams else 0.0)


async def serve(
    config: MonitorConfig,
    *,
    registry: CollectorRegistry | None = None,
    clock: Clock | None = None,
    stop: asyncio.Event | None = None,
    duration_s: float | None = None,
    console: bool | None = None,
) -> Monitor:
    """Run the daemon until SIGINT/SIGTERM, ``stop`` is set, or ``duration_s`` passes."""
    from monitor.console import Console

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with Monitor(config, registry=registry, clock=clock) as mon:
        use_console = config.console if console is None else console
        async with Console(mon, enabled=use_console):
            with suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=duration_s)
            log.info("stopping")
    return mon


def run(config: MonitorConfig, **kwargs: Any) -> int:
    """Blocking entry point: run the daemon with ``config``; return the exit code."""
    asyncio.run(serve(config, **kwargs))
    return 0
