"""The shipped classifier holds the accuracy floor its model card records.

``ecg-monitor evaluate --sources`` measures every acceptance figure on held-out data and writes
the model's figures into ``models/model_card.json`` as ``accuracy_floor``. This test re-measures
the figures that take about a minute (AF on the whole CinC 2017 test split and its normal
windows, every PTB-XL figure) with the code and weights as they are now, and fails when any is
worse than the floor. The MIT-BIH and CinC 2015 replays (about 5 min) are re-measured by the
evaluation itself, which rewrites the floor and the report together.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from classifier.training.system_eval import (
    FLOOR_KEY,
    FULL_CINC2017_MAX,
    Target,
    cinc2017_targets,
    eval_cinc2017,
    eval_ptbxl,
    floor,
    make_classifiers,
    normal_target,
    ptbxl_targets,
)

ROOT = Path(__file__).resolve().parents[1]


def _card_floor() -> dict[str, Any]:
    card = json.loads((ROOT / "models" / "model_card.json").read_text())
    assert FLOOR_KEY in card, "the model card has no accuracy floor: run `ecg-monitor evaluate --sources`"
    return card[FLOOR_KEY]  # type: ignore[no-any-return]


def test_the_floor_is_the_reports_figures_for_the_shipped_model() -> None:
    report = json.loads((ROOT / "reports" / "evaluation_sources.json").read_text())
    card = json.loads((ROOT / "models" / "model_card.json").read_text())
    assert not report["quick"]
    assert report["model_version"] == card["version"]
    assert _card_floor() == floor(report)
    assert len(_card_floor()["figures"]) == len(report["targets"]) >= 15


def _one_record(t: Target) -> float:
    """How far one record moves the figure: float32 kernels differ between CPUs, and a record on
    the decision boundary may flip. F1 moves by at most about 1/positives."""
    k_n = t.detail.split()[0]
    if "/" in k_n:
        return 1.0 / max(1, int(k_n.split("/")[1]))
    return 1.0 / max(1, int(k_n))  # "145 AF of 1589 records": F1 over 145 positives


@pytest.mark.slow
def test_the_shipped_classifier_holds_its_floor(data_dir: Path) -> None:
    figures = _card_floor()["figures"]
    clfs = make_classifiers()
    if clfs["model"].source != "ml":  # type: ignore[union-attr]
        pytest.fail(f"shipped model not loaded: {clfs['model'].load_error}")  # type: ignore[union-attr]
    c17 = eval_cinc2017(data_dir, clfs, FULL_CINC2017_MAX)
    ptb = eval_ptbxl(data_dir, clfs, None)
    now = [
        *cinc2017_targets(c17),
        *ptbxl_targets(ptb),
        normal_target("cinc2017", c17["normal_windows"]),
        normal_target("ptbxl", {k: ptb[k]["norm_false"] for k in ("model", "rules")}),
    ]
    worse = []
    for t in now:
        key = f"{t.section}: {t.name}"
        assert key in figures, f"{key} is not in the floor"
        was = figures[key]["value"]
        assert figures[key]["detail"].split()[-1] == t.detail.split()[-1]  # same kind of count
        if t.model is None or was is None:
            assert t.model is None and was is None, key
            continue
        slack = _one_record(t)
        if (t.higher and t.model < was - slack) or (not t.higher and t.model > was + slack):
            worse.append(f"{key}: {t.model:.4f} now, floor {was:.4f} ({figures[key]['detail']})")
    assert not worse, "below the accuracy floor:\n" + "\n".join(worse)
