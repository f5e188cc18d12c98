"""The daemon's one typed config: built from defaults, a TOML file, the environment and flags.

Later sources win (flags over environment over file). Validation happens when the object is
built, and every error names the key at fault.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from monitor.core.detection import DetectionConfig, DetectionConfigError
from protocol.topics import SAMPLES_SUBSCRIPTION
from protocol.urls import parse_url
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
    buffer_s: float = 90.0
    window_s: float = 10.0
    pause_threshold_s: float = 3.0
    no_signal_s: float = 3.0
    model_path: str | None = None
    rules_only: bool = False
    shard: str = "0/1"
    console: bool = True
    max_streams: int = 2000
    max_batch: int = 256
    log_level: str = "INFO"
    mqtt_topic: str = SAMPLES_SUBSCRIPTION
    precision: str = "auto"  # network arithmetic: float32, bfloat16, or auto (the faster here)
    # Reliability: bounds and timeouts.
    max_frame_bytes: int = MAX_FRAME_BYTES  # larger ZeroMQ messages / MQTT payloads are refused
    shed_after_s: float = 4.0  # under overload, due windows the classifier cannot reach in this long are shed
    shutdown_timeout_s: float = 10.0  # how long shutdown waits for the windows in flight
    worker_stall_s: float = 120.0  # one inference batch running longer than this takes the daemon down
    journal_max_mb: int = 64  # the journal rotates at this size...
    journal_backups: int = 5  # ...keeping this many old files

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
        _check(self.max_streams >= 1, "max_streams", "must be positive")
        _check(1 <= self.max_batch <= 4096, "max_batch", "must be 1-4096")
        _check(self.log_level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR"), "log_level", "DEBUG/INFO/WARNING/ERROR")
        _check(self.precision in ("float32", "bfloat16", "auto"), "precision", "float32, bfloat16 or auto")
        self.shard_index()  # validates

    def _detection(self) -> DetectionConfig:
        return DetectionConfig(
            hop_s=self.hop_s,
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
        raise ConfigError(f"{key}: expected {ann}, got {type(value).__name__} {value!r}")


def _from_env(annotation: Any, raw: str, key: str) -> Any:
    ann = str(annotation)
    try:
        if ann == "int":
            return int(raw)
        if ann == "float":
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
        raise ConfigError(f"{key}: cannot read {raw!r} from {ENV_PREFIX}{key.upper()} as {ann}") from None
    return raw
