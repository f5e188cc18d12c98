"""Send wire frames to a daemon over ZeroMQ (PUSH) or MQTT, on a drift-free schedule.

Frame k of every stream is due at ``start + k * frame_s / speed`` of the monotonic clock;
lateness never accumulates, so an hour at real time stays an hour.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Self

import aiomqtt
import zmq
import zmq.asyncio

from monitor.transports.mqtt_transport import client_for
from protocol.topics import samples_topic
from protocol.urls import parse_url

log = logging.getLogger(__name__)


class FrameSender:
    """Async context manager owning one connection; ``send(stream_id, payload)``."""

    def __init__(self, url: str, hwm: int = 100_000) -> None:
        self.endpoint = parse_url(url)
        self.hwm = hwm
        self._ctx: zmq.asyncio.Context | None = None
        self._sock: zmq.asyncio.Socket | None = None
        self._mqtt: aiomqtt.Client | None = None
        self.sent = 0

    async def __aenter__(self) -> Self:
        if self.endpoint.is_zmq:
            self._ctx = zmq.asyncio.Context()
            self._sock = self._ctx.socket(zmq.PUSH)
            self._sock.setsockopt(zmq.SNDHWM, self.hwm)
            self._sock.setsockopt(zmq.LINGER, 2000)
            self._sock.connect(self.endpoint.zmq_addr)
        else:
            self._mqtt = client_for(self.endpoint)
            await self._mqtt.__aenter__()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._sock is not None:
            self._sock.close(linger=2000)
        if self._ctx is not None:
            self._ctx.term()
        if self._mqtt is not None:
            await self._mqtt.__aexit__(exc_type, exc, tb)

    async def send(self, stream_id: str, payload: bytes) -> None:
        if self._sock is not None:
            await self._sock.send(payload)
        else:
            assert self._mqtt is not None
            await self._mqtt.publish(samples_topic(stream_id), payload, qos=0)
        self.sent += 1


async def paced(
    n_frames: int | None,
    frame_s: float,
    speed: float,
    step: Callable[[int], Awaitable[bool]],
    stop: asyncio.Event | None = None,
) -> int:
    """Call ``step(k)`` for k = 0, 1, ... on the drift-free schedule; stop when it returns False.

    ``speed`` 0 means as fast as possible. Returns the number of steps taken.
    """
    start = time.monotonic()
    k = 0
    while n_frames is None or k < n_frames:
        if stop is not None and stop.is_set():
            break
        if speed > 0:
            due = start + k * frame_s / speed
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        elif k % 50 == 0:
            await asyncio.sleep(0)
        if not await step(k):
            break
        k += 1
    return k
