"""Confusion matrices, per-class sensitivity/PPV and Wilson confidence intervals."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from classifier.constants import CLASSES


def confusion(y_true: NDArray[np.integer], y_pred: NDArray[np.integer], k: int = len(CLASSES)) -> NDArray[np.int64]:
    """Rows are the reference class, columns the prediction."""
    m = np.zeros((k, k), dtype=np.int64)
    np.add.at(m, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return m


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a proportion; (nan, nan) for n == 0."""
    if n == 0:
        return math.nan, math.nan
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def per_class(m: NDArray[np.int64]) -> dict[str, dict[str, Any]]:
    """Sensitivity, PPV, F1 and their counts for each class of a confusion matrix."""
    out: dict[str, dict[str, Any]] = {}
    for i, c in enumerate(CLASSES):
        tp = int(m[i, i])
        n = int(m[i].sum())
        called = int(m[:, i].sum())
        sens = tp / n if n else math.nan
        ppv = tp / called if called else math.nan
        f1 = 2 * tp / (n + called) if n + called else 0.0
        out[c] = {
            "n": n,
            "called": called,
            "tp": tp,
            "sens": sens,
            "ppv": ppv,
            "f1": f1,
            "sens_ci": wilson(tp, n),
            "ppv_ci": wilson(tp, called),
        }
    return out
