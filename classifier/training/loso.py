"""The network's leave-one-source-out figures: networks trained without one source, scored on it.

A source the network trained on (other patients of it) flatters it: the same devices, leads,
noise and annotators. A network that never saw a source, scored on that source, is what a new
hospital gets. Each run folder holds one ``ecg-monitor train --sources ...`` output; the source
it left out is read from its model card. Window level, the network alone, each network with the
thresholds it calibrated on its own validation split; beside it, on the left-out source's test
split, the shipped network (trained with that source) and the rules.
Writes ``reports/loso_network.md`` and ``.json``; ``evaluate --sources`` quotes the JSON.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from classifier.constants import CLASSES, SEGMENT_LEN
from classifier.decision import decide
from classifier.inference import MLECGClassifier, default_model_path
from classifier.rules import RuleBasedClassifier
from classifier.training.dataset import index_windows, real_batch
from classifier.training.metrics import confusion, per_class
from classifier.training.records import TRAIN_SOURCES, labels_for, list_records, load_record, split_of

log = logging.getLogger(__name__)

EVENTS = CLASSES[1:]


def held_out_source(card: dict[str, Any]) -> str:
    """The one training source a model card's run left out; a run that left out none or several
    answers no single leave-one-source-out question, so it is refused."""
    trained = set(card.get("training", {}).get("config", {}).get("sources", TRAIN_SOURCES))
    left = [s for s in TRAIN_SOURCES if s not in trained]
    if len(left) != 1:
        raise ValueError(f"a leave-one-source-out run leaves out exactly one of {TRAIN_SOURCES}, not {left}")
    return left[0]


def _finite(v: float) -> float | None:
    """NaN (no such windows, or none called) as None, so that the JSON stays standard."""
    return None if v != v else v


def score(pred: NDArray[np.integer], y: NDArray[np.integer]) -> dict[str, Any]:
    """Per-event Se/PPV and the share of NORMAL windows called any event."""
    stats = per_class(confusion(y, pred))
    normal = y == 0
    return {
        "windows": len(y),
        "events": {c: {k: _finite(stats[c][k]) for k in ("n", "called", "tp", "sens", "ppv", "f1")} for c in EVENTS},
        "normal_windows": int(normal.sum()),
        "normal_called_event": int((pred[normal] != 0).sum()),
    }


def _probs(clf: MLECGClassifier, x: NDArray[np.float32]) -> NDArray[np.float64]:
    if clf.source != "ml":
        raise FileNotFoundError(f"model {clf.model_path} did not load: {clf.load_error}")
    out = [clf.predict_segments(x[i : i + 256]) for i in range(0, len(x), 256)]
    return np.concatenate(out) if out else np.zeros((0, len(CLASSES)))


def run(runs_dir: Path, report: Path, data: Path | None = None, shipped: Path | None = None) -> dict[str, Any]:
    """Score every run folder under ``runs_dir`` on the source it left out; write the report."""
    runs = sorted(p.parent for p in runs_dir.glob("*/ecgnet.pt"))
    if not runs:
        raise FileNotFoundError(f"no run folders with ecgnet.pt under {runs_dir}")
    shipped_clf = MLECGClassifier(shipped or default_model_path())
    rules = RuleBasedClassifier()
    out: dict[str, Any] = {"shipped": shipped_clf.version, "sources": {}}
    for folder in runs:
        card = json.loads((folder / "model_card.json").read_text())
        src = held_out_source(card)
        if src in out["sources"]:
            raise ValueError(f"two runs leave out {src}: {folder}")
        names = list_records(data, (src,))
        if not names:
            raise FileNotFoundError(f"no {src} records under the data folder")
        labels = labels_for(names, data)
        recs = [load_record(n, data, labels=labels) for n in names]
        idx = index_windows(recs)
        x = real_batch(recs, idx, np.arange(len(idx)))
        y = idx.label
        test = np.array([split_of(names[int(r)]) == "test" for r in idx.rec], dtype=bool)
        clf = MLECGClassifier(folder / "ecgnet.pt")
        loso_pred = decide(_probs(clf, x), clf.thresholds)
        shipped_pred = decide(_probs(shipped_clf, x[test]), shipped_clf.thresholds)
        rules_pred = np.zeros(int(test.sum()), dtype=np.int64)
        for j, i in enumerate(np.flatnonzero(test)):
            seg = recs[int(idx.rec[i])].signal[:, idx.start[i] : idx.start[i] + SEGMENT_LEN].astype(np.float64)
            rules_pred[j] = CLASSES.index(rules.classify(seg[0], seg[1], 128.0).event)
        training = card["training"]
        out["sources"][src] = {
            "model": card["version"],
            "weights_sha256": clf.weights_sha256,
            "command": training.get("command"),
            "best_epoch": training.get("best_epoch"),
            "epochs_run": len(training.get("history", [])),
            "records": len(names),
            "whole": {"loso": score(loso_pred, y)},
            "test": {
                "records": sum(split_of(n) == "test" for n in names),
                "loso": score(loso_pred[test], y[test]),
                "shipped": score(shipped_pred, y[test]),
                "rules": score(rules_pred, y[test]),
            },
        }
        log.info("%s: scored %d windows (%d test)", src, len(y), int(test.sum()))
    report.parent.mkdir(parents=True, exist_ok=True)
    report.with_suffix(".json").write_text(json.dumps(out, indent=2, allow_nan=False) + "\n")
    report.write_text("\n".join(markdown(out)) + "\n")
    return out


def _pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.1f}%"


def cell(s: dict[str, Any], event: str) -> str:
    """'Se / PPV (n)' of one event, or the NORMAL windows called an event."""
    if event == "NORMAL":
        n = s["normal_windows"]
        return f"{_pct(s['normal_called_event'] / n if n else None)} ({s['normal_called_event']}/{n})"
    e = s["events"][event]
    return "–" if not e["n"] else f"{_pct(e['sens'])} / {_pct(e['ppv'])} ({e['n']})"


def table(out: dict[str, Any]) -> list[str]:
    """One row per left-out source: the left-out network on the whole source and on its test
    split, beside the shipped network and the rules on that split."""
    L = [
        "| left out | scored on | classifier | NORMAL windows called an event | AF Se / PPV (windows) "
        "| VTACH Se / PPV | PAUSE Se / PPV |",
        "|---|---|---|---|---|---|---|",
    ]
    for src, r in out["sources"].items():
        rows = [
            (f"whole source ({r['records']} records)", "network without it", r["whole"]["loso"]),
            (f"test split ({r['test']['records']} records)", "network without it", r["test"]["loso"]),
            ("test split", "shipped network (trained with it)", r["test"]["shipped"]),
            ("test split", "rules", r["test"]["rules"]),
        ]
        for scope, who, s in rows:
            L.append(f"| {src} | {scope} | {who} | " + " | ".join(cell(s, e) for e in CLASSES) + " |")
    return L


def markdown(out: dict[str, Any]) -> list[str]:
    L = [
        "# The network, leave one source out",
        "",
        __doc__.split("\n\n")[1].replace("\n", " ").replace("``", "`") if __doc__ else "",
        "",
        f"Shipped network: `{out['shipped']}`. Every 10 s window of each source that "
        "`labels.label_window` labels (non-overlapping; ambiguous windows left out), "
        "one call per window, no alarm logic. AF here is the network's own AF call; the shipped "
        "classifier decides AF from the rhythm instead (reports/af_rr.md has that detector's "
        "leave-one-source-out figures).",
        "",
        *table(out),
        "",
        "Runs:",
        "",
    ]
    for src, r in out["sources"].items():
        L.append(
            f"- without {src}: `{r['model']}` (weights SHA-256 {str(r['weights_sha256'])[:12]}), "
            f"best epoch {r['best_epoch']} of {r['epochs_run']} run; `{r['command']}`"
        )
    return L
