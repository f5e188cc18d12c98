"""The per-frame R-R gap tracker behind PAUSE alarms, on synthetic beat trains at the model rate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import signal

from classifier.constants import MODEL_FS
from classifier.training.records import load_record
from monitor.core.pause import pause_observation
from monitor.core.ringbuffer import RingBuffer
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


def _fading_into_noise(seed: int = 0) -> np.ndarray:
    """20 s of 1 mV beats, 25 s of beats fading to 0.05 mV, then 30 s of 0.02 mV noise alone:
    how VF or a failing rhythm dies out into asystole on a lead that is still attached. The noise
    lies in the QRS band (5-25 Hz), where the tracker looks for slopes."""
    onsets = [0.5 + 0.8 * k for k in range(56)]
    x = _beats(onsets, 75.0, seed=seed).astype(np.float64)
    n = x.shape[1]
    gain = np.interp(np.arange(n) / MODEL_FS, [0.0, 20.0, 45.0, 45.01, 75.0], [1.0, 1.0, 0.05, 0.0, 0.0])
    white = np.random.default_rng(seed + 1).normal(0.0, 1.0, (2, n))
    band = signal.sosfiltfilt(signal.butter(2, [5.0, 25.0], "bandpass", fs=MODEL_FS, output="sos"), white, axis=1)
    noise = 0.02 * band / band.std()
    return (x * gain + noise).astype(np.float32)


def _longest_gap(x: np.ndarray, after_s: float, t0: float = 0.0, min_mv: float | None = None) -> float:
    """The longest gap (open at a frame end, or closed inside a frame) after stream time
    ``after_s``, for ``x`` starting at stream time ``t0``."""
    pt = PauseTracker() if min_mv is None else PauseTracker(min_mv=min_mv)
    longest = 0.0
    for a in range(0, x.shape[1] - FRAME + 1, FRAME):
        t_end = t0 + (a + FRAME - 1) / MODEL_FS
        pt.update(x[:, a : a + FRAME], t_end)
        if t_end > after_s:
            longest = max(longest, pt.gap(t_end), pt.closed_gap)
    return longest


def test_a_rhythm_that_fades_into_noise_becomes_a_pause() -> None:
    x = _fading_into_noise()
    # The level learnt from the fading beats follows them down to the noise, and alone would
    # count the noise as beats for ever; the amplitude floor does not.
    assert _longest_gap(x, after_s=45.0, min_mv=0.0) < 3.0
    assert _longest_gap(x, after_s=45.0) > 25.0


def test_small_beats_above_the_floor_still_count() -> None:
    onsets = [0.5 + 0.8 * k for k in range(40)]
    x = _beats(onsets, 33.0, width_s=0.1) * np.float32(0.25)  # 0.25 mV QRS: a low-voltage lead
    open_max, closed_max, closed = _run(x)
    assert max(open_max, closed_max) < 1.2  # one R-R and a frame
    assert closed and np.allclose(closed, 0.8, atol=0.03)


def test_asystole_after_vf_on_a_real_record(data_dir: Path) -> None:
    """vfdb/427: the cardiologists mark asystole from 1533 s, after VF: 0.2-1 mV of slow
    agonal complexes and noise, not a flat line. The tracker must open a pause there."""
    rec = load_record("vfdb/427", data_dir)
    x = rec.signal[:, int(1400 * MODEL_FS) : int(2100 * MODEL_FS)]
    assert _longest_gap(x, after_s=1533.0, t0=1400.0) >= 3.0


def _judge_after_handover(both_leads_beat: bool) -> list[bool | None]:
    """Beats on lead 2 (and on lead 1 too when ``both_leads_beat``, else lead 1 is a near-flat
    unused lead); at 20 s the analysis judges lead 2 noisy and only lead 1 counts, while the
    heart stops. What the PAUSE rule says over the next 6 s."""
    onsets = [0.5 + 0.8 * k for k in range(25)]  # the last beat at 19.7 s
    x = _beats(onsets, 30.0)
    # After the last beat, low-amplitude noise (not a flat line, which is leads off).
    x[:, int(20.2 * MODEL_FS) :] += np.random.default_rng(4).normal(0.0, 0.03, (2, x.shape[1] - int(20.2 * MODEL_FS)))
    if not both_leads_beat:
        x[0] = np.random.default_rng(3).normal(0.0, 0.003, x.shape[1])
    buf = RingBuffer(2, int(90 * MODEL_FS))
    pt = PauseTracker()
    verdicts: list[bool | None] = []
    for a in range(0, x.shape[1] - FRAME + 1, FRAME):
        t_end = (a + FRAME - 1) / MODEL_FS
        if 20.0 <= t_end < 20.2:
            pt.set_usable(np.array([True, False]), t_end)
        block = x[:, a : a + FRAME]
        buf.write(block)
        pt.update(block, t_end)
        if t_end > 20.0:
            obs = pause_observation(pt, t_end, t_end, buf, 3.0)
            verdicts.append(None if obs is None else obs.present)
    return verdicts


def test_a_lead_that_never_showed_the_beats_cannot_call_asystole() -> None:
    # The lead carrying the beats turned noisy; the other shows nothing and never did: not judged.
    assert True not in _judge_after_handover(both_leads_beat=False)
    # The lead left over did show the beats, then nothing: asystole.
    assert True in _judge_after_handover(both_leads_beat=True)


def test_bursts_of_artefact_do_not_hide_the_beats_after_them() -> None:
    """0.5 mV beats at 50 bpm with two 1.5 s bursts of 3 mV artefact (a patient moving): the
    bursts lift the QRS level for 12.8 s, and ordinary beats must still count after them."""
    onsets = [0.5 + 1.2 * k for k in range(75)]
    x = _beats(onsets, 90.0) * np.float32(0.5)
    rng = np.random.default_rng(5)
    for t0 in (60.0, 66.0):
        a, b = int(t0 * MODEL_FS), int((t0 + 1.5) * MODEL_FS)
        x[:, a:b] += rng.normal(0.0, 1.0, (2, b - a)).astype(np.float32)
    assert _longest_gap(x, after_s=62.0) < 2.0


def _mains(x: np.ndarray, hz: float, mv: float) -> np.ndarray:
    """``x`` with mains interference of ``mv`` amplitude at ``hz`` on both leads (an unfiltered sender)."""
    t = np.arange(x.shape[1]) / MODEL_FS
    return (x + mv * np.sin(2 * np.pi * hz * t + 0.3)).astype(np.float32)


def _beats_then_asystole(seed: int = 0) -> np.ndarray:
    """30 s of 1 mV beats at 75 bpm, then 30 s of asystole: 0.02 mV of noise, a lead still on."""
    x = _beats([0.5 + 0.8 * k for k in range(37)], 60.0, seed=seed).astype(np.float64)
    x[:, int(30.2 * MODEL_FS) :] += np.random.default_rng(seed + 1).normal(
        0.0, 0.02, (2, x.shape[1] - int(30.2 * MODEL_FS))
    )
    return x


def test_mains_interference_does_not_hide_an_asystole() -> None:
    """0.2 mV of 50 or 60 Hz swings the lead past the amplitude floor and, unfiltered, slopes
    like a QRS: the tracker must still see the asystole, and the beats before it."""
    for hz in (50.0, 60.0):
        x = _mains(_beats_then_asystole(), hz, 0.2)
        assert _longest_gap(x[:, : int(30 * MODEL_FS)], after_s=5.0) < 1.2, hz
        assert _longest_gap(x, after_s=30.0) > 25.0, hz


def test_beats_count_through_mains_interference() -> None:
    """0.3 mV of mains on 0.5 mV beats: every beat still counts, R-R onset to onset as before."""
    x = _mains(_beats([0.5 + 0.8 * k for k in range(40)], 33.0) * np.float32(0.5), 50.0, 0.3)
    open_max, closed_max, closed = _run(x)
    assert max(open_max, closed_max) < 1.2
    assert closed and np.allclose(closed, 0.8, atol=0.03)


def test_asystole_after_vf_under_mains_on_a_real_record(data_dir: Path) -> None:
    """vfdb/423 (training): the annotated 10 s asystole from 1360 s, after VF, with 0.1 mV of 50 Hz
    added, as an unfiltered front end would send it."""
    rec = load_record("vfdb/423", data_dir)
    x = np.nan_to_num(rec.signal[:, int(1200 * MODEL_FS) : int(1380 * MODEL_FS)].astype(np.float64))
    assert _longest_gap(_mains(x, 50.0, 0.1), after_s=1360.0, t0=1200.0) >= 3.0
