"""Screen telemetry over MQTT: ``ecg/<stream>/telemetry``, QoS 0, on a connection of its own.

Telemetry is a stream that supersedes itself every second, so it must never compete with alarms:
it has its own client (a burst of 500 beds never sits in front of an alarm's PUBACK) and a small
bounded queue; while the broker is away, new telemetry is refused and counted, not stored.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections import deque
from types import TracebackType
from typing import Self

from monitor.ratelimit import RateLimitedLog
from monitor.transports.backoff import Backoff
from monitor.transports.mqtt_transport import LOG_EVERY_S, OPERATION_TIMEOUT_S, client_for, session_failure
from protocol.strip import Telemetry
from protocol.topics import telemetry_topic
from protocol.urls import Endpoint

log = logging.getLogger(__name__)


class MqttTelemetrySink:
    def __init__(
        self,
        endpoint: Endpoint,
        queue_size: int = 2000,
        *,
        timeout: float = OPERATION_TIMEOUT_S,
        backoff: Backoff | None = None,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.name = f"mqtt-telemetry:{endpoint.host}:{endpoint.port}"
        self.queue_size = queue_size
        self.timeout = timeout
        self.tls_context = tls_context
        self._backoff = backoff if backoff is not None else Backoff()
        self._queue: deque[tuple[str, bytes]] = deque()
        self._nonempty = asyncio.Event()
        self._connected = False
        self._task: asyncio.Task[None] | None = None
        self._throttle = RateLimitedLog(log, every=LOG_EVERY_S)

    async def __aenter__(self) -> Self:
        self._task = asyncio.create_task(self._run(), name=f"mqtt-telemetry-{self.endpoint}")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        self._queue.clear()

    def send_telemetry(self, telemetry: Telemetry) -> bool:
        if not self._connected or len(self._queue) >= self.queue_size:
            return False
        self._queue.append((telemetry_topic(telemetry.stream_id), telemetry.to_json().encode()))
        self._nonempty.set()
        return True

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            up_since: float | None = None
            try:
                async with client_for(self.endpoint, timeout=self.timeout, tls_context=self.tls_context) as client:
                    up_since = loop.time()
                    self._connected = True
                    while True:
                        while not self._queue:
                            self._nonempty.clear()
                            await self._nonempty.wait()
                        topic, payload = self._queue.popleft()
                        await client.publish(topic, payload, qos=0)
            except Exception as exc:  # never let the feed's only task end: retry, loudly if unexpected
                self._connected = False
                self._queue.clear()  # stale by the time the broker is back
                delay = self._backoff.after(None if up_since is None else loop.time() - up_since)
                level, key, why, trace = session_failure(exc)
                self._throttle.log(
                    level, key, "MQTT telemetry %s: %s; retrying in %.2fs", self.endpoint, why, delay, exc_info=trace
                )
                await asyncio.sleep(delay)
            finally:
                self._connected = False
