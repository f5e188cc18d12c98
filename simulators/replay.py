"""``ecg-monitor replay``: real WFDB records as live streams, in their own rate and gain."""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from monitor.transports.tls import MqttSecurity
from protocol.urls import redact_url
from protocol.wire import DType, encode
from simulators.sender import FrameSender, paced
from simulators.simulate import write_truth

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ReplayOptions:
    records: tuple[str, ...]
    to: str = "tcp://127.0.0.1:5555"
    speed: float = 1.0
    start: float = 0.0
    duration: float | None = None
    loop: bool = False
    t0: float | None = None
    frame_s: float = 0.2
    truth: str | None = None
    stream_ids: tuple[str, ...] | None = None
    curve_server: str | None = None  # ZeroMQ CURVE: the daemon's public .key ...
    curve_secret: str | None = None  # ... and this sender's own .key_secret
    mqtt: MqttSecurity | None = None  # TLS settings and password for an MQTT --to


@dataclass(slots=True)
class LoadedRecord:
    stream_id: str
    fs: float
    adc: NDArray[np.int16] | None  # (channels, n) ADC units when both leads share a gain
    gain: float
    mv: NDArray[np.float32]  # (channels, n) mV, used when gains differ
    episodes: list[tuple[str, float, float]]  # (event, start s, end s) in record time


def load(path: str, start: float, duration: float | None, stream_id: str | None = None) -> LoadedRecord:
    try:
        import wfdb
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise RuntimeError("replay needs wfdb: pip install 'ecg-monitor[train]'") from exc
    from classifier.training.labels import extract_episodes

    base = str(Path(path).with_suffix("")) if path.endswith(".hea") else path
    if not Path(base + ".hea").exists():
        raise FileNotFoundError(f"no WFDB record at {base} (expected {base}.hea)")
    hdr = wfdb.rdheader(base)
    fs = float(hdr.fs)
    a = int(start * fs)
    b = int(hdr.sig_len) if duration is None else min(int(hdr.sig_len), a + int(duration * fs))
    if a >= b:
        raise ValueError(f"--start {start} s is past the end of {base} ({int(hdr.sig_len) / fs:.0f} s)")
    rec = wfdb.rdrecord(base, sampfrom=a, sampto=b, physical=False, channels=[0, 1][: hdr.n_sig])
    d = np.asarray(rec.d_signal).T
    gains = [float(g) for g in rec.adc_gain]
    baselines = [int(z) for z in rec.baseline]
    mv = ((d - np.asarray(baselines)[:, None]) / np.asarray(gains)[:, None]).astype(np.float32)
    same = len(set(gains)) == 1
    adc = (d - np.asarray(baselines)[:, None]).astype(np.int16) if same else None
    ann = wfdb.rdann(base, "atr")
    eps = [
        (e.event, max(e.start, a) / fs - start, min(e.end, b) / fs - start)
        for e in extract_episodes(ann.sample, ann.symbol, ann.aux_note, fs, int(hdr.sig_len), subtypes=ann.subtype)
        if e.event in ("AF", "VTACH", "PAUSE") and e.end > a and e.start < b
    ]
    return LoadedRecord(stream_id or Path(base).name, fs, adc, gains[0], mv, eps)


async def replay(opts: ReplayOptions, stop: asyncio.Event | None = None) -> int:
    """Replay every record at once, one stream each. Returns the number of frames sent."""
    ids = opts.stream_ids or tuple([None] * len(opts.records))  # type: ignore[list-item]
    recs = [load(p, opts.start, opts.duration, sid) for p, sid in zip(opts.records, ids, strict=True)]
    t0 = time.time() if opts.t0 is None else opts.t0
    # With --t0 0, stream time equals record time: offset by --start.
    base_t = t0 + (opts.start if opts.t0 is not None else 0.0)
    if opts.truth:
        rows: list[dict[str, object]] = []
        for r in recs:
            length = r.mv.shape[1] / r.fs
            rows.append({"stream_id": r.stream_id, "event": "SESSION", "onset": base_t, "end": base_t + length})
            rows += [
                {"stream_id": r.stream_id, "event": ev, "onset": round(base_t + s, 3), "end": round(base_t + e, 3)}
                for ev, s, e in r.episodes
            ]
        write_truth(opts.truth, rows)
    frame_s = opts.frame_s
    n_frames = None if opts.loop else max(int(np.ceil(r.mv.shape[1] / (frame_s * r.fs))) for r in recs)
    log.info("replaying %s at speed %g to %s", ", ".join(r.stream_id for r in recs), opts.speed, redact_url(opts.to))
    async with FrameSender(
        opts.to, curve_server=opts.curve_server, curve_secret=opts.curve_secret, mqtt=opts.mqtt
    ) as sender:

        async def step(k: int) -> bool:
            any_sent = False
            for r in recs:
                n_per = round(frame_s * r.fs)
                total = r.mv.shape[1]
                a = (k * n_per) % total if opts.loop else k * n_per
                if a >= total:
                    continue
                bsl = slice(a, min(a + n_per, total))
                t_frame = base_t + k * n_per / r.fs
                if r.adc is not None:
                    payload = encode(r.stream_id, k, t_frame, r.fs, r.adc[:, bsl], DType.INT16, r.gain)
                else:
                    payload = encode(r.stream_id, k, t_frame, r.fs, r.mv[:, bsl], DType.FLOAT32)
                await sender.send(r.stream_id, payload)
                any_sent = True
            return any_sent

        await paced(n_frames, frame_s, opts.speed, step, stop)
        return sender.sent
