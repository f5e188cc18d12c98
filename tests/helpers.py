"""Test helpers: run a Monitor in-process on free ports and collect what it publishes."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry

from monitor.config import MonitorConfig
from monitor.daemon import Monitor
from protocol.alarm import Alarm
from simulators.subscribe import alarms_from
from tests.conftest import free_port


@dataclass
class Harness:
    monitor: Monitor
    ingest: str
    alarms_url: str
    registry: CollectorRegistry
    received: list[Alarm] = field(default_factory=list)

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        v = self.registry.get_sample_value(name, labels or {})
        return 0.0 if v is None else v

    def got(self, stream: str, event: str, state: str = "onset") -> list[Alarm]:
        return [a for a in self.received if a.stream_id == stream and a.event == event and a.state == state]


@contextlib.asynccontextmanager
async def running_monitor(classifier: object = None, **overrides: object) -> AsyncIterator[Harness]:
    zin, zout = free_port(), free_port()
    kw: dict[str, object] = {
        "ingest": (f"tcp://127.0.0.1:{zin}",),
        "alarms": (f"tcp://127.0.0.1:{zout}",),
        "metrics_port": 0,
        "console": False,
        # Analysis in a thread: a worker process costs seconds to start per test. The process
        # itself is tested in tests/test_analysis_process.py and by every CLI-started daemon.
        "inference_process": False,
    }
    kw.update(overrides)
    cfg = MonitorConfig(**kw)  # type: ignore[arg-type]
    registry = CollectorRegistry()
    async with Monitor(cfg, registry=registry, classifier=classifier) as mon:  # type: ignore[arg-type]
        h = Harness(mon, cfg.ingest[0], cfg.alarms[0], registry)
        ready = asyncio.Event()

        async def collect() -> None:
            async for a in alarms_from(h.alarms_url, ready):
                h.received.append(a)

        task = asyncio.create_task(collect())
        await ready.wait()
        await asyncio.sleep(0.3)  # let the SUB connection settle before alarms flow
        try:
            yield h
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


async def wait_for(pred, timeout: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        if pred():
            return True
        await asyncio.sleep(0.1)
    return bool(pred())
