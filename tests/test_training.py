"""Training smoke run (seconds) and the floor check of the committed model."""

import json
from pathlib import Path

import pytest

from classifier import MLECGClassifier


def test_training_smoke_run(data_dir: Path, tmp_path: Path) -> None:
    from classifier.training.train import TrainConfig, train

    cfg = TrainConfig(max_epochs=1, epoch_size=48, batch_size=16, limit_records=2, out_dir=str(tmp_path))
    card = train(cfg)
    assert (tmp_path / "ecgnet.pt").exists() and (tmp_path / "model_card.json").exists()
    assert card["classes"] == ["NORMAL", "AF", "VTACH", "PAUSE"]
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
