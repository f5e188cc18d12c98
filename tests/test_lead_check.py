"""The two-lead check against artefact VT: a steady slow rhythm on one lead sets a VTACH call aside;
real VT on both leads, and a short wide run inside sinus rhythm, are left alone."""

from __future__ import annotations

import numpy as np

from classifier.constants import MODEL_FS
from classifier.lead_check import contradicts_vt, ordinary_beats

FS = MODEL_FS
N = int(10 * FS)


def _beats(times_s: list[float], width_s: float, amp: float = 1.2) -> np.ndarray:
    """A lead with a triangular complex of ``width_s`` at each time."""
    x = np.random.default_rng(0).normal(0.0, 0.02, N)
    w = max(3, int(width_s * FS))
    tri = np.concatenate([np.linspace(0, amp, w // 2, endpoint=False), np.linspace(amp, 0, w - w // 2)])
    for t in times_s:
        i = int(t * FS)
        if i + w < N:
            x[i : i + w] += tri
    return x


def _regular(rate_bpm: float, width_s: float, start: float = 0.3) -> np.ndarray:
    return _beats(list(np.arange(start, 9.8, 60.0 / rate_bpm)), width_s)


def test_ordinary_narrow_regular_slow_beats_are_recognised() -> None:
    found = ordinary_beats(_regular(72, 0.08), FS)
    assert found is not None
    beats, rate, spread = found
    assert beats >= 10 and abs(rate - 72) < 3 and spread < 0.05


def test_artefact_on_one_lead_with_sinus_on_the_other_contradicts_vt() -> None:
    rng = np.random.default_rng(1)
    artefact = np.sin(2 * np.pi * 3.0 * np.arange(N) / FS) * 1.5 + rng.normal(0, 0.3, N)  # motion, VF-like
    sig = np.vstack([artefact, _regular(80, 0.08)])
    verdict = contradicts_vt(sig, np.array([True, True]), FS)
    assert verdict is not None and verdict.lead == 1
    assert "lead 2 shows a steady rhythm" in verdict.explain() and "80 bpm" in verdict.explain()
    # The lead with the rhythm judged unusable: nothing to go on, the call stands.
    assert contradicts_vt(sig, np.array([True, False]), FS) is None


def test_real_vt_on_both_leads_is_not_contradicted() -> None:
    vt = np.vstack([_regular(170, 0.16), _regular(170, 0.16, start=0.35)])
    assert contradicts_vt(vt, np.array([True, True]), FS) is None


def test_a_short_wide_run_in_sinus_rhythm_is_not_contradicted() -> None:
    sinus = list(np.arange(0.3, 5.0, 0.8))
    run = [5.0, 5.36, 5.72, 6.08]  # four wide beats at 167 bpm
    after = list(np.arange(6.9, 9.8, 0.8))
    x = _beats(sinus + after, 0.08) + _beats(run, 0.16) - np.random.default_rng(0).normal(0.0, 0.02, N)
    sig = np.vstack([x, x * 0.8])
    assert contradicts_vt(sig, np.array([True, True]), FS) is None


def _with_pvc(rate_bpm: float, at_s: float, early_s: float) -> list[float]:
    """Beat times of a regular rhythm where the beat due at ``at_s`` comes ``early_s`` early, then
    the usual compensatory pause (the next beat stays on schedule)."""
    times = list(np.arange(0.3, 9.8, 60.0 / rate_bpm))
    k = int(np.argmin(np.abs(np.array(times) - at_s)))
    times[k] -= early_s
    return times


def test_one_premature_beat_on_both_leads_still_contradicts_vt() -> None:
    # CinC 2015 f829l, a false VF alarm: both leads at 87 bpm, one PVC, the network said VT.
    beats = _with_pvc(87, 6.0, 0.2)
    sig = np.vstack([_beats(beats, 0.12), _beats(beats, 0.12, amp=0.8)])
    assert ordinary_beats(sig[0], FS) is None  # one lead alone, as before: not steady
    verdict = contradicts_vt(sig, np.array([True, True]), FS)
    assert verdict is not None and verdict.lead == -1
    assert "both leads show a steady rhythm" in verdict.explain() and "one premature beat aside" in verdict.explain()


def test_a_steady_lead_beside_a_fibrillating_one_needs_no_premature_beat() -> None:
    # A pacemaker firing through VT (vfdb/602): one lead steady but for one early 'beat', the
    # other fibrillating. The premature beat is forgiven only when both leads agree.
    rng = np.random.default_rng(2)
    vf = np.sin(2 * np.pi * 4.5 * np.arange(N) / FS) * 1.2 + rng.normal(0, 0.2, N)
    sig = np.vstack([_beats(_with_pvc(60, 5.0, 0.4), 0.08), vf])
    assert contradicts_vt(sig, np.array([True, True]), FS) is None


def test_two_premature_beats_in_a_row_are_a_run_not_a_rhythm() -> None:
    times = list(np.arange(0.3, 9.8, 0.7))
    times[7] -= 0.25
    times[8] -= 0.35  # two early beats in a row (a couplet), then the pause
    sig = np.vstack([_beats(times, 0.12), _beats(times, 0.12, amp=0.8)])
    assert contradicts_vt(sig, np.array([True, True]), FS) is None


def test_fast_narrow_rhythm_is_not_ordinary() -> None:
    """A narrow tachycardia at 130 bpm is not evidence against VT by this check (rate >= 100)."""
    assert ordinary_beats(_regular(130, 0.08), FS) is None


def test_too_few_beats_say_nothing() -> None:
    assert ordinary_beats(_beats([1.0, 2.0, 3.0, 4.0], 0.08), FS) is None


def test_the_shipped_classifier_sets_aside_vt_seen_on_one_lead_only() -> None:
    """End to end with the real network: wide fast complexes on both leads are VTACH; the same on
    lead 1 with a steady 75 bpm rhythm on lead 2 (artefact on one lead) is not."""
    from classifier.inference import MLECGClassifier

    clf = MLECGClassifier(precision="float32")
    vt1, vt2, sinus = _regular(180, 0.16), _regular(180, 0.16, start=0.33), _regular(75, 0.08)
    both, one = clf.classify_model_rate_batch(
        [(np.vstack([vt1, vt2]), np.array([True, True])), (np.vstack([vt1, sinus]), np.array([True, True]))]
    )
    assert clf.source == "ml", clf.load_error  # the shipped weights load
    assert both.event == "VTACH"
    assert one.event != "VTACH" and "VTACH from the model set aside: lead 2 shows a steady rhythm" in one.explanation
