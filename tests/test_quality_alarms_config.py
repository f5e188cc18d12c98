from pathlib import Path

import numpy as np
import pytest

from monitor.config import ConfigError, MonitorConfig
from monitor.core.alarms import DEFAULT_POLICIES, AlarmPolicy, EventTracker, Observation
from monitor.core.quality import LeadQuality, lead_quality
from monitor.shard import owns, shard_of
from protocol.alarm import Alarm, AlarmState
from protocol.urls import parse_url
from simulators.synthetic import SyntheticPatient, make_patient

FS = 128.0


def _ecg(seconds: float = 10.0) -> np.ndarray:
    rng = np.random.default_rng(0)
    p = SyntheticPatient(make_patient("normal", 60, rng), FS, rng)
    return p.chunk(int(seconds * FS))[0].astype(np.float64)


def test_lead_quality_cases() -> None:
    x = _ecg()
    assert lead_quality(x, FS) is LeadQuality.OK
    assert lead_quality(np.zeros(1280), FS) is LeadQuality.FLAT
    assert lead_quality(np.full(1280, np.nan), FS) is LeadQuality.MISSING
    clipped = x.copy()
    clipped[300:700] = 12.0  # front end pinned at its rail for 3 s
    assert lead_quality(clipped, FS) is LeadQuality.SATURATED
    noise = np.random.default_rng(1).normal(0, 0.5, 1280)
    assert lead_quality(noise, FS) is LeadQuality.NOISY
    # Size alone is no noise: large clean complexes (vfdb/615's VT spans 12-16 mV) stay usable.
    assert lead_quality(x * 12.0 / max(float(np.ptp(x)), 1e-9), FS) is LeadQuality.OK


def _obs(present: bool, t: float, conf: float = 0.6) -> Observation:
    return Observation(present, t, conf, t - 1 if present else None, "ml", "x")


def test_alarm_needs_persistence_then_resolves() -> None:
    tr = EventTracker("AF", DEFAULT_POLICIES["AF"])
    # AF: 3 consecutive windows and 30 s from the first one's onset (t - 1 here) before an alarm.
    for t in range(0, 29, 2):
        assert tr.observe(_obs(True, t)) is None, t
    state, _ = tr.observe(_obs(True, 30)) or (None, None)
    assert state is AlarmState.ONSET and tr.onset_time == -1  # onset of the first positive
    assert tr.observe(_obs(False, 36)) is None  # not yet clear_s
    state, _ = tr.observe(_obs(False, 61)) or (None, None)
    assert state is AlarmState.RESOLVED and not tr.active
    # A break starts the 30 s again.
    tr2 = EventTracker("AF", DEFAULT_POLICIES["AF"])
    for t in (0, 2, 4, 20):
        tr2.observe(_obs(True, t))
    tr2.observe(_obs(False, 22))
    assert tr2.observe(_obs(True, 40)) is None and tr2.observe(_obs(True, 44)) is None


def test_single_window_does_not_flap_but_high_confidence_is_instant() -> None:
    tr = EventTracker("VTACH", DEFAULT_POLICIES["VTACH"])
    assert tr.observe(_obs(True, 0, 0.6)) is None
    assert tr.observe(_obs(False, 2)) is None
    assert tr.observe(_obs(True, 4, 0.6)) is None  # streak was broken
    res = tr.observe(_obs(True, 6, 0.6))
    assert res is not None and res[0] is AlarmState.ONSET
    tr2 = EventTracker("VTACH", DEFAULT_POLICIES["VTACH"])
    res2 = tr2.observe(_obs(True, 0, 0.95))
    assert res2 is not None and res2[0] is AlarmState.ONSET


def test_high_priority_alarm_latches() -> None:
    pol = AlarmPolicy(onset_count=1, clear_s=5, latch_clear_s=20)
    vt = EventTracker("VTACH", pol)
    af = EventTracker("AF", pol)
    for tr in (vt, af):
        tr.observe(_obs(True, 0))
    assert af.observe(_obs(False, 6)) is not None  # medium priority clears after clear_s
    assert vt.observe(_obs(False, 6)) is None  # high priority holds
    assert vt.observe(_obs(True, 8)) is None  # still the same alarm, no new onset
    res = vt.observe(_obs(False, 29))
    assert res is not None and res[0] is AlarmState.RESOLVED


def test_ongoing_is_repeated_at_most_every_interval() -> None:
    tr = EventTracker("VTACH", AlarmPolicy(onset_count=1, ongoing_every_s=30))
    tr.observe(_obs(True, 0))
    states = [tr.observe(_obs(True, t)) for t in range(2, 70, 2)]
    assert sum(s is not None for s in states) == 2


def test_alarm_json_roundtrip() -> None:
    a = Alarm("s1", "VTACH", "onset", "high", 0.9, 10.0, 12.0, 13.0, "ml", "v1", "why")
    assert Alarm.from_json(a.to_json()) == a


def test_config_precedence_and_validation(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text('[monitor]\nhop_s = 1.5\nwindow_s = 20.0\nalarms = ["tcp://127.0.0.1:7000"]\n')
    cfg = MonitorConfig.load(f, env={"ECG_MONITOR_HOP_S": "1.0", "ECG_MONITOR_CONSOLE": "false"}, window_s=30.0)
    assert cfg.hop_s == 1.0 and cfg.window_s == 30.0 and cfg.console is False
    assert cfg.alarms == ("tcp://127.0.0.1:7000",)
    assert MonitorConfig().ingest == ("tcp://127.0.0.1:5555",) and MonitorConfig().metrics_port == 9108


@pytest.mark.parametrize(
    ("kwargs", "key"),
    [
        ({"hop_s": 0.0}, "hop_s"),
        ({"ingest": ("http://x:1",)}, "ingest"),
        ({"shard": "3/2"}, "shard"),
        ({"bogus": 1}, "bogus"),
        ({"metrics_port": "x"}, "metrics_port"),
    ],
)
def test_config_errors_name_the_key(kwargs: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError, match=f"^{key}"):
        MonitorConfig.load(env={}, **kwargs)


def test_config_env_error_names_variable() -> None:
    with pytest.raises(ConfigError, match="hop_s"):
        MonitorConfig.load(env={"ECG_MONITOR_HOP_S": "fast"})


def test_urls() -> None:
    ep = parse_url("mqtt://u:p%40ss@broker:1999")
    assert (ep.scheme, ep.host, ep.port, ep.username, ep.password) == ("mqtt", "broker", 1999, "u", "p@ss")
    assert "p@ss" not in str(ep)
    assert parse_url("mqtts://h").port == 8883
    with pytest.raises(ValueError):
        parse_url("tcp://h")
    with pytest.raises(ValueError):
        parse_url("udp://h:1")


def test_sharding_is_stable_and_partitions() -> None:
    ids = [f"bed-{i}" for i in range(200)]
    owners = [[k for k in range(3) if owns(s, k, 3)] for s in ids]
    assert all(len(o) == 1 for o in owners)
    assert shard_of("bed-1", 3) == shard_of("bed-1", 3)
    assert len({o[0] for o in owners}) == 3


def test_batched_lead_quality_matches_the_per_lead_verdicts() -> None:
    import numpy as np

    from monitor.core.quality import LeadQuality, lead_quality, lead_quality_batch

    rng = np.random.default_rng(5)
    n = 1280
    t = np.arange(n) / 128.0
    ecg = (np.sin(2 * np.pi * 1.2 * t) ** 31).astype(np.float64)
    leads = {
        "ok": ecg,
        "flat": np.full(n, 0.2),
        "noise": rng.normal(0, 1.0, n),
        "saturated": np.where(ecg > 0.5, 12.0, ecg * 0 + 12.0 * (rng.random(n) < 0.5)),
        "huge": ecg * 20,
        "nan": np.where(rng.random(n) < 0.7, np.nan, ecg),
        "some_nan": np.where(np.arange(n) < 100, np.nan, ecg),
    }
    names = list(leads)
    wins = np.stack([np.stack([leads[a], leads[b]]) for a in names for b in names])
    want = [(lead_quality(w[0], 128.0), lead_quality(w[1], 128.0)) for w in wins]
    assert lead_quality_batch(wins, 128.0) == want
    assert {q for pair in want for q in pair} >= {
        LeadQuality.OK,
        LeadQuality.FLAT,
        LeadQuality.NOISY,
        LeadQuality.MISSING,
    }


def test_calm_hop_follows_hop_unless_set() -> None:
    from monitor.config import ConfigError, MonitorConfig

    assert MonitorConfig().detection.calm_hop_s == 4.0
    assert MonitorConfig(hop_s=10.0).detection.calm_hop_s == 20.0  # a long hop never conflicts
    assert MonitorConfig(hop_s=0.5).detection.calm_hop_s == 1.0
    assert MonitorConfig(calm_hop_s=2.0).detection.calm_hop_s == 2.0  # = hop_s: off
    with pytest.raises(ConfigError, match="calm_hop_s"):
        MonitorConfig(calm_hop_s=1.0)


def test_a_rate_limited_line_quoting_a_peer_keeps_its_percent_signs(caplog: pytest.LogCaptureFixture) -> None:
    """A rejected stream id of '%s%s' was used as the format string: the line failed to format
    and the reason's 10 s window was spent on a line nobody saw."""
    import logging

    from monitor.ratelimit import RateLimitedLog

    log = logging.getLogger("test.ratelimit")
    caplog.set_level(logging.WARNING, logger="test.ratelimit")
    limited = RateLimitedLog(log, clock=lambda: 0.0)
    limited.log(logging.WARNING, "bad_stream_id", "rejected frame: bad_stream_id: b'%s%s'")
    limited.log(logging.WARNING, "other", "journal %s: %d lines", "j.jsonl", 3)
    assert [r.getMessage() for r in caplog.records] == [
        "rejected frame: bad_stream_id: b'%s%s' (1 since last report)",
        "journal j.jsonl: 3 lines (1 since last report)",
    ]
