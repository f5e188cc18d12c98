"""MQTT through aiomqtt: subscribe to sample frames, publish alarms.

Both directions reconnect on the short schedule of ``backoff.Backoff`` (first retry at once, cap
1.5 s), so a broker that returns sees the monitor again within about 2 s. The alarm sink never
lets one message hold up the ones behind it: a message in flight when the connection failed
``max_attempts`` times, or one whose stream id or event is not a safe topic level, goes to a
dead letter (file line, ERROR log, callback) instead of being retried for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import aiomqtt
import paho.mqtt.client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from monitor.ratelimit import RateLimitedLog
from monitor.transports.backoff import Backoff
from monitor.transports.base import RawFrame
from monitor.transports.tls import explain
from protocol.alarm import Alarm, AlarmState
from protocol.strip import Strip
from protocol.topics import SAMPLES_SUBSCRIPTION, alarm_state_topic, alarms_topic, stream_of_samples_topic, strips_topic
from protocol.urls import Endpoint

log = logging.getLogger(__name__)

#: Seconds aiomqtt waits for CONNACK, SUBACK or PUBACK before calling the connection failed.
#: A refused connect (broker down on loopback) fails at once regardless.
OPERATION_TIMEOUT_S = 5.0
#: MQTT keepalive: a silently dead broker (no TCP reset) is noticed after about 1.5x this.
KEEPALIVE_S = 15
#: Largest sample payload accepted; a 10 s two-lead float32 frame at 2 kHz is 160 kB.
MAX_PAYLOAD_BYTES = 1 << 20
#: Room for a PUBLISH packet's header, topic and properties beyond its payload: the ingest asks
#: the broker (MQTT 5 Maximum Packet Size) for no packet larger than its payload limit plus this.
PACKET_OVERHEAD_BYTES = 1024
#: Bounds on received messages waiting for the daemon; beyond them new messages are dropped.
MAX_QUEUED_MESSAGES = 1000
MAX_QUEUED_BYTES = 64 << 20
#: A message in flight when the connection failed this many times goes to the dead letter.
MAX_SEND_ATTEMPTS = 3
#: Seconds the alarm sink keeps sending at shutdown while connected.
DRAIN_S = 5.0
#: Repeated conditions are logged at most once per this many seconds.
LOG_EVERY_S = 10.0

_SAFE_LEVEL = re.compile(r"[A-Za-z0-9_:-]{1,64}")


def safe_topic_level(s: str) -> bool:
    """True if ``s`` can be one MQTT topic level as is: 1-64 of ``A-Za-z0-9_:-``.

    Anything else (``/``, wildcards, control characters such as a trailing newline, which makes
    mosquitto drop the connection) must never reach a publish.
    """
    return _SAFE_LEVEL.fullmatch(s) is not None


def client_for(
    endpoint: Endpoint,
    identifier: str | None = None,
    *,
    timeout: float = OPERATION_TIMEOUT_S,
    keepalive: int = KEEPALIVE_S,
    queue_type: type[asyncio.Queue[aiomqtt.Message]] | None = None,
    max_queued_incoming_messages: int | None = None,
    tls_context: ssl.SSLContext | None = None,
    max_packet_bytes: int | None = None,
) -> aiomqtt.Client:
    """An aiomqtt client for ``mqtt://`` or ``mqtts://``. TLS uses ``tls_context`` (see
    ``tls.TlsSettings``: custom CA, client certificate) or else the system CAs, hostname checked.

    ``max_packet_bytes``: connect with MQTT 5 and ask the broker never to send a larger packet
    (it drops such a message for this client): paho reads a whole PUBLISH into memory before
    anyone can look at its size, so a limit checked after it would come too late."""
    tls: ssl.SSLContext | None = None
    if endpoint.scheme == "mqtts":
        tls = tls_context if tls_context is not None else ssl.create_default_context()
    v5: dict[str, Any] = {}
    if max_packet_bytes is not None:
        props = Properties(PacketTypes.CONNECT)
        props.MaximumPacketSize = max_packet_bytes
        v5 = {"protocol": aiomqtt.ProtocolVersion.V5, "properties": props}
    return aiomqtt.Client(
        endpoint.host,
        endpoint.port,
        username=endpoint.username,
        password=endpoint.password,
        identifier=identifier,
        tls_context=tls,
        timeout=timeout,
        keepalive=keepalive,
        queue_type=queue_type,
        max_queued_incoming_messages=max_queued_incoming_messages,
        **v5,
    )


def session_failure(exc: Exception) -> tuple[int, str, str, bool]:
    """How a sink's session loop logs ``exc``: (level, rate-limit key, why, with traceback). A lost
    connection (``MqttError``) is routine; anything else is a bug to show loudly, though the loop
    still retries rather than let the sink's one task end."""
    if isinstance(exc, aiomqtt.MqttError):
        return logging.WARNING, "lost", explain(exc), False
    return logging.ERROR, "failed", f"unexpected {type(exc).__name__}: {exc}", True


def _payload_len(payload: object) -> int:
    if isinstance(payload, (bytes, bytearray)):
        return len(payload)
    return 0 if payload is None else len(str(payload))


def _incoming_queue(
    max_payload: int, max_bytes: int, reject: Callable[[str], None]
) -> type[asyncio.Queue[aiomqtt.Message]]:
    """aiomqtt's incoming queue, bounded by count and bytes. Oversized messages ("too_large") and
    messages arriving while it is full ("queue_full") are dropped on arrival, before any decode,
    and reported through ``reject``; what is already queued is kept (drop newest).
    """

    class IncomingQueue(asyncio.Queue[aiomqtt.Message]):
        queued_bytes = 0

        def put_nowait(self, item: aiomqtt.Message) -> None:
            n = _payload_len(item.payload)
            if n > max_payload:
                reject("too_large")
                return
            if self.full() or self.queued_bytes + n > max_bytes:
                reject("queue_full")
                return
            super().put_nowait(item)
            self.queued_bytes += n

        def get_nowait(self) -> aiomqtt.Message:
            item = super().get_nowait()
            self.queued_bytes -= _payload_len(item.payload)
            return item

    return IncomingQueue


class MqttSource:
    """Subscribes to ``ecg/+/samples``; the topic's stream id must match the frame's (the daemon
    checks). Reports connection changes through ``on_connected(name, connected)`` and dropped
    messages through ``on_reject(reason)``: "too_large" above ``max_payload`` bytes (a packet more
    than ``PACKET_OVERHEAD_BYTES`` larger never leaves the broker: MQTT 5), "queue_full"
    when ``max_queued`` messages or ``max_queued_bytes`` (default: 64 MiB or 8 payloads) wait for
    the daemon already; those already queued are kept.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        topic: str = SAMPLES_SUBSCRIPTION,
        *,
        max_payload: int = MAX_PAYLOAD_BYTES,
        max_queued: int = MAX_QUEUED_MESSAGES,
        max_queued_bytes: int | None = None,
        on_reject: Callable[[str], None] | None = None,
        on_connected: Callable[[str, bool], None] | None = None,
        backoff: Backoff | None = None,
        timeout: float = OPERATION_TIMEOUT_S,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if max_queued_bytes is None:
            max_queued_bytes = max(MAX_QUEUED_BYTES, 8 * max_payload)
        if max_payload < 1 or max_queued < 1 or max_queued_bytes < max_payload:
            raise ValueError("need max_payload >= 1, max_queued >= 1 and max_queued_bytes >= max_payload")
        self.endpoint = endpoint
        self.topic = topic
        self.name = "mqtt"
        self.max_payload = max_payload
        self.max_queued = max_queued
        self.max_queued_bytes = max_queued_bytes
        self.timeout = timeout
        self.tls_context = tls_context
        self._on_reject = on_reject
        self._on_connected = on_connected
        self._backoff = backoff if backoff is not None else Backoff()
        self._connected = False
        self._throttle = RateLimitedLog(log, every=LOG_EVERY_S)

    @property
    def is_connected(self) -> bool:
        return self._connected

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._set_connected(False)

    def _set_connected(self, connected: bool) -> None:
        if connected != self._connected:
            self._connected = connected
            if self._on_connected is not None:
                self._on_connected(self.name, connected)

    def _reject(self, reason: str) -> None:
        self._throttle.log(logging.WARNING, reason, "MQTT ingest %s dropped a message: %s", self.endpoint, reason)
        if self._on_reject is not None:
            self._on_reject(reason)

    async def frames(self) -> AsyncIterator[RawFrame]:
        loop = asyncio.get_running_loop()
        queue_type = _incoming_queue(self.max_payload, self.max_queued_bytes, self._reject)
        try:
            while True:
                up_since: float | None = None
                try:
                    async with client_for(
                        self.endpoint,
                        timeout=self.timeout,
                        queue_type=queue_type,
                        max_queued_incoming_messages=self.max_queued,
                        tls_context=self.tls_context,
                        max_packet_bytes=self.max_payload + PACKET_OVERHEAD_BYTES,
                    ) as client:
                        await client.subscribe(self.topic, qos=0)
                        up_since = loop.time()
                        self._set_connected(True)
                        log.info("MQTT ingest subscribed to %s on %s", self.topic, self.endpoint)
                        async for msg in client.messages:
                            payload = msg.payload
                            if not isinstance(payload, (bytes, bytearray)):
                                payload = str(payload).encode()
                            sid = stream_of_samples_topic(msg.topic.value)
                            if sid is None:  # a topic level no stream id can have: never decoded
                                self._reject("bad_topic")
                                continue
                            yield RawFrame(bytes(payload), sid)
                except aiomqtt.MqttError as exc:
                    self._set_connected(False)
                    delay = self._backoff.after(None if up_since is None else loop.time() - up_since)
                    self._throttle.log(
                        logging.WARNING,
                        "lost",
                        "MQTT ingest %s: %s; retrying in %.2fs",
                        self.endpoint,
                        explain(exc),
                        delay,
                    )
                    await asyncio.sleep(delay)
        finally:
            self._set_connected(False)


@dataclass(eq=False, slots=True)
class _Outgoing:
    """One queued publish: an alarm (then its stream's retained state), the state alone, or a strip."""

    stream_id: str
    alarm: Alarm | None
    alarm_sent: bool = False
    failures: int = 0
    strip: bytes | None = None  # a strip's JSON: published on its own topic, no state


def _never_sent(exc: aiomqtt.MqttError) -> bool:
    """paho refused the publish because the connection was already gone: nothing was in flight."""
    return isinstance(exc, aiomqtt.MqttCodeError) and exc.rc == paho.MQTT_ERR_NO_CONN


class MqttAlarmSink:
    """Publishes each alarm on ``ecg/<stream>/alarms`` (QoS 1) and retains the stream's current
    alarm state on ``ecg/<stream>/alarms/state``.

    ``send`` never blocks: alarms wait in one bounded queue (this sink's, so they survive a broker
    outage; the oldest is dropped and counted through ``on_drop`` when full). A message in flight
    when the connection failed ``max_attempts`` times, or one that cannot be a topic, is
    dead-lettered: its JSON appended to ``dead_letter`` (mode 0640), an ERROR logged and
    ``on_dead_letter(name)`` called. After close, ``unsent`` is the number of alarms left queued.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        queue_size: int = 10_000,
        on_drop: Callable[[str], None] | None = None,
        *,
        dead_letter: str | Path | None = None,
        on_dead_letter: Callable[[str], None] | None = None,
        on_connected: Callable[[str, bool], None] | None = None,
        max_attempts: int = MAX_SEND_ATTEMPTS,
        drain_s: float = DRAIN_S,
        timeout: float = OPERATION_TIMEOUT_S,
        backoff: Backoff | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        if queue_size < 1 or max_attempts < 1 or drain_s < 0:
            raise ValueError("need queue_size >= 1, max_attempts >= 1 and drain_s >= 0")
        self.endpoint = endpoint
        self.name = f"mqtt:{endpoint.host}:{endpoint.port}"
        self.queue_size = queue_size
        self.max_attempts = max_attempts
        self.drain_s = drain_s
        self.timeout = timeout
        self.tls_context = tls_context
        self.dead_letter = Path(dead_letter) if dead_letter is not None else None
        #: Alarms still queued when the sink was last closed.
        self.unsent = 0
        self._on_drop = on_drop
        self._on_dead_letter = on_dead_letter
        self._on_connected = on_connected
        self._backoff = backoff if backoff is not None else Backoff()
        self._queue: deque[_Outgoing] = deque()
        self._inflight: _Outgoing | None = None
        self._nonempty = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._active: dict[str, dict[str, dict[str, Any]]] = {}
        self._connected = False
        self._task: asyncio.Task[None] | None = None
        self._throttle = RateLimitedLog(log, every=LOG_EVERY_S)

    @property
    def is_connected(self) -> bool:
        return self._connected

    @property
    def queued(self) -> int:
        """Publishes waiting (alarms and retained state updates)."""
        return len(self._queue)

    async def __aenter__(self) -> Self:
        self.unsent = 0
        self._task = asyncio.create_task(self._run(), name=f"mqtt-sink-{self.endpoint}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is None:
            return
        if self._connected and self._queue:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout=self.drain_s)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None
        self._inflight = None
        self.unsent = sum(1 for it in self._queue if it.alarm is not None and not it.alarm_sent)
        if self._queue:
            log.warning(
                "MQTT alarm sink %s closed with %d alarms (%d publishes in all) still queued for this broker; "
                "they were not delivered over MQTT and remain only in the journal, if one is configured",
                self.endpoint,
                self.unsent,
                len(self._queue),
            )

    async def send(self, alarm: Alarm) -> None:
        """Queue an alarm; never blocks. One that cannot be a topic is dead-lettered at once."""
        if not (safe_topic_level(alarm.stream_id) and safe_topic_level(alarm.event)):
            self._dead_letter(alarm, alarm.stream_id, "stream id or event is not a safe MQTT topic level")
            return
        self._apply(alarm)
        self._enqueue(_Outgoing(alarm.stream_id, alarm))

    async def send_strip(self, strip: Strip) -> None:
        """Queue a strip behind its alarm (QoS 1, not retained); never blocks."""
        sid = strip.alarm.stream_id
        if not safe_topic_level(sid):
            self._dead_letter(None, sid, "stream id is not a safe MQTT topic level")
            return
        self._enqueue(_Outgoing(sid, None, strip=strip.to_json().encode()))

    def restore(self, alarms: Iterable[Alarm]) -> None:
        """Seed the retained state after a restart: ``alarms`` are the latest per (stream, event)
        from the journal. Active ones are remembered, resolved ones cleared, and one retained
        state publish per stream is queued, so a stale retained "active" is corrected.
        """
        streams: dict[str, None] = {}
        for alarm in alarms:
            if not (safe_topic_level(alarm.stream_id) and safe_topic_level(alarm.event)):
                log.warning("not restoring an alarm with an unsafe stream id or event: %r", alarm.stream_id)
                continue
            self._apply(alarm)
            streams[alarm.stream_id] = None
        for stream_id in streams:
            self._enqueue(_Outgoing(stream_id, None))

    def _apply(self, alarm: Alarm) -> None:
        active = self._active.setdefault(alarm.stream_id, {})
        if alarm.state == AlarmState.RESOLVED.value:
            active.pop(alarm.event, None)
        else:
            active[alarm.event] = json.loads(alarm.to_json())

    def _state_payload(self, stream_id: str) -> bytes:
        active = self._active.get(stream_id, {})
        if not active:
            self._active.pop(stream_id, None)
        return json.dumps({"stream_id": stream_id, "active": active}).encode()

    def _enqueue(self, item: _Outgoing) -> None:
        if len(self._queue) >= self.queue_size:
            # Drop the oldest that is not being published right now.
            victim = self._queue[1] if self._queue[0] is self._inflight and len(self._queue) > 1 else self._queue[0]
            self._queue.remove(victim)
            if victim is self._inflight:
                self._inflight = None
            self._throttle.log(logging.WARNING, "full", "MQTT alarm queue of %s full; dropped the oldest", self.name)
            if victim.alarm is not None and not victim.alarm_sent and self._on_drop is not None:
                self._on_drop(self.name)
        self._queue.append(item)
        self._idle.clear()
        self._nonempty.set()

    def _remove(self, item: _Outgoing) -> None:
        if self._queue and self._queue[0] is item:
            self._queue.popleft()
        elif item in self._queue:
            self._queue.remove(item)
        if not self._queue:
            self._idle.set()

    def _dead_letter(self, alarm: Alarm | None, stream_id: str, reason: str) -> None:
        if alarm is not None and self.dead_letter is not None:
            try:
                fd = os.open(self.dead_letter, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
                with os.fdopen(fd, "a", encoding="utf-8") as fh:
                    fh.write(alarm.to_json() + "\n")
            except OSError as exc:
                self._throttle.log(
                    logging.ERROR, "dead-letter-io", "could not write dead letter %s: %s", self.dead_letter, exc
                )
        self._throttle.log(
            logging.ERROR,
            "dead-letter",
            "MQTT alarm sink %s dead-lettered %s for stream %r: %s",
            self.name,
            f"a {alarm.event} {alarm.state} alarm" if alarm is not None else "a retained state update or a strip",
            stream_id,
            reason,
        )
        if self._on_dead_letter is not None:
            self._on_dead_letter(self.name)

    def _charge_inflight(self) -> None:
        """The connection failed with ``_inflight`` on the wire: count it; dead-letter it at the limit."""
        item, self._inflight = self._inflight, None
        if item is None:
            return
        item.failures += 1
        if item.failures >= self.max_attempts:
            self._remove(item)
            self._dead_letter(
                item.alarm if not item.alarm_sent else None,
                item.stream_id,
                f"in flight when the connection failed {item.failures} times",
            )

    def _set_connected(self, connected: bool) -> None:
        if connected != self._connected:
            self._connected = connected
            if connected:
                log.info("MQTT alarm sink connected to %s (%d queued)", self.endpoint, len(self._queue))
            if self._on_connected is not None:
                self._on_connected(self.name, connected)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                up_since: float | None = None
                try:
                    async with client_for(self.endpoint, timeout=self.timeout, tls_context=self.tls_context) as client:
                        up_since = loop.time()
                        self._set_connected(True)
                        await self._session(client)
                except Exception as exc:
                    # Anything, not only MqttError: this task is the sink, and if it ended, alarms
                    # would only queue here, unsent, with nobody told. A message that keeps failing
                    # is charged like one lost with its connection and dead-lettered at the limit.
                    self._set_connected(False)
                    self._charge_inflight()
                    delay = self._backoff.after(None if up_since is None else loop.time() - up_since)
                    level, key, why, trace = session_failure(exc)
                    self._throttle.log(
                        level,
                        key,
                        "MQTT alarm sink %s: %s; %d queued; retrying in %.2fs",
                        self.endpoint,
                        why,
                        len(self._queue),
                        delay,
                        exc_info=trace,
                    )
                    await asyncio.sleep(delay)
        finally:
            self._set_connected(False)

    async def _session(self, client: aiomqtt.Client) -> None:
        """Publish until the connection fails. A watcher on the (empty) message stream notices a
        disconnect at once, even mid-publish, where a QoS 1 publish would wait for its timeout.
        """
        pump = asyncio.create_task(self._pump(client))
        watch = asyncio.create_task(self._watch(client))
        try:
            done, _ = await asyncio.wait((pump, watch), return_when=asyncio.FIRST_COMPLETED)
        finally:
            pump.cancel()
            watch.cancel()
            await asyncio.gather(pump, watch, return_exceptions=True)
        for task in done:
            task.result()
        raise aiomqtt.MqttError("MQTT session ended")

    @staticmethod
    async def _watch(client: aiomqtt.Client) -> None:
        async for _ in client.messages:  # nothing is subscribed: this only raises on disconnect
            pass

    async def _pump(self, client: aiomqtt.Client) -> None:
        while True:
            while not self._queue:
                self._nonempty.clear()
                await self._nonempty.wait()
            item = self._queue[0]
            self._inflight = item
            try:
                await self._publish(client, item)
            except aiomqtt.MqttError as exc:
                if _never_sent(exc):
                    self._inflight = None
                raise
            except (ValueError, TypeError) as exc:  # paho refused the message itself
                self._inflight = None
                self._remove(item)
                alarm = item.alarm if not item.alarm_sent else None
                self._dead_letter(alarm, item.stream_id, f"refused by the MQTT client: {exc}")
                continue
            self._inflight = None
            self._remove(item)

    async def _publish(self, client: aiomqtt.Client, item: _Outgoing) -> None:
        if item.strip is not None:
            await client.publish(strips_topic(item.stream_id), item.strip, qos=1)
            return
        if item.alarm is not None and not item.alarm_sent:
            await client.publish(alarms_topic(item.stream_id), item.alarm.to_json().encode(), qos=1)
            item.alarm_sent = True
        await client.publish(alarm_state_topic(item.stream_id), self._state_payload(item.stream_id), qos=1, retain=True)
