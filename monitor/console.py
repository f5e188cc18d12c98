"""The live console: one row per stream with rate, class, leads and alarms, plus recent alarms."""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Protocol, Self

import numpy as np
from rich.console import Console as RichConsole
from rich.console import Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from protocol.alarm import Alarm
from protocol.strip import Strip


class BedView(Protocol):
    heart_rate: float
    current: str
    confidence: float
    quality: tuple[str, str]


class MonitorView(Protocol):
    """What the console reads of the daemon (the daemon's ``Monitor`` satisfies it)."""

    model_version: str
    recent: list[Alarm]

    @property
    def recent_strips(self) -> Sequence[Strip]: ...

    @property
    def streams(self) -> Mapping[str, BedView]: ...

    def active_alarms(self, sid: str) -> list[str]: ...


STYLE = {"high": "bold red", "medium": "yellow", "low": "cyan"}
MAX_ROWS = 40


def stream_table(mon: MonitorView) -> Table:
    table = Table(title=f"ecg-monitor: {len(mon.streams)} streams, classifier {mon.model_version}", expand=True)
    for col in ("stream", "HR bpm", "class", "conf", "lead 1", "lead 2", "alarms"):
        table.add_column(col)
    for sid in sorted(mon.streams)[:MAX_ROWS]:
        st = mon.streams[sid]
        alarms = mon.active_alarms(sid)
        hr = "-" if math.isnan(st.heart_rate) else f"{st.heart_rate:.0f}"
        table.add_row(
            sid,
            hr,
            st.current,
            f"{st.confidence:.2f}",
            st.quality[0],
            st.quality[1],
            " ".join(alarms) or "-",
            style="bold red" if alarms else None,
        )
    if len(mon.streams) > MAX_ROWS:
        table.add_row(f"... {len(mon.streams) - MAX_ROWS} more", "", "", "", "", "", "")
    return table


def alarm_table(mon: MonitorView, n: int = 10) -> Table:
    table = Table(title="recent alarms", expand=True)
    for col in ("time", "stream", "event", "state", "priority", "source", "explanation"):
        table.add_column(col, overflow="fold")
    for a in mon.recent[-n:]:
        table.add_row(
            time.strftime("%H:%M:%S", time.localtime(a.published_at)),
            a.stream_id,
            a.event,
            a.state,
            a.priority,
            a.source,
            a.explanation[:90],
            style=STYLE.get(a.priority),
        )
    return table


BLOCKS = " ▁▂▃▄▅▆▇█"


def sparkline(x: np.ndarray, width: int) -> str:
    """One lead as a row of block characters, each column the extreme of its stretch (so every
    QRS survives the decimation); blank where there is no data."""
    if x.size == 0 or width < 1:
        return ""
    cols = np.array_split(x, min(width, x.size))
    ext = np.array([c[np.nanargmax(np.abs(c - np.nanmedian(x)))] if np.isfinite(c).any() else np.nan for c in cols])
    ok = np.isfinite(ext)
    if not ok.any():
        return " " * len(cols)
    lo, hi = float(np.nanmin(ext)), float(np.nanmax(ext))
    span = hi - lo if hi > lo else 1.0
    idx = np.where(ok, np.clip(((ext - lo) / span * (len(BLOCKS) - 2)).round() + 1, 1, len(BLOCKS) - 1), 0)
    return "".join(BLOCKS[int(i)] for i in idx)


def strip_panel(mon: MonitorView, width: int = 110) -> Text:
    """The latest alarm strip, lead 1, as a sparkline: the ECG behind the alarm, in the terminal."""
    if not mon.recent_strips:
        return Text("")
    s = mon.recent_strips[-1]
    a = s.alarm
    head = Text(
        f"strip {a.stream_id} {a.event} {a.state}, {s.duration:.0f} s to detection: ", style=STYLE.get(a.priority, "")
    )
    return head + Text(sparkline(s.leads[0], width), style="green")


class Console:
    """Owns the refresh task; does nothing when disabled or when stdout is not a terminal."""

    def __init__(self, mon: MonitorView, enabled: bool = True, refresh_s: float = 0.5, banner: str = "") -> None:
        self.mon = mon
        self.banner = banner
        self.enabled = enabled and sys.stdout.isatty()
        self.refresh_s = refresh_s
        self._task: asyncio.Task[None] | None = None
        self._live: Live | None = None

    def render(self) -> Group:
        return Group(
            Text(self.banner, style="bold"), stream_table(self.mon), alarm_table(self.mon), strip_panel(self.mon)
        )

    async def __aenter__(self) -> Self:
        if self.enabled:
            self._live = Live(self.render(), console=RichConsole(), refresh_per_second=4, transient=False)
            self._live.__enter__()
            self._task = asyncio.create_task(self._run(), name="console")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._live is not None:
            self._live.update(self.render())
            self._live.__exit__(None, None, None)

    async def _run(self) -> None:
        assert self._live is not None
        while True:
            await asyncio.sleep(self.refresh_s)
            self._live.update(self.render())
