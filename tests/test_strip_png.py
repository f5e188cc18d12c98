"""The strip PNG is to scale: measured on the decoded pixels, not taken from the renderer's word.

Where the renderer's ``strip_layout`` is used, it only says where to look (which row, which time);
the checks compare what is drawn there against the physical scale: 1 mm = dpi/25.4 px, 25 mm/s,
10 mm/mV.
"""

from __future__ import annotations

import io
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import matplotlib.image as mpimg
import numpy as np
import pytest
from numpy.typing import NDArray

from protocol.alarm import Alarm
from protocol.strip import Strip
from station import strip_png
from station.strip_png import MARGINS_MM, ROW_MM, StripLayout, render_strip, save_strip, strip_layout

FS = 128.0
SECONDS = 12.0
N = int(FS * SECONDS)
T0 = 1_700_000_000.0
SPIKES = tuple(range(40, N - 20, 100))  # one-sample 1 mV spikes
GAP = (256, 512)  # lead 2 has no data for samples [256, 512): 2.0-4.0 s, clear of the markers
ONSET_S, DETECTED_S = 8.0, 10.5
DPI = 150
PPMM = DPI / 25.4  # px per mm


def _hex_rgb(colour: str) -> NDArray[np.float64]:
    return np.array([int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)])


def make_strip(n_leads: int = 2, detected_s: float = DETECTED_S) -> Strip:
    t = np.arange(N) / FS
    lead1 = 0.1 * np.sin(2 * np.pi * 1.2 * t) + 0.05 * np.sin(2 * np.pi * 0.25 * t)
    lead1[list(SPIKES)] += 1.0
    lead2 = 0.6 * lead1
    lead2[GAP[0] : GAP[1]] = np.nan
    alarm = Alarm(
        stream_id="bed-07",
        event="VTACH",
        state="onset",
        priority="high",
        confidence=0.93,
        onset_time=T0 + ONSET_S,
        detected_time=T0 + detected_s,
        published_at=T0 + detected_s + 0.1,
        source="cnn",
        model_version="v1.2.0",
        # '$' pairs and a lone '\frac' would break mathtext: the renderer must draw them literally.
        explanation="Wide-complex tachycardia, 180 bpm for 6 beats; cost $\\frac{1}{0}$ of $5 " + "word " * 80,
    )
    leads = (lead1.astype(np.float32), lead2.astype(np.float32))[:n_leads]
    return Strip(alarm=alarm, t0=T0, fs=FS, leads=leads, beats=SPIKES, heart_rate=142.0)


def decode(png: bytes) -> NDArray[np.float32]:
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    rgba = mpimg.imread(io.BytesIO(png), format="png")
    assert rgba.ndim == 3 and rgba.shape[2] in (3, 4)
    return np.asarray(rgba[..., :3])


def dark(rgb: NDArray[np.floating[Any]]) -> NDArray[np.bool_]:
    """Trace ink: black. Grid (light/darker red) and markers (purple, blue, green) are never this dark."""
    return rgb.max(axis=-1) < 0.35


def coloured(rgb: NDArray[np.floating[Any]], colour: str, tol: float = 0.1) -> NDArray[np.bool_]:
    return np.abs(rgb - _hex_rgb(colour)).max(axis=-1) < tol


def row_px(lay: StripLayout, row: int, inset_mm: float = 0.0) -> slice:
    top = lay.row_top_mm(row) + inset_mm
    return slice(round(lay.px(top)), round(lay.px(top + ROW_MM - 2 * inset_mm)))


@pytest.fixture(scope="module")
def strip() -> Strip:
    return make_strip()


@pytest.fixture(scope="module")
def drawn(strip: Strip) -> tuple[StripLayout, NDArray[np.float32]]:
    return strip_layout(strip, DPI), decode(render_strip(strip, DPI))


def test_png_size_is_duration_at_25_mm_per_s_plus_margins(strip: Strip) -> None:
    # The figure is rounded to whole pixels, so the size is within 1 px of the exact physical size;
    # checked at two dpi so a size that is right by accident at one dpi does not pass.
    for dpi in (DPI, 100):
        rgb = decode(render_strip(strip, dpi))
        exact = (SECONDS * 25.0 + MARGINS_MM) * dpi / 25.4
        assert abs(rgb.shape[1] - exact) <= 1.0, (dpi, rgb.shape, exact)
        lay = strip_layout(strip, dpi)
        assert rgb.shape[:2] == (lay.height_px, lay.width_px)


def _line_centres(profile: NDArray[np.float64], threshold: float) -> tuple[list[float], list[float]]:
    """Runs of columns above ``threshold``: their centres and peak values."""
    above = profile > threshold
    centres: list[float] = []
    peaks: list[float] = []
    i = 0
    while i < len(profile):
        if above[i]:
            j = i
            while j < len(profile) and above[j]:
                j += 1
            centres.append((i + j - 1) / 2)
            peaks.append(float(profile[i:j].max()))
            i = j
        else:
            i += 1
    return centres, peaks


def test_grid_is_1_mm_minor_and_5_mm_major(drawn: tuple[StripLayout, NDArray[np.float32]]) -> None:
    lay, rgb = drawn
    # A blank stretch of paper: lead 2's gap, 1 mm in from each edge, the whole row less 3 mm.
    x0, x1 = math.ceil(lay.sample_x_px(GAP[0]) + PPMM), math.floor(lay.sample_x_px(GAP[1]) - PPMM)
    band = rgb[row_px(lay, 1, inset_mm=3.0), x0:x1].astype(np.float64)
    assert not dark(band).any()
    redness = (band[..., 0] - band[..., 1]).mean(axis=0)  # white and grey: 0; light red: > 0
    centres, peaks = _line_centres(redness, float(np.median(redness)) + 0.1)
    span_mm = (x1 - x0) / PPMM
    assert len(centres) >= math.floor(span_mm) - 1  # ~48 lines over 48 mm: none missing
    pitch = (centres[-1] - centres[0]) / (len(centres) - 1)
    assert pitch == pytest.approx(PPMM, rel=0.02)  # 1 mm = dpi/25.4 px
    assert all(0.6 * PPMM < d < 1.4 * PPMM for d in np.diff(centres))
    # Every fifth line is the darker major line.
    major = [c for c, p in zip(centres, peaks) if p > (min(peaks) + max(peaks)) / 2]
    assert len(major) >= math.floor(span_mm / 5) - 1
    assert np.diff(major) == pytest.approx(np.full(len(major) - 1, 5 * PPMM), abs=1.5)


def _trace_top(rgb: NDArray[np.float32], rows: slice, col: int) -> int | None:
    ink = np.flatnonzero(dark(rgb[rows, col]))
    return None if not len(ink) else int(ink[0]) + (rows.start or 0)


def test_trace_is_10_mm_per_mv_and_25_mm_per_s(strip: Strip, drawn: tuple[StripLayout, NDArray[np.float32]]) -> None:
    lay, rgb = drawn
    rows = row_px(lay, 0, inset_mm=1.0)
    lead1 = strip.leads[0].astype(np.float64)
    found = []
    for k in SPIKES:
        # The apex: the column whose ink reaches highest near where sample k should be.
        expect = lay.sample_x_px(k)
        cols = range(round(expect - 2 * PPMM), round(expect + 2 * PPMM) + 1)
        tops = {c: _trace_top(rgb, rows, c) for c in cols}
        apex_col = min((c for c in cols if tops[c] is not None), key=lambda c: (tops[c], abs(c - expect)))
        assert abs(apex_col - expect) <= 2, (k, apex_col, expect)
        found.append(apex_col)
        # The baseline 20 samples (3.9 mm) before: centre of the ink there.
        j = k - 20
        ink = np.flatnonzero(dark(rgb[rows, round(lay.sample_x_px(j))])) + rows.start
        assert len(ink) and np.ptp(ink) < 0.6 * PPMM  # one thin stroke, not a smear
        rise_px = ink.mean() - tops[apex_col]
        expect_px = (lead1[k] - lead1[j]) * 10.0 * PPMM
        # The apex is the stroke's outer edge: half the 0.8 pt line (0.8 px) plus the round join,
        # plus anti-aliasing: 3 px (0.5 mm, 5 % of 1 mV) covers it and still rejects 9 or 11 mm/mV.
        assert rise_px == pytest.approx(expect_px, abs=3.0), (k, rise_px, expect_px)
    # Horizontal scale from the spikes alone (no layout offset involved): 25 mm/s within 2 px.
    span_px = (SPIKES[-1] - SPIKES[0]) / FS * 25.0 * PPMM
    assert found[-1] - found[0] == pytest.approx(span_px, abs=2.0)


def test_no_trace_in_the_gap(drawn: tuple[StripLayout, NDArray[np.float32]]) -> None:
    lay, rgb = drawn
    rows = row_px(lay, 1)
    # The last sample before the gap ends its segment at its own x (butt caps): 0.5 mm margin.
    x0, x1 = math.ceil(lay.sample_x_px(GAP[0] - 1) + PPMM / 2), math.floor(lay.sample_x_px(GAP[1]) - PPMM / 2)
    assert not dark(rgb[rows, x0:x1]).any()
    # ... while lead 2 is drawn on both sides of it, and lead 1 above it.
    for lo, hi in ((x0 - round(3 * PPMM), x0 - round(2 * PPMM)), (x1 + round(2 * PPMM), x1 + round(3 * PPMM))):
        assert dark(rgb[rows, lo:hi]).any(axis=0).all()
    assert dark(rgb[row_px(lay, 0), x0:x1]).any(axis=0).all()


def _marker_cover(rgb: NDArray[np.float32], lay: StripLayout, x: float, colour: str) -> float:
    """Largest fraction of the paper's height in that colour, over the columns within 2 px of x."""
    top, bottom = round(lay.px(lay.paper_top_mm)), round(lay.px(lay.paper_bottom_mm))
    cols = slice(round(x) - 2, round(x) + 3)
    return float(coloured(rgb[top:bottom, cols], colour).mean(axis=0).max())


def test_onset_and_detection_markers(drawn: tuple[StripLayout, NDArray[np.float32]]) -> None:
    lay, rgb = drawn
    for t, colour in ((T0 + ONSET_S, strip_png.ONSET), (T0 + DETECTED_S, strip_png.DETECTED)):
        x = lay.sample_x_px((t - T0) * FS)
        assert _marker_cover(rgb, lay, x, colour) > 0.8  # a full-height line (the trace crosses it)
        assert _marker_cover(rgb, lay, x - 3 * PPMM, colour) == 0.0
        assert _marker_cover(rgb, lay, x + 3 * PPMM, colour) == 0.0
        # ... and its label above the paper, in the same colour.
        label = rgb[round(lay.px(lay.paper_top_mm - 8)) : round(lay.px(lay.paper_top_mm)), round(x - 8 * PPMM) :]
        assert coloured(label[:, : round(16 * PPMM)], colour, tol=0.15).sum() > 20


def test_one_beat_tick_per_beat_above_lead_1(drawn: tuple[StripLayout, NDArray[np.float32]]) -> None:
    lay, rgb = drawn
    top = lay.row_top_mm(0)
    band = coloured(rgb[round(lay.px(top)) : round(lay.px(top + 3)), :], strip_png.BEAT).any(axis=0)
    centres, _ = _line_centres(np.asarray(band, dtype=np.float64), 0.5)
    assert len(centres) == len(SPIKES)
    assert centres == pytest.approx([lay.sample_x_px(k) for k in SPIKES], abs=2.0)
    assert not coloured(rgb[row_px(lay, 1)], strip_png.BEAT).any()


def test_wire_round_trip_renders_the_same(strip: Strip, drawn: tuple[StripLayout, NDArray[np.float32]]) -> None:
    _, rgb = drawn
    again = Strip.from_json(strip.to_json())
    rgb2 = decode(render_strip(again, DPI))
    assert rgb2.shape == rgb.shape
    # 5 uV quantisation and t0 rounded to 0.1 ms are far below a pixel: nearly nothing moves.
    assert (np.abs(rgb2 - rgb).max(axis=-1) > 0.2).mean() < 0.002


def test_one_lead_strip_and_detection_after_the_strip() -> None:
    s = make_strip(n_leads=1, detected_s=SECONDS + 3.0)  # detected after the strip's last sample
    lay = strip_layout(s, DPI)
    rgb = decode(render_strip(s, DPI))
    two = strip_layout(make_strip(), DPI)
    assert lay.n_rows == 1
    assert two.height_px - lay.height_px == pytest.approx(ROW_MM * PPMM, abs=1.0)
    assert dark(rgb[row_px(lay, 0)]).any()
    # The detection marker is clamped to the strip's end.
    assert _marker_cover(rgb, lay, lay.sample_x_px(N), strip_png.DETECTED) > 0.8


def test_lead_with_no_data_draws_no_trace() -> None:
    s = make_strip()
    s = replace(s, leads=(s.leads[0], np.full(N, np.nan, dtype=np.float32)))
    lay = strip_layout(s, DPI)
    rgb = decode(render_strip(s, DPI))
    trace = slice(math.ceil(lay.px(lay.trace_left_mm)), None)
    assert not dark(rgb[row_px(lay, 1), trace]).any()
    assert coloured(rgb[row_px(lay, 1), trace], strip_png.NO_DATA_INK, tol=0.15).sum() > 50  # "no data"
    assert dark(rgb[row_px(lay, 1), : math.ceil(lay.px(lay.trace_left_mm))]).any()  # the calibration pulse


def test_concurrent_renders_are_identical(strip: Strip) -> None:
    first = render_strip(strip, dpi=60)
    with ThreadPoolExecutor(max_workers=4) as pool:
        pngs = list(pool.map(lambda _: render_strip(strip, dpi=60), range(4)))
    assert all(p == first for p in pngs)


def test_save_strip(strip: Strip, tmp_path: Path) -> None:
    path = save_strip(strip, tmp_path / "s.png", dpi=60)
    assert path == tmp_path / "s.png"
    assert path.read_bytes().startswith(b"\x89PNG")
    assert [p.name for p in tmp_path.iterdir()] == ["s.png"]


def test_unrenderable_strips_are_refused(strip: Strip) -> None:
    with pytest.raises(ValueError):
        render_strip(replace(strip, fs=0.0))
    with pytest.raises(ValueError):  # the wire allows 60000 samples at 1 Hz: 1500 m of paper
        render_strip(replace(strip, fs=1.0, leads=(np.zeros(60_000, dtype=np.float32),)))
    with pytest.raises(ValueError):
        render_strip(strip, dpi=5)
