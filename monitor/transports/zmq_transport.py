"""ZeroMQ: PULL for ingest (bound), PUB for alarms (bound). Real sockets, asyncio flavour."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, Final, Self

import zmq
import zmq.asyncio

from monitor.ratelimit import RateLimitedLog
from monitor.transports.base import RawFrame
from monitor.transports.curve import CurveAuth
from protocol.alarm import Alarm
from protocol.strip import Strip, Telemetry
from protocol.topics import zmq_alarm_topic, zmq_strip_topic, zmq_telemetry_topic
from protocol.urls import Endpoint
from protocol.wire import MAX_FRAME_BYTES

log = logging.getLogger(__name__)

#: Messages ZeroMQ queues per connected sender before that sender's PUSH blocks (back-pressure, no
#: loss). With ``max_bytes`` = MAX_FRAME_BYTES (160,100 B) the worst case is 1000 x 160,100 B, about
#: 160 MB per peer; typical 0.2 s int16 frames are ~250 B, so about 0.25 MB.
RCVHWM: Final = 1000
#: Parts a sample message may have: the frame, after an optional topic. ``MAXMSGSIZE`` bounds each
#: part, not their number, so a message of more parts is read and dropped part by part (counted as
#: ``bad_parts``), never gathered into the daemon whole.
MAX_PARTS: Final = 2
#: Messages the ingest loop takes before it lets other tasks run.
DEFAULT_BATCH: Final = 256
#: Alarm messages queued per subscriber before PUB drops (silently) for that subscriber: ~4 MB of JSON.
ALARM_SNDHWM: Final = 10_000


def bind(
    ctx: zmq.asyncio.Context,
    kind: int,
    endpoint: Endpoint,
    what: str,
    curve: CurveAuth | None = None,
    **opts: int,
) -> zmq.asyncio.Socket:
    """A socket of ``kind`` bound at ``endpoint`` (a CURVE server named ``what`` when ``curve`` is
    given); a bind failure becomes an OSError naming ``what``."""
    sock = ctx.socket(kind)
    for opt, value in opts.items():
        sock.setsockopt(getattr(zmq, opt), value)
    if curve is not None:
        curve.server(sock, what)
    try:
        sock.bind(endpoint.zmq_addr)
    except zmq.ZMQError as exc:
        sock.close()
        raise OSError(f"cannot bind ZeroMQ {what} at {endpoint}: {exc}") from exc
    log.info("ZeroMQ %s bound at %s%s", what, endpoint, " (CURVE)" if curve is not None else "")
    return sock


class ZmqSource:
    """Binds a PULL socket; any number of senders PUSH frames to it.

    Memory is bounded per peer: ``MAXMSGSIZE`` = ``max_bytes`` makes ZeroMQ drop the connection of a
    peer that sends a larger message part (it never reaches the daemon and is not counted; a PUSH
    peer reconnects by itself), and at most ``RCVHWM`` messages wait per peer, so at most
    RCVHWM x max_bytes (about 160 MB with the defaults) per connected peer, for messages of at most
    ``MAX_PARTS`` parts. ZeroMQ has no bound on a whole message: one of more parts is held by it
    until ``frames`` reads it part by part (no copy) and drops it, counted through ``on_reject``.

    Fairness: pyzmq's awaited recv completes at once while messages are queued, so a plain
    ``await recv`` loop never yields to the event loop under load and starves alarms, housekeeping
    and signal handling. ``frames`` therefore drains at most ``batch`` queued messages with
    non-blocking receives, then yields to the loop (``asyncio.sleep(0)``); with nothing queued it
    awaits the next message without spinning.

    With ``curve``, the socket is a CURVE server: only peers the ZAP handler let in reach it, and
    each frame carries its sender's certificate name and allowed streams (checked by the daemon).
    """

    def __init__(
        self,
        endpoint: Endpoint,
        ctx: zmq.asyncio.Context,
        *,
        max_bytes: int = MAX_FRAME_BYTES,
        batch: int = DEFAULT_BATCH,
        rcvhwm: int = RCVHWM,
        curve: CurveAuth | None = None,
        on_reject: Callable[[str], None] | None = None,
    ) -> None:
        if max_bytes < 1 or batch < 1 or rcvhwm < 1:
            raise ValueError(f"max_bytes, batch and rcvhwm must be >= 1, got {max_bytes}, {batch}, {rcvhwm}")
        self.endpoint = endpoint
        self.name = "zmq"
        self.max_bytes = max_bytes
        self.batch = batch
        self.rcvhwm = rcvhwm
        self.curve = curve
        self._on_reject = on_reject or (lambda reason: None)
        self._throttle = RateLimitedLog(log)
        self._ctx = ctx
        self._sock: zmq.asyncio.Socket | None = None
        self._sync: zmq.Socket[Any] | None = None

    async def __aenter__(self) -> Self:
        self._sock = bind(
            self._ctx,
            zmq.PULL,
            self.endpoint,
            "ingest",
            self.curve,
            RCVHWM=self.rcvhwm,
            MAXMSGSIZE=self.max_bytes,
            LINGER=0,
        )
        # The same socket without asyncio futures, for the rest of a message once its first part
        # is in: those parts are queued already, and a future per part cost 4x the time.
        self._sync = zmq.Socket.shadow(self._sock.underlying)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._sync = None  # a non-owning view: closing the socket is enough
        if self._sock is not None:
            self._sock.close(linger=0)
            self._sock = None

    async def frames(self) -> AsyncIterator[RawFrame]:
        """Raw frames as they arrive: the last part of each message (a leading topic part is ignored)."""
        sock, sync = self._sock, self._sync
        assert sock is not None and sync is not None, "enter the source first"
        curve = self.curve
        taken = 0
        while True:
            if taken >= self.batch:
                taken = 0
                await asyncio.sleep(0)  # a full batch: let the rest of the daemon run before the next
            copy = curve is None  # Frames (copy=False) carry the sender's User-Id
            try:
                # NOBLOCK returns an already-completed future: awaiting it never suspends.
                last = await sock.recv(zmq.NOBLOCK, copy=copy)
            except zmq.Again:
                # Nothing queued: wait for the next message without spinning.
                last = await sock.recv(copy=copy)
            taken += 1
            parts = 1
            while sync.get(zmq.RCVMORE):
                # The rest of a message is queued with its first part: NOBLOCK never waits here.
                more = sync.recv(zmq.NOBLOCK, copy=False)  # no copy of a part to be dropped
                parts += 1
                if parts <= MAX_PARTS:
                    last = more  # the frame is the last part; earlier ones (a topic) are ignored
                elif parts % self.batch == 0:
                    await asyncio.sleep(0)  # a message of 100,000s of parts must not hold the loop
            if parts > MAX_PARTS:
                self._on_reject("bad_parts")
                self._throttle.log(
                    logging.WARNING,
                    "bad_parts",
                    "ZeroMQ ingest dropped a message of %d parts (at most %d)",
                    parts,
                    MAX_PARTS,
                )
                continue
            if isinstance(last, zmq.Frame) and curve is not None:
                sender = str(last.get("User-Id"))
                yield RawFrame(last.bytes, sender=sender, allowed=curve.allowed(sender))
            else:
                yield RawFrame(last.bytes if isinstance(last, zmq.Frame) else bytes(last))


class ZmqAlarmSink:
    """Binds a PUB socket. Each message is two parts: topic ``alarm.<stream>.<event>`` and JSON.

    ZeroMQ PUB never blocks: once a subscriber has ``ALARM_SNDHWM`` messages queued (a stuck or slow
    subscriber), further alarms to that subscriber are dropped silently, with no count available
    from ZeroMQ. The journal sink keeps every alarm. With ``curve`` it is a CURVE server: only the
    client keys the ZAP handler accepts can subscribe.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        ctx: zmq.asyncio.Context,
        *,
        sndhwm: int = ALARM_SNDHWM,
        curve: CurveAuth | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.name = f"zmq:{endpoint.port}"
        self.sndhwm = sndhwm
        self.curve = curve
        self._ctx = ctx
        self._sock: zmq.asyncio.Socket | None = None

    async def __aenter__(self) -> Self:
        self._sock = bind(self._ctx, zmq.PUB, self.endpoint, "alarms", self.curve, SNDHWM=self.sndhwm, LINGER=1000)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._sock is not None:
            self._sock.close(linger=1000)
            self._sock = None

    async def send(self, alarm: Alarm) -> None:
        assert self._sock is not None
        await self._sock.send_multipart([zmq_alarm_topic(alarm.stream_id, alarm.event), alarm.to_json().encode()])

    async def send_strip(self, strip: Strip) -> None:
        assert self._sock is not None
        a = strip.alarm
        await self._sock.send_multipart([zmq_strip_topic(a.stream_id, a.event), strip.to_json().encode()])

    def send_telemetry(self, telemetry: Telemetry) -> bool:
        """PUB never blocks (a slow subscriber loses messages at its HWM), so this sends at once."""
        if self._sock is None:
            return False
        fut: asyncio.Future[Any] = self._sock.send_multipart(  # type: ignore[assignment]
            [zmq_telemetry_topic(telemetry.stream_id), telemetry.to_json().encode()], flags=zmq.NOBLOCK
        )
        if fut.done():
            return not fut.cancelled() and fut.exception() is None
        fut.add_done_callback(
            lambda f: f.cancelled() or f.exception()
        )  # retrieve, so a late error is never "unretrieved"
        return True
