"""``ecg-monitor simulate``: many synthetic patients as live streams, with ground truth."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from monitor.transports.tls import MqttSecurity
from protocol.urls import redact_url
from protocol.wire import DType, encode
from simulators.sender import FrameSender, paced
from simulators.synthetic import SyntheticPatient, make_patient, truth_events

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class SimulateOptions:
    to: str = "tcp://127.0.0.1:5555"
    patients: int = 8
    scenario: str = "mixed"
    duration: float = 120.0
    speed: float = 1.0
    seed: int = 0
    fs: float = 250.0
    frame_s: float = 0.2
    truth: str | None = None
    t0: float | None = None
    prefix: str = "sim"
    int16: bool = True
    curve_server: str | None = None  # ZeroMQ CURVE: the daemon's public .key ...
    curve_secret: str | None = None  # ... and this sender's own .key_secret
    mqtt: MqttSecurity | None = None  # TLS settings and password for an MQTT --to

    def __post_init__(self) -> None:
        if not 0.1 <= self.frame_s <= 0.25:
            raise ValueError("frame_s must be 0.1-0.25 s")
        if self.patients < 1:
            raise ValueError("patients must be at least 1")
        if self.duration <= 0:
            raise ValueError("duration must be positive")
        if self.speed < 0:
            raise ValueError("speed must be >= 0 (0 = as fast as possible)")


def write_truth(path: str | Path, rows: list[dict[str, object]]) -> None:
    with Path(path).open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")


async def simulate(opts: SimulateOptions, stop: asyncio.Event | None = None) -> int:
    """Stream ``opts.patients`` synthetic patients; return the number of frames sent."""
    rng = np.random.default_rng(opts.seed)
    t0 = time.time() if opts.t0 is None else opts.t0
    width = len(str(opts.patients - 1))
    patients = []
    truth: list[dict[str, object]] = []
    scenarios = [opts.scenario] * opts.patients
    if opts.scenario == "mixed" and opts.patients >= 4:
        # A mixed ward: each kind of patient is present, the rest carry mixed schedules.
        scenarios[:4] = ["normal", "af", "vt", "pause"]
    for i, sc in enumerate(scenarios):
        sid = f"{opts.prefix}-{i:0{width}d}"
        spec = make_patient(sc, opts.duration, np.random.default_rng(rng.integers(2**63)))
        patients.append((sid, SyntheticPatient(spec, opts.fs, np.random.default_rng(rng.integers(2**63)))))
        truth.append({"stream_id": sid, "event": "SESSION", "onset": t0, "end": t0 + opts.duration, "scenario": sc})
        for e in truth_events(spec):
            truth.append(
                {"stream_id": sid, "event": e.event, "onset": round(t0 + e.start, 3), "end": round(t0 + e.end, 3)}
            )
    if opts.truth:
        write_truth(opts.truth, truth)
    n_per = round(opts.frame_s * opts.fs)
    frame_s = n_per / opts.fs
    n_frames = int(opts.duration / frame_s)
    log.info(
        "simulating %d patients (%s) for %.0f s at speed %g to %s",
        opts.patients,
        opts.scenario,
        opts.duration,
        opts.speed,
        redact_url(opts.to),
    )
    async with FrameSender(
        opts.to, curve_server=opts.curve_server, curve_secret=opts.curve_secret, mqtt=opts.mqtt
    ) as sender:

        async def step(k: int) -> bool:
            for sid, p in patients:
                block = p.chunk(n_per)
                dtype = DType.INT16 if opts.int16 else DType.FLOAT32
                await sender.send(sid, encode(sid, k, t0 + k * frame_s, opts.fs, block, dtype, gain=200.0))
            return True

        await paced(n_frames, frame_s, opts.speed, step, stop)
        return sender.sent
