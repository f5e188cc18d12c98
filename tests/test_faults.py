"""Fault injection against the daemon as a process: brokers and the daemon killed, overload,
poison input. Quick settings; each scenario is bounded in time (`make test-faults`).

Each test asserts that nothing the daemon decided was lost, plus the scenario's own promise.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.faults import (
    FaultResult,
    account,
    alarm_broker_restart,
    daemon_restart,
    ingest_broker_restart,
    overload,
    poison,
    write_report,
)
from protocol.alarm import Alarm


def _explain(r: FaultResult) -> str:
    return f"{r.notes}\n{json.dumps(r.details, indent=1, default=str)}"


@pytest.mark.faults
def test_alarm_broker_killed_and_restarted(tmp_path: Path) -> None:
    r = alarm_broker_restart(tmp_path, quick=True)
    assert r.expected > 0, _explain(r)
    assert r.details["decided_while_down"] > 0, _explain(r)  # the fault did hit live alarms
    assert r.lost == 0, _explain(r)
    assert r.delivered == r.expected, _explain(r)


@pytest.mark.faults
def test_ingest_broker_killed_and_restarted(tmp_path: Path) -> None:
    r = ingest_broker_restart(tmp_path, quick=True)
    assert r.details["data_before_kill"], _explain(r)
    assert r.details["ingest_back_after_restart_s"] is not None, _explain(r)
    assert r.details["ingest_back_after_restart_s"] < 10.0, _explain(r)
    assert r.details["vt_alarm_received"], _explain(r)
    assert r.lost == 0, _explain(r)


@pytest.mark.faults
def test_daemon_sigkilled_mid_alarm_and_restarted(tmp_path: Path) -> None:
    r = daemon_restart(tmp_path, quick=True)
    assert r.details["active_at_kill"], _explain(r)
    assert r.details["duplicate_onsets"] == [], _explain(r)
    assert r.details["never_resolved"] == [], _explain(r)
    assert r.lost == 0, _explain(r)


@pytest.mark.faults
def test_overload_keeps_alarms_metrics_and_shutdown(tmp_path: Path) -> None:
    r = overload(tmp_path, quick=True)
    d = r.details
    assert d["bulk_frames_sent"] > 0, _explain(r)
    assert d["load_beds_admitted_peak"] >= 0.9 * d["streams"], _explain(r)  # the load is really monitored
    assert d["vt_alarm_at_all"], _explain(r)
    assert d["metrics_no_answer"] == 0 and d["metrics_max_s"] <= 2.0, _explain(r)
    assert d["recovery_s"] is not None, _explain(r)
    assert d["sigterm_exit_code"] == 0 and d["sigterm_exit_s"] <= 15.0, _explain(r)
    assert r.lost == 0, _explain(r)


@pytest.mark.faults
def test_poison_frames_and_ids(tmp_path: Path) -> None:
    r = poison(tmp_path, quick=True)
    d = r.details
    assert d["daemon_up_after"], _explain(r)
    assert d["good_beds_without_alarm"] == [], _explain(r)
    assert d["glitched_beds_blind"] == [], _explain(r)
    assert d["rejected_total"] >= d["bad_frames_sent"] // 2 > 0, _explain(r)
    assert r.lost == 0, _explain(r)


def _alarm(state: str, published_at: float) -> Alarm:
    return Alarm("b1", "VTACH", state, "high", 0.9, 100.0, published_at - 1e9, published_at, "rules", "rules", "")


def test_accounting_and_report(tmp_path: Path) -> None:
    """Not a fault run (no processes): the arithmetic behind every row: lost, late and duplicates; and the report files."""
    from app.faults import Received

    onset, resolved = _alarm("onset", 1000.0), _alarm("resolved", 1010.0)
    got = [Received(1002.5, onset), Received(1003.0, onset)]
    dl = account([onset, resolved], got)
    assert (dl.expected, dl.delivered, dl.duplicates) == (2, 1, 1)
    assert dl.lost == [resolved]
    assert dl.late_max_s == pytest.approx(2.5)
    row = FaultResult("x", "a fault", 2, 1, 2.5, 1, False, "a note", 1.0, {"k": 1})
    out = tmp_path / "r" / "reliability.md"
    write_report([row], out, quick=True)
    text = out.read_text()
    assert "| a fault | 2 | 1 | 2.5 | 1 | **FAIL** | a note |" in text
    assert json.loads(out.with_suffix(".json").read_text())["results"][0]["lost"] == 1
