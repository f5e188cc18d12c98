"""The monitor daemon: moves data between the sources, the per-bed core, the classifier worker and
the alarm sinks. It decides nothing clinical itself (that is ``monitor.core``).

``Monitor`` is an async context manager. Its tasks live in one ``asyncio.TaskGroup``: anything
that raises while one frame or one window is handled is caught, counted and logged at a bounded
rate, but a task that dies all the same takes the whole daemon down (the TaskGroup cancels the
rest and ``run`` exits non-zero), so a service manager restarts it: it never lives on half-alive.
Leaving it shuts down in phases: stop ingest, finish the windows in flight, flush alarms, close
connections.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from dataclasses import replace
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import zmq.asyncio
from prometheus_client import CollectorRegistry, start_http_server

from classifier.inference import MLECGClassifier, ModelUnavailableError
from classifier.rules import RuleBasedClassifier
from monitor.alarm_bus import AlarmBus
from monitor.analysis_worker import AnalysisProcess, ClassifierSpec, WorkerUnavailableError
from monitor.clock import Clock, SystemClock
from monitor.config import MonitorConfig
from monitor.core.analysis import WindowJob, WindowResult, analyse
from monitor.core.bedside import Bedside
from monitor.core.ward import Ward
from monitor.metrics import Metrics, WardCollector
from monitor.ratelimit import RateLimitedLog
from monitor.shard import owns
from monitor.transports import AlarmSink, RawFrame, SampleSource, make_sink, make_source
from monitor.transports.base import TelemetrySink
from monitor.transports.curve import CurveAuth, warn_if_exposed
from monitor.transports.journal import JournalSink
from monitor.transports.mqtt_telemetry import MqttTelemetrySink
from monitor.transports.mqtt_transport import MqttAlarmSink
from monitor.transports.strip_store import StripStore, strips_dir
from protocol.alarm import Alarm, AlarmState
from protocol.strip import Strip
from protocol.urls import redact_url
from protocol.wire import WireError, decode

log = logging.getLogger(__name__)

HOUSEKEEPING_S = 0.5
#: The event-loop lag probe sleeps this long and measures how late it wakes.
LAG_PROBE_S = 0.25
#: Ingest yields to the event loop after this many frames or this long, whichever comes first,
#: so alarm delivery, housekeeping and signals run under any load.
INGEST_YIELD_FRAMES = 64
INGEST_YIELD_S = 0.01
#: The worker's measured rate (windows/s) is an exponential average with this weight.
RATE_WEIGHT = 0.3
#: ...over batches of at least this many windows.
RATE_MIN_BATCH = 32


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
        self.detection = config.detection
        self.registry = registry if registry is not None else CollectorRegistry()
        self.metrics = Metrics(self.registry)
        self.clock = clock or SystemClock()
        self.classifier = classifier
        self.rules = RuleBasedClassifier(self.detection.rule_thresholds())
        self.ward = Ward(
            self.detection,
            max_beds=config.max_streams,
            shed_after_s=config.shed_after_s,
        )
        self.registry.register(WardCollector(self.ward))
        self.recent: list[Alarm] = []
        self.recent_strips: deque[Strip] = deque(maxlen=5)  # for the console
        self.alarm_listeners: list[Callable[[Alarm], None]] = []
        self.model_version = "rules"
        self._extra_sinks = extra_sinks or []
        self._shard = config.shard_index()
        self._due_event = asyncio.Event()
        self._stopping = False
        self._force = False
        self._force_event = asyncio.Event()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="ecg-inference")
        self._stack = AsyncExitStack()
        self._ingest_stack = AsyncExitStack()
        self._tg: asyncio.TaskGroup | None = None
        self._ingest_tasks: list[asyncio.Task[None]] = []
        self._aux_tasks: list[asyncio.Task[None]] = []
        self._worker_task: asyncio.Task[None] | None = None
        self._ctx: zmq.asyncio.Context | None = None
        self._bus: AlarmBus | None = None
        self._mqtt_sinks: list[AlarmSink] = []
        self._process: AnalysisProcess | None = None
        self._telemetry_sinks: list[TelemetrySink] = []
        self._rate: float | None = None  # windows per second the worker manages
        self._heartbeat = self.clock.monotonic()
        self._batch_started: dict[int, float] = {}  # lane -> when its batch began
        self._lanes = 1
        self._ratelog = RateLimitedLog(log, self.clock.monotonic)
        self._frame_counters: dict[str, Any] = {}
        self.metrics.worker_heartbeat_age.set_function(lambda: self.clock.monotonic() - self._heartbeat)

    @property
    def analysis_pid(self) -> int | None:
        """The analysis worker process, if analysis runs in one (for CPU accounting)."""
        return self._process.pid if self._process is not None else None

    @property
    def streams(self) -> dict[str, Bedside]:
        """Admitted beds by stream id."""
        return self.ward.beds

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        cfg = self.config
        loop = asyncio.get_running_loop()
        injected = self.classifier is not None
        if self.classifier is None:
            if cfg.rules_only:
                self.classifier = self.rules
            else:
                self.classifier = await loop.run_in_executor(
                    self._executor,
                    partial(
                        MLECGClassifier,
                        cfg.model_path,
                        precision=cfg.precision,
                        rule_thresholds=self.detection.rule_thresholds(),
                    ),
                )
        clf = self.classifier
        if getattr(clf, "integrity_error", None):
            self.metrics.model_integrity_failures.inc()
        if cfg.require_model and clf.source != "ml":
            # A bed judged by the rules alone is not what this deployment asked for: exit, loudly.
            await self._close_all()
            why = getattr(clf, "load_error", None) or "a rule-based classifier was given"
            raise ModelUnavailableError(f"require_model is set but the model is not in use ({why}); refusing to start")
        self.model_version = self.ward.model_version = getattr(clf, "version", "rules")
        self.metrics.model.info(
            {
                "version": self.model_version,
                "source": clf.source,
                "precision": getattr(clf, "precision", "-"),
                "sha256": (getattr(clf, "weights_sha256", None) or "-")[:12],
            }
        )
        if cfg.inference_process and not injected and isinstance(clf, MLECGClassifier) and clf.source == "ml":
            await self._start_process(clf)
        try:
            await self._open(cfg)
        except BaseException:
            await self._close_all()
            raise
        log.info(
            "monitor up: ingest %s, alarms %s, classifier %s",
            ", ".join(redact_url(u) for u in cfg.ingest),
            ", ".join(redact_url(u) for u in cfg.alarms),
            self.model_version,
        )
        return self

    async def _start_process(self, clf: MLECGClassifier) -> None:
        """The analysis worker process; if it cannot start, the daemon analyses in a thread (slower,
        never silent), and says so."""
        spec = ClassifierSpec(self.config.model_path, clf.precision, self.detection.rule_thresholds())
        proc = AnalysisProcess(spec, expect=(clf.source, clf.version))
        try:
            self._process = await self._stack.enter_async_context(proc)
        except (OSError, TimeoutError, RuntimeError) as exc:  # BrokenProcessPool, WorkerMismatchError
            log.error("analysis process not started (%s); analysing in a thread of the daemon instead", exc)

    async def _open(self, cfg: MonitorConfig) -> None:
        self._ctx = zmq.asyncio.Context()
        curve: CurveAuth | None = None
        if cfg.curve_secret is not None and cfg.curve_clients is not None:

            def denied(socket: str, address: str, reason: str) -> None:
                self.metrics.auth_failures.labels(socket).inc()
                self._ratelog.log(
                    logging.WARNING,
                    f"auth:{socket}",
                    f"SECURITY: refused a ZeroMQ {socket} client from {address} at the handshake ({reason})",
                )

            # Entered first, so it is left last: no CURVE socket is ever open without its ZAP handler.
            curve = CurveAuth.from_files(self._ctx, cfg.curve_secret, cfg.curve_clients, denied)
            warn_if_exposed(cfg.curve_secret)
            await self._stack.enter_async_context(curve)
            log.info("ZeroMQ CURVE on: %d client certificates from %s", len(curve.clients), cfg.curve_clients)
        if cfg.insecure:
            log.warning(
                "insecure = true: non-loopback ZeroMQ binds without CURVE and metrics without TLS are allowed; "
                "anyone who can reach them can send frames for any bed, read every alarm, or read the metrics"
            )
        sinks: list[AlarmSink] = []
        journal: JournalSink | None = None
        if cfg.journal:
            journal = JournalSink(
                Path(cfg.journal),
                max_bytes=cfg.journal_max_mb * 1024 * 1024,
                backups=cfg.journal_backups,
                on_error=lambda kind: self.metrics.journal_errors.labels(kind).inc(),
            )
            sinks.append(journal)
            sinks.append(
                StripStore(
                    strips_dir(cfg.journal), on_error=lambda kind: self.metrics.journal_errors.labels(kind).inc()
                )
            )
        mqtt = cfg.mqtt_security()  # TLS files and the password (TlsError: "cannot start")
        for url in cfg.alarms:
            sink = make_sink(
                url,
                self._ctx,
                on_drop=lambda name: self.metrics.alarms_dropped.labels(name).inc(),
                on_dead_letter=lambda name: self.metrics.alarms_dead_letter.labels(name).inc(),
                on_connected=self._on_connected,
                dead_letter=(cfg.journal + ".deadletter.jsonl") if cfg.journal else None,
                mqtt=mqtt,
                curve=curve,
            )
            sinks.append(sink)
            if url.startswith("tcp://"):
                self._on_connected(sink.name, True)  # bound: subscribers come and go
            if hasattr(sink, "restore"):
                self._mqtt_sinks.append(sink)
            if cfg.telemetry_interval_s > 0:
                if isinstance(sink, TelemetrySink):
                    self._telemetry_sinks.append(sink)  # a ZeroMQ PUB carries it beside the alarms
                elif isinstance(sink, MqttAlarmSink):  # MQTT: a connection of its own, never before alarms
                    tele = MqttTelemetrySink(sink.endpoint, tls_context=sink.tls_context)
                    self._telemetry_sinks.append(await self._stack.enter_async_context(tele))
        self._bus = await self._stack.enter_async_context(AlarmBus(sinks + self._extra_sinks, self.metrics))
        restored = journal.restored if journal is not None else []  # read once, by the journal
        if restored:
            n = self.ward.restore(restored, self.clock.monotonic())
            for sink in self._mqtt_sinks:
                sink.restore(restored)  # type: ignore[attr-defined]
            log.warning("restored %d active alarms of %d beds from %s", n, len(self.ward), cfg.journal)
        if cfg.metrics_port:
            tls = cfg.metrics_tls()
            server, thread = start_http_server(cfg.metrics_port, cfg.metrics_host, registry=self.registry, **tls)
            self._stack.callback(thread.join, 2.0)
            self._stack.callback(server.shutdown)
            log.info(
                "metrics on %s://%s:%d/metrics%s",
                "https" if tls else "http",
                cfg.metrics_host,
                cfg.metrics_port,
                " (client certificates required)" if tls.get("client_auth_required") else "",
            )
        sources: list[SampleSource] = []
        for url in cfg.ingest:
            src = make_source(
                url,
                self._ctx,
                cfg.mqtt_topic,
                max_bytes=cfg.max_frame_bytes,
                on_reject=lambda reason: self.metrics.rejected.labels(reason).inc(),
                on_connected=self._on_connected,
                mqtt=mqtt,
                curve=curve,
            )
            sources.append(await self._ingest_stack.enter_async_context(src))
            if url.startswith("tcp://"):
                self._on_connected(src.name, True)
        # Every task from here on is owned by the TaskGroup.
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        for src in sources:
            self._ingest_tasks.append(self._tg.create_task(self._ingest(src), name=f"ingest-{src.name}"))
        self._worker_task = self._tg.create_task(self._worker(), name="inference")
        self._aux_tasks.append(self._tg.create_task(self._housekeeping(), name="housekeeping"))
        self._aux_tasks.append(self._tg.create_task(self._lag_probe(), name="loop-lag"))
        if self._telemetry_sinks:
            self._aux_tasks.append(self._tg.create_task(self._telemetry(), name="telemetry"))

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.shutdown()
        if self._tg is not None:
            # Every task has ended by now. Only a task's own failure is raised (as an
            # ExceptionGroup); an error in the body of ``async with`` propagates unchanged.
            tg, self._tg = self._tg, None
            await tg.__aexit__(None, None, None)

    def force_exit(self) -> None:
        """A second stop request: stop waiting for the windows in flight, even mid-wait."""
        self._force = True
        self._force_event.set()
        self._due_event.set()

    async def shutdown(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        # 1. stop ingest
        for t in self._ingest_tasks:
            t.cancel()
        await asyncio.gather(*self._ingest_tasks, return_exceptions=True)
        await _quietly(self._ingest_stack.aclose(), "closing ingest")
        # 2. finish the windows in flight (the worker drains what is due, then returns)
        self._due_event.set()
        if self._worker_task is not None and not self._worker_task.done():
            timeout = 0.0 if self._force else self.config.shutdown_timeout_s
            forced = asyncio.create_task(self._force_event.wait())
            await asyncio.wait({self._worker_task, forced}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            forced.cancel()
            if not self._worker_task.done():
                log.warning("inference did not finish in %.0f s; abandoning %d windows", timeout, self.ward.due_count)
                self._force = True  # a batch may hang: never block the loop joining its thread
                self._worker_task.cancel()
        for t in self._aux_tasks:
            t.cancel()
        await asyncio.gather(
            *self._aux_tasks, *([self._worker_task] if self._worker_task else []), return_exceptions=True
        )
        # 3. flush alarms, 4. close connections
        if self._bus is not None:
            await _quietly(self._bus.flush(), "flushing alarms")
        await self._close_all()
        log.info("monitor stopped")

    async def _close_all(self) -> None:
        if self._process is not None and self._force:
            self._process.close(kill=True)  # a hung batch must not hold up the exit
        await _quietly(self._ingest_stack.aclose(), "closing ingest")
        await _quietly(self._stack.aclose(), "closing alarm sinks")
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None
        self._executor.shutdown(wait=not self._force, cancel_futures=True)

    def _on_connected(self, transport: str, connected: bool) -> None:
        self.metrics.transport_connected.labels(transport).set(1.0 if connected else 0.0)

    # -- ingest -------------------------------------------------------------------------

    async def _ingest(self, source: SampleSource) -> None:
        n, since = 0, time.monotonic()
        async for raw in source.frames():
            self.accept(raw, source.name)
            n += 1
            if n >= INGEST_YIELD_FRAMES or time.monotonic() - since >= INGEST_YIELD_S:
                await asyncio.sleep(0)
                n, since = 0, time.monotonic()

    def accept(self, raw: RawFrame, transport: str = "local") -> None:
        """Validate and take in one frame. Bad frames are counted by reason, never raised; a bug
        met while handling one frame is counted and logged, and the other frames go on."""
        try:
            self._accept(raw, transport)
        except WireError as exc:
            self.metrics.rejected.labels(exc.reason).inc()
            self._ratelog.log(logging.WARNING, exc.reason, f"rejected frame: {exc}")
        except Exception as exc:
            self.metrics.rejected.labels("internal_error").inc()
            self._ratelog.log(
                logging.ERROR, "internal_error", f"error handling a frame ({type(exc).__name__}: {exc})", exc_info=True
            )

    def _accept(self, raw: RawFrame, transport: str) -> None:
        frame = decode(raw.payload)
        if raw.allowed is not None and not raw.allowed.fullmatch(frame.stream_id):
            # A security event, not a glitch: an authenticated sender tried another bed's stream.
            self.metrics.rejected.labels("unauthorised_stream").inc()
            self._ratelog.log(
                logging.WARNING,
                f"unauthorised:{raw.sender}",
                f"SECURITY: sender {raw.sender!r} is not authorised for stream {frame.stream_id!r}; frame rejected",
            )
            return
        if raw.stream_hint is not None and raw.stream_hint != frame.stream_id:
            raise WireError("topic_mismatch", f"topic names {raw.stream_hint!r}, frame {frame.stream_id!r}")
        if not owns(frame.stream_id, *self._shard):
            self.metrics.other_shard.inc()
            return
        out = self.ward.on_frame(frame, self.clock.monotonic())
        counter = self._frame_counters.get(transport)
        if counter is None:  # the labelled child, looked up once per transport, not per frame
            counter = self._frame_counters[transport] = self.metrics.frames.labels(transport)
        counter.inc()
        self.metrics.samples.inc(frame.n)
        if out.ingest is not None and (out.ingest.gap_s > 0 or out.ingest.restarted or out.ingest.resynced):
            self.metrics.gaps.inc()
        if out.ingest is not None and out.ingest.pace_pulses:
            self.metrics.pace_pulses.inc(out.ingest.pace_pulses)
        if out.ingest is not None and out.ingest.resynced:
            self._ratelog.log(
                logging.WARNING,
                "resync",
                f"bed {frame.stream_id} resynchronised: its clock jumped "
                f"{out.ingest.resync_s:+.1f} s or its sequence jumped",
            )
        if out.admitted:
            log.info("new bed %s (%.0f Hz, %d leads)", frame.stream_id, frame.fs, frame.samples.shape[0])
        self._publish(out.alarms)
        if out.due:
            self._due_event.set()

    # -- inference ----------------------------------------------------------------------

    async def _worker(self) -> None:
        """The inference lanes. With an analysis process, two batches are in flight: the child
        analyses one while this process sends the next and applies the last, so neither waits."""
        lanes = 2 if self._process is not None else 1
        self._lanes = lanes
        await asyncio.gather(*(self._lane(k) for k in range(lanes)))

    async def _lane(self, lane: int) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._heartbeat = self.clock.monotonic()
            if not self._stopping:
                await self._due_event.wait()
            self._due_event.clear()
            deadline = self.clock.monotonic() + self.config.shutdown_timeout_s
            while not self._force:
                if self._stopping and self.clock.monotonic() > deadline:
                    break
                jobs = self.ward.take_due(self.config.max_batch, self.clock.monotonic(), self._rate)
                if not jobs:
                    break
                await self._classify(loop, jobs, lane)
                self._heartbeat = self.clock.monotonic()
            if self._stopping:
                return

    async def _classify(self, loop: asyncio.AbstractEventLoop, jobs: list[WindowJob], lane: int = 0) -> None:
        """One batch: the classifier, or the rules if it fails; a failing window never stops the rest."""
        clf = self.classifier
        assert clf is not None
        t = time.perf_counter()
        self._batch_started[lane] = self.clock.monotonic()
        try:
            results = await self._analyse(loop, jobs, clf)
        except Exception as exc:
            self.metrics.window_errors.labels("classifier").inc(len(jobs))
            self._ratelog.log(
                logging.ERROR,
                "classifier",
                f"classifier failed on a batch of {len(jobs)} ({type(exc).__name__}: {exc}); the rules judge it",
                exc_info=True,
            )
            try:
                results = await loop.run_in_executor(self._executor, analyse, jobs, self.rules)
            except Exception as exc2:
                self.metrics.window_errors.labels("rules").inc(len(jobs))
                self._ratelog.log(logging.ERROR, "rules", f"rules failed too ({type(exc2).__name__}: {exc2})")
                return
        finally:
            self._batch_started.pop(lane, None)
        elapsed = time.perf_counter() - t
        self.metrics.inference_latency.observe(elapsed)
        self.metrics.batch_size.observe(len(jobs))
        if len(jobs) >= RATE_MIN_BATCH:  # a small batch says how much was due, not what can be done
            rate = self._lanes * len(jobs) / max(elapsed, 1e-3)  # lanes overlap: each batch waits for the other
            self._rate = rate if self._rate is None else (1 - RATE_WEIGHT) * self._rate + RATE_WEIGHT * rate
        now = self.clock.monotonic()
        for r in results:
            self._apply(r, now)

    async def _analyse(
        self, loop: asyncio.AbstractEventLoop, jobs: list[WindowJob], clf: MLECGClassifier | RuleBasedClassifier
    ) -> list[WindowResult]:
        """In the analysis process when there is one; in the daemon's thread while it restarts."""
        if self._process is not None:
            try:
                return await self._process.run(jobs)
            except WorkerUnavailableError as exc:
                self.metrics.worker_restarts.set(self._process.restarts)
                self._ratelog.log(
                    logging.WARNING, "process", f"{exc}: windows are analysed in the daemon meanwhile (slower)"
                )
        return await loop.run_in_executor(self._executor, analyse, jobs, clf)

    def _apply(self, r: WindowResult, now: float) -> None:
        try:
            if r.result is not None and r.result.source == "rules":
                self.metrics.rules_only.inc()
            self._publish(self.ward.on_results([r], now))
        except Exception as exc:
            self.metrics.window_errors.labels("apply").inc()
            self._ratelog.log(
                logging.ERROR,
                "apply",
                f"error applying a window of {r.job.stream_id} ({type(exc).__name__}: {exc})",
                exc_info=True,
            )

    # -- alarms -------------------------------------------------------------------------

    def _publish(self, alarms: list[Alarm]) -> None:
        """Log, show and queue alarms the core decided, stamped with the wall time they leave at."""
        for decided in alarms:
            alarm = replace(decided, published_at=round(self.clock.wall(), 3))
            if alarm.state == AlarmState.ONSET.value:
                self.metrics.alarm_latency.labels(alarm.event).observe(max(0.0, alarm.detected_time - alarm.onset_time))
            log.info(
                "ALARM %s %s %s (%s) %s",
                alarm.stream_id,
                alarm.event,
                alarm.state,
                alarm.priority,
                alarm.explanation[:120],
            )
            self.recent.append(alarm)
            del self.recent[:-50]
            for listener in self.alarm_listeners:
                try:
                    listener(alarm)
                except Exception:
                    self._ratelog.log(logging.ERROR, "listener", "an alarm listener failed", exc_info=True)
            assert self._bus is not None
            self._bus.publish(alarm)
            if alarm.strip_id:
                bed = self.ward.get(alarm.stream_id)
                strip = bed.take_strip(alarm.strip_id) if bed is not None else None
                if strip is not None:
                    strip = replace(strip, alarm=alarm)
                    self.recent_strips.append(strip)
                    self._bus.publish_strip(strip)

    def active_alarms(self, sid: str) -> list[str]:
        return self.ward.active_alarms(sid)

    # -- housekeeping -------------------------------------------------------------------

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_S)
            try:
                self._publish(self.ward.on_tick(self.clock.monotonic()))
            except Exception as exc:
                self._ratelog.log(logging.ERROR, "housekeeping", f"housekeeping failed ({exc})", exc_info=True)
            if not self._stopping:
                # A task that ends early by cancellation is not a failure to a TaskGroup: it would
                # leave the daemon up, taking frames and judging nothing. Never live on half-dead.
                for t in (self._worker_task, *self._ingest_tasks):
                    if t is not None and t.done():
                        self._force = True
                        how = "was cancelled" if t.cancelled() else "ended"  # (a failure ends the group itself)
                        raise RuntimeError(f"task {t.get_name()} {how} while the daemon runs")
            started = min(self._batch_started.values(), default=None)
            if started is not None and self.clock.monotonic() - started > self.config.worker_stall_s:
                self._force = True  # do not wait for the hung thread on the way out
                raise RuntimeError(
                    f"inference worker stalled: one batch has run for over {self.config.worker_stall_s:.0f} s"
                )

    async def _telemetry(self) -> None:
        """Every ``telemetry_interval_s``, each admitted bed's screen feed to the telemetry sinks.
        Yields to the loop every 64 beds: 1,000 beds of telemetry never hold up ingest."""
        interval = self.config.telemetry_interval_s
        while True:
            await asyncio.sleep(interval)
            for k, bed in enumerate(list(self.ward.beds.values())):
                if k and k % 64 == 0:
                    await asyncio.sleep(0)
                try:
                    t = bed.telemetry()
                    if t is None:
                        continue
                    for sink in self._telemetry_sinks:
                        if not sink.send_telemetry(t):
                            self.metrics.telemetry_dropped.labels(sink.name).inc()
                except Exception as exc:
                    self._ratelog.log(logging.ERROR, "telemetry", f"telemetry failed ({exc})", exc_info=True)

    async def _lag_probe(self) -> None:
        while True:
            t = time.monotonic()
            await asyncio.sleep(LAG_PROBE_S)
            self.metrics.loop_lag.set(max(0.0, time.monotonic() - t - LAG_PROBE_S))


async def _quietly(aw: object, what: str) -> None:
    """Await a shutdown step; log its failure instead of skipping the steps after it."""
    try:
        await aw  # type: ignore[misc]
    except Exception:
        log.exception("error while %s", what)
