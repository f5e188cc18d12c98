"""Run the daemon as a process: signals, the live console, the exit code.

``run(config)`` and ``ecg-monitor run`` are the two ways in. The first SIGINT/SIGTERM stops the
daemon gracefully (phased shutdown); a second one stops waiting for the windows in flight. The
original signal handlers are restored afterwards. A daemon task that died, or a start-up failure
(a port in use, a journal that cannot be written), gives a clear log line and a non-zero exit.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from contextlib import suppress
from typing import Any

from prometheus_client import CollectorRegistry

from classifier.inference import ModelUnavailableError
from monitor.clock import Clock
from monitor.config import MonitorConfig
from monitor.console import Console
from monitor.daemon import Monitor

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILED = 1


async def serve(
    config: MonitorConfig,
    *,
    registry: CollectorRegistry | None = None,
    clock: Clock | None = None,
    stop: asyncio.Event | None = None,
    duration_s: float | None = None,
    console: bool | None = None,
) -> Monitor:
    """Run the daemon until SIGINT/SIGTERM, ``stop`` is set, or ``duration_s`` passes."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    mon = Monitor(config, registry=registry, clock=clock)

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set():
            log.warning("%s again: not waiting for the windows in flight", sig.name)
            mon.force_exit()
        else:
            log.info("%s: stopping", sig.name)
            stop.set()

    installed: list[signal.Signals] = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
    try:
        async with mon:
            use_console = config.console if console is None else console
            async with Console(mon, enabled=use_console):
                with suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=duration_s)
                log.info("stopping")
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
    return mon


def run(config: MonitorConfig, **kwargs: Any) -> int:
    """Blocking entry point: run the daemon with ``config``; return the process exit code."""
    try:
        asyncio.run(serve(config, **kwargs))
    except OSError as exc:
        log.critical("cannot start: %s", exc)
        return EXIT_FAILED
    except ModelUnavailableError as exc:
        log.critical("cannot start: %s", exc)
        return EXIT_FAILED
    except ExceptionGroup as group:  # a task of the daemon's TaskGroup died
        for failure in group.exceptions:
            log.critical(
                "daemon task failed, exiting so the service manager restarts it: %r", failure, exc_info=failure
            )
        return EXIT_FAILED
    except Exception as exc:
        log.critical("daemon failed: %r", exc, exc_info=exc)
        return EXIT_FAILED
    return EXIT_OK
