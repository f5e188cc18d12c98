"""The sample-frame wire format, version 1: explicit, binary, little-endian. Never pickle.

Layout (offsets in bytes)::

    0   2  magic        b"EC"
    2   1  version      1
    3   1  dtype        1 = int16 ADC units (mV = value / gain), 2 = float32 mV
    4   1  channels     1 or 2
    5   1  id_len       length of the stream id, 1..64
    6   2  flags        0 (reserved)
    8   8  seq          uint64, +1 per frame of a stream
    16  8  t0           float64, UNIX seconds of the first sample (the stream's clock)
    24  4  fs           float32, samples per second per channel
    28  4  gain         float32, ADC units per mV (int16 frames); 0 for float32 frames
    32  4  n            uint32, samples per channel
    36  id_len          stream id, UTF-8, characters [A-Za-z0-9_.:-]
    ..  payload         channel-major samples: all of channel 1, then channel 2
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import numpy as np
from numpy.typing import NDArray

MAGIC = b"EC"
VERSION = 1
HEADER = struct.Struct("<2sBBBBHQdffI")
MAX_ID_LEN = 64
MIN_FS = 50.0
MAX_FS = 2000.0
#: At most this many seconds of samples in one frame.
MAX_FRAME_S = 10.0
_ID_RE = re.compile(r"^[A-Za-z0-9_.:-]+$")


class DType(IntEnum):
    INT16 = 1
    FLOAT32 = 2


_NP: dict[DType, np.dtype[Any]] = {DType.INT16: np.dtype("<i2"), DType.FLOAT32: np.dtype("<f4")}


class WireError(ValueError):
    """A frame that cannot be accepted; ``reason`` is a short label used in metrics."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Frame:
    """A decoded frame. ``samples`` is (channels, n) float32 in mV."""

    stream_id: str
    seq: int
    t0: float
    fs: float
    samples: NDArray[np.float32]

    @property
    def n(self) -> int:
        return int(self.samples.shape[1])

    @property
    def duration(self) -> float:
        return self.n / self.fs


def encode(
    stream_id: str,
    seq: int,
    t0: float,
    fs: float,
    samples: NDArray[np.floating] | NDArray[np.integer],
    dtype: DType = DType.FLOAT32,
    gain: float = 200.0,
) -> bytes:
    """Encode (channels, n) samples. Float input is mV; int16 input is ADC units with ``gain``.

    Float mV samples sent as INT16 are quantised with ``gain`` (ADC units per mV).
    """
    sid = stream_id.encode("utf-8")
    if not 1 <= len(sid) <= MAX_ID_LEN or not _ID_RE.match(stream_id):
        raise ValueError(f"bad stream id {stream_id!r}")
    arr = np.asarray(samples)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.shape[0] not in (1, 2):
        raise ValueError(f"1 or 2 channels expected, got {arr.shape[0]}")
    if dtype is DType.INT16:
        if arr.dtype.kind == "f":
            arr = np.clip(np.round(arr * gain), -32768, 32767)
        payload = arr.astype("<i2").tobytes()
    else:
        gain = 0.0
        payload = arr.astype("<f4").tobytes()
    head = HEADER.pack(MAGIC, VERSION, int(dtype), arr.shape[0], len(sid), 0, seq, t0, fs, gain, arr.shape[1])
    return head + sid + payload


def decode(buf: bytes | bytearray | memoryview) -> Frame:
    """Decode and validate one frame; raise ``WireError`` with a reason on anything wrong."""
    mv = memoryview(buf)
    if len(mv) < HEADER.size:
        raise WireError("truncated", f"{len(mv)} bytes, header needs {HEADER.size}")
    magic, version, dt, ch, id_len, _flags, seq, t0, fs, gain, n = HEADER.unpack_from(mv)
    if magic != MAGIC:
        raise WireError("bad_magic", repr(bytes(magic)))
    if version != VERSION:
        raise WireError("bad_version", f"version {version}, this daemon reads {VERSION}")
    try:
        dtype = DType(dt)
    except ValueError:
        raise WireError("bad_dtype", f"dtype code {dt}") from None
    if ch not in (1, 2):
        raise WireError("bad_channels", f"{ch} channels")
    if not 1 <= id_len <= MAX_ID_LEN:
        raise WireError("bad_stream_id", f"id length {id_len}")
    if not (MIN_FS <= fs <= MAX_FS) or not np.isfinite(fs):
        raise WireError("bad_rate", f"{fs} Hz outside {MIN_FS:.0f}-{MAX_FS:.0f}")
    if not np.isfinite(t0) or t0 < 0:
        raise WireError("bad_timestamp", f"t0 {t0}")
    if n == 0 or n > MAX_FRAME_S * fs:
        raise WireError("bad_length", f"{n} samples per channel")
    itemsize = _NP[dtype].itemsize
    expected = HEADER.size + id_len + ch * n * itemsize
    if len(mv) != expected:
        raise WireError("truncated" if len(mv) < expected else "bad_length", f"{len(mv)} bytes, expected {expected}")
    try:
        sid = bytes(mv[HEADER.size : HEADER.size + id_len]).decode("utf-8")
    except UnicodeDecodeError:
        raise WireError("bad_stream_id", "not UTF-8") from None
    if not _ID_RE.match(sid):
        raise WireError("bad_stream_id", repr(sid))
    raw = np.frombuffer(mv, dtype=_NP[dtype], count=ch * n, offset=HEADER.size + id_len).reshape(ch, n)
    if dtype is DType.INT16:
        if not (np.isfinite(gain) and gain > 0):
            raise WireError("bad_gain", f"gain {gain}")
        samples = raw.astype(np.float32) / np.float32(gain)
    else:
        samples = raw.astype(np.float32)
        if not np.isfinite(samples).all():
            raise WireError("nonfinite", f"{int((~np.isfinite(samples)).sum())} NaN/inf samples")
    return Frame(sid, int(seq), float(t0), float(fs), samples)
