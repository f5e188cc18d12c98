"""The per-frame R-R gap tracker behind PAUSE alarms, on synthetic beat trains at the model rate."""

from __future__ import annotations

import numpy as np

from classifier.constants import MODEL_FS
from monitor.core.stream import PauseTracker

FRAME = 25  # about 0.2 s at 128 Hz


def _beats(onsets_s: list[float], seconds: float, width_s: float = 0.1, seed: int = 0) -> np.ndarray:
    """Two leads with a triangular QRS of ``width_s`` starting at each onset, plus a little noise."""
    n = int(seconds * MODEL_FS)
    x = np.random.default_rng(seed).normal(0.0, 0.005, (2, n))
    w = int(width_s * MODEL_FS)
    tri = np.concatenate([np.linspace(0, 1, w // 2, endpoint=False), np.linspace(1, 0, w - w // 2)])
    for t in onsets_s:
        a = round(t * MODEL_FS)
        if a + w <= n:
            x[:, a : a + w] += tri
    return x.astype(np.float32)


def _run(x: np.ndarray) -> tuple[float, float, list[float]]:
    """(largest open gap at a frame end, largest closed gap, every closed gap over 0.5 s)."""
    pt = PauseTracker()
    open_max, closed = 0.0, []
    for a in range(0, x.shape[1] - FRAME + 1, FRAME):
        t_end = (a + FRAME - 1) / MODEL_FS
        pt.update(x[:, a : a + FRAME], t_end)
        if a > 20 * FRAME:  # past the learning frames
            open_max = max(open_max, pt.gap(t_end))
            if pt.closed_gap > 0.5:
                closed.append(pt.closed_gap)
    return open_max, max(closed, default=0.0), closed


def test_gaps_run_onset_to_onset_like_rr() -> None:
    onsets = [0.5 + 0.8 * k for k in range(40)]
    _, _, closed = _run(_beats(onsets, 33.0, width_s=0.12))
    assert closed and np.allclose(closed, 0.8, atol=0.03), closed[:5]


def test_a_pause_that_ends_between_frame_ends_is_not_lost() -> None:
    # A 3.05 s gap placed so that no frame end sees 3.0 s of it: only the closed gap does.
    onsets = [0.5 + 0.8 * k for k in range(25)]
    nxt = onsets[-1] + 3.05
    onsets += [nxt + 0.8 * k for k in range(8)]
    open_max, closed_max, _ = _run(_beats(onsets, nxt + 6.0))
    assert open_max < 3.0
    assert closed_max >= 3.0 and abs(closed_max - 3.05) < 0.03


def test_a_gap_under_the_threshold_stays_under() -> None:
    onsets = [0.4 + 0.8 * k for k in range(25)]
    nxt = onsets[-1] + 2.9
    onsets += [nxt + 0.8 * k for k in range(8)]
    open_max, closed_max, _ = _run(_beats(onsets, nxt + 6.0))
    assert max(open_max, closed_max) < 2.95


def test_fibrillation_never_looks_like_a_pause() -> None:
    t = np.arange(int(40 * MODEL_FS)) / MODEL_FS
    x = np.stack([np.sin(2 * np.pi * 5.0 * t), np.sin(2 * np.pi * 5.0 * t + 1.0)]).astype(np.float32)
    open_max, closed_max, _ = _run(x)
    assert max(open_max, closed_max) < 0.5


def test_a_gap_does_not_span_time_when_no_lead_counted() -> None:
    """Leads off for 30 s (flat, judged unusable), then back: the time off is not asystole."""
    onsets = [0.5 + 0.8 * k for k in range(12)] + [40.3 + 0.8 * k for k in range(10)]
    x = _beats(onsets, 48.0)
    x[:, int(10 * MODEL_FS) : int(40 * MODEL_FS)] = 0.0

    def run(quality_known: bool) -> float:
        pt = PauseTracker()
        closed = 0.0
        for a in range(0, x.shape[1] - FRAME + 1, FRAME):
            t_end = (a + FRAME - 1) / MODEL_FS
            if quality_known and 12.0 <= t_end < 12.2:
                pt.set_usable(np.array([False, False]), t_end)  # the analysis saw both leads flat
            if quality_known and 41.0 <= t_end < 41.2:
                pt.set_usable(np.array([True, True]), 40.2)  # and both back, in a window ending at 40.2 s
            pt.update(x[:, a : a + FRAME], t_end)
            closed = max(closed, pt.closed_gap)
        return closed

    assert run(quality_known=False) > 29.0  # without the leads' state, the tracker sees a 30 s gap
    assert run(quality_known=True) < 1.0
