"""Pacemaker pulse rejection (``monitor.core.pacer``): pulses out, QRS complexes untouched."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from classifier.pacer import max_width, reject_pulses
from monitor.core.pacer import PaceRejector
from monitor.core.stream import StreamState
from protocol.wire import Frame


def _ecg(fs: float, seconds: float, onsets_s: list[float], mv: float = 1.5, seed: int = 0) -> np.ndarray:
    """Two leads of QRS-like waves (a 12 ms wide Gaussian tip on a 40 ms base) and 0.02 mV noise."""
    t = np.arange(int(seconds * fs)) / fs
    x = np.random.default_rng(seed).normal(0.0, 0.02, (2, t.size))
    for o in onsets_s:
        x[0] += mv * np.exp(-0.5 * ((t - o) / 0.005) ** 2) + 0.3 * mv * np.exp(-0.5 * ((t - o) / 0.012) ** 2)
        x[1] -= 0.7 * mv * np.exp(-0.5 * ((t - o) / 0.006) ** 2)
    return x


def _pulses(x: np.ndarray, fs: float, every_s: float, mv: float, start_s: float = 0.3) -> list[int]:
    """A pacemaker pulse every ``every_s``: one sample of ``mv``, then a recharge tail of a fifth."""
    at = [int(s * fs) for s in np.arange(start_s, x.shape[1] / fs - 0.05, every_s)]
    for i in at:
        x[:, i] += mv
        x[:, i + 1] -= 0.2 * mv
    return at


@pytest.mark.parametrize("fs", [250.0, 360.0, 500.0, 1000.0])
def test_pulses_go_and_qrs_complexes_stay(fs: float) -> None:
    clean = _ecg(fs, 10.0, [0.5 + 0.8 * k for k in range(12)])
    x = clean.copy()
    at = _pulses(x, fs, 0.8, 2.0, start_s=0.9)  # midway between the beats
    y = x.copy()
    assert reject_pulses(y, fs) == 2 * len(at)  # one per pulse and lead
    assert np.abs(y - clean).max() < 0.1  # pulses and their recharge gone, beats as they were
    untouched = clean.copy()
    assert reject_pulses(untouched, fs) == 0 and np.array_equal(untouched, clean)


def test_a_two_sample_pulse_and_a_negative_one() -> None:
    fs = 500.0
    x = np.zeros((1, 200))
    x[0, 50:52] = 3.0  # straddles two sampling instants
    x[0, 120] = -2.5
    assert reject_pulses(x, fs) == 2 and np.abs(x).max() < 1e-9
    y = np.zeros((1, 200))
    y[0, 60:63] = [0.75, 1.5, 0.75]  # 3 ms at 1 kHz: no single step of 1 mV, still a pulse
    assert reject_pulses(y, 1000.0) == 1 and np.abs(y).max() < 1e-9


def test_a_sharp_qrs_tip_of_two_samples_at_250_hz_is_not_a_pulse() -> None:
    """As in ICU records at 250 Hz: a 3 mV tip over two samples, standing 1.5 mV clear of its
    neighbours, is a QRS; a pulse that wide must stand twice as far clear."""
    x = np.array([[0.0, 0.2, 1.5, 3.0, 3.1, 1.4, 0.3, 0.0]])
    assert reject_pulses(x.copy(), 250.0) == 0
    assert max_width(250.0) == 2 and max_width(1000.0) == 3


def test_streaming_has_no_seams() -> None:
    """Frames of any size give what one pass over the whole signal gives, a pulse that straddles
    a frame end is still taken out, and no sample is lost or made up."""
    fs = 360.0
    x = _ecg(fs, 20.0, [0.5 + 0.75 * k for k in range(26)], seed=3)
    at = _pulses(x, fs, 0.75, 2.0, start_s=0.875)  # between the beats: on a QRS upstroke it would stay
    rej = PaceRejector(fs, 2)
    sizes = np.random.default_rng(1).integers(1, 120, 400)
    outs, pos = [], 0
    for n in sizes:
        if pos >= x.shape[1]:
            break
        outs.append(rej.process(x[:, pos : pos + n].astype(np.float32)))
        pos += n
    got = np.concatenate(outs, axis=1)
    assert x.shape[1] - rej.held <= got.shape[1] <= x.shape[1]
    ref = x.copy()
    assert reject_pulses(ref, fs) == 2 * len(at)
    assert np.allclose(got, ref[:, : got.shape[1]], atol=1e-6)
    assert rej.rejected == 2 * len(at)


def test_ecg_without_pulses_passes_as_it_came() -> None:
    """Sample for sample, and undelayed unless a frame ends on a steep jump."""
    fs = 250.0
    x = _ecg(fs, 30.0, [0.5 + 0.8 * k for k in range(37)], mv=0.8)
    rej = PaceRejector(fs, 2)
    n = int(0.2 * fs)
    outs = [rej.process(x[:, a : a + n]) for a in range(0, x.shape[1], n)]
    assert all(o.shape[1] == n for o in outs)
    assert np.array_equal(np.concatenate(outs, axis=1), x) and rej.rejected == 0


def test_nothing_is_judged_at_the_model_rate() -> None:
    """At 128 Hz (the daemon's windows, already cleaned at the sender's rate) a sample lasts
    7.8 ms: a tall narrow R wave can stand clear of its neighbours like a pulse."""
    x = np.zeros((1, 50))
    x[0, 20] = 4.0
    assert reject_pulses(x.copy(), 128.0) == 0
    rej = PaceRejector(128.0, 1)
    assert np.array_equal(rej.process(x), x)


def test_a_lead_without_signal_passes_as_it_came() -> None:
    rej = PaceRejector(250.0, 2)
    x = np.zeros((2, 100))
    x[1] = np.nan
    x[0, 40] = 4.0
    out = rej.process(x)
    assert np.isnan(out[1]).all() and rej.rejected == 1


def _through_the_stream(x: np.ndarray, fs: float) -> tuple[float, int]:
    """Longest pause-tracker gap after stream time 21 s, and pulses counted, for 0.2 s frames."""
    st = StreamState("bed-1", fs, 2, 90.0)
    n = int(0.2 * fs)
    longest, pulses = 0.0, 0
    for k, a in enumerate(range(0, x.shape[1] - n + 1, n)):
        frame = Frame("bed-1", k, 1000.0 + a / fs, fs, x[:, a : a + n].astype(np.float32))
        pulses += st.ingest(frame).pace_pulses
        now = 1000.0 + (a + n) / fs
        if now > 1021.0:
            longest = max(longest, st.pause.gap(now), st.pause.closed_gap)
    return longest, pulses


@pytest.mark.parametrize(("fs", "mv"), [(250.0, 2.0), (360.0, 3.0), (500.0, 4.0)])
def test_loss_of_capture_is_a_pause(fs: float, mv: float) -> None:
    """The pacemaker keeps firing at 70/min, the heart stops answering after 20 s: asystole.
    Smeared to the model rate, these pulses looked like QRS complexes to the pause tracker
    (longest gap 0.86 s before pulses were taken out)."""
    x = _ecg(fs, 40.0, [0.5 + 0.8 * k for k in range(25)])
    at = _pulses(x, fs, 60 / 70, mv)
    longest, pulses = _through_the_stream(x, fs)
    assert longest > 15.0
    assert pulses == 2 * len(at)


def test_real_ecg_passes_unchanged(data_dir: Path) -> None:
    """75 h of MIT-BIH Holter leads gave no pulse (README); two records here, streamed at their
    own rate: every sample comes out as it went in."""
    import wfdb

    for rec in ("mitdb/100", "mitdb/208"):
        sig, f = wfdb.rdsamp(str(data_dir / rec))
        x = sig.T.astype(np.float64)
        assert reject_pulses(x.copy(), f["fs"]) == 0, rec
        rej = PaceRejector(f["fs"], 2)
        n = int(0.2 * f["fs"])
        got = np.concatenate([rej.process(x[:, a : a + n]) for a in range(0, x.shape[1], n)], axis=1)
        assert np.array_equal(got, x[:, : got.shape[1]]) and got.shape[1] >= x.shape[1] - rej.held, rec


def test_pacemaker_pulses_of_a_paced_clinical_ecg(data_dir: Path) -> None:
    """PTB-XL 385 (PACE, 500 Hz): lead I shows pacemaker spikes of about 2 mV; they go."""
    import wfdb

    path = data_dir / "ptbxl" / "records500" / "00000" / "00385_hr"
    if not path.with_suffix(".hea").exists():
        pytest.skip(f"{path}.hea not found")
    sig, f = wfdb.rdsamp(str(path))
    lead_i = sig[:, f["sig_name"].index("I")][None, :].astype(np.float64)
    y = lead_i.copy()
    assert reject_pulses(y, f["fs"]) >= 2
    assert np.abs(y).max() < 1.0 < np.abs(lead_i).max()


def test_the_offline_api_takes_pulses_out_as_the_daemon_does() -> None:
    """``classify_and_detect`` and the rules resample through ``to_model_rate``: pulses must go
    there too, or a paced recording judged offline and live would differ."""
    from classifier.preprocess import to_model_rate

    fs = 250.0
    clean = _ecg(fs, 10.0, [0.5 + 0.8 * k for k in range(12)])
    paced = clean.copy()
    _pulses(paced, fs, 60 / 70, 3.0)
    a, _ = to_model_rate(clean[0], clean[1], fs)
    b, _ = to_model_rate(paced[0], paced[1], fs)
    assert np.abs(a - b).max() < 0.1  # resampled as they came: 1.36 mV


def _stream(x: np.ndarray, fs: float, sizes: list[int]) -> tuple[np.ndarray, PaceRejector]:
    rej = PaceRejector(fs, x.shape[0])
    outs, pos, k = [], 0, 0
    while pos < x.shape[1]:
        n = sizes[k % len(sizes)]
        outs.append(rej.process(x[:, pos : pos + n]))
        pos, k = pos + n, k + 1
    return np.concatenate(outs, axis=1), rej


@pytest.mark.parametrize(("fs", "shape"), [(500.0, [0.45, 1.2]), (1000.0, [0.3, 1.2, 0.3]), (250.0, [1.5])])
def test_a_pulse_cut_by_a_frame_end_at_any_offset(fs: float, shape: list[float]) -> None:
    """Its low first sample may already be given out when the rest arrives: the rest must still
    go (a stream cannot take back what it gave, so at most that low sample stays)."""
    for cut in range(1, 30):
        x = np.zeros((1, 60))
        x[0, 20 : 20 + len(shape)] = shape
        got, rej = _stream(x, fs, [cut + 5, 200])  # the first frame ends at every offset around it
        assert np.abs(got).max() <= min(shape) + 1e-9, cut
        assert rej.rejected == 1, cut


def test_one_sample_frames() -> None:
    """The smallest frames the wire allows: pulses still go, nothing is lost or reordered."""
    fs = 250.0
    x = _ecg(fs, 6.0, [0.5 + 0.8 * k for k in range(7)])
    at = _pulses(x, fs, 0.8, 3.0, start_s=0.9)
    got, rej = _stream(x, fs, [1])
    ref = x.copy()
    reject_pulses(ref, fs)
    assert rej.rejected == 2 * len(at) and x.shape[1] - rej.held <= got.shape[1]
    assert np.allclose(got, ref[:, : got.shape[1]])


def test_a_first_frame_that_is_all_held_back() -> None:
    """A new stream whose first frame is a few samples ending on a steep jump gives nothing out
    yet; the stream must take that, and the samples come later, in order."""
    st = StreamState("bed-1", 250.0, 1, 90.0)
    first = Frame("bed-1", 0, 1000.0, 250.0, np.array([[0.0, 0.0, 0.0, 2.0]], dtype=np.float32))
    assert st.ingest(first).written == 0
    rest = Frame("bed-1", 1, 1000.016, 250.0, np.zeros((1, 500), dtype=np.float32))
    st.ingest(rest)
    assert st.buffer.total == pytest.approx(504 * 128 / 250, abs=12)  # the resampler's own delay


class _Recorder:
    """A resampler that notes, at each call, how many samples came and the buffer's total."""

    def __init__(self, st: StreamState) -> None:
        self.st, self.inner, self.calls = st, st.resampler, []

    def process(self, frame: np.ndarray) -> np.ndarray:
        self.calls.append((frame.shape[1], self.st.buffer.total))
        return self.inner.process(frame)


@pytest.mark.parametrize("lost_s", [0.2, 2.0])  # under and over the gap tolerance
def test_held_samples_come_before_a_bridged_loss_and_a_gap(lost_s: float) -> None:
    """A lost frame (bridged) or a gap right after a frame that ended on a steep jump: the held
    samples go to the resampler before the fill is written, and none vanish."""
    st = StreamState("bed-1", 250.0, 1, 90.0)
    x = np.zeros((1, 50), dtype=np.float32)
    x[0, -1] = 2.0  # a steep jump at the frame's end: held
    st.ingest(Frame("bed-1", 0, 1000.0, 250.0, x))
    held, before = st.pacer.pending, st.buffer.total
    assert held > 0
    rec = _Recorder(st)
    st.resampler = rec  # type: ignore[assignment]
    st.ingest(Frame("bed-1", 2, 1000.2 + lost_s, 250.0, np.zeros((1, 50), dtype=np.float32)))
    assert rec.calls[0] == (held, before)  # the held samples first, before any fill
    assert st.pacer.pending == 0


def test_a_tall_narrow_qrs_at_250_hz_is_not_a_pulse() -> None:
    """An R wave of 5.2 mV, 12 ms wide at half height (LVH precordial leads), at every sampling
    phase: its tip stands clear of its neighbours like a pulse, but arrives on a steep upstroke.
    (At 7-8 mV one phase in nine is still taken for a pulse: README.)"""
    for phase in np.linspace(0.0, 0.004, 9):
        x = _ecg(250.0, 10.0, [0.5 + phase + 0.8 * k for k in range(12)], mv=4.0)
        assert reject_pulses(x.copy(), 250.0) == 0, phase


def test_no_anchor_no_replacement() -> None:
    """A lead that goes missing right after a pulse: the pulse stays rather than NaN spreading."""
    x = np.zeros((1, 40))
    x[0, 10] = 3.0
    x[0, 12:] = np.nan
    y = x.copy()
    assert reject_pulses(y, 250.0) == 0
    assert np.array_equal(np.isnan(y), np.isnan(x))
