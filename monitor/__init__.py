"""The ecg-monitor daemon. ``run(config)`` and the ``ecg-monitor run`` command are the two ways in."""

from monitor.config import ConfigError, MonitorConfig
from monitor.daemon import Monitor, run, serve

__all__ = ["ConfigError", "Monitor", "MonitorConfig", "run", "serve"]
