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

from monitor.transports.curve import HANDSHAKE_TIMEOUT_S, ClientKeys, HandshakeError, HandshakeWatch
from monitor.transports.mqtt_transport import client_for
from monitor.transports.tls import MqttSecurity, explain
from protocol.topics import samples_topic
from protocol.urls import parse_url

log = logging.getLogger(__name__)


#: How often (s) a flowing ZeroMQ send loop looks for refused handshakes: a queued send never waits.
CHECK_EVERY_S = 0.25


class FrameSender:
    """Async context manager owning one connection; ``send(stream_id, payload)``.

    ZeroMQ with ``curve_server`` (the daemon's public ``.key``) and ``curve_secret`` (own
    ``.key_secret``) is a CURVE client: entering waits for the first handshake and raises
    ``HandshakeError`` (an OSError) within ``handshake_timeout`` s if the daemon refuses the key or
    does not answer. With or without CURVE, a daemon that keeps refusing the handshake makes
    ``send`` raise once that has lasted ``handshake_timeout`` s, instead of blocking forever, and
    leaving cleanly without one handshake ever succeeding raises too: libzmq would otherwise drop
    the queued frames at close without a word.
    """

    def __init__(
        self,
        url: str,
        hwm: int = 100_000,
        *,
        mqtt: MqttSecurity | None = None,
        curve_server: str | None = None,
        curve_secret: str | None = None,
        handshake_timeout: float = HANDSHAKE_TIMEOUT_S,
    ) -> None:
        self.mqtt_security = mqtt if mqtt is not None else MqttSecurity()
        self.endpoint = self.mqtt_security.endpoint(parse_url(url), "sender")
        self.hwm = hwm
        self.curve = ClientKeys.optional(curve_server, curve_secret)  # CurveError (a ValueError)
        if self.curve is not None and not self.endpoint.is_zmq:
            raise ValueError("CURVE keys apply to ZeroMQ (tcp://) URLs only")
        self.handshake_timeout = handshake_timeout
        self._ctx: zmq.asyncio.Context | None = None
        self._sock: zmq.asyncio.Socket | None = None
        self._watch: HandshakeWatch | None = None
        self._mqtt: aiomqtt.Client | None = None
        self.sent = 0
        self._checked_at = -CHECK_EVERY_S

    async def __aenter__(self) -> Self:
        if self.endpoint.is_zmq:
            self._ctx = zmq.asyncio.Context()
            self._sock = self._ctx.socket(zmq.PUSH)
            self._sock.setsockopt(zmq.SNDHWM, self.hwm)
            self._sock.setsockopt(zmq.LINGER, 2000)
            if self.curve is not None:
                self.curve.apply(self._sock)
            self._watch = HandshakeWatch(self._sock, str(self.endpoint), time.monotonic)
            self._sock.connect(self.endpoint.zmq_addr)
            if self.curve is not None:
                try:
                    await self._watch.wait_ok(self.handshake_timeout)
                except BaseException:
                    self._close_zmq(linger=0)
                    raise
        else:
            client = client_for(self.endpoint, tls_context=self.mqtt_security.context(self.endpoint, "sender"))
            try:
                await client.__aenter__()
            except aiomqtt.MqttError as exc:
                # An OSError, so the CLI reports it in one line: "cannot connect ... certificate verify failed".
                why = explain(
                    exc,
                    client_cert=self.mqtt_security.tls.cert is not None if self.endpoint.scheme == "mqtts" else None,
                )
                raise ConnectionError(f"cannot connect to {self.endpoint}: {why}") from None
            self._mqtt = client
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        linger = 0
        try:
            if exc is None and self._watch is not None and self.sent:
                await self._delivered_or_raise(self._watch)
            linger = 2000 if exc is None else 0
        finally:
            self._close_zmq(linger=linger)
        if self._mqtt is not None:
            await self._mqtt.__aexit__(exc_type, exc, tb)

    async def _delivered_or_raise(self, watch: HandshakeWatch) -> None:
        """Frames queued on a connection that never completed a handshake are lost at close."""
        try:  # wait_ok returns at once if a handshake already succeeded
            await watch.wait_ok(self.handshake_timeout)
        except HandshakeError as exc:
            raise HandshakeError(f"{exc}; {self.sent} frames were never delivered") from None

    def _close_zmq(self, linger: int) -> None:
        if self._watch is not None:
            self._watch.close()
            self._watch = None
        if self._sock is not None:
            self._sock.close(linger=linger)
            self._sock = None
        if self._ctx is not None:
            self._ctx.term()
            self._ctx = None

    async def send(self, stream_id: str, payload: bytes) -> None:
        if self._sock is not None:
            await self._send_zmq(self._sock, payload)
        else:
            assert self._mqtt is not None
            await self._mqtt.publish(samples_topic(stream_id), payload, qos=0)
        self.sent += 1

    async def _send_zmq(self, sock: zmq.asyncio.Socket, payload: bytes) -> None:
        """Send without blocking forever: while the daemon is away, wait (back-pressure), but raise
        once handshakes have been failing for ``handshake_timeout`` s."""
        watch = self._watch
        assert watch is not None
        now = time.monotonic()
        if now - self._checked_at >= CHECK_EVERY_S:
            self._checked_at = now
            await self._check(watch)
        while True:
            try:
                await sock.send(payload, zmq.NOBLOCK)
                return
            except zmq.Again:
                await self._check(watch)
                await sock.poll(250, zmq.POLLOUT)  # type: ignore[call-arg]  # pyzmq: (timeout, flags)

    async def _check(self, watch: HandshakeWatch) -> None:
        await watch.drain()
        err = watch.error(self.handshake_timeout)
        if err is not None:
            raise err


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
