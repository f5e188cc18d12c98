"""The model is verified before it is loaded: SHA-256 of the weights against the model card.

Real files (copies of the shipped weights and card), the real daemon and the real CLI.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from classifier.inference import DIGEST_KEY, MLECGClassifier, ModelUnavailableError
from models import DEFAULT_CARD, DEFAULT_WEIGHTS
from monitor.config import ConfigError, MonitorConfig
from monitor.daemon import Monitor
from tests.conftest import CLI, free_port
from tests.helpers import running_monitor

FS = 250.0


def _copy_model(dst: Path) -> Path:
    """A copy of the shipped weights and card in ``dst``; returns the weights' path."""
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DEFAULT_CARD, dst / DEFAULT_CARD.name)
    return Path(shutil.copyfile(DEFAULT_WEIGHTS, dst / DEFAULT_WEIGHTS.name))


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _noise() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(0, 0.05, int(20 * FS)), rng.normal(0, 0.05, int(20 * FS))


def test_shipped_card_records_the_shipped_weights_digest() -> None:
    card = json.loads(DEFAULT_CARD.read_text())
    assert card[DIGEST_KEY] == hashlib.sha256(DEFAULT_WEIGHTS.read_bytes()).hexdigest(), (
        "models/ecgnet.pt changed without updating weights_sha256 in models/model_card.json"
    )


def test_a_verified_copy_loads(tmp_path: Path) -> None:
    clf = MLECGClassifier(_copy_model(tmp_path), precision="float32")
    assert clf.source == "ml"
    assert clf.integrity_error is None and clf.load_error is None
    assert clf.weights_sha256 == json.loads(DEFAULT_CARD.read_text())[DIGEST_KEY]


def test_one_flipped_byte_is_refused_and_the_rules_take_over(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    weights = _copy_model(tmp_path)
    _flip_byte(weights)
    good = json.loads(DEFAULT_CARD.read_text())[DIGEST_KEY]
    bad = hashlib.sha256(weights.read_bytes()).hexdigest()
    with caplog.at_level(logging.WARNING, logger="classifier.inference"):
        clf = MLECGClassifier(weights, precision="float32")
    assert clf.source == "rules" and clf.version == "rules" and clf.weights_sha256 is None
    assert clf.integrity_error is not None and clf.load_error == clf.integrity_error
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1, caplog.records
    assert good[:12] in errors[0] and bad[:12] in errors[0] and str(weights) in errors[0]
    result = clf.classify(*_noise(), fs=FS)
    assert result.source == "rules" and "fallback" in result.explanation


@pytest.mark.parametrize("damage", ["no digest", "empty digest", "no card"])
def test_weights_that_cannot_be_verified_are_refused(tmp_path: Path, damage: str) -> None:
    weights = _copy_model(tmp_path)
    card_path = tmp_path / DEFAULT_CARD.name
    card = json.loads(card_path.read_text())
    if damage == "no card":
        card_path.unlink()
    elif damage == "no digest":
        del card[DIGEST_KEY]
        card_path.write_text(json.dumps(card))
    else:
        card[DIGEST_KEY] = ""
        card_path.write_text(json.dumps(card))
    clf = MLECGClassifier(weights, precision="float32")
    assert clf.source == "rules"
    assert clf.integrity_error is not None and "verify" in clf.integrity_error


def test_a_missing_file_is_not_an_integrity_failure(tmp_path: Path) -> None:
    clf = MLECGClassifier(tmp_path / "ecgnet.pt")
    assert clf.source == "rules" and clf.load_error is not None and clf.integrity_error is None


async def test_daemon_counts_the_refusal_and_runs_on_the_rules(tmp_path: Path) -> None:
    weights = _copy_model(tmp_path)
    _flip_byte(weights)
    async with asyncio.timeout(60), running_monitor(model_path=str(weights), precision="float32") as h:
        assert h.metric("ecg_model_integrity_failures_total") == 1.0
        assert h.monitor.model_version == "rules"
        info = {"version": "rules", "source": "rules", "precision": "float32", "sha256": "-"}
        assert h.metric("ecg_model_info", info) == 1.0


async def test_daemon_with_a_verified_model_counts_nothing(tmp_path: Path) -> None:
    weights = _copy_model(tmp_path)
    digest = json.loads(DEFAULT_CARD.read_text())[DIGEST_KEY]
    cfg = MonitorConfig(
        ingest=(f"tcp://127.0.0.1:{free_port()}",),
        alarms=(f"tcp://127.0.0.1:{free_port()}",),
        metrics_port=0,
        console=False,
        model_path=str(weights),
        precision="float32",
        require_model=True,
    )
    registry = CollectorRegistry()
    async with asyncio.timeout(60), Monitor(cfg, registry=registry) as mon:
        assert mon.classifier is not None and mon.classifier.source == "ml"
        assert registry.get_sample_value("ecg_model_integrity_failures_total") == 0.0
        labels = {"version": mon.model_version, "source": "ml", "precision": "float32", "sha256": digest[:12]}
        assert registry.get_sample_value("ecg_model_info", labels) == 1.0


async def test_require_model_refuses_to_start_in_process(tmp_path: Path) -> None:
    weights = _copy_model(tmp_path)
    _flip_byte(weights)
    cfg = MonitorConfig(
        ingest=(f"tcp://127.0.0.1:{free_port()}",),
        alarms=(f"tcp://127.0.0.1:{free_port()}",),
        metrics_port=0,
        console=False,
        model_path=str(weights),
        require_model=True,
    )
    registry = CollectorRegistry()
    with pytest.raises(ModelUnavailableError, match="refusing to start"):
        async with asyncio.timeout(60), Monitor(cfg, registry=registry):
            pytest.fail("the daemon started with a refused model")
    assert registry.get_sample_value("ecg_model_integrity_failures_total") == 1.0


def test_require_model_from_the_environment_and_its_contradiction() -> None:
    assert MonitorConfig.load(env={"ECG_MONITOR_REQUIRE_MODEL": "true"}).require_model is True
    assert MonitorConfig.load(env={}).require_model is False
    with pytest.raises(ConfigError, match="require_model"):
        MonitorConfig.load(env={}, require_model=True, rules_only=True)


def test_cli_require_model_exits_non_zero_with_a_clear_message(tmp_path: Path) -> None:
    weights = _copy_model(tmp_path)
    _flip_byte(weights)
    args = ["run", "--require-model", "--model", str(weights), "--no-console", "--metrics-port", "0"]
    args += ["--ingest", f"tcp://127.0.0.1:{free_port()}", "--alarms", f"tcp://127.0.0.1:{free_port()}"]
    # --duration 5: a daemon that ignored --require-model would run 5 s and exit 0.
    out = subprocess.run([*CLI, *args, "--duration", "5"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stderr
    assert "refusing to start" in out.stderr and "does not match" in out.stderr
    assert "CRITICAL" in out.stderr and "ERROR" in out.stderr
    assert "monitor up" not in out.stderr  # nothing was bound or served


def test_a_card_for_another_input_rate_is_not_loaded(tmp_path: Path) -> None:
    weights = _copy_model(tmp_path)
    card_path = tmp_path / DEFAULT_CARD.name
    card = json.loads(card_path.read_text())
    card["input"]["fs_hz"] = 250.0  # the digest still matches: this is a wrong card, not tampering
    card_path.write_text(json.dumps(card))
    clf = MLECGClassifier(weights, precision="float32")
    assert clf.source == "rules" and clf.integrity_error is None
    assert clf.load_error is not None and "250.0 Hz" in clf.load_error


def test_af_detector_is_verified_like_the_weights(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The shipped card vouches for models/af_rr.json; an altered copy is refused (AF then comes
    from the network), with an ERROR naming both digests."""

    from classifier.inference import _load_af_model
    from models import DEFAULT_AF_RR, DEFAULT_CARD

    assert _load_af_model(None) is not None
    shutil.copy(DEFAULT_CARD, tmp_path / "model_card.json")
    bad = tmp_path / "af_rr.json"
    bad.write_bytes(DEFAULT_AF_RR.read_bytes().replace(b'"threshold": 0.', b'"threshold": 0.0', 1))
    with caplog.at_level(logging.ERROR, logger="classifier.inference"):
        assert _load_af_model(bad) is None
    assert any("af_rr_sha256" in r.getMessage() for r in caplog.records if r.levelno == logging.ERROR)
