"""The ecg-monitor command as a user runs it: help, clear errors, offline classification."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import CLI

COMMANDS = [
    "run",
    "simulate",
    "replay",
    "subscribe",
    "score",
    "classify",
    "train",
    "pack-data",
    "evaluate",
    "bench",
    "demo",
]


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout)


def test_top_level_help_lists_every_command() -> None:
    out = _run("--help")
    assert out.returncode == 0
    for c in COMMANDS:
        assert c in out.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_each_command_has_help(command: str) -> None:
    out = _run(command, "--help")
    assert out.returncode == 0 and "usage: ecg-monitor" in out.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "--ingest", "http://x:1"], "scheme"),
        (["run", "--hop", "-1"], "positive"),
        (["run", "--shard", "5/2", "--no-console"], "shard"),
        (["simulate", "--scenario", "zzz"], "invalid choice"),
        (["simulate", "--frame", "0.5", "--duration", "1"], "frame_s"),
        (["replay", "/nonexistent/record"], "no WFDB record"),
        (["classify", "/nonexistent/record"], "no WFDB record"),
        (["score", "--truth", "/nope.jsonl", "--alarms", "/nope.jsonl"], "No such file"),
        (["frobnicate"], "invalid choice"),
        (["train", "--pack", "/nonexistent/pack.zip"], "not a readable pack"),
        (["train", "--stretch", "1.5"], "must be in [0, 1)"),
        (["train", "--sources", "mitdb,ptbxl"], "sources must be some of mitdb, vfdb, svdb, cinc2017"),
        (["pack-data", "--out", "/tmp/x.zip", "--splits", "train,holdout"], "--splits"),
    ],
)
def test_bad_arguments_exit_2_without_traceback(args: list[str], needle: str) -> None:
    out = _run(*args)
    assert out.returncode == 2, out.stderr
    assert needle in out.stderr
    assert "Traceback" not in out.stderr


def test_run_with_bad_config_file_names_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[monitor]\nwindow_s = 500.0\n")
    out = _run("run", "--config", str(cfg), "--no-console")
    assert out.returncode == 2 and "window_s" in out.stderr and "Traceback" not in out.stderr


def test_classify_a_real_record_json(data_dir: Path) -> None:
    out = _run("classify", str(data_dir / "mitdb" / "100"), "--start", "60", "--json")
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    assert res["event"] in ("NORMAL", "AF", "VTACH", "PAUSE")
    assert res["duration_s"] == pytest.approx(90.0, abs=0.01)
    assert res["source"] == "ml"


def test_classify_rules_text(data_dir: Path) -> None:
    out = _run("classify", str(data_dir / "mitdb" / "100"), "--rules")
    assert out.returncode == 0 and "bpm" in out.stdout
