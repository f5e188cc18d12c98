"""Window analysis in its own worker process: alarms come through it, and a worker that dies is
replaced while the daemon judges the windows itself meanwhile (never silent)."""

from __future__ import annotations

import asyncio
import os
import signal

from monitor.core.analysis import WindowJob
from simulators.synthetic import Episode, PatientSpec
from tests.helpers import running_monitor, wait_for
from tests.test_daemon import _send_patient


def _child_pids(mon: object) -> list[int]:
    proc = mon._process  # type: ignore[attr-defined]
    assert proc is not None, "no analysis process: the daemon fell back to a thread"
    pool = proc._pool
    return [] if pool is None else list(pool._processes)


async def test_alarms_come_through_the_analysis_process_and_survive_its_death() -> None:
    async with running_monitor(inference_process=True) as h:
        mon = h.monitor
        [pid] = _child_pids(mon)
        assert pid != os.getpid()
        assert mon._process is not None and mon._process.info is not None
        assert mon._process.info[0] == "ml" and mon._process.info[1] == mon.model_version
        spec = PatientSpec(75.0, [Episode("VTACH", 25.0, 45.0)])
        await _send_patient(h.ingest, "bed-a", spec, 45.0, speed=10.0)
        assert await wait_for(lambda: h.got("bed-a", "VTACH"), 15.0)
        assert h.got("bed-a", "VTACH")[0].source == "ml"

        os.kill(pid, signal.SIGKILL)  # the worker dies mid-run
        spec2 = PatientSpec(80.0, [Episode("VTACH", 25.0, 45.0)])
        await _send_patient(h.ingest, "bed-b", spec2, 45.0, speed=10.0, seed=3)
        assert await wait_for(lambda: h.got("bed-b", "VTACH"), 20.0), "no alarm after the worker died"
        assert await wait_for(lambda: bool(_child_pids(mon)) and _child_pids(mon)[0] != pid, 30.0)
        assert mon._process.restarts == 1
        assert h.metric("ecg_analysis_process_restarts") == 1
        assert h.metric("ecg_window_errors_total", {"stage": "rules"}) == 0  # every window judged


async def test_process_and_thread_give_the_same_verdicts() -> None:
    """The child builds its classifier from the daemon's settings: same windows, same calls."""
    import numpy as np

    from monitor.core.analysis import analyse

    async with running_monitor(inference_process=True) as h:
        mon = h.monitor
        assert mon._process is not None
        rng = np.random.default_rng(0)
        jobs = [WindowJob(f"b{k}", rng.normal(0, 0.3, (2, 1280)).astype(np.float32), 1000.0) for k in range(8)]
        t = np.arange(1280) / 128.0
        beats = (np.sin(2 * np.pi * 1.2 * t) ** 63).astype(np.float32)
        jobs.append(WindowJob("beats", np.vstack([beats, beats]), 1000.0))
        in_child = await mon._process.run(jobs)
        in_thread = await asyncio.to_thread(analyse, jobs, mon.classifier)
        for a, b in zip(in_child, in_thread, strict=True):
            assert a.quality == b.quality
            assert (a.result is None) == (b.result is None)
            if a.result is not None and b.result is not None:
                assert a.result.event == b.result.event
                assert abs(a.result.confidence - b.result.confidence) < 1e-3


async def test_no_batch_waits_on_a_child_that_is_still_loading() -> None:
    """A batch sent to a replacement child still loading its model was cancelled with it when
    that start failed (a model mismatch, a timeout), and the cancellation ended the inference
    lane without an error. A child is used only once it has passed its check."""
    import numpy as np

    from classifier.rules import RuleThresholds
    from monitor.analysis_worker import AnalysisProcess, ClassifierSpec, WorkerUnavailableError

    proc = AnalysisProcess(ClassifierSpec(None, "float32", RuleThresholds()), expect=("ml", "another-version"))
    proc._restart()  # as after the child died
    await asyncio.sleep(0)  # the restart is under way: a child is spawning and loading
    job = WindowJob("b0", np.zeros((2, 1280), np.float32), 1000.0)
    try:
        # Two lanes, as in the daemon: the pool holds one call beyond the one it runs, so the
        # second batch used to wait in its queue and be cancelled there.
        got = await asyncio.wait_for(asyncio.gather(proc.run([job]), proc.run([job]), return_exceptions=True), 60.0)
        assert [type(g) for g in got] == [WorkerUnavailableError, WorkerUnavailableError], got
    finally:
        await proc.__aexit__(None, None, None)
    assert proc._pool is None
