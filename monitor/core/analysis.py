"""Window analysis, run by the daemon in its executor: lead quality, then one batched classifier
call. Pure: no I/O, no state; the core builds the jobs and takes the results.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from classifier.constants import MODEL_FS
from classifier.inference import MLECGClassifier
from classifier.result import Classification
from classifier.rules import RuleBasedClassifier
from monitor.core.quality import LeadQuality, lead_quality_batch, usable


@dataclass(frozen=True, slots=True)
class WindowJob:
    stream_id: str
    signal: NDArray[np.float32]  # (2, n) at MODEL_FS, gap-free
    t_start: float  # stream time of the first sample
    rhythm: NDArray[np.float32] | None = None  # a longer gap-free stretch ending with it, for AF
    epoch: int = 0  # the stream's epoch when taken: a result across a discontinuity is stale


@dataclass(frozen=True, slots=True)
class WindowResult:
    job: WindowJob
    quality: tuple[LeadQuality, LeadQuality]
    result: Classification | None  # None when no lead is usable

    @property
    def t_end(self) -> float:
        return self.job.t_start + self.job.signal.shape[1] / MODEL_FS

    def onset_time(self) -> float:
        if self.result is None or self.result.event_index is None:
            return self.t_end
        return self.job.t_start + self.result.event_index / MODEL_FS


def _qualities(jobs: list[WindowJob]) -> list[tuple[LeadQuality, LeadQuality]]:
    """Lead quality of every window, batched by window length."""
    out: list[tuple[LeadQuality, LeadQuality]] = [(LeadQuality.MISSING, LeadQuality.MISSING)] * len(jobs)
    by_len: dict[int, list[int]] = {}
    for i, job in enumerate(jobs):
        by_len.setdefault(job.signal.shape[1], []).append(i)
    for idx in by_len.values():
        qs = lead_quality_batch(np.stack([jobs[i].signal for i in idx]), MODEL_FS)
        for i, q in zip(idx, qs, strict=True):
            out[i] = q
    return out


def analyse(jobs: list[WindowJob], classifier: MLECGClassifier | RuleBasedClassifier) -> list[WindowResult]:
    """Judge lead quality per window, then classify all windows with usable leads in one batch."""
    todo: list[tuple[int, NDArray[np.float64], NDArray[np.bool_]]] = []
    qualities = _qualities(jobs)
    for i, job in enumerate(jobs):
        q = qualities[i]
        ok = np.array([usable(q[0]), usable(q[1])])
        if ok.any():
            todo.append((i, job.signal.astype(np.float64), ok))
    results: list[Classification | None] = [None] * len(jobs)
    if todo:
        if isinstance(classifier, MLECGClassifier):
            out = classifier.classify_model_rate_batch(
                [(sig, ok) for _, sig, ok in todo], rhythm=[jobs[i].rhythm for i, _, _ in todo]
            )
        else:
            out = [classifier.classify_model_rate(np.nan_to_num(sig), ok, MODEL_FS) for _, sig, ok in todo]
        for (i, _, _), res in zip(todo, out, strict=True):
            results[i] = res
    return [WindowResult(j, q, r) for j, q, r in zip(jobs, qualities, results, strict=True)]
