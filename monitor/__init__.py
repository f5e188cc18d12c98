"""The ecg-monitor daemon. ``run(config)`` and the ``ecg-monitor run`` command are the two ways in.

Names are imported on first use, so that ``monitor.cli`` starts without the transports
(the training subcommands run where ZeroMQ and MQTT are not installed).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monitor.config import ConfigError, MonitorConfig
    from monitor.daemon import Monitor, run, serve

__all__ = ["ConfigError", "Monitor", "MonitorConfig", "run", "serve"]

_HOME = {
    "ConfigError": "monitor.config",
    "MonitorConfig": "monitor.config",
    "Monitor": "monitor.daemon",
    "run": "monitor.daemon",
    "serve": "monitor.daemon",
}


def __getattr__(name: str) -> Any:
    if name in _HOME:
        return getattr(importlib.import_module(_HOME[name]), name)
    raise AttributeError(f"module 'monitor' has no attribute {name!r}")
