"""AF from the rhythm: a calibrated model on R-R interval features and the atrial evidence.

AF is a rhythm, irregularly irregular, and the network's 10 s view of it did not generalise
beyond the few AF patients it was trained on. R-R intervals carry most of the evidence and
generalise across devices; the hard part is ectopy (isolated premature beats, bigeminy, sinus
arrhythmia), which the features below are chosen to tell apart: a regular rhythm with a few
early beats keeps most intervals near the median, its successive differences alternate, and it
turns regular once each premature interval and its compensatory pause are removed. What R-R
cannot tell, the stretch before each beat can: ectopy keeps its P waves, AF has none
(``classifier/atrial.py``).

The coefficients are fitted on training records of every source and the decision threshold is
chosen on validation records (``classifier/training/af_rr.py``); they live in
``models/af_rr.json``, plain JSON. Two fits (small MLPs): ``short`` for 8-30 s of context, ``long`` for
30 s and more. Pure numpy; intervals in seconds.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
from numpy.typing import NDArray

from classifier.atrial import ATRIAL_FEATURES

#: Fewer intervals than this: no AF judgement from the rhythm.
MIN_INTERVALS: Final = 8
#: From this much context (s) the ``long`` fit applies.
LONG_CONTEXT_S: Final = 30.0
#: Intervals outside this range are detection errors or pauses, not AF rhythm.
RR_MIN_S: Final = 0.24
RR_MAX_S: Final = 2.5

RR_FEATURES: Final[tuple[str, ...]] = (
    "irregularity",  # median |dRR| / median RR (robust to a few ectopic beats)
    "rmssd",  # RMS of dRR / mean RR
    "cv",  # SD of RR / mean RR
    "irregular_frac",  # share of |dRR| above 10% of the median RR
    "regular_frac",  # share of RR within 10% of the median RR (high with isolated ectopy)
    "alternation",  # lag-1 correlation of dRR: -1 for bigeminy, about -0.5 for AF
    "turning",  # share of RR that are local extrema: 2/3 when random, low when regular
    "trimmed_irregularity",  # irregularity of the 80% smallest |dRR|
    "log_rate",  # log of the mean heart rate (bpm)
    "clean_irregularity",  # irregularity once premature beats and their pauses are removed
    "clean_irregular_frac",  # irregular_frac once premature beats and their pauses are removed
    "premature_frac",  # share of intervals removed as premature (high in bigeminy)
    "entropy",  # Shannon entropy (bits) of dRR / median RR in 16 bins over +-0.6
    "sd_ratio",  # Poincare SD1 / SD2: about 1 when successive RR are unrelated (AF)
)
#: The R-R features, then the P-wave evidence before each beat (``classifier/atrial.py``).
FEATURES: Final[tuple[str, ...]] = RR_FEATURES + ATRIAL_FEATURES
#: SD1/SD2 is capped: a perfect bigeminy has SD2 near 0 and the ratio would run away.
SD_RATIO_MAX: Final = 5.0
#: For the explanation only: a P-wave consistency at or above this reads as "P waves consistent".
P_CONSISTENT: Final = 0.7
#: An interval shorter than this fraction of the median is premature (an ectopic beat).
PREMATURE_FRACTION: Final = 0.85


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else 0.5 * (s[n // 2 - 1] + s[n // 2])


def _irregularity(rr: list[float]) -> tuple[float, float]:
    if len(rr) < 3:
        return 0.0, 0.0
    med = _median(rr)
    ad = [abs(b - a) for a, b in itertools.pairwise(rr)]
    return _median(ad) / med, sum(v > 0.1 * med for v in ad) / len(ad)


def _std(xs: list[float]) -> float:
    m = sum(xs) / len(xs)
    return math.sqrt(sum((x - m) ** 2 for x in xs) / len(xs))


def rr_features(rr_s: NDArray[np.floating]) -> NDArray[np.float64] | None:
    """The ``RR_FEATURES`` of one R-R series (s), or None when there are too few intervals.

    Plain Python on a few dozen numbers: per call it is several times faster than numpy, and the
    daemon computes it for every window.
    """
    rr = [float(v) for v in np.asarray(rr_s, dtype=np.float64).tolist() if RR_MIN_S <= v <= RR_MAX_S]
    n = len(rr)
    if n < MIN_INTERVALS:
        return None
    med = _median(rr)
    mean = sum(rr) / n
    d = [b - a for a, b in itertools.pairwise(rr)]
    ad = [abs(v) for v in d]
    srt = sorted(ad)
    trimmed = srt[: max(1, int(0.8 * len(srt)))]
    alternation = 0.0
    if len(d) >= 3:
        x, y = d[:-1], d[1:]
        sx, sy = _std(x), _std(y)
        if sx > 1e-9 and sy > 1e-9:
            mx, my = sum(x) / len(x), sum(y) / len(y)
            alternation = sum((a - mx) * (b - my) for a, b in zip(x, y, strict=True)) / len(x) / (sx * sy)
    turning = sum((m > a and m > b) or (m < a and m < b) for a, m, b in zip(rr, rr[1:], rr[2:], strict=False)) / (n - 2)
    # Drop each premature interval and the compensatory one after it: isolated ectopy leaves a
    # regular rhythm behind, AF stays irregular.
    premature = [v < PREMATURE_FRACTION * med for v in rr]
    drop = [p or (i > 0 and premature[i - 1]) for i, p in enumerate(premature)]
    clean_irr, clean_frac = _irregularity([v for v, dr in zip(rr, drop, strict=True) if not dr])
    bins = [0] * 16
    for v in d:
        bins[min(15, max(0, int((min(0.6, max(-0.6, v / med)) + 0.6) / 0.075)))] += 1
    entropy = -sum(c / len(d) * math.log2(c / len(d)) for c in bins if c)
    sd1 = _std([(b - a) / math.sqrt(2) for a, b in itertools.pairwise(rr)])
    sd2 = _std([(b + a) / math.sqrt(2) for a, b in itertools.pairwise(rr)])
    return np.array(
        [
            _median(ad) / med,
            math.sqrt(sum(v * v for v in d) / len(d)) / mean,
            _std(rr) / mean,
            sum(v > 0.1 * med for v in ad) / len(ad),
            sum(abs(v - med) <= 0.1 * med for v in rr) / n,
            alternation,
            turning,
            _median(trimmed) / med,
            math.log(60.0 / mean),
            clean_irr,
            clean_frac,
            sum(drop) / n,
            entropy,
            min(SD_RATIO_MAX, sd1 / max(sd2, 1e-6)),
        ]
    )


def window_features(rr_s: NDArray[np.floating], atrial: NDArray[np.floating] | None) -> NDArray[np.float64] | None:
    """The whole ``FEATURES`` vector: R-R features and the atrial ones (NaN where not measured)."""
    rr = rr_features(rr_s)
    if rr is None:
        return None
    a = np.full(len(ATRIAL_FEATURES), np.nan) if atrial is None else np.asarray(atrial, dtype=np.float64)
    return np.concatenate([rr, a])


@dataclass(frozen=True, slots=True)
class MlpFit:
    """A small standardised MLP (ReLU hidden layers, sigmoid output) and its decision threshold.

    With no hidden layer it is a logistic regression. Weights are plain JSON lists.
    """

    mean: NDArray[np.float64]
    scale: NDArray[np.float64]
    layers: tuple[tuple[NDArray[np.float64], NDArray[np.float64]], ...]  # (weights in x out, bias)
    threshold: float

    def prob(self, x: NDArray[np.float64]) -> NDArray[np.float64]:
        """P(AF) per row; a NaN feature (evidence not measured) counts as the training mean."""
        x = np.atleast_2d(x)
        h = (np.where(np.isnan(x), self.mean, x) - self.mean) / self.scale
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < len(self.layers) - 1:
                h = np.maximum(h, 0.0)
        out: NDArray[np.float64] = 1.0 / (1.0 + np.exp(-np.clip(h[:, 0], -40, 40)))
        return out

    def to_json(self) -> dict[str, Any]:
        return {
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "layers": [{"w": w.tolist(), "b": b.tolist()} for w, b in self.layers],
            "threshold": self.threshold,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> MlpFit:
        mean = np.asarray(d["mean"], dtype=np.float64)
        scale = np.asarray(d["scale"], dtype=np.float64)
        layers = tuple(
            (np.asarray(layer["w"], dtype=np.float64), np.asarray(layer["b"], dtype=np.float64))
            for layer in d["layers"]
        )
        width = len(FEATURES)
        if mean.shape != (width,) or scale.shape != (width,) or not layers:
            raise ValueError(f"AF model expects {width} features")
        for w, b in layers:
            if w.ndim != 2 or w.shape[0] != width or b.shape != (w.shape[1],):
                raise ValueError("AF model layers do not chain")
            width = w.shape[1]
        if width != 1:
            raise ValueError("AF model must end in one output")
        return cls(mean, scale, layers, float(d["threshold"]))


@dataclass(frozen=True, slots=True)
class AfVerdict:
    af: bool
    probability: float
    threshold: float
    explanation: str


class AfRhythmModel:
    """The calibrated R-R AF detector: ``short`` and ``long`` fits, chosen by context length."""

    def __init__(self, short: MlpFit, long: MlpFit, version: str) -> None:
        self.short, self.long, self.version = short, long, version

    @classmethod
    def load(cls, path: str | Path) -> AfRhythmModel:
        return cls.from_bytes(Path(path).read_bytes())

    @classmethod
    def from_bytes(cls, data: bytes) -> AfRhythmModel:
        d = json.loads(data)
        if tuple(d.get("features", ())) != FEATURES:
            raise ValueError(f"features {d.get('features')} differ from {list(FEATURES)}")
        return cls(MlpFit.from_json(d["short"]), MlpFit.from_json(d["long"]), str(d.get("version", "?")))

    def judge(
        self, rr_s: NDArray[np.floating], context_s: float, atrial: NDArray[np.floating] | None = None
    ) -> AfVerdict | None:
        """AF or not from the intervals of ``context_s`` seconds of signal and the atrial evidence
        before those beats (``atrial.atrial_features``; None: not measured); None: too few beats."""
        x = window_features(rr_s, atrial)
        if x is None:
            return None
        fit = self.long if context_s >= LONG_CONTEXT_S else self.short
        p = float(fit.prob(x)[0])
        af = p >= fit.threshold
        why = (
            f"R-R over {context_s:.0f} s: AF p={p:.2f} (threshold {fit.threshold:.2f}), "
            f"irregularity {x[0]:.2f}, {100 * x[4]:.0f}% of intervals regular"
        )
        p_cons = x[len(RR_FEATURES)]
        if not np.isnan(p_cons):
            why += f", P waves {'consistent' if p_cons >= P_CONSISTENT else 'not consistent'} ({p_cons:.2f})"
        return AfVerdict(af, p, fit.threshold, why)
