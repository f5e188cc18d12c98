"""``ecg-monitor subscribe``: show alarms as they arrive, over ZeroMQ or MQTT.

``messages_from`` is the one reader of what a daemon publishes (alarms, strips, telemetry); the
subscriber, the tests and the central station all read through it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import sys
import time
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass
from typing import Final

import aiomqtt
import zmq
import zmq.asyncio
from rich.console import Console
from rich.markup import escape

from monitor.transports.backoff import Backoff
from monitor.transports.curve import HANDSHAKE_TIMEOUT_S, ClientKeys, HandshakeWatch
from monitor.transports.mqtt_transport import client_for
from monitor.transports.tls import MqttSecurity, explain
from protocol.alarm import Alarm
from protocol.strip import Strip, Telemetry
from protocol.topics import (
    ALARMS_SUBSCRIPTION,
    STRIPS_SUBSCRIPTION,
    TELEMETRY_SUBSCRIPTION,
    ZMQ_ALARM_PREFIX,
    ZMQ_STRIP_PREFIX,
    ZMQ_TELEMETRY_PREFIX,
)
from protocol.urls import parse_url

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SubscribeOptions:
    source: str = "tcp://127.0.0.1:5556"
    json: bool = False
    streams: tuple[str, ...] = ()
    events: tuple[str, ...] = ()
    priorities: tuple[str, ...] = ()
    count: int | None = None
    duration: float | None = None
    mqtt: MqttSecurity | None = None  # TLS settings and password for an MQTT source
    curve_server: str | None = None  # ZeroMQ CURVE: the daemon's public .key ...
    curve_secret: str | None = None  # ... and this subscriber's own .key_secret
    #: Called (in a worker thread) with each strip of a matching alarm, e.g. to save it as a PNG.
    on_strip: Callable[[Strip], object] | None = None

    def wants(self, a: Alarm) -> bool:
        return (
            (not self.streams or a.stream_id in self.streams)
            and (not self.events or a.event in self.events)
            and (not self.priorities or a.priority in self.priorities)
        )


Message = Alarm | Strip | Telemetry
#: Message kind -> (ZeroMQ prefix, MQTT subscription, MQTT QoS, parser).
KINDS: Final[dict[str, tuple[bytes, str, int, Callable[[bytes], Message]]]] = {
    "alarm": (ZMQ_ALARM_PREFIX, ALARMS_SUBSCRIPTION, 1, Alarm.from_json),
    "strip": (ZMQ_STRIP_PREFIX, STRIPS_SUBSCRIPTION, 1, Strip.from_json),
    "telemetry": (ZMQ_TELEMETRY_PREFIX, TELEMETRY_SUBSCRIPTION, 0, Telemetry.from_json),
}


def _why(exc: BaseException) -> str:
    """A log-safe reason: the type, and at most 200 characters of what the message said."""
    return f"{type(exc).__name__}: {str(exc)[:200]}"


def _parser_for_zmq(topic: bytes, kinds: Collection[str]) -> Callable[[bytes], Message] | None:
    for kind in kinds:
        prefix, _, _, parse = KINDS[kind]
        if topic.startswith(prefix):
            return parse
    return None


def _parser_for_mqtt(topic: str, kinds: Collection[str]) -> Callable[[bytes], Message] | None:
    for kind in kinds:
        _, sub, _, parse = KINDS[kind]
        if topic.endswith(sub.rsplit("/", 1)[1]) and topic.count("/") == 2:
            return parse
    return None


async def alarms_from(
    url: str,
    ready: asyncio.Event | None = None,
    *,
    mqtt: MqttSecurity | None = None,
    curve_server: str | None = None,
    curve_secret: str | None = None,
    handshake_timeout: float = HANDSHAKE_TIMEOUT_S,
) -> AsyncIterator[Alarm]:
    """Alarms only: ``messages_from`` with ``kinds=("alarm",)``."""
    async for m in messages_from(
        url,
        ready,
        kinds=("alarm",),
        mqtt=mqtt,
        curve_server=curve_server,
        curve_secret=curve_secret,
        handshake_timeout=handshake_timeout,
    ):
        if isinstance(m, Alarm):
            yield m


async def messages_from(
    url: str,
    ready: asyncio.Event | None = None,
    *,
    kinds: Collection[str] = ("alarm",),
    mqtt: MqttSecurity | None = None,
    curve_server: str | None = None,
    curve_secret: str | None = None,
    handshake_timeout: float = HANDSHAKE_TIMEOUT_S,
) -> AsyncIterator[Message]:
    """Yield alarms, strips and/or telemetry (``kinds``) from a daemon's PUB socket or an MQTT
    broker; reconnects quietly (a TLS failure, which retrying will not fix, is logged as a
    warning at a bounded rate). A malformed message is logged and skipped.

    ZeroMQ with ``curve_server``/``curve_secret`` subscribes as a CURVE client and waits for the
    handshake before ``ready``. A daemon refusing the handshake (unknown key, wrong server key,
    CURVE on one side only) for ``handshake_timeout`` s raises ``HandshakeError`` (an OSError).
    """
    ep = parse_url(url)
    if ep.is_zmq:
        keys = ClientKeys.optional(curve_server, curve_secret)  # CurveError (a ValueError)
        ctx = zmq.asyncio.Context()
        # Telemetry (a message per bed per second) gets a connection of its own: the daemon's PUB
        # keeps a queue per connection, capped at its HWM, so a reader that stalls loses telemetry
        # there, while alarms and strips wait in a queue that only they fill.
        lanes = [
            lane for lane in ([k for k in kinds if k != "telemetry"], [k for k in kinds if k == "telemetry"]) if lane
        ]
        socks: list[zmq.asyncio.Socket] = []
        watches: list[HandshakeWatch] = []
        poller = zmq.asyncio.Poller()
        try:
            for lane in lanes:
                sock = ctx.socket(zmq.SUB)
                socks.append(sock)
                for kind in lane:
                    sock.setsockopt(zmq.SUBSCRIBE, KINDS[kind][0])
                sock.setsockopt(zmq.LINGER, 0)
                if keys is not None:
                    keys.apply(sock)
                watches.append(HandshakeWatch(sock, str(ep), time.monotonic))
                sock.connect(ep.zmq_addr)
                poller.register(sock, zmq.POLLIN)
            if keys is not None:
                for watch in watches:
                    await watch.wait_ok(handshake_timeout)
            if ready is not None:
                ready.set()
            next_check = time.monotonic() + 0.5
            while True:
                events = dict(await poller.poll(500))
                if not events or time.monotonic() >= next_check:
                    # Every 0.5 s even while busy: one connection may be refused while the other
                    # keeps delivering.
                    next_check = time.monotonic() + 0.5
                    for watch in watches:
                        await watch.drain()
                        err = watch.error(handshake_timeout)
                        if err is not None:
                            raise err
                for sock in socks:  # alarms and strips first
                    if sock not in events:
                        continue
                    parts = await sock.recv_multipart()
                    parse = _parser_for_zmq(parts[0], kinds)
                    if parse is None:
                        continue
                    try:
                        message = parse(parts[-1])
                    except Exception as exc:  # one hostile message must not end the reader
                        log.warning("ignored a malformed message on %r: %s", parts[0][:80], _why(exc))
                        continue
                    yield message
        finally:
            for watch in watches:
                watch.close()
            for sock in socks:
                sock.close(0)
            ctx.term()
    sec = mqtt if mqtt is not None else MqttSecurity()
    ep = sec.endpoint(ep, "subscriber")
    tls = sec.context(ep, "subscriber")
    backoff = Backoff()
    loop = asyncio.get_running_loop()
    warned_at = -math.inf
    while True:
        up_since: float | None = None
        try:
            async with client_for(ep, tls_context=tls) as client:
                for kind in kinds:
                    _, sub, qos, _ = KINDS[kind]
                    await client.subscribe(sub, qos=qos)
                up_since = loop.time()
                if ready is not None:
                    ready.set()
                async for msg in client.messages:
                    payload = msg.payload if isinstance(msg.payload, (bytes, bytearray)) else str(msg.payload).encode()
                    parse = _parser_for_mqtt(msg.topic.value, kinds)
                    if parse is None:
                        continue
                    try:
                        message = parse(bytes(payload))
                    except Exception as exc:  # one hostile message must not end the reader
                        log.warning("ignored a malformed message on %s: %s", msg.topic.value[:80], _why(exc))
                        continue
                    yield message
        except aiomqtt.MqttError as exc:
            delay = backoff.after(None if up_since is None else loop.time() - up_since)
            why = explain(exc)
            if why != str(exc) and loop.time() - warned_at >= 10.0:  # a TLS problem: say so, now and then
                warned_at = loop.time()
                log.warning("MQTT subscriber %s: %s; retrying", ep, why)
            else:
                log.debug("MQTT subscriber lost (%s); retrying in %.2fs", exc, delay)
            await asyncio.sleep(delay)


STYLE = {"high": "bold red", "medium": "yellow", "low": "cyan"}
#: With --count and strips, how long to wait for the strips of the last alarms.
STRIP_WAIT_S = 5.0


def printer(opts: SubscribeOptions) -> Callable[[Alarm], None]:
    if opts.json:

        def out_json(a: Alarm) -> None:
            sys.stdout.write(a.to_json() + "\n")
            sys.stdout.flush()

        return out_json
    console = Console()

    def out_rich(a: Alarm) -> None:
        when = time.strftime("%H:%M:%S", time.localtime(a.published_at))
        console.print(
            # Every field escaped: alarm text is the sender's, never console markup.
            f"{when} [bold]{escape(f'{a.stream_id:<10}')}[/] {escape(f'{a.event:<9} {a.state:<8} {a.priority:<6}')} "
            f"conf {a.confidence:.2f} {escape(f'{a.source:<5}')} {escape(a.explanation)}",
            style=STYLE.get(a.priority),
            highlight=False,
            soft_wrap=True,
        )

    return out_rich


async def subscribe(
    opts: SubscribeOptions, stop: asyncio.Event | None = None, ready: asyncio.Event | None = None
) -> int:
    """Print matching alarms until ``count`` arrive, ``duration`` passes or ``stop`` is set."""
    show = printer(opts)
    n = 0
    kinds = ("alarm", "strip") if opts.on_strip is not None else ("alarm",)
    awaited: set[str] = set()  # strip ids of shown alarms whose strip has not come yet
    done_at: float | None = None  # --count reached: wait a little for the last strips

    async def consume() -> None:
        nonlocal n, done_at
        loop = asyncio.get_running_loop()
        async for m in messages_from(
            opts.source,
            ready,
            kinds=kinds,
            mqtt=opts.mqtt,
            curve_server=opts.curve_server,
            curve_secret=opts.curve_secret,
        ):
            if isinstance(m, Strip):
                if opts.on_strip is not None and m.strip_id in awaited:
                    awaited.discard(m.strip_id)
                    try:
                        await asyncio.to_thread(opts.on_strip, m)
                    except Exception as exc:  # a strip that cannot be saved must not stop the alarms
                        log.error("strip %s not handled: %s", m.strip_id, exc)
            elif isinstance(m, Alarm) and done_at is None and opts.wants(m):
                try:
                    show(m)
                except Exception as exc:  # one alarm that cannot be shown must not stop the rest
                    log.error("alarm from %s not shown: %s: %s", m.stream_id, type(exc).__name__, exc)
                    continue
                n += 1
                if m.strip_id and opts.on_strip is not None:
                    awaited.add(m.strip_id)
                if opts.count is not None and n >= opts.count:
                    done_at = loop.time()
            if done_at is not None and (not awaited or loop.time() - done_at > STRIP_WAIT_S):
                return

    task = asyncio.create_task(consume())
    waiters: list[asyncio.Future[object]] = [task]  # type: ignore[list-item]
    stopper = asyncio.create_task(stop.wait()) if stop is not None else None
    if stopper is not None:
        waiters.append(stopper)  # type: ignore[arg-type]
    await asyncio.wait(waiters, timeout=opts.duration, return_when=asyncio.FIRST_COMPLETED)
    for t in (task, stopper):
        if t is not None and not t.done():
            t.cancel()
    await asyncio.gather(task, *(t for t in [stopper] if t is not None), return_exceptions=True)
    failure = None if task.cancelled() else task.exception()
    if failure is not None:
        # Never end quietly: e.g. HandshakeError (an OSError) or any other failure of the reader;
        # the CLI exits 1 with it.
        raise failure
    return n


def load_alarms(path: str) -> list[Alarm]:
    out = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if line:
                out.append(Alarm.from_json(line))
    return out
