"""The ecg-monitor daemon. ``run(config)`` and the ``ecg-monitor run`` command are the two ways in.

Layers inside: ``monitor.core`` (the pure per-bed core), then the transports, the alarm bus and
``Monitor`` (the daemon that moves data), then ``server`` (signals, console, exit code).
"""

from monitor.config import ConfigError, MonitorConfig
from monitor.daemon import Monitor
from monitor.server import run, serve

__all__ = ["ConfigError", "Monitor", "MonitorConfig", "run", "serve"]
