"""A JSON-lines alarm journal on local disk, so no alarm is lost while nobody listens.

The journal is the local record: checked at start (the daemon refuses to run without it),
private (mode 0640), rotated by size, durable within ``fsync_interval_s``, and loud but
never fatal when the disk fails: lines that cannot be written wait in a bounded backlog and
go out, in order, once the disk takes them again. Next to it the sink keeps the set of active
alarms (``monitor.alarm_state``) so a restarted daemon continues them instead of raising
them again.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import math
import os
import stat
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from monitor.alarm_state import FILE_MODE, ActiveAlarms, load_state, save_state, state_path, tighten_mode
from monitor.ratelimit import RateLimitedLog
from protocol.alarm import Alarm

log = logging.getLogger(__name__)

_T = TypeVar("_T")

#: Below this much free space on the journal's filesystem at start the daemon refuses to run.
MIN_FREE_BYTES = 1 << 20
#: After a failed rotation, the journal grows past max_bytes this long before the next try.
ROTATE_RETRY_S = 60.0


def open_append(path: Path) -> int:
    """The default opener: append-only, created with FILE_MODE, not inherited by children."""
    return os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)


class JournalSink:
    """Appends one JSON line per alarm and keeps the active-alarm state file beside it.

    Each line goes to the kernel with one ``os.write`` on an unbuffered append descriptor, so
    a crash of the process loses nothing written; ``os.fsync`` (tens of ms on a busy disk)
    runs in a worker thread at most every ``fsync_interval_s`` and on close, bounding what a
    power failure can lose; so does the rewrite of the state file, whose gap the journal's own
    lines fill on a restart. The append itself stays on the event loop: it is one small
    syscall into the page cache, and alarms are rare.

    ``send`` never raises on I/O errors. A failed line stays in a backlog of at most
    ``backlog_max`` lines (the oldest dropped when full) and is retried before the next line
    and every ``fsync_interval_s``. ``on_error(kind)`` counts: ``write`` (a line not written
    when sent), ``dropped`` (a line lost: backlog full, or still unwritten at close),
    ``state`` (state file not saved), ``rotate``, ``sync``.

    ``restored`` (after entering) holds the alarms that were active when the previous daemon
    stopped, for the daemon to continue. ``opener`` returns a writable fd for the path (for
    special files and tests).
    """

    name = "journal"

    def __init__(
        self,
        path: str | Path,
        *,
        max_bytes: int = 64 << 20,
        backups: int = 5,
        fsync_interval_s: float = 1.0,
        backlog_max: int = 10_000,
        on_error: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        opener: Callable[[Path], int] = open_append,
        min_free_bytes: int = MIN_FREE_BYTES,
    ) -> None:
        if max_bytes < 1024:
            raise ValueError(f"journal max_bytes: {max_bytes} is below 1024")
        if backups < 0:
            raise ValueError(f"journal backups: {backups} is negative")
        if not fsync_interval_s >= 0:
            raise ValueError(f"journal fsync_interval_s: {fsync_interval_s} must be >= 0")
        if backlog_max < 2:
            raise ValueError(f"journal backlog_max: {backlog_max} must be >= 2")
        self.path = Path(path)
        self.state_file = state_path(self.path)
        self.max_bytes = max_bytes
        self.backups = backups
        self.fsync_interval_s = fsync_interval_s
        self.backlog_max = backlog_max
        self.min_free_bytes = min_free_bytes
        self.restored: list[Alarm] = []
        self.fsync_count = 0
        self._on_error = on_error or (lambda kind: None)
        self._clock = clock
        self._opener = opener
        self._limited = RateLimitedLog(log, clock)
        self._fd: int | None = None
        self._regular = False
        self._ino = 0
        self._size = 0
        self._mid_line = 0  # bytes of the backlog's first line already in the file
        self._backlog: deque[bytes] = deque()
        self._failing = False
        self._rotate_after = -math.inf
        self._dirty = False
        self._last_sync = -math.inf
        self._last_state_save = -math.inf
        self._saved_pos: tuple[int, int] | None = None  # the journal place the state file names
        self._active = ActiveAlarms()
        self._state_dirty = False
        self._lock = asyncio.Lock()
        self._stop = asyncio.Event()
        self._maintainer: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Future[Any]] = set()

    @property
    def backlog(self) -> int:
        """Lines waiting in memory because the journal could not take them."""
        return len(self._backlog)

    @property
    def active(self) -> list[Alarm]:
        """The alarms active now, as the state file records them."""
        return self._active.alarms()

    # -- lifecycle ----------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        """Open and check the journal and the state file; OSError naming the path if unusable."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OSError(e.errno, f"journal {self.path}: cannot create its folder: {e.strerror or e}") from e
        try:
            self._open()
        except OSError as e:
            raise OSError(e.errno, f"journal {self.path}: cannot open for append: {e.strerror or e}") from e
        try:
            self._check_writable()
            self.restored = await asyncio.to_thread(load_state, self.path)
            self._active = ActiveAlarms(self.restored)
            path, alarms, pos = self._state_args()
            try:
                await asyncio.to_thread(partial(save_state, path, alarms, journal_pos=pos))
            except OSError as e:
                raise OSError(
                    e.errno, f"journal {self.path}: cannot write its state file {self.state_file}: {e.strerror or e}"
                ) from e
        except BaseException:
            self._close_fd()
            raise
        if self.restored:
            log.info("journal %s: %d alarms were active at the last stop", self.path, len(self.restored))
        self._stop.clear()
        self._maintainer = asyncio.create_task(self._maintain(), name="journal-maintain")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        if self._maintainer is not None:
            await asyncio.gather(self._maintainer, return_exceptions=True)
            self._maintainer = None
        async with self._lock:
            await asyncio.gather(*self._inflight, return_exceptions=True)
            await self._drain()
            if self._state_dirty:
                await self._save_state()
            if self._dirty:
                await self._sync()
            await asyncio.gather(*self._inflight, return_exceptions=True)
            self._close_fd()
            if self._backlog:
                lost = list(self._backlog)
                for _ in lost:
                    self._on_error("dropped")
                shown = b"".join(lost[:100]).decode(errors="replace")
                log.error(
                    "journal %s: %d alarm lines could not be written and are lost; the first %d:\n%s",
                    self.path,
                    len(lost),
                    min(len(lost), 100),
                    shown,
                )
                self._backlog.clear()

    async def reopen(self) -> None:
        """Close and reopen the journal path, e.g. after an outside tool moved the file away."""
        async with self._lock:
            await self._sync_if_dirty()
            if self._state_dirty:
                await self._save_state()  # the file may be moved out of the journal's backups
            self._close_fd()
            if self._try_open():
                await self._save_state()

    # -- sending ------------------------------------------------------------------------

    async def send(self, alarm: Alarm) -> None:
        """Append one alarm line; update and persist the active set if it changed. Never raises on I/O."""
        line = (alarm.to_json() + "\n").encode()
        async with self._lock:
            if self._backlog:
                await self._drain()  # the held lines first, in order
            if self._backlog:
                self._push(line)  # the disk still refuses: do not knock twice per alarm
            else:
                self._push(line)
                await self._drain()
            if self._backlog:
                self._on_error("write")
            try:
                if self._active.update(alarm):
                    self._state_dirty = True
            except ValueError as e:
                self._limited.log(logging.ERROR, "state", "journal %s: alarm not tracked as active: %s", self.path, e)
            # The state file is rewritten whole and fsynced (milliseconds, growing with the active
            # set), so at most once per fsync interval: a storm of onsets (a broker outage sends a
            # ward to NO_SIGNAL at once) would otherwise hold the journal to tens of lines a second.
            # Nothing is lost meanwhile: ``load_state`` replays the lines written after the state,
            # when the state says where they start (``_replayable``); otherwise it is saved at once.
            if self._state_dirty and (
                not self._replayable() or self._clock() - self._last_state_save >= self.fsync_interval_s
            ):
                await self._save_state()
            if self._dirty and self._clock() - self._last_sync >= self.fsync_interval_s:
                await self._sync()

    def _push(self, line: bytes) -> None:
        if len(self._backlog) >= self.backlog_max:
            # keep a line already half in the file, so the file's line stays whole
            if self._mid_line:
                del self._backlog[1]
            else:
                self._backlog.popleft()
                self._mid_line = 0
            self._on_error("dropped")
            self._limited.log(
                logging.ERROR,
                "dropped",
                "journal %s: backlog of %d lines full; dropped the oldest",
                self.path,
                self.backlog_max,
            )
        self._backlog.append(line)

    async def _drain(self) -> None:
        """Write the backlog in order until it is empty or the disk refuses."""
        if not self._backlog:
            return
        if self._fd is None and not self._try_open():
            return
        written = 0
        while self._backlog:
            data = self._backlog[0]
            if (
                self._regular
                and not self._mid_line
                and self._size
                and self._size + len(data) > self.max_bytes
                and self._clock() >= self._rotate_after
            ):
                await self._rotate()
                if self._fd is None:
                    break
            assert self._fd is not None
            try:
                n = os.write(self._fd, data[self._mid_line :])
            except OSError as e:
                self._write_failed(e)
                break
            self._size += n
            self._dirty = True
            if self._mid_line + n < len(data):
                self._mid_line += n  # a short write; the next one finishes the line or fails
                continue
            self._backlog.popleft()
            self._mid_line = 0
            written += 1
        if not self._backlog and self._failing:
            self._failing = False
            log.warning("journal %s: writable again; wrote %d held lines", self.path, written)

    def _write_failed(self, e: OSError) -> None:
        self._failing = True
        self._limited.log(
            logging.ERROR,
            "write",
            "journal %s: write failed (%s); %d lines held in memory",
            self.path,
            e.strerror or e,
            len(self._backlog),
        )
        # reopen on the next try: a fresh descriptor also recovers from a replaced or remounted file
        self._close_fd()

    # -- file handling ------------------------------------------------------------------

    def _open(self) -> None:
        fd = self._opener(self.path)
        try:
            st = os.fstat(fd)
            self._regular = stat.S_ISREG(st.st_mode)
            if self._regular:
                tighten_mode(fd)
        except OSError:
            os.close(fd)
            raise
        if st.st_ino != self._ino:
            self._mid_line = 0  # another file: a line half written to the old one is written whole
        self._fd, self._ino, self._size = fd, st.st_ino, st.st_size

    def _try_open(self) -> bool:
        try:
            self._open()
        except OSError as e:
            self._failing = True
            self._limited.log(logging.ERROR, "open", "journal %s: cannot open (%s)", self.path, e.strerror or e)
            return False
        return True

    def _close_fd(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def _check_writable(self) -> None:
        """Fail at start, not at the first alarm: a zero-byte write, an fsync and free space."""
        assert self._fd is not None
        try:
            os.write(self._fd, b"")
            if self._regular:
                os.fsync(self._fd)
        except OSError as e:
            raise OSError(e.errno, f"journal {self.path} is not writable: {e.strerror or e}") from e
        if not self._regular:
            return
        free = _free_bytes(self.path.parent)
        if free is not None and free < self.min_free_bytes:
            raise OSError(
                errno.ENOSPC,
                f"journal {self.path}: only {free} bytes free on its filesystem (need {self.min_free_bytes})",
            )
        if self._size and _last_byte(self.path) not in (b"\n", b""):
            # a line torn by a crash: end it, so the next alarm is not glued to it
            os.write(self._fd, b"\n")
            self._size += 1

    async def _rotate(self) -> None:
        """alarms.jsonl -> .1 -> ... -> .N (the oldest falls off), then a fresh file."""
        await self._sync_if_dirty()
        if self._state_dirty:
            await self._save_state()  # up to the end of this file: with no backups it is deleted
        self._close_fd()
        try:
            if self.backups == 0:
                self.path.unlink(missing_ok=True)
            else:
                for i in range(self.backups - 1, 0, -1):
                    src = self._backup(i)
                    if src.exists():
                        os.replace(src, self._backup(i + 1))
                os.replace(self.path, self._backup(1))
        except OSError as e:
            self._on_error("rotate")
            self._limited.log(
                logging.ERROR, "rotate", "journal %s: rotation failed (%s); writing on", self.path, e.strerror or e
            )
            self._rotate_after = self._clock() + ROTATE_RETRY_S  # not again on every line
        if self._try_open():
            await self._save_state()  # name the new file: its inode may be the deleted one's

    def _backup(self, i: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{i}")

    # -- durability ---------------------------------------------------------------------

    async def _in_thread(self, fn: Callable[..., _T], *args: object) -> _T:
        """Run blocking I/O in a thread; close waits for it even if the caller was cancelled."""
        fut = asyncio.ensure_future(asyncio.to_thread(fn, *args))
        self._inflight.add(fut)
        fut.add_done_callback(self._inflight.discard)
        return await asyncio.shield(fut)

    async def _sync(self) -> None:
        if self._fd is None or not self._regular:
            self._dirty = False
            return
        try:
            await self._in_thread(os.fsync, self._fd)
        except OSError as e:
            self._on_error("sync")
            self._limited.log(logging.ERROR, "sync", "journal %s: fsync failed (%s)", self.path, e.strerror or e)
            return
        self.fsync_count += 1
        self._dirty = False
        self._last_sync = self._clock()

    async def _sync_if_dirty(self) -> None:
        if self._dirty:
            await self._sync()

    def _state_args(self) -> tuple[Path, list[Alarm], tuple[int, int] | None]:
        """A snapshot taken on the loop, so the thread that writes it shares nothing mutable."""
        pos = (self._ino, self._size - self._mid_line) if self._regular and self._fd is not None else None
        return self.state_file, self._active.alarms(), pos

    def _replayable(self) -> bool:
        """Whether the lines written since the last state save can be replayed from the journal on
        a restart: the save named its place in a regular file that is still the one written to."""
        return (
            self._regular and self._fd is not None and self._saved_pos is not None and self._saved_pos[0] == self._ino
        )

    async def _save_state(self) -> None:
        self._last_state_save = self._clock()
        path, alarms, pos = self._state_args()
        self._saved_pos = None  # until this save is known to have landed
        try:
            await self._in_thread(partial(save_state, path, alarms, journal_pos=pos))
            self._state_dirty = False
            self._saved_pos = pos
        except OSError as e:
            self._state_dirty = True
            self._on_error("state")
            self._limited.log(
                logging.ERROR,
                "state",
                "journal %s: cannot save active alarms to %s (%s)",
                self.path,
                self.state_file,
                e.strerror or e,
            )

    async def _maintain(self) -> None:
        """Every ``fsync_interval_s``: fsync what was written, retry the backlog and the state file."""
        tick = self.fsync_interval_s if self.fsync_interval_s > 0 else 1.0
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), tick)
            if self._stop.is_set():
                return
            async with self._lock:
                await self._drain()
                if self._state_dirty:
                    await self._save_state()
                await self._sync_if_dirty()


def _free_bytes(folder: Path) -> int | None:
    try:
        st = os.statvfs(folder)
    except (OSError, AttributeError):
        return None
    return st.f_bavail * st.f_frsize


def _last_byte(path: Path) -> bytes:
    try:
        with path.open("rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1)
    except OSError:
        return b""
