"""Rule-based classifier: QRS detection plus R-R and QRS-width rules.

It is the fallback when no model loads and the baseline in every evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from classifier.constants import MODEL_FS, PAUSE_THRESHOLD_S
from classifier.features import RhythmFeatures, rhythm_features
from classifier.preprocess import lead_is_flat, to_model_rate
from classifier.qrs import detect_qrs
from classifier.result import Classification


@dataclass(frozen=True, slots=True)
class RuleThresholds:
    """Decision thresholds. Chosen on training records only (see classifier/training/evaluate.py)."""

    pause_s: float = PAUSE_THRESHOLD_S
    af_irregularity: float = 0.12
    af_min_beats: int = 8
    vt_rate_bpm: float = 100.0
    vt_qrs_ms: float = 120.0
    vt_min_run: int = 4
    vf_rate_bpm: float = 180.0


def _wide_fast_run(feat: RhythmFeatures, th: RuleThresholds) -> tuple[int, int] | None:
    """Longest run (first beat, length) of consecutive wide beats at a ventricular-tachycardia rate."""
    if feat.n_beats < th.vt_min_run:
        return None
    wide = feat.qrs_ms[1:] >= th.vt_qrs_ms
    fast = 60.0 / np.maximum(feat.rr_s, 1e-3) >= th.vt_rate_bpm
    ok = wide & fast  # beat i+1 is wide and arrived fast after beat i
    best: tuple[int, int] | None = None
    run = 0
    for i, v in enumerate(ok.tolist()):
        run = run + 1 if v else 0
        if run and (best is None or run > best[1]):
            best = (i + 1 - run + 1, run)
    if best is not None and best[1] >= th.vt_min_run:
        return best
    return None


class RuleBasedClassifier:
    """Classify a window from QRS detection alone; explanations carry the numbers behind them."""

    source = "rules"

    def __init__(self, thresholds: RuleThresholds | None = None) -> None:
        self.th = thresholds or RuleThresholds()

    def classify(
        self,
        ch1: NDArray[np.floating],
        ch2: NDArray[np.floating] | None = None,
        fs: float = 250.0,
        hint_index: int | None = None,
    ) -> Classification:
        sig, usable = to_model_rate(ch1, ch2, fs)
        return self.classify_model_rate(sig, usable, fs)

    def classify_model_rate(
        self,
        sig: NDArray[np.float64],
        usable: NDArray[np.bool_],
        fs_in: float,
        beats: NDArray[np.int64] | None = None,
    ) -> Classification:
        """Classify a (2, n) signal already at MODEL_FS; indices are reported at ``fs_in``.

        ``beats``, when given, are the QRS positions on the first usable lead, already found.
        """
        th = self.th
        scale = fs_in / MODEL_FS
        if not usable.any():
            return Classification(
                "NORMAL", 0.0, None, "no usable lead (flat or missing): rhythm not judged", self.source
            )
        lead = int(np.flatnonzero(usable)[0])
        x = sig[lead]
        if beats is None:
            beats = detect_qrs(x, MODEL_FS)
        feat = rhythm_features(x, beats, MODEL_FS)
        hr = feat.heart_rate_bpm if feat.n_beats >= 2 else float("nan")
        width = float(np.median(feat.qrs_ms)) if feat.qrs_ms.size else 0.0
        summary = f"R-R irregularity {feat.irregularity:.2f}, {hr:.0f} bpm, QRS {width:.0f} ms, {feat.n_beats} beats"

        # VT first, as the network's decision ranks it: a VT that follows a pause (pause-dependent
        # torsades) must not be reported as the pause alone.
        run = _wide_fast_run(feat, th)
        if run is not None or (hr >= th.vf_rate_bpm and width >= th.vt_qrs_ms):
            if run is not None:
                # The run's own rate and width, not the window's: they are what met the criteria.
                first, length = run
                run_rate = 60.0 / float(np.median(feat.rr_s[first - 1 : first - 1 + length]))
                run_qrs = float(np.median(feat.qrs_ms[first : first + length]))
                start = int(beats[first])
                what = (
                    f"run of {length} wide beats at {run_rate:.0f} bpm (>= {th.vt_rate_bpm:.0f}), QRS {run_qrs:.0f} ms"
                )
            else:
                length, start = feat.n_beats, int(beats[0])
                what = f"{length} beats at {hr:.0f} bpm (>= {th.vf_rate_bpm:.0f}), QRS {width:.0f} ms"
            conf = float(min(0.99, 0.55 + 0.05 * length))
            return Classification(
                "VTACH",
                conf,
                round(start * scale),
                f"{what} >= {th.vt_qrs_ms:.0f} ms; window: {summary}",
                self.source,
                hr,
            )
        # PAUSE: the longest gap inside, before the first beat, or after the last one.
        n = x.size
        head = (int(beats[0]) / MODEL_FS) if feat.n_beats else n / MODEL_FS
        gaps = [(feat.max_rr_s, feat.max_rr_start), (feat.tail_gap_s, int(beats[-1]) if feat.n_beats else 0), (head, 0)]
        gap_s, gap_at = max(gaps, key=lambda g: g[0])
        if gap_s >= th.pause_s:
            # The newest 2 s of the gap, clear of the last beat's T wave and of the next beat.
            hi = int(gap_at + (gap_s - 0.2) * MODEL_FS)
            lo = max(int(gap_at + 0.6 * MODEL_FS) if gap_at else 0, hi - int(2 * MODEL_FS))
            if hi - lo >= MODEL_FS and lead_is_flat(x[lo:hi]):
                # A flat line is a lead coming off far more often than an asystole.
                return Classification(
                    "NORMAL", 0.0, None, f"lead flat for {gap_s:.1f} s: lead off, rhythm not judged", self.source, hr
                )
            conf = float(min(0.99, 0.6 + 0.1 * (gap_s - th.pause_s)))
            return Classification(
                "PAUSE",
                conf,
                round(gap_at * scale),
                f"R-R gap {gap_s:.1f} s >= {th.pause_s:.1f} s; {summary}",
                self.source,
                hr,
            )

        if feat.n_beats >= th.af_min_beats and feat.irregularity >= th.af_irregularity:
            conf = float(min(0.95, 0.5 + (feat.irregularity - th.af_irregularity) * 2))
            return Classification(
                "AF",
                conf,
                round(int(beats[0]) * scale),
                f"irregular R-R, irregularity {feat.irregularity:.2f} >= {th.af_irregularity:.2f}; {summary}",
                self.source,
                hr,
            )
        return Classification("NORMAL", 0.8, None, summary, self.source, hr)

    def classify_and_detect(
        self,
        ch1: NDArray[np.floating],
        ch2: NDArray[np.floating] | None = None,
        hint_index: int | None = None,
        fs: float = 250.0,
    ) -> tuple[str, float, int | None, str]:
        return self.classify(ch1, ch2, fs, hint_index).as_tuple()
