"""Train the ECG network on record-disjoint splits of the shared databases.

Reproducible from a seed: data order, augmentation and initialisation all derive from it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from classifier.constants import CLASSES, MODEL_FS, PAUSE_THRESHOLD_S, SEGMENT_S
from classifier.decision import calibrate, decide
from classifier.inference import DIGEST_KEY, sha256_hex
from classifier.model import ECGNet, count_parameters
from classifier.training.dataset import BalancedEpochs, WindowIndex, index_windows, real_batch
from classifier.training.focal import FocalLoss
from classifier.training.metrics import confusion, per_class
from classifier.training.pack import Pack, PackError
from classifier.training.records import TRAIN_SOURCES, Record, labels_for, list_records, load_record, split_of

log = logging.getLogger(__name__)

WEIGHTS_NAME = "ecgnet.pt"
CARD_NAME = "model_card.json"


@dataclass(slots=True)
class TrainConfig:
    """Everything that decides a training run; stored in the model card."""

    seed: int = 0
    max_epochs: int = 30
    epoch_size: int = 6000
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-3
    patience: int = 6
    min_epochs: int = 5  # earlier epochs are not eligible as "best": the small validation set is too noisy
    #: Wall-clock budget: the run ends after the epoch that passes it, keeping its best epoch (a
    #: lent machine's time is counted; the issue's budget is 90 min on 2 CPU cores). None: no limit.
    max_minutes: float | None = None
    threads: int = 2
    device: str = "cpu"
    out_dir: str = "models"
    data_dir: str | None = None
    limit_records: int | None = None
    rhythm_only: float = 0.0
    stretch: float = 0.0  # NORMAL and AF windows are time-stretched by up to this fraction
    lead_swap: float = 0.0  # probability of swapping the two leads
    pack: str | None = None  # read records from this pack instead of the data folder
    mix: dict[str, float] = field(default_factory=lambda: {"NORMAL": 0.5, "AF": 0.2, "VTACH": 0.17, "PAUSE": 0.13})
    #: The sources trained on (their train splits; validation on their val splits). Leaving one
    #: out gives that source's leave-one-source-out figures.
    sources: tuple[str, ...] = TRAIN_SOURCES

    def __post_init__(self) -> None:
        self.sources = tuple(self.sources)
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"max_minutes must be positive, not {self.max_minutes}")
        if not self.sources or not set(self.sources) <= set(TRAIN_SOURCES):
            raise ValueError(f"sources must be some of {', '.join(TRAIN_SOURCES)}, not {', '.join(self.sources)!r}")


def _git_version() -> str:
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _record_names(cfg: TrainConfig) -> tuple[list[str], Callable[[str], Record]]:
    """The records available and how to load one: from a pack, or from the data folder."""
    if cfg.pack:
        pack = Pack(Path(cfg.pack))
        if pack.pause_threshold_s != PAUSE_THRESHOLD_S:
            raise PackError(f"{cfg.pack}: packed with a {pack.pause_threshold_s} s pause threshold")
        return [n for n in pack.names if n.split("/")[0] in cfg.sources], pack.load
    root = Path(cfg.data_dir) if cfg.data_dir else None
    names = list_records(root, cfg.sources)
    labels = labels_for(names, root)
    return names, lambda n: load_record(n, root, labels=labels)


def model_version(cfg: TrainConfig, date: str) -> str:
    """Date, seed and a short digest of the settings that shape the model, so that two models
    trained on one day with one seed but different settings never share a name.
    """
    shaping = {k: v for k, v in asdict(cfg).items() if k not in ("out_dir", "data_dir", "pack", "device", "threads")}
    if cfg.max_minutes is None:  # absent, so that runs without a budget keep the names they had
        del shaping["max_minutes"]
    digest = hashlib.sha256(json.dumps(shaping, sort_keys=True).encode()).hexdigest()[:6]
    return f"ecgnet-{date}-s{cfg.seed}-{digest}"


def _command(cfg: TrainConfig) -> str:
    """The ``ecg-monitor train`` line that reproduces this run (flags that differ from defaults)."""
    default = TrainConfig()
    flags = {
        "seed": "--seed", "max_epochs": "--epochs", "epoch_size": "--epoch-size", "patience": "--patience",
        "device": "--device", "rhythm_only": "--rhythm-only", "stretch": "--stretch", "lead_swap": "--lead-swap",
        "sources": "--sources", "max_minutes": "--max-minutes",
    }  # fmt: skip
    parts = ["ecg-monitor train"]
    for name, flag in flags.items():
        value = getattr(cfg, name)
        if name == "seed" or value != getattr(default, name):
            parts.append(f"{flag} {','.join(value) if isinstance(value, tuple) else value}")
    return " ".join(parts)


def record_list(names: list[str]) -> list[str]:
    """Record names for the card; the thousands of CinC 2017 recordings as one line that says
    which they are (their split is a rule on the record number, ``records.split_of``)."""
    handheld = [n for n in names if n.startswith("cinc2017/")]
    out = [n for n in names if not n.startswith("cinc2017/")]
    if handheld:
        out.append(f"cinc2017/* ({len(handheld)} recordings, {handheld[0]} to {handheld[-1]}, by record number)")
    return out


def _seed_everything(cfg: TrainConfig) -> None:
    """Seeds and deterministic kernels, so one seed gives one model on a given device."""
    if cfg.device.startswith("cuda"):
        # cuBLAS is only deterministic with a fixed workspace; must be set before its first use.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True, warn_only=True)


@torch.no_grad()
def predict(model: torch.nn.Module, x: np.ndarray, device: str, batch: int = 256) -> np.ndarray:
    """Class probabilities for model inputs ``x`` (n, 2, SEGMENT_LEN)."""
    model.eval()
    outs = []
    for i in range(0, len(x), batch):
        xb = torch.from_numpy(x[i : i + batch]).to(device)
        outs.append(torch.softmax(model(xb), dim=1).cpu().numpy())
    return np.concatenate(outs) if outs else np.zeros((0, len(CLASSES)))


def train(cfg: TrainConfig) -> dict[str, object]:
    """Run training; write weights and model card into ``cfg.out_dir``; return the card."""
    _seed_everything(cfg)
    names, load = _record_names(cfg)
    if not names:
        raise FileNotFoundError("no WFDB records found; set ECG_DATA_DIR or pass --data")
    train_names = [n for n in names if split_of(n) == "train"]
    val_names = [n for n in names if split_of(n) == "val"]
    if cfg.limit_records:
        train_names = train_names[: cfg.limit_records]
        val_names = val_names[: max(1, cfg.limit_records // 2)]
    t0 = time.perf_counter()
    train_recs = [load(n) for n in train_names]
    val_recs = [load(n) for n in val_names]
    train_idx = index_windows(train_recs, normal_hop_s=10.0, event_hop_s=2.0)
    val_idx: WindowIndex = index_windows(val_recs)
    log.info("train windows %s, val windows %s (%.1fs)", train_idx.counts(), val_idx.counts(), time.perf_counter() - t0)
    x_val = real_batch(val_recs, val_idx, np.arange(len(val_idx)))
    y_val = val_idx.label

    model = ECGNet().to(cfg.device)
    alpha = torch.tensor([1.0, 1.0, 1.5, 1.5])
    loss_fn = FocalLoss(gamma=2.0, alpha=alpha).to(cfg.device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=cfg.max_epochs)
    epochs = BalancedEpochs(
        train_recs, train_idx, cfg.epoch_size, cfg.mix, cfg.seed, cfg.rhythm_only, cfg.stretch, cfg.lead_swap
    )
    gen = torch.Generator().manual_seed(cfg.seed)

    best_score, best_state, best_epoch, stale = -1.0, None, 0, 0
    history = []
    stopped_by = "max epochs"
    for epoch in range(1, cfg.max_epochs + 1):
        te = time.perf_counter()
        xs, ys = epochs.epoch()
        model.train()
        perm = torch.randperm(len(ys), generator=gen)
        total = 0.0
        for i in range(0, len(ys), cfg.batch_size):
            sel = perm[i : i + cfg.batch_size]
            xb = torch.from_numpy(xs[sel.numpy()]).to(cfg.device)
            yb = torch.from_numpy(ys[sel.numpy()]).to(cfg.device)
            loss = loss_fn(model(xb), yb)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(sel)
        sched.step()
        probs = predict(model, x_val, cfg.device)
        pred = probs.argmax(axis=1)
        stats = per_class(confusion(y_val, pred))
        # Mean F1 over the classes present, NORMAL included: false alarms count as much as misses.
        present = [c for c in CLASSES if stats[c]["n"] > 0]
        score = float(np.mean([stats[c]["f1"] for c in present])) if present else 0.0
        history.append({"epoch": epoch, "loss": total / max(1, len(ys)), "val_macro_f1": score})
        log.info(
            "epoch %d loss %.4f val macro-F1 %.3f %s (%.0fs)",
            epoch,
            total / max(1, len(ys)),
            score,
            {c: (round(stats[c]["sens"], 3), round(stats[c]["ppv"], 3)) for c in CLASSES},
            time.perf_counter() - te,
        )
        over_budget = cfg.max_minutes is not None and time.perf_counter() - t0 > 60 * cfg.max_minutes
        # Before min_epochs nothing is eligible, unless the budget ends the run: then this epoch is all there is.
        if epoch >= min(cfg.min_epochs, cfg.max_epochs) or (over_budget and best_state is None):
            if score > best_score:  # always so for the first eligible epoch: scores are >= 0
                best_score, best_epoch, stale = score, epoch, 0
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            else:
                stale += 1
                if stale >= cfg.patience:
                    stopped_by = "early stop"
                    log.info("early stop at epoch %d (best %d)", epoch, best_epoch)
                    break
        if over_budget:
            stopped_by = "time budget"
            log.warning("time budget of %s min reached at epoch %d (best %d)", cfg.max_minutes, epoch, best_epoch)
            break
    assert best_state is not None
    model.load_state_dict(best_state)
    probs = predict(model, x_val, cfg.device)
    thresholds = calibrate(probs, y_val)
    val_stats = per_class(confusion(y_val, decide(probs, thresholds)))
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(best_state, out / WEIGHTS_NAME)
    card: dict[str, object] = {
        "name": "ecgnet",
        "version": model_version(cfg, time.strftime("%Y%m%d")),
        "architecture": "1D ResNet (5 stages) + multi-head self-attention (4 heads), attention-pooled",
        "parameters": count_parameters(model),
        # The daemon refuses weights whose SHA-256 differs from this (classifier.inference).
        DIGEST_KEY: sha256_hex((out / WEIGHTS_NAME).read_bytes()),
        "classes": list(CLASSES),
        "input": {
            "fs_hz": MODEL_FS,
            "segment_s": SEGMENT_S,
            "leads": 2,
            "normalization": "per lead: NaN interpolated, band-pass 0.5-40 Hz, median-centred, "
            "divided by the 1-99 percentile range, clipped to +-8; a flat or missing lead is zeros",
        },
        "training": {
            "config": asdict(cfg),
            "command": _command(cfg),
            "code_version": _git_version(),
            "records_train": record_list(train_names),
            "records_val": record_list(val_names),
            "windows_train": train_idx.counts(),
            "windows_val": val_idx.counts(),
            "best_epoch": best_epoch,
            "stopped_by": stopped_by,
            "history": history,
            "seconds": round(time.perf_counter() - t0, 1),
            "torch": torch.__version__,
        },
        "thresholds": thresholds,
        "thresholds_note": "per event, the lowest probability at which at most 0.5% of validation NORMAL windows pass",
        "metrics_val": {c: val_stats[c] for c in CLASSES},
    }
    (out / CARD_NAME).write_text(json.dumps(card, indent=2) + "\n")
    log.info("wrote %s and %s", out / WEIGHTS_NAME, out / CARD_NAME)
    return card
