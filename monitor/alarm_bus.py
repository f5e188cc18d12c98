"""Fan alarms out to every sink. Each sink has a queue and a task of its own, so one slow sink
never delays another. A strip follows its alarm in the same queue, to the sinks that carry strips. Every queue is bounded, the oldest alarm dropped and counted when full;
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
from monitor.ratelimit import RateLimitedLog
from monitor.transports.base import AlarmSink, StripSink
from monitor.transports.journal import JournalSink
from protocol.alarm import Alarm
from protocol.strip import Strip

log = logging.getLogger(__name__)


class AlarmBus:
    def __init__(
        self, sinks: list[AlarmSink], metrics: Metrics, queue_size: int = 10_000, flush_timeout_s: float = 5.0
    ) -> None:
        self.sinks = sinks
        self.metrics = metrics
        self.queue_size = queue_size
        self.flush_timeout_s = flush_timeout_s
        self._queues: dict[str, asyncio.Queue[Alarm | Strip]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._limited = RateLimitedLog(log)
        self._sending: dict[str, Alarm | Strip] = {}  # per sink, the item its send is working on
        self._stack = AsyncExitStack()

    async def __aenter__(self) -> Self:
        for sink in self.sinks:
            await self._stack.enter_async_context(sink)
            size = self.queue_size * (10 if isinstance(sink, JournalSink) else 1)
            q: asyncio.Queue[Alarm | Strip] = asyncio.Queue(size)
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
        self._count_unsent()
        await self._stack.aclose()

    async def flush(self) -> None:
        """Wait until every queued alarm has been handed to its sink, for ``flush_timeout_s`` at most."""
        try:
            await asyncio.wait_for(asyncio.gather(*(q.join() for q in self._queues.values())), self.flush_timeout_s)
        except TimeoutError:
            log.warning("alarm flush timed out with %s queued", {k: q.qsize() for k, q in self._queues.items()})

    def _count_unsent(self) -> None:
        """At close, alarms still queued (a sink slower than the flush timeout) are lost to that
        sink: count them as dropped and say so, rather than cancel them unseen."""
        for name, q in self._queues.items():
            cut = self._sending.pop(name, None)  # its send was cancelled: not known to have gone
            unsent: list[Alarm] = [cut] if isinstance(cut, Alarm) else []
            while not q.empty():
                item = q.get_nowait()
                q.task_done()
                if isinstance(item, Alarm):
                    unsent.append(item)
            if unsent:
                self.metrics.alarms_dropped.labels(name).inc(len(unsent))
                log.error(
                    "sink %s: %d alarms not sent by close (queued or being sent); dropped (first: %s %s %s)",
                    name,
                    len(unsent),
                    unsent[0].stream_id,
                    unsent[0].event,
                    unsent[0].state,
                )

    def publish(self, alarm: Alarm) -> None:
        """Queue an alarm for every sink; never blocks."""
        self.metrics.alarms.labels(alarm.event, alarm.state).inc()
        for sink in self.sinks:
            self._put(sink, alarm)

    def publish_strip(self, strip: Strip) -> None:
        """Queue a strip for every sink that carries strips, behind its alarm; never blocks."""
        self.metrics.strips.inc()
        for sink in self.sinks:
            if isinstance(sink, StripSink):
                self._put(sink, strip)

    def _put(self, sink: AlarmSink, item: Alarm | Strip) -> None:
        q = self._queues[sink.name]
        if q.full():
            dropped = q.get_nowait()
            q.task_done()
            self._lost(sink, dropped, logging.WARNING, "full", "alarm queue of %s full; dropped the oldest %s")
        q.put_nowait(item)

    def _lost(
        self,
        sink: AlarmSink,
        item: Alarm | Strip,
        level: int,
        why: str,
        msg: str,
        *args: object,
        exc_info: bool = False,
    ) -> None:
        """An item ``sink`` will never get: an alarm is counted; either is logged, at most once per
        10 s per sink and ``why``. ``msg`` takes the sink's name and the item's kind, then ``args``."""
        if isinstance(item, Alarm):
            self.metrics.alarms_dropped.labels(sink.name).inc()
        self._limited.log(
            level, f"{why}:{sink.name}", msg, sink.name, type(item).__name__.lower(), *args, exc_info=exc_info
        )

    async def _pump(self, sink: AlarmSink, q: asyncio.Queue[Alarm | Strip]) -> None:
        while True:
            item = await q.get()
            self._sending[sink.name] = item
            try:
                if isinstance(item, Alarm):
                    await sink.send(item)
                elif isinstance(sink, StripSink):
                    await sink.send_strip(item)
            except Exception as exc:  # the sink lost this one; the pump goes on with the next
                self._lost(
                    sink,
                    item,
                    logging.ERROR,
                    "send",
                    "sink %s failed to send %s (%s: %s)",
                    type(exc).__name__,
                    exc,
                    exc_info=True,
                )
            finally:
                q.task_done()
            self._sending.pop(sink.name, None)  # not reached when cancelled mid-send: counted at close
