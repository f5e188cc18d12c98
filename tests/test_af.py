"""The R-R AF detector: its features tell AF from ectopy, its fit is reproducible and its file
round-trips. Synthetic R-R series only: the figures on real records are in reports/af_rr.md."""

from __future__ import annotations

import json

import numpy as np
import pytest

from classifier.af import FEATURES, RR_FEATURES, AfRhythmModel, MlpFit, rr_features, window_features

RNG = np.random.default_rng(0)


def sinus(n: int = 40, rr: float = 0.8) -> np.ndarray:
    return rr * (1 + 0.02 * np.sin(np.arange(n) / 3)) + RNG.normal(0, 0.01, n)


def bigeminy(n: int = 40, rr: float = 0.8) -> np.ndarray:
    """Every other beat premature, then a compensatory pause."""
    return np.where(np.arange(n) % 2 == 0, 0.6 * rr, 1.4 * rr)


def isolated_ectopy(n: int = 40, rr: float = 0.8) -> np.ndarray:
    x = sinus(n, rr)
    x[10], x[11] = 0.55 * rr, 1.45 * rr
    x[25], x[26] = 0.6 * rr, 1.4 * rr
    return x


def af(n: int = 40) -> np.ndarray:
    return np.clip(RNG.normal(0.65, 0.18, n), 0.3, 1.6)


def test_features_tell_af_from_ectopy() -> None:
    f = {
        name: rr_features(gen())
        for name, gen in [("sinus", sinus), ("big", bigeminy), ("ect", isolated_ectopy), ("af", af)]
    }
    assert all(v is not None and v.shape == (len(RR_FEATURES),) for v in f.values())
    col = {name: i for i, name in enumerate(RR_FEATURES)}
    # Isolated ectopy: most intervals regular, and regular once premature pairs are taken out.
    assert f["ect"][col["regular_frac"]] > 0.8 and f["ect"][col["clean_irregularity"]] < 0.05  # type: ignore[index]
    # Bigeminy: successive differences alternate.
    assert f["big"][col["alternation"]] < -0.9  # type: ignore[index]
    # AF: irregular even with premature pairs taken out.
    assert f["af"][col["clean_irregular_frac"]] > 0.4 and f["af"][col["regular_frac"]] < 0.4  # type: ignore[index]
    assert f["big"][col["sd_ratio"]] <= 5.0  # type: ignore[index]  # capped, not 1e5
    assert rr_features(np.full(5, 0.8)) is None  # too few intervals to judge


def test_fit_separates_and_is_reproducible_and_round_trips(tmp_path) -> None:  # type: ignore[no-untyped-def]
    pytest.importorskip("torch")
    from classifier.training.af_rr import choose_threshold, fit_mlp

    def rows(k: int) -> tuple[np.ndarray, np.ndarray]:
        gens = [af, sinus, bigeminy, isolated_ectopy]
        xs, ys = [], []
        for i in range(k):
            g = gens[i % 4]
            # Atrial evidence that says nothing (or is missing): the fit must stand on the R-R.
            atrial = None if i % 3 == 0 else RNG.uniform([0.2, 0.0], [1.0, 0.2])
            xs.append(window_features(g(), atrial))
            ys.append(int(g is af))
        return np.array(xs), np.array(ys, dtype=np.int8)

    x, y = rows(400)
    xv, yv = rows(200)
    assert np.isnan(x).any()  # rows without atrial evidence are in the fit
    a = fit_mlp(x, y, xv, yv, seed=1)
    b = fit_mlp(x, y, xv, yv, seed=1)
    assert all(np.array_equal(wa, wb) for (wa, _), (wb, _) in zip(a.layers, b.layers, strict=True))
    t = choose_threshold(a.prob(xv), yv, np.array(["s"] * len(yv)))
    pred = a.prob(xv) >= t
    assert (pred == (yv == 1)).mean() > 0.95
    fit = MlpFit(a.mean, a.scale, a.layers, t)
    path = tmp_path / "af.json"
    path.write_text(
        json.dumps({"version": "t", "features": list(FEATURES), "short": fit.to_json(), "long": fit.to_json()})
    )
    m = AfRhythmModel.load(path)
    verdict = m.judge(af(60), 45.0)
    assert verdict is not None and verdict.af and "R-R over 45 s" in verdict.explanation
    assert m.judge(sinus(60), 45.0) is not None and not m.judge(sinus(60), 45.0).af  # type: ignore[union-attr]
    bad = fit.to_json()
    bad["layers"][0]["w"] = bad["layers"][0]["w"][:-1]
    with pytest.raises(ValueError):
        MlpFit.from_json(bad)
