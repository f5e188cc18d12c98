"""``make demo``: the daemon on its embedded ZeroMQ defaults with a synthetic ward.

Everything runs in one process over real loopback sockets: simulator -> PUSH/PULL ->
daemon -> PUB/SUB -> alarm printer and central station (a web page, on port 8080 or a free
one). It stops by itself and prints a scored summary.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
import tempfile
from pathlib import Path

from monitor.config import MonitorConfig
from monitor.console import Console
from monitor.daemon import Monitor
from protocol.alarm import Alarm
from simulators.score import format_table, read_jsonl, score
from simulators.simulate import SimulateOptions, simulate
from simulators.subscribe import SubscribeOptions, printer
from station.server import Station, StationConfig

log = logging.getLogger(__name__)


async def _station(alarms_url: str, port: int) -> Station:
    """The station on ``port``, or on a free port if that one is taken."""
    try:
        return await Station(StationConfig(sources=(alarms_url,), port=port)).__aenter__()
    except OSError:
        return await Station(StationConfig(sources=(alarms_url,), port=0)).__aenter__()


async def _demo(patients: int, duration: float, seed: int, console: bool, station_port: int = 8080) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="ecg-demo-"))
    truth = tmp / "truth.jsonl"
    journal = tmp / "alarms.jsonl"
    cfg = MonitorConfig(journal=str(journal), console=console, metrics_port=9108)
    stop = asyncio.Event()
    tty = console and sys.stdout.isatty()
    async with Monitor(cfg) as mon:
        if not tty:
            show = printer(SubscribeOptions(json=False))
            mon.alarm_listeners.append(lambda a: show(a))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)  # Ctrl-C ends the run early, summary still printed
        station = await _station(cfg.alarms[0], station_port)
        try:
            msg = f"central station: {station.url} (open it in a browser; live until the demo ends)"
            print(msg, flush=True)
            async with Console(mon, enabled=console, banner=msg):
                sim = SimulateOptions(
                    patients=patients, scenario="mixed", duration=duration, speed=1.0, seed=seed, truth=str(truth)
                )
                await simulate(sim, stop)
                await asyncio.sleep(1.0)
        finally:
            await station.__aexit__(None, None, None)
    alarms = [Alarm.from_json(line) for line in journal.read_text().splitlines() if line.strip()]
    result = score(read_jsonl(truth), alarms)
    print()
    print(f"demo finished: {len(mon.streams)} streams, {len(alarms)} alarm messages (journal {journal})")
    print(format_table(result))
    strips = sorted((tmp / "alarms.jsonl.strips").glob("*.json"))
    if strips:
        print(f"{len(strips)} alarm strips kept beside the journal; render one with: ecg-monitor strip {strips[0]}")
    return 0


def demo(patients: int = 8, duration: float = 90.0, seed: int = 1, console: bool = True) -> int:
    try:
        return asyncio.run(_demo(patients, duration, seed, console))
    except KeyboardInterrupt:
        return 130
