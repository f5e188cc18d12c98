"""ZeroMQ CURVE end to end: real sockets, a real in-process daemon, certificates made per test.

Unknown keys are refused at the handshake (counted, nothing decoded, no alarm leaks to them); an
authorised sender's VT still raises VTACH for an authorised subscriber; a key bound to bed-1
cannot raise or blind bed-2; non-loopback binds need CURVE or ``insecure``; ``keygen`` writes
private secrets; a client the server refuses gets a clear error in bounded time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import stat
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict

import numpy as np
import pytest
import zmq
import zmq.asyncio
from prometheus_client import CollectorRegistry

from monitor.config import ConfigError, MonitorConfig
from monitor.daemon import Monitor
from monitor.transports.curve import ClientKeys, HandshakeError, keygen, load_clients, load_secret
from protocol.alarm import Alarm
from protocol.topics import ZMQ_ALARM_PREFIX
from protocol.wire import DType, encode
from simulators.sender import FrameSender
from simulators.subscribe import alarms_from
from simulators.synthetic import Episode, PatientSpec, SyntheticPatient
from tests.conftest import CLI, ROOT, free_port
from tests.helpers import wait_for

FS = 250.0
FRAME = 50  # 0.2 s
T0 = 1_000_000.0
VT = PatientSpec(75.0, [Episode("VTACH", 20.0, 40.0)])


class CurveKw(TypedDict):
    curve_server: str
    curve_secret: str


@dataclass
class Keys:
    """Certificates for one test: the daemon's, three accepted clients' and a stranger's."""

    dir: Path
    clients: Path

    def public(self, name: str) -> str:
        return str(self.dir / f"{name}.key")

    def secret(self, name: str) -> str:
        return str(self.dir / f"{name}.key_secret")

    def client(self, name: str, server: str = "server") -> CurveKw:
        return {"curve_server": self.public(server), "curve_secret": self.secret(name)}


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    d, clients = tmp_path / "keys", tmp_path / "clients"
    clients.mkdir()
    keygen(d, "server")
    keygen(d, "rogue")  # never installed in clients/
    for name, streams in (("dev1", "bed-1|bed-3x"), ("dev2", "bed-2"), ("nurse", None)):
        pub, _ = keygen(d, name, streams)
        shutil.copy(pub, clients / pub.name)  # the operator installs the public certificate only
    return Keys(d, clients)


@dataclass
class Daemon:
    monitor: Monitor
    ingest: str
    alarms: str
    registry: CollectorRegistry
    received: list[Alarm] = field(default_factory=list)

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return self.registry.get_sample_value(name, labels or {}) or 0.0

    def got(self, stream: str, event: str) -> list[Alarm]:
        return [a for a in self.received if a.stream_id == stream and a.event == event and a.state == "onset"]


@contextlib.asynccontextmanager
async def curve_daemon(keys: Keys, subscriber: str | None = "nurse") -> AsyncIterator[Daemon]:
    """A CURVE daemon (rules only, to spare the CPU) and, unless None, an authorised subscriber."""
    cfg = MonitorConfig(
        ingest=(f"tcp://127.0.0.1:{free_port()}",),
        alarms=(f"tcp://127.0.0.1:{free_port()}",),
        metrics_port=0,
        console=False,
        rules_only=True,
        curve_secret=keys.secret("server"),
        curve_clients=str(keys.clients),
    )
    registry = CollectorRegistry()
    async with Monitor(cfg, registry=registry) as mon:
        d = Daemon(mon, cfg.ingest[0], cfg.alarms[0], registry)
        task: asyncio.Task[None] | None = None
        if subscriber is not None:
            ready = asyncio.Event()

            async def collect() -> None:
                async for a in alarms_from(d.alarms, ready, **keys.client(subscriber)):
                    d.received.append(a)

            task = asyncio.create_task(collect())
            await asyncio.wait_for(ready.wait(), 10.0)  # set once the CURVE handshake succeeded
        try:
            yield d
        finally:
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)


def _frames(sid: str, spec: PatientSpec, seconds: float, seed: int = 0) -> list[bytes]:
    p = SyntheticPatient(spec, FS, np.random.default_rng(seed))
    return [
        encode(sid, k, T0 + k * FRAME / FS, FS, p.chunk(FRAME), DType.INT16, 200.0)
        for k in range(int(seconds * FS / FRAME))
    ]


async def _send(tx: FrameSender, sid: str, frames: list[bytes], speed: float = 20.0) -> None:
    for k, payload in enumerate(frames):
        await tx.send(sid, payload)
        if k % 5 == 4:
            await asyncio.sleep(5 * FRAME / FS / speed)


class RawSub:
    """A bare SUB socket with a stranger's key that never gives up: it must simply get nothing."""

    def __init__(self, url: str, keys: ClientKeys) -> None:
        self.ctx = zmq.asyncio.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        keys.apply(self.sock)
        self.sock.setsockopt(zmq.SUBSCRIBE, ZMQ_ALARM_PREFIX)
        self.sock.connect(url)

    async def count(self) -> int:
        n = 0
        while await self.sock.poll(0):
            await self.sock.recv_multipart()
            n += 1
        return n

    def close(self) -> None:
        self.sock.close(0)
        self.ctx.term()


async def test_unknown_keys_are_refused_at_the_handshake_and_counted(keys: Keys) -> None:
    async with asyncio.timeout(30), curve_daemon(keys, subscriber=None) as d:
        # FrameSender notices the refusal (final: libzmq does not retry a ZAP 400) and says so.
        t = time.monotonic()
        with pytest.raises(HandshakeError, match="refused this client's key"):
            async with FrameSender(d.ingest, **keys.client("rogue")):
                pass
        assert time.monotonic() - t < 5.0
        # A bare PUSH with the stranger's key, and one without CURVE at all: nothing gets in.
        ctx = zmq.asyncio.Context()
        rogue, plain = ctx.socket(zmq.PUSH), ctx.socket(zmq.PUSH)
        ClientKeys.load(keys.public("server"), keys.secret("rogue")).apply(rogue)
        for s in (rogue, plain):
            s.connect(d.ingest)
        for payload in _frames("bed-1", VT, 4.0):
            for s in (rogue, plain):
                with contextlib.suppress(zmq.Again):
                    await s.send(payload, zmq.NOBLOCK)
        assert await wait_for(lambda: d.metric("ecg_auth_failures_total", {"socket": "ingest"}) >= 2, 5.0)
        await asyncio.sleep(0.5)  # give anything that slipped through the time to be counted
        assert d.metric("ecg_frames_ingested_total", {"transport": "zmq"}) == 0
        assert sum(d.metric("ecg_frames_rejected_total", {"reason": r}) for r in ("bad_magic", "truncated")) == 0
        assert not d.monitor.ward.beds and not d.monitor.ward.pending
        for s in (rogue, plain):
            s.close(0)
        ctx.term()
        # A non-CURVE FrameSender against the CURVE daemon fails in bounded time instead of blocking,
        # or of dropping its queued frames at close without a word (libzmq may take the refusal as a
        # dropped connection, reconnect and keep queueing: the exit check catches that case).
        t = time.monotonic()
        with pytest.raises(HandshakeError, match="CURVE on one side only"):
            async with FrameSender(d.ingest, handshake_timeout=1.0) as tx:
                for payload in _frames("bed-1", VT, 10.0):
                    await tx.send("bed-1", payload)
                    await asyncio.sleep(0.01)
        assert time.monotonic() - t < 5.0
        # A subscriber with a stranger's key is refused too, and counted on the alarms socket.
        with pytest.raises(HandshakeError):
            async for _ in alarms_from(d.alarms, **keys.client("rogue")):
                pass
        assert d.metric("ecg_auth_failures_total", {"socket": "alarms"}) >= 1


async def test_authorised_vt_raises_vtach_for_the_authorised_subscriber_only(keys: Keys) -> None:
    async with asyncio.timeout(40), curve_daemon(keys) as d:
        stranger = RawSub(d.alarms, ClientKeys.load(keys.public("server"), keys.secret("rogue")))
        try:
            async with FrameSender(d.ingest, **keys.client("dev1")) as tx:
                await _send(tx, "bed-1", _frames("bed-1", VT, 45.0))
            assert await wait_for(lambda: d.got("bed-1", "VTACH"), 15.0), [a.event for a in d.received]
            assert d.metric("ecg_frames_ingested_total", {"transport": "zmq"}) == 225
            assert await stranger.count() == 0, "an unknown subscriber received an alarm"
            assert d.metric("ecg_auth_failures_total", {"socket": "alarms"}) >= 1
        finally:
            stranger.close()


async def test_a_sender_bound_to_bed_1_cannot_raise_or_blind_bed_2(
    keys: Keys, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    async with asyncio.timeout(40), curve_daemon(keys) as d:
        bed2 = _frames("bed-2", VT, 45.0)
        # dev1 tries: a glitched bed-2 frame (sequence and clock far ahead: would force a resync
        # and a NO_SIGNAL), then a whole VT stream of its own for bed-3, which only dev1's pattern
        # is near ("bed-3x" does not fullmatch "bed-3").
        glitch = encode("bed-2", 10**6, T0 + 5000.0, FS, np.zeros((2, FRAME), np.int16), DType.INT16, 200.0)
        async with (
            FrameSender(d.ingest, **keys.client("dev2")) as own,
            FrameSender(d.ingest, **keys.client("dev1")) as other,
        ):

            async def attack() -> None:
                for _ in range(10):
                    await other.send("bed-2", glitch)
                    await asyncio.sleep(0.1)
                await _send(other, "bed-3", _frames("bed-3", VT, 45.0, seed=2))

            await asyncio.gather(_send(own, "bed-2", bed2), attack())
        assert await wait_for(lambda: d.got("bed-2", "VTACH"), 15.0), [a.event for a in d.received]
        assert await wait_for(
            lambda: d.metric("ecg_frames_rejected_total", {"reason": "unauthorised_stream"}) == 235, 5.0
        )
        assert d.metric("ecg_frames_ingested_total", {"transport": "zmq"}) == len(bed2)
        assert "bed-3" not in d.monitor.ward.beds and not d.got("bed-3", "VTACH")
        assert not [a for a in d.received if a.stream_id == "bed-2" and a.event == "NO_SIGNAL"]
        assert d.metric("ecg_stream_resyncs_total") == 0 and d.metric("ecg_stream_gaps_total") == 0
    security = [r.getMessage() for r in caplog.records if "SECURITY" in r.getMessage()]
    assert any("'dev1'" in m and "'bed-2'" in m for m in security), security
    assert len(security) <= 3, "security events must be logged at a bounded rate"


async def test_non_loopback_bind_needs_curve_or_insecure(keys: Keys, caplog: pytest.LogCaptureFixture) -> None:
    port = free_port()
    for key in ("ingest", "alarms"):
        with pytest.raises(ConfigError, match=rf"^{key}: .*without CURVE"):
            MonitorConfig(**{key: (f"tcp://0.0.0.0:{port}",)})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^metrics_host: "):
        MonitorConfig(metrics_host="0.0.0.0")
    for host in ("127.0.0.2", "localhost"):
        MonitorConfig(ingest=(f"tcp://{host}:{port}",))
    # With CURVE (here through the environment), binding everywhere is fine.
    env = {"ECG_MONITOR_CURVE_SECRET": keys.secret("server"), "ECG_MONITOR_CURVE_CLIENTS": str(keys.clients)}
    cfg = MonitorConfig.load(env=env, ingest=(f"tcp://0.0.0.0:{port}",))
    assert cfg.curve_secret == keys.secret("server")
    # Bad CURVE files are refused when the config is built, naming the key.
    with pytest.raises(ConfigError, match=r"^curve_secret: .*no secret key"):
        MonitorConfig(curve_secret=keys.public("server"), curve_clients=str(keys.clients))
    with pytest.raises(ConfigError, match=r"^curve_clients: .*missing or not readable"):
        MonitorConfig(curve_secret=keys.secret("server"), curve_clients=str(keys.dir / "nowhere"))
    (keys.dir / "empty").mkdir()
    with pytest.raises(ConfigError, match=r"^curve_clients: .*no client certificates"):
        MonitorConfig(curve_secret=keys.secret("server"), curve_clients=str(keys.dir / "empty"))
    with pytest.raises(ConfigError, match=r"^curve_clients: .*go together"):
        MonitorConfig(curve_secret=keys.secret("server"))
    # insecure lets it start, with a warning every time.
    caplog.set_level(logging.WARNING)
    cfg = MonitorConfig(
        ingest=(f"tcp://0.0.0.0:{port}",),
        alarms=(f"tcp://127.0.0.1:{free_port()}",),
        metrics_port=0,
        console=False,
        rules_only=True,
        insecure=True,
    )
    async with asyncio.timeout(20), Monitor(cfg, registry=CollectorRegistry()):
        pass
    assert any(r.levelno == logging.WARNING and "insecure" in r.getMessage() for r in caplog.records)


async def test_keygen_cli_writes_a_private_secret_and_the_bed_binding(tmp_path: Path) -> None:
    d = tmp_path / "k"

    async def cli(*args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            *CLI, *args, cwd=ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await asyncio.wait_for(proc.communicate(), 30.0)
        assert proc.returncode is not None
        return proc.returncode, out.decode()

    code, out = await cli("keygen", str(d), "--name", "x", "--streams", "bed-1")
    assert code == 0, out
    pub, sec = d / "x.key", d / "x.key_secret"
    assert stat.S_IMODE(sec.stat().st_mode) == 0o600
    assert stat.S_IMODE(pub.stat().st_mode) == 0o644
    assert "secret-key" not in pub.read_text()
    pair = load_secret(sec)
    (client,) = load_clients(d).values()
    assert client.name == "x" and client.public_key == pair.public_key
    assert client.streams is not None and client.streams.fullmatch("bed-1") and not client.streams.fullmatch("bed-10")
    assert [p.name for p in d.iterdir()] and all(not p.name.startswith(".keygen") for p in d.iterdir())
    code, out = await cli("keygen", str(d), "--name", "x")
    assert code == 2 and "already exists" in out
    code, out = await cli("keygen", str(d), "--name", "y", "--streams", "bed-(")
    assert code == 2 and "not a regex" in out and not (d / "y.key").exists()


async def test_frames_queued_for_a_daemon_that_never_answered_are_not_dropped_in_silence() -> None:
    # Nothing listens on the port: every frame sits in libzmq's queue. Leaving cleanly must say so.
    url = f"tcp://127.0.0.1:{free_port()}"
    t = time.monotonic()
    with pytest.raises(HandshakeError, match="12 frames were never delivered"):
        async with FrameSender(url, handshake_timeout=1.0) as tx:
            for payload in _frames("bed-1", VT, 2.4):
                await tx.send("bed-1", payload)
    assert time.monotonic() - t < 3.0
    # Nothing sent, nothing lost: leaving without sending waits for nobody.
    t = time.monotonic()
    async with FrameSender(url, handshake_timeout=1.0):
        pass
    assert time.monotonic() - t < 0.5


async def test_a_client_with_the_wrong_server_key_gets_a_clear_error_in_bounded_time(keys: Keys) -> None:
    async with asyncio.timeout(40), curve_daemon(keys, subscriber=None) as d:
        wrong = keys.client("dev1", server="rogue")  # dev1 is accepted, but it trusts the wrong server
        t = time.monotonic()
        with pytest.raises(HandshakeError, match="within 1 s"):
            async with FrameSender(d.ingest, handshake_timeout=1.0, **wrong):
                pass
        assert time.monotonic() - t < 3.0
        # The CLI turns it into exit code 1 and one line, after the default 5 s.
        t = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *CLI,
            "simulate",
            "--to",
            d.ingest,
            "--patients",
            "1",
            "--duration",
            "5",
            "--curve-server",
            wrong["curve_server"],
            "--curve-secret",
            wrong["curve_secret"],
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), 30.0)
        assert proc.returncode == 1, err.decode()
        assert "handshake" in err.decode() and "Traceback" not in err.decode()
        assert time.monotonic() - t < 20.0
        assert d.metric("ecg_frames_ingested_total", {"transport": "zmq"}) == 0
