"""Window analysis in a worker process, so inference has a core of its own.

In one process, ingest (decoding, resampling, the per-frame pause check) and window analysis
(lead quality, QRS detection, R-R features, the network) take turns on one interpreter lock:
the daemon used one core of two. Here the analysis runs in a child process with its own copy
of the classifier, one torch thread, and the daemon process keeps the other core for ingest.

Jobs and results cross between the daemon and its own child through the process pool's pipe
(Python's standard pickling of numpy arrays and dataclasses): local, between two processes of
one program, never a network wire or a file. A child that dies is replaced; the batch it held is
judged by the rules in the daemon (the caller's fallback), so no window goes unjudged.

The child keeps its classifier in a module global, set once by the pool's initializer: that is
how a process pool gives a worker state, and nothing else reads it.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from types import TracebackType
from typing import Self

from classifier.inference import MLECGClassifier
from classifier.rules import RuleThresholds
from monitor.core.analysis import WindowJob, WindowResult, analyse

log = logging.getLogger(__name__)

#: Seconds the child may take to start and load the model before the daemon gives up on it.
START_TIMEOUT_S = 120.0

_CLASSIFIER: MLECGClassifier | None = None  # in the child only


@dataclass(frozen=True, slots=True)
class ClassifierSpec:
    """How the child builds its classifier: the daemon's own settings, precision already chosen."""

    model_path: str | None
    precision: str
    rule_thresholds: RuleThresholds
    threads: int = 1


def _init(spec: ClassifierSpec) -> None:
    global _CLASSIFIER
    _CLASSIFIER = MLECGClassifier(
        spec.model_path, threads=spec.threads, precision=spec.precision, rule_thresholds=spec.rule_thresholds
    )


def _describe() -> tuple[str, str, str]:
    assert _CLASSIFIER is not None
    return _CLASSIFIER.source, _CLASSIFIER.version, _CLASSIFIER.precision


def _analyse(jobs: list[WindowJob]) -> tuple[list[WindowResult], float]:
    """The results, and the CPU seconds the child spent on them (how busy the worker is)."""
    assert _CLASSIFIER is not None
    t = time.process_time()
    return analyse(jobs, _CLASSIFIER), time.process_time() - t


#: After a failed start, the next try waits this long.
RETRY_S = 5.0


class WorkerMismatchError(RuntimeError):
    """The child's classifier is not the daemon's (another version, or it fell back to the rules)."""


class WorkerUnavailableError(RuntimeError):
    """No analysis process right now (it died and its replacement is starting)."""


class AnalysisProcess:
    """An async context manager owning one worker process (a one-process pool)."""

    def __init__(self, spec: ClassifierSpec, expect: tuple[str, str]) -> None:
        self.spec = spec
        self.expect = expect  # (source, version) the daemon's own classifier has
        self.restarts = 0
        #: CPU seconds the child spent analysing, and wall seconds batches took end to end.
        self.busy_s = 0.0
        self.round_trip_s = 0.0
        self.info: tuple[str, str, str] | None = None
        self._pool: ProcessPoolExecutor | None = None
        self._restart_task: asyncio.Task[None] | None = None
        self._ctx = multiprocessing.get_context("spawn")  # never fork a process holding torch threads

    async def __aenter__(self) -> Self:
        await self._start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._restart_task is not None:
            self._restart_task.cancel()
            await asyncio.gather(self._restart_task, return_exceptions=True)
        self.close(kill=False)

    @property
    def pid(self) -> int | None:
        procs = list(getattr(self._pool, "_processes", {}) or {}) if self._pool is not None else []
        return procs[0] if procs else None

    def close(self, *, kill: bool) -> None:
        """Stop the child; ``kill``: do not wait for a batch it may be stuck in."""
        pool, self._pool = self._pool, None
        if pool is not None:
            _stop(pool, kill=kill)

    async def _start(self) -> None:
        """Start a child and check its classifier. Only a child that passed is ``_pool``: batches
        sent to one still loading would be cancelled with it if it failed, and a cancelled batch
        ends the lane that awaited it without an error to notice."""
        t = time.perf_counter()
        pool = ProcessPoolExecutor(1, mp_context=self._ctx, initializer=_init, initargs=(self.spec,))
        loop = asyncio.get_running_loop()
        try:
            info = await asyncio.wait_for(loop.run_in_executor(pool, _describe), START_TIMEOUT_S)
        except BaseException:
            _stop(pool, kill=True)
            raise
        if info[:2] != self.expect:
            _stop(pool, kill=True)
            raise WorkerMismatchError(f"the analysis process loaded {info[:2]}, the daemon {self.expect}")
        self._pool, self.info = pool, info
        log.info(
            "analysis process up in %.1f s: %s, %s, %d torch thread(s)",
            time.perf_counter() - t,
            self.info[1],
            self.info[2],
            self.spec.threads,
        )

    async def run(self, jobs: list[WindowJob]) -> list[WindowResult]:
        """Analyse one batch in the child. Without a live child (it died, or its replacement is
        still starting) raise ``WorkerUnavailableError`` at once, so the caller judges the batch
        another way instead of waiting seconds for a process to start."""
        if self._pool is None:
            self._restart()
            raise WorkerUnavailableError("the analysis process is restarting")
        loop = asyncio.get_running_loop()
        t = time.perf_counter()
        pool = self._pool
        try:
            results, busy = await loop.run_in_executor(pool, _analyse, jobs)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # the caller itself is being cancelled
            # The pool was shut down under this batch (another lane killed a hung child): the
            # batch is unjudged, not the lane's end.
            raise WorkerUnavailableError("the analysis process was stopped during the batch") from None
        except BrokenProcessPool:
            if self._pool is pool:  # the first batch to learn of this death handles it (two lanes)
                self.restarts += 1
                log.error("the analysis process died; starting a new one (restart %d)", self.restarts)
                self.close(kill=True)
                self._restart()
            raise WorkerUnavailableError("the analysis process died") from None
        self.busy_s += busy
        self.round_trip_s += time.perf_counter() - t
        return results

    def _restart(self) -> None:
        if self._restart_task is None or self._restart_task.done():
            self._restart_task = asyncio.create_task(self._restart_loop(), name="analysis-process-restart")

    async def _restart_loop(self) -> None:
        while self._pool is None:
            try:
                await self._start()
            except Exception as exc:
                log.error("the analysis process did not start (%s); retrying in %.0f s", exc, RETRY_S)
                await asyncio.sleep(RETRY_S)


def _stop(pool: ProcessPoolExecutor, *, kill: bool) -> None:
    procs = list(getattr(pool, "_processes", {}).values())  # the pool offers no kill of its own
    if kill:
        for p in procs:
            p.kill()
    pool.shutdown(wait=not kill, cancel_futures=True)
