"""MQTT through aiomqtt: subscribe to sample frames, publish alarms. Reconnects with backoff."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Self

import aiomqtt

from monitor.alarms import Alarm, AlarmState
from monitor.transports.base import RawFrame
from monitor.urls import Endpoint

log = logging.getLogger(__name__)

BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0


def client_for(endpoint: Endpoint, identifier: str | None = None) -> aiomqtt.Client:
    """An aiomqtt client for ``mqtt://`` or ``mqtts://`` (system CA store for TLS)."""
    tls: ssl.SSLContext | None = ssl.create_default_context() if endpoint.scheme == "mqtts" else None
    return aiomqtt.Client(
        endpoint.host,
        endpoint.port,
        username=endpoint.username,
        password=endpoint.password,
        identifier=identifier,
        tls_context=tls,
        timeout=10,
    )


def stream_of_topic(topic: str) -> str | None:
    """'ecg/<stream>/samples' -> '<stream>'."""
    parts = topic.split("/")
    return parts[1] if len(parts) == 3 else None


class MqttSource:
    """Subscribes to ``ecg/+/samples``; the topic's stream id must match the frame's."""

    def __init__(self, endpoint: Endpoint, topic: str = "ecg/+/samples") -> None:
        self.endpoint = endpoint
        self.topic = topic
        self.name = "mqtt"
        self.connected = asyncio.Event()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.connected.clear()

    async def frames(self) -> AsyncIterator[RawFrame]:
        backoff = BACKOFF_START_S
        while True:
            try:
                async with client_for(self.endpoint) as client:
                    await client.subscribe(self.topic, qos=0)
                    log.info("MQTT ingest subscribed to %s on %s", self.topic, self.endpoint)
                    self.connected.set()
                    backoff = BACKOFF_START_S
                    async for msg in client.messages:
                        payload = msg.payload
                        if not isinstance(payload, (bytes, bytearray)):
                            payload = str(payload).encode()
                        yield RawFrame(bytes(payload), stream_of_topic(msg.topic.value))
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                log.warning("MQTT ingest %s lost (%s); retrying in %.1fs", self.endpoint, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)


class MqttAlarmSink:
    """Publishes each alarm on ``ecg/<stream>/alarms`` (QoS 1) and retains the stream's current
    alarm state on ``ecg/<stream>/alarms/state``. Messages wait in a bounded queue while the
    broker is away; when it is full the oldest is dropped and counted.
    """

    def __init__(self, endpoint: Endpoint, queue_size: int = 10_000, on_drop: Any = None) -> None:
        self.endpoint = endpoint
        self.name = f"mqtt:{endpoint.host}:{endpoint.port}"
        self._queue: asyncio.Queue[Alarm] = asyncio.Queue(queue_size)
        self._task: asyncio.Task[None] | None = None
        self._active: dict[str, dict[str, dict[str, Any]]] = {}
        self._on_drop = on_drop
        self.connected = asyncio.Event()

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name=f"mqtt-sink-{self.endpoint}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is None:
            return
        if self.connected.is_set():
            try:
                await asyncio.wait_for(self._queue.join(), timeout=5.0)
            except TimeoutError:
                log.warning("MQTT alarm sink closed with %d alarms unsent", self._queue.qsize())
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    async def send(self, alarm: Alarm) -> None:
        if self._queue.full():
            self._queue.get_nowait()
            self._queue.task_done()
            log.warning("MQTT alarm queue full; dropped the oldest alarm")
            if self._on_drop is not None:
                self._on_drop(self.name)
        self._queue.put_nowait(alarm)

    def _state_payload(self, alarm: Alarm) -> bytes:
        active = self._active.setdefault(alarm.stream_id, {})
        if alarm.state == AlarmState.RESOLVED.value:
            active.pop(alarm.event, None)
        else:
            active[alarm.event] = json.loads(alarm.to_json())
        return json.dumps({"stream_id": alarm.stream_id, "active": active}).encode()

    async def _run(self) -> None:
        backoff = BACKOFF_START_S
        while True:
            try:
                async with client_for(self.endpoint) as client:
                    self.connected.set()
                    backoff = BACKOFF_START_S
                    while True:
                        alarm = await self._queue.get()
                        try:
                            base = f"ecg/{alarm.stream_id}/alarms"
                            await client.publish(base, alarm.to_json().encode(), qos=1)
                            await client.publish(base + "/state", self._state_payload(alarm), qos=1, retain=True)
                        except aiomqtt.MqttError:
                            # Put it back at the front of the line: nothing is lost on reconnect.
                            self._requeue(alarm)
                            raise
                        finally:
                            self._queue.task_done()
            except aiomqtt.MqttError as exc:
                self.connected.clear()
                log.warning("MQTT alarm sink %s lost (%s); retrying in %.1fs", self.endpoint, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX_S)

    def _requeue(self, alarm: Alarm) -> None:
        items = [alarm]
        while not self._queue.empty():
            items.append(self._queue.get_nowait())
            self._queue.task_done()
        for it in items[: self._queue.maxsize]:
            self._queue.put_nowait(it)
