"""Labelled real windows from the shared records, and balanced epochs with augmentation."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from classifier.constants import CLASSES, MODEL_FS, SEGMENT_LEN
from classifier.preprocess import INPUT_CHANNELS, normalize_segment
from classifier.training.augment import augment, splice_pause, stretch_to
from classifier.training.labels import label_window
from classifier.training.records import Record

CLASS_INDEX: dict[str, int] = {c: i for i, c in enumerate(CLASSES)}


@dataclass(slots=True)
class WindowIndex:
    """Real windows: record index, start (model samples), class index, event offset."""

    rec: NDArray[np.int64]
    start: NDArray[np.int64]
    label: NDArray[np.int64]
    event_index: NDArray[np.int64]
    skipped: Counter[str] = field(default_factory=Counter)

    def __len__(self) -> int:
        return int(self.rec.size)

    def counts(self) -> dict[str, int]:
        return {c: int((self.label == i).sum()) for i, c in enumerate(CLASSES)}


def index_windows(records: list[Record], normal_hop_s: float = 10.0, event_hop_s: float = 10.0) -> WindowIndex:
    """Windows of SEGMENT_LEN; events may be sampled more densely than normal rhythm.

    Ambiguous windows (an event only grazing the window, mostly noise) are left out and
    counted in ``skipped`` by reason.
    """
    recs, starts, labels, events = [], [], [], []
    skipped: Counter[str] = Counter()
    fine = int(min(normal_hop_s, event_hop_s) * MODEL_FS)
    normal_hop = int(normal_hop_s * MODEL_FS)
    for r_i, rec in enumerate(records):
        n = rec.signal.shape[1]
        for a in range(0, n - SEGMENT_LEN + 1, fine):
            w = label_window(rec.episodes, a, a + SEGMENT_LEN, MODEL_FS)
            if w.label is None:
                if a % normal_hop == 0:
                    skipped[w.reason] += 1
                continue
            if w.label == "NORMAL" and a % normal_hop != 0:
                continue
            if not np.isfinite(rec.signal[:, a : a + SEGMENT_LEN][0]).all():
                skipped["nan lead 1"] += 1
                continue
            recs.append(r_i)
            starts.append(a)
            labels.append(CLASS_INDEX[w.label])
            events.append(-1 if w.event_index is None else w.event_index)
    as_i = lambda v: np.asarray(v, dtype=np.int64)  # noqa: E731
    return WindowIndex(as_i(recs), as_i(starts), as_i(labels), as_i(events), skipped)


def real_batch(records: list[Record], idx: WindowIndex, sel: NDArray[np.int64]) -> NDArray[np.float32]:
    """Normalised, unaugmented model inputs for the selected windows."""
    out = np.empty((sel.size, INPUT_CHANNELS, SEGMENT_LEN), dtype=np.float32)
    for k, i in enumerate(sel.tolist()):
        rec = records[int(idx.rec[i])]
        a = int(idx.start[i])
        seg = np.nan_to_num(rec.signal[:, a : a + SEGMENT_LEN].astype(np.float64))
        out[k] = normalize_segment(seg)
    return out


def source_weights(records: list[Record], idx: WindowIndex, pool: NDArray[np.intp]) -> NDArray[np.float64]:
    """Sampling probabilities over ``pool`` that give every source an equal share of the class:
    otherwise the thousands of AF windows of a few Holter patients would drown the hundreds of
    handheld patients, and the network would again learn patients rather than AF."""
    source = np.array([records[int(idx.rec[i])].name.split("/")[0] for i in pool.tolist()])
    w = np.zeros(pool.size)
    names, counts = np.unique(source, return_counts=True)
    for name, count in zip(names.tolist(), counts.tolist(), strict=True):
        w[source == name] = 1.0 / (count * names.size)
    return w


class BalancedEpochs:
    """Draws each epoch's windows with a fixed class mix; PAUSE is topped up by spliced pauses."""

    def __init__(
        self,
        records: list[Record],
        idx: WindowIndex,
        size: int,
        mix: dict[str, float],
        seed: int,
        rhythm_only: float = 0.0,
        stretch: float = 0.0,
        lead_swap: float = 0.0,
    ) -> None:
        self.rhythm_only = rhythm_only
        self.stretch = stretch
        self.lead_swap = lead_swap
        self.records = records
        self.idx = idx
        self.size = size
        self.mix = mix
        self.rng = np.random.default_rng(seed)
        self.with_beats = [i for i, r in enumerate(records) if r.beats.size > 100]
        self.by_class: dict[str, NDArray[np.intp]] = {c: np.flatnonzero(idx.label == CLASS_INDEX[c]) for c in CLASSES}
        self.weights = {c: source_weights(records, idx, pool) for c, pool in self.by_class.items()}

    def epoch(self) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        rng = self.rng
        xs: list[NDArray[np.float32]] = []
        ys: list[int] = []
        for cls, frac in self.mix.items():
            n = round(self.size * frac)
            pool = self.by_class[cls]
            n_real = n if cls != "PAUSE" else min(n // 4, pool.size * 4)
            if pool.size and n_real:
                for i in rng.choice(pool, size=n_real, replace=pool.size < n_real, p=self.weights[cls]).tolist():
                    xs.append(self._real(int(i)))
                    ys.append(CLASS_INDEX[cls])
            if cls == "PAUSE":
                for _ in range(n - n_real):
                    seg = self._spliced(rng.uniform(3.1, 7.0))
                    if seg is not None:
                        xs.append(seg)
                        ys.append(CLASS_INDEX["PAUSE"])
                # Near-miss gaps teach the threshold: 1.8-2.7 s R-R is not a pause.
                for _ in range(n // 4):
                    seg = self._spliced(rng.uniform(1.8, 2.7))
                    if seg is not None:
                        xs.append(seg)
                        ys.append(CLASS_INDEX["NORMAL"])
        order = rng.permutation(len(ys))
        return np.stack(xs)[order], np.asarray(ys, dtype=np.int64)[order]

    def _real(self, i: int) -> NDArray[np.float32]:
        rec = self.records[int(self.idx.rec[i])]
        n = rec.signal.shape[1]
        a = int(self.idx.start[i])
        label = CLASSES[int(self.idx.label[i])]
        length = SEGMENT_LEN
        if label in ("NORMAL", "AF"):
            # Rate and QRS width vary between patients; stretching the time axis only changes
            # what AF and normal rhythm do not depend on. Events with a rate or gap criterion
            # (VTACH, PAUSE) are left unstretched.
            if self.stretch:
                length = min(n, round(SEGMENT_LEN * self.rng.uniform(1 - self.stretch, 1 + self.stretch)))
            a = int(np.clip(a + self.rng.integers(-int(MODEL_FS), int(MODEL_FS) + 1), 0, n - length))
        seg = np.nan_to_num(rec.signal[:, a : a + length].astype(np.float64))
        if length != SEGMENT_LEN:
            seg = stretch_to(seg, SEGMENT_LEN)
        x = normalize_segment(augment(seg, self.rng, self.lead_swap))
        if label in ("NORMAL", "AF") and self.rng.random() < self.rhythm_only:
            # Morphology dropout: rhythm alone must carry AF, so it generalises across patients.
            x[:2] = 0.0
        return x

    def _spliced(self, gap_s: float) -> NDArray[np.float32] | None:
        r = self.records[int(self.rng.choice(self.with_beats))]
        made = splice_pause(r.signal, r.beats, self.rng, gap_s)
        if made is None:
            return None
        return normalize_segment(augment(made[0], self.rng, self.lead_swap))
