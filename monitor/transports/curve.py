"""ZeroMQ CURVE: certificates, the daemon's ZAP authenticator, and the clients' key setup.

Certificates are pyzmq's ``zmq.auth`` files (``NAME.key`` public, ``NAME.key_secret`` secret). A
client certificate may carry ``streams = REGEX`` in its metadata: the stream ids (fullmatched)
that key may send. The daemon trusts only the public certificates in its clients directory, so
the binding is whatever the operator put there; a certificate without ``streams`` may send any
stream. The ZAP handler names each authenticated peer by its certificate name (ZAP User-Id),
which ZeroMQ attaches to every message from that peer (``Frame.get("User-Id")``).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import re
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Self

import zmq
import zmq.asyncio
import zmq.auth
from zmq.auth.asyncio import AsyncioAuthenticator
from zmq.utils import z85
from zmq.utils.monitor import recv_monitor_message

log = logging.getLogger(__name__)

#: Certificate names: a file name and a ZAP User-Id, so no path separators or spaces.
NAME_RE: Final = re.compile(r"[A-Za-z0-9_.-]{1,64}")
#: How long a client waits for its first handshake (CURVE or plain) before giving up with an error.
HANDSHAKE_TIMEOUT_S: Final = 5.0
_KEY_LEN: Final = 40  # a z85-encoded 32-byte CURVE key
_NOTHING: Final = re.compile(r"(?!)")  # matches no stream id: fail closed

#: Called with (socket, peer address, reason) for every refused ZAP request.
OnDenied = Callable[[str, str, str], None]


class CurveError(ValueError):
    """A missing or malformed certificate, or a refused handshake."""


class HandshakeError(OSError):
    """A client could not complete its handshake (CURVE or plain) with the server in bounded time."""


@dataclass(frozen=True, slots=True)
class ClientCert:
    """One accepted client: its certificate name (the User-Id) and its allowed stream ids."""

    name: str
    public_key: bytes  # z85
    streams: re.Pattern[str] | None  # None: any stream


@dataclass(frozen=True, slots=True)
class KeyPair:
    public_key: bytes  # z85
    secret_key: bytes  # z85


# -- certificate files --------------------------------------------------------------------------


def _check_key(key: bytes | None, path: Path, what: str) -> bytes:
    if key is None or len(key) != _KEY_LEN:
        raise CurveError(f"{path}: no valid CURVE {what} key")
    try:
        z85.decode(key)
    except (ValueError, TypeError):
        raise CurveError(f"{path}: the {what} key is not z85") from None
    return key


def read_metadata(path: Path) -> dict[str, str]:
    """The ``metadata`` section of a certificate (czmq ZPL: ``    key = value``, value maybe quoted)."""
    out: dict[str, str] = {}
    section = ""
    for raw in path.read_text(encoding="utf-8").splitlines():
        if not raw.strip() or raw.lstrip().startswith("#"):
            continue
        if not raw[0].isspace():
            section = raw.strip()
            continue
        if section == "metadata" and "=" in raw:
            k, v = raw.split("=", 1)
            out[k.strip()] = v.strip().strip("\"'")
    return out


def compile_streams(pattern: str, where: str) -> re.Pattern[str]:
    """A ``streams`` pattern, compiled; it must be one line without quotes (it lives in a cert file)."""
    if not pattern or any(c in pattern for c in "\"'\n\r"):
        raise CurveError(f"{where}: streams pattern must be one non-empty line without quotes, got {pattern!r}")
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise CurveError(f"{where}: streams pattern {pattern!r} is not a regex ({exc})") from None


def load_secret(path: str | os.PathLike[str]) -> KeyPair:
    """Own key pair from a ``*.key_secret`` file; a clear error if it is missing or has no secret key."""
    p = Path(path)
    if not p.is_file():
        raise CurveError(f"{p}: no such certificate file")
    try:
        public, secret = zmq.auth.load_certificate(p)
    except (OSError, ValueError) as exc:
        raise CurveError(f"{p}: cannot read certificate ({exc})") from None
    if secret is None:
        raise CurveError(f"{p}: holds no secret key (give the NAME.key_secret file, not NAME.key)")
    return KeyPair(_check_key(public, p, "public"), _check_key(secret, p, "secret"))


def load_public(path: str | os.PathLike[str]) -> bytes:
    """The z85 public key of a certificate file (``NAME.key`` or ``NAME.key_secret``)."""
    p = Path(path)
    if not p.is_file():
        raise CurveError(f"{p}: no such certificate file")
    try:
        public, _ = zmq.auth.load_certificate(p)
    except (OSError, ValueError) as exc:
        raise CurveError(f"{p}: cannot read certificate ({exc})") from None
    return _check_key(public, p, "public")


def load_clients(directory: str | os.PathLike[str]) -> dict[bytes, ClientCert]:
    """The accepted clients (``*.key`` in ``directory``) by z85 public key; at least one is needed."""
    d = Path(directory)
    if not d.is_dir():
        raise CurveError(f"{d}: no such directory")
    clients: dict[bytes, ClientCert] = {}
    for f in sorted(d.glob("*.key")):
        if not NAME_RE.fullmatch(f.stem):
            raise CurveError(f"{f}: certificate names must match {NAME_RE.pattern}")
        key = load_public(f)
        try:
            meta = read_metadata(f)
        except (OSError, UnicodeDecodeError) as exc:
            raise CurveError(f"{f}: cannot read certificate ({exc})") from None
        pattern = compile_streams(meta["streams"], str(f)) if "streams" in meta else None
        if key in clients:
            raise CurveError(f"{f}: same public key as {clients[key].name}.key")
        clients[key] = ClientCert(f.stem, key, pattern)
    if not clients:
        raise CurveError(f"{d}: no client certificates (*.key) in it; no client could connect")
    return clients


def keygen(directory: str | os.PathLike[str], name: str, streams: str | None = None) -> tuple[Path, Path]:
    """Write ``NAME.key`` (0644) and ``NAME.key_secret`` (0600) into ``directory``; never overwrites.

    ``streams`` (a regex fullmatched against stream ids) goes into both files' metadata: the
    public file is what the daemon's operator installs, so that is where the daemon reads it.
    The files are made in a private temporary folder and moved in, so the secret is never readable
    by others, not even for a moment.
    """
    if not NAME_RE.fullmatch(name):
        raise CurveError(f"name: must match {NAME_RE.pattern}, got {name!r}")
    metadata = {"streams": compile_streams(streams, "streams").pattern} if streams is not None else None
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    public, secret = d / f"{name}.key", d / f"{name}.key_secret"
    for p in (public, secret):
        if p.exists():
            raise CurveError(f"{p}: already exists; not overwritten")
    tmp = Path(tempfile.mkdtemp(prefix=".keygen-", dir=d))  # mode 0700
    try:
        tmp_pub, tmp_sec = (Path(p) for p in zmq.auth.create_certificates(tmp, name, metadata=metadata))
        os.chmod(tmp_sec, 0o600)
        if metadata:
            key = load_public(tmp_pub).decode("ascii")
            lines = [
                f"#   ****  Generated on {datetime.datetime.now()} by ecg-monitor keygen  ****",
                "#   ZeroMQ CURVE Public Certificate",
                "",
                "metadata",
                *(f"    {k} = {v}" for k, v in metadata.items()),
                "curve",
                f'    public-key = "{key}"',
                "",
            ]
            tmp_pub.write_text("\n".join(lines), encoding="utf-8")
        os.chmod(tmp_pub, 0o644)
        os.replace(tmp_sec, secret)
        os.replace(tmp_pub, public)
    finally:
        for f in tmp.iterdir():
            f.unlink()
        tmp.rmdir()
    return public, secret


def warn_if_exposed(path: str | os.PathLike[str]) -> None:
    """Warn when a secret certificate can be read by group or others."""
    mode = Path(path).stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("secret certificate %s is readable by others (mode %o): chmod 600 it", path, mode & 0o777)


# -- the daemon side ----------------------------------------------------------------------------


class _ZapHandler(AsyncioAuthenticator):
    """pyzmq's asyncio ZAP authenticator, with the client table of ``CurveAuth``, certificate
    names as User-Ids, and every refusal reported to ``on_denied``."""

    def __init__(self, ctx: zmq.asyncio.Context, clients: dict[bytes, ClientCert], on_denied: OnDenied) -> None:
        super().__init__(ctx, log=logging.getLogger(__name__ + ".zap"))
        self.clients = clients
        self.on_denied = on_denied
        self._domain = ""
        self._address = ""

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        # Remember which socket and peer this request is for: _send_zap_reply does not get them.
        self._domain = msg[2].decode("utf-8", "replace") if len(msg) > 2 else "?"
        self._address = msg[3].decode("utf-8", "replace") if len(msg) > 3 else "?"
        await super().handle_zap_message(msg)

    async def _authenticate_curve(self, domain: str, client_key: bytes) -> tuple[bool, bytes]:
        if z85.encode(client_key) in self.clients:
            return True, b"OK"
        return False, b"Unknown key"

    def curve_user_id(self, client_public_key: bytes) -> str:
        return self.clients[z85.encode(client_public_key)].name

    def _send_zap_reply(
        self, request_id: bytes, status_code: bytes, status_text: bytes, user_id: str = "anonymous"
    ) -> None:
        super()._send_zap_reply(request_id, status_code, status_text, user_id)
        if status_code != b"200":
            try:
                self.on_denied(self._domain, self._address, status_text.decode("utf-8", "replace"))
            except Exception:
                log.exception("the ZAP refusal callback failed")


class CurveAuth:
    """The daemon's ZAP authenticator on its context, as an async context manager.

    Enter it before any CURVE socket binds and leave it after they close: while no ZAP handler
    is bound, libzmq would let any client key through.
    """

    def __init__(
        self,
        ctx: zmq.asyncio.Context,
        keys: KeyPair,
        clients: dict[bytes, ClientCert],
        on_denied: OnDenied | None = None,
    ) -> None:
        self.keys = keys
        self.clients = clients
        self._handler = _ZapHandler(ctx, clients, on_denied or (lambda sock, addr, why: None))
        self._by_name = {c.name: c.streams for c in clients.values()}

    @classmethod
    def from_files(
        cls, ctx: zmq.asyncio.Context, secret: str, clients_dir: str, on_denied: OnDenied | None = None
    ) -> CurveAuth:
        return cls(ctx, load_secret(secret), load_clients(clients_dir), on_denied)

    def server(self, sock: zmq.Socket[Any], domain: str) -> None:
        """Make ``sock`` a CURVE server (before it binds); ``domain`` names it in ZAP and metrics."""
        sock.curve_secretkey = self.keys.secret_key
        sock.curve_publickey = self.keys.public_key
        sock.curve_server = True
        sock.zap_domain = domain.encode()

    def allowed(self, user_id: str) -> re.Pattern[str] | None:
        """The stream pattern of an authenticated peer (None: any stream; unknown: nothing)."""
        return self._by_name.get(user_id, _NOTHING)

    async def __aenter__(self) -> Self:
        self._handler.start()
        for c in self.clients.values():
            if c.streams is None:
                log.warning("CURVE client %s has no streams binding: it may send any stream id", c.name)
            else:
                log.info("CURVE client %s may send streams matching %s", c.name, c.streams.pattern)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._handler.stop()
        await asyncio.sleep(0)  # let the cancelled ZAP task finish before the context goes


# -- the client side ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ClientKeys:
    """What a client needs: the server's public key and its own pair."""

    server_key: bytes
    own: KeyPair

    @classmethod
    def load(cls, server: str | os.PathLike[str], secret: str | os.PathLike[str]) -> ClientKeys:
        return cls(load_public(server), load_secret(secret))

    @classmethod
    def optional(cls, server: str | None, secret: str | None) -> ClientKeys | None:
        """Both files or neither; one without the other is an error."""
        if server is None and secret is None:
            return None
        if server is None or secret is None:
            raise CurveError("CURVE needs both --curve-server (the daemon's .key) and --curve-secret (own .key_secret)")
        return cls.load(server, secret)

    def apply(self, sock: zmq.Socket[Any]) -> None:
        """Make ``sock`` a CURVE client (before it connects)."""
        sock.curve_serverkey = self.server_key
        sock.curve_publickey = self.own.public_key
        sock.curve_secretkey = self.own.secret_key


_FAILED: Final[dict[int, str]] = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "the server refused this client's key",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: "protocol error (wrong server key, or CURVE on one side only?)",
    # Also what a plain client sees when a CURVE server hangs up on its greeting first: libzmq then
    # reconnects and keeps queueing, so this is not final.
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "the server closed the connection mid-handshake "
    "(wrong server key, or CURVE on one side only?)",
}


class HandshakeWatch:
    """Follows a client socket's handshakes through a monitor socket, without blocking.

    ``refused_for()`` says how long the socket has been failing handshakes with no success since;
    a ZAP refusal (``HANDSHAKE_FAILED_AUTH``) is final: libzmq does not retry it.
    """

    def __init__(self, sock: zmq.asyncio.Socket, url: str, clock: Callable[[], float]) -> None:
        self.url = url
        self.clock = clock
        self._mon = sock.get_monitor_socket(
            zmq.EVENT_HANDSHAKE_SUCCEEDED
            | zmq.EVENT_HANDSHAKE_FAILED_AUTH
            | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
            | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
        )
        self._sock = sock
        self.succeeded = False
        self.final = False
        self.reason: str | None = None
        self._failing_since: float | None = None

    async def drain(self) -> None:
        """Take the events queued so far (never waits)."""
        while await self._mon.poll(0):
            ev = await recv_monitor_message(self._mon)
            kind = ev["event"]
            if kind == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                self.succeeded, self.final, self.reason, self._failing_since = True, False, None, None
            elif kind in _FAILED:
                self.reason = _FAILED[kind]
                self.final = kind == zmq.EVENT_HANDSHAKE_FAILED_AUTH
                if self._failing_since is None:
                    self._failing_since = self.clock()

    def error(self, timeout: float) -> HandshakeError | None:
        """An error to raise if the socket has been refused for ``timeout`` s (or finally)."""
        if self._failing_since is None:
            return None
        if self.final or self.clock() - self._failing_since >= timeout:
            return HandshakeError(f"ZeroMQ handshake with {self.url} failed: {self.reason}")
        return None

    async def wait_ok(self, timeout: float) -> None:
        """Wait for the first successful handshake; raise HandshakeError after ``timeout`` s."""
        deadline = self.clock() + timeout
        while True:
            await self.drain()
            if self.succeeded:
                return
            if self.final:
                break
            left = deadline - self.clock()
            if left <= 0:
                break
            await self._mon.poll(int(min(left, 0.25) * 1000) + 1)
        why = self.reason or "no answer from the server (is it running, and listening there?)"
        raise HandshakeError(f"no ZeroMQ handshake with {self.url} within {timeout:g} s: {why}")

    def close(self) -> None:
        self._sock.disable_monitor()
        self._mon.close(0)
