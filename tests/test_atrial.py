"""Atrial evidence before each beat: P waves repeat in sinus rhythm and ectopy, AF has none.

Synthetic leads pin the geometry; real records (skipped without the data) show the separation
that the AF detector is fitted on.
"""

from __future__ import annotations

import numpy as np

from classifier.atrial import ATRIAL_FEATURES, atrial_features
from classifier.constants import MODEL_FS
from classifier.dsp import bandpass

FS = MODEL_FS
RNG = np.random.default_rng(3)


def _lead(beat_s: np.ndarray, p_wave: bool, f_waves: bool, n_s: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """A lead (mV) with a 1 mV QRS at each beat, a 0.15 mV P wave 0.18 s before it when asked,
    and fibrillatory waves otherwise."""
    t = np.arange(int(n_s * FS)) / FS
    x = RNG.normal(0, 0.01, t.size)
    for b in beat_s:
        x += 1.0 * np.exp(-(((t - b) / 0.012) ** 2))
        if p_wave:
            x += 0.15 * np.exp(-(((t - b + 0.18) / 0.03) ** 2))
    if f_waves:  # disorganised atrial activity: 4-9 Hz band-limited noise, about 0.05 mV RMS
        f = bandpass(RNG.normal(0, 1, t.size), FS, 4.0, 9.0)
        x += 0.05 * f / f.std()
    return x, np.round(beat_s * FS).astype(np.int64)


def test_p_waves_repeat_in_sinus_and_ectopy_but_not_in_af() -> None:
    sinus = 0.5 + np.arange(12) * 0.8
    ectopy = sinus.copy()
    ectopy[4] -= 0.25  # a premature atrial beat keeps a P wave before it
    f_sin = atrial_features(*_lead(sinus, p_wave=True, f_waves=False), FS)
    f_ect = atrial_features(*_lead(ectopy, p_wave=True, f_waves=False), FS)
    f_af = []  # one AF window of 10 beats is a noisy sample: judge 30 of them
    for _ in range(30):
        af = 0.5 + np.cumsum(RNG.uniform(0.45, 1.1, 12))
        f_af.append(atrial_features(*_lead(af[af < 9.8], p_wave=False, f_waves=True), FS))
    af_median = np.median(f_af, axis=0)
    cons, amp = ATRIAL_FEATURES.index("p_consistency"), ATRIAL_FEATURES.index("p_amplitude")
    assert f_sin[cons] > 0.9 and f_ect[cons] > 0.9
    assert af_median[cons] < 0.5
    assert 0.1 < f_sin[amp] < 0.25  # the 0.15 mV P wave against the 1 mV QRS
    assert af_median[amp] < f_sin[amp] / 2


def test_too_few_beats_is_missing_evidence_not_absent_p_waves() -> None:
    x, beats = _lead(np.array([0.1, 4.0, 8.0]), p_wave=True, f_waves=False)
    assert np.isnan(atrial_features(x, beats, FS)).all()
    assert np.isnan(atrial_features(np.zeros(0), np.zeros(0, dtype=np.int64), FS)).all()


def test_real_af_and_sinus_windows_separate(data_dir) -> None:  # type: ignore[no-untyped-def]
    from classifier.training.af_rr import _beats
    from classifier.training.records import load_record

    def consistency(record: str, want_af: bool) -> float:
        rec = load_record(record, data_dir)
        beats, lead = _beats(rec.signal)
        af = np.zeros(rec.signal.shape[1], dtype=bool)
        for e in rec.episodes:
            if e.event == "AF":
                af[e.start : e.end] = True
        w = int(10 * FS)
        vals = []
        for lo in range(0, lead.size - w + 1, w):
            if af[lo : lo + w].all() == want_af and af[lo : lo + w].any() == want_af:
                b = beats[(beats >= lo) & (beats < lo + w)] - lo
                vals.append(atrial_features(lead[lo : lo + w], b, FS)[0])
        assert len(vals) >= 20, record
        return float(np.nanmedian(vals))

    # mitdb/219: AF and sinus stretches of one patient; mitdb/100: sinus with a few ectopic beats.
    assert consistency("mitdb/219", want_af=True) < 0.5
    assert consistency("mitdb/219", want_af=False) > 0.8
    assert consistency("mitdb/100", want_af=False) > 0.9


def test_the_models_filtered_input_gives_the_same_evidence() -> None:
    """The daemon reads the atrial evidence off the network's band-passed, robust-scaled input
    instead of filtering the lead again: the features are ratios within one lead, so they agree."""
    from classifier.preprocess import normalize_batch

    beats_s = 0.5 + np.arange(12) * 0.8
    x, _ = _lead(beats_s, p_wave=True, f_waves=False)
    seg = np.stack([x, np.zeros_like(x)])[None]
    model_input, beats = normalize_batch(seg, np.array([[True, False]]))
    raw = atrial_features(x, beats[0], FS)
    via_input = atrial_features(model_input[0, 0], beats[0], FS, filtered=True)
    assert np.isfinite(raw).all()
    np.testing.assert_allclose(via_input, raw, rtol=1e-5, atol=1e-6)
