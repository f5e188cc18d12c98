"""Honest evaluation on record-held-out windows: the model beside the rules, and the QRS
detector beside wfdb's XQRS. Writes ``reports/evaluation.md`` and PNG figures.

Every figure comes from real, unaugmented 10 s windows of records the model never trained on.
"""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from classifier.constants import CLASSES, SEGMENT_LEN
from classifier.decision import calibrate, decide
from classifier.inference import MLECGClassifier, default_model_path
from classifier.qrs import detect_qrs, match_beats
from classifier.rules import RuleBasedClassifier
from classifier.training.dataset import index_windows, real_batch
from classifier.training.labels import BEAT_SYMBOLS
from classifier.training.metrics import confusion, per_class
from classifier.training.records import data_dir, list_records, load_record, split_of

log = logging.getLogger(__name__)


def _records(split: str, data: Path | None) -> list[str]:
    names = [n for n in list_records(data) if split_of(n) == split]
    if not names:
        raise FileNotFoundError(f"no {split} records under {data or data_dir()}")
    return names


def predict_split(
    split: str, data: Path | None = None, model_path: str | Path | None = None, with_rules: bool = True
) -> dict[str, Any]:
    """Model probabilities and rule calls for every labelled window of a split."""
    names = _records(split, data)
    recs = [load_record(n, data) for n in names]
    idx = index_windows(recs)
    x = real_batch(recs, idx, np.arange(len(idx)))
    clf = MLECGClassifier(model_path)
    if clf.source != "ml":
        raise FileNotFoundError(f"model {clf.model_path} did not load: {clf.load_error}")
    probs = np.concatenate([clf.predict_segments(x[i : i + 256]) for i in range(0, len(x), 256)])
    rules_pred = np.zeros(len(idx), dtype=np.int64)
    if with_rules:
        rules = RuleBasedClassifier()
        for i in range(len(idx)):
            seg = recs[int(idx.rec[i])].signal[:, idx.start[i] : idx.start[i] + SEGMENT_LEN].astype(np.float64)
            rules_pred[i] = CLASSES.index(rules.classify(seg[0], seg[1], 128.0).event)
    return {"names": names, "idx": idx, "probs": probs, "rules": rules_pred, "clf": clf}


def evaluate_windows(
    split: str = "test", data: Path | None = None, model_path: str | Path | None = None
) -> dict[str, Any]:
    """Per-class figures of the model and the rules on one split (used by the floor test)."""
    p = predict_split(split, data, model_path)
    idx = p["idx"]
    y = idx.label
    model_pred = decide(p["probs"], p["clf"].thresholds)
    out: dict[str, Any] = {"records": p["names"], "windows": idx.counts(), "skipped": dict(idx.skipped)}
    for name, pred in (("model", model_pred), ("rules", p["rules"])):
        m = confusion(y, pred)
        stats = per_class(m)
        for c, i in zip(CLASSES, range(len(CLASSES)), strict=True):
            stats[c]["records"] = len({int(r) for r in idx.rec[y == i]})
        out[name] = stats
        out[name + "_confusion"] = m.tolist()
        normal = y == 0
        out[name + "_false_alarm_rate"] = float((pred[normal] != 0).mean()) if normal.any() else float("nan")
    per_record = []
    for r_i, n in enumerate(p["names"]):
        sel = idx.rec == r_i
        if not sel.any():
            continue
        per_record.append(
            {
                "record": n,
                "windows": int(sel.sum()),
                "labels": dict(Counter(CLASSES[int(v)] for v in y[sel])),
                "model_acc": float((model_pred[sel] == y[sel]).mean()),
                "rules_acc": float((p["rules"][sel] == y[sel]).mean()),
                "model_false_alarms": int(((model_pred[sel] != 0) & (y[sel] == 0)).sum()),
                "rules_false_alarms": int(((p["rules"][sel] != 0) & (y[sel] == 0)).sum()),
            }
        )
    out["per_record"] = per_record
    return out


def calibrate_model(model_path: str | Path | None = None, data: Path | None = None) -> dict[str, float]:
    """Choose per-class thresholds on the validation split and store them in the model card."""
    p = predict_split("val", data, model_path, with_rules=False)
    thresholds = calibrate(p["probs"], p["idx"].label)
    card_path = Path(model_path or default_model_path()).with_name("model_card.json")
    card = json.loads(card_path.read_text())
    card["thresholds"] = thresholds
    card["thresholds_note"] = (
        "per event, the lowest probability at which at most 0.5% of validation NORMAL windows pass"
    )
    stats = per_class(confusion(p["idx"].label, decide(p["probs"], thresholds)))
    card["metrics_val"] = {c: stats[c] for c in CLASSES}
    card_path.write_text(json.dumps(card, indent=2) + "\n")
    return thresholds


def qrs_compare(
    data: Path | None = None, records: list[str] | None = None, seconds: float | None = None
) -> dict[str, Any]:
    """Our detector and wfdb's XQRS on the same mitdb records, 150 ms match window.

    Beats inside ventricular flutter/fibrillation ('[' to ']') are left out, as EC57 does.
    """
    import wfdb
    from wfdb import processing

    root = data or data_dir()
    names = records or [n for n in list_records(root) if n.startswith("mitdb/")]
    tot = {"ours": np.zeros(3, dtype=np.int64), "xqrs": np.zeros(3, dtype=np.int64)}
    secs = {"ours": 0.0, "xqrs": 0.0}
    rows = []
    for n in names:
        path = str(root / n)
        hdr = wfdb.rdheader(path)
        stop = None if seconds is None else min(int(hdr.sig_len), int(seconds * hdr.fs))
        rec = wfdb.rdrecord(path, channels=[0], sampto=stop)
        ann = wfdb.rdann(path, "atr", sampto=stop)
        fs = float(rec.fs)
        x = rec.p_signal[:, 0]
        ref = np.array([s for s, sym in zip(ann.sample, ann.symbol, strict=True) if sym in BEAT_SYMBOLS])
        vf, start = [], None
        for s, sym in zip(ann.sample, ann.symbol, strict=True):
            if sym == "[":
                start = s
            elif sym == "]" and start is not None:
                vf.append((start, s))
                start = None
        row: dict[str, Any] = {"record": n}
        for name in ("ours", "xqrs"):
            t = time.perf_counter()
            if name == "ours":
                det = detect_qrs(x, fs)
            else:
                xq = processing.XQRS(sig=x, fs=fs)
                xq.detect(verbose=False)
                det = np.asarray(xq.qrs_inds, dtype=np.int64)
            secs[name] += time.perf_counter() - t
            for lo, hi in vf:
                det = det[(det < lo) | (det > hi)]
            tp, fn, fp = match_beats(ref, det, int(0.15 * fs))
            tot[name] += (tp, fn, fp)
            row[name] = {"tp": tp, "fn": fn, "fp": fp}
        rows.append(row)
    summary = {}
    for name in ("ours", "xqrs"):
        tp, fn, fp = (int(v) for v in tot[name])
        summary[name] = {
            "tp": tp,
            "fn": fn,
            "fp": fp,
            "se": tp / (tp + fn),
            "ppv": tp / (tp + fp),
            "seconds": secs[name],
        }
    return {
        "records": names,
        "seconds_per_record": seconds,
        "summary": summary,
        "rows": rows,
        "speed_ratio": secs["xqrs"] / max(secs["ours"], 1e-9),
    }


def _fmt(v: float) -> str:
    return "-" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{100 * v:.1f}%"


def _ci(ci: tuple[float, float] | list[float]) -> str:
    lo, hi = ci
    return "-" if np.isnan(lo) else f"{100 * lo:.1f}-{100 * hi:.1f}"


def _plot_confusion(m: list[list[int]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    arr = np.asarray(m)
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    norm = arr / np.maximum(arr.sum(axis=1, keepdims=True), 1)
    ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    for i in range(arr.shape[0]):
        for j in range(arr.shape[1]):
            ax.text(j, i, str(arr[i, j]), ha="center", va="center", color="black" if norm[i, j] < 0.6 else "white")
    ax.set_xticks(range(len(CLASSES)), CLASSES)
    ax.set_yticks(range(len(CLASSES)), CLASSES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def evaluate(
    model_path: str | Path | None = None,
    out_dir: str | Path = "reports",
    data_dir: str | Path | None = None,
    update_card: bool = False,
    split: str = "test",
) -> dict[str, Any]:
    """Write the evaluation report; optionally record the figures in the model card as its floor."""
    data = Path(data_dir) if data_dir else None
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    res = evaluate_windows(split, data, model_path)
    log.info("window evaluation done in %.0f s", time.perf_counter() - t0)
    qrs = qrs_compare(data)
    log.info("QRS comparison done")
    for name in ("model", "rules"):
        _plot_confusion(res[name + "_confusion"], f"{name} ({split} split)", out / f"confusion_{name}.png")
    card_path = Path(model_path or default_model_path()).with_name("model_card.json")
    card = json.loads(card_path.read_text()) if card_path.exists() else {}
    lines = [
        "# Evaluation",
        "",
        f"Model `{card.get('version', '?')}` against the rule-based classifier on the **{split}** split: "
        f"{len(res['records'])} records never used in training or validation "
        f"({', '.join(res['records'])}).",
        "",
        "Unit: real, unaugmented, non-overlapping 10 s two-lead windows, labelled from the reference annotations "
        "(see README, 'Labels'). Windows where an event only grazes the window, or that are mostly noise, are "
        f"left out and counted: {res['skipped']}.",
        "",
        "Intervals are 95% Wilson score intervals. 'records' is how many records hold windows of that class.",
        "",
        "## Per class",
        "",
        "| class | windows | records | model Se | model Se 95% CI | model PPV | model PPV 95% CI | rules Se | rules PPV |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in CLASSES:
        m, r = res["model"][c], res["rules"][c]
        lines.append(
            f"| {c} | {m['n']} | {m['records']} | {_fmt(m['sens'])} | {_ci(m['sens_ci'])} | {_fmt(m['ppv'])} | "
            f"{_ci(m['ppv_ci'])} | {_fmt(r['sens'])} | {_fmt(r['ppv'])} |"
        )
    lines += [
        "",
        f"False-alarm rate on NORMAL windows (any event called): model {_fmt(res['model_false_alarm_rate'])}, "
        f"rules {_fmt(res['rules_false_alarm_rate'])}.",
        "",
        "Confusion matrices: `confusion_model.png`, `confusion_rules.png` (rows: reference).",
        "",
        "## Per record",
        "",
        "| record | windows | labels | model accuracy | rules accuracy | model false alarms | rules false alarms |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in res["per_record"]:
        labels = ", ".join(f"{k} {v}" for k, v in sorted(row["labels"].items()))
        lines.append(
            f"| {row['record']} | {row['windows']} | {labels} | {_fmt(row['model_acc'])} | {_fmt(row['rules_acc'])} | "
            f"{row['model_false_alarms']} | {row['rules_false_alarms']} |"
        )
    s = qrs["summary"]
    lines += [
        "",
        "## QRS detector against wfdb's XQRS",
        "",
        f"All {len(qrs['records'])} shared mitdb records, whole length, lead 1, 150 ms match window, "
        "beats inside ventricular flutter/fibrillation excluded (as EC57 does).",
        "",
        "| detector | TP | FN | FP | Se | +P | seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, label in (("ours", "ecg-monitor"), ("xqrs", "wfdb XQRS")):
        d = s[name]
        lines.append(
            f"| {label} | {d['tp']} | {d['fn']} | {d['fp']} | {100 * d['se']:.2f}% | {100 * d['ppv']:.2f}% | {d['seconds']:.1f} |"
        )
    lines += ["", f"XQRS takes {qrs['speed_ratio']:.1f} times as long as ours on the same records.", ""]
    (out / "evaluation.md").write_text("\n".join(lines) + "\n")
    (out / "evaluation.json").write_text(json.dumps({"windows": res, "qrs": qrs}, indent=1, default=float) + "\n")
    if update_card and card:
        card["metrics_test"] = {
            "split": split,
            "records": res["records"],
            "windows": res["windows"],
            "model": {
                c: {
                    "sens": _round(res["model"][c]["sens"]),
                    "ppv": _round(res["model"][c]["ppv"]),
                    "n": res["model"][c]["n"],
                }
                for c in CLASSES
            },
            "rules": {
                c: {"sens": _round(res["rules"][c]["sens"]), "ppv": _round(res["rules"][c]["ppv"])} for c in CLASSES
            },
            "false_alarm_rate_normal": {
                "model": _round(res["model_false_alarm_rate"]),
                "rules": _round(res["rules_false_alarm_rate"]),
            },
        }
        card["qrs_detector"] = {
            k: {kk: _round(vv) for kk, vv in v.items() if kk in ("se", "ppv")} for k, v in s.items()
        }
        card_path.write_text(json.dumps(card, indent=2) + "\n")
    log.info("wrote %s", out / "evaluation.md")
    return res


def _round(v: float) -> float | None:
    """Round down to 4 places so a floor stored in the card is never above the measured value."""
    if v is None or np.isnan(v):
        return None
    return float(np.floor(v * 10000) / 10000)
