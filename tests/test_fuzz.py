"""Thousands of malformed frames beside one good stream: the daemon stays up and correct."""

from __future__ import annotations

import asyncio

import numpy as np

from protocol.wire import HEADER, DType, encode, encode_unchecked
from simulators.sender import FrameSender
from simulators.synthetic import Episode, PatientSpec, SyntheticPatient
from tests.helpers import running_monitor, wait_for

FS = 250.0


def _bad_frames(rng: np.random.Generator, n: int) -> list[bytes]:
    good = encode("fz", 0, 10.0, FS, rng.normal(0, 1, (2, 50)).astype(np.float32))
    out: list[bytes] = []
    for i in range(n):
        kind = i % 8
        if kind == 0:
            out.append(rng.bytes(int(rng.integers(0, 200))))  # random bytes
        elif kind == 1:
            out.append(good[: int(rng.integers(0, len(good)))])  # truncated
        elif kind == 2:
            b = bytearray(good)
            for _ in range(int(rng.integers(1, 6))):
                b[int(rng.integers(0, HEADER.size))] = int(rng.integers(0, 256))  # header bit rot
            out.append(bytes(b))
        elif kind == 3:
            out.append(encode_unchecked(f"fz-{i}", 0, 10.0, float(rng.choice([1.0, 20.0, 5000.0])), np.zeros((2, 4))))
        elif kind == 4:
            x = rng.normal(0, 1, (2, 50))
            x[0, int(rng.integers(0, 50))] = rng.choice([np.nan, np.inf, -np.inf])
            out.append(encode_unchecked(f"fz-{i % 50}", i, 10.0 + i, FS, x))
        elif kind == 5:
            out.append(encode("fz-ch", i, 10.0 + i, FS, np.zeros((1 + i % 2, 50))))  # channel count flips
        elif kind == 6:
            out.append(encode("fz-seq", int(rng.integers(0, 5)), 10.0, FS, np.zeros((2, 50))))  # replays
        else:
            out.append(
                encode_unchecked(
                    "fz-gain", 0, 10.0, FS, np.zeros((2, 50), dtype=np.int16), DType.INT16, gain=float("nan")
                )
            )
    return out


async def test_fuzzed_frames_leave_daemon_alive_and_correct() -> None:
    rng = np.random.default_rng(7)
    bad = _bad_frames(rng, 4000)
    async with running_monitor() as h:
        spec = PatientSpec(72.0, [Episode("VTACH", 30.0, 45.0)])
        p = SyntheticPatient(spec, FS, np.random.default_rng(0))
        async with FrameSender(h.ingest) as tx:
            bi = 0
            for k in range(250):
                await tx.send("good", encode("good", k, 7000.0 + k * 0.2, FS, p.chunk(50), DType.INT16, 200.0))
                for _ in range(16):
                    await tx.send("x", bad[bi % len(bad)])
                    bi += 1
                if k % 5 == 0:
                    await asyncio.sleep(0.05)
        assert await wait_for(lambda: h.got("good", "VTACH"), 15.0), "the good stream lost its alarm"
        assert await wait_for(lambda: h.metric("ecg_frames_ingested_total", {"transport": "zmq"}) >= 250, 10.0)
        rejected = sum(
            s.value
            for m in h.registry.collect()
            if m.name == "ecg_frames_rejected"
            for s in m.samples
            if s.name.endswith("_total")
        )
        assert rejected >= 2500
        good = h.monitor.streams["good"].stream
        assert good is not None
        assert await wait_for(lambda: good.next_seq == 250, 5.0)  # every good frame taken, in order
        assert good.valid_samples >= 10 * 128
        # Still serving: a fresh frame from a new stream is accepted after the storm.
        async with FrameSender(h.ingest) as tx:
            await tx.send("after", encode("after", 0, 1.0, FS, np.zeros((2, 50))))
        assert await wait_for(lambda: h.monitor.ward.get("after") is not None, 5.0)  # pending until 2 s of data
