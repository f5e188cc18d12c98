"""Hostile or malformed alarm, strip and telemetry messages: each is refused with a ValueError
and skipped by the readers, which go on to show the next alarm (an adversarial review found
that one such message ended the subscriber and the central station, or blanked its page)."""

from __future__ import annotations

import asyncio
import json
import math

import numpy as np
import pytest
import zmq
import zmq.asyncio

from app.localnet import free_port
from protocol.alarm import Alarm
from protocol.strip import Strip, Telemetry
from protocol.topics import zmq_alarm_topic, zmq_strip_topic, zmq_telemetry_topic
from simulators.subscribe import messages_from
from station.state import StationState
from tests.helpers import wait_for
from tests.test_strips import _alarm

GOOD_TELEMETRY = {
    "schema": 1, "kind": "telemetry", "stream_id": "bed-1", "t_end": 10.0, "fs": 64.0, "gain": 200.0,
    "leads": [], "heart_rate": 70.0, "rhythm": "NORMAL", "confidence": 0.9, "quality": ["ok", "ok"], "alarms": {},
}  # fmt: skip


def _strip_json(**alarm_kw: object) -> dict[str, object]:
    lead = np.zeros(256, dtype=np.float32)
    strip = Strip(alarm=_alarm(**alarm_kw), t0=0.0, fs=128.0, leads=(lead,), beats=(), heart_rate=math.nan)
    out: dict[str, object] = json.loads(strip.to_json())
    return out


@pytest.mark.parametrize(
    "payload",
    [
        b"[]",
        b"5",
        b"[" * 100_000,
        json.dumps({**GOOD_TELEMETRY, "quality": "a"}).encode(),
        json.dumps({**GOOD_TELEMETRY, "confidence": float("nan")}).encode(),
        json.dumps({**GOOD_TELEMETRY, "t_end": 10**400}).encode(),
        json.dumps({**GOOD_TELEMETRY, "stream_id": "../x"}).encode(),
        json.dumps({**GOOD_TELEMETRY, "leads": [5]}).encode(),
    ],
)
def test_malformed_telemetry_is_a_value_error(payload: bytes) -> None:
    with pytest.raises(ValueError):
        Telemetry.from_json(payload)


def test_good_telemetry_still_parses() -> None:
    assert Telemetry.from_json(json.dumps(GOOD_TELEMETRY)).stream_id == "bed-1"


@pytest.mark.parametrize("strip_id", ["../evil/owned", "/tmp/owned", "bed-1.VTACH.1/../../x", "a" * 300])
def test_strip_id_that_is_not_a_safe_file_name_is_refused(strip_id: str) -> None:
    good = _strip_json(strip_id="bed-1.VTACH.100000")
    assert Strip.from_json(json.dumps(good)).strip_id == "bed-1.VTACH.100000"
    bad = _strip_json(strip_id=strip_id)
    with pytest.raises(ValueError):
        Strip.from_json(json.dumps(bad))


@pytest.mark.parametrize("payload", [b"[]", b"[" * 100_000, b'{"schema":1,"kind":"strip","leads":[5]}'])
def test_malformed_strip_is_a_value_error(payload: bytes) -> None:
    with pytest.raises(ValueError):
        Strip.from_json(payload)


def test_station_refuses_an_alarm_with_a_nan_number() -> None:
    state = StationState()
    with pytest.raises(ValueError):
        state.on_message(_alarm(confidence=math.nan), "tcp://x", 0.0)
    assert state.alarm_seq == 0
    state.on_message(_alarm(), "tcp://x", 0.0)
    assert state.alarm_seq == 1


async def test_reader_skips_hostile_messages_and_shows_the_next_alarm() -> None:
    """Over a real PUB socket: a strip that is a JSON list, alarm JSON nested 100,000 deep and
    telemetry with a NaN, then a VTACH onset, which must arrive."""
    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    ctx = zmq.asyncio.Context()
    pub = ctx.socket(zmq.PUB)
    pub.bind(url)
    got: list[object] = []
    ready = asyncio.Event()

    async def read() -> None:
        async for m in messages_from(url, ready, kinds=("alarm", "strip", "telemetry")):
            got.append(m)

    task = asyncio.create_task(read())
    try:
        await ready.wait()
        vt = _alarm(stream_id="bed-2", event="VTACH")

        def sent() -> bool:
            return any(isinstance(m, Alarm) and m.stream_id == "bed-2" for m in got)

        async def send_all() -> bool:
            await pub.send_multipart([zmq_strip_topic("bed-1", "AF"), b"[]"])
            await pub.send_multipart([zmq_alarm_topic("bed-1", "AF"), b"[" * 100_000])
            bad = json.dumps({**GOOD_TELEMETRY, "confidence": float("nan")}).encode()
            await pub.send_multipart([zmq_telemetry_topic("bed-1"), bad])
            await pub.send_multipart([zmq_alarm_topic("bed-2", "VTACH"), vt.to_json().encode()])
            return await wait_for(sent, 1.0)

        for _ in range(10):  # a SUB drops what is published before its subscription lands
            if await send_all():
                break
        assert sent(), "the VTACH alarm after the hostile messages never arrived"
        assert not task.done()
        assert all(isinstance(m, Alarm) and m.stream_id == "bed-2" for m in got)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        pub.close(0)
        ctx.term()
