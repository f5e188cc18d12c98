"""A JSON-lines alarm journal on local disk, so no alarm is lost while nobody listens."""

from __future__ import annotations

import os
from pathlib import Path
from types import TracebackType
from typing import IO, Self

from monitor.alarms import Alarm


class JournalSink:
    """Appends one JSON object per line and flushes each one; fsyncs on close."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.name = "journal"
        self._fh: IO[str] | None = None

    async def __aenter__(self) -> Self:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = self.path.open("a", encoding="utf-8")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None

    async def send(self, alarm: Alarm) -> None:
        assert self._fh is not None
        self._fh.write(alarm.to_json() + "\n")
        self._fh.flush()
