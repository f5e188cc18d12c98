import numpy as np
import pytest
from scipy import signal

from monitor.core.resample import StreamResampler
from monitor.core.ringbuffer import RingBuffer


def test_ring_buffer_keeps_the_newest_samples_in_order() -> None:
    rb = RingBuffer(2, 10)
    data = np.vstack([np.arange(25), -np.arange(25)]).astype(np.float32)
    for a in range(0, 25, 7):
        rb.write(data[:, a : a + 7])
    assert len(rb) == 10 and rb.total == 25
    np.testing.assert_array_equal(rb.latest(10), data[:, 15:25])
    np.testing.assert_array_equal(rb.latest(3), data[:, 22:25])
    rb.write(np.zeros((2, 30), dtype=np.float32))  # larger than capacity
    assert rb.latest(10).sum() == 0 and rb.total == 55


def test_ring_buffer_partial_fill() -> None:
    rb = RingBuffer(2, 100)
    rb.write(np.ones((2, 5), dtype=np.float32))
    assert rb.latest(50).shape == (2, 5)


def _stream(fs_in: float, fs_out: float, x: np.ndarray, frame: int) -> np.ndarray:
    rs = StreamResampler(fs_in, fs_out, x.shape[0])
    return np.concatenate([rs.process(x[:, a : a + frame]) for a in range(0, x.shape[1], frame)], axis=1)


def test_streaming_resampler_rate_and_seamless_frames() -> None:
    fs_in, fs_out = 360.0, 128.0
    t = np.arange(int(20 * fs_in)) / fs_in
    x = np.vstack([np.sin(2 * np.pi * 5 * t), np.cos(2 * np.pi * 1.3 * t)])
    a = _stream(fs_in, fs_out, x, 72)
    b = _stream(fs_in, fs_out, x, 37)  # frame size must not matter
    n = min(a.shape[1], b.shape[1])
    assert abs(a.shape[1] - 20 * fs_out) <= 2
    np.testing.assert_allclose(a[:, :n], b[:, :n], atol=1e-5)
    # Against the exact signal, allowing the anti-alias filter's group delay (a few ms).
    t_out = np.arange(n) / fs_out
    delays = np.arange(0, 0.05, 0.0005)
    err = [np.abs(a[0, 256:n] - np.sin(2 * np.pi * 5 * (t_out[256:] - d))).max() for d in delays]
    assert min(err) < 0.02


def test_upsampling_from_svdb_like_rate() -> None:
    fs_in, fs_out = 100.0, 128.0
    t = np.arange(1000) / fs_in
    x = np.sin(2 * np.pi * 2 * t)[None, :]
    y = _stream(fs_in, fs_out, x, 20)
    ref = signal.resample_poly(x[0], 32, 25)
    n = min(y.shape[1], ref.size) - 20
    assert np.abs(y[0, 20:n] - ref[20:n]).max() < 0.02


@pytest.mark.parametrize("n", [10, 12, 25])
def test_a_write_as_long_as_the_buffer_keeps_the_order(n: int) -> None:
    """A block of ``capacity`` samples or more used to land at index 0 whatever the write position,
    so ``latest`` returned them out of order (review 2026-12-07)."""
    r = RingBuffer(1, 10)
    r.write(np.zeros((1, 3), np.float32))
    r.write(np.arange(n, dtype=np.float32)[None])
    assert r.latest(10)[0].tolist() == list(range(n - 10, n))
    r.write(np.array([[100.0, 101.0]], np.float32))
    assert r.latest(4)[0].tolist() == [n - 2, n - 1, 100.0, 101.0]
