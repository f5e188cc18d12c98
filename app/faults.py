"""``ecg-monitor bench --faults``: fault injection against the daemon as it is deployed.

Everything goes through processes and real sockets, so the harness measures whatever daemon
is in the tree and keeps working when its internals change: the daemon is started with
``python -m app.cli run``; frames come from sender processes (ZeroMQ PUSH or MQTT); alarms
are counted from the daemon's journal (what it decided), from a real subscriber (what was
delivered) and from Prometheus ``/metrics``. Brokers are real mosquitto processes on free
loopback ports, killed and restarted on the same port.

Each scenario gives a row: alarms expected (in the journal), delivered, late (the largest
receipt wall time minus the alarm's ``published_at``), lost (in the journal, never received),
and notes. Lost must be 0 to pass, and each scenario adds its own check.
"""

from __future__ import annotations

import json
import logging
import math
import multiprocessing as mp
import os
import platform
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from app.localnet import Mosquitto, free_port, mosquitto_binary, wait_port, wait_until  # noqa: F401
from protocol.alarm import Alarm

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
FS = 250.0
FRAME_N = 50  # 0.2 s at 250 Hz
FRAME_S = FRAME_N / FS

# -- plumbing: ports, brokers, the daemon process, /metrics ------------------------------


def scrape(port: int, timeout: float = 2.0) -> dict[str, float] | None:
    """GET /metrics; ``{'name{k="v",...}': value}``, labels sorted; None if it did not answer."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
            text = r.read().decode()
    except OSError:
        return None
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}" if labels else s.name] = float(s.value)
    return out


def metric(m: dict[str, float] | None, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 when absent)."""
    if not m:
        return 0.0
    want = [f'{k}="{v}"' for k, v in labels.items()]
    total = 0.0
    for key, v in m.items():
        base, _, rest = key.partition("{")
        if base == name and all(w in rest for w in want):
            total += v
    return total


def has_metric(m: dict[str, float] | None, name: str) -> bool:
    return bool(m) and any(k.partition("{")[0] == name for k in m or {})


class Daemon:
    """The daemon as a child process (``python -m app.cli run``), its log in ``workdir``."""

    def __init__(
        self,
        workdir: Path,
        ingest: Sequence[str],
        alarms: Sequence[str],
        journal: Path,
        *,
        rules_only: bool = True,
        env: dict[str, str] | None = None,
    ) -> None:
        self.workdir = workdir
        self.ingest, self.alarms, self.journal = list(ingest), list(alarms), journal
        self.metrics_port = free_port()
        self.rules_only = rules_only
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 60.0) -> None:
        """Start it and wait until /metrics answers and its ZeroMQ ingest ports listen."""
        cmd = [sys.executable, "-m", "app.cli", "run", "--no-console", "--metrics-port", str(self.metrics_port)]
        cmd += ["--journal", str(self.journal)]
        for u in self.ingest:
            cmd += ["--ingest", u]
        for u in self.alarms:
            cmd += ["--alarms", u]
        if self.rules_only:
            cmd.append("--rules-only")
        self.starts += 1
        logf = (self.workdir / f"daemon-{self.starts}.log").open("wb")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=logf, stderr=subprocess.STDOUT, env=env)
        logf.close()
        zmq_ports = [int(u.rsplit(":", 1)[1]) for u in self.ingest if u.startswith("tcp://")]

        def up() -> bool:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"daemon exited at start:\n{self.log_tail()}")
            return scrape(self.metrics_port, 0.5) is not None

        if not wait_until(up, timeout, 0.2):
            raise TimeoutError(f"daemon /metrics did not answer in {timeout:.0f} s:\n{self.log_tail()}")
        for p in zmq_ports:
            wait_port(p, 10.0)

    def cpu_seconds(self) -> float:
        """CPU time the daemon process has used (user + system), from /proc."""
        if self.proc is None:
            return 0.0
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def metrics(self, timeout: float = 2.0) -> dict[str, float] | None:
        return scrape(self.metrics_port, timeout)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def terminate(self, timeout: float = 15.0) -> tuple[int | None, float]:
        """SIGTERM; return (exit code or None if it had to be killed, seconds to exit)."""
        if self.proc is None:
            return None, 0.0
        if self.proc.poll() is not None:
            return self.proc.returncode, 0.0
        t = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc: int | None = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            rc = None
            self.proc.kill()
            self.proc.wait(10)
        return rc, time.monotonic() - t

    def log_tail(self, n: int = 30) -> str:
        f = self.workdir / f"daemon-{self.starts}.log"
        lines = f.read_text(errors="replace").splitlines() if f.exists() else []
        return "\n".join(lines[-n:])

    def log_count(self, needle: str) -> int:
        """Lines containing ``needle`` across every run of this daemon."""
        n = 0
        for f in self.workdir.glob("daemon-*.log"):
            n += sum(needle in line for line in f.read_text(errors="replace").splitlines())
        return n


# -- alarms: journal and subscribers ---------------------------------------------------


def read_journal(path: Path) -> tuple[list[Alarm], int]:
    """The journal's alarms and the number of unreadable lines (a torn last line after a crash)."""
    out: list[Alarm] = []
    bad = 0
    if not path.exists():
        return out, 0
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            out.append(Alarm.from_json(line))
        except (ValueError, TypeError, KeyError):
            bad += 1
    return out, bad


def alarm_key(a: Alarm) -> tuple[str, str, str, float, float]:
    return (a.stream_id, a.event, a.state, a.onset_time, a.detected_time)


@dataclass(frozen=True, slots=True)
class Received:
    wall: float
    alarm: Alarm


class AlarmCollector:
    """Receives alarms in a background thread from MQTT or a ZeroMQ PUB socket.

    MQTT uses a persistent session (fixed client id, clean_session False, QoS 1) and
    subscribes again on every connect, so with a persistent broker nothing published while
    it was away is missed, and without one it is back as soon as it can be.
    """

    def __init__(self, url: str, client_id: str = "ecg-faults-subscriber") -> None:
        self.url = url
        self.client_id = client_id
        self.received: list[Received] = []
        self.malformed = 0
        self.ready = threading.Event()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._mqtt: Any = None

    def _add(self, payload: bytes) -> None:
        now = time.time()
        try:
            a = Alarm.from_json(payload)
        except (ValueError, TypeError, KeyError):
            self.malformed += 1
            return
        with self._lock:
            self.received.append(Received(now, a))

    def snapshot(self) -> list[Received]:
        with self._lock:
            return list(self.received)

    def start(self, timeout: float = 10.0) -> None:
        if self.url.startswith("tcp://"):
            self._thread = threading.Thread(target=self._zmq_loop, name="faults-zmq-sub", daemon=True)
            self._thread.start()
        else:
            import paho.mqtt.client as mqtt

            host, port = self.url.split("://", 1)[1].rsplit(":", 1)
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False)
            c.reconnect_delay_set(1, 2)

            def on_connect(client: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
                if not rc.is_failure:
                    client.subscribe("ecg/+/alarms", qos=1)

            c.on_connect = on_connect
            c.on_subscribe = lambda *_: self.ready.set()
            c.on_message = lambda _c, _u, msg: self._add(bytes(msg.payload))
            c.connect_async(host, int(port), keepalive=5)
            c.loop_start()
            self._mqtt = c
        if not self.ready.wait(timeout):
            raise TimeoutError(f"alarm subscriber on {self.url} not ready in {timeout:.0f} s")

    def _zmq_loop(self) -> None:
        import zmq

        ctx = zmq.Context()
        sock = ctx.socket(zmq.SUB)
        sock.setsockopt(zmq.SUBSCRIBE, b"alarm.")
        sock.setsockopt(zmq.RCVHWM, 1_000_000)
        sock.connect(self.url)
        self.ready.set()
        try:
            while not self._stop.is_set():
                if sock.poll(200):
                    self._add(sock.recv_multipart()[-1])
        finally:
            sock.close(0)
            ctx.term()

    def stop(self) -> None:
        self._stop.set()
        if self._mqtt is not None:
            self._mqtt.loop_stop()
            self._mqtt.disconnect()
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> AlarmCollector:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass(slots=True)
class Delivery:
    """The journal (what the daemon decided) against what a subscriber received."""

    expected: int
    delivered: int
    lost: list[Alarm]
    late_max_s: float | None
    duplicates: int
    unexpected: int


def account(journal: Sequence[Alarm], received: Sequence[Received]) -> Delivery:
    first: dict[tuple[str, str, str, float, float], float] = {}
    dup = 0
    for r in received:
        k = alarm_key(r.alarm)
        if k in first:
            dup += 1
        else:
            first[k] = r.wall
    want = {alarm_key(a): a for a in journal}
    lost = [a for k, a in want.items() if k not in first]
    late = [first[k] - a.published_at for k, a in want.items() if k in first]
    return Delivery(
        expected=len(want),
        delivered=len(want) - len(lost),
        lost=lost,
        late_max_s=max(late) if late else None,
        duplicates=dup,
        unexpected=sum(1 for k in first if k not in want),
    )


def wait_delivered(journal: Path, collector: AlarmCollector, timeout: float) -> Delivery:
    """Wait until everything in the journal has been received (or ``timeout``)."""
    wait_until(lambda: not account(read_journal(journal)[0], collector.snapshot()).lost, timeout, 0.25)
    return account(read_journal(journal)[0], collector.snapshot())


# -- senders (separate processes) ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Patient:
    """One synthetic bed: episodes in stream seconds from its own start, and glitches.

    ``glitches`` replace one frame at stream second ``at`` with a poisoned copy: ``seq``
    (sequence number + 1e6), ``t0`` (timestamp + 1 h), ``huge_t0`` (t0 = 1.5e308).
    """

    stream_id: str
    episodes: tuple[tuple[str, float, float], ...] = ()
    start_s: float = 0.0
    glitches: tuple[tuple[float, str], ...] = ()
    hr: float = 75.0
    seed: int = 0


@dataclass(slots=True)
class SenderStats:
    """Shared between a sender process and the harness: counts and the last outage."""

    values: Any  # mp.Array('d', 5): sent, failed, last_fail_wall, first_ok_after_fail_wall, running

    @property
    def sent(self) -> int:
        return int(self.values[0])

    @property
    def failed(self) -> int:
        return int(self.values[1])

    @property
    def first_ok_after_fail(self) -> float:
        return float(self.values[3])


class _Link:
    """A sender's connection: ZeroMQ PUSH (never blocks) or paho MQTT (reconnects itself)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._sock: Any = None
        self._ctx: Any = None
        self._mqtt: Any = None
        if url.startswith("tcp://"):
            import zmq

            self._ctx = zmq.Context()
            self._sock = self._ctx.socket(zmq.PUSH)
            self._sock.setsockopt(zmq.SNDHWM, 200_000)
            self._sock.setsockopt(zmq.LINGER, 0)
            self._sock.connect(url)
        else:
            import paho.mqtt.client as mqtt

            host, port = url.split("://", 1)[1].rsplit(":", 1)
            c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"ecg-faults-sender-{os.getpid()}")
            c.reconnect_delay_set(1, 2)
            c.max_queued_messages_set(1)
            c.connect_async(host, int(port), keepalive=5)
            c.loop_start()
            self._mqtt = c

    def connected(self) -> bool:
        return self._sock is not None or bool(self._mqtt.is_connected())

    def send(self, stream_id: str, payload: bytes, topic: str | None = None) -> bool:
        if self._sock is not None:
            import zmq

            try:
                self._sock.send(payload, zmq.NOBLOCK)
            except zmq.Again:
                return False
            return True
        if not self._mqtt.is_connected():
            return False
        info = self._mqtt.publish(topic or f"ecg/{stream_id}/samples", payload, qos=0)
        return bool(info.rc == 0)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close(linger=2000)  # let queued frames (a burst of junk ids) go out
            self._ctx.term()
        if self._mqtt is not None:
            self._mqtt.loop_stop()
            self._mqtt.disconnect()


#: The v1 frame header (README, 'Wire format'), packed here without any checks so that the
#: harness can send what a well-behaved encoder refuses to make.
_HEADER = struct.Struct("<2sBBBBHQdffI")


def raw_frame(stream_id: bytes, seq: int, t0: float, samples: np.ndarray, fs: float = FS, gain: float = 200.0) -> bytes:
    """A v1 int16 frame with any id, sequence number and timestamp (poison included)."""
    arr = np.asarray(samples, dtype="<i2")
    head = _HEADER.pack(b"EC", 1, 1, arr.shape[0], len(stream_id), 0, seq, t0, fs, gain, arr.shape[1])
    return head + stream_id + arr.tobytes()


def _render(p: Patient) -> Any:
    from simulators.synthetic import Episode, PatientSpec, SyntheticPatient

    spec = PatientSpec(base_hr=p.hr, episodes=[Episode(e, s, t) for e, s, t in p.episodes], amp1=1.0, amp2=0.8)
    return SyntheticPatient(spec, FS, np.random.default_rng(p.seed))


def _feed(url: str, patients: Sequence[Patient], seconds: float, t0: float, stats: Any, stop: Any) -> None:
    """Sender process: stream ``patients`` in real time (drift-free) until ``seconds`` or ``stop``."""

    link = _Link(url)
    wait_until(link.connected, 10.0)
    beds = [(p, _render(p), round(p.start_s / FRAME_S)) for p in patients]
    glitch_frames = {(p.stream_id, round(at / FRAME_S)): kind for p in patients for at, kind in p.glitches}
    start = time.monotonic()
    stats[4] = 1.0
    k = 0
    while k * FRAME_S < seconds and not stop.is_set():
        delay = start + k * FRAME_S - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        for p, gen, k0 in beds:
            j = k - k0
            if j < 0:
                continue
            seq, ts = j, t0 + p.start_s + j * FRAME_S
            block = gen.chunk(FRAME_N)
            kind = glitch_frames.get((p.stream_id, j))
            seq += 1_000_000 if kind == "seq" else 0
            ts = 1.5e308 if kind == "huge_t0" else ts + (3600.0 if kind == "t0" else 0.0)
            # Packed by hand, not by protocol.wire.encode: poison must get through the sender.
            payload = raw_frame(p.stream_id.encode(), seq, ts, np.clip(np.round(block * 200.0), -32768, 32767))
            if link.send(p.stream_id, payload):
                stats[0] += 1
                if stats[2] > stats[3]:
                    stats[3] = time.time()
            else:
                stats[1] += 1
                stats[2] = time.time()
        k += 1
    stats[4] = 0.0
    link.close()


def _bulk_feed(url: str, n_streams: int, seconds: float, t0: float, stats: Any, stop: Any) -> None:
    """Sender process for overload: ``n_streams`` normal 250 Hz streams cut from 8 templates."""
    from protocol.wire import DType, encode

    link = _Link(url)
    rng = np.random.default_rng(0)
    templates = []
    for i in range(8):
        gen = _render(Patient(f"t{i}", hr=float(rng.uniform(60, 90)), seed=i))
        templates.append(np.round(gen.chunk(int(30 * FS)) * 200).astype(np.int16))
    ids = [f"load{i:04d}" for i in range(n_streams)]
    span = templates[0].shape[1] - FRAME_N
    start = time.monotonic()
    stats[4] = 1.0
    k = 0
    while k * FRAME_S < seconds and not stop.is_set():
        delay = start + k * FRAME_S - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        a = (k * FRAME_N) % span
        for i, sid in enumerate(ids):
            block = templates[i % 8][:, a : a + FRAME_N]
            if link.send(sid, encode(sid, k, t0 + k * FRAME_S, FS, block, DType.INT16, 200.0)):
                stats[0] += 1
            else:
                stats[1] += 1
        k += 1
    stats[4] = 0.0
    link.close()


class Sender:
    """A sender process (spawned, so it shares nothing with the harness but two counters)."""

    def __init__(self, target: Callable[..., None], *args: Any) -> None:
        ctx = mp.get_context("spawn")
        self._values = ctx.Array("d", 5)
        self._stop = ctx.Event()
        self.stats = SenderStats(self._values)
        self._proc = ctx.Process(target=target, args=(*args, self._values, self._stop), daemon=True)
        self._stopped = False

    def start(self, timeout: float = 30.0) -> Sender:
        self._proc.start()
        if not wait_until(lambda: self._values[4] > 0 or not self._proc.is_alive(), timeout):
            raise TimeoutError("sender process did not start")
        return self

    @property
    def running(self) -> bool:
        return self._proc.is_alive() and self._values[4] > 0

    def stop(self, timeout: float = 10.0) -> None:
        """Stop it; raise if it had died of an error (a broken harness must not pass quietly)."""
        if self._stopped:
            return
        self._stopped = True
        self._stop.set()
        self._proc.join(timeout)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
        elif self._proc.exitcode != 0:
            raise RuntimeError(f"sender process failed (exit code {self._proc.exitcode}); see its traceback above")


def feeder(url: str, patients: Sequence[Patient], seconds: float, t0: float | None = None) -> Sender:
    return Sender(_feed, url, tuple(patients), seconds, time.time() if t0 is None else t0)


# -- results ---------------------------------------------------------------------------


@dataclass
class FaultResult:
    name: str
    fault: str
    expected: int
    delivered: int
    late_max_s: float | None
    lost: int
    passed: bool
    notes: str
    seconds: float = 0.0
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(
        cls, name: str, fault: str, dl: Delivery, passed: bool, notes: str, t_start: float, details: dict[str, Any]
    ) -> FaultResult:
        """A scenario's row from its delivery count; ``t_start`` is its monotonic start time."""
        return cls(
            name, fault, dl.expected, dl.delivered, dl.late_max_s, len(dl.lost), passed, notes,
            time.monotonic() - t_start, details,
        )  # fmt: skip


def _lost_brief(lost: Sequence[Alarm], n: int = 5) -> list[str]:
    return [f"{a.stream_id} {a.event} {a.state} @{a.published_at:.1f}" for a in lost[:n]]


def _onsets(alarms: Sequence[Alarm], stream: str, event: str) -> list[Alarm]:
    return [a for a in alarms if a.stream_id == stream and a.event == event and a.state == "onset"]


@dataclass(frozen=True, slots=True)
class Timing:
    """Scenario lengths: the full run, or ``quick`` for tests (every scenario shortened)."""

    quick: bool

    def s(self, full: float, quick: float) -> float:
        return quick if self.quick else full


@contextmanager
def _workdir(base: Path | None, name: str) -> Iterator[Path]:
    if base is not None:
        d = base / name
        d.mkdir(parents=True, exist_ok=True)
        yield d
    else:
        with tempfile.TemporaryDirectory(prefix=f"ecg-faults-{name}-") as t:
            yield Path(t)


# -- 1. alarm broker killed and restarted ------------------------------------------------


def alarm_broker_restart(workdir: Path | None = None, quick: bool = False) -> FaultResult:
    """Daemon publishes alarms to MQTT; the broker is SIGKILLed mid-run, restarted on its port."""
    T = Timing(quick)
    t_start = time.monotonic()
    down_s = T.s(10.0, 8.0)
    kill_at = 20.0
    end_at = kill_at + down_s + T.s(25.0, 15.0)
    with _workdir(workdir, "alarm-broker") as wd, ExitStack() as st:
        broker = Mosquitto(wd / "broker", persistence=True)
        broker.start()
        st.callback(broker.stop)
        zin = f"tcp://127.0.0.1:{free_port()}"
        journal = wd / "journal.jsonl"
        d = Daemon(wd, [zin], [broker.url], journal)
        d.start()
        st.callback(d.kill)
        coll = AlarmCollector(broker.url)
        coll.start()
        st.callback(coll.stop)
        beds = [
            Patient("vt-1", (("VTACH", 12, 24), ("VTACH", 34, 60)), seed=1),
            Patient("pause-1", tuple(("PAUSE", float(t), t + 4.0) for t in range(12, 90, 9)), seed=2),
        ]
        f0 = time.monotonic()
        snd = feeder(zin, beds, end_at + 5).start()
        st.callback(snd.stop)
        if not wait_until(broker.saved, kill_at):
            raise RuntimeError(
                "the broker never saved its persistent store: the subscriber's session would not survive"
            )
        time.sleep(max(0.0, f0 + kill_at - time.monotonic()))
        broker.kill()
        killed_wall = time.time()
        time.sleep(down_s)
        broker.start()
        back_wall = time.time()
        time.sleep(max(0.0, f0 + end_at - time.monotonic()))
        # Give delivery its chance before stopping: what is still queued now is late, not lost.
        dl = wait_delivered(journal, coll, T.s(40.0, 25.0))
        rc, exit_s = d.terminate()
        snd.stop()
        dl = wait_delivered(journal, coll, 5.0)
        alarms, torn = read_journal(journal)
        during = [a for a in alarms if killed_wall <= a.published_at <= back_wall]
        late_during = [
            r.wall - r.alarm.published_at for r in coll.snapshot() if killed_wall <= r.alarm.published_at <= back_wall
        ]
        reconnected = [r.wall - back_wall for r in coll.snapshot() if killed_wall <= r.alarm.published_at <= back_wall]
        details: dict[str, Any] = {
            "down_s": down_s,
            "decided_while_down": len(during),
            "max_late_of_those_s": max(late_during) if late_during else None,
            "first_backlog_receipt_after_restart_s": min(reconnected) if reconnected else None,
            "duplicates": dl.duplicates,
            "torn_journal_lines": torn,
            "exit_code": rc,
            "exit_s": round(exit_s, 2),
            "lost_alarms": _lost_brief(dl.lost),
        }
        ok = dl.expected > 0 and not dl.lost and len(during) > 0
        notes = (
            f"broker down {down_s:.0f} s; {len(during)} alarms decided while down; "
            f"backlog first received {_fmt(details['first_backlog_receipt_after_restart_s'])} s after restart"
        )
        return FaultResult.of(
            "alarm_broker", "alarm MQTT broker SIGKILLed, restarted on its port", dl, ok, notes, t_start, details
        )


# -- 2. ingest broker killed and restarted -----------------------------------------------


def ingest_broker_restart(workdir: Path | None = None, quick: bool = False) -> FaultResult:
    """Daemon ingests from MQTT; the broker is SIGKILLed, restarted; how soon is data back?"""
    T = Timing(quick)
    t_start = time.monotonic()
    kill_at, down_s = 12.0, T.s(10.0, 8.0)
    vt_at = kill_at + down_s + 10.0
    end_at = vt_at + T.s(30.0, 14.0)
    with _workdir(workdir, "ingest-broker") as wd, ExitStack() as st:
        broker = Mosquitto(wd / "broker")
        broker.start()
        st.callback(broker.stop)
        zout = f"tcp://127.0.0.1:{free_port()}"
        journal = wd / "journal.jsonl"
        d = Daemon(wd, [broker.url], [zout], journal)
        d.start()
        st.callback(d.kill)
        coll = AlarmCollector(zout)
        coll.start()
        st.callback(coll.stop)
        beds = [Patient("vt-2", (("VTACH", vt_at, end_at + 10),), seed=3), Patient("normal-2", seed=4)]
        f0 = time.monotonic()
        snd = feeder(broker.url, beds, end_at + 5).start()
        st.callback(snd.stop)
        frames = lambda: metric(d.metrics(), "ecg_frames_ingested_total")  # noqa: E731
        got_data = wait_until(lambda: frames() > 0, kill_at)
        time.sleep(max(0.0, f0 + kill_at - time.monotonic()))
        broker.kill()
        time.sleep(0.5)
        before = frames()
        time.sleep(max(0.0, down_s - 0.5))
        broker.start()
        back = time.time()
        resumed = wait_until(lambda: frames() > before, T.s(60.0, 30.0), 0.1)
        ingest_back_s = time.time() - back if resumed else None
        sender_back = snd.stats.first_ok_after_fail
        sender_back_s = sender_back - back if sender_back >= back else None
        m = d.metrics()
        connected = {k: v for k, v in (m or {}).items() if k.startswith("ecg_transport_connected")}
        time.sleep(max(0.0, f0 + end_at - time.monotonic()))
        dl = wait_delivered(journal, coll, 10.0)
        rc, _exit_s = d.terminate()
        snd.stop()
        alarms, torn = read_journal(journal)
        dl = account(alarms, coll.snapshot())
        vt = [r for r in coll.snapshot() if r.alarm.stream_id == "vt-2" and r.alarm.event == "VTACH"]
        vt_onset_delay = min(r.alarm.detected_time for r in vt) - (min(r.alarm.onset_time for r in vt)) if vt else None
        details: dict[str, Any] = {
            "down_s": down_s,
            "data_before_kill": got_data,
            "ingest_back_after_restart_s": ingest_back_s,
            "sender_back_after_restart_s": sender_back_s,
            "vt_alarm_received": bool(vt),
            "vt_detect_delay_s": vt_onset_delay,
            "transport_connected": connected,
            "torn_journal_lines": torn,
            "exit_code": rc,
            "lost_alarms": _lost_brief(dl.lost),
        }
        ok = not dl.lost and bool(vt) and ingest_back_s is not None
        notes = (
            f"broker down {down_s:.0f} s; daemon ingesting again {_fmt(ingest_back_s)} s after restart "
            f"(sender {_fmt(sender_back_s)} s); VT alarm after restart: {'yes' if vt else 'NO'}"
        )
        return FaultResult.of(
            "ingest_broker", "ingest MQTT broker SIGKILLed, restarted on its port", dl, ok, notes, t_start, details
        )


# -- 3. daemon SIGKILLed and restarted ------------------------------------------------


def daemon_restart(workdir: Path | None = None, quick: bool = False) -> FaultResult:
    """SIGKILL the daemon while alarms are active; restart it on the same journal and ports."""
    T = Timing(quick)
    t_start = time.monotonic()
    kill_at, down_s = 24.0, 3.0
    end_at = T.s(80.0, 60.0)
    with _workdir(workdir, "daemon-kill") as wd, ExitStack() as st:
        broker = Mosquitto(wd / "broker", persistence=True)
        broker.start()
        st.callback(broker.stop)
        zin = f"tcp://127.0.0.1:{free_port()}"
        journal = wd / "journal.jsonl"
        d = Daemon(wd, [zin], [broker.url], journal)
        d.start()
        st.callback(d.kill)
        coll = AlarmCollector(broker.url)
        coll.start()
        st.callback(coll.stop)
        beds = [
            Patient("vt-3", (("VTACH", 12, 30),), seed=5),
            Patient("af-3", (("AF", 11, 26),), seed=6),
            Patient("pause-3", (("PAUSE", kill_at - 5.5, kill_at + 0.5),), seed=7),
        ]
        f0 = time.monotonic()
        snd = feeder(zin, beds, end_at + 5).start()
        st.callback(snd.stop)
        time.sleep(max(0.0, f0 + kill_at - time.monotonic()))
        d.kill()
        killed = time.time()
        before, torn_at_kill = read_journal(journal)
        time.sleep(down_s)
        d.start()
        restarted_s = time.time() - killed
        time.sleep(max(0.0, f0 + end_at - time.monotonic()))
        wait_delivered(journal, coll, 10.0)
        rc, _exit_s = d.terminate()
        snd.stop()
        alarms, torn = read_journal(journal)
        dl = account(alarms, coll.snapshot())
        after = alarms[len(before) :]
        # Alarms active when the daemon died: an onset (for this episode) with no resolve yet.
        active: dict[tuple[str, str], Alarm] = {}
        for a in before:
            if a.state == "onset":
                active[(a.stream_id, a.event)] = a
            elif a.state == "resolved":
                active.pop((a.stream_id, a.event), None)
        restored, duplicates, never_resolved = [], [], []
        for (sid, ev), a in active.items():
            mine = [b for b in after if b.stream_id == sid and b.event == ev]
            # Only what follows until this episode ends: a genuinely new episode later is fine.
            first_resolve = next((i for i, b in enumerate(mine) if b.state == "resolved"), len(mine))
            episode = mine[: first_resolve + 1]
            if any(b.state == "onset" for b in episode):
                duplicates.append(f"{sid} {ev}")
            if any(b.onset_time == a.onset_time for b in episode):
                restored.append(f"{sid} {ev}")
            if first_resolve == len(mine):
                never_resolved.append(f"{sid} {ev}")
        details: dict[str, Any] = {
            "killed_after_s": kill_at,
            "restarted_after_s": round(restarted_s, 1),
            "active_at_kill": [f"{s} {e}" for s, e in active],
            "restored_with_original_onset": restored,
            "duplicate_onsets": duplicates,
            "never_resolved": never_resolved,
            "torn_journal_lines": torn,
            "torn_at_kill": torn_at_kill,
            "exit_code": rc,
            "lost_alarms": _lost_brief(dl.lost),
        }
        ok = not dl.lost and bool(active) and not duplicates and not never_resolved
        notes = (
            f"{len(active)} active at SIGKILL ({', '.join(details['active_at_kill']) or '-'}); "
            f"restored {len(restored)}, duplicate onsets {len(duplicates)}, never resolved {len(never_resolved)}"
        )
        return FaultResult.of(
            "daemon_kill", "daemon SIGKILLed mid-alarm, restarted after 3 s", dl, ok, notes, t_start, details
        )


# -- 4. overload ramp --------------------------------------------------------------------


def overload(workdir: Path | None = None, quick: bool = False, streams: int | None = None) -> FaultResult:
    """``streams`` 250 Hz streams from another process, plus one VT bed; then the load stops."""
    T = Timing(quick)
    t_start = time.monotonic()
    n = streams or int(T.s(1500, 1500))
    load_s = T.s(60.0, 30.0)
    with _workdir(workdir, "overload") as wd, ExitStack() as st:
        zin, zout = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
        journal = wd / "journal.jsonl"
        d = Daemon(wd, [zin], [zout], journal)
        d.start()
        st.callback(d.kill)
        coll = AlarmCollector(zout)
        coll.start()
        st.callback(coll.stop)
        vt = Patient("vt-4", (("VTACH", 12, 600),), seed=8)
        good = feeder(zin, [vt], load_s + 120).start()
        st.callback(good.stop)
        time.sleep(2.0)
        bulk = Sender(_bulk_feed, zin, n, load_s, time.time()).start(60)
        st.callback(bulk.stop)
        scrape_s: list[float] = []
        no_answer = 0
        peak: dict[str, float] = {}
        while bulk.running:
            t = time.monotonic()
            m = d.metrics(timeout=5.0)
            scrape_s.append(time.monotonic() - t)
            if m is None:
                no_answer += 1
            else:
                for name in ("ecg_event_loop_lag_seconds", "ecg_worker_heartbeat_age_seconds"):
                    if has_metric(m, name):
                        peak[name] = max(peak.get(name, 0.0), metric(m, name))
                for name in ("ecg_active_streams", "ecg_pending_streams"):
                    peak[name] = max(peak.get(name, 0.0), metric(m, name))
                peak["ecg_windows_skipped_total"] = metric(m, "ecg_windows_skipped_total")
                peak["ecg_windows_shed_total"] = metric(m, "ecg_windows_shed_total")
            time.sleep(max(0.0, 1.0 - (time.monotonic() - t)))
        stopped = time.monotonic()
        vt_during = [r for r in coll.snapshot() if r.alarm.stream_id == "vt-4" and r.alarm.event == "VTACH"]
        m0 = d.metrics(5.0)
        ingested_during = metric(m0, "ecg_frames_ingested_total")
        state = {"idle": False, "batches": 0.0, "cpu": d.cpu_seconds(), "at": time.monotonic()}

        def recovered() -> bool:
            """Backlog worked off (the daemon's own CPU use back under half a core: no internal
            counter needed), then a fresh inference batch, and the event loop on time where
            the daemon exports its lag."""
            m = d.metrics(5.0)
            cpu, now = d.cpu_seconds(), time.monotonic()
            rate = (cpu - state["cpu"]) / max(1e-3, now - state["at"])
            state["cpu"], state["at"] = cpu, now
            if m is None:
                return False
            if not state["idle"]:
                if rate >= 0.5:
                    return False
                state["idle"], state["batches"] = True, metric(m, "ecg_inference_batch_size_count")
                return False
            if metric(m, "ecg_inference_batch_size_count") <= state["batches"]:
                return False
            return not has_metric(m, "ecg_event_loop_lag_seconds") or metric(m, "ecg_event_loop_lag_seconds") < 0.5

        rec = wait_until(recovered, T.s(90.0, 45.0), 1.0)
        recovery_s = time.monotonic() - stopped if rec else None
        wait_until(lambda: any(r.alarm.stream_id == "vt-4" and r.alarm.event == "VTACH" for r in coll.snapshot()), 20.0)
        m_end = d.metrics(5.0) or {}
        rc, exit_s = d.terminate(15.0)
        good.stop()
        time.sleep(1.0)
        alarms, torn = read_journal(journal)
        dl = account(alarms, coll.snapshot())
        vt_all = [r for r in coll.snapshot() if r.alarm.stream_id == "vt-4" and r.alarm.event == "VTACH"]
        sent = bulk.stats.sent
        export = {
            k: v
            for k, v in m_end.items()
            if k.startswith(
                ("ecg_frames", "ecg_windows", "ecg_inference_batch", "ecg_stream", "ecg_pending", "ecg_active")
            )
            and "_created" not in k
            and "_bucket" not in k
        }
        details: dict[str, Any] = {
            "streams": n,
            "load_s": load_s,
            "bulk_frames_sent": sent,
            "bulk_frames_refused_by_socket": bulk.stats.failed,
            "metrics_max_s": max(scrape_s) if scrape_s else None,
            "metrics_no_answer": no_answer,
            "peaks": peak,
            "vt_alarm_during_load": bool(vt_during),
            "vt_alarm_at_all": bool(vt_all),
            "frames_ingested_by_load_end": int(ingested_during),
            "bulk_frames_per_s_sent": round(bulk.stats.sent / load_s),
            "recovery_s": recovery_s,
            "sigterm_exit_code": rc,
            "sigterm_exit_s": round(exit_s, 2),
            "metrics_at_end": export,
            "torn_journal_lines": torn,
            "lost_alarms": _lost_brief(dl.lost),
        }
        # The load must really be monitored (admitted as beds) for the overload to be one.
        admitted = peak.get("ecg_active_streams", 0.0)
        details["load_beds_admitted_peak"] = admitted
        ok = (
            not dl.lost
            and admitted >= 0.9 * n
            and bool(vt_all)
            and no_answer == 0
            and max(scrape_s, default=0.0) <= 2.0
            and rc == 0
            and exit_s <= 15.0
            and recovery_s is not None
        )
        notes = (
            f"{n} streams for {load_s:.0f} s, at most {admitted:.0f} monitored at once; /metrics max {_fmt(details['metrics_max_s'])} s "
            f"({no_answer} no answer); VT alarm {'during load' if vt_during else ('after load' if vt_all else 'NEVER')}; "
            f"{ingested_during:.0f} of {bulk.stats.sent} frames taken in by then; idle with inference back "
            f"{_fmt(recovery_s)} s after the load stopped; "
            f"SIGTERM exit {rc} in {exit_s:.1f} s"
        )
        return FaultResult.of(
            "overload", f"overload: {n} streams at 250 Hz + 1 VT bed", dl, ok, notes, t_start, details
        )


# -- 5. poison frames and ids -------------------------------------------------------------


def _poison_frames(t0: float) -> list[tuple[str, bytes, str]]:
    """(label, payload, stream id used for the MQTT topic) of frames no daemon may accept whole."""
    ok = raw_frame(b"junk-x", 0, t0, np.zeros((2, FRAME_N)))
    big_n = 2_500  # 10 s at 250 Hz, two float32 leads: a legal length, with far too much body
    head = _HEADER.pack(b"EC", 1, 2, 2, 6, 0, 0, t0, FS, 0.0, big_n)
    out = [
        ("truncated header", ok[:20], "junk-x"),
        ("truncated payload", ok[:-7], "junk-x"),
        ("oversized, 4 MB", ok + bytes(4_000_000), "junk-x"),
        ("huge n, 3 MB body", head + b"junk-x" + bytes(3_000_000), "junk-x"),
        ("garbage", os.urandom(512), "junk-x"),
        ("length field lies", ok[:32] + struct.pack("<I", 4_000_000_000) + ok[36:], "junk-x"),
    ]
    return out


def poison(workdir: Path | None = None, quick: bool = False) -> FaultResult:
    """Poison frames and stream ids over ZeroMQ and MQTT while good patients stream."""
    T = Timing(quick)
    t_start = time.monotonic()
    poison_at, glitch_at = 6.0, 8.0
    late_join = 10.0
    end_at = T.s(60.0, 40.0)
    junk_ids = 2500
    with _workdir(workdir, "poison") as wd, ExitStack() as st:
        broker = Mosquitto(wd / "broker", persistence=True)
        broker.start()
        st.callback(broker.stop)
        zin = f"tcp://127.0.0.1:{free_port()}"
        journal = wd / "journal.jsonl"
        d = Daemon(wd, [zin, broker.url], [broker.url], journal)
        d.start()
        st.callback(d.kill)
        coll = AlarmCollector(broker.url)
        coll.start()
        st.callback(coll.stop)
        t0 = time.time()
        vt = (("VTACH", 13.0, 600.0),)
        zbeds = [
            Patient("good-z", vt, seed=9),
            Patient("pause-z", tuple(("PAUSE", float(t), t + 4.0) for t in range(14, 120, 10)), seed=10),
            Patient("glitch-seq", (("VTACH", glitch_at + 1, 600.0),), glitches=((glitch_at, "seq"),), seed=11),
            Patient("glitch-t0", (("VTACH", glitch_at + 1, 600.0),), glitches=((glitch_at, "t0"),), seed=12),
            Patient("huge-z", glitches=((glitch_at, "huge_t0"),), seed=13),
            Patient("late-z", vt, start_s=late_join, seed=14),
            Patient("dot.bed", seed=15),
        ]
        mbeds = [Patient("good-m", vt, seed=16), Patient("huge-m", glitches=((glitch_at, "huge_t0"),), seed=17)]
        f0, f0_wall = time.monotonic(), time.time()
        zs = Sender(_feed, zin, tuple(zbeds), end_at + 5, t0).start()
        st.callback(zs.stop)
        ms = Sender(_feed, broker.url, tuple(mbeds), end_at + 5, t0).start()
        st.callback(ms.stop)
        time.sleep(max(0.0, f0 + poison_at - time.monotonic()))
        zl, ml = _Link(zin), _Link(broker.url)
        wait_until(ml.connected, 10.0)
        from protocol.wire import encode

        sent_bad = 0
        for _label, payload, sid in _poison_frames(t0):
            for link in (zl, ml):
                sent_bad += link.send(sid, payload)
        # A stream id with a trailing newline, and 2,500 junk ids (one frame each).
        zero = np.zeros((2, FRAME_N), dtype=np.int16)
        nl = raw_frame(b"bad-n\n", 0, t0, zero)
        zl.send("bad-nl", nl)
        ml.send("bad-n\n", nl)
        for i in range(junk_ids):
            zl.send(f"junk{i}", encode(f"junk{i}", 0, time.time(), FS, zero))
        poisoned = time.monotonic()
        zl.close()
        ml.close()
        time.sleep(max(0.0, f0 + end_at - time.monotonic()))
        up_after = d.alive
        m = d.metrics(5.0) or {}
        wait_delivered(journal, coll, 10.0)
        rc, _exit_s = d.terminate()
        zs.stop()
        ms.stop()
        alarms, torn = read_journal(journal)
        dl = account(alarms, coll.snapshot())
        got = coll.snapshot()

        onset_wall = {
            sid: min(
                (r.wall for r in got if r.alarm.stream_id == sid and r.alarm.event == ev and r.alarm.state == "onset"),
                default=None,
            )
            for sid, ev in (
                ("good-z", "VTACH"),
                ("good-m", "VTACH"),
                ("late-z", "VTACH"),
                ("pause-z", "PAUSE"),
                ("glitch-seq", "VTACH"),
                ("glitch-t0", "VTACH"),
            )
        }
        onsets = {sid: None if w is None else round(w - f0_wall, 1) for sid, w in onset_wall.items()}
        rejected = {k: v for k, v in m.items() if k.startswith("ecg_frames_rejected_total")}
        good = ("good-z", "good-m", "late-z", "pause-z")
        missing = [s for s in good if onsets[s] is None]
        # A glitched bed is 'monitored again' when its VT (starting 1 s after the glitch) alarms
        # within 25 s of the glitch: a 10 s window must refill after the gap, then 2 windows.
        blind = [s for s in ("glitch-seq", "glitch-t0") if (onsets[s] or math.inf) > glitch_at + 25.0]
        details: dict[str, Any] = {
            "daemon_up_after": up_after,
            "exit_code": rc,
            "bad_frames_sent": sent_bad,
            "junk_ids": junk_ids,
            "onset_s_since_start": onsets,
            "poison_sent_at_s": round(poisoned - f0, 1),
            "glitch_at_s": glitch_at,
            "rejected": rejected,
            "rejected_total": metric(m, "ecg_frames_rejected_total"),
            "active_streams_at_end": metric(m, "ecg_active_streams"),
            "good_beds_without_alarm": missing,
            "glitched_beds_blind": blind,
            "subscriber_duplicates": dl.duplicates,
            "torn_journal_lines": torn,
            "lost_alarms": _lost_brief(dl.lost),
            "daemon_disconnect_log_lines": d.log_count("lost"),
        }
        ok = (
            up_after
            and not dl.lost
            and not missing
            and not blind
            and details["rejected_total"] >= sent_bad // 2
            and details["rejected_total"] > 0
        )
        notes = (
            f"daemon up: {'yes' if up_after else 'NO'}; good beds alarmed {len(good) - len(missing)}/{len(good)}"
            f"{' (missing ' + ', '.join(missing) + ')' if missing else ''}; glitched beds back: "
            f"{2 - len(blind)}/2 (VT onset at {onsets['glitch-seq']}, {onsets['glitch-t0']} s; glitch at {glitch_at:.0f} s); "
            f"{metric(m, 'ecg_frames_rejected_total'):.0f} rejects counted"
        )
        return FaultResult.of("poison", "poison frames/ids on ZeroMQ + MQTT", dl, bool(ok), notes, t_start, details)


# -- the suite and its report ------------------------------------------------------------

SCENARIOS: dict[str, Callable[..., FaultResult]] = {
    "alarm_broker": alarm_broker_restart,
    "ingest_broker": ingest_broker_restart,
    "daemon_kill": daemon_restart,
    "overload": overload,
    "poison": poison,
}


def _fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or "?"
    with suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = "?"
    with suppress(OSError, ValueError, IndexError):
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kb / 1024**2:.1f} GiB"
    rev = "?"
    with suppress(OSError, subprocess.SubprocessError):
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    return {"cpu": cpu, "cores": os.cpu_count(), "memory": mem, "python": platform.python_version(), "git": rev}


METHOD = """\
Every scenario runs the daemon as a child process (`python -m app.cli run --rules-only --no-console`,
journal on, `/metrics` on a free port), real mosquitto brokers on free loopback ports, and
synthetic two-lead 250 Hz patients sent in real time from separate processes (ZeroMQ PUSH,
or MQTT QoS 0 with automatic reconnect). Rules-only keeps the CPU low on 2 cores; the
transports, buffers, alarm logic and sinks are the same as with the network.

**Counting.** *Expected* is every alarm in the daemon's journal (what it decided).
*Delivered* is the ones a real subscriber received (MQTT: a persistent session, fixed client
id, clean_session false, QoS 1, subscribing again on each connect; ZeroMQ: a SUB socket).
*Lost* is in the journal and never received by the end of the run plus a drain period.
*Late* is the largest receipt wall time minus the alarm's `published_at`.

**What "delivered" means while a broker is down.** An alarm decided while the alarm broker is
dead cannot reach anyone then; it counts as delivered if the subscriber gets it once the
broker is back (late, and the lateness is reported), and as lost if it never arrives. The
alarm broker runs with persistence (autosave every second), as in production, so that the
subscriber's session, and messages queued for it, survive the restart; without that, an
alarm re-published before the subscriber reconnects would be lost by the broker, not by
the daemon.

1. **alarm_broker**: ZeroMQ ingest, MQTT alarms; a VT bed and a pause bed (4 s pauses every
   9 s); mosquitto SIGKILLed at 20 s, restarted on the same port after the down time.
2. **ingest_broker**: MQTT ingest, ZeroMQ alarms; mosquitto SIGKILLed at 12 s, restarted;
   recovery = time from the restart until `ecg_frames_ingested_total` grows again (the
   sender's own reconnect time is reported beside it); the VT bed's episode starts 10 s after
   the restart and its alarm must arrive.
3. **daemon_kill**: VT, AF and pause beds; the daemon is SIGKILLed at 24 s while their alarms
   are active and restarted 3 s later on the same journal and ports, senders running. An
   active alarm must continue with its original `onset_time` (no second onset for the same
   episode) and resolve once the episode ends.
4. **overload**: N normal streams (templates, one sender process) plus one VT bed; `/metrics`
   scraped every second with a 5 s timeout (must answer within 2 s); after the load stops,
   recovery = time until `ecg_inference_batch_size_count` grows again (and
   `ecg_event_loop_lag_seconds` < 0.5 s where exported); then SIGTERM must exit 0 within 15 s.
5. **poison**: good beds on ZeroMQ and MQTT, a bed joining after the junk; truncated,
   oversized (3-4 MB) and garbage frames on both transports; t0 = 1.5e308 on one bed per
   transport; one frame with seq + 1e6 on one bed and t0 + 1 h on another (each then has a
   VT from 1 s after the glitch, and must alarm within 25 s of the glitch); a stream id with a
   trailing newline; an id with a dot; 2,500 junk ids. The daemon must stay up, good beds
   must alarm, rejects must be counted.
"""


def write_report(results: Sequence[FaultResult], out: Path, quick: bool) -> None:
    """Write the markdown report and, beside it, the same figures as JSON."""
    out.parent.mkdir(parents=True, exist_ok=True)
    machine = _machine()
    date = time.strftime("%Y-%m-%d %H:%M %Z")
    rows = [
        "| fault | alarms expected | delivered | late (max s) | lost | result | notes | run s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        rows.append(
            f"| {r.fault} | {r.expected} | {r.delivered} | {_fmt(r.late_max_s)} | {r.lost} | "
            f"{'pass' if r.passed else '**FAIL**'} | {r.notes} | {r.seconds:.0f} |"
        )
    md = [
        "# Reliability: fault injection",
        "",
        f"Measured {date} by `ecg-monitor bench --faults{' --quick' if quick else ''}` on {machine['cpu']}, "
        f"{machine['cores']} cores, {machine['memory']} (Python {machine['python']}, git {machine['git']}).",
        f"{'Quick settings (shortened scenarios, as the tests run them).' if quick else 'Full settings.'}",
        "Lost must be 0 to pass; each scenario adds its own check (below).",
        "",
        *rows,
        "",
        "## Method",
        "",
        METHOD,
        "## Details",
        "",
    ]
    for r in results:
        md += [f"### {r.name}", "", "```json", json.dumps(r.details, indent=1, default=str), "```", ""]
    out.write_text("\n".join(md))
    payload = {"date": date, "quick": quick, "machine": machine, "results": [asdict(r) for r in results]}
    out.with_suffix(".json").write_text(json.dumps(payload, indent=1, default=str))


def run_faults(
    out: str | Path = "reports/reliability.md", quick: bool = False, only: Sequence[str] | None = None
) -> list[FaultResult]:
    """Run the scenarios (all, or ``only``), one after another; write the report; return the rows."""
    names = list(only) if only else list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        raise ValueError(f"unknown fault scenario(s): {', '.join(unknown)}; known: {', '.join(SCENARIOS)}")
    results = []
    for name in names:
        log.info("fault scenario %s ...", name)
        try:
            r = SCENARIOS[name](quick=quick)
        except Exception as exc:  # a harness failure is a row too, not a lost report
            log.exception("fault scenario %s could not run", name)
            r = FaultResult(name, name, 0, 0, None, 0, False, f"harness error: {exc}"[:300])
        log.info("%s: %s (%s)", name, "pass" if r.passed else "FAIL", r.notes)
        results.append(r)
        write_report(results, Path(out), quick)
    return results
