"""Supervision: a failing classifier never silences a bed, and a hung one takes the daemon down
loudly instead of leaving it half-alive. Real ZeroMQ sockets, a real (broken) classifier."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from classifier.result import Classification
from classifier.rules import RuleBasedClassifier
from monitor.alarm_bus import AlarmBus
from monitor.config import MonitorConfig
from monitor.daemon import Monitor
from monitor.metrics import Metrics
from protocol.alarm import Alarm
from protocol.wire import DType, encode
from simulators.sender import FrameSender
from simulators.synthetic import Episode, PatientSpec, SyntheticPatient
from tests.conftest import free_port
from tests.helpers import running_monitor, wait_for

FS = 250.0
FRAME = 50


class BrokenClassifier(RuleBasedClassifier):
    """Raises on every window, as a corrupt model or a library bug would."""

    source = "ml"

    def classify_model_rate(self, *args: object, **kwargs: object) -> Classification:
        raise RuntimeError("simulated classifier bug")


class HungClassifier(RuleBasedClassifier):
    """Blocks its thread, as a deadlocked runtime would, until released."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def classify_model_rate(self, *args: object, **kwargs: object) -> Classification:
        self.release.wait(30.0)
        return super().classify_model_rate(*args, **kwargs)  # type: ignore[arg-type]


async def _send(url: str, sid: str, spec: PatientSpec, seconds: float, speed: float = 20.0) -> None:
    p = SyntheticPatient(spec, FS, np.random.default_rng(0))
    async with FrameSender(url) as tx:
        for k in range(int(seconds * FS / FRAME)):
            await tx.send(sid, encode(sid, k, 1e6 + k * FRAME / FS, FS, p.chunk(FRAME), DType.INT16, 200.0))
            if k % 5 == 0:
                await asyncio.sleep(5 * FRAME / FS / speed)


async def test_classifier_failure_falls_back_to_rules_and_is_counted() -> None:
    async with running_monitor(classifier=BrokenClassifier()) as h:
        await _send(h.ingest, "bed-vt", PatientSpec(75.0, [Episode("VTACH", 20.0, 40.0)]), 40.0)
        assert await wait_for(lambda: h.got("bed-vt", "VTACH"), 15.0), "the rules must judge what the model cannot"
        assert h.got("bed-vt", "VTACH")[0].source == "rules"
        assert h.metric("ecg_window_errors_total", {"stage": "classifier"}) > 0
        assert h.monitor._worker_task is not None and not h.monitor._worker_task.done()


def _loopback_config(**kw: object) -> MonitorConfig:
    """A daemon on free loopback ports with no console or metrics port, for a test to own."""
    return MonitorConfig(
        ingest=(f"tcp://127.0.0.1:{free_port()}",),
        alarms=(f"tcp://127.0.0.1:{free_port()}",),
        metrics_port=0,
        console=False,
        **kw,  # type: ignore[arg-type]
    )


async def test_hung_classifier_takes_the_daemon_down() -> None:
    clf = HungClassifier()
    cfg = _loopback_config(worker_stall_s=5.0)
    t = time.monotonic()
    try:
        with pytest.raises(ExceptionGroup) as info:
            async with Monitor(cfg, registry=CollectorRegistry(), classifier=clf):
                await _send(cfg.ingest[0], "bed-1", PatientSpec(70.0, []), 14.0, speed=50.0)
                await asyncio.sleep(30.0)  # the daemon must end this itself
    finally:
        clf.release.set()
    assert any("stalled" in str(e) for e in info.value.exceptions)
    assert time.monotonic() - t < 15.0


async def test_a_lane_cancelled_from_under_the_daemon_takes_it_down() -> None:
    """A task that ends by cancellation is no failure to a TaskGroup, so the daemon lived on,
    taking frames and judging none (a batch cancelled with a failed analysis-process restart
    did that). Housekeeping notices any such task and ends the daemon loudly."""
    cfg = _loopback_config(inference_process=False)
    t = time.monotonic()
    with pytest.raises(ExceptionGroup) as info:
        async with Monitor(cfg, registry=CollectorRegistry(), classifier=RuleBasedClassifier()) as mon:
            assert mon._worker_task is not None
            mon._worker_task.cancel()
            await asyncio.sleep(30.0)  # the daemon must end this itself
    assert any("task inference was cancelled" in str(e) for e in info.value.exceptions)
    assert time.monotonic() - t < 10.0


class _SlowSink:
    """A sink that takes a second per alarm: a network sink stuck behind a slow peer."""

    name = "slow"

    def __init__(self) -> None:
        self.sent: list[Alarm] = []

    async def __aenter__(self) -> _SlowSink:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def send(self, alarm: Alarm) -> None:
        await asyncio.sleep(1.0)
        self.sent.append(alarm)


async def test_alarms_left_queued_at_close_are_counted_as_dropped(caplog: pytest.LogCaptureFixture) -> None:
    """Close cannot wait for ever on a slow sink, but what it gives up on is counted and logged,
    never cancelled unseen."""
    registry = CollectorRegistry()
    slow = _SlowSink()
    async with AlarmBus([slow], Metrics(registry), flush_timeout_s=0.2) as bus:
        for i in range(5):
            bus.publish(Alarm(f"bed-{i}", "VTACH", "onset", "high", 0.9, 1.0, 2.0, 3.0, "ml", "m", "VT"))
        await asyncio.sleep(0)  # the pump takes the first one and is stuck sending it
    assert slow.sent == []
    # The four still queued, and the one whose send was cut off: none is known to have gone.
    assert registry.get_sample_value("ecg_alarms_dropped_total", {"sink": "slow"}) == 5
    assert "5 alarms not sent by close" in caplog.text


class _FailingSink(_SlowSink):
    """A sink whose every other send fails (a closed socket, a bug)."""

    name = "failing"

    async def send(self, alarm: Alarm) -> None:
        if alarm.stream_id.endswith(("0", "2", "4")):
            raise OSError("socket closed")
        self.sent.append(alarm)


async def test_a_failed_send_is_counted_and_the_sink_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    sink = _FailingSink()
    async with AlarmBus([sink], Metrics(registry)) as bus:
        for i in range(5):
            bus.publish(Alarm(f"bed-{i}", "VTACH", "onset", "high", 0.9, 1.0, 2.0, 3.0, "ml", "m", "VT"))
    assert [a.stream_id for a in sink.sent] == ["bed-1", "bed-3"]
    assert registry.get_sample_value("ecg_alarms_dropped_total", {"sink": "failing"}) == 3
    failures = [r for r in caplog.records if "failed to send" in r.getMessage()]
    assert len(failures) == 1  # three failures, one line: at most one per 10 s per sink


async def test_a_full_sink_queue_drops_the_oldest_counted_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    registry = CollectorRegistry()
    slow = _SlowSink()
    async with AlarmBus([slow], Metrics(registry), queue_size=2, flush_timeout_s=0.2) as bus:
        for i in range(5):  # before the pump runs: the queue holds 2, so 3 oldest are pushed out
            bus.publish(Alarm(f"bed-{i}", "VTACH", "onset", "high", 0.9, 1.0, 2.0, 3.0, "ml", "m", "VT"))
        assert registry.get_sample_value("ecg_alarms_dropped_total", {"sink": "slow"}) == 3
    # the two left (one being sent, one queued) are cut off at close
    assert registry.get_sample_value("ecg_alarms_dropped_total", {"sink": "slow"}) == 5
    assert len([r for r in caplog.records if "full; dropped the oldest alarm" in r.getMessage()]) == 1
