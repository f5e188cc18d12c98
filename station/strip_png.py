"""An alarm strip as a PNG on standard ECG paper.

Clinicians judge an alarm by eye against the paper they trained on: 25 mm/s, 10 mm/mV, a 1 mm
grid and a 1 mV calibration pulse. So the image is drawn exactly to scale at its physical size
(1 mm = dpi/25.4 px), and every datum that decides whether the alarm was right (onset, detection,
beats, gaps, clipping) is marked on the paper instead of being smoothed over: no data is drawn
as no line. The header carries what a reviewer needs without the alarm message beside it.

Rendering goes through ``Figure`` + ``FigureCanvasAgg`` only, never pyplot: no global figure
state, so a server may render strips concurrently in a thread pool. Text from the wire is drawn
with mathtext off, so a ``$`` in an explanation stays a ``$``.
"""

from __future__ import annotations

import io
import math
import os
import textwrap
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.text import Text
from numpy.typing import NDArray

from protocol.strip import Strip

#: Paper speed and gain.
MM_PER_S: Final = 25.0
MM_PER_MV: Final = 10.0
#: Horizontal geometry (mm): white margin holding the lead labels, then paper with the 1 mV
#: calibration pulse, then the trace (duration x 25 mm), then a white right margin.
LEFT_MM: Final = 8.0
CAL_MM: Final = 10.0
RIGHT_MM: Final = 6.0
#: Width that is not trace: total width = duration x 25 mm + MARGINS_MM (unless below MIN_WIDTH_MM).
MARGINS_MM: Final = LEFT_MM + CAL_MM + RIGHT_MM
#: Short strips widen their right margin to this, so the header stays legible.
MIN_WIDTH_MM: Final = 160.0
#: One row per lead, baseline (the lead's median) at its centre, on a major grid line; the trace
#: is clipped at +-CLIP_MV (marked), leaving room above for the beat ticks.
ROW_MM: Final = 50.0
CLIP_MV: Final = 2.2
#: Vertical bands (mm), top to bottom.
TOP_PAD_MM: Final = 3.0
TITLE_MM: Final = 6.5
LINE_MM: Final = 4.2
MARKER_BAND_MM: Final = 9.0
AXIS_MM: Final = 6.0
FOOTER_MM: Final = 7.0
#: Header wrap: mm per character at the 8 pt header font (generous, so lines never overrun).
CHAR_MM: Final = 1.7
MAX_EXPLANATION_LINES: Final = 4
#: Guards against strips that would make an absurd image (the wire allows 60000 samples at 1 Hz).
MAX_PIXELS: Final = 60_000_000
MIN_DPI: Final = 20
MAX_DPI: Final = 1200

#: Colours. Grid: light-red 1 mm minor, darker 5 mm major. Markers are chromatic and never dark,
#: so the black trace stays the only dark ink on the paper.
GRID_MINOR: Final = "#f4b4b4"
GRID_MAJOR: Final = "#e06666"
TRACE: Final = "#000000"
ONSET: Final = "#8e24aa"
DETECTED: Final = "#1565c0"
BEAT: Final = "#2e7d32"
CLIPPED: Final = "#ef6c00"
NO_DATA_INK: Final = "#757575"
#: IEC 60601-1-8 alarm colours: (badge fill, text) per priority.
PRIORITY_COLOURS: Final[dict[str, tuple[str, str]]] = {
    "high": ("#d50000", "#ffffff"),
    "medium": ("#ffd600", "#000000"),
    "low": ("#00bcd4", "#000000"),
}


@dataclass(frozen=True, slots=True)
class StripLayout:
    """Where things go, in mm from the image's top-left corner; ``px`` converts to pixels.

    Pure arithmetic (no rendering), so a viewer can map a click on the PNG back to stream time.
    """

    dpi: float
    width_px: int
    height_px: int
    t0: float
    fs: float
    n_samples: int
    n_rows: int
    paper_top_mm: float
    header: tuple[str, ...]

    @property
    def px_per_mm(self) -> float:
        return self.dpi / 25.4

    @property
    def width_mm(self) -> float:
        return self.width_px / self.px_per_mm

    @property
    def height_mm(self) -> float:
        return self.height_px / self.px_per_mm

    @property
    def duration(self) -> float:
        return self.n_samples / self.fs

    @property
    def paper_left_mm(self) -> float:
        return LEFT_MM

    @property
    def trace_left_mm(self) -> float:
        return LEFT_MM + CAL_MM

    @property
    def paper_right_mm(self) -> float:
        return self.trace_left_mm + self.duration * MM_PER_S

    @property
    def paper_bottom_mm(self) -> float:
        return self.paper_top_mm + self.n_rows * ROW_MM

    def px(self, mm: float) -> float:
        return mm * self.px_per_mm

    def x_mm(self, t: float) -> float:
        """Stream time -> x (mm)."""
        return self.trace_left_mm + (t - self.t0) * MM_PER_S

    def x_px(self, t: float) -> float:
        return self.px(self.x_mm(t))

    def sample_x_px(self, i: float) -> float:
        return self.px(self.trace_left_mm + i / self.fs * MM_PER_S)

    def row_top_mm(self, row: int) -> float:
        return self.paper_top_mm + row * ROW_MM

    def baseline_mm(self, row: int) -> float:
        """y of the row's baseline (the lead's median, 0 mV relative)."""
        return self.row_top_mm(row) + ROW_MM / 2


def strip_layout(strip: Strip, dpi: float = 150) -> StripLayout:
    """The geometry ``render_strip`` uses for ``strip`` at ``dpi``; ``ValueError`` if unrenderable."""
    if not (math.isfinite(strip.fs) and strip.fs > 0):
        raise ValueError(f"strip rate {strip.fs} Hz is not positive")
    if not MIN_DPI <= dpi <= MAX_DPI:
        raise ValueError(f"dpi {dpi} outside [{MIN_DPI}, {MAX_DPI}]")
    n = len(strip.leads[0]) if strip.leads else 0
    n_rows = max(1, len(strip.leads))
    width_mm = max(MIN_WIDTH_MM, n / strip.fs * MM_PER_S + MARGINS_MM)
    chars = max(40, int((width_mm - LEFT_MM - RIGHT_MM) / CHAR_MM))
    header = _header_lines(strip, chars)
    paper_top = TOP_PAD_MM + TITLE_MM + LINE_MM * (len(header) - 1) + MARKER_BAND_MM
    height_mm = paper_top + n_rows * ROW_MM + AXIS_MM + FOOTER_MM
    ppmm = dpi / 25.4
    width_px, height_px = round(width_mm * ppmm), round(height_mm * ppmm)
    if width_px * height_px > MAX_PIXELS:
        raise ValueError(f"a {n / strip.fs:.0f} s strip at {dpi} dpi is {width_px}x{height_px} px: too large")
    return StripLayout(float(dpi), width_px, height_px, strip.t0, strip.fs, n, n_rows, paper_top, header)


def render_strip(strip: Strip, dpi: int = 150) -> bytes:
    """The strip on ECG paper as PNG bytes, exactly to scale at ``dpi``. Thread-safe."""
    lay = strip_layout(strip, dpi)
    # A hair over the integer size: Agg truncates the figure's pixel size.
    fig = Figure(figsize=((lay.width_px + 1e-3) / dpi, (lay.height_px + 1e-3) / dpi), dpi=dpi, facecolor="white")
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_axis_off()
    # Data coordinates are mm from the top-left corner, so 1 unit is 1 mm on the paper.
    ax.set_xlim(0.0, lay.width_mm)
    ax.set_ylim(lay.height_mm, 0.0)

    _draw_grid(ax, lay)
    _draw_markers(ax, lay, strip)
    for row in range(lay.n_rows):
        lead = strip.leads[row] if row < len(strip.leads) else np.zeros(0, dtype=np.float32)
        _draw_lead(ax, lay, row, np.asarray(lead, dtype=np.float64)[: lay.n_samples])
    _draw_beats(ax, lay, strip.beats)
    _draw_time_axis(ax, lay, _reference_time(strip))
    _draw_header(ax, lay, canvas, strip)
    _draw_footer(ax, lay, canvas, strip)

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, facecolor="white", metadata={"Title": strip.strip_id})
    return buf.getvalue()


def save_strip(strip: Strip, path: str | Path, dpi: int = 150) -> Path:
    """Render and write atomically (a reader never sees half a PNG); returns the path."""
    path = Path(path)
    png = render_strip(strip, dpi)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        tmp.write_bytes(png)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


# --- text -------------------------------------------------------------------------------------


def _iso(t: float) -> str:
    try:
        return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    except (OverflowError, OSError, ValueError):
        return "-"


def _num(x: float, fmt: str) -> str:
    return format(x, fmt) if math.isfinite(x) else "-"


def _clean(s: str, limit: int) -> str:
    s = " ".join(str(s).split())
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _header_lines(strip: Strip, chars: int) -> tuple[str, ...]:
    """Line 0 is the title (drawn after the priority badge); the rest are wrapped to ``chars``."""
    a = strip.alarm
    title = f"{_clean(a.event, 40)}   bed {_clean(a.stream_id, 64)}   {_clean(a.state, 20)}"
    times = f"onset {_iso(a.onset_time)}   detected {_iso(a.detected_time)} (UTC, stream clock)"
    delay = a.detected_time - a.onset_time
    if math.isfinite(delay):
        times += f"   detected {delay:.1f} s after onset"
    hr = f"HR {_num(strip.heart_rate, '.0f')} bpm" if math.isfinite(strip.heart_rate) else "HR -"
    facts = (
        f"{hr}   confidence {_num(a.confidence, '.2f')}   source {_clean(a.source, 60)}"
        f"   model {_clean(a.model_version, 60)}"
    )
    lines = [title]
    for text in (times, facts):
        lines += textwrap.wrap(text, chars) or [""]
    explanation = textwrap.wrap(" ".join(a.explanation.split()), chars)
    if len(explanation) > MAX_EXPLANATION_LINES:
        explanation = explanation[:MAX_EXPLANATION_LINES]
        explanation[-1] = explanation[-1][: chars - 1].rstrip() + "…"
    return (*lines, *explanation)


def _text(ax: Axes, x: float, y: float, s: str, **kw: Any) -> Text:
    return ax.text(x, y, s, parse_math=False, **kw)


def _right_mm(t: Text, canvas: FigureCanvasAgg, lay: StripLayout) -> float:
    return float(t.get_window_extent(canvas.get_renderer()).x1) / lay.px_per_mm


def _draw_header(ax: Axes, lay: StripLayout, canvas: FigureCanvasAgg, strip: Strip) -> None:
    a = strip.alarm
    fill, ink = PRIORITY_COLOURS.get(a.priority.lower(), ("#9e9e9e", "#000000"))
    y = TOP_PAD_MM + TITLE_MM / 2
    badge = _text(
        ax,
        LEFT_MM + 1.0,
        y,
        f"{_clean(a.priority, 12).upper()} PRIORITY",
        fontsize=10,
        fontweight="bold",
        color=ink,
        va="center",
        ha="left",
        bbox={"boxstyle": "square,pad=0.25", "facecolor": fill, "edgecolor": fill},
    )
    _text(ax, _right_mm(badge, canvas, lay) + 3.0, y, lay.header[0], fontsize=11, fontweight="bold", va="center")
    y = TOP_PAD_MM + TITLE_MM
    for line in lay.header[1:]:
        _text(ax, LEFT_MM, y + LINE_MM / 2, line, fontsize=8, va="center", color="#212121")
        y += LINE_MM


def _draw_footer(ax: Axes, lay: StripLayout, canvas: FigureCanvasAgg, strip: Strip) -> None:
    y = lay.paper_bottom_mm + AXIS_MM + FOOTER_MM / 2
    t = _text(ax, LEFT_MM, y, "25 mm/s, 10 mm/mV", fontsize=8, fontweight="bold", va="center")
    x = _right_mm(t, canvas, lay) + 4.0
    for label, colour in (("│ onset", ONSET), ("│ detected", DETECTED), ("╵ beat", BEAT), ("▲ clipped", CLIPPED)):
        t = _text(ax, x, y, label, fontsize=7.5, color=colour, va="center")
        x = _right_mm(t, canvas, lay) + 3.0
    t = _text(ax, x + 1.0, y, "axis: s from onset", fontsize=7.5, color="#424242", va="center")
    x = _right_mm(t, canvas, lay) + 4.0
    sid = _text(
        ax,
        lay.width_mm - RIGHT_MM,
        y,
        _clean(strip.strip_id, 120),
        fontsize=6.5,
        color="#757575",
        va="center",
        ha="right",
    )
    if float(sid.get_window_extent(canvas.get_renderer()).x0) / lay.px_per_mm < x:
        sid.remove()  # no room on a short strip; the id is in the PNG's Title anyway


# --- paper ------------------------------------------------------------------------------------


def _draw_grid(ax: Axes, lay: StripLayout) -> None:
    left, right = lay.paper_left_mm, lay.paper_right_mm
    top, bottom = lay.paper_top_mm, lay.paper_bottom_mm
    minor: list[list[tuple[float, float]]] = []
    major: list[list[tuple[float, float]]] = []
    for k in range(math.floor(right - left + 1e-9) + 1):
        (major if k % 5 == 0 else minor).append([(left + k, top), (left + k, bottom)])
    for k in range(round(bottom - top) + 1):
        (major if k % 5 == 0 else minor).append([(left, top + k), (right, top + k)])
    ax.add_collection(LineCollection(minor, colors=GRID_MINOR, linewidths=0.5, zorder=1))
    ax.add_collection(LineCollection(major, colors=GRID_MAJOR, linewidths=0.9, zorder=1.1))
    # The right edge rarely falls on a grid line: close the paper.
    ax.add_collection(LineCollection([[(right, top), (right, bottom)]], colors=GRID_MAJOR, linewidths=0.9, zorder=1.1))


def _draw_lead(ax: Axes, lay: StripLayout, row: int, mv: NDArray[np.float64]) -> None:
    base = lay.baseline_mm(row)
    # The 1 mV, 200 ms calibration pulse, on this row's baseline.
    c0 = lay.paper_left_mm + 2.5
    ax.plot(
        [lay.paper_left_mm + 0.5, c0, c0, c0 + 5.0, c0 + 5.0, lay.trace_left_mm - 0.5],
        [base, base, base - MM_PER_MV, base - MM_PER_MV, base, base],
        color=TRACE,
        linewidth=0.8,
        solid_joinstyle="miter",
        zorder=3,
    )
    _text(ax, LEFT_MM / 2, base, f"lead {row + 1}", fontsize=8, rotation=90, va="center", ha="center")
    ok = np.isfinite(mv)
    if not ok.any():
        _text(
            ax,
            (lay.trace_left_mm + lay.paper_right_mm) / 2 if lay.n_samples else lay.width_mm / 2,
            base,
            "no data",
            fontsize=11,
            style="italic",
            color=NO_DATA_INK,
            va="center",
            ha="center",
            bbox={"boxstyle": "round,pad=0.3", "facecolor": "white", "edgecolor": NO_DATA_INK},
            zorder=4,
        )
        return
    rel = np.where(ok, mv - float(np.median(mv[ok])), np.nan)
    x = lay.trace_left_mm + np.arange(len(mv)) / lay.fs * MM_PER_S
    y = base - np.clip(rel, -CLIP_MV, CLIP_MV) * MM_PER_MV
    ax.plot(x, y, color=TRACE, linewidth=0.8, solid_joinstyle="round", solid_capstyle="butt", zorder=3)
    # A sample between two gaps makes no line segment: show it as a dot so no datum is dropped.
    prev = np.concatenate(([False], ok[:-1]))
    nxt = np.concatenate((ok[1:], [False]))
    lone = ok & ~prev & ~nxt
    if lone.any():
        ax.plot(x[lone], y[lone], linestyle="none", marker="o", markersize=1.2, color=TRACE, zorder=3)
    # Clipping: one caret at the start of each clipped run, beyond the clip level.
    for sign, marker in ((1.0, "^"), (-1.0, "v")):
        over = np.nan_to_num(sign * rel, nan=0.0) > CLIP_MV
        starts = over & ~np.concatenate(([False], over[:-1]))
        if starts.any():
            ax.plot(
                x[starts],
                np.full(int(starts.sum()), base - sign * (CLIP_MV * MM_PER_MV + 1.2)),
                linestyle="none",
                marker=marker,
                markersize=3.5,
                color=CLIPPED,
                zorder=4,
            )


def _draw_beats(ax: Axes, lay: StripLayout, beats: tuple[int, ...]) -> None:
    """A short tick per detected beat, above lead 1's trace (which is clipped below the ticks)."""
    top = lay.row_top_mm(0)
    segs = [
        [(x, top + 0.5), (x, top + 2.3)]
        for x in (lay.trace_left_mm + b / lay.fs * MM_PER_S for b in beats if 0 <= b < lay.n_samples)
    ]
    if segs:
        ax.add_collection(LineCollection(segs, colors=BEAT, linewidths=1.0, zorder=4))


def _draw_markers(ax: Axes, lay: StripLayout, strip: Strip) -> None:
    a = strip.alarm
    t_end = lay.t0 + lay.duration
    top, bottom = lay.paper_top_mm, lay.paper_bottom_mm
    marks: list[tuple[float, str, str, float]] = []
    if math.isfinite(a.onset_time) and lay.t0 <= a.onset_time <= t_end:
        marks.append((a.onset_time, "onset", ONSET, top - 5.0))
    if math.isfinite(a.detected_time) and lay.n_samples:
        t = min(max(a.detected_time, lay.t0), t_end)
        label = "detected" if t == a.detected_time else ("detected →" if t < a.detected_time else "← detected")
        marks.append((t, label, DETECTED, top - 1.0))
    for t, label, colour, y_label in marks:
        x = lay.x_mm(t)
        ax.add_collection(LineCollection([[(x, top), (x, bottom)]], colors=colour, linewidths=1.1, zorder=2))
        half = len(label) * CHAR_MM * 0.55
        ha = "left" if x - half < LEFT_MM else "right" if x + half > lay.width_mm - 1.0 else "center"
        _text(ax, x, y_label, label, fontsize=7.5, fontweight="bold", color=colour, ha=ha, va="bottom")


def _reference_time(strip: Strip) -> float:
    for t in (strip.alarm.onset_time, strip.alarm.detected_time):
        if math.isfinite(t):
            return t
    return strip.t0


def _draw_time_axis(ax: Axes, lay: StripLayout, ref: float) -> None:
    """Ticks every second relative to ``ref`` (the onset), labelled under the paper."""
    if not lay.n_samples:
        return
    t_end = lay.t0 + lay.duration
    first, last = math.ceil(lay.t0 - ref - 1e-9), math.floor(t_end - ref + 1e-9)
    if last - first > 10 * lay.duration + 10:  # a reference absurdly far away; nothing sensible to label
        return
    y = lay.paper_bottom_mm
    segs = []
    for k in range(first, last + 1):
        x = lay.x_mm(ref + k)
        segs.append([(x, y), (x, y + 1.2)])
        label = "0" if k == 0 else f"{k:+d}".replace("-", "−")
        _text(ax, x, y + 1.6, label, fontsize=7, va="top", ha="center", color="#212121")
    ax.add_collection(LineCollection(segs, colors="#212121", linewidths=0.6, zorder=2))
