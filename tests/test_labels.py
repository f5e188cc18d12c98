import numpy as np
import pytest

from classifier.training.labels import Episode, extract_episodes, label_window, rhythm_of

FS = 100.0


def test_rhythm_string_normalised() -> None:
    assert rhythm_of("(AFIB\x00") == "AFIB"
    assert rhythm_of("(VFL") == "VFL"


def test_episodes_from_rhythm_labels_vf_markers_and_pauses() -> None:
    samples = [0, 100, 200, 1000, 1100, 1500, 1600, 1700, 2200, 2300, 3000]
    symbols = ["+", "N", "N", "+", "N", "[", "]", "N", "N", "+", "N"]
    aux = ["(N", "", "", "(AFIB", "", "", "", "", "", "(N", ""]
    eps = extract_episodes(samples, symbols, aux, FS, 4000, pause_threshold_s=3.0)
    kinds = [(e.event, e.start, e.end) for e in eps]
    assert ("AF", 1000, 2300) in kinds
    assert ("VTACH", 1500, 1600) in kinds
    # The 200 -> 1100 gap is 9 s: a pause from the last beat before it.
    assert ("PAUSE", 200, 1100) in kinds
    # 1100 -> 1700 spans the VF run (no beats are labelled there): not a pause.
    assert not any(e.event == "PAUSE" and e.start == 1100 for e in eps)


def test_pause_threshold_is_configurable() -> None:
    samples = [0, 250, 500]
    eps = extract_episodes(samples, ["N"] * 3, [""] * 3, FS, 1000, pause_threshold_s=2.5)
    assert [e.event for e in eps] == ["PAUSE", "PAUSE"]
    assert extract_episodes(samples, ["N"] * 3, [""] * 3, FS, 1000, pause_threshold_s=3.0) == []


def test_gap_across_an_unreadable_stretch_is_not_a_pause() -> None:
    # MIT-BIH: '~' with subtype -1 marks every signal unreadable until the next '~'; the
    # annotators could label no beats there (mitdb/208 at 1271 s), so the gap is no pause.
    samples = [0, 100, 150, 400, 420, 1000, 1100, 1200, 1250, 1600]
    symbols = ["N", "N", "~", "~", "N", "N", "N", "~", "~", "N"]
    subtypes = [0, 0, -1, 3, 0, 0, 0, 1, 0, 0]
    aux = [""] * len(samples)
    without = extract_episodes(samples, symbols, aux, FS, 2000, pause_threshold_s=3.0)
    assert [(e.start, e.end) for e in without if e.event == "PAUSE"] == [(100, 420), (420, 1000), (1100, 1600)]
    eps = extract_episodes(samples, symbols, aux, FS, 2000, pause_threshold_s=3.0, subtypes=subtypes)
    # 100 -> 420 overlaps the unreadable 150-400: left out. A noisy (but readable) signal, subtype 1
    # or 3, does not hide beats: 420 -> 1000 and 1100 -> 1600 stay pauses.
    assert [(e.start, e.end) for e in eps if e.event == "PAUSE"] == [(420, 1000), (1100, 1600)]
    # Unreadable to the end of the record (no '~' closes it): a gap into it is no pause either.
    late = extract_episodes([0, 100, 150, 900], ["N", "N", "~", "N"], [""] * 4, FS, 2000, subtypes=[0, 0, -1, 0])
    assert not any(e.event == "PAUSE" for e in late)


def test_vt_runs_from_beats_when_no_rhythm_labels() -> None:
    # svdb style: beats only. Five V beats at 150 bpm make a VT episode; three slow ones do not.
    samples = [0, 80, 160, 200, 240, 280, 320, 360, 440, 600, 800, 1000]
    symbols = ["N", "N", "N", "V", "V", "V", "V", "V", "N", "V", "V", "V"]
    eps = extract_episodes(samples, symbols, [""] * len(samples), FS, 2000)
    vt = [e for e in eps if e.event == "VTACH"]
    assert len(vt) == 1 and vt[0].start == 200


@pytest.mark.parametrize(
    ("episodes", "label", "index"),
    [
        ([], "NORMAL", None),
        ([Episode("VTACH", 300, 700)], "VTACH", 300),
        ([Episode("VTACH", 900, 1100)], None, None),  # 1 s of VT at the edge: ambiguous
        ([Episode("AF", 0, 5000)], "AF", 0),
        ([Episode("AF", 0, 5000), Episode("VTACH", 200, 600)], "VTACH", 200),
        ([Episode("PAUSE", 100, 450)], "PAUSE", 100),
        ([Episode("PAUSE", 800, 1300)], None, None),  # gap cut by the window edge
        ([Episode("NOISE", 0, 800)], None, None),
    ],
)
def test_window_labels(episodes: list[Episode], label: str | None, index: int | None) -> None:
    w = label_window(episodes, 0, 1000, FS)
    assert w.label == label
    assert w.event_index == index


def test_real_record_labels(data_dir) -> None:  # type: ignore[no-untyped-def]
    from classifier.training.records import load_record

    rec = load_record("mitdb/201", data_dir, cache=False)
    events = {e.event for e in rec.episodes}
    assert {"AF", "PAUSE"} <= events
    pauses = [e for e in rec.episodes if e.event == "PAUSE"]
    assert len(pauses) == 2  # the data README lists two R-R gaps of 3 s or more
    assert all((e.end - e.start) / rec.fs >= 3.0 for e in pauses)
    assert np.all(np.diff(rec.beats) > 0)


def test_cinc2017_training_records(data_dir) -> None:  # type: ignore[no-untyped-def]
    """Handheld recordings train the network: labelled whole from REFERENCE.csv, split by number,
    single lead (the second is NaN), and a recording whose detected beats leave a pause-length
    gap is left out rather than taught as NORMAL."""
    from classifier.training.records import TRAIN_SOURCES, cinc2017_labels, list_records, load_record, split_of

    if not (data_dir / "cinc2017" / "REFERENCE.csv").exists():
        pytest.skip(f"CinC 2017 not found under {data_dir}")
    labels = cinc2017_labels(data_dir)
    names = [n for n in list_records(data_dir, TRAIN_SOURCES) if n.startswith("cinc2017/")]
    assert len(names) > 1000
    assert split_of("cinc2017/A00305") == "test" and split_of("cinc2017/A00306") == "val"
    assert split_of("cinc2017/A00307") == "train"
    seen: dict[str, int] = {}
    for name in names[:80]:
        rec = load_record(name, data_dir, labels=labels, cache=False)
        lab = labels[name.split("/")[1]]
        assert rec.signal.shape[0] == 2 and np.isnan(rec.signal[1]).all() and np.isfinite(rec.signal[0]).all()
        events = [e.event for e in rec.episodes]
        assert events in ([], ["AF"], ["NOISE"])
        if events == ["AF"]:
            assert lab == "A" and rec.episodes[0].end == rec.signal.shape[1]
        if events == []:
            assert lab in "NO~"
        seen[lab] = seen.get(lab, 0) + 1
    assert {"A", "N", "O"} <= set(seen)


def test_cinc2017_pause_length_gap_is_left_out() -> None:
    from classifier.constants import MODEL_FS
    from classifier.training.records import _cinc2017_episodes

    t = np.arange(int(30 * MODEL_FS)) / MODEL_FS
    beats = np.zeros_like(t)
    for b in np.arange(0.5, 30, 0.8):
        if not 10 < b < 14:  # a 4 s gap
            beats += np.exp(-0.5 * ((t - b) / 0.012) ** 2)
    sig = np.vstack([beats, np.full_like(t, np.nan)]).astype(np.float32)
    assert [e.event for e in _cinc2017_episodes("N", sig, 3.0)] == ["NOISE"]
    assert _cinc2017_episodes("N", sig, 5.0) == []
    assert [e.event for e in _cinc2017_episodes("A", sig, 5.0)] == ["AF"]
