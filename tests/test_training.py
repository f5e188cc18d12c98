"""Training smoke run (seconds) and the floor check of the committed model."""

import json
from pathlib import Path

import numpy as np
import pytest

from classifier import MLECGClassifier


def test_training_smoke_run(data_dir: Path, tmp_path: Path) -> None:
    from classifier.training.train import TrainConfig, train

    cfg = TrainConfig(max_epochs=1, epoch_size=48, batch_size=16, limit_records=2, out_dir=str(tmp_path))
    card = train(cfg)
    assert (tmp_path / "ecgnet.pt").exists() and (tmp_path / "model_card.json").exists()
    assert card["classes"] == ["NORMAL", "AF", "VTACH", "PAUSE"]
    assert card["training"]["stopped_by"] == "max epochs"
    assert json.loads((tmp_path / "model_card.json").read_text())["training"]["records_train"]
    clf = MLECGClassifier(tmp_path / "ecgnet.pt")
    assert clf.source == "ml"


def test_training_is_reproducible_from_seed(data_dir: Path, tmp_path: Path) -> None:
    import torch

    from classifier.training.train import TrainConfig, train

    for name in ("a", "b"):
        train(
            TrainConfig(
                max_epochs=1, epoch_size=32, batch_size=16, limit_records=2, out_dir=str(tmp_path / name), seed=3
            )
        )
    a = torch.load(tmp_path / "a" / "ecgnet.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "ecgnet.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_committed_model_does_not_regress(data_dir: Path) -> None:
    """The shipped model, on the fixed held-out test split, must reach its model card's figures."""
    from classifier.training.evaluate import evaluate_windows
    from models import DEFAULT_CARD

    card = json.loads(DEFAULT_CARD.read_text())
    floor = card.get("metrics_test")
    assert floor, "the model card has no test metrics: run `ecg-monitor evaluate --update-card`"
    result = evaluate_windows(split="test", data=data_dir)
    for cls, figures in floor["model"].items():
        got = result["model"][cls]
        for key in ("sens", "ppv"):
            if figures.get(key) is not None:
                assert got[key] >= figures[key] - 1e-9, f"{cls} {key} fell to {got[key]:.3f} from {figures[key]:.3f}"


def test_model_version_tells_settings_apart() -> None:
    from classifier.training.train import TrainConfig, _command, model_version

    base = TrainConfig(seed=0)
    assert model_version(base, "20260101") == model_version(TrainConfig(seed=0, out_dir="elsewhere"), "20260101")
    assert model_version(base, "20260101") != model_version(TrainConfig(seed=0, stretch=0.15), "20260101")
    assert _command(TrainConfig(seed=2, stretch=0.15)) == "ecg-monitor train --seed 2 --stretch 0.15"
    without = TrainConfig(seed=0, sources=("mitdb", "vfdb", "svdb"))
    assert model_version(base, "20260101") != model_version(without, "20260101")
    assert _command(without) == "ecg-monitor train --seed 0 --sources mitdb,vfdb,svdb"
    with pytest.raises(ValueError, match="sources"):
        TrainConfig(sources=("ptbxl",))
    budget = TrainConfig(seed=0, max_minutes=80)
    assert model_version(budget, "20260101") != model_version(base, "20260101")
    assert _command(budget) == "ecg-monitor train --seed 0 --max-minutes 80"
    with pytest.raises(ValueError, match="max_minutes"):
        TrainConfig(max_minutes=0)


def test_the_shipped_model_name_follows_from_its_card() -> None:
    """A settings field added later must not rename the models trained before it."""
    import dataclasses

    from classifier.training.train import TrainConfig, model_version
    from models import DEFAULT_CARD

    card = json.loads(DEFAULT_CARD.read_text())
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig(**{k: v for k, v in card["training"]["config"].items() if k in names})
    date = card["version"].split("-")[1]
    assert model_version(cfg, date) == card["version"]


def test_a_time_budget_ends_the_run_with_a_model(data_dir: Path, tmp_path: Path) -> None:
    """Past the budget the run stops after the epoch in hand, before min_epochs too, and still
    writes weights that load; the card says why it stopped."""
    from classifier.training.train import TrainConfig, train

    cfg = TrainConfig(
        max_epochs=3, epoch_size=32, batch_size=16, limit_records=2, out_dir=str(tmp_path), max_minutes=1e-6
    )
    card = train(cfg)
    assert card["training"]["stopped_by"] == "time budget"
    assert len(card["training"]["history"]) == 1 and card["training"]["best_epoch"] == 1
    assert MLECGClassifier(tmp_path / "ecgnet.pt").source == "ml"


def test_every_source_gets_an_equal_share_of_a_class() -> None:
    """Thousands of Holter AF windows from a few patients must not drown the handheld ones."""
    from classifier.training.dataset import WindowIndex, source_weights
    from classifier.training.records import Record

    def rec(name: str) -> Record:
        return Record(name, 128.0, np.zeros((2, 10), dtype=np.float32), [], np.zeros(0, dtype=np.int64))

    records = [rec("mitdb/201"), rec("mitdb/202"), rec("cinc2017/A00307")]
    owner = np.array([0] * 60 + [1] * 30 + [2] * 10)
    z = np.zeros(owner.size, dtype=np.int64)
    idx = WindowIndex(owner, z, z, z)
    w = source_weights(records, idx, np.arange(owner.size))
    assert w.sum() == pytest.approx(1.0)
    assert w[owner < 2].sum() == pytest.approx(0.5) and w[owner == 2].sum() == pytest.approx(0.5)
    assert np.allclose(w[owner < 2], w[0])  # within a source, windows are equally likely
    one = source_weights(records, idx, np.arange(90))
    assert np.allclose(one, 1 / 90)
