"""Transport URLs: ``tcp://HOST:PORT`` is ZeroMQ, ``mqtt://[user:pass@]HOST:PORT`` and ``mqtts://`` MQTT."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

SCHEMES = ("tcp", "mqtt", "mqtts")
DEFAULT_MQTT_PORT = {"mqtt": 1883, "mqtts": 8883}


@dataclass(frozen=True, slots=True)
class Endpoint:
    scheme: str
    host: str
    port: int
    username: str | None = None
    password: str | None = None

    @property
    def is_zmq(self) -> bool:
        return self.scheme == "tcp"

    @property
    def zmq_addr(self) -> str:
        return f"tcp://{self.host}:{self.port}"

    def __str__(self) -> str:
        # Never print the password.
        user = f"{self.username}@" if self.username else ""
        return f"{self.scheme}://{user}{self.host}:{self.port}"


def parse_url(url: str) -> Endpoint:
    """Parse and validate a transport URL; raise ValueError naming what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise ValueError(f"{url!r}: scheme must be one of {', '.join(s + '://' for s in SCHEMES)}")
    if not parts.hostname:
        raise ValueError(f"{url!r}: missing host")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"{url!r}: bad port") from None
    if port is None:
        if parts.scheme == "tcp":
            raise ValueError(f"{url!r}: ZeroMQ URLs need a port")
        port = DEFAULT_MQTT_PORT[parts.scheme]
    if parts.scheme == "tcp" and parts.username:
        raise ValueError(f"{url!r}: ZeroMQ URLs take no credentials")
    return Endpoint(
        parts.scheme,
        parts.hostname,
        port,
        unquote(parts.username) if parts.username else None,
        unquote(parts.password) if parts.password else None,
    )
