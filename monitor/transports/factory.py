"""Build sources and sinks from transport URLs."""

from __future__ import annotations

from collections.abc import Callable

import zmq.asyncio

from monitor.transports.base import AlarmSink, SampleSource
from monitor.transports.mqtt_transport import MqttAlarmSink, MqttSource
from monitor.transports.zmq_transport import ZmqAlarmSink, ZmqSource
from monitor.urls import parse_url


def make_source(url: str, ctx: zmq.asyncio.Context, mqtt_topic: str = "ecg/+/samples") -> SampleSource:
    ep = parse_url(url)
    if ep.is_zmq:
        return ZmqSource(ep, ctx)
    return MqttSource(ep, mqtt_topic)


def make_sink(url: str, ctx: zmq.asyncio.Context, on_drop: Callable[[str], None] | None = None) -> AlarmSink:
    ep = parse_url(url)
    if ep.is_zmq:
        return ZmqAlarmSink(ep, ctx)
    return MqttAlarmSink(ep, on_drop=on_drop)
