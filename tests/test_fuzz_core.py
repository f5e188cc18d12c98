"""A property-based fuzzer over the per-bed core: any sequence of frames the wire decoder admits
(sequence and clock jumps back and forth, rate and lead changes, restarts, silences, flat and
railing signals) is either taken or rejected with a ``WireError``, never anything else, and every
alarm that comes out is well formed. Bounded in time (about 10 s)."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from classifier.result import Classification
from monitor.core.analysis import WindowResult
from monitor.core.detection import DetectionConfig
from monitor.core.quality import LeadQuality
from monitor.core.ward import Ward
from protocol.alarm import EVENTS, PRIORITY, Alarm, AlarmState
from protocol.wire import MAX_T0_S, Frame, WireError

STATES = {s.value for s in AlarmState}

step = st.fixed_dictionaries(
    {
        "bed": st.sampled_from(["a", "b", "c"]),
        "dseq": st.sampled_from([1, 1, 1, 1, 0, -1, 2, 5, -5, 10**6, -(10**6)]),
        "dt": st.sampled_from([0.0, 0.0, 0.0, 0.05, -0.05, 0.6, -0.6, 5.0, -20.0, 3600.0, -3600.0]),
        "restart": st.booleans(),
        "fs": st.sampled_from([250.0, 250.0, 250.0, 360.0, 128.0]),
        "channels": st.sampled_from([2, 2, 2, 1]),
        "n": st.sampled_from([1, 25, 50, 200]),
        "shape": st.sampled_from(["beats", "flat", "rail", "noise", "spike"]),
        "wall_dt": st.sampled_from([0.0, 0.2, 0.2, 0.2, 4.0, 15.0]),
        "result": st.sampled_from([None, "NORMAL", "AF", "VTACH", "PAUSE", "LEADS_OFF"]),
    }
)


def _samples(shape: str, channels: int, n: int, k: int) -> np.ndarray:
    t = np.arange(n)
    if shape == "flat":
        x = np.zeros((channels, n))
    elif shape == "rail":
        x = np.full((channels, n), 9999.0)
    elif shape == "noise":
        x = np.random.default_rng(k).normal(0, 2.0, (channels, n))
    elif shape == "spike":
        x = np.zeros((channels, n))
        x[:, n // 2] = -9999.0
    else:
        x = np.tile(np.where(t % 50 < 5, 1.5, 0.0), (channels, 1))
    return x.astype(np.float32)


def _check(alarms: list[Alarm]) -> None:
    for a in alarms:
        assert a.event in EVENTS and a.state in STATES and a.priority == PRIORITY[a.event]
        assert math.isfinite(a.onset_time) and math.isfinite(a.detected_time) and math.isfinite(a.confidence)
        assert 0.0 <= a.confidence <= 1.0
        a.to_json()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(step, min_size=5, max_size=120))
def test_core_takes_or_rejects_any_admitted_frame_sequence(steps: list[dict[str, object]]) -> None:
    ward = Ward(DetectionConfig(admit_after_s=0.0), max_beds=2, max_pending=2)
    seq = {"a": 0, "b": 0, "c": 0}
    t0 = {"a": 1000.0, "b": 1000.0, "c": 1000.0}
    wall = 0.0
    for k, s in enumerate(steps):
        bed = str(s["bed"])
        fs, n, ch = float(s["fs"]), int(s["n"]), int(s["channels"])  # type: ignore[call-overload]
        seq[bed] = 0 if s["restart"] else max(0, seq[bed] + int(s["dseq"]))  # type: ignore[call-overload]
        t0[bed] = min(MAX_T0_S - 10.0, max(0.0, t0[bed] + float(s["dt"])))  # type: ignore[arg-type]
        frame = Frame(bed, seq[bed], t0[bed], fs, _samples(str(s["shape"]), ch, n, k))
        wall += float(s["wall_dt"])  # type: ignore[arg-type]
        try:
            out = ward.on_frame(frame, wall)
            _check(out.alarms)
            seq[bed] += 1
            t0[bed] += n / fs
        except WireError as exc:
            assert exc.reason
        _check(ward.on_tick(wall))
        verdict = s["result"]
        if verdict is not None:
            jobs = ward.take_due(4, wall, rate_per_s=10.0)
            results = []
            for job in jobs:
                if verdict == "LEADS_OFF":
                    results.append(WindowResult(job, (LeadQuality.FLAT, LeadQuality.FLAT), None))
                else:
                    c = Classification(verdict, 0.9, 3, "fuzz", "ml", 80.0)  # type: ignore[arg-type]
                    results.append(WindowResult(job, (LeadQuality.OK, LeadQuality.NOISY), c))
            _check(ward.on_results(results, wall))
    assert len(ward.beds) <= 2 and len(ward.pending) <= 2
