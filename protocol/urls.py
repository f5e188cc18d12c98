"""Transport URLs: ``tcp://HOST:PORT`` is ZeroMQ, ``mqtt://[user:pass@]HOST:PORT`` and ``mqtts://`` MQTT.

A password may sit in an MQTT URL, so nothing here ever prints one: ``Endpoint``'s ``str`` and
``repr`` leave it out, errors quote the URL through ``redact_url``, and callers that log or show
a URL they were given use ``redact_url`` too.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

SCHEMES = ("tcp", "mqtt", "mqtts")
DEFAULT_MQTT_PORT = {"mqtt": 1883, "mqtts": 8883}
#: What a password is replaced with wherever a URL is shown.
REDACTED = "***"


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``; safe on malformed input (used in errors).

    Errs towards hiding: everything between the user name and the last ``@`` is masked, and so
    is a non-numeric "port" (``mqtt://alice:secret`` without a host parses as host ``alice``).
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    prefix = f"{scheme}{sep}"
    at = rest.rfind("@")  # the last "@" anywhere: a password may hold an unescaped "/" or "@"
    head = ""
    if at >= 0:
        user, colon, _ = rest[:at].partition(":")
        head = f"{user}:{REDACTED}@" if colon else f"{user}@"
        rest = rest[at + 1 :]
    hostport, slash, path = rest.partition("/")
    colon_at = hostport.rfind(":")
    if colon_at > hostport.rfind("]") and not hostport[colon_at + 1 :].isdigit() and hostport[colon_at + 1 :]:
        hostport = f"{hostport[:colon_at]}:{REDACTED}"
    return f"{prefix}{head}{hostport}{slash}{path}"


@dataclass(frozen=True, slots=True)
class Endpoint:
    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)  # never in repr, str, logs or errors

    @property
    def is_zmq(self) -> bool:
        return self.scheme == "tcp"

    @property
    def is_mqtt(self) -> bool:
        return self.scheme in ("mqtt", "mqtts")

    @property
    def zmq_addr(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def with_password(self, password: str | None) -> Endpoint:
        """This endpoint with ``password`` (from a file or the environment, not the URL)."""
        return dataclasses.replace(self, password=password)

    def __str__(self) -> str:
        # Never print the password; show that there is one.
        if self.username:
            user = f"{self.username}:{REDACTED}@" if self.password else f"{self.username}@"
        else:
            user = ""
        return f"{self.scheme}://{user}{self.host}:{self.port}"


def parse_url(url: str) -> Endpoint:
    """Parse and validate a transport URL; raise ValueError naming what is wrong (URL redacted)."""
    shown = repr(redact_url(url))
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # e.g. an unbalanced "[" in the host
        raise ValueError(f"{shown}: {exc}") from None
    if parts.scheme not in SCHEMES:
        raise ValueError(f"{shown}: scheme must be one of {', '.join(s + '://' for s in SCHEMES)}")
    if not parts.hostname:
        raise ValueError(f"{shown}: missing host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{shown}: bad port") from None
    if port is None:
        if parts.scheme == "tcp":
            raise ValueError(f"{shown}: ZeroMQ URLs need a port")
        port = DEFAULT_MQTT_PORT[parts.scheme]
    if parts.scheme == "tcp" and (parts.username or parts.password):
        raise ValueError(f"{shown}: ZeroMQ URLs take no credentials")
    return Endpoint(
        parts.scheme,
        parts.hostname,
        port,
        unquote(parts.username) if parts.username else None,
        unquote(parts.password) if parts.password else None,
    )
