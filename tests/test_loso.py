"""The network's leave-one-source-out scoring (``evaluate --loso``)."""

import json
import shutil
from pathlib import Path

import pytest

from classifier.training.loso import held_out_source, run
from models import DEFAULT_CARD, DEFAULT_WEIGHTS


def _card(sources: list[str]) -> dict[str, object]:
    return {"training": {"config": {"sources": sources}}}


def test_the_left_out_source_is_read_from_the_card() -> None:
    assert held_out_source(_card(["mitdb", "svdb", "cinc2017"])) == "vfdb"
    with pytest.raises(ValueError, match="exactly one"):
        held_out_source(_card(["mitdb", "vfdb", "svdb", "cinc2017"]))
    with pytest.raises(ValueError, match="exactly one"):
        held_out_source(_card(["mitdb", "svdb"]))


def test_no_runs_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no run folders"):
        run(tmp_path, tmp_path / "loso_network.md")


def test_scores_a_run_on_the_source_it_left_out(data_dir: Path, tmp_path: Path) -> None:
    """The shipped weights, relabelled as a run without vfdb: the scoring must find vfdb, score
    every labelled window of it, and on its test split agree with the shipped network exactly
    (same weights, same thresholds), while the rules beside them differ."""
    run_dir = tmp_path / "runs" / "no-vfdb"
    run_dir.mkdir(parents=True)
    shutil.copy(DEFAULT_WEIGHTS, run_dir / "ecgnet.pt")
    card = json.loads(DEFAULT_CARD.read_text())
    card["training"]["config"]["sources"] = ["mitdb", "svdb", "cinc2017"]
    (run_dir / "model_card.json").write_text(json.dumps(card))

    out = run(tmp_path / "runs", tmp_path / "loso_network.md", data_dir)

    assert list(out["sources"]) == ["vfdb"]
    r = out["sources"]["vfdb"]
    assert r["records"] == 22 and r["test"]["records"] == 3
    whole, test = r["whole"]["loso"], r["test"]["loso"]
    assert whole["windows"] > test["windows"] > 0
    assert test == r["test"]["shipped"]
    assert test["events"]["VTACH"]["n"] > 0 and test["events"]["VTACH"]["sens"] > 0.5
    assert r["test"]["rules"] != test
    md = (tmp_path / "loso_network.md").read_text()
    assert "| vfdb | whole source (22 records) | network without it |" in md
    assert json.loads((tmp_path / "loso_network.json").read_text()) == out


def test_the_source_report_quotes_the_network_runs() -> None:
    """``evaluate --sources`` quotes loso_network.json when it exists and says so when it does not."""
    import numpy as np

    from classifier.training.loso import score
    from classifier.training.system_eval import _render_loso

    s = score(np.array([0, 2, 2, 0]), np.array([0, 2, 0, 0]))
    assert s["normal_called_event"] == 1 and s["events"]["VTACH"]["sens"] == 1.0 and s["events"]["AF"]["sens"] is None
    net = {
        "shipped": "x",
        "sources": {
            "svdb": {
                "records": 78,
                "whole": {"loso": s},
                "test": {"records": 16, "loso": s, "shipped": s, "rules": s},
            }
        },
    }
    with_runs = "\n".join(_render_loso({"missing": "af_rr.json"}, net))
    assert "### The network" in with_runs
    assert (
        "| svdb | whole source (78 records) | network without it | 33.3% (1/3) | – | 100.0% / 50.0% (1) |" in with_runs
    )
    assert "not retrained" in "\n".join(_render_loso({"missing": "af_rr.json"}, {}))
