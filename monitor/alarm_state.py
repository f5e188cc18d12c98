"""The set of active alarms, persisted next to the journal so a restarted daemon continues them.

Without it a daemon killed with alarms active comes back with none: the same episodes are
raised again as new onsets with new onset times, and the old ones are never resolved. The
state file is the fast path; the journal (with its rotated backups) is the fallback and the
truth, so a missing, stale or corrupt state file still gives the right set.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any, Final

from protocol.alarm import STATES, Alarm, AlarmState

log = logging.getLogger(__name__)

#: Version of the state file layout.
STATE_SCHEMA: Final = 1
#: Mode of every file the journal writes: owner read/write, group read, nothing for others.
FILE_MODE: Final = 0o640


class ActiveAlarms:
    """Active alarms keyed by (stream_id, event); the latest message of each episode is kept."""

    def __init__(self, alarms: Iterable[Alarm] = ()) -> None:
        self._active: dict[tuple[str, str], Alarm] = {}
        for a in alarms:
            self.update(a)

    def update(self, alarm: Alarm) -> bool:
        """Apply one alarm message. True if the set changed: an episode began, ended or restarted.

        An ``ongoing`` of a known episode only refreshes the stored message (False), so callers
        that persist on change write on onsets and resolutions, not on every repeat.
        """
        key = (alarm.stream_id, alarm.event)
        if alarm.state == AlarmState.RESOLVED:
            return self._active.pop(key, None) is not None
        if alarm.state not in STATES:
            raise ValueError(f"alarm state {alarm.state!r}: expected one of {sorted(STATES)}")
        prev = self._active.get(key)
        self._active[key] = alarm
        return prev is None or prev.onset_time != alarm.onset_time

    def alarms(self) -> list[Alarm]:
        """The active alarms, ordered by stream then event."""
        return [self._active[k] for k in sorted(self._active)]

    def __len__(self) -> int:
        return len(self._active)


def state_path(journal: str | Path) -> Path:
    """Where the active set of ``journal`` is kept: the journal's path + ``.active.json``."""
    journal = Path(journal)
    return journal.with_name(journal.name + ".active.json")


def parse_alarm(obj: object) -> Alarm:
    """An ``Alarm`` from a decoded JSON object, checking names and types; ValueError if bad."""
    return Alarm.from_dict(obj)


def _write_file(path: Path, data: bytes) -> None:
    """Create or truncate ``path`` with FILE_MODE (tightened if it already exists wider) and fsync it."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, FILE_MODE)
    try:
        tighten_mode(fd)
        view = memoryview(data)
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)


def tighten_mode(fd: int) -> None:
    """Drop group-write and all 'other' bits from an existing file that has them."""
    mode = os.fstat(fd).st_mode & 0o7777
    if mode & ~FILE_MODE:
        os.fchmod(fd, mode & FILE_MODE)


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable; a no-op where directories cannot be opened or synced."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def save_state(
    path: str | Path,
    alarms: Iterable[Alarm],
    *,
    journal_pos: tuple[int, int] | None = None,
    saved_at: float | None = None,
) -> None:
    """Write the active set atomically: a temp file in the same folder, fsync, rename, fsync dir.

    ``journal_pos`` = (inode, byte offset) of the journal just after the last line this state
    reflects; ``load_state`` replays journal lines written after it (a crash between writing a
    line and saving the state loses nothing). Raises OSError; callers decide how loud to be.
    """
    path = Path(path)
    doc: dict[str, Any] = {
        "schema": STATE_SCHEMA,
        "saved_at": time.time() if saved_at is None else saved_at,
        "active": [asdict(a) for a in alarms],
    }
    if journal_pos is not None:
        doc["journal"] = {"inode": journal_pos[0], "offset": journal_pos[1]}
    tmp = path.with_name(path.name + ".tmp")
    _write_file(tmp, (json.dumps(doc, separators=(",", ":")) + "\n").encode())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def journal_files(journal: str | Path) -> list[Path]:
    """The journal and its rotated backups (``.1`` newest ... ``.N`` oldest), oldest first."""
    journal = Path(journal)
    pat = re.compile(re.escape(journal.name) + r"\.([0-9]+)")
    backups: list[tuple[int, Path]] = []
    with contextlib.suppress(OSError):
        for p in journal.parent.iterdir():
            m = pat.fullmatch(p.name)
            if m:
                backups.append((int(m.group(1)), p))
    out = [p for _, p in sorted(backups, reverse=True)]
    if journal.exists():
        out.append(journal)
    return out


def _journal_lines(path: Path, offset: int = 0) -> Iterator[bytes]:
    with path.open("rb") as f:
        f.seek(offset)
        yield from f


class _Replay:
    """Applies journal lines to an ActiveAlarms, counting the lines that are not alarms."""

    def __init__(self, active: ActiveAlarms) -> None:
        self.active = active
        self.bad = 0
        self.unreadable: list[str] = []

    def file(self, path: Path, offset: int = 0) -> None:
        try:
            for raw in _journal_lines(path, offset):
                if not raw.strip():
                    continue
                try:
                    alarm = parse_alarm(json.loads(raw))
                except ValueError:  # includes JSONDecodeError and UnicodeDecodeError
                    self.bad += 1
                    continue
                self.active.update(alarm)
        except OSError as e:
            self.unreadable.append(f"{path}: {e.strerror or e}")

    def report(self, journal: Path) -> None:
        if self.bad:
            log.warning("journal %s: skipped %d lines that are not valid alarms", journal, self.bad)
        for msg in self.unreadable:
            log.warning("journal backup unreadable, active alarms may be incomplete: %s", msg)


def _read_state(path: Path) -> tuple[list[Alarm], tuple[int, int] | None]:
    """The alarms and journal position in a state file; ValueError naming the problem if corrupt."""
    try:
        doc = json.loads(path.read_bytes())
    except ValueError as e:
        raise ValueError(f"not JSON ({e})") from None
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    if doc.get("schema") != STATE_SCHEMA:
        raise ValueError(f"schema {doc.get('schema')!r}, expected {STATE_SCHEMA}")
    items = doc.get("active")
    if not isinstance(items, list):
        raise ValueError("'active' is not a list")
    alarms = []
    for i, item in enumerate(items):
        try:
            alarms.append(parse_alarm(item))
        except ValueError as e:
            raise ValueError(f"active[{i}]: {e}") from None
    pos = None
    j = doc.get("journal")
    if isinstance(j, dict):
        ino, off = j.get("inode"), j.get("offset")
        if isinstance(ino, int) and isinstance(off, int) and off >= 0:
            pos = (ino, off)
    return alarms, pos


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def load_state(journal: str | Path) -> list[Alarm]:
    """The alarms active when the daemon writing ``journal`` last ran. Never raises on bad content.

    Reads the state file and replays any journal lines written after it. If the state file is
    missing or corrupt (a warning names the problem), rebuilds the set from the journal and its
    rotated backups, oldest first; lines that are not alarms are skipped and counted.
    """
    journal = Path(journal)
    sp = state_path(journal)
    files = journal_files(journal)
    active = ActiveAlarms()
    replay = _Replay(active)
    try:
        alarms, pos = _read_state(sp)
    except FileNotFoundError:
        if any(_size(f) for f in files):  # a journal with content but no state: worth a word
            log.warning("alarm state %s is missing; rebuilding active alarms from the journal", sp)
        files_from = 0
    except (OSError, ValueError) as e:
        problem = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        log.warning("alarm state %s is unreadable (%s); rebuilding active alarms from the journal", sp, problem)
        files_from = 0
    else:
        for a in alarms:
            active.update(a)
        files_from = len(files)  # the state alone, unless the journal moved on since it was saved
        if pos is not None:
            ino, off = pos
            files_from = 0  # its journal file was rotated away: replay all, on top of the state
            for i, f in enumerate(files):
                try:
                    st = f.stat()
                except OSError:
                    continue
                if st.st_ino == ino:
                    replay.file(f, off if off <= st.st_size else 0)
                    files_from = i + 1
                    break
    for f in files[files_from:]:
        replay.file(f)
    replay.report(journal)
    return active.alarms()
