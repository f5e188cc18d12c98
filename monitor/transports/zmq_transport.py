"""ZeroMQ: PULL for ingest (bound), PUB for alarms (bound). Real sockets, asyncio flavour."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Self

import zmq
import zmq.asyncio

from monitor.alarms import Alarm
from monitor.transports.base import RawFrame
from monitor.urls import Endpoint

log = logging.getLogger(__name__)

#: Frames buffered in the kernel/ZeroMQ before the sender blocks (per socket).
RCVHWM = 100_000


class ZmqSource:
    """Binds a PULL socket; any number of senders PUSH frames to it."""

    def __init__(self, endpoint: Endpoint, ctx: zmq.asyncio.Context) -> None:
        self.endpoint = endpoint
        self.name = "zmq"
        self._ctx = ctx
        self._sock: zmq.asyncio.Socket | None = None

    async def __aenter__(self) -> Self:
        sock = self._ctx.socket(zmq.PULL)
        sock.setsockopt(zmq.RCVHWM, RCVHWM)
        sock.setsockopt(zmq.LINGER, 0)
        try:
            sock.bind(self.endpoint.zmq_addr)
        except zmq.ZMQError as exc:
            sock.close()
            raise OSError(f"cannot bind ZeroMQ ingest at {self.endpoint}: {exc}") from exc
        self._sock = sock
        log.info("ZeroMQ ingest bound at %s", self.endpoint)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    async def frames(self) -> AsyncIterator[RawFrame]:
        assert self._sock is not None, "enter the source first"
        while True:
            parts = await self._sock.recv_multipart(copy=True)
            # The frame is the last part; a leading part, if any, is an optional topic.
            yield RawFrame(bytes(parts[-1]))


class ZmqAlarmSink:
    """Binds a PUB socket. Each message is two parts: topic ``alarm.<stream>.<event>`` and JSON."""

    def __init__(self, endpoint: Endpoint, ctx: zmq.asyncio.Context) -> None:
        self.endpoint = endpoint
        self.name = f"zmq:{endpoint.port}"
        self._ctx = ctx
        self._sock: zmq.asyncio.Socket | None = None

    async def __aenter__(self) -> Self:
        sock = self._ctx.socket(zmq.PUB)
        sock.setsockopt(zmq.LINGER, 1000)
        try:
            sock.bind(self.endpoint.zmq_addr)
        except zmq.ZMQError as exc:
            sock.close()
            raise OSError(f"cannot bind ZeroMQ alarms at {self.endpoint}: {exc}") from exc
        self._sock = sock
        log.info("ZeroMQ alarms published at %s", self.endpoint)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._sock is not None:
            self._sock.close(linger=1000)
            self._sock = None

    async def send(self, alarm: Alarm) -> None:
        assert self._sock is not None
        topic = f"alarm.{alarm.stream_id}.{alarm.event}".encode()
        await self._sock.send_multipart([topic, alarm.to_json().encode()])
