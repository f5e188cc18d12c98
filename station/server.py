"""``ecg-monitor station``: watch one or more daemons and serve the central-station page.

A separate process from the daemons, so one station watches several shards and a station that
fails never touches a monitor. ``Station`` is an async context manager that owns its tasks: one
feed per daemon URL (reconnecting for ever; its health shown on the page) and the HTTP server.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import uvicorn

from monitor.transports.tls import MqttSecurity
from protocol.urls import parse_url, redact_url
from simulators.subscribe import messages_from
from station.state import StationState
from station.web import StationApp

log = logging.getLogger(__name__)

#: A feed that failed waits this long before it connects again.
RETRY_S = 2.0
HOUSEKEEPING_S = 5.0


class StationError(ValueError):
    """A bad station setting."""


@dataclass(frozen=True, slots=True)
class StationConfig:
    sources: tuple[str, ...] = ("tcp://127.0.0.1:5556",)
    host: str = "127.0.0.1"
    port: int = 8080
    insecure: bool = False  # serve the page beyond loopback (it has no login: put a proxy in front)
    mqtt: MqttSecurity | None = None
    curve_server: str | None = None
    curve_secret: str | None = None

    def __post_init__(self) -> None:
        if not self.sources:
            raise StationError("--from: at least one daemon URL is needed")
        for url in self.sources:
            try:
                parse_url(url)
            except ValueError as exc:
                raise StationError(f"--from: {exc}") from None
        if not 0 <= self.port <= 65535:
            raise StationError(f"--http: port {self.port} is not 0-65535")
        if not self.insecure and not _loopback(self.host):
            raise StationError(
                f"--http: {self.host} is not a loopback address; the station page has no login, so serve it "
                "behind an authenticating proxy and pass --insecure to bind it there"
            )


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_http(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (or ``PORT``) -> (host, port)."""
    host, _, port = value.rpartition(":")
    try:
        return host or "127.0.0.1", int(port)
    except ValueError:
        raise StationError(f"--http: expected HOST:PORT, got {value!r}") from None


@dataclass(slots=True)
class _Feed:
    url: str
    connected: bool = False
    messages: int = 0
    last_at: float | None = None
    error: str = ""


class Station:
    def __init__(self, config: StationConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.clock = clock
        self.state = StationState()
        self.feeds = [_Feed(url) for url in config.sources]
        self.web = StationApp(self.state, clock, self._sources)
        self.port = config.port
        self._server: uvicorn.Server | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}/"

    async def __aenter__(self) -> Self:
        self._tg = asyncio.TaskGroup()
        await self._tg.__aenter__()
        for feed in self.feeds:
            self._tasks.append(self._tg.create_task(self._follow(feed), name=f"station-feed-{redact_url(feed.url)}"))
        self._tasks.append(self._tg.create_task(self._housekeeping(), name="station-housekeeping"))
        cfg = uvicorn.Config(
            self.web.app,
            host=self.config.host,
            port=self.config.port,
            log_level="warning",
            lifespan="off",
            ws="websockets-sansio",
        )
        self._server = uvicorn.Server(cfg)
        serving = self._tg.create_task(self._server.serve(), name="station-http")
        while not self._server.started:
            if serving.done():  # could not bind: say so, do not hang
                await self.__aexit__(None, None, None)
                raise OSError(f"station: cannot serve on {self.config.host}:{self.config.port}")
            await asyncio.sleep(0.05)
        for server in self._server.servers:
            for sock in server.sockets:
                self.port = sock.getsockname()[1]
        log.info("station on %s watching %s", self.url, ", ".join(redact_url(u) for u in self.config.sources))
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._server is not None:
            self._server.should_exit = True
        for t in self._tasks:
            t.cancel()
        if self._tg is not None:
            tg, self._tg = self._tg, None
            with suppress(Exception):
                await tg.__aexit__(None, None, None)

    def _sources(self) -> list[dict[str, Any]]:
        now = self.clock()
        return [
            {
                "url": redact_url(f.url),
                "connected": f.connected,
                "messages": f.messages,
                "silent_s": None if f.last_at is None else round(now - f.last_at, 1),
                "error": f.error,
            }
            for f in self.feeds
        ]

    async def _follow(self, feed: _Feed) -> None:
        """One daemon's alarms, strips and telemetry, for ever; a failure is shown and retried."""
        cfg = self.config
        while True:
            ready = asyncio.Event()
            waiter = asyncio.create_task(ready.wait())
            waiter.add_done_callback(lambda _t: setattr(feed, "connected", True))
            try:
                async for msg in messages_from(
                    feed.url,
                    ready,
                    kinds=("alarm", "strip", "telemetry"),
                    mqtt=cfg.mqtt,
                    curve_server=cfg.curve_server,
                    curve_secret=cfg.curve_secret,
                ):
                    feed.messages += 1
                    feed.last_at = self.clock()
                    feed.error = ""
                    try:
                        self.state.on_message(msg, feed.url, feed.last_at)
                    except Exception as exc:  # one odd message must not stop the feed
                        log.warning("station: a message from %s was not shown: %s", redact_url(feed.url), exc)
            except (OSError, ValueError) as exc:
                feed.error = str(exc)
                log.warning("station feed %s failed: %s; retrying in %.0f s", redact_url(feed.url), exc, RETRY_S)
            finally:
                waiter.cancel()
                feed.connected = False
            await asyncio.sleep(RETRY_S)

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(HOUSEKEEPING_S)
            gone = self.state.forget_silent(self.clock())
            if gone:
                log.info("station: %d silent beds left the page", gone)


async def run_station(config: StationConfig, stop: asyncio.Event, on_ready: Callable[[str], None] | None = None) -> int:
    """Serve until ``stop`` is set; ``on_ready(url)`` once the page is up."""
    async with Station(config) as st:
        if on_ready is not None:
            on_ready(st.url)
        await stop.wait()
    return 0
