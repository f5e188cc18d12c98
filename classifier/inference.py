"""Model inference with the rules as fallback. Imports torch, never the training code."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import math
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from classifier.af import AfRhythmModel, AfVerdict
from classifier.atrial import atrial_features
from classifier.constants import CLASSES, EVENT_PRIORITY, MIN_WINDOW_S, MODEL_FS, SEGMENT_LEN, SEGMENT_S, EventType
from classifier.decision import decide
from classifier.lead_check import contradicts_vt
from classifier.preprocess import check_leads, fit_length, lead_is_flat, normalize_batch, segment_starts, to_model_rate
from classifier.qrs import detect_qrs
from classifier.result import Classification
from classifier.rules import RuleBasedClassifier, RuleThresholds

log = logging.getLogger(__name__)

MODEL_ENV = "ECG_MONITOR_MODEL"
CARD_NAME = "model_card.json"
#: The model card's key for the SHA-256 (hex) of the weights file next to it.
DIGEST_KEY = "weights_sha256"
#: ... and of the R-R AF detector (models/af_rr.json).
AF_DIGEST_KEY = "af_rr_sha256"
PRECISIONS = ("float32", "bfloat16", "auto")
#: Hop between model segments when a long window is scanned (model samples): 5 s.
SCAN_HOP = SEGMENT_LEN // 2


class ModelIntegrityError(ValueError):
    """The weights do not match their card's digest, or there is no digest to check them against."""


class ModelUnavailableError(RuntimeError):
    """The model is required (``require_model``) but did not load or was refused."""


def sha256_hex(data: bytes) -> str:
    """The digest recorded in the model card (``weights_sha256``): SHA-256 of the file's bytes."""
    return hashlib.sha256(data).hexdigest()


def verify_weights(data: bytes, card: dict[str, Any] | None) -> str:
    """Return the digest of ``data`` if the card vouches for it; else raise ModelIntegrityError.

    Checked before ``torch.load`` so a swapped, truncated or corrupted file never reaches it.
    The messages name both digests (12 hex chars), never a path: they end up in explanations.
    """
    actual = sha256_hex(data)
    if card is None:
        raise ModelIntegrityError(f"no {CARD_NAME} beside the weights to verify them (SHA-256 {actual[:12]})")
    expected = card.get(DIGEST_KEY)
    if not isinstance(expected, str) or not expected.strip():
        raise ModelIntegrityError(f"{CARD_NAME} has no {DIGEST_KEY} to verify the weights (SHA-256 {actual[:12]})")
    expected = expected.strip().lower()
    if actual != expected:
        raise ModelIntegrityError(
            f"weights SHA-256 {actual[:12]} does not match {DIGEST_KEY} {expected[:12]} in {CARD_NAME}"
        )
    return actual


def default_model_path() -> Path:
    """``$ECG_MONITOR_MODEL`` if set, else the weights shipped in the ``models`` package."""
    env = os.environ.get(MODEL_ENV)
    if env:
        return Path(env)
    from models import DEFAULT_WEIGHTS

    return DEFAULT_WEIGHTS


class MLECGClassifier:
    """The product's classifier: the trained network, or the rules when no model loads.

    Thread-safe: the daemon calls it from an executor thread.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        threads: int | None = None,
        precision: str = "float32",
        rule_thresholds: RuleThresholds | None = None,
        af_model_path: str | Path | None = None,
    ) -> None:
        """``precision``: "float32", "bfloat16" (CPU autocast; its agreement with float32 on
        validation windows is measured in reports/bench.md) or "auto" (whichever runs faster here).
        ``rule_thresholds``: for the rules run beside the network (the daemon passes its pause
        threshold, so one threshold holds everywhere a pause is judged). ``af_model_path``: the
        R-R AF detector (default ``models/af_rr.json``); AF is decided from the rhythm when it loads.
        """
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}")
        self.precision = "float32"
        self.rules = RuleBasedClassifier(rule_thresholds)
        self.af_model = _load_af_model(af_model_path)
        self.model_path = Path(model_path) if model_path is not None else default_model_path()
        self.card: dict[str, Any] = {}
        self.version = "rules"
        self.load_error: str | None = None
        #: Why the weights were refused by the integrity check (also in ``load_error``); None if not.
        self.integrity_error: str | None = None
        #: The verified SHA-256 of the weights in use; None when the rules are in use.
        self.weights_sha256: str | None = None
        self.thresholds: dict[str, float] = {}
        self._lock = threading.Lock()
        self._model: Any = None
        self._torch: Any = None
        try:
            self._load(threads)
            self.precision = self._choose_precision(precision)
        except ModelIntegrityError as exc:  # possibly tampered with: loud, and never loaded
            self.load_error = self.integrity_error = str(exc)
            log.error("model %s refused: %s; using the rule-based classifier", self.model_path, exc)
        except Exception as exc:  # any broken or missing model means fallback, never a crash
            self.load_error = f"{type(exc).__name__}: {exc}"
            log.warning("model %s not loaded (%s); using the rule-based classifier", self.model_path, self.load_error)

    @property
    def source(self) -> str:
        return "ml" if self._model is not None else "rules"

    def _load(self, threads: int | None) -> None:
        import torch

        from classifier.model import ECGNet

        if threads:
            torch.set_num_threads(threads)
        # Read once: the bytes verified are the bytes loaded (no swap between check and load).
        data = self.model_path.read_bytes()
        card_path = self.model_path.with_name(CARD_NAME)
        card: dict[str, Any] | None = json.loads(card_path.read_text()) if card_path.exists() else None
        digest = verify_weights(data, card)
        assert card is not None  # verify_weights refuses weights without a card
        if card.get("classes", list(CLASSES)) != list(CLASSES):
            raise ValueError(f"model classes {card.get('classes')} differ from {list(CLASSES)}")
        shape = card.get("input", {})
        if (shape.get("fs_hz", MODEL_FS), shape.get("segment_s", SEGMENT_S)) != (MODEL_FS, SEGMENT_S):
            # Weights trained on another rate or segment length would load and silently misjudge.
            raise ValueError(
                f"model input {shape.get('fs_hz')} Hz x {shape.get('segment_s')} s differs from "
                f"{MODEL_FS} Hz x {SEGMENT_S} s"
            )
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        model = ECGNet()
        model.load_state_dict(state)
        model.eval()
        self._model = model
        self._torch = torch
        self.card = card
        self.weights_sha256 = digest
        self.version = str(self.card.get("version", self.model_path.name))
        self.thresholds = {k: float(v) for k, v in self.card.get("thresholds", {}).items()}

    def _choose_precision(self, wanted: str) -> str:
        if wanted != "auto":
            return wanted
        torch = self._torch
        x = torch.zeros(32, 3, SEGMENT_LEN)
        timing = {"float32": float("inf"), "bfloat16": float("inf")}
        for name in timing:
            self.precision = name
            self.predict_segments(x.numpy())  # warm up
        for _ in range(3):  # interleaved, best of three: one busy moment on the machine must not decide
            for name in timing:
                self.precision = name
                t = time.perf_counter()
                self.predict_segments(x.numpy())
                timing[name] = min(timing[name], time.perf_counter() - t)
        best = min(timing, key=timing.__getitem__)
        log.info("inference precision %s (batch of 32: %s)", best, {k: f"{v * 1000:.0f} ms" for k, v in timing.items()})
        return best

    # -- batched core -------------------------------------------------------------------

    def predict_segments(self, segments: NDArray[np.float32]) -> NDArray[np.float64]:
        """Class probabilities for normalised segments (n, 2, SEGMENT_LEN), in one forward pass."""
        if self._model is None:
            raise RuntimeError("no model loaded")
        torch = self._torch
        x = torch.from_numpy(np.ascontiguousarray(segments, dtype=np.float32))
        with (
            self._lock,
            torch.inference_mode(),
            torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.precision == "bfloat16"),
        ):
            logits = self._model(x).float()
            probs: NDArray[np.float64] = torch.softmax(logits, dim=1).double().numpy()
        return probs

    def classify_batch(
        self, windows: Sequence[tuple[NDArray[np.floating], NDArray[np.floating] | None, float, int | None]]
    ) -> list[Classification]:
        """Classify many (ch1, ch2, fs, hint_index) windows with one forward pass over all segments."""
        return self._run([self._prepare(ch1, ch2, fs, hint) for ch1, ch2, fs, hint in windows])

    def _run(self, prepared: list[dict[str, Any]]) -> list[Classification]:
        """Normalise every segment of every window together, then one forward pass."""
        raw = [seg for p in prepared for seg in p["raw"]]
        ok = [p["usable"] for p in prepared for _ in p["raw"]]
        if raw:
            x, beats = normalize_batch(np.stack(raw), np.stack(ok))
        else:
            x, beats = np.zeros((0, 3, SEGMENT_LEN), dtype=np.float32), []
        if self._model is None:
            probs = None
        else:
            probs = self.predict_segments(x) if len(x) else np.zeros((0, len(CLASSES)))
        out: list[Classification] = []
        k = 0
        for p in prepared:
            n = len(p["raw"])
            # A one-segment window (the daemon's case) reuses the segment's beats for the rules,
            # and its filtered leads for the atrial evidence.
            one = n == 1 and p["sig"].shape[1] == SEGMENT_LEN
            win_beats = beats[k] if one else None
            rules = self.rules.classify_model_rate(p["sig"], p["usable"], p["fs"], win_beats)
            if probs is None:
                out.append(self._rules_fallback(rules))
            else:
                af = self._af_verdict(p, win_beats, x[k, :2] if one else None)
                out.append(self._decide(p, probs[k : k + n], rules, af))
            k += n
        return out

    def classify(
        self,
        ch1: NDArray[np.floating],
        ch2: NDArray[np.floating] | None = None,
        fs: float = 250.0,
        hint_index: int | None = None,
    ) -> Classification:
        return self.classify_batch([(ch1, ch2, fs, hint_index)])[0]

    def classify_and_detect(
        self,
        ch1: NDArray[np.floating],
        ch2: NDArray[np.floating] | None = None,
        hint_index: int | None = None,
        fs: float = 250.0,
    ) -> tuple[EventType, float, int | None, str]:
        """(event_type, confidence, event_index in input samples, explanation)."""
        return self.classify(ch1, ch2, fs, hint_index).as_tuple()

    # -- steps --------------------------------------------------------------------------

    def _prepare(
        self, ch1: NDArray[np.floating], ch2: NDArray[np.floating] | None, fs: float, hint: int | None
    ) -> dict[str, Any]:
        n_in = check_leads(ch1, ch2, fs)[0].size  # clear errors before any length arithmetic
        if n_in < MIN_WINDOW_S * fs - 1:
            raise ValueError(f"window of {n_in / fs:.1f} s is shorter than the {MIN_WINDOW_S:.0f} s minimum")
        sig, usable = to_model_rate(ch1, ch2, fs)
        h = int(hint * MODEL_FS / fs) if hint is not None and 0 <= hint < n_in else None
        return self._segments(sig, usable, fs, h)

    def _segments(
        self,
        sig: NDArray[np.float64],
        usable: NDArray[np.bool_],
        fs: float,
        hint: int | None = None,
        rhythm: NDArray[np.floating] | None = None,
    ) -> dict[str, Any]:
        """Cut a model-rate signal into raw segments (hop 5 s, last one flush with the end).

        ``rhythm``: a longer stretch ending where ``sig`` ends, read only for the R-R intervals
        that decide AF (the daemon classifies 10 s but keeps 90 s).
        """
        n = sig.shape[1]
        starts = segment_starts(n, SCAN_HOP)
        if hint is not None:
            # Make sure one segment starts just before the flagged spot (2 s of context).
            starts = sorted({*starts, int(np.clip(hint - 2 * MODEL_FS, 0, max(0, n - SEGMENT_LEN)))})
        raw = [fit_length(sig[:, a : a + SEGMENT_LEN]) for a in starts] if usable.any() else []
        return {"sig": sig, "usable": usable, "fs": fs, "starts": starts, "raw": raw, "rhythm": rhythm}

    def classify_model_rate_batch(
        self,
        items: Sequence[tuple[NDArray[np.float64], NDArray[np.bool_]]],
        rhythm: Sequence[NDArray[np.floating] | None] | None = None,
    ) -> list[Classification]:
        """Classify (2, n) signals already at MODEL_FS (the daemon's buffers) in one batch.

        ``rhythm[i]``, when given, is a longer stretch ending with ``items[i]`` for the AF decision.
        """
        contexts = rhythm if rhythm is not None else [None] * len(items)
        return self._run(
            [self._segments(sig, ok, MODEL_FS, rhythm=ctx) for (sig, ok), ctx in zip(items, contexts, strict=True)]
        )

    def _af_verdict(
        self, p: dict[str, Any], beats: NDArray[np.int64] | None = None, filtered: NDArray[np.floating] | None = None
    ) -> AfVerdict | None:
        """AF from the R-R intervals of the window (or its longer rhythm context) and the atrial
        evidence before those beats. ``beats`` and ``filtered`` (the model's band-passed input
        leads): the window's, when already at hand (the daemon's one-segment windows)."""
        if self.af_model is None:
            return None
        if beats is not None and filtered is not None and p["rhythm"] is None:
            # The beats were found on the first lead the batch filter kept (it zeroes the others).
            for lead in filtered:
                if lead.any():
                    atrial = atrial_features(lead, beats, MODEL_FS, filtered=True)
                    return self.af_model.judge(np.diff(beats) / MODEL_FS, lead.size / MODEL_FS, atrial)
            return None
        sig = p["rhythm"] if p["rhythm"] is not None else p["sig"]
        for lead, ok in zip(sig, p["usable"], strict=False):
            x = np.asarray(lead, dtype=np.float64)
            if ok and np.isfinite(x).mean() > 0.5 and not lead_is_flat(np.nan_to_num(x)):
                beats = detect_qrs(x, MODEL_FS)
                return self.af_model.judge(
                    np.diff(beats) / MODEL_FS, x.size / MODEL_FS, atrial_features(x, beats, MODEL_FS)
                )
        return None

    def _rules_fallback(self, c: Classification) -> Classification:
        why = f"rule-based fallback (model not loaded: {self.load_error}); " if self.load_error else ""
        return Classification(c.event, c.confidence, c.event_index, why + c.explanation, "rules", c.heart_rate_bpm)

    def _decide(
        self, p: dict[str, Any], probs: NDArray[np.float64], rules: Classification, af: AfVerdict | None = None
    ) -> Classification:
        """The window's event: VTACH and PAUSE from the network (highest priority first); AF from
        the rhythm when the R-R detector could judge (the network's AF segments are then reported,
        not counted: on sources it never saw, the rhythm found AF far more often, see
        reports/af_rr.md), else from the network's segments."""
        if not len(probs):
            return Classification(
                "NORMAL", 0.0, None, "no usable lead: " + rules.explanation, "ml", rules.heart_rate_bpm
            )
        calls = decide(probs, self.thresholds)
        starts: list[int] = p["starts"]
        scale = p["fs"] / MODEL_FS
        found: list[tuple[int, str, float, int, int]] = []
        for ci, cls in enumerate(CLASSES):
            if cls == "NORMAL" or (cls == "AF" and af is not None):
                continue
            hits = np.flatnonzero(calls == ci)
            # AF must persist: a third of the scanned segments (at least one).
            need = max(1, math.ceil(len(starts) / 3)) if cls == "AF" else 1
            if hits.size >= need:
                found.append((EVENT_PRIORITY[cls], cls, float(probs[hits, ci].max()), int(hits[0]), int(hits.size)))
        rhythm = ""
        if af is not None:
            rhythm = f"rhythm: {'AF' if af.af else 'not AF'} ({af.explanation}); "
            if af.af:
                found.append((EVENT_PRIORITY["AF"], "AF", af.probability, 0, len(starts)))
        if any(f[1] == "VTACH" for f in found):
            ordinary = contradicts_vt(p["sig"], p["usable"], MODEL_FS)
            if ordinary is not None:  # artefact, not VT: another lead shows the patient's own rhythm
                found = [f for f in found if f[1] != "VTACH"]
                rhythm += f"VTACH from the model set aside: {ordinary.explain()}; "
        if not found:
            conf = float(probs[:, 0].min())
            # Say so when some segments did call an event that failed the persistence rule.
            votes = [
                f"{cls} in {int((calls == ci).sum())} of {len(starts)} segments, "
                + (
                    "AF is judged from the rhythm"
                    if cls == "AF" and af is not None
                    else f"{max(1, math.ceil(len(starts) / 3))} needed"
                )
                for ci, cls in enumerate(CLASSES)
                if cls != "NORMAL" and (calls == ci).any()
            ]
            verdict = f"NORMAL ({'; '.join(votes)})" if votes else f"NORMAL in all {len(starts)} segments"
            return Classification(
                "NORMAL",
                conf,
                None,
                f"{rhythm}model: {verdict} (min p {conf:.2f}); rules: {rules.event} ({rules.explanation})",
                "ml",
                rules.heart_rate_bpm,
            )
        _, name, conf, first, count = max(found)
        event = cast(EventType, name)
        index = starts[first]
        if rules.event == event and rules.event_index is not None:
            # The rules localise beats precisely; keep their index when it falls in the segment.
            r_idx = int(rules.event_index / scale)
            if index <= r_idx < index + SEGMENT_LEN:
                index = r_idx
        if event == "AF" and af is not None:
            network_af = int((calls == CLASSES.index("AF")).sum())
            explanation = (
                f"{rhythm}model: AF in {network_af}/{len(starts)} segments; rules: {rules.event} ({rules.explanation})"
            )
        else:
            explanation = (
                f"{rhythm}model: {event} p={conf:.2f} in {count}/{len(starts)} segments, from "
                f"{index / MODEL_FS:.1f} s into the window; rules: {rules.event} ({rules.explanation})"
            )
        return Classification(event, conf, round(index * scale), explanation, "ml", rules.heart_rate_bpm)


def _load_af_model(path: str | Path | None) -> AfRhythmModel | None:
    """The R-R AF detector, verified like the weights (``af_rr_sha256`` in the model card beside
    it), or None with a log line: AF is then judged by the network's segments."""
    from models import DEFAULT_AF_RR

    target = Path(path) if path is not None else DEFAULT_AF_RR
    try:
        data = target.read_bytes()
        card_path = target.with_name(CARD_NAME)
        card = json.loads(card_path.read_text()) if card_path.exists() else {}
        expected = str(card.get(AF_DIGEST_KEY, "")).strip().lower()
        actual = sha256_hex(data)
        if actual != expected:
            log.error(
                "R-R AF detector %s refused: SHA-256 %s does not match %s %s in %s; AF is judged by the network",
                target, actual[:12], AF_DIGEST_KEY, expected[:12] or "(none)", CARD_NAME,
            )  # fmt: skip
            return None
        return AfRhythmModel.from_bytes(data)
    except (OSError, ValueError, KeyError) as exc:
        log.warning("R-R AF detector %s not loaded (%s); AF is judged by the network alone", target, exc)
        return None
