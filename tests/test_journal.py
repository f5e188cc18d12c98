"""The alarm journal and the active-alarm state: permissions, rotation, disk failures, restarts.

Failures are real: ``/dev/full`` gives ENOSPC on every write, swapped in through the sink's
``opener`` (the function that opens the journal path), so no file object is mocked.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import os
import stat
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import pytest

from monitor.alarm_state import ActiveAlarms, journal_files, load_state, save_state, state_path
from monitor.transports.base import AlarmSink
from monitor.transports.journal import JournalSink, open_append
from protocol.alarm import Alarm

DEV_FULL = Path("/dev/full")
needs_dev_full = pytest.mark.skipif(not DEV_FULL.exists(), reason="no /dev/full on this system")


def bounded(
    seconds: float = 10.0,
) -> Callable[[Callable[..., Awaitable[None]]], Callable[..., Coroutine[Any, Any, None]]]:
    """Fail a test that runs longer than ``seconds`` instead of hanging the suite."""

    def deco(fn: Callable[..., Awaitable[None]]) -> Callable[..., Coroutine[Any, Any, None]]:
        @functools.wraps(fn)
        async def run(*args: Any, **kwargs: Any) -> None:
            async with asyncio.timeout(seconds):
                await fn(*args, **kwargs)

        return run

    return deco


def mk(stream: str, event: str, state: str, onset: float = 1000.0, t: float | None = None) -> Alarm:
    t = onset + 3.0 if t is None else t
    return Alarm(stream, event, state, "high", 0.9, onset, t, 1.7e9 + t, "rules", "rules", f"{event} at {t}")


def lines(path: Path) -> list[Alarm]:
    return [Alarm.from_json(x) for x in path.read_text().splitlines()]


def perms(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class Opener:
    """Opens the real journal, or /dev/full while ``full`` is set: a real failing descriptor."""

    def __init__(self) -> None:
        self.full = False
        self.calls = 0

    def __call__(self, path: Path) -> int:
        self.calls += 1
        return os.open(DEV_FULL, os.O_WRONLY) if self.full else open_append(path)


def test_is_an_alarm_sink(tmp_path: Path) -> None:
    assert isinstance(JournalSink(tmp_path / "j.jsonl"), AlarmSink)


def test_rejects_bad_settings(tmp_path: Path) -> None:
    for kw in ({"max_bytes": 10}, {"backups": -1}, {"fsync_interval_s": -1.0}, {"backlog_max": 1}):
        with pytest.raises(ValueError, match="journal"):
            JournalSink(tmp_path / "j.jsonl", **kw)  # type: ignore[arg-type]


# -- permissions --------------------------------------------------------------------------------


@bounded()
async def test_files_are_private(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = tmp_path / "new" / "alarms.jsonl"
        async with JournalSink(path, max_bytes=1024, backups=2) as sink:
            for i in range(12):
                await sink.send(mk("bed-1", "AF", "onset" if i == 0 else "ongoing", t=1000.0 + i))
        files = [path, path.with_name("alarms.jsonl.1"), path.with_name("alarms.jsonl.2"), state_path(path)]
        assert all(f.exists() for f in files)
        assert {f.name: perms(f) for f in files} == {f.name: 0o640 for f in files}

        wide = tmp_path / "wide.jsonl"
        wide.write_text("")
        wide.chmod(0o666)
        async with JournalSink(wide):
            pass
        assert perms(wide) == 0o640
    finally:
        os.umask(old)


# -- rotation -----------------------------------------------------------------------------------


@bounded()
async def test_rotation_loses_no_line(tmp_path: Path) -> None:
    path = tmp_path / "alarms.jsonl"
    sent = [mk("bed-1", "VTACH", "ongoing", t=1000.0 + i) for i in range(60)]
    async with JournalSink(path, max_bytes=2048, backups=100) as sink:
        for a in sent:
            await sink.send(a)
    files = journal_files(path)
    assert len(files) > 5
    assert all(f.stat().st_size <= 2048 for f in files)
    got = [a for f in files for a in lines(f)]
    assert got == sent  # every line, in order, oldest file first


@bounded()
async def test_rotation_keeps_n_backups(tmp_path: Path) -> None:
    path = tmp_path / "alarms.jsonl"
    sent = [mk("bed-1", "VTACH", "ongoing", t=1000.0 + i) for i in range(60)]
    async with JournalSink(path, max_bytes=2048, backups=3) as sink:
        for a in sent:
            await sink.send(a)
    assert [f.name for f in journal_files(path)] == [
        "alarms.jsonl.3",
        "alarms.jsonl.2",
        "alarms.jsonl.1",
        "alarms.jsonl",
    ]
    got = [a for f in journal_files(path) for a in lines(f)]
    assert got == sent[-len(got) :]  # the newest lines, contiguous


# -- startup checks -----------------------------------------------------------------------------


@needs_dev_full
@bounded()
async def test_start_fails_on_a_full_device() -> None:
    with pytest.raises(OSError, match=r"/dev/full is not writable: No space left"):
        async with JournalSink(DEV_FULL):
            pass
    assert not state_path(DEV_FULL).exists()


@bounded()
async def test_start_fails_when_the_folder_cannot_exist(tmp_path: Path) -> None:
    (tmp_path / "plainfile").write_text("x")
    bad = tmp_path / "plainfile" / "alarms.jsonl"
    with pytest.raises(OSError, match=r"journal .*plainfile/alarms.jsonl: cannot create its folder"):
        async with JournalSink(bad):
            pass


@bounded()
async def test_start_fails_when_free_space_is_below_the_floor(tmp_path: Path) -> None:
    with pytest.raises(OSError, match=r"alarms.jsonl: only \d+ bytes free"):
        async with JournalSink(tmp_path / "alarms.jsonl", min_free_bytes=1 << 62):
            pass


# -- write failures -----------------------------------------------------------------------------


@needs_dev_full
@bounded()
async def test_failed_lines_are_held_and_written_in_order(tmp_path: Path) -> None:
    path = tmp_path / "alarms.jsonl"
    errors: list[str] = []
    opener = Opener()
    sent = [mk(f"bed-{i}", "AF", "onset") for i in range(5)]
    async with JournalSink(path, opener=opener, on_error=errors.append, fsync_interval_s=3600) as sink:
        await sink.send(sent[0])
        opener.full = True
        await sink.reopen()
        await sink.send(sent[1])  # ENOSPC: held
        await sink.send(sent[2])  # reopened, ENOSPC again: held
        assert sink.backlog == 2
        assert errors == ["write", "write"]
        assert lines(path) == sent[:1]
        opener.full = False
        await sink.send(sent[3])  # the disk is back: held lines first, then this one
        assert sink.backlog == 0
        assert lines(path) == sent[:4]
        await sink.send(sent[4])
    assert lines(path) == sent
    assert errors == ["write", "write"]
    assert {(a.stream_id, a.event) for a in load_state(path)} == {(a.stream_id, "AF") for a in sent}


@needs_dev_full
@bounded()
async def test_backlog_is_bounded_and_drops_are_counted(tmp_path: Path) -> None:
    path = tmp_path / "alarms.jsonl"
    errors: list[str] = []
    opener = Opener()
    sent = [mk("bed-1", "AF", "ongoing", t=1000.0 + i) for i in range(6)]
    async with JournalSink(path, opener=opener, on_error=errors.append, backlog_max=3, fsync_interval_s=3600) as sink:
        opener.full = True
        await sink.reopen()
        for a in sent[:5]:
            await sink.send(a)
        assert sink.backlog == 3
        assert errors.count("dropped") == 2
        opener.full = False
        await sink.send(sent[5])
        assert sink.backlog == 0
    assert lines(path) == sent[2:]  # the two oldest dropped, the rest in order


@needs_dev_full
@bounded()
async def test_lines_still_failing_at_close_are_counted_and_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    errors: list[str] = []
    opener = Opener()
    async with JournalSink(tmp_path / "alarms.jsonl", opener=opener, on_error=errors.append) as sink:
        opener.full = True
        await sink.reopen()
        await sink.send(mk("bed-9", "VTACH", "onset"))
    assert errors == ["write", "dropped"]
    assert any(
        "1 alarm lines could not be written" in r.getMessage() and "bed-9" in r.getMessage() for r in caplog.records
    )


@needs_dev_full
@bounded()
async def test_write_errors_are_logged_at_most_once_per_10_s(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    opener = Opener()
    caplog.set_level(logging.ERROR, logger="monitor.transports.journal")
    async with JournalSink(
        tmp_path / "alarms.jsonl", opener=opener, clock=lambda: now[0], fsync_interval_s=3600
    ) as sink:
        opener.full = True
        await sink.reopen()
        for i in range(6):
            now[0] = i * 1.0
            await sink.send(mk("bed-1", "AF", "ongoing", t=1000.0 + i))
        failures = [r for r in caplog.records if "write failed" in r.getMessage()]
        assert len(failures) == 1
        now[0] = 11.0
        await sink.send(mk("bed-1", "AF", "ongoing", t=1100.0))
        failures = [r for r in caplog.records if "write failed" in r.getMessage()]
        assert len(failures) == 2
        assert "(6 since last report)" in failures[1].getMessage()
        assert failures[1].levelno == logging.ERROR
        opener.full = False


# -- durability ---------------------------------------------------------------------------------


@bounded()
async def test_fsync_at_most_every_interval_and_on_close(tmp_path: Path) -> None:
    now = [0.0]
    sink = JournalSink(tmp_path / "alarms.jsonl", clock=lambda: now[0], fsync_interval_s=3600)
    async with sink:
        await sink.send(mk("bed-1", "AF", "ongoing", t=1000.0))  # first line after a quiet spell: synced
        assert sink.fsync_count == 1
        now[0] = 10.0
        await sink.send(mk("bed-1", "AF", "ongoing", t=1010.0))
        assert sink.fsync_count == 1
        now[0] = 3601.0
        await sink.send(mk("bed-1", "AF", "ongoing", t=1020.0))
        assert sink.fsync_count == 2
        now[0] = 3602.0
        await sink.send(mk("bed-1", "AF", "ongoing", t=1030.0))
    assert sink.fsync_count == 3  # the unsynced line, on close


@bounded()
async def test_unsynced_lines_are_synced_within_the_interval(tmp_path: Path) -> None:
    async with JournalSink(tmp_path / "alarms.jsonl", fsync_interval_s=0.2) as sink:
        await sink.send(mk("bed-1", "AF", "ongoing", t=1000.0))
        await sink.send(mk("bed-1", "AF", "ongoing", t=1001.0))
        assert sink.fsync_count == 1
        async with asyncio.timeout(2.0):
            while sink.fsync_count < 2:
                await asyncio.sleep(0.05)


@bounded()
async def test_a_torn_last_line_is_closed_before_appending(tmp_path: Path) -> None:
    path = tmp_path / "alarms.jsonl"
    path.write_text(mk("bed-1", "AF", "onset").to_json() + "\n" + '{"stream_id": "bed-2", "ev')
    async with JournalSink(path) as sink:
        await sink.send(mk("bed-3", "AF", "onset"))
    raw = path.read_text().splitlines()
    assert len(raw) == 3 and Alarm.from_json(raw[2]).stream_id == "bed-3"


# -- active-alarm state -------------------------------------------------------------------------


def test_active_alarms_changes() -> None:
    s = ActiveAlarms()
    assert s.update(mk("a", "AF", "onset"))
    assert not s.update(mk("a", "AF", "ongoing", t=1030.0))  # same episode
    assert s.alarms()[0].detected_time == 1030.0  # but the latest message is kept
    assert s.update(mk("a", "AF", "onset", onset=2000.0))  # a new episode
    assert s.update(mk("a", "AF", "resolved"))
    assert not s.update(mk("a", "AF", "resolved"))
    assert len(s) == 0
    with pytest.raises(ValueError, match="state"):
        s.update(mk("a", "AF", "bogus"))


def test_state_round_trip(tmp_path: Path) -> None:
    journal = tmp_path / "alarms.jsonl"
    active = [mk("bed-1", "VTACH", "onset"), mk("bed-2", "AF", "ongoing", onset=500.0)]
    save_state(state_path(journal), active, saved_at=1.5)
    doc = json.loads(state_path(journal).read_text())
    assert doc["schema"] == 1 and doc["saved_at"] == 1.5 and len(doc["active"]) == 2
    assert perms(state_path(journal)) & 0o027 == 0
    assert load_state(journal) == active
    assert not state_path(journal).with_name("alarms.jsonl.active.json.tmp").exists()


@bounded()
async def test_nothing_to_restore_on_a_first_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert load_state(tmp_path / "alarms.jsonl") == []
    async with JournalSink(tmp_path / "alarms.jsonl") as sink:
        assert sink.restored == []
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


async def _a_b_then_a_resolved(path: Path) -> JournalSink:
    sink = JournalSink(path)
    await sink.__aenter__()
    await sink.send(mk("bed-a", "VTACH", "onset"))
    await sink.send(mk("bed-b", "AF", "onset", onset=1005.0))
    await sink.send(mk("bed-a", "VTACH", "resolved", t=1040.0))
    return sink


@bounded()
async def test_restart_continues_the_active_set(tmp_path: Path) -> None:
    path = tmp_path / "alarms.jsonl"
    sink = await _a_b_then_a_resolved(path)
    ino = state_path(path).stat().st_ino
    await sink.send(mk("bed-b", "AF", "ongoing", onset=1005.0, t=1040.0))
    assert state_path(path).stat().st_ino == ino  # an ongoing does not rewrite the state
    await sink.__aexit__(None, None, None)

    doc = json.loads(state_path(path).read_text())
    assert [(a["stream_id"], a["event"], a["onset_time"]) for a in doc["active"]] == [("bed-b", "AF", 1005.0)]
    async with JournalSink(path) as again:
        assert [(a.stream_id, a.event, a.onset_time) for a in again.restored] == [("bed-b", "AF", 1005.0)]
        await again.send(mk("bed-b", "AF", "resolved", onset=1005.0, t=1100.0))
    assert load_state(path) == []  # the restored episode resolves like any other


@bounded()
async def test_corrupt_state_falls_back_to_the_journal(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "alarms.jsonl"
    sink = await _a_b_then_a_resolved(path)
    await sink.__aexit__(None, None, None)
    expected = load_state(path)
    assert [(a.stream_id, a.event) for a in expected] == [("bed-b", "AF")]
    with path.open("a") as f:
        f.write("not json\n")  # a bad line is skipped, counted
    for garbage in ('{"schema": 1, "active": [{"stream_id": 3}]}', "{trunc", '{"schema": 99, "active": []}'):
        state_path(path).write_text(garbage)
        caplog.clear()
        assert load_state(path) == expected
        warned = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
        assert "unreadable" in warned and "skipped 1 lines" in warned
    state_path(path).unlink()
    caplog.clear()
    assert load_state(path) == expected
    assert "is missing" in caplog.text


@bounded()
async def test_state_survives_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "alarms.jsonl"
    crashed = JournalSink(path)
    await crashed.__aenter__()
    await crashed.send(mk("bed-a", "VTACH", "onset"))
    await crashed.send(mk("bed-b", "PAUSE", "onset"))
    # never closed: another daemon starts on the same files
    assert {(a.stream_id, a.event) for a in load_state(path)} == {("bed-a", "VTACH"), ("bed-b", "PAUSE")}
    async with JournalSink(path) as again:
        assert {(a.stream_id, a.event) for a in again.restored} == {("bed-a", "VTACH"), ("bed-b", "PAUSE")}
    await crashed.__aexit__(None, None, None)


@bounded()
async def test_lines_written_after_the_state_are_replayed(tmp_path: Path) -> None:
    """A crash between appending a line and saving the state: the journal tail wins."""
    path = tmp_path / "alarms.jsonl"
    async with JournalSink(path) as sink:
        await sink.send(mk("bed-a", "VTACH", "onset"))
    with path.open("a") as f:  # as if the resolve was journaled but the state save was lost
        f.write(mk("bed-a", "VTACH", "resolved", t=1050.0).to_json() + "\n")
        f.write(mk("bed-c", "AF", "onset").to_json() + "\n")
    assert [(a.stream_id, a.event) for a in load_state(path)] == [("bed-c", "AF")]


@bounded()
async def test_replay_follows_rotation(tmp_path: Path) -> None:
    path = tmp_path / "alarms.jsonl"
    async with JournalSink(path, max_bytes=1024) as sink:
        await sink.send(mk("bed-a", "VTACH", "onset"))
        state = state_path(path).read_bytes()  # points into the file that is about to rotate
        for i in range(8):
            await sink.send(mk("bed-a", "VTACH", "ongoing", t=1010.0 + i))
        await sink.send(mk("bed-a", "VTACH", "resolved", t=1100.0))
    assert path.with_name("alarms.jsonl.1").exists()
    state_path(path).write_bytes(state)  # the saves after the onset were lost
    assert load_state(path) == []


@bounded()
async def test_a_storm_of_onsets_rewrites_the_state_once_per_interval(tmp_path: Path) -> None:
    """Each state save rewrites and fsyncs the whole active set: once per onset, a ward going to
    NO_SIGNAL at once (a broker outage) held the journal to tens of lines a second. Saved at most
    once per fsync interval, with the journal's own lines covering the time between."""
    path = tmp_path / "alarms.jsonl"
    now = [0.0]
    crashed = JournalSink(path, clock=lambda: now[0], fsync_interval_s=1.0)
    await crashed.__aenter__()
    for i in range(200):
        await crashed.send(mk(f"bed-{i}", "NO_SIGNAL", "onset"))
    saved = json.loads(state_path(path).read_text())["active"]
    assert len(saved) == 1  # the first onset's save; the other 199 wait for the interval
    # A crash now (the sink never closed) loses none of them: the journal's tail is replayed.
    assert {a.stream_id for a in load_state(path)} == {f"bed-{i}" for i in range(200)}
    now[0] = 1.0
    await crashed.send(mk("bed-0", "NO_SIGNAL", "resolved", t=1001.0))
    assert len(json.loads(state_path(path).read_text())["active"]) == 199  # the interval passed
    await crashed.__aexit__(None, None, None)
    assert len(json.loads(state_path(path).read_text())["active"]) == 199


async def _crash(sink: JournalSink) -> None:
    """The process dies: no close, no more maintenance ticks."""
    assert sink._maintainer is not None
    sink._maintainer.cancel()
    await asyncio.gather(sink._maintainer, return_exceptions=True)
    sink._close_fd()


@bounded()
async def test_a_resolve_survives_a_crash_after_rotation_without_backups(tmp_path: Path) -> None:
    """With backups=0 rotation deletes the journal, and the lines a debounced state save had not
    covered went with it: the resolved alarm came back after a crash."""
    path = tmp_path / "alarms.jsonl"
    now = [0.0]
    sink = JournalSink(path, max_bytes=1024, backups=0, clock=lambda: now[0])
    await sink.__aenter__()
    await sink.send(mk("bed-a", "VTACH", "onset"))
    now[0] = 0.2
    await sink.send(mk("bed-a", "VTACH", "resolved", t=1010.0))  # within the interval: not saved yet
    for i in range(8):  # another bed's lines until the journal rotates
        await sink.send(mk("bed-b", "NO_SIGNAL", "ongoing" if i else "onset", t=1020.0 + i))
    await _crash(sink)
    assert [(a.stream_id, a.event) for a in load_state(path)] == [("bed-b", "NO_SIGNAL")]


@needs_dev_full
@bounded()
async def test_a_resolve_survives_a_crash_after_the_disk_came_back(tmp_path: Path) -> None:
    """A state saved while the journal could not be written names no place in it, so nothing
    after it is replayed: the next change must be saved at once, not debounced."""
    path = tmp_path / "alarms.jsonl"
    now = [0.0]
    opener = Opener()
    sink = JournalSink(path, clock=lambda: now[0], opener=opener, fsync_interval_s=1.0)
    await sink.__aenter__()
    await sink.send(mk("bed-a", "VTACH", "onset"))
    opener.full = True
    await sink.reopen()  # the disk fills
    now[0] = 0.1
    await sink.send(mk("bed-b", "PAUSE", "onset"))  # held in the backlog
    now[0] = 1.2
    await sink.send(mk("bed-b", "PAUSE", "ongoing", t=1004.0))  # still full; the state is saved without a place
    opener.full = False
    now[0] = 1.5
    await sink.send(mk("bed-a", "VTACH", "resolved", t=1010.0))  # the disk takes it
    await _crash(sink)
    assert [(a.stream_id, a.event) for a in load_state(path)] == [("bed-b", "PAUSE")]


@bounded()
async def test_a_resolve_survives_a_crash_on_a_journal_that_is_no_file(tmp_path: Path) -> None:
    """A FIFO (a log shipper reading it) has no place to replay from: every change is saved."""
    path = tmp_path / "alarms.jsonl"
    os.mkfifo(path)
    reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        now = [0.0]
        sink = JournalSink(path, clock=lambda: now[0])
        await sink.__aenter__()
        await sink.send(mk("bed-a", "VTACH", "onset"))
        now[0] = 0.3
        await sink.send(mk("bed-a", "VTACH", "resolved", t=1010.0))
        await _crash(sink)
    finally:
        os.close(reader)
    assert load_state(path) == []
