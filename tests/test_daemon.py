"""The daemon over real ZeroMQ sockets on loopback, with synthetic patients."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import numpy as np

from protocol.wire import DType, encode
from simulators.sender import FrameSender
from simulators.synthetic import Episode, PatientSpec, SyntheticPatient
from tests.helpers import running_monitor, wait_for

FS = 250.0
FRAME = 50  # 0.2 s


async def _send_patient(
    url: str,
    sid: str,
    spec: PatientSpec,
    seconds: float,
    speed: float,
    t0: float = 1_000_000.0,
    skip: set[int] | None = None,
    seed: int = 0,
) -> None:
    p = SyntheticPatient(spec, FS, np.random.default_rng(seed))
    async with FrameSender(url) as tx:
        for k in range(int(seconds * FS / FRAME)):
            block = p.chunk(FRAME)
            if skip and k in skip:
                continue
            await tx.send(sid, encode(sid, k, t0 + k * FRAME / FS, FS, block, DType.INT16, 200.0))
            if speed and k % 5 == 0:
                await asyncio.sleep(5 * FRAME / FS / speed)


async def test_vtach_alarm_end_to_end_over_zeromq(tmp_path: Path) -> None:
    journal = tmp_path / "alarms.jsonl"
    async with running_monitor(journal=str(journal)) as h:
        spec = PatientSpec(75.0, [Episode("VTACH", 30.0, 50.0)])
        await _send_patient(h.ingest, "bed-1", spec, 60.0, speed=20.0)
        assert await wait_for(lambda: h.got("bed-1", "VTACH"), 15.0), [a.event for a in h.received]
        a = h.got("bed-1", "VTACH")[0]
        assert a.priority == "high" and a.source in ("ml", "rules") and a.model_version
        assert abs(a.onset_time - (1_000_000.0 + 30.0)) < 10.0
        assert a.detected_time - (1_000_000.0 + 30.0) < 10.0
        assert a.explanation
        assert await wait_for(lambda: h.metric("ecg_frames_ingested_total", {"transport": "zmq"}) == 300, 5.0)
        assert h.metric("ecg_alarms_total", {"event": "VTACH", "state": "onset"}) >= 1
    # Shutdown flushed the journal: every alarm received is in it.
    lines = [json.loads(x) for x in journal.read_text().splitlines()]
    assert any(x["event"] == "VTACH" and x["state"] == "onset" for x in lines)


async def test_pause_alarm_is_fast_and_a_data_gap_is_not_a_pause() -> None:
    async with running_monitor() as h:
        spec = PatientSpec(70.0, [Episode("PAUSE", 30.0, 35.0)])
        gap_frames = set(range(150, 175))  # 5 s of missing frames at 30-35 s on the other bed
        await asyncio.gather(
            _send_patient(h.ingest, "bed-p", spec, 45.0, speed=10.0),
            _send_patient(h.ingest, "bed-g", PatientSpec(70.0, []), 45.0, speed=10.0, skip=gap_frames, seed=1),
        )
        assert await wait_for(lambda: h.got("bed-p", "PAUSE"), 5.0)
        pause = h.got("bed-p", "PAUSE")[0]
        # The gap reaches 3 s about 3 s after the last beat before 30 s; the alarm follows within 1 s.
        assert pause.detected_time - pause.onset_time < 4.0
        assert not h.got("bed-g", "PAUSE"), "a gap in the data must never be called a pause"
        assert h.got("bed-g", "NO_SIGNAL")
        assert h.metric("ecg_stream_gaps_total") >= 1


async def test_bad_frames_are_counted_and_do_not_hurt_a_good_stream() -> None:
    async with running_monitor() as h:
        async with FrameSender(h.ingest) as tx:
            await tx.send("x", b"garbage")
            good = bytearray(encode("nan", 0, 1.0, 250.0, np.zeros((2, 10))))
            good[-40:-36] = np.array([np.nan], dtype="<f4").tobytes()  # encode refuses NaN: write it by hand
            await tx.send("x", bytes(good))
            await tx.send("x", encode("dup", 0, 1.0, 250.0, np.zeros((2, 50))))
            await tx.send("x", encode("dup", 0, 1.0, 250.0, np.zeros((2, 50))))
        await _send_patient(h.ingest, "good", PatientSpec(70.0, [Episode("VTACH", 25.0, 40.0)]), 40.0, speed=20.0)
        assert await wait_for(lambda: h.got("good", "VTACH"), 15.0)
        assert h.metric("ecg_frames_rejected_total", {"reason": "truncated"}) == 1
        assert h.metric("ecg_frames_rejected_total", {"reason": "nonfinite"}) == 1
        assert h.metric("ecg_frames_rejected_total", {"reason": "duplicate"}) == 1


async def test_lead_off_gives_technical_alarm_not_pause() -> None:
    async with running_monitor(rules_only=True) as h:
        p = SyntheticPatient(PatientSpec(70.0, []), FS, np.random.default_rng(0))
        async with FrameSender(h.ingest) as tx:
            for k in range(int(40 * FS / FRAME)):
                block = p.chunk(FRAME)
                if k * FRAME / FS >= 20.0:
                    block = np.zeros_like(block)  # both leads off at 20 s
                await tx.send("bed-off", encode("bed-off", k, 5000.0 + k * 0.2, FS, block))
                if k % 10 == 0:
                    await asyncio.sleep(0.05)
        assert await wait_for(lambda: h.got("bed-off", "LEADS_OFF"), 10.0)
        assert not h.got("bed-off", "PAUSE")
        assert h.monitor.classifier is not None and h.monitor.classifier.source == "rules"
        assert h.metric("ecg_rules_only_windows_total") > 0


async def test_a_message_of_many_parts_is_dropped_and_counted() -> None:
    """MAXMSGSIZE bounds each part of a ZeroMQ message, not how many there are: a message of many
    parts, each under the frame limit, with a valid frame last, must not be taken as that frame."""
    import zmq
    import zmq.asyncio

    async with running_monitor(rules_only=True, telemetry_interval_s=0) as h:
        ctx = zmq.asyncio.Context()
        push = ctx.socket(zmq.PUSH)
        push.connect(h.ingest)
        try:
            frame = encode("bed-m", 0, 1_000_000.0, FS, np.zeros((2, FRAME), np.float32))
            await push.send_multipart([b"J" * 1000] * 50 + [frame])  # 51 parts
            topic_and_frame = encode("bed-t", 0, 1_000_000.0, FS, np.zeros((2, FRAME), np.float32))
            await push.send_multipart([b"samples.bed-t", topic_and_frame])  # 2 parts: fine
            assert await wait_for(lambda: h.metric("ecg_frames_rejected_total", {"reason": "bad_parts"}) == 1, 5.0)
            assert await wait_for(lambda: h.metric("ecg_frames_ingested_total", {"transport": "zmq"}) == 1, 5.0)
        finally:
            push.close(linger=0)
            ctx.term()
