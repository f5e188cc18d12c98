"""Local network plumbing for tests, benchmarks and the fault bench: free loopback ports and a
real mosquitto broker that keeps its port across stop and start (one launcher for all of them).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable, Sequence
from pathlib import Path


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    """Return once something accepts TCP connections on 127.0.0.1:``port``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port}")


def wait_until(pred: Callable[[], bool], timeout: float, every: float = 0.1) -> bool:
    """Poll ``pred`` until it holds or ``timeout`` passes; return its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(every)
    return bool(pred())


def mosquitto_binary() -> str:
    exe = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if os.path.exists("/usr/sbin/mosquitto") else None)
    if exe is None:
        raise FileNotFoundError("mosquitto is not installed: run `make test`, or apt-get install mosquitto")
    return exe


class Mosquitto:
    """A mosquitto process on a free loopback port, which it keeps across stop and start.

    ``persistence`` keeps sessions and queued QoS 1 messages in ``workdir`` (saved every
    second), as a production broker would; ``extra`` adds config lines.
    """

    def __init__(
        self, workdir: Path, port: int | None = None, *, persistence: bool = False, extra: Sequence[str] = ()
    ) -> None:
        self.exe = mosquitto_binary()
        self.port = port or free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.conf = workdir / f"mosquitto-{self.port}.conf"
        lines = [f"listener {self.port} 127.0.0.1", "allow_anonymous true"]
        self.store: Path | None = None
        if persistence:
            # Started as root, mosquitto drops to its own user: its store must be reachable and
            # writable by that user, which a test's private tmp folder (0700 parents) is not.
            self.store = Path(tempfile.mkdtemp(prefix="ecg-mosquitto-"))
            self.store.chmod(0o777)
            weakref.finalize(self, shutil.rmtree, self.store, True)
            lines += ["persistence true", f"persistence_location {self.store}/", "autosave_interval 1"]
        else:
            lines.append("persistence false")
        self.conf.write_text("\n".join([*lines, *extra]) + "\n")
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def saved(self) -> bool:
        """Whether the persistent store has been written (sessions survive a crash from then)."""
        return self.store is not None and (self.store / "mosquitto.db").exists()

    def start(self, timeout: float = 10.0) -> None:
        self.proc = subprocess.Popen(
            [self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_port(self.port, timeout)

    def stop(self) -> None:
        """Terminate gracefully (SIGTERM)."""
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.proc = None

    def kill(self) -> None:
        """Crash it (SIGKILL): no goodbye to clients, nothing saved since the last autosave."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None

    def __enter__(self) -> Mosquitto:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
