"""Alarm strips kept beside the journal: ``<journal>.strips/<strip id>.json``, one file per strip.

One file per strip, named by its id, so ``ecg-monitor strip FILE`` renders any of them and an
alarm line in the journal finds its ECG by its ``strip_id``. The folder is bounded by count (the
oldest files go first); writes run in a thread, and a failing disk is logged and counted, never
raised, as for the journal itself.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Self

from monitor.alarm_state import FILE_MODE
from monitor.ratelimit import RateLimitedLog
from protocol.alarm import Alarm
from protocol.strip import Strip

log = logging.getLogger(__name__)


def strips_dir(journal: str | Path) -> Path:
    return Path(f"{journal}.strips")


class StripStore:
    """A sink for strips only (alarms go to the journal itself)."""

    name = "strips"

    def __init__(self, folder: str | Path, *, keep: int = 2000, on_error: Callable[[str], None] | None = None) -> None:
        if keep < 1:
            raise ValueError(f"strip store keep: {keep} must be >= 1")
        self.folder = Path(folder)
        self.keep = keep
        self._on_error = on_error or (lambda kind: None)
        self._limited = RateLimitedLog(log)
        self._files: list[Path] = []

    async def __aenter__(self) -> Self:
        self.folder.mkdir(mode=0o750, parents=True, exist_ok=True)
        self._files = sorted(self.folder.glob("*.json"), key=lambda p: p.stat().st_mtime)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def send(self, alarm: Alarm) -> None:
        return None  # the journal keeps the alarm line

    async def send_strip(self, strip: Strip) -> None:
        path = self.folder / f"{strip.strip_id}.json"
        try:
            await asyncio.to_thread(_write, path, strip.to_json().encode())
        except OSError as e:
            self._on_error("strip")
            self._limited.log(logging.ERROR, "write", "strip store %s: %s not written (%s)", self.folder, path.name, e)
            return
        self._files.append(path)
        while len(self._files) > self.keep:
            old = self._files.pop(0)
            try:
                old.unlink(missing_ok=True)
            except OSError as e:
                self._limited.log(
                    logging.WARNING, "prune", "strip store %s: could not remove %s (%s)", self.folder, old, e
                )


def _write(path: Path, data: bytes) -> None:
    """Write whole or not at all: a reader never sees half a strip."""
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)
