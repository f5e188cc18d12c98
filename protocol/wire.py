"""The sample-frame wire format, version 1: explicit, binary, little-endian. Never pickle.

Layout (offsets in bytes)::

    0   2  magic        b"EC"
    2   1  version      1
    3   1  dtype        1 = int16 ADC units (mV = value / gain), 2 = float32 mV
    4   1  channels     1 or 2
    5   1  id_len       length of the stream id, 1..64
    6   2  flags        0 (reserved: writers send 0, readers ignore)
    8   8  seq          uint64, +1 per frame of a stream, at most 2**53
    16  8  t0           float64, UNIX seconds of the first sample (the stream's clock), 0..4102444800
    24  4  fs           float32, samples per second per channel, 50..2000
    28  4  gain         float32, ADC units per mV, 0.01..1e6 (int16 frames); 0 and ignored for float32
    32  4  n            uint32, samples per channel, 1..10 s worth (n <= 10 * fs)
    36  id_len          stream id, ASCII, fullmatching [A-Za-z0-9_:-]{1,64}
    ..  payload         channel-major samples: all of channel 1, then channel 2

A stream id has no ``.``, ``/``, ``+``, ``#``, whitespace or NUL, so it is one safe MQTT topic level
and unambiguous between the dots of the ZeroMQ topic ``alarm.<stream>.<event>`` (see
``protocol.topics``). Samples, once in mV, must be finite and within +-10 V (``MAX_ABS_MV``): no ECG
front end produces more, and the bound keeps later float32 arithmetic (squares, filters) finite.
A whole frame is at most ``MAX_FRAME_BYTES``; ``decode`` refuses a longer buffer before reading it.

``decode`` raises ``WireError`` whose ``reason`` is one of ``REASONS``; ``encode`` applies the same
checks to what it would put on the wire, so it never writes a frame ``decode`` refuses.
"""

from __future__ import annotations

import math
import re
import struct
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

MAGIC: Final = b"EC"
VERSION: Final = 1
HEADER: Final = struct.Struct("<2sBBBBHQdffI")
#: Stream id length in bytes (= characters: ids are ASCII).
MAX_ID_LEN: Final = 64
#: Sampling rate bounds, Hz.
MIN_FS: Final = 50.0
MAX_FS: Final = 2000.0
#: At most this many seconds of samples in one frame.
MAX_FRAME_S: Final = 10.0
MAX_CHANNELS: Final = 2
#: t0 bounds, UNIX seconds: the epoch to 2100-01-01T00:00:00Z. Finite huge values overflowed later arithmetic.
MIN_T0_S: Final = 0.0
MAX_T0_S: Final = 4_102_444_800.0
#: Largest sequence number: exact in a float64, so no spoofed 2**63 can wedge a stream's seq checks.
MAX_SEQ: Final = 2**53
#: int16 gain bounds, ADC units per mV.
MIN_GAIN: Final = 0.01
MAX_GAIN: Final = 1e6
#: Largest sample magnitude, mV (10 V).
MAX_ABS_MV: Final = 1e4

#: Every ``WireError.reason`` that ``decode``/``encode`` raise.
REASONS: Final[tuple[str, ...]] = (
    "too_large",
    "truncated",
    "bad_magic",
    "bad_version",
    "bad_dtype",
    "bad_channels",
    "bad_stream_id",
    "bad_seq",
    "bad_timestamp",
    "bad_rate",
    "bad_gain",
    "bad_length",
    "nonfinite",
    "out_of_range",
)

_ID_RE: Final = re.compile(r"[A-Za-z0-9_:-]{1,64}")
_ID_BYTES_RE: Final = re.compile(rb"[A-Za-z0-9_:-]{1,64}")
_F32_MAX: Final = float(np.finfo(np.float32).max)
# Gain is float32 on the wire: compare with the limits as float32, so a sender's gain=0.01 passes.
_MIN_GAIN_F32: Final = float(np.float32(MIN_GAIN))
_MAX_GAIN_F32: Final = float(np.float32(MAX_GAIN))


def max_frame_bytes(max_s: float = MAX_FRAME_S) -> int:
    """Bytes of the largest legal frame holding ``max_s`` seconds: header, 64-byte id, 2 x float32 at MAX_FS."""
    return HEADER.size + MAX_ID_LEN + MAX_CHANNELS * math.floor(max_s * MAX_FS) * 4


#: The largest legal frame, bytes (160,100): transports cap message sizes with it.
MAX_FRAME_BYTES: Final = max_frame_bytes()


def is_valid_stream_id(s: object) -> bool:
    """True if ``s`` is a str fullmatching ``[A-Za-z0-9_:-]{1,64}``."""
    return isinstance(s, str) and _ID_RE.fullmatch(s) is not None


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
    """A decoded frame. ``samples`` is (channels, n) float32 in mV, finite, |x| <= MAX_ABS_MV."""

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


def _check_fields(dtype: DType, seq: int, t0: float, fs: float, gain: float, n: int) -> None:
    """The range checks shared by ``decode`` and ``encode`` (fs and gain as float32 values)."""
    if not 0 <= seq <= MAX_SEQ:
        raise WireError("bad_seq", f"seq {seq} outside 0-2**53")
    if not MIN_T0_S <= t0 <= MAX_T0_S:  # also false for NaN
        raise WireError("bad_timestamp", f"t0 {t0} outside {MIN_T0_S:.0f}-{MAX_T0_S:.0f} s")
    if not MIN_FS <= fs <= MAX_FS:
        raise WireError("bad_rate", f"{fs} Hz outside {MIN_FS:.0f}-{MAX_FS:.0f}")
    if dtype is DType.INT16 and not _MIN_GAIN_F32 <= gain <= _MAX_GAIN_F32:
        raise WireError("bad_gain", f"gain {gain} outside {MIN_GAIN}-{MAX_GAIN:g} ADC units/mV")
    if n == 0 or n > MAX_FRAME_S * fs:
        raise WireError("bad_length", f"{n} samples per channel (1 to {MAX_FRAME_S:g} s at {fs:g} Hz)")


def _to_mv(raw: NDArray[Any], dtype: DType, gain: float) -> NDArray[np.float32]:
    """Wire samples to float32 mV, checked finite (after scaling) and within MAX_ABS_MV."""
    if dtype is DType.INT16:
        samples = raw.astype(np.float32) / np.float32(gain)
    else:
        samples = raw.astype(np.float32)
    with np.errstate(invalid="ignore"):
        peak = float(np.abs(samples).max())  # NaN if any sample is NaN
    if not math.isfinite(peak):
        raise WireError("nonfinite", f"{int((~np.isfinite(samples)).sum())} NaN/inf samples")
    if peak > MAX_ABS_MV:
        raise WireError("out_of_range", f"|sample| {peak:g} mV > {MAX_ABS_MV:g} mV")
    return samples


def _as_f32(x: float) -> float:
    """``x`` as the float32 it becomes on the wire; out-of-range values pass through (checks refuse them)."""
    x = float(x)
    if not math.isfinite(x) or abs(x) > _F32_MAX:
        return x
    return float(np.float32(x))


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

    Float mV samples sent as INT16 are quantised with ``gain`` (ADC units per mV), saturating at the
    int16 limits like an ADC. Raises ``WireError`` (a ValueError) for anything ``decode`` would refuse.
    """
    if not is_valid_stream_id(stream_id):
        raise WireError("bad_stream_id", repr(stream_id))
    try:
        dtype = DType(dtype)
    except ValueError:
        raise WireError("bad_dtype", f"dtype {dtype!r}") from None
    arr = np.asarray(samples)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[0] not in (1, 2):
        raise WireError("bad_channels", f"1 or 2 channels expected, got shape {arr.shape}")
    seq = int(seq)
    t0 = float(t0) + 0.0  # -0.0 -> 0.0
    fs = _as_f32(fs)
    gain = _as_f32(gain) if dtype is DType.INT16 else 0.0
    _check_fields(dtype, seq, t0, fs, gain, arr.shape[1])
    if dtype is DType.INT16:
        if arr.dtype.kind == "f":
            if not np.isfinite(arr).all():
                raise WireError("nonfinite", "NaN/inf samples")
            arr = np.clip(np.round(arr * gain), -32768, 32767)
        elif arr.size and (arr.min() < -32768 or arr.max() > 32767):
            raise WireError("out_of_range", "ADC values outside int16")
    with np.errstate(over="ignore", invalid="ignore"):  # overflow to inf is refused just below
        wire = arr.astype(_NP[dtype])
    _to_mv(wire, dtype, gain)
    return _pack(dtype, wire.shape[0], stream_id.encode("ascii"), seq, t0, fs, gain, wire.shape[1], wire.tobytes())


def encode_unchecked(
    stream_id: str,
    seq: int,
    t0: float,
    fs: float,
    samples: NDArray[np.floating] | NDArray[np.integer],
    dtype: DType = DType.FLOAT32,
    gain: float = 200.0,
) -> bytes:
    """Like ``encode`` without the checks, for tests that need frames ``decode`` must refuse.

    Values that do not fit their header field at all (a negative seq, fs beyond float32) still raise.
    """
    arr = np.asarray(samples)
    if arr.ndim == 1:
        arr = arr[None, :]
    if dtype is DType.INT16:
        if arr.dtype.kind == "f":
            with np.errstate(invalid="ignore", over="ignore"):
                arr = np.nan_to_num(np.clip(np.round(arr * gain), -32768, 32767))
    else:
        gain = 0.0
    wire = arr.astype(_NP[DType(dtype)])
    sid = stream_id.encode("utf-8")
    return _pack(DType(dtype), wire.shape[0], sid, seq, t0, fs, gain, wire.shape[1], wire.tobytes())


def _pack(
    dtype: DType, ch: int, sid: bytes, seq: int, t0: float, fs: float, gain: float, n: int, payload: bytes
) -> bytes:
    return HEADER.pack(MAGIC, VERSION, int(dtype), ch, len(sid), 0, seq, t0, fs, gain, n) + sid + payload


def decode(buf: bytes | bytearray | memoryview) -> Frame:
    """Decode and validate one frame; raise ``WireError`` with a reason on anything wrong."""
    mv = memoryview(buf)
    if mv.nbytes > MAX_FRAME_BYTES:
        raise WireError("too_large", f"{mv.nbytes} bytes > {MAX_FRAME_BYTES}")
    if mv.nbytes < HEADER.size:
        raise WireError("truncated", f"{mv.nbytes} bytes, header needs {HEADER.size}")
    if mv.ndim != 1 or mv.itemsize != 1:
        mv = mv.cast("B")
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
    _check_fields(dtype, seq, t0, fs, gain, n)
    expected = HEADER.size + id_len + ch * n * _NP[dtype].itemsize
    if len(mv) != expected:
        raise WireError("truncated" if len(mv) < expected else "bad_length", f"{len(mv)} bytes, expected {expected}")
    sid_bytes = bytes(mv[HEADER.size : HEADER.size + id_len])
    if _ID_BYTES_RE.fullmatch(sid_bytes) is None:
        raise WireError("bad_stream_id", repr(sid_bytes))
    raw = np.frombuffer(mv, dtype=_NP[dtype], count=ch * n, offset=HEADER.size + id_len).reshape(ch, n)
    samples = _to_mv(raw, dtype, gain)
    return Frame(sid_bytes.decode("ascii"), int(seq), float(t0) + 0.0, float(fs), samples)
