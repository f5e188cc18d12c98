"""Build sources and sinks from transport URLs."""

from __future__ import annotations

from collections.abc import Callable

import zmq.asyncio

from monitor.transports.base import AlarmSink, SampleSource
from monitor.transports.curve import CurveAuth
from monitor.transports.mqtt_transport import MqttAlarmSink, MqttSource
from monitor.transports.tls import MqttSecurity
from monitor.transports.zmq_transport import ZmqAlarmSink, ZmqSource
from protocol.topics import SAMPLES_SUBSCRIPTION
from protocol.urls import parse_url
from protocol.wire import MAX_FRAME_BYTES


def make_source(
    url: str,
    ctx: zmq.asyncio.Context,
    mqtt_topic: str = SAMPLES_SUBSCRIPTION,
    *,
    max_bytes: int = MAX_FRAME_BYTES,
    on_reject: Callable[[str], None] | None = None,
    on_connected: Callable[[str, bool], None] | None = None,
    mqtt: MqttSecurity | None = None,
    curve: CurveAuth | None = None,
) -> SampleSource:
    """``mqtt``: TLS settings and the password for MQTT URLs (raises ``TlsError`` on bad files).
    ``curve``: makes a ZeroMQ source a CURVE server (MQTT ignores it: the broker authenticates)."""
    ep = parse_url(url)
    if ep.is_zmq:
        return ZmqSource(ep, ctx, max_bytes=max_bytes, curve=curve, on_reject=on_reject)
    sec = mqtt if mqtt is not None else MqttSecurity()
    return MqttSource(
        sec.endpoint(ep, "MQTT ingest"),
        mqtt_topic,
        max_payload=max_bytes,
        on_reject=on_reject,
        on_connected=on_connected,
        tls_context=sec.context(ep, "MQTT ingest"),
    )


def make_sink(
    url: str,
    ctx: zmq.asyncio.Context,
    *,
    on_drop: Callable[[str], None] | None = None,
    on_dead_letter: Callable[[str], None] | None = None,
    on_connected: Callable[[str, bool], None] | None = None,
    dead_letter: str | None = None,
    mqtt: MqttSecurity | None = None,
    curve: CurveAuth | None = None,
) -> AlarmSink:
    """``mqtt``: TLS settings and the password for MQTT URLs (raises ``TlsError`` on bad files).
    ``curve``: makes a ZeroMQ sink a CURVE server (MQTT ignores it: the broker authenticates)."""
    ep = parse_url(url)
    if ep.is_zmq:
        return ZmqAlarmSink(ep, ctx, curve=curve)
    sec = mqtt if mqtt is not None else MqttSecurity()
    return MqttAlarmSink(
        sec.endpoint(ep, "MQTT alarms"),
        on_drop=on_drop,
        on_dead_letter=on_dead_letter,
        on_connected=on_connected,
        dead_letter=dead_letter,
        tls_context=sec.context(ep, "MQTT alarms"),
    )
