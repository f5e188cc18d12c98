"""MQTT ingest and alarms through a real mosquitto broker on loopback."""

from __future__ import annotations

import asyncio
import json

import aiomqtt
import numpy as np

from protocol.wire import DType, encode
from simulators.sender import FrameSender
from simulators.synthetic import Episode, PatientSpec, SyntheticPatient
from tests.conftest import Broker
from tests.helpers import running_monitor, wait_for

FS = 250.0


async def _send(
    url: str, sid: str, spec: PatientSpec, k0: int, k1: int, p: SyntheticPatient, speed: float = 20.0
) -> None:
    async with FrameSender(url) as tx:
        for k in range(k0, k1):
            await tx.send(sid, encode(sid, k, 2000.0 + k * 0.2, FS, p.chunk(50), DType.INT16, 200.0))
            if k % 5 == 0:
                await asyncio.sleep(1.0 / speed)


async def test_mqtt_ingest_and_alarms_with_retained_state(broker: Broker) -> None:
    async with running_monitor(ingest=(broker.url,), alarms=(broker.url,)) as h:
        await asyncio.sleep(1.0)  # subscription in place
        received: list[dict[str, object]] = []

        async def listen() -> None:
            async with aiomqtt.Client("127.0.0.1", broker.port) as c:
                await c.subscribe("ecg/+/alarms", qos=1)
                async for m in c.messages:
                    received.append(json.loads(bytes(m.payload)))  # type: ignore[arg-type]

        listener = asyncio.create_task(listen())
        await asyncio.sleep(0.5)
        spec = PatientSpec(75.0, [Episode("VTACH", 25.0, 45.0)])
        p = SyntheticPatient(spec, FS, np.random.default_rng(0))
        await _send(broker.url, "mq-1", spec, 0, 250, p)
        ok = await wait_for(lambda: any(r["event"] == "VTACH" and r["state"] == "onset" for r in received), 15.0)
        listener.cancel()
        await asyncio.gather(listener, return_exceptions=True)
        assert ok, received
        assert h.metric("ecg_frames_ingested_total", {"transport": "mqtt"}) > 0
        # A late subscriber sees the stream's current alarm state, retained.
        async with aiomqtt.Client("127.0.0.1", broker.port) as c:
            await c.subscribe("ecg/mq-1/alarms/state", qos=1)
            msg = await asyncio.wait_for(anext(aiter(c.messages)), 5.0)
            assert msg.retain
            state = json.loads(bytes(msg.payload))  # type: ignore[arg-type]
            assert state["stream_id"] == "mq-1" and "VTACH" in state["active"]


async def test_mqtt_ingest_survives_broker_restart(broker: Broker) -> None:
    async with running_monitor(ingest=(broker.url,)) as h:
        await asyncio.sleep(1.0)
        p = SyntheticPatient(PatientSpec(70.0, []), FS, np.random.default_rng(1))
        await _send(broker.url, "mq-r", PatientSpec(70.0, []), 0, 50, p)
        assert await wait_for(lambda: h.metric("ecg_frames_ingested_total", {"transport": "mqtt"}) >= 45, 5.0)
        broker.stop()
        await asyncio.sleep(1.0)
        broker.start()
        before = h.metric("ecg_frames_ingested_total", {"transport": "mqtt"})
        # The daemon reconnects with backoff; frames sent after that arrive again.
        await asyncio.sleep(3.0)
        await _send(broker.url, "mq-r", PatientSpec(70.0, []), 50, 100, p)
        assert await wait_for(lambda: h.metric("ecg_frames_ingested_total", {"transport": "mqtt"}) >= before + 40, 10.0)


async def test_two_shards_share_one_broker(broker: Broker) -> None:
    ids = [f"bed-{i}" for i in range(6)]
    async with (
        running_monitor(ingest=(broker.url,), shard="0/2") as h0,
        running_monitor(ingest=(broker.url,), shard="1/2") as h1,
    ):
        await asyncio.sleep(1.0)
        async with FrameSender(broker.url) as tx:
            for k in range(20):
                for sid in ids:
                    await tx.send(sid, encode(sid, k, 100.0 + k * 0.2, FS, np.zeros((2, 50)) + 0.1 * k))
                await asyncio.sleep(0.01)
        assert await wait_for(lambda: len(h0.monitor.streams) + len(h1.monitor.streams) == len(ids), 5.0)
        a, b = set(h0.monitor.streams), set(h1.monitor.streams)
        assert a and b and not (a & b) and a | b == set(ids)
        assert h0.metric("ecg_frames_other_shard_total") == 20 * len(b)
