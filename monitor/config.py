"""The daemon's one typed config: built from defaults, a TOML file, the environment and flags.

Later sources win (flags over environment over file). Validation happens when the object is
built, and every error names the key at fault.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from monitor.core.detection import DetectionConfig, DetectionConfigError
from monitor.transports.curve import CurveError, load_clients, load_secret
from monitor.transports.tls import MqttSecurity, TlsError, check_readable
from protocol.topics import SAMPLES_SUBSCRIPTION
from protocol.urls import parse_url, redact_url
from protocol.wire import MAX_FRAME_BYTES

ENV_PREFIX = "ECG_MONITOR_"


class ConfigError(ValueError):
    """A bad config value; the message starts with the key."""


@dataclass(frozen=True, slots=True)
class MonitorConfig:
    ingest: tuple[str, ...] = ("tcp://127.0.0.1:5555",)
    alarms: tuple[str, ...] = ("tcp://127.0.0.1:5556",)
    journal: str | None = None
    metrics_port: int = 9108  # 0 turns the metrics server off
    metrics_host: str = "127.0.0.1"
    hop_s: float = 2.0
    calm_hop_s: float | None = None  # calm beds are classified this often; default 2 x hop_s (= hop_s: off)
    buffer_s: float = 90.0
    window_s: float = 10.0
    pause_threshold_s: float = 3.0
    no_signal_s: float = 3.0
    model_path: str | None = None
    rules_only: bool = False
    require_model: bool = False  # refuse to start when the model is missing or fails its SHA-256 check
    shard: str = "0/1"
    console: bool = True
    max_streams: int = 2000
    max_batch: int = 256
    log_level: str = "INFO"
    mqtt_topic: str = SAMPLES_SUBSCRIPTION
    # MQTT security (monitor/transports/tls.py). TLS files apply to mqtts:// URLs; the password to
    # MQTT URLs that name a user but no password. A URL's own password works too, with a warning.
    mqtt_ca: str | None = None  # CA file for mqtts:// (default: the system CAs)
    mqtt_cert: str | None = None  # client certificate (PEM), for brokers with require_certificate
    mqtt_key: str | None = None  # its private key (PEM, unencrypted; default: inside mqtt_cert)
    mqtt_password_file: str | None = None  # first line = the password; wins over mqtt_password
    mqtt_password: str | None = field(default=None, repr=False)  # meant for $ECG_MONITOR_MQTT_PASSWORD
    # Metrics endpoint TLS: HTTPS when a certificate is given; client certificates required (signed
    # by this CA) when metrics_client_ca is given.
    metrics_tls_cert: str | None = None
    metrics_tls_key: str | None = None
    metrics_client_ca: str | None = None
    # ZeroMQ CURVE (monitor/transports/curve.py): the daemon's own secret certificate and the folder
    # of client public certificates it accepts; both or neither. With them, ingest and alarms are
    # CURVE servers. Binding a non-loopback address without CURVE (or metrics without TLS) needs insecure.
    curve_secret: str | None = None
    curve_clients: str | None = None
    insecure: bool = False
    precision: str = "auto"  # network arithmetic: float32, bfloat16, or auto (the faster here)
    # Window analysis in a worker process of its own (one torch thread), so ingest and inference
    # each have a core; false runs it in a thread of the daemon process.
    inference_process: bool = True
    # Reliability: bounds and timeouts.
    max_frame_bytes: int = MAX_FRAME_BYTES  # larger ZeroMQ messages / MQTT payloads are refused
    shed_after_s: float = 4.0  # under overload, due windows the classifier cannot reach in this long are shed
    shutdown_timeout_s: float = 10.0  # how long shutdown waits for the windows in flight
    worker_stall_s: float = 120.0  # one inference batch running longer than this takes the daemon down
    journal_max_mb: int = 64  # the journal rotates at this size...
    journal_backups: int = 5  # ...keeping this many old files
    # What people see: the per-bed screen feed for central stations (``ecg-monitor station``),
    # published beside the alarms every this many seconds; 0 turns it off. Strips always go.
    telemetry_interval_s: float = 1.0

    def __post_init__(self) -> None:
        for key in ("ingest", "alarms"):
            urls = getattr(self, key)
            if isinstance(urls, str):
                object.__setattr__(self, key, (urls,))
                urls = (urls,)
            for url in urls:
                try:
                    parse_url(url)
                except ValueError as exc:
                    raise ConfigError(f"{key}: {exc}") from None
        if not self.ingest:
            raise ConfigError("ingest: at least one URL is needed")
        _check(0 <= self.metrics_port <= 65535, "metrics_port", "must be 0-65535")
        try:
            self._detection()  # validates the clinical settings where they are defined
        except DetectionConfigError as exc:
            raise ConfigError(str(exc)) from None
        _check(1024 <= self.max_frame_bytes <= 64 * 1024 * 1024, "max_frame_bytes", "must be 1 KiB-64 MiB")
        _check(0.5 <= self.shed_after_s <= 60.0, "shed_after_s", "must be 0.5-60 s")
        _check(0.0 <= self.shutdown_timeout_s <= 300.0, "shutdown_timeout_s", "must be 0-300 s")
        _check(5.0 <= self.worker_stall_s <= 3600.0, "worker_stall_s", "must be 5-3600 s")
        _check(1 <= self.journal_max_mb <= 100_000, "journal_max_mb", "must be 1-100000")
        _check(0 <= self.journal_backups <= 100, "journal_backups", "must be 0-100")
        _check(
            self.telemetry_interval_s == 0 or 0.2 <= self.telemetry_interval_s <= 10.0,
            "telemetry_interval_s",
            "must be 0 (off) or 0.2-10 s",
        )
        _check(self.max_streams >= 1, "max_streams", "must be positive")
        _check(1 <= self.max_batch <= 4096, "max_batch", "must be 1-4096")
        _check(self.log_level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR"), "log_level", "DEBUG/INFO/WARNING/ERROR")
        _check(self.precision in ("float32", "bfloat16", "auto"), "precision", "float32, bfloat16 or auto")
        self._check_tls()
        self._check_curve()
        _check(not (self.require_model and self.rules_only), "require_model", "contradicts rules_only")
        self.shard_index()  # validates

    def __repr__(self) -> str:
        """The dataclass repr with passwords masked in URLs and ``mqtt_password`` left out."""
        shown = []
        for f in dataclasses.fields(self):
            if f.repr:
                value = getattr(self, f.name)
                if f.name in _URL_KEYS:
                    value = tuple(redact_url(u) for u in value)
                shown.append(f"{f.name}={value!r}")
        return f"MonitorConfig({', '.join(shown)})"

    def _check_tls(self) -> None:
        _check(self.mqtt_key is None or self.mqtt_cert is not None, "mqtt_key", "needs mqtt_cert")
        _check(
            (self.metrics_tls_cert is None) == (self.metrics_tls_key is None),
            "metrics_tls_cert",
            "metrics_tls_cert and metrics_tls_key go together",
        )
        _check(self.metrics_client_ca is None or self.metrics_tls_cert is not None, "metrics_client_ca", "needs TLS")
        for key in ("mqtt_ca", "mqtt_cert", "mqtt_key", "mqtt_password_file", *_METRICS_TLS_KEYS):
            path = getattr(self, key)
            if path is not None:
                try:
                    check_readable(key, path)
                except TlsError as exc:
                    raise ConfigError(str(exc)) from None

    def _check_curve(self) -> None:
        _curve_checks(self)

    def mqtt_security(self) -> MqttSecurity:
        """TLS settings and password for the MQTT URLs (reads the password file; ``TlsError``)."""
        return MqttSecurity.load(
            ca=self.mqtt_ca,
            cert=self.mqtt_cert,
            key=self.mqtt_key,
            password_file=self.mqtt_password_file,
            password=self.mqtt_password,
            env={},  # the environment reached this config through load() already
        )

    def metrics_tls(self) -> dict[str, Any]:
        """Keyword arguments for prometheus_client's ``start_http_server``: none without TLS."""
        if self.metrics_tls_cert is None:
            return {}
        return {
            "certfile": self.metrics_tls_cert,
            "keyfile": self.metrics_tls_key,
            "client_cafile": self.metrics_client_ca,
            "client_auth_required": self.metrics_client_ca is not None,
        }

    def _detection(self) -> DetectionConfig:
        return DetectionConfig(
            hop_s=self.hop_s,
            calm_hop_s=self.calm_hop_s if self.calm_hop_s is not None else 2.0 * self.hop_s,
            window_s=self.window_s,
            buffer_s=self.buffer_s,
            pause_threshold_s=self.pause_threshold_s,
            no_signal_s=self.no_signal_s,
        )

    @property
    def detection(self) -> DetectionConfig:
        """The detection settings: what the per-bed core, the rules and the classifier share."""
        return self._detection()

    def shard_index(self) -> tuple[int, int]:
        try:
            k_s, n_s = self.shard.split("/")
            k, n = int(k_s), int(n_s)
        except ValueError:
            raise ConfigError(f"shard: {self.shard!r} is not K/N") from None
        if not (n >= 1 and 0 <= k < n):
            raise ConfigError(f"shard: need 0 <= K < N, got {self.shard!r}")
        return k, n

    @classmethod
    def load(cls, path: str | Path | None = None, env: dict[str, str] | None = None, **overrides: Any) -> MonitorConfig:
        """Defaults < TOML file (``[monitor]`` table or top level) < ``ECG_MONITOR_*`` env < overrides."""
        values: dict[str, Any] = {}
        if path is not None:
            try:
                data = tomllib.loads(Path(path).read_text())
            except (OSError, tomllib.TOMLDecodeError) as exc:
                raise ConfigError(f"config file {path}: {exc}") from None
            values.update(data.get("monitor", data))
        names = {f.name: f for f in dataclasses.fields(cls)}
        for key, raw in (env if env is not None else dict(os.environ)).items():
            if key.startswith(ENV_PREFIX) and key[len(ENV_PREFIX) :].lower() in names:
                name = key[len(ENV_PREFIX) :].lower()
                values[name] = _from_env(names[name].type, raw, name)
        values.update({k: v for k, v in overrides.items() if v is not None})
        unknown = set(values) - set(names)
        if unknown:
            raise ConfigError(f"{sorted(unknown)[0]}: unknown key")
        for k in ("ingest", "alarms"):
            if k in values and isinstance(values[k], list):
                values[k] = tuple(values[k])
        for k, v in values.items():
            _typecheck(k, v, names[k].type)
        return cls(**values)


def _is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost; anything else (a name, ``*``, 0.0.0.0) may be reachable."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _curve_checks(cfg: MonitorConfig) -> None:
    """CURVE files readable and real; no ZeroMQ bind or metrics off loopback unprotected."""
    _check(
        (cfg.curve_secret is None) == (cfg.curve_clients is None),
        "curve_secret" if cfg.curve_secret is None else "curve_clients",
        "curve_secret and curve_clients go together",
    )
    for key, load in (("curve_secret", load_secret), ("curve_clients", load_clients)):
        path = getattr(cfg, key)
        if path is not None:
            if not os.access(path, os.R_OK):
                raise ConfigError(f"{key}: {path} is missing or not readable")
            try:
                load(path)
            except (CurveError, OSError) as exc:
                raise ConfigError(f"{key}: {exc}") from None
    if cfg.insecure:
        return
    if cfg.curve_secret is None:
        for key in ("ingest", "alarms"):
            for url in getattr(cfg, key):
                ep = parse_url(url)
                if ep.is_zmq and not _is_loopback(ep.host):
                    raise ConfigError(
                        f"{key}: {ep} binds a non-loopback address without CURVE: set curve_secret and "
                        "curve_clients, or insecure = true (--insecure) to accept anyone on the network"
                    )
    if cfg.metrics_port and cfg.metrics_tls_cert is None and not _is_loopback(cfg.metrics_host):
        raise ConfigError(
            f"metrics_host: {cfg.metrics_host} is not loopback and metrics have no TLS: set metrics_tls_cert "
            "and metrics_tls_key, or insecure = true (--insecure)"
        )


_URL_KEYS = ("ingest", "alarms")
_METRICS_TLS_KEYS = ("metrics_tls_cert", "metrics_tls_key", "metrics_client_ca")
#: Keys whose values are never shown in an error.
_SECRET_KEYS = ("mqtt_password",)


def _shown(key: str, value: Any) -> str:
    """``value`` as an error may quote it: secrets hidden, URLs redacted."""
    if key in _SECRET_KEYS:
        return "(hidden)"
    if key in _URL_KEYS:
        items = value if isinstance(value, (list, tuple)) else [value]
        return repr([redact_url(v) if isinstance(v, str) else v for v in items])
    return repr(value)


def _check(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {msg}")


def _typecheck(key: str, value: Any, annotation: Any) -> None:
    ann = str(annotation)
    ok = True
    if ann == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif ann == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif ann == "float | None":
        ok = value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))
    elif ann == "bool":
        ok = isinstance(value, bool)
    elif ann == "str":
        ok = isinstance(value, str)
    elif ann == "str | None":
        ok = value is None or isinstance(value, str)
    elif ann.startswith("tuple"):
        ok = isinstance(value, (tuple, str)) and all(
            isinstance(v, str) for v in (value if isinstance(value, tuple) else [value])
        )
    if not ok:
        raise ConfigError(f"{key}: expected {ann}, got {type(value).__name__} {_shown(key, value)}")


def _from_env(annotation: Any, raw: str, key: str) -> Any:
    ann = str(annotation)
    try:
        if ann == "int":
            return int(raw)
        if ann in ("float", "float | None"):
            return float(raw)
        if ann == "bool":
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if ann.startswith("tuple"):
            return tuple(u.strip() for u in raw.split(",") if u.strip())
    except ValueError:
        raise ConfigError(f"{key}: cannot read {_shown(key, raw)} from {ENV_PREFIX}{key.upper()} as {ann}") from None
    return raw
