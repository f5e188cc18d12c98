"""The transport protocols. A source yields raw frames; a sink sends alarms."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol, Self, runtime_checkable

from protocol.alarm import Alarm
from protocol.strip import Strip, Telemetry


@dataclass(frozen=True, slots=True)
class RawFrame:
    """Bytes off the wire; ``stream_hint`` is the stream id a transport names (an MQTT topic).

    ``sender`` is the authenticated peer (a CURVE certificate name) and ``allowed`` the stream ids
    it may send (fullmatch); ``allowed`` None means any stream.
    """

    payload: bytes
    stream_hint: str | None = None
    sender: str | None = None
    allowed: re.Pattern[str] | None = None


@runtime_checkable
class SampleSource(Protocol):
    name: str

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def frames(self) -> AsyncIterator[RawFrame]: ...


@runtime_checkable
class AlarmSink(Protocol):
    name: str

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def send(self, alarm: Alarm) -> None: ...


@runtime_checkable
class StripSink(Protocol):
    """An alarm sink that also carries strips (sent after their alarm, in the same queue)."""

    async def send_strip(self, strip: Strip) -> None: ...


@runtime_checkable
class TelemetrySink(Protocol):
    """Takes the per-bed screen feed. Never blocks and never queues much: telemetry that cannot
    go now is dropped (``send_telemetry`` returns False; the daemon counts it), since the next
    second supersedes it."""

    name: str

    def send_telemetry(self, telemetry: Telemetry) -> bool: ...
