import logging
from pathlib import Path

import numpy as np
import pytest

from classifier import MLECGClassifier
from simulators.synthetic import Episode, PatientSpec, SyntheticPatient

FS = 250.0


@pytest.fixture(scope="module")
def clf() -> MLECGClassifier:
    c = MLECGClassifier()
    assert c.source == "ml", f"the shipped model did not load: {c.load_error}"
    return c


def _signal(seconds: float, episodes: list[Episode] | None = None, fs: float = FS, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return SyntheticPatient(PatientSpec(72.0, episodes or []), fs, rng).chunk(int(seconds * fs)).astype(np.float64)


def test_returns_the_documented_tuple(clf: MLECGClassifier) -> None:
    x = _signal(30)
    event, conf, index, why = clf.classify_and_detect(x[0], x[1], fs=FS)
    assert event in ("AF", "VTACH", "PAUSE", "NORMAL")
    assert 0.0 <= conf <= 1.0
    assert index is None or 0 <= index < x.shape[1]
    # Each part says who found what: the rhythm (AF), the network, the rules.
    assert why.startswith("rhythm: not AF") and "; model: NORMAL" in why and "; rules: NORMAL" in why


def test_af_is_judged_from_the_rhythm(clf: MLECGClassifier) -> None:
    """Irregularly irregular R-R over 60 s is AF even where the network sees no AF (it never learnt
    AF beyond its few training patients); a regular rhythm is not."""
    assert clf.af_model is not None, "models/af_rr.json did not load"
    af = _signal(60, [Episode("AF", 0.0, 60.0)], seed=4)
    res = clf.classify(af[0], af[1], FS)
    assert res.event == "AF" and res.explanation.startswith("rhythm: AF (R-R over 60 s")
    sinus = _signal(60, seed=4)
    assert clf.classify(sinus[0], sinus[1], FS).event == "NORMAL"


def test_robust_inputs(clf: MLECGClassifier) -> None:
    x = _signal(90)
    assert clf.classify(x[0], None, FS).event in ("AF", "VTACH", "PAUSE", "NORMAL")  # lead 2 missing
    assert clf.classify(x[0], np.zeros_like(x[1]), FS).event in ("AF", "VTACH", "PAUSE", "NORMAL")  # lead off
    y = x.copy()
    y[:, 3000:3500] = np.nan  # a NaN gap
    assert clf.classify(y[0], y[1], FS).source == "ml"
    z = _signal(10.0, fs=360.0)  # shortest window, another rate
    assert clf.classify(z[0], z[1], 360.0).source == "ml"
    with pytest.raises(ValueError, match="shorter"):
        clf.classify(x[0, :1000], x[1, :1000], FS)


def test_inputs_no_ecg_device_sends_are_refused_clearly(clf: MLECGClassifier) -> None:
    """A (2, n) array as one lead was read end to end as one 2n-sample lead; 1 Hz read 20 s of
    ECG as 83 minutes and called a PAUSE. Both classifiers say what is wrong instead."""
    from classifier import RuleBasedClassifier

    x = _signal(20)
    for c in (clf, RuleBasedClassifier()):
        with pytest.raises(ValueError, match=r"one lead \(1-D\), got shape \(2, 5000\)"):
            c.classify_and_detect(x, fs=FS)
        for fs in (1.0, 10_000.0, float("nan"), 0.0):
            with pytest.raises(ValueError, match="sampling rate must be 50-2000 Hz"):
                c.classify_and_detect(x[0], x[1], fs=fs)
        with pytest.raises(ValueError, match="leads differ in length"):
            c.classify_and_detect(x[0], x[1, :-1], fs=FS)
        assert c.classify_and_detect(x[0][None, :], x[1][:, None], fs=FS)[0]  # (1, n) and (n, 1) are one lead


def test_event_index_counts_input_samples(clf: MLECGClassifier) -> None:
    x = _signal(60, [Episode("PAUSE", 40.0, 45.0)], fs=360.0)
    c = clf.classify(x[0], x[1], 360.0)
    if c.event == "PAUSE":
        assert c.event_index is not None and abs(c.event_index / 360.0 - 40.0) < 2.0


def test_batch_equals_single_calls(clf: MLECGClassifier) -> None:
    a, b = _signal(20, seed=1), _signal(40, [Episode("VTACH", 20.0, 40.0)], seed=2)
    batch = clf.classify_batch([(a[0], a[1], FS, None), (b[0], b[1], FS, 5000)])
    single = [clf.classify(a[0], a[1], FS), clf.classify(b[0], b[1], FS, 5000)]
    assert [r.event for r in batch] == [r.event for r in single]
    np.testing.assert_allclose([r.confidence for r in batch], [r.confidence for r in single], atol=1e-5)


def test_missing_or_corrupt_model_falls_back_to_rules(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    bad = tmp_path / "ecgnet.pt"
    bad.write_bytes(b"not a model")
    x = _signal(20)
    for path in (tmp_path / "missing.pt", bad):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="classifier.inference"):
            c = MLECGClassifier(path)
            r1 = c.classify(x[0], x[1], FS)
            c.classify(x[0], x[1], FS)
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert len(warnings) == 1  # one warning (an ERROR for a model that fails its check), not one per call
        assert c.source == "rules" and r1.source == "rules"
        assert "fallback" in r1.explanation


def test_model_path_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ECG_MONITOR_MODEL", str(tmp_path / "nowhere.pt"))
    c = MLECGClassifier()
    assert c.model_path == tmp_path / "nowhere.pt" and c.source == "rules"


def test_weights_load_without_pickle() -> None:
    import torch

    from models import DEFAULT_WEIGHTS

    state = torch.load(DEFAULT_WEIGHTS, weights_only=True)
    assert all(isinstance(v, torch.Tensor) for v in state.values())
