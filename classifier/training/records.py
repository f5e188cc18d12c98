"""Read WFDB records from the shared data folder and define the record-disjoint splits."""

from __future__ import annotations

import ast
import csv
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from classifier.constants import MODEL_FS, PAUSE_THRESHOLD_S
from classifier.dsp import resample
from classifier.training.labels import BEAT_SYMBOLS, Episode, extract_episodes

log = logging.getLogger(__name__)

DATA_ENV = "ECG_DATA_DIR"
DATABASES = ("mitdb", "vfdb", "svdb")
#: The sources the network trains on: the three Holter databases and the CinC 2017 handheld
#: recordings (their train splits). PTB-XL and CinC 2015 stay whole held-out sources.
TRAIN_SOURCES = (*DATABASES, "cinc2017")
#: CinC 2017 reference label -> the window label: 'O' (other rhythms) and '~' (noise) are what
#: a monitor must not alarm on.
CINC2017_LABELS = {"A": "AF", "N": "NORMAL", "O": "NORMAL", "~": "NORMAL"}

#: Record-disjoint splits, fixed so that every figure can be reproduced. Each held-out
#: set holds AF, VTACH and PAUSE episodes from more than one database.
TEST_RECORDS = frozenset(
    {
        "mitdb/105", "mitdb/119", "mitdb/202", "mitdb/208", "mitdb/213",
        "mitdb/219", "mitdb/223", "mitdb/228",
        "vfdb/422", "vfdb/427", "vfdb/614",
    }
)  # fmt: skip
VAL_RECORDS = frozenset(
    {
        "mitdb/106", "mitdb/116", "mitdb/217", "mitdb/233",
        "vfdb/424", "vfdb/609", "vfdb/612",
    }
)  # fmt: skip


def data_dir() -> Path:
    """The PhysioNet data folder: ``$ECG_DATA_DIR`` or ``../shared/data`` beside the project."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def list_records(root: Path | None = None, sources: tuple[str, ...] = DATABASES) -> list[str]:
    """All records as 'db/name', sorted, for the ``sources`` present under ``root``."""
    root = root or data_dir()
    out: list[str] = []
    for db in sources:
        folder = root / db
        if folder.is_dir():
            out.extend(f"{db}/{p.stem}" for p in sorted(folder.glob("*.hea")))
    return out


def number_split(n: int) -> str:
    """'test' (n % 5 == 0), 'val' (1) or 'train': the split of every source without a fixed list
    (svdb and CinC 2017 by record number, PTB-XL by patient id)."""
    k = n % 5
    return "test" if k == 0 else "val" if k == 1 else "train"


def split_of(record: str) -> str:
    """'train', 'val' or 'test' for a record id; svdb records are split by their number."""
    if record in TEST_RECORDS:
        return "test"
    if record in VAL_RECORDS:
        return "val"
    db, name = record.split("/")
    if db == "svdb" and name.isdigit():
        return number_split(int(name))
    if db == "cinc2017":
        return number_split(int(name[1:]))
    return "train"


@dataclass(frozen=True, slots=True)
class PtbxlRecord:
    """One PTB-XL record present on disk: its statements (``scp_codes`` keys) and its split."""

    ecg_id: int
    patient_id: int
    path: Path  # without suffix, for wfdb.rdrecord
    codes: frozenset[str]

    @property
    def split(self) -> str:
        return number_split(self.patient_id)


def ptbxl_records(root: Path) -> list[PtbxlRecord]:
    """The PTB-XL records of ``root``/ptbxl that are on disk, from ``ptbxl_database.csv``."""
    folder = root / "ptbxl"
    out = []
    with open(folder / "ptbxl_database.csv") as fh:
        for r in csv.DictReader(fh):
            path = folder / r["filename_hr"]
            if path.with_suffix(".hea").exists():
                codes = frozenset(ast.literal_eval(r["scp_codes"]))
                out.append(PtbxlRecord(int(r["ecg_id"]), int(float(r["patient_id"])), path, codes))
    return out


@dataclass(slots=True)
class Record:
    """One record at the model rate: ``signal`` is (2, n) float32 mV, positions in model samples."""

    name: str
    fs: float
    signal: NDArray[np.float32]
    episodes: list[Episode]
    beats: NDArray[np.int64]


def _annotations(
    path: str, fs_in: float, n_samples: int, pause_threshold_s: float
) -> tuple[list[Episode], NDArray[np.int64]]:
    """Episodes and beat positions of a record, mapped onto the model rate."""
    import wfdb

    ann = wfdb.rdann(path, "atr")
    episodes = extract_episodes(
        ann.sample, ann.symbol, ann.aux_note, fs_in, n_samples, pause_threshold_s, subtypes=ann.subtype
    )
    scale = MODEL_FS / fs_in
    eps = [Episode(e.event, round(e.start * scale), round(e.end * scale)) for e in episodes]
    beat_samples = [s for s, sym in zip(ann.sample, ann.symbol, strict=True) if sym in BEAT_SYMBOLS]
    beats = np.round(np.asarray(beat_samples, dtype=np.float64) * scale).astype(np.int64)
    return eps, beats


#: Signals are kept on a 5 uV grid, the ADC step of all three databases (200 units per mV).
#: Quantising after resampling loses nothing real and makes the int16 cache and the packed
#: data set (classifier/training/pack.py) bit-identical to what training reads.
QUANTUM_MV = 0.005
_NAN_CODE = -32768


def quantize(signal_mv: NDArray[np.floating]) -> NDArray[np.int16]:
    """mV to int16 steps of QUANTUM_MV; NaN becomes a reserved code, the rest is clipped."""
    x = np.asarray(signal_mv, dtype=np.float64)
    q = np.clip(np.round(np.nan_to_num(x) / QUANTUM_MV), -32767, 32767).astype(np.int16)
    q[~np.isfinite(x)] = _NAN_CODE
    return q


def dequantize(q: NDArray[np.int16]) -> NDArray[np.float32]:
    """int16 steps back to float32 mV, NaN where the reserved code is."""
    out = q.astype(np.float32) * np.float32(QUANTUM_MV)
    out[q == _NAN_CODE] = np.nan
    return out


def cache_dir() -> Path:
    """Where resampled signals are cached: ``$ECG_CACHE_DIR`` or ~/.cache/ecg-monitor, never the repo."""
    return Path(os.environ.get("ECG_CACHE_DIR", Path.home() / ".cache" / "ecg-monitor"))


def cinc2017_labels(root: Path | None = None) -> dict[str, str]:
    """'A00302' -> 'N': the CinC 2017 reference labels (REFERENCE.csv)."""
    with open((root or data_dir()) / "cinc2017" / "REFERENCE.csv") as fh:
        return {r[0]: r[1].strip() for r in csv.reader(fh) if len(r) == 2}


def labels_for(names: list[str], root: Path | None = None) -> dict[str, str]:
    """The ``labels`` that ``load_record`` needs for ``names``: the CinC 2017 reference labels
    when any of them is a CinC 2017 record (read once, not once per record), else none."""
    return cinc2017_labels(root) if any(n.startswith("cinc2017/") for n in names) else {}


def _cinc2017_episodes(label: str, signal: NDArray[np.float32], pause_threshold_s: float) -> list[Episode]:
    """A whole-recording episode from the reference label. These recordings carry no beat
    annotations, so one where our detector finds a gap of a pause's length cannot be told apart
    from a pause: it is left out whole (NOISE covers it), not taught as NORMAL."""
    from classifier.qrs import detect_qrs

    n = signal.shape[1]
    beats = detect_qrs(np.nan_to_num(signal[0]), MODEL_FS)
    edges = np.concatenate([[0], beats, [n]])
    if np.diff(edges).max(initial=0) >= pause_threshold_s * MODEL_FS:
        return [Episode("NOISE", 0, n)]
    event = CINC2017_LABELS[label]
    return [] if event == "NORMAL" else [Episode(event, 0, n)]


def load_record(
    record: str,
    root: Path | None = None,
    pause_threshold_s: float = PAUSE_THRESHOLD_S,
    cache: bool = True,
    labels: dict[str, str] | None = None,
) -> Record:
    """Load a record at the model rate with its annotations mapped onto it.

    The resampled signal is cached (it is the slow part); annotations are re-read each time.
    CinC 2017 records take their label from ``labels`` (read from REFERENCE.csv when None).
    """
    import wfdb

    path = str((root or data_dir()) / record)
    hdr = wfdb.rdheader(path)
    fs_in = float(hdr.fs)
    cached = cache_dir() / (record.replace("/", "_") + f"_{int(MODEL_FS)}_q.npy")
    if cache and cached.exists():
        q = np.load(cached, allow_pickle=False)
    else:
        rec = wfdb.rdrecord(path)
        sig = np.asarray(rec.p_signal, dtype=np.float64).T
        if sig.shape[0] == 1:
            sig = np.vstack([sig, np.full_like(sig, np.nan)])
        q = quantize(resample(sig[:2], fs_in, MODEL_FS))
        if cache:
            cached.parent.mkdir(parents=True, exist_ok=True)
            np.save(cached, q)
    signal = dequantize(q)
    db, name = record.split("/")
    if db == "cinc2017":
        label = (labels if labels is not None else cinc2017_labels(root))[name]
        eps = _cinc2017_episodes(label, signal, pause_threshold_s)
        return Record(record, MODEL_FS, signal, eps, np.zeros(0, dtype=np.int64))
    eps, beats = _annotations(path, fs_in, int(hdr.sig_len), pause_threshold_s)
    return Record(record, MODEL_FS, signal, eps, beats)
