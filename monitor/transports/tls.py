"""TLS and credentials for MQTT: a custom CA, a client certificate, and a password kept out of URLs.

``TlsSettings`` builds the client ``ssl.SSLContext`` for ``mqtts://``: the system CAs unless a
CA file is given, hostname checking on, the broker's certificate required, and a client
certificate when the broker asks for one (mosquitto ``require_certificate true``). Errors name
the setting and the file, never what is in it.

``MqttSecurity`` carries those settings and a password read from a file or the environment; it
applies the password to MQTT URLs that name a user but no password, and warns about a password
written in the URL itself (on a command line it shows in ``ps`` and the shell history).
"""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from protocol.urls import Endpoint

log = logging.getLogger(__name__)

#: The environment variable holding the MQTT password itself.
PASSWORD_ENV = "ECG_MONITOR_MQTT_PASSWORD"


class TlsError(OSError):
    """A TLS file (CA, certificate, key, password) that is missing, unreadable or not valid PEM.

    An ``OSError`` so the daemon reports it as a start-up failure ("cannot start: ...").
    """


def check_readable(key: str, path: str | Path) -> Path:
    """``path`` as a Path if it is a readable file; else ``TlsError`` naming ``key`` and the file."""
    p = Path(path)
    try:
        with p.open("rb"):
            pass
    except OSError as exc:
        raise TlsError(f"{key}: cannot read {p}: {exc.strerror or exc}") from None
    if not p.is_file():
        raise TlsError(f"{key}: {p} is not a file")
    return p


def _no_passphrase() -> bytes:
    raise TlsError("encrypted private keys are not supported: give an unencrypted key file (mode 0600)")


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """Where the CA, the client certificate and its key are. None = system CAs, no client cert."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    #: Names used in errors (config keys / flags).
    names: tuple[str, str, str] = ("mqtt_ca", "mqtt_cert", "mqtt_key")

    def __post_init__(self) -> None:
        if self.key is not None and self.cert is None:
            raise TlsError(f"{self.names[2]}: a key needs its certificate ({self.names[1]})")

    @property
    def is_default(self) -> bool:
        return self.ca is None and self.cert is None

    def client_context(self) -> ssl.SSLContext:
        """The context a client uses: verify the server against ``ca`` (or the system store),
        check its name, and present ``cert``/``key`` if given."""
        ca_key, cert_key, key_key = self.names
        ca = check_readable(ca_key, self.ca) if self.ca is not None else None
        try:
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca) if ca else None)
        except ssl.SSLError as exc:
            raise TlsError(f"{ca_key}: {ca} holds no usable PEM CA certificate ({exc.reason or exc})") from None
        ctx.check_hostname = True
        ctx.verify_mode = ssl.CERT_REQUIRED
        if self.cert is not None:
            cert = check_readable(cert_key, self.cert)
            key = check_readable(key_key, self.key) if self.key is not None else None
            try:
                ctx.load_cert_chain(cert, key, password=_no_passphrase)
            except ssl.SSLError as exc:
                which = f"{cert_key} {cert}" + (f" / {key_key} {key}" if key else "")
                raise TlsError(
                    f"{which}: not a PEM certificate and matching private key ({exc.reason or exc})"
                ) from None
        return ctx


def read_password(path: str | Path, key: str = "mqtt_password_file") -> str:
    """The password in ``path``: its first line, without the line end. Errors never quote it."""
    p = check_readable(key, path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise TlsError(f"{key}: cannot read {p} as UTF-8 text ({type(exc).__name__})") from None
    password = text.splitlines()[0] if text else ""
    if not password:
        raise TlsError(f"{key}: {p} is empty")
    return password


@dataclass(frozen=True, slots=True)
class MqttSecurity:
    """TLS settings and a password for every MQTT URL of one process. The password never shows in
    ``repr``; it is given to URLs that name a user but carry no password."""

    tls: TlsSettings = field(default_factory=TlsSettings)
    password: str | None = field(default=None, repr=False)

    @classmethod
    def load(
        cls,
        *,
        ca: str | Path | None = None,
        cert: str | Path | None = None,
        key: str | Path | None = None,
        password_file: str | Path | None = None,
        password: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> MqttSecurity:
        """From flags/config: the password comes from ``password_file`` if given, else ``password``,
        else ``$ECG_MONITOR_MQTT_PASSWORD`` (``env``, default ``os.environ``)."""
        tls = TlsSettings(
            Path(ca) if ca is not None else None,
            Path(cert) if cert is not None else None,
            Path(key) if key is not None else None,
        )
        if password_file is not None:
            password = read_password(password_file)
        elif password is None:
            password = (env if env is not None else os.environ).get(PASSWORD_ENV) or None
        return cls(tls, password)

    def endpoint(self, ep: Endpoint, what: str = "MQTT") -> Endpoint:
        """``ep`` with the password applied; warns (once per call: at start) about one in the URL."""
        if not ep.is_mqtt:
            return ep
        if ep.password is not None:
            log.warning(
                "%s %s: the password is written in the URL, where ps, shell history and config dumps "
                "show it; use --mqtt-password-file or $%s instead",
                what,
                ep,
                PASSWORD_ENV,
            )
            return ep
        if ep.username is not None and self.password is not None:
            return ep.with_password(self.password)
        return ep

    def context(self, ep: Endpoint, what: str = "MQTT") -> ssl.SSLContext | None:
        """The TLS context for ``ep``: built for ``mqtts://``, None for plain ``mqtt://`` (where
        TLS settings are ignored, with a warning)."""
        if ep.scheme == "mqtts":
            return self.tls.client_context()
        if ep.is_mqtt and not self.tls.is_default:
            log.warning("%s %s is plain mqtt://: the TLS settings (CA, certificate) are not used", what, ep)
        return None


def explain(exc: BaseException, *, client_cert: bool | None = None) -> str:
    """``exc``'s message, plus what to check when it is a TLS failure. ``client_cert=False`` (TLS
    without a client certificate) adds a hint to a timeout: with TLS 1.3 a broker that requires a
    certificate drops the client after the handshake, and the client only sees no CONNACK."""
    msg = str(exc)
    low = msg.lower()
    if client_cert is False and "timed out" in low:
        return f"{msg} (a broker with require_certificate drops clients without one: give --mqtt-cert/--mqtt-key)"
    if "certificate verify failed" in low or "certificate_verify_failed" in low:
        return (
            f"{msg} (TLS certificate verification failed: is the broker's certificate signed by the CA "
            "given as mqtt_ca/--mqtt-ca, and does its name match the host in the URL?)"
        )
    if "certificate required" in low or ("alert" in low and "certificate" in low):
        return f"{msg} (the broker refused the TLS client certificate: give --mqtt-cert/--mqtt-key)"
    return msg
