import numpy as np
import pytest

from monitor.wire import HEADER, DType, WireError, decode, encode


def test_float32_roundtrip() -> None:
    x = np.random.default_rng(0).normal(0, 1, (2, 50)).astype(np.float32)
    f = decode(encode("bed-7", 42, 1700000000.25, 250.0, x))
    assert (f.stream_id, f.seq, f.t0, f.fs) == ("bed-7", 42, 1700000000.25, 250.0)
    np.testing.assert_array_equal(f.samples, x)


def test_int16_roundtrip_uses_gain() -> None:
    adc = np.array([[200, -400, 0], [100, 50, -25]], dtype=np.int16)
    f = decode(encode("s", 0, 1.0, 360.0, adc, DType.INT16, gain=200.0))
    np.testing.assert_allclose(f.samples, adc / 200.0)


def test_single_channel_frame() -> None:
    f = decode(encode("s", 0, 1.0, 128.0, np.ones(10)))
    assert f.samples.shape == (1, 10)


def _valid() -> bytes:
    return encode("ok", 1, 10.0, 250.0, np.zeros((2, 25), dtype=np.float32))


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda b: b[:10], "truncated"),
        (lambda b: b[:-3], "truncated"),
        (lambda b: b + b"xx", "bad_length"),
        (lambda b: b"XX" + b[2:], "bad_magic"),
        (lambda b: b[:2] + bytes([9]) + b[3:], "bad_version"),
        (lambda b: b[:3] + bytes([7]) + b[4:], "bad_dtype"),
        (lambda b: b[:4] + bytes([3]) + b[5:], "bad_channels"),
    ],
)
def test_malformed_frames_are_rejected_with_a_reason(mutate, reason) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(WireError) as err:
        decode(mutate(_valid()))
    assert err.value.reason == reason


def test_absurd_rate_nan_and_bad_ids_rejected() -> None:
    with pytest.raises(WireError, match="bad_rate"):
        decode(encode("s", 0, 1.0, 5.0, np.zeros((2, 5))))
    with pytest.raises(WireError, match="bad_rate"):
        decode(encode("s", 0, 1.0, 1e6, np.zeros((2, 5))))
    with pytest.raises(WireError, match="nonfinite"):
        decode(encode("s", 0, 1.0, 250.0, np.array([[0.0, np.nan], [np.inf, 0.0]])))
    with pytest.raises(ValueError):
        encode("bad id with spaces", 0, 1.0, 250.0, np.zeros((2, 5)))
    raw = bytearray(_valid())
    raw[HEADER.size] = 0xFF  # invalid UTF-8 in the stream id
    with pytest.raises(WireError, match="bad_stream_id"):
        decode(bytes(raw))
