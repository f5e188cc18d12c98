"""The packed training set (for training away from the data folder) and the signal quantisation."""

import zipfile
from pathlib import Path

import numpy as np
import pytest

from classifier.training.records import QUANTUM_MV, dequantize, quantize


def test_quantize_round_trip_keeps_nan_and_clips() -> None:
    x = np.array([[0.0, 0.0049, -1.2345, np.nan, 500.0, -500.0]])
    back = dequantize(quantize(x))
    assert np.isnan(back[0, 3])
    assert np.allclose(back[0, :3], [0.0, 0.005, -1.235], atol=QUANTUM_MV / 2 + 1e-7)
    assert back[0, 4] == pytest.approx(32767 * QUANTUM_MV) and back[0, 5] == pytest.approx(-32767 * QUANTUM_MV)
    # A second pass changes nothing: the cache and the pack hold exactly these values.
    assert np.array_equal(dequantize(quantize(back)), back, equal_nan=True)


def test_pack_gives_the_records_bit_for_bit(data_dir: Path, tmp_path: Path) -> None:
    from classifier.training.pack import Pack, write_pack
    from classifier.training.records import load_record

    names = ["mitdb/201", "vfdb/418"]
    write_pack(tmp_path / "new" / "p.zip", names, data_dir)
    with Pack(tmp_path / "new" / "p.zip") as pack:
        assert pack.names == sorted(names)
        for name in names:
            a, b = pack.load(name), load_record(name, data_dir)
            assert np.array_equal(a.signal, b.signal, equal_nan=True)
            assert np.array_equal(a.beats, b.beats)
            assert a.episodes == b.episodes and a.episodes
    with zipfile.ZipFile(tmp_path / "new" / "p.zip") as zf:
        assert all(not n.endswith(".pkl") for n in zf.namelist())


def test_training_from_a_pack_matches_training_from_the_folder(data_dir: Path, tmp_path: Path) -> None:
    import torch

    from classifier.training.pack import write_pack
    from classifier.training.records import list_records, split_of
    from classifier.training.train import TrainConfig, train

    names = [n for n in list_records(data_dir) if split_of(n) in ("train", "val")]
    write_pack(tmp_path / "p.zip", names[:2] + [n for n in names if split_of(n) == "val"][:1], data_dir)
    common = dict(max_epochs=1, epoch_size=32, batch_size=16, limit_records=2, seed=5, stretch=0.1, lead_swap=0.5)
    train(TrainConfig(out_dir=str(tmp_path / "folder"), data_dir=str(data_dir), **common))  # type: ignore[arg-type]
    train(TrainConfig(out_dir=str(tmp_path / "pack"), pack=str(tmp_path / "p.zip"), **common))  # type: ignore[arg-type]
    a = torch.load(tmp_path / "folder" / "ecgnet.pt", weights_only=True)
    b = torch.load(tmp_path / "pack" / "ecgnet.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_broken_pack_is_a_clear_error(tmp_path: Path) -> None:
    from classifier.training.pack import Pack, PackError

    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"not a zip")
    with pytest.raises(PackError, match="not a readable pack"):
        Pack(bad)
    with zipfile.ZipFile(tmp_path / "old.zip", "w") as zf:
        zf.writestr("manifest.json", '{"format": "something-else/9", "fs_hz": 128}')
    with pytest.raises(PackError, match="format"):
        Pack(tmp_path / "old.zip")


@pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="no CUDA device here")
def test_training_on_cuda_is_reproducible(data_dir: Path, tmp_path: Path) -> None:
    import torch

    from classifier.training.train import TrainConfig, train

    for name in ("a", "b"):
        train(
            TrainConfig(
                max_epochs=1, epoch_size=64, limit_records=2, seed=1, device="cuda", out_dir=str(tmp_path / name)
            )
        )
    a = torch.load(tmp_path / "a" / "ecgnet.pt", weights_only=True)
    b = torch.load(tmp_path / "b" / "ecgnet.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
