"""Fan alarms out to every sink. Each sink has a queue and a task of its own, so one slow sink
never delays another. Every queue is bounded, the oldest alarm dropped and counted when full;
the journal's is ten times larger, since its sink only appends a line and never waits on a
network (its own backlog absorbs a full disk).
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Self

from monitor.metrics import Metrics
from monitor.transports.base import AlarmSink
from monitor.transports.journal import JournalSink
from protocol.alarm import Alarm

log = logging.getLogger(__name__)


class AlarmBus:
    def __init__(self, sinks: list[AlarmSink], metrics: Metrics, queue_size: int = 10_000) -> None:
        self.sinks = sinks
        self.metrics = metrics
        self.queue_size = queue_size
        self._queues: dict[str, asyncio.Queue[Alarm]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Self:
        for sink in self.sinks:
            await self._stack.enter_async_context(sink)
            size = self.queue_size * (10 if isinstance(sink, JournalSink) else 1)
            q: asyncio.Queue[Alarm] = asyncio.Queue(size)
            self._queues[sink.name] = q
            self._tasks.append(asyncio.create_task(self._pump(sink, q), name=f"alarms-{sink.name}"))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.flush()
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._stack.aclose()

    async def flush(self, timeout: float = 5.0) -> None:
        """Wait until every queued alarm has been handed to its sink."""
        try:
            await asyncio.wait_for(asyncio.gather(*(q.join() for q in self._queues.values())), timeout)
        except TimeoutError:
            log.warning("alarm flush timed out with %s queued", {k: q.qsize() for k, q in self._queues.items()})

    def publish(self, alarm: Alarm) -> None:
        """Queue an alarm for every sink; never blocks."""
        self.metrics.alarms.labels(alarm.event, alarm.state).inc()
        for sink in self.sinks:
            q = self._queues[sink.name]
            if q.full():
                q.get_nowait()
                q.task_done()
                self.metrics.alarms_dropped.labels(sink.name).inc()
                log.warning("alarm queue of %s full; dropped the oldest alarm", sink.name)
            q.put_nowait(alarm)

    async def _pump(self, sink: AlarmSink, q: asyncio.Queue[Alarm]) -> None:
        while True:
            alarm = await q.get()
            try:
                await sink.send(alarm)
            except Exception:
                log.exception("sink %s failed to send an alarm", sink.name)
            finally:
                q.task_done()
