"""A packed training set: the records at the model rate in one LZMA zip, for a machine without
the PhysioNet folder or wfdb (a lent GPU box, say).

The pack holds the very int16 samples that ``load_record`` caches, delta-coded, plus the
episodes and beats; loading it gives records bit-identical to ``load_record``'s. It is a
derived copy of the data: keep it out of the repository. No pickle: ``.npy`` members and a
JSON manifest.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from pathlib import Path

import numpy as np

from classifier.constants import MODEL_FS, PAUSE_THRESHOLD_S
from classifier.training.labels import Episode
from classifier.training.records import Record, dequantize, labels_for, load_record, quantize

log = logging.getLogger(__name__)

PACK_FORMAT = "ecg-monitor-pack/1"
_MANIFEST = "manifest.json"


class PackError(ValueError):
    """The file is not a pack this version can read."""


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def write_pack(path: Path, names: list[str], root: Path | None = None) -> dict[str, object]:
    """Pack ``names`` (read through ``load_record``) into ``path``; return the manifest."""
    records: dict[str, object] = {}
    path.parent.mkdir(parents=True, exist_ok=True)
    labels = labels_for(names, root)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_LZMA) as zf:
        for name in names:
            rec = load_record(name, root, labels=labels)
            q = quantize(rec.signal)
            # Deltas of ECG are small, so they compress far better than levels; int16
            # wrap-around makes the round trip exact.
            delta = np.diff(q, axis=1, prepend=np.zeros((q.shape[0], 1), dtype=np.int16))
            key = name.replace("/", "_")
            zf.writestr(f"{key}.signal.npy", _npy(delta))
            zf.writestr(f"{key}.beats.npy", _npy(rec.beats.astype(np.int64)))
            records[name] = {"key": key, "episodes": [[e.event, e.start, e.end] for e in rec.episodes]}
        manifest: dict[str, object] = {
            "format": PACK_FORMAT,
            "fs_hz": MODEL_FS,
            "pause_threshold_s": PAUSE_THRESHOLD_S,
            "records": records,
        }
        zf.writestr(_MANIFEST, json.dumps(manifest, indent=1))
    log.info("packed %d records into %s (%.1f MB)", len(names), path, path.stat().st_size / 1e6)
    return manifest


class Pack:
    """Read side of a pack: ``names`` and ``load(name)``, like the data folder."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self._zf = zipfile.ZipFile(self.path)
            manifest = json.loads(self._zf.read(_MANIFEST))
        except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
            raise PackError(f"{self.path}: not a readable pack ({exc})") from exc
        if manifest.get("format") != PACK_FORMAT or manifest.get("fs_hz") != MODEL_FS:
            raise PackError(
                f"{self.path}: format {manifest.get('format')!r} at {manifest.get('fs_hz')} Hz, need {PACK_FORMAT} at {MODEL_FS} Hz"
            )
        self._manifest = manifest
        self.pause_threshold_s = float(manifest["pause_threshold_s"])

    @property
    def names(self) -> list[str]:
        return sorted(self._manifest["records"])

    def load(self, name: str) -> Record:
        try:
            entry = self._manifest["records"][name]
        except KeyError:
            raise PackError(f"{self.path}: no record {name!r}") from None
        key = entry["key"]
        delta = np.load(io.BytesIO(self._zf.read(f"{key}.signal.npy")), allow_pickle=False)
        beats = np.load(io.BytesIO(self._zf.read(f"{key}.beats.npy")), allow_pickle=False)
        q = np.cumsum(delta, axis=1, dtype=np.int16)
        episodes = [Episode(str(e), int(a), int(b)) for e, a, b in entry["episodes"]]
        return Record(name, MODEL_FS, dequantize(q), episodes, beats.astype(np.int64))

    def close(self) -> None:
        self._zf.close()

    def __enter__(self) -> Pack:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
