"""Alarm strips and screen telemetry: the wire format, the core that cuts them, and the daemon
that publishes them over real ZeroMQ sockets, a real mosquitto and the journal folder."""

from __future__ import annotations

import asyncio
import base64
import json
import math
from pathlib import Path

import numpy as np
import pytest

from classifier.constants import MODEL_FS
from protocol.alarm import Alarm
from protocol.strip import GAIN, MAX_STRIP_S, NO_DATA, PRE_ONSET_S, Strip, Telemetry, decode_lead, encode_lead
from simulators.subscribe import messages_from
from simulators.synthetic import Episode, PatientSpec, SyntheticPatient
from tests.conftest import Broker
from tests.helpers import running_monitor, wait_for
from tests.test_core import Bed, beat_train, ward
from tests.test_daemon import _send_patient

# -- wire format -------------------------------------------------------------------------


def _alarm(**kw: object) -> Alarm:
    base = dict(
        stream_id="bed-1", event="VTACH", state="onset", priority="high", confidence=0.9, onset_time=1010.0,
        detected_time=1013.0, published_at=1.7e9, source="ml", model_version="m", explanation="VT",
    )  # fmt: skip
    base.update(kw)
    return Alarm(**base)  # type: ignore[arg-type]


def test_lead_codec_keeps_gaps_and_clips() -> None:
    x = np.array([0.0, 1.0, -0.5, np.nan, 1e6, -1e6, 0.0123], dtype=np.float32)
    y = decode_lead(encode_lead(x))
    assert np.isnan(y[3]) and not np.isnan(np.delete(y, 3)).any()
    assert np.allclose(y[[0, 1, 2]], [0.0, 1.0, -0.5])
    assert abs(y[6] - 0.0123) <= 0.5 / GAIN  # 5 uV resolution
    assert y[4] == pytest.approx(32767 / GAIN) and y[5] == pytest.approx((NO_DATA + 1) / GAIN)  # clipped, not a gap


def test_strip_and_telemetry_round_trip_and_refuse_bad_messages() -> None:
    leads = (np.sin(np.arange(256) / 10).astype(np.float32), np.full(256, np.nan, dtype=np.float32))
    s = Strip(_alarm(strip_id="bed-1.VTACH.1013000"), t0=1005.0, fs=128.0, leads=leads, beats=(3, 200), heart_rate=71.3)
    back = Strip.from_json(s.to_json())
    assert back.alarm == s.alarm and back.beats == (3, 200) and back.heart_rate == 71.3
    assert back.strip_id == "bed-1.VTACH.1013000" and back.duration == 2.0
    assert np.allclose(back.leads[0], leads[0], atol=0.5 / GAIN) and np.isnan(back.leads[1]).all()
    t = Telemetry("bed-1", 1005.0, 64.0, (leads[0][:64],), math.nan, "NORMAL", 0.9, ("ok", "noisy"), {"AF": "medium"})
    tb = Telemetry.from_json(t.to_json())
    assert tb.alarms == {"AF": "medium"} and tb.quality == ("ok", "noisy") and math.isnan(tb.heart_rate)
    data = json.loads(s.to_json())
    for bad in (
        {**data, "schema": 2},
        {**data, "kind": "telemetry"},
        {**data, "beats": [999]},
        {**data, "leads": [data["leads"][0], data["leads"][0][:-8]]},  # leads of unequal length
        {**data, "leads": ["not base64!"]},
        {**data, "fs": 0},
        {**data, "t0": None},
        {**data, "alarm": {**data["alarm"], "onset_time": "x"}},
        {**data, "alarm": {k: v for k, v in data["alarm"].items() if k != "event"}},
        {**data, "fs": 1.0, "leads": [encode_lead(np.zeros(30, dtype=np.float32))]},  # 30 s: longer than a strip
    ):
        with pytest.raises((ValueError, KeyError)):
            Strip.from_json(json.dumps(bad))
    with pytest.raises(ValueError):  # a lead over the reader's size bound
        Strip.from_json(json.dumps({**data, "leads": [base64.b64encode(bytes(200_000)).decode()]}))


# -- the core ----------------------------------------------------------------------------


def test_onset_carries_a_strip_of_the_signal_before_it() -> None:
    b = Bed(ward())
    b.feed(beat_train(40, rr_s=0.8))
    b.result("VTACH", 0.95)
    [onset] = b.got("VTACH")
    bed = b.ward.beds["bed-1"]
    assert onset.strip_id == f"bed-1.VTACH.{round(onset.detected_time * 1000)}"
    strip = bed.take_strip(onset.strip_id)
    assert strip is not None and strip.alarm == onset and bed.take_strip(onset.strip_id) is None
    assert len(strip.leads) == 2 and strip.fs == MODEL_FS
    t_end = strip.t0 + strip.duration
    assert t_end == pytest.approx(bed.stream.t_end if bed.stream else 0.0, abs=1 / MODEL_FS)
    # 8 s before onset, capped at 20 s
    assert strip.duration == pytest.approx(min(t_end - (onset.onset_time - PRE_ONSET_S), MAX_STRIP_S), abs=0.02)
    assert strip.t0 <= onset.onset_time <= t_end
    # the beats are the beat train's: every 0.8 s, so 75 bpm
    assert strip.heart_rate == pytest.approx(75.0, abs=2.0)
    assert len(strip.beats) == pytest.approx(strip.duration / 0.8, abs=2)
    # Resolution and ongoing messages carry none; technical NO_SIGNAL neither.
    assert all(not a.strip_id for a in b.alarms if a.state != "onset" or a.event == "NO_SIGNAL")


def test_telemetry_sends_each_sample_once_decimated() -> None:
    b = Bed(ward())
    b.feed(beat_train(1.0))
    bed = b.ward.beds.get("bed-1")
    assert bed is None  # not admitted before 2 s of data: no telemetry of junk ids
    b.feed(beat_train(11.0))
    bed = b.ward.beds["bed-1"]
    t1 = bed.telemetry()
    assert t1 is not None and t1.fs == MODEL_FS / 2 and len(t1.leads) == 2
    assert len(t1.leads[0]) == 2.0 * t1.fs  # capped at the newest 2 s
    assert t1.t_end == pytest.approx(bed.stream.t_end if bed.stream else 0.0, abs=2 / MODEL_FS)
    b.feed(beat_train(0.6))
    t2 = bed.telemetry()
    assert t2 is not None and len(t2.leads[0]) == pytest.approx(0.6 * t2.fs, abs=1)
    assert t2.t_end - t1.t_end == pytest.approx(0.6, abs=2 / MODEL_FS)
    t3 = bed.telemetry()
    assert t3 is not None and t3.leads == ()  # nothing new: status only
    b.result("VTACH", 0.95)
    t4 = bed.telemetry()
    assert t4 is not None and t4.alarms == {"VTACH": "high"} and t4.rhythm == "VTACH"


# -- the daemon --------------------------------------------------------------------------


async def _collect(url: str, kinds: tuple[str, ...], into: list[object], ready: asyncio.Event) -> None:
    async for m in messages_from(url, ready, kinds=kinds):
        into.append(m)


async def test_strips_and_telemetry_over_zeromq_and_in_the_journal(tmp_path: Path) -> None:
    journal = tmp_path / "alarms.jsonl"
    async with running_monitor(journal=str(journal), telemetry_interval_s=0.5) as h:
        got: list[object] = []
        ready = asyncio.Event()
        task = asyncio.create_task(_collect(h.alarms_url, ("alarm", "strip", "telemetry"), got, ready))
        await ready.wait()
        await asyncio.sleep(0.3)
        spec = PatientSpec(75.0, [Episode("VTACH", 30.0, 50.0)])
        await _send_patient(h.ingest, "bed-s", spec, 60.0, speed=10.0)

        def onset() -> Alarm | None:
            return next((m for m in got if isinstance(m, Alarm) and m.event == "VTACH" and m.state == "onset"), None)

        assert await wait_for(lambda: onset() is not None, 15.0)
        alarm = onset()
        assert alarm is not None and alarm.strip_id
        assert await wait_for(lambda: any(isinstance(m, Strip) for m in got), 5.0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    strips = [m for m in got if isinstance(m, Strip)]
    strip = next(s for s in strips if s.strip_id == alarm.strip_id)
    assert strip.alarm == alarm  # the strip carries its alarm as published
    assert got.index(alarm) < got.index(strip)  # the strip follows its alarm
    assert 8.0 <= strip.duration <= MAX_STRIP_S + 0.1 and len(strip.leads) == 2 and strip.beats
    assert len(alarm.to_json()) < 1024  # the pager message stays small: no samples in it (the strip is 10s of kB)
    tele = [m for m in got if isinstance(m, Telemetry) and m.stream_id == "bed-s"]
    assert len(tele) >= 5
    sizes = [len(t.leads[0]) for t in tele if t.leads]
    assert sizes and max(sizes) <= 2.0 * tele[0].fs  # at most 2 s per message, however fast the sender
    assert any(t.alarms.get("VTACH") == "high" for t in tele)
    assert h.metric("ecg_strips_published_total") >= 1
    # kept with the journal: one file per strip, named by its id, readable alone
    saved = tmp_path / "alarms.jsonl.strips" / f"{alarm.strip_id}.json"
    assert saved.exists() and oct(saved.stat().st_mode & 0o777) == "0o640"
    assert Strip.from_json(saved.read_bytes()).alarm.strip_id == alarm.strip_id
    assert alarm.strip_id in journal.read_text()


async def test_strips_and_telemetry_over_mqtt(broker: Broker) -> None:
    async with running_monitor(ingest=(broker.url,), alarms=(broker.url,), telemetry_interval_s=0.5) as h:
        got: list[object] = []
        ready = asyncio.Event()
        task = asyncio.create_task(_collect(broker.url, ("alarm", "strip", "telemetry"), got, ready))
        await ready.wait()
        await asyncio.sleep(1.0)
        spec = PatientSpec(75.0, [Episode("VTACH", 25.0, 45.0)])
        p = SyntheticPatient(spec, 250.0, np.random.default_rng(0))
        from tests.test_mqtt import _send

        await _send(broker.url, "mq-s", spec, 0, 250, p)
        ok = await wait_for(lambda: any(isinstance(m, Strip) and m.alarm.stream_id == "mq-s" for m in got), 15.0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert ok, [type(m).__name__ for m in got][:20]
        [strip] = [m for m in got if isinstance(m, Strip)][:1]
        alarms = [m for m in got if isinstance(m, Alarm) and m.strip_id == strip.strip_id]
        assert alarms and alarms[0].event == strip.alarm.event
        assert any(isinstance(m, Telemetry) and m.stream_id == "mq-s" and m.leads for m in got)
        assert h.metric("ecg_telemetry_dropped_total", {"sink": f"mqtt-telemetry:127.0.0.1:{broker.port}"}) == 0


async def test_subscriber_saves_each_strip_as_png_and_the_strip_command_renders_one(tmp_path: Path) -> None:
    from app.cli import _strip_saver, main
    from simulators.subscribe import SubscribeOptions, subscribe

    out = tmp_path / "pngs"
    async with running_monitor(journal=str(tmp_path / "alarms.jsonl")) as h:
        ready = asyncio.Event()
        opts = SubscribeOptions(source=h.alarms_url, json=True, count=1, duration=40.0, on_strip=_strip_saver(str(out)))
        sub = asyncio.create_task(subscribe(opts, ready=ready))
        await ready.wait()
        await asyncio.sleep(0.3)
        await _send_patient(h.ingest, "bed-p", PatientSpec(75.0, [Episode("VTACH", 20.0, 40.0)]), 40.0, speed=10.0)
        assert await asyncio.wait_for(sub, 30.0) == 1
    [png] = list(out.glob("*.png"))
    assert png.name.startswith("bed-p.VTACH.") and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    [saved] = list((tmp_path / "alarms.jsonl.strips").glob("*.json"))
    assert main(["strip", str(saved), "-o", str(tmp_path / "one.png")]) == 0
    assert (tmp_path / "one.png").read_bytes()[:4] == b"\x89PNG"
    bad = tmp_path / "bad.json"
    bad.write_text('{"schema": 1, "kind": "strip"}')
    with pytest.raises(SystemExit) as exc:
        main(["strip", str(bad)])
    assert exc.value.code == 2


def test_the_station_keeps_an_alarm_change_that_overtook_older_telemetry() -> None:
    """Telemetry has a connection of its own, so a RESOLVED can arrive before telemetry sent
    earlier that still lists the alarm: the tile must not show the alarm again."""
    from station.state import StationState

    st = StationState()
    leads = (np.zeros(8, np.float32), np.zeros(8, np.float32))

    def tele(t_end: float, alarms: dict[str, str]) -> Telemetry:
        return Telemetry("bed-1", t_end, 128.0, leads, 70.0, "VTACH", 0.9, ("ok", "ok"), alarms)

    def alarm(state: str, t: float) -> Alarm:
        return Alarm("bed-1", "VTACH", state, "high", 0.9, 100.0, t, 1.7e9, "ml", "m", "VT")

    st.on_message(alarm("onset", 103.0), "d", 0.0)
    st.on_message(alarm("resolved", 120.0), "d", 1.0)
    st.on_message(tele(119.5, {"VTACH": "high"}), "d", 1.1)  # sent before the resolve
    assert st.beds["bed-1"].alarms == {}
    st.on_message(tele(121.0, {"AF": "medium"}), "d", 2.0)  # newer telemetry still rules
    assert st.beds["bed-1"].alarms == {"AF": "medium"}
