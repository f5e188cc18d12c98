"""Reconnect delays for network clients: retry at once, then capped exponential backoff with jitter.

The cap is short (1.5 s) on purpose: a broker that comes back must see its clients again within
about 2 s, because alarms wait for them. Jitter keeps many clients from reconnecting in lockstep.
"""

from __future__ import annotations

import random


class Backoff:
    """Delay before each reconnect attempt: ``first``, then ``start * factor**k`` up to ``cap``.

    Each delay after the first is scaled by a random factor in ``[1 - jitter, 1 + jitter]`` and
    then capped, so no delay exceeds ``cap``. ``reset()`` once a connection has proven itself.
    """

    def __init__(
        self,
        first: float = 0.0,
        start: float = 0.1,
        cap: float = 1.5,
        jitter: float = 0.2,
        factor: float = 2.0,
        stable_s: float = 1.0,
        rng: random.Random | None = None,
    ) -> None:
        if not (0.0 <= first <= cap and 0.0 < start <= cap):
            raise ValueError(f"backoff needs 0 <= first <= cap and 0 < start <= cap (got {first}, {start}, {cap})")
        if not (0.0 <= jitter < 1.0) or factor < 1.0 or stable_s < 0.0:
            raise ValueError(f"backoff needs 0 <= jitter < 1, factor >= 1, stable_s >= 0 (got {jitter}, {factor})")
        self.first = first
        self.start = start
        self.cap = cap
        self.jitter = jitter
        self.factor = factor
        self.stable_s = stable_s
        self._rng = rng if rng is not None else random.Random()
        self._attempt = 0

    @property
    def attempts(self) -> int:
        """Delays handed out since the last reset."""
        return self._attempt

    def next(self) -> float:
        """The delay in seconds before the next attempt."""
        k = self._attempt
        self._attempt += 1
        if k == 0:
            return self.first
        base = min(self.cap, self.start * self.factor ** min(k - 1, 64))
        spread = self._rng.uniform(1.0 - self.jitter, 1.0 + self.jitter)
        return min(self.cap, base * spread)

    def reset(self) -> None:
        """Start over: the next delay is ``first`` again."""
        self._attempt = 0

    def after(self, connected_for_s: float | None) -> float:
        """The delay after a connection ended that lasted ``connected_for_s`` (None: it never came up).

        A connection that stayed up at least ``stable_s`` restarts the sequence, so a broker that
        returns is retried at once; one that accepts and drops us at once keeps backing off
        instead of being hammered in a hot loop.
        """
        if connected_for_s is not None and connected_for_s >= self.stable_s:
            self.reset()
        return self.next()
