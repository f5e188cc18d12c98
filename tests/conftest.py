"""Shared fixtures: the PhysioNet folder, free loopback ports and a real mosquitto broker."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.localnet import Mosquitto, free_port, wait_port  # noqa: F401  (tests import them from here)
from classifier.training.records import data_dir as _data_dir

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-m", "app.cli"]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = _data_dir()
    if not (d / "mitdb").is_dir():
        pytest.skip(f"PhysioNet data not found at {d} (set ECG_DATA_DIR to the folder holding mitdb/, vfdb/, svdb/)")
    return d


class Broker(Mosquitto):
    """A mosquitto on a free loopback port that keeps it across stop/start; fails the test if missing."""

    def __init__(self, tmp: Path) -> None:
        try:
            super().__init__(tmp)
        except FileNotFoundError as exc:
            pytest.fail(str(exc))


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    b = Broker(tmp_path)
    b.start()
    yield b
    b.stop()
