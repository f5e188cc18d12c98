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


def bind(ctx: zmq.asyncio.Context, kind: int, endpoint: Endpoint, what: str, **opts: int) -> zmq.asyncio.Socket:
    """A socket of ``kind`` bound at ``endpoint``; a bind failure becomes an OSError naming ``what``."""
    sock = ctx.socket(kind)
    for opt, value in opts.items():
        sock.setsockopt(getattr(zmq, opt), value)
    try:
        sock.bind(endpoint.zmq_addr)
    except zmq.ZMQError as exc:
        sock.close()
        raise OSError(f"cannot bind ZeroMQ {what} at {endpoint}: {exc}") from exc
    log.info("ZeroMQ %s bound at %s", what, endpoint)
    return sock


class ZmqSource:
    """Binds a PULL socket; any number of senders PUSH frames to it."""

    def __init__(self, endpoint: Endpoint, ctx: zmq.asyncio.Context) -> None:
        self.endpoint = endpoint
        self.name = "zmq"
        self._ctx = ctx
        self._sock: zmq.asyncio.Socket | None = None

    async def __aenter__(self) -> Self:
        self._sock = bind(self._ctx, zmq.PULL, self.endpoint, "ingest", RCVHWM=RCVHWM, LINGER=0)
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
        self._sock = bind(self._ctx, zmq.PUB, self.endpoint, "alarms", LINGER=1000)
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
