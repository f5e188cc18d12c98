"""Turn class probabilities into a call, with per-class thresholds chosen on validation data."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from classifier.constants import CLASSES, EVENT_PRIORITY

#: Events in the order they win when several pass their threshold.
_BY_PRIORITY = sorted((c for c in CLASSES if c != "NORMAL"), key=lambda c: -EVENT_PRIORITY[c])


def decide(probs: NDArray[np.floating], thresholds: Mapping[str, float] | None = None) -> NDArray[np.int64]:
    """Class index per row: the highest-priority event whose probability passes its threshold,
    else NORMAL. Without thresholds this is the plain argmax.
    """
    probs = np.asarray(probs, dtype=np.float64)
    if not thresholds:
        return probs.argmax(axis=1).astype(np.int64)
    out = np.zeros(len(probs), dtype=np.int64)
    decided = np.zeros(len(probs), dtype=bool)
    for name in _BY_PRIORITY:
        ci = CLASSES.index(name)
        hit = ~decided & (probs[:, ci] >= thresholds.get(name, 0.5))
        out[hit] = ci
        decided |= hit
    return out


def calibrate(
    probs: NDArray[np.floating], labels: NDArray[np.integer], max_false_rate: float = 0.005
) -> dict[str, float]:
    """Per event, the lowest threshold at which at most ``max_false_rate`` of NORMAL windows pass.

    Thresholds never drop below 0.5, so a confident model keeps its argmax behaviour.
    """
    probs = np.asarray(probs, dtype=np.float64)
    normal = probs[np.asarray(labels) == CLASSES.index("NORMAL")]
    out: dict[str, float] = {}
    for name in _BY_PRIORITY:
        p = normal[:, CLASSES.index(name)]
        q = float(np.quantile(p, 1.0 - max_false_rate)) if p.size else 0.5
        out[name] = round(min(0.999, max(0.5, q + 1e-6)), 6)
    return out
