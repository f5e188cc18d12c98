"""Fit and evaluate the R-R AF detector (``classifier/af.py``) on every source.

Windows: 10 s (``short``) and 30 s (``long``) of each source, beats found by the product's own
QRS detector on the first usable lead at the model rate, exactly as at run time.

Sources and splits (patient-disjoint where patients are known):
- mitdb, vfdb, svdb: the fixed record splits of ``records.split_of``; a window is AF when at
  least half of it is annotated AF/AFL, not AF when none of it is (VT, VF and noise windows
  included: their beats look irregular, and the detector must not call them AF).
- cinc2017: ``A`` is AF, ``N`` and ``O`` are not, ``~`` is kept apart; no patient ids exist, so
  records are split by number (``n % 5``: 0 test, 1 validation).
- ptbxl: 10 s only (short); AFIB or AFLT in ``scp_codes`` is AF; split by ``patient_id % 5``.

The fits (small MLPs) use the training split of every source; the threshold of each fit maximises
the mean validation F1 over the sources that have AF, so no single large source decides it. Figures on the test split, per source and pooled, and a leave-one-source-out
run (fit and threshold on the other sources' train and validation, scored on all of the left-out
source) go to ``reports/af_rr.md``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from classifier.af import FEATURES, LONG_CONTEXT_S, MIN_INTERVALS, AfRhythmModel, MlpFit, window_features
from classifier.atrial import ATRIAL_FEATURES, atrial_features
from classifier.constants import MODEL_FS
from classifier.features import rr_irregularity
from classifier.preprocess import lead_is_flat, to_model_rate
from classifier.qrs import detect_qrs
from classifier.rules import RuleThresholds
from classifier.training.records import (
    cache_dir,
    cinc2017_labels,
    data_dir,
    list_records,
    load_record,
    number_split,
    ptbxl_records,
    split_of,
)

log = logging.getLogger(__name__)

SHORT_S = 10.0
LONG_S = LONG_CONTEXT_S
SOURCES = ("mitdb", "vfdb", "svdb", "cinc2017", "ptbxl")
MIN_SOURCE_AF = 10
HIDDEN = (32, 16)
MAX_EPOCHS = 2000
PATIENCE = 100


@dataclass
class Windows:
    """Feature rows of one context length, with their labels and where they came from."""

    x: NDArray[np.float64]
    y: NDArray[np.int8]  # 1 AF, 0 not AF, -1 noisy (cinc2017 '~', scored apart)
    source: NDArray[np.str_]
    split: NDArray[np.str_]
    group: NDArray[np.str_]
    irregularity: NDArray[np.float64]  # the rules' AF feature, for the baseline
    n_beats: NDArray[np.int64]


def _beats(sig: NDArray[np.floating]) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Beats on the first lead that carries signal, as at run time, and that lead."""
    for lead in sig:
        if np.isfinite(lead).mean() > 0.5 and not lead_is_flat(np.nan_to_num(lead)):
            return np.asarray(detect_qrs(lead, MODEL_FS), dtype=np.int64), np.asarray(lead, dtype=np.float64)
    return np.zeros(0, dtype=np.int64), np.zeros(0)


def _row(
    beats: NDArray[np.int64], lead: NDArray[np.float64], lo: int, hi: int
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The R-R intervals (s) of the beats in [lo, hi) and the atrial features before them."""
    b = beats[(beats >= lo) & (beats < hi)]
    if lead.size == 0:
        return np.diff(b) / MODEL_FS, np.full(len(ATRIAL_FEATURES), np.nan)
    return np.diff(b) / MODEL_FS, atrial_features(lead[lo:hi], b - lo, MODEL_FS)


# source, split, group, label, R-R (s), atrial features
Row = tuple[str, str, str, int, NDArray[np.float64], NDArray[np.float64]]


def _mit_windows(length_s: float) -> Iterator[Row]:
    n_win = int(length_s * MODEL_FS)
    for name in list_records():
        rec = load_record(name)
        beats, lead = _beats(rec.signal)
        n = rec.signal.shape[1]
        af = np.zeros(n, dtype=bool)
        for e in rec.episodes:
            if e.event == "AF":
                af[e.start : e.end] = True
        db = name.split("/")[0]
        for lo in range(0, n - n_win + 1, n_win):
            hi = lo + n_win
            frac = af[lo:hi].mean()
            if 0 < frac < 0.5:
                continue
            rr, atrial = _row(beats, lead, lo, hi)
            yield db, split_of(name), name, int(frac >= 0.5), rr, atrial


def _cinc2017(length_s: float) -> Iterator[Row]:
    import wfdb

    root = data_dir() / "cinc2017"
    labels = {"A": 1, "N": 0, "O": 0, "~": -1}
    n_win = int(length_s * MODEL_FS)
    for rec_name, lab in cinc2017_labels().items():
        if not (root / f"{rec_name}.hea").exists():
            continue
        split = number_split(int(rec_name[1:]))
        rec = wfdb.rdrecord(str(root / rec_name))
        sig, _ = to_model_rate(np.asarray(rec.p_signal[:, 0], dtype=np.float64), None, float(rec.fs))
        beats, lead = _beats(sig[:1])
        n = sig.shape[1]
        for lo in range(0, n - n_win + 1, n_win):
            rr, atrial = _row(beats, lead, lo, lo + n_win)
            yield "cinc2017", split, f"cinc2017/{rec_name}", labels[lab], rr, atrial


def _ptbxl(length_s: float) -> Iterator[Row]:
    import wfdb

    if length_s > 10.0:
        return
    for r in ptbxl_records(data_dir()):
        y = int(bool(r.codes & {"AFIB", "AFLT"}))
        rec = wfdb.rdrecord(str(r.path))
        names = list(rec.sig_name)
        lead = rec.p_signal[:, names.index("II") if "II" in names else 0]
        sig, _ = to_model_rate(np.asarray(lead, dtype=np.float64), None, float(rec.fs))
        beats, lead_mv = _beats(sig[:1])
        rr, atrial = _row(beats, lead_mv, 0, sig.shape[1])
        yield "ptbxl", r.split, f"ptbxl/{r.patient_id}", y, rr, atrial


def build(length_s: float) -> Windows:
    """Feature rows for every source. The R-R series and atrial features are cached (the QRS
    detection over every record is the slow part), so R-R features can change without detecting
    beats again."""
    cached = cache_dir() / f"af_rr_{int(length_s)}s_rr_v4.npz"
    if cached.exists():
        z = np.load(cached, allow_pickle=False)
        meta = [z["source"], z["split"], z["group"], z["y"]]
        series = np.split(z["rr"], z["offsets"][1:-1])
        atrial = list(z["atrial"])
    else:
        rows: list[Row] = []
        t = time.perf_counter()
        for gen in (_mit_windows, _cinc2017, _ptbxl):
            rows.extend(gen(length_s))
            log.info("%s: %d windows so far (%.0f s)", gen.__name__, len(rows), time.perf_counter() - t)
        meta = [np.array([r[i] for r in rows]) for i in range(4)]
        series = [r[4] for r in rows]
        atrial = [r[5] for r in rows]
        offsets = np.cumsum([0] + [len(x) for x in series])
        cached.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            cached, source=meta[0], split=meta[1], group=meta[2], y=meta[3].astype(np.int8),
            rr=np.concatenate(series) if series else np.zeros(0), offsets=offsets,
            atrial=np.array(atrial).reshape(len(rows), len(ATRIAL_FEATURES)),
        )  # fmt: skip
    feats = [window_features(rr, a) for rr, a in zip(series, atrial, strict=True)]
    keep = np.array([f is not None for f in feats])
    x = np.array([f for f in feats if f is not None])
    irr = np.array([rr_irregularity(rr) for rr, k in zip(series, keep, strict=True) if k])
    nb = np.array([len(rr) + 1 for rr, k in zip(series, keep, strict=True) if k], dtype=np.int64)
    source, split, group, y = (m[keep] for m in meta)
    return Windows(x, y.astype(np.int8), source, split, group, irr, nb)


def fit_mlp(
    x: NDArray[np.float64],
    y: NDArray[np.int8],
    x_val: NDArray[np.float64],
    y_val: NDArray[np.int8],
    hidden: tuple[int, ...] = HIDDEN,
    seed: int = 0,
) -> MlpFit:
    """A small MLP on standardised features: class-balanced BCE, Adam with weight decay, early
    stopping on validation loss. Deterministic for a seed; seconds on 2 CPU cores."""
    import torch

    torch.manual_seed(seed)
    mean, scale = np.nanmean(x, axis=0), np.nanstd(x, axis=0) + 1e-9
    x, x_val = np.where(np.isnan(x), mean, x), np.where(np.isnan(x_val), mean, x_val)  # not measured: the mean
    xt = torch.tensor((x - mean) / scale, dtype=torch.float32)
    yt = torch.tensor(y, dtype=torch.float32)
    xv = torch.tensor((x_val - mean) / scale, dtype=torch.float32)
    yv = torch.tensor(y_val, dtype=torch.float32)
    dims = (x.shape[1], *hidden, 1)
    mods: list[torch.nn.Module] = []
    for i in range(len(dims) - 1):
        mods.append(torch.nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            mods.append(torch.nn.ReLU())
    net = torch.nn.Sequential(*mods)
    pos = float(yt.mean())
    weight = lambda t: torch.where(t > 0, 0.5 / max(pos, 1e-6), 0.5 / max(1 - pos, 1e-6))  # noqa: E731
    pv = float(yv.mean())
    wv = torch.where(yv > 0, 0.5 / max(pv, 1e-6), 0.5 / max(1 - pv, 1e-6))
    opt = torch.optim.Adam(net.parameters(), lr=0.01, weight_decay=1e-4)
    best, best_state, stale = float("inf"), None, 0
    for _ in range(MAX_EPOCHS):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(net(xt)[:, 0], yt, weight=weight(yt))
        loss.backward()
        opt.step()
        with torch.no_grad():
            vl = float(torch.nn.functional.binary_cross_entropy_with_logits(net(xv)[:, 0], yv, weight=wv))
        if vl < best - 1e-5:
            best, best_state, stale = vl, [p.detach().clone() for p in net.parameters()], 0
        else:
            stale += 1
            if stale >= PATIENCE:
                break
    assert best_state is not None
    params = [p.numpy().astype(np.float64) for p in best_state]
    layers = tuple((params[i].T.copy(), params[i + 1].copy()) for i in range(0, len(params), 2))
    return MlpFit(mean, scale, layers, 0.5)


def choose_threshold(p: NDArray[np.float64], y: NDArray[np.int8], source: NDArray[np.str_]) -> float:
    """The threshold with the best mean F1 over the sources that have AF windows (at least
    ``MIN_SOURCE_AF``), so that no single large source decides it."""
    sources = [s for s in np.unique(source) if int(((source == s) & (y == 1)).sum()) >= MIN_SOURCE_AF]
    best_t, best = 0.5, -1.0
    for t in np.linspace(0.05, 0.99, 95):
        f1s = []
        for src in sources:
            m = source == src
            pred, yy = p[m] >= t, y[m]
            tp = int((pred & (yy == 1)).sum())
            f1s.append(2 * tp / max(1, 2 * tp + int((pred & (yy == 0)).sum()) + int((~pred & (yy == 1)).sum())))
        if f1s and float(np.mean(f1s)) > best:
            best_t, best = float(t), float(np.mean(f1s))
    return best_t


def scores(pred: NDArray[np.bool_], y: NDArray[np.int8]) -> dict[str, float | int]:
    pos, neg = y == 1, y == 0
    tp, fp = int((pred & pos).sum()), int((pred & neg).sum())
    fn = int((~pred & pos).sum())
    return {
        "af": int(pos.sum()),
        "not_af": int(neg.sum()),
        "se": tp / max(1, int(pos.sum())) if pos.any() else float("nan"),
        "ppv": tp / max(1, tp + fp) if tp + fp else float("nan"),
        "f1": 2 * tp / max(1, 2 * tp + fp + fn) if pos.any() else float("nan"),
        "fpr": fp / max(1, int(neg.sum())),
        "noisy_called_af": int((pred & (y == -1)).sum()),
        "noisy": int((y == -1).sum()),
    }


def _fit_on(w: Windows, mask: NDArray[np.bool_]) -> MlpFit:
    tr = mask & (w.split == "train") & (w.y >= 0)
    va = mask & (w.split == "val") & (w.y >= 0)
    fit = fit_mlp(w.x[tr], w.y[tr], w.x[va], w.y[va])
    t = choose_threshold(fit.prob(w.x[va]), w.y[va], w.source[va])
    return MlpFit(fit.mean, fit.scale, fit.layers, t)


def evaluate(w: Windows, fit: MlpFit, mask: NDArray[np.bool_]) -> dict[str, dict[str, float | int]]:
    """Model and rules (irregularity >= 0.12, >= 8 beats) per source and pooled, on ``mask``."""
    rules_th = RuleThresholds()
    model = fit.prob(w.x) >= fit.threshold
    rules = (w.irregularity >= rules_th.af_irregularity) & (w.n_beats >= rules_th.af_min_beats)
    out: dict[str, dict[str, float | int]] = {}
    for src in (*SOURCES, "pooled"):
        m = mask & ((w.source == src) if src != "pooled" else True)
        if not m.any():
            continue
        out[src] = {f"model_{k}": v for k, v in scores(model[m], w.y[m]).items()}
        out[src].update({f"rules_{k}": v for k, v in scores(rules[m], w.y[m]).items() if k not in ("af", "not_af")})
    return out


def run(out_model: Path, out_report: Path) -> dict[str, object]:
    """Fit both context lengths on every source, evaluate, run leave-one-source-out, write both files."""
    result: dict[str, object] = {"features": list(FEATURES), "min_intervals": MIN_INTERVALS}
    fits: dict[str, MlpFit] = {}
    for name, length in (("short", SHORT_S), ("long", LONG_S)):
        w = build(length)
        everything = np.ones(w.y.shape, dtype=bool)
        fit = _fit_on(w, everything)
        fits[name] = fit
        loso = {}
        for src in SOURCES:
            held = w.source == src
            if not held.any() or not (~held & (w.y == 1)).any():
                continue
            f = _fit_on(w, ~held)
            loso[src] = evaluate(w, f, held)[src]
        result[name] = {
            "context_s": length,
            "windows": {s: int((w.source == s).sum()) for s in SOURCES},
            "threshold": fit.threshold,
            "test": evaluate(w, fit, w.split == "test"),
            "validation": evaluate(w, fit, w.split == "val"),
            "leave_one_source_out": loso,
            "hidden": list(HIDDEN),
        }
    version = f"af-rr-{time.strftime('%Y%m%d')}"
    model = {
        "version": version,
        "features": list(FEATURES),
        "short": fits["short"].to_json(),
        "long": fits["long"].to_json(),
        "trained_on": "train splits of mitdb, vfdb, svdb, cinc2017, ptbxl; thresholds on their validation splits",
        "command": "ecg-monitor train-af",
    }
    out_model.write_text(json.dumps(model, indent=1) + "\n")
    AfRhythmModel.load(out_model)  # what was written loads
    card_path = out_model.with_name("model_card.json")
    if card_path.exists():  # the card vouches for the detector as for the weights
        card = json.loads(card_path.read_text())
        card["af_rr_version"] = version
        card["af_rr_sha256"] = hashlib.sha256(out_model.read_bytes()).hexdigest()
        card_path.write_text(json.dumps(card, indent=2) + "\n")
    result["version"] = version
    result["product_vs_network"] = compare_on_cinc2017(out_model)
    out_report.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out_report.write_text(render(result))
    return result


def compare_on_cinc2017(af_model: Path) -> dict[str, dict[str, float | int]]:
    """The classifier as shipped (AF from the rhythm, ``af_model``) against the same classifier
    with AF left to the network, on whole CinC 2017 test-split records of 10 s or more."""
    import wfdb

    from classifier.inference import MLECGClassifier

    prev = logging.getLogger("classifier.inference").level
    logging.getLogger("classifier.inference").setLevel(logging.ERROR)  # the network-only one warns
    try:
        clfs = {
            "network": MLECGClassifier(af_model_path=af_model.with_name("none.json")),
            "rhythm": MLECGClassifier(af_model_path=af_model),
        }
    finally:
        logging.getLogger("classifier.inference").setLevel(prev)
    root = data_dir() / "cinc2017"
    rows = [(n, lab) for n, lab in cinc2017_labels().items() if lab != "~" and number_split(int(n[1:])) == "test"]
    calls: dict[str, list[bool]] = {k: [] for k in clfs}
    truth: list[bool] = []
    batch: list[tuple[NDArray[np.float64], None, float, None]] = []

    def flush() -> None:
        for k, clf in clfs.items():
            calls[k] += [c.event == "AF" for c in clf.classify_batch(batch)]
        batch.clear()

    for rec_name, lab in rows:
        if not (root / f"{rec_name}.hea").exists():
            continue
        rec = wfdb.rdrecord(str(root / rec_name))
        x = np.asarray(rec.p_signal[:, 0], dtype=np.float64)
        if x.size < SHORT_S * rec.fs:
            continue
        batch.append((x, None, float(rec.fs), None))
        truth.append(lab == "A")
        if len(batch) == 64:
            flush()
    if batch:
        flush()
    y = np.array(truth, dtype=np.int8)
    return {k: scores(np.array(v), y) for k, v in calls.items()}


def _pct(v: float | int) -> str:
    return "-" if isinstance(v, float) and np.isnan(v) else f"{100 * float(v):.1f}%"


def render(r: dict[str, object]) -> str:
    lines = [
        "# AF from the rhythm: R-R detector figures",
        "",
        f"Model `{r['version']}` (`models/af_rr.json`), written by `ecg-monitor train-af`. Features: "
        + ", ".join(f"`{f}`" for f in FEATURES)
        + ". Beats from the product's QRS detector at 128 Hz on the first usable lead; the atrial features "
        "(P-wave consistency and amplitude) on the same lead before those beats. "
        "Rules baseline: R-R irregularity >= 0.12 with >= 8 beats (the rule-based classifier's AF rule).",
        "",
        "Splits: mitdb/vfdb/svdb by the fixed record split; cinc2017 by record number (no patient ids "
        "exist); ptbxl by patient. Thresholds chosen on validation only (best mean F1 over the sources "
        "with AF). Test figures below were not used for any choice. FP rate: share of non-AF windows "
        "called AF; svdb and cinc2017 'O' are rich in ectopy and other irregular rhythms.",
    ]
    for name in ("short", "long"):
        part = r[name]
        assert isinstance(part, dict)
        lines += [
            "",
            f"## {name}: {part['context_s']:.0f} s windows (threshold {part['threshold']:.2f})",
            "",
            "Windows per source: " + ", ".join(f"{k} {v}" for k, v in part["windows"].items()),
            "",
            "### Test split",
            "",
            "| source | AF | not AF | model Se | model PPV | model F1 | model FP rate | rules Se | rules PPV | rules F1 | rules FP rate | noisy called AF (model / rules) |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for src, s in part["test"].items():
            lines.append(
                f"| {src} | {s['model_af']} | {s['model_not_af']} | {_pct(s['model_se'])} | {_pct(s['model_ppv'])} | "
                f"{_pct(s['model_f1'])} | {_pct(s['model_fpr'])} | {_pct(s['rules_se'])} | {_pct(s['rules_ppv'])} | "
                f"{_pct(s['rules_f1'])} | {_pct(s['rules_fpr'])} | {s['model_noisy_called_af']}/{s['model_noisy']} "
                f"/ {s['rules_noisy_called_af']} |"
            )
        lines += [
            "",
            "### Leave one source out (fit and threshold on the other sources, scored on all of this one)",
            "",
            "| left out | AF | not AF | model Se | model PPV | model F1 | model FP rate | rules F1 | rules FP rate |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for src, s in part["leave_one_source_out"].items():
            lines.append(
                f"| {src} | {s['model_af']} | {s['model_not_af']} | {_pct(s['model_se'])} | {_pct(s['model_ppv'])} | "
                f"{_pct(s['model_f1'])} | {_pct(s['model_fpr'])} | {_pct(s['rules_f1'])} | {_pct(s['rules_fpr'])} |"
            )
        lines += ["", f"MLP hidden layers: {part['hidden']}."]
    cmp = r.get("product_vs_network")
    if isinstance(cmp, dict):
        net, rhy = cmp["network"], cmp["rhythm"]
        lines += [
            "",
            "## The classifier as shipped against the network alone, whole CinC 2017 test records",
            "",
            f"`MLECGClassifier().classify_batch` on every CinC 2017 test-split record of 10 s or more ('~' left "
            f"out: {rhy['af'] + rhy['not_af']} records, {rhy['af']} AF), with AF from the rhythm (shipped) and with "
            "the R-R detector switched off (AF from the network's segments, a third of them needed).",
            "",
            "| AF decided by | Se | PPV | F1 | non-AF records called AF |",
            "|---|---|---|---|---|",
            f"| the network alone | {_pct(net['se'])} | {_pct(net['ppv'])} | {_pct(net['f1'])} | {_pct(net['fpr'])} |",
            f"| the rhythm (shipped) | {_pct(rhy['se'])} | {_pct(rhy['ppv'])} | {_pct(rhy['f1'])} | {_pct(rhy['fpr'])} |",
        ]
    return "\n".join(lines) + "\n"
