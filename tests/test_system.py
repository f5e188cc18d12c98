"""Whole-system runs of the real commands, as separate processes on loopback ZeroMQ."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import CLI, free_port, wait_port


def _start(*args: str, out: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [*CLI, *args], stdout=out.open("w") if out else subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


def _stop(p: subprocess.Popen[str], timeout: float = 30) -> int:
    p.send_signal(signal.SIGTERM)
    try:
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        raise


def _daemon(tmp: Path, zin: int, zout: int, metrics: int = 0) -> subprocess.Popen[str]:
    d = _start(
        "run",
        "--no-console",
        "--metrics-port",
        str(metrics),
        "--ingest",
        f"tcp://127.0.0.1:{zin}",
        "--alarms",
        f"tcp://127.0.0.1:{zout}",
        "--journal",
        str(tmp / "journal.jsonl"),
    )
    wait_port(zin, 30)
    return d


def _score(truth: Path, alarms: Path) -> dict[str, object]:
    out = subprocess.run(
        [*CLI, "score", "--truth", str(truth), "--alarms", str(alarms), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.mark.slow
def test_simulated_ward_every_vtach_and_pause_alarmed(tmp_path: Path) -> None:
    zin, zout, mport = free_port(), free_port(), free_port()
    daemon = _daemon(tmp_path, zin, zout, mport)
    alarms = tmp_path / "alarms.jsonl"
    sub = _start("subscribe", "--from", f"tcp://127.0.0.1:{zout}", "--json", out=alarms)
    time.sleep(1.0)
    truth = tmp_path / "truth.jsonl"
    sim = subprocess.run(
        [
            *CLI,
            "simulate",
            "--to",
            f"tcp://127.0.0.1:{zin}",
            "--scenario",
            "mixed",
            "--patients",
            "6",
            "--duration",
            "180",
            "--speed",
            "4",
            "--seed",
            "3",
            "--truth",
            str(truth),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert sim.returncode == 0, sim.stderr
    time.sleep(2.0)
    import urllib.request

    metrics = urllib.request.urlopen(f"http://127.0.0.1:{mport}/metrics", timeout=5).read().decode()
    assert "ecg_frames_ingested_total" in metrics and "ecg_model_info" in metrics
    assert _stop(sub) in (0, -signal.SIGTERM)
    assert _stop(daemon) == 0, daemon.stderr.read() if daemon.stderr else ""
    result = _score(truth, alarms)
    ev = result["events"]  # type: ignore[index]
    for event in ("VTACH", "PAUSE"):
        assert ev[event]["episodes"] > 0
        assert ev[event]["detected"] == ev[event]["episodes"], (event, ev[event])
    assert ev["VTACH"]["latency_p95_s"] <= 5.0, ev["VTACH"]
    assert ev["PAUSE"]["latency_p95_s"] <= 1.5, ev["PAUSE"]
    # The journal holds every alarm the subscriber saw.
    journal = (tmp_path / "journal.jsonl").read_text().splitlines()
    assert len(journal) >= len(alarms.read_text().splitlines())


def _vt_segment(data_dir: Path, record: str) -> tuple[float, float]:
    """The first annotated VTACH episode of at least 10 s with 30 s of signal before it."""
    import wfdb

    from classifier.training.labels import extract_episodes

    path = str(data_dir / record)
    ann = wfdb.rdann(path, "atr")
    hdr = wfdb.rdheader(path)
    for e in extract_episodes(ann.sample, ann.symbol, ann.aux_note, hdr.fs, hdr.sig_len, subtypes=ann.subtype):
        if e.event == "VTACH" and (e.end - e.start) / hdr.fs >= 10 and e.start / hdr.fs >= 30:
            return e.start / hdr.fs, e.end / hdr.fs
    raise AssertionError(f"no usable VT episode in {record}")


@pytest.mark.slow
@pytest.mark.parametrize("record", ["vfdb/614"])
def test_replayed_real_vt_raises_vtach_alarm(data_dir: Path, tmp_path: Path, record: str) -> None:
    onset, end = _vt_segment(data_dir, record)
    zin, zout = free_port(), free_port()
    daemon = _daemon(tmp_path, zin, zout)
    alarms = tmp_path / "alarms.jsonl"
    sub = _start("subscribe", "--from", f"tcp://127.0.0.1:{zout}", "--json", "--event", "VTACH", out=alarms)
    time.sleep(1.0)
    start = onset - 40.0
    rp = subprocess.run(
        [
            *CLI,
            "replay",
            str(data_dir / record),
            "--to",
            f"tcp://127.0.0.1:{zin}",
            "--start",
            str(start),
            "--duration",
            str(min(end, onset + 30) - start),
            "--speed",
            "8",
            "--t0",
            "0",
            "--truth",
            str(tmp_path / "t.jsonl"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rp.returncode == 0, rp.stderr
    time.sleep(2.0)
    _stop(sub)
    assert _stop(daemon) == 0
    got = [json.loads(x) for x in alarms.read_text().splitlines() if x.strip()]
    onsets = [a for a in got if a["state"] == "onset"]
    assert onsets, f"no VTACH alarm for {record} VT at {onset:.1f} s"
    # --t0 0: stream time is record time.
    assert abs(onsets[0]["onset_time"] - onset) <= 10.0, (onsets[0], onset)
    truth = [json.loads(x) for x in (tmp_path / "t.jsonl").read_text().splitlines()]
    assert any(t["event"] == "VTACH" and abs(t["onset"] - onset) < 0.01 for t in truth)
    # Scored like the simulated ward: the annotated VT episode counts as alarmed.
    vt = _score(tmp_path / "t.jsonl", alarms)["events"]["VTACH"]  # type: ignore[index]
    assert vt["detected"] >= 1 and vt["latency_p50_s"] <= 10.0, vt
