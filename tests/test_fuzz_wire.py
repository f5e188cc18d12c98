"""Property-based fuzzing of the wire decoder, field by field (hypothesis).

The property: ``decode`` either returns a Frame whose every field is within the documented limits,
or raises ``WireError`` with a known reason; never any other exception. Strategies aim at each
header field's edges (the finite-but-huge t0 that once killed ingest, spoofed seq 2**63, ids with a
trailing newline or a dot, gains that overflow on scaling, payload length mismatches).
"""

from __future__ import annotations

import math
import struct
from typing import TypeVar

import numpy as np
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from numpy.typing import NDArray

from protocol.wire import (
    HEADER,
    MAGIC,
    MAX_ABS_MV,
    MAX_FRAME_S,
    MAX_FS,
    MAX_ID_LEN,
    MAX_SEQ,
    MAX_T0_S,
    MIN_FS,
    MIN_T0_S,
    REASONS,
    VERSION,
    DType,
    Frame,
    WireError,
    decode,
    encode,
    encode_unchecked,
    is_valid_stream_id,
)

T = TypeVar("T")

FUZZ = settings(
    max_examples=600, deadline=2000, database=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)

NASTY_FLOATS = [math.nan, math.inf, -math.inf, -0.0, 0.0, 1.5e308, -1.0, 1e-38, 3e38, -3e38, 5e-324]

EDGE_IDS = [b"nl-id\n", b"bed-1.VTACH", b"a/b", b"+", b"#", b"\x00", b"a\x00", "bé".encode(), b"\xff\xfe", b""]
EDGE_IDS += [b"a" * 64, b"a" * 65, b"a" * 255]

_valid_ids = st.from_regex(r"[A-Za-z0-9_:-]{1,64}", fullmatch=True)


def mostly(good: st.SearchStrategy[T], bad: st.SearchStrategy[T]) -> st.SearchStrategy[T]:
    """``good`` four times in five, else ``bad``: with ~10 fields, many frames break one field only."""
    return st.sampled_from([False, False, False, False, True]).flatmap(lambda broken: bad if broken else good)


_id_bytes = mostly(
    _valid_ids.map(str.encode),
    st.one_of(st.sampled_from(EDGE_IDS), st.binary(max_size=70), st.text(max_size=20).map(lambda s: s.encode("utf-8"))),
)
_seq = mostly(
    st.one_of(st.integers(0, MAX_SEQ), st.sampled_from([0, MAX_SEQ])),
    st.one_of(st.sampled_from([MAX_SEQ + 1, 2**63, 2**64 - 1]), st.integers(MAX_SEQ + 1, 2**64 - 1)),
)
_t0 = mostly(
    st.one_of(st.floats(MIN_T0_S, MAX_T0_S), st.sampled_from([0.0, -0.0, MAX_T0_S, 1.7e9])),
    st.one_of(st.sampled_from([*NASTY_FLOATS, MAX_T0_S + 1.0]), st.floats(allow_nan=True, allow_infinity=True)),
)
_fs = mostly(
    st.one_of(st.floats(MIN_FS, MAX_FS, width=32), st.sampled_from([MIN_FS, MAX_FS, 250.0, 360.0])),
    st.one_of(
        st.sampled_from([0.0, 49.99, 2000.1, 1e38, math.nan, math.inf, -250.0]),
        st.floats(width=32, allow_nan=True, allow_infinity=True),
    ),
)
_F32_MIN_GAIN = float(np.float32(0.01))
_gain = mostly(
    st.one_of(st.floats(_F32_MIN_GAIN, 1e6, width=32), st.sampled_from([0.01, 200.0, 1e6])),
    st.one_of(
        st.sampled_from([0.0, 1e-38, 0.009, 1e7, math.nan, math.inf, -200.0, 1e-45]),
        st.floats(width=32, allow_nan=True, allow_infinity=True),
    ),
)
_n = mostly(
    st.integers(1, 64),
    st.one_of(st.sampled_from([0, 2500, 20_000, 20_001, 2**32 - 1]), st.integers(0, 2**32 - 1)),
)
_nasty_samples = st.one_of(
    st.sampled_from([3e38, -3e38, math.nan, math.inf, -math.inf, 1e4 + 1.0, -1e5]),
    st.floats(width=32, allow_nan=True, allow_infinity=True),
)
_f32_samples = mostly(st.floats(-MAX_ABS_MV, MAX_ABS_MV, width=32), _nasty_samples)
#: Payloads built from sample values stay under this size; larger claimed n gets a mismatched payload.
_PAYLOAD_CAP = 4096


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """A frame from per-field strategies: each field plausible (edges included) or, 1 in 5, broken."""
    magic = draw(mostly(st.just(MAGIC), st.binary(min_size=2, max_size=2)))
    version = draw(mostly(st.just(VERSION), st.integers(0, 255)))
    dtype = draw(mostly(st.sampled_from([1, 2]), st.integers(0, 255)))
    ch = draw(mostly(st.sampled_from([1, 2]), st.integers(0, 255)))
    sid = draw(_id_bytes)[:255]
    id_len = draw(mostly(st.just(len(sid)), st.integers(0, 255)))
    flags = draw(st.integers(0, 0xFFFF))  # reserved: readers ignore it
    seq, t0, fs, gain, n = draw(_seq), draw(_t0), draw(_fs), draw(_gain), draw(_n)
    count = ch * n
    how = draw(mostly(st.just("exact"), st.sampled_from(["short", "long", "random"])))
    if how == "random" or count * 4 > _PAYLOAD_CAP:
        payload = draw(st.binary(max_size=256))
    else:
        if dtype == 1:
            adc = draw(st.lists(st.integers(-32768, 32767), min_size=count, max_size=count))
            payload = np.array(adc, "<i2").tobytes()
        else:
            good = st.floats(-MAX_ABS_MV, MAX_ABS_MV, width=32)
            x = np.array(draw(st.lists(good, min_size=count, max_size=count)), "<f4")
            if count and draw(mostly(st.just(False), st.just(True))):
                x[draw(st.integers(0, count - 1))] = np.float32(draw(_nasty_samples))
            payload = x.tobytes()
        if how == "short":
            payload = payload[: max(0, len(payload) - draw(st.integers(1, 8)))]
        elif how == "long":
            payload += draw(st.binary(min_size=1, max_size=8))
    head = HEADER.pack(magic, version, dtype, ch, id_len, flags, seq, t0, fs, gain, n)
    return head + sid + payload


def assert_within_limits(f: Frame, buf: bytes) -> None:
    """Every field of an accepted frame is within the documented limits and matches the header."""
    _, _, dt, ch, id_len, _, seq, t0, fs, _, n = HEADER.unpack_from(buf)
    assert is_valid_stream_id(f.stream_id) and len(f.stream_id) <= MAX_ID_LEN
    assert f.stream_id.encode() == buf[HEADER.size : HEADER.size + id_len]
    assert isinstance(f.seq, int) and 0 <= f.seq <= MAX_SEQ and f.seq == seq
    assert math.isfinite(f.t0) and MIN_T0_S <= f.t0 <= MAX_T0_S and f.t0 == t0
    assert MIN_FS <= f.fs <= MAX_FS and f.fs == fs
    assert dt in (1, 2) and ch in (1, 2)
    assert f.samples.dtype == np.float32 and f.samples.shape == (ch, n)
    assert 1 <= f.n <= MAX_FRAME_S * f.fs
    assert len(buf) == HEADER.size + id_len + ch * n * (2 if dt == 1 else 4)
    assert np.isfinite(f.samples).all()
    assert float(np.abs(f.samples).max()) <= MAX_ABS_MV
    # The later float32 arithmetic the limits exist for stays finite.
    assert np.isfinite(np.square(f.samples)).all()


@FUZZ
@given(frames())
def test_decode_accepts_only_frames_within_limits(buf: bytes) -> None:
    try:
        f = decode(buf)
    except WireError as exc:
        assert exc.reason in REASONS
        event(exc.reason)  # pytest --hypothesis-show-statistics shows the mix of outcomes
        return
    event("accepted")
    assert_within_limits(f, buf)


@settings(max_examples=300, deadline=2000, database=None)
@given(st.binary(max_size=300))
def test_decode_of_random_bytes_never_raises_anything_else(buf: bytes) -> None:
    try:
        f = decode(buf)
    except WireError as exc:
        assert exc.reason in REASONS
        return
    assert_within_limits(f, buf)


@FUZZ
@given(
    sid=st.one_of(_valid_ids, st.text(max_size=20)),
    seq=_seq,
    t0=_t0,
    fs=_fs,
    ch=st.sampled_from([1, 2]),
    n=st.integers(0, 40),
    values=st.data(),
)
def test_encode_refuses_exactly_what_decode_refuses(
    sid: str, seq: int, t0: float, fs: float, ch: int, n: int, values: st.DataObject
) -> None:
    """float32 frames: ``encode`` succeeds iff the same frame packed without checks decodes."""
    x = np.array(values.draw(st.lists(_f32_samples, min_size=ch * n, max_size=ch * n)), dtype=np.float32)
    x = x.reshape(ch, n)
    try:
        unchecked = encode_unchecked(sid, seq, t0, fs, x)
    except struct.error:
        return  # a value that does not fit its header field at all (an id over 255 bytes)
    try:
        decode(unchecked)
        decodes = True
    except WireError:
        decodes = False
    try:
        encoded = encode(sid, seq, t0, fs, x)
    except WireError as exc:
        assert exc.reason in REASONS
        assert not decodes, f"encode refused ({exc}) a frame decode accepts"
        return
    assert decodes, "encode wrote a frame decode refuses"
    assert decode(encoded).stream_id == sid


@st.composite
def valid_frames(draw: st.DrawFn) -> tuple[str, int, float, float, NDArray[np.float64], DType, float]:
    sid = draw(_valid_ids)
    seq = draw(st.integers(0, MAX_SEQ))
    t0 = draw(st.one_of(st.floats(MIN_T0_S, MAX_T0_S), st.sampled_from([0.0, MAX_T0_S])))
    fs = draw(st.floats(MIN_FS, MAX_FS, width=32))
    ch = draw(st.sampled_from([1, 2]))
    n = draw(st.integers(1, 64))
    dtype = draw(st.sampled_from([DType.FLOAT32, DType.INT16]))
    gain = draw(st.floats(float(np.float32(0.01)), 1e6, width=32)) if dtype is DType.INT16 else 200.0
    limit = MAX_ABS_MV if dtype is DType.FLOAT32 else 0.999 * min(MAX_ABS_MV, 32767 / gain)
    values = draw(st.lists(st.floats(-limit, limit), min_size=ch * n, max_size=ch * n))
    return sid, seq, t0, fs, np.array(values).reshape(ch, n), dtype, gain


@FUZZ
@given(valid_frames())
def test_valid_frames_round_trip(args: tuple[str, int, float, float, NDArray[np.float64], DType, float]) -> None:
    sid, seq, t0, fs, x, dtype, gain = args
    f = decode(encode(sid, seq, t0, fs, x, dtype, gain))
    assert (f.stream_id, f.seq, f.t0, f.fs) == (sid, seq, t0, fs)
    assert f.samples.shape == x.shape
    if dtype is DType.FLOAT32:
        np.testing.assert_array_equal(f.samples, x.astype(np.float32))
    else:
        g32 = float(np.float32(gain))
        # Within one quantum (1/gain), plus float32 rounding of the value itself.
        err = np.abs(f.samples.astype(np.float64) - x)
        assert (err <= 1.0 / g32 + 1e-6 * np.abs(x) + 1e-12).all(), float(err.max())


@FUZZ
@given(
    dtype=st.sampled_from([1, 2]),
    ch=st.sampled_from([1, 2]),
    n=st.integers(1, 32),
    gain=_gain,
    data=st.data(),
)
def test_sample_values_are_finite_and_in_range_or_refused(
    dtype: int, ch: int, n: int, gain: float, data: st.DataObject
) -> None:
    """A valid header with any sample values: accepted samples are finite and within +-10 V."""
    if dtype == 1:
        values = data.draw(st.lists(st.integers(-32768, 32767), min_size=ch * n, max_size=ch * n))
        payload = np.array(values, "<i2").tobytes()
    else:
        payload = np.array(data.draw(st.lists(_f32_samples, min_size=ch * n, max_size=ch * n)), "<f4").tobytes()
    buf = HEADER.pack(MAGIC, VERSION, dtype, ch, 3, 0, 7, 1.7e9, 250.0, gain, n) + b"s-1" + payload
    try:
        f = decode(buf)
    except WireError as exc:
        assert exc.reason in {"nonfinite", "out_of_range", "bad_gain"}
        event(exc.reason)
        return
    event("accepted")
    assert_within_limits(f, buf)
