"""One way to log a repeated condition: at most once per ``every`` seconds per key, with the count
of occurrences since the last line, so a storm of bad frames or failed writes costs a line every
few seconds, never one per event."""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable


class RateLimitedLog:
    def __init__(
        self, logger: logging.Logger, clock: Callable[[], float] = time.monotonic, every: float = 10.0
    ) -> None:
        self.logger = logger
        self.clock = clock
        self.every = every
        self._last: dict[str, float] = {}
        self._count: Counter[str] = Counter()

    def log(self, level: int, key: str, msg: str, *args: object, exc_info: bool = False) -> None:
        """``msg % args`` under ``key``: logged now, or counted into the next line for that key."""
        self._count[key] += 1
        now = self.clock()
        if now - self._last.get(key, -math.inf) >= self.every:
            # ``msg`` may carry what a peer sent (a rejected stream id with a '%' in it): it is an
            # argument of the line, never its format string.
            text = msg % args if args else msg
            self.logger.log(level, "%s (%d since last report)", text, self._count[key], exc_info=exc_info)
            self._last[key] = now
            self._count[key] = 0
