"""Every MQTT and ZeroMQ topic, built in one place from a validated stream id.

A stream id (``protocol.wire``: ``[A-Za-z0-9_:-]{1,64}``) has no ``/``, ``+``, ``#`` or ``.``, so it is
one MQTT topic level and sits unambiguously between the dots of ``alarm.<stream>.<event>``: the
prefix ``alarm.bed-1.`` matches bed-1's alarms and no other bed's. Builders raise ``ValueError`` on an
invalid id rather than publish on a topic a broker rejects or a subscriber misroutes.
"""

from __future__ import annotations

from typing import Final

from protocol.wire import is_valid_stream_id

__all__ = [
    "ALARMS_SUBSCRIPTION",
    "SAMPLES_SUBSCRIPTION",
    "STRIPS_SUBSCRIPTION",
    "TELEMETRY_SUBSCRIPTION",
    "ZMQ_ALARM_PREFIX",
    "ZMQ_STRIP_PREFIX",
    "ZMQ_TELEMETRY_PREFIX",
    "alarm_state_topic",
    "alarms_topic",
    "is_valid_stream_id",
    "samples_topic",
    "stream_of_samples_topic",
    "strips_topic",
    "telemetry_topic",
    "zmq_alarm_topic",
    "zmq_stream_prefix",
    "zmq_strip_topic",
    "zmq_telemetry_topic",
]

#: MQTT subscription for every stream's sample frames.
SAMPLES_SUBSCRIPTION: Final = "ecg/+/samples"
#: MQTT subscription for every stream's alarm messages (not the retained state).
ALARMS_SUBSCRIPTION: Final = "ecg/+/alarms"
#: MQTT subscriptions for every stream's alarm strips and screen telemetry.
STRIPS_SUBSCRIPTION: Final = "ecg/+/strips"
TELEMETRY_SUBSCRIPTION: Final = "ecg/+/telemetry"
#: ZeroMQ SUB prefix for every alarm. Strips and telemetry have prefixes of their own, so a pager
#: subscribed to ``alarm.`` never receives their kilobytes.
ZMQ_ALARM_PREFIX: Final = b"alarm."
ZMQ_STRIP_PREFIX: Final = b"strip."
ZMQ_TELEMETRY_PREFIX: Final = b"telemetry."

_EVENT_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_")


def _checked(stream_id: str) -> str:
    if not is_valid_stream_id(stream_id):
        raise ValueError(f"invalid stream id {stream_id!r}: expected [A-Za-z0-9_:-]{{1,64}}")
    return stream_id


def samples_topic(stream_id: str) -> str:
    """``ecg/<id>/samples``: where a sender publishes a stream's frames over MQTT."""
    return f"ecg/{_checked(stream_id)}/samples"


def alarms_topic(stream_id: str) -> str:
    """``ecg/<id>/alarms``: each alarm message of a stream (QoS 1)."""
    return f"ecg/{_checked(stream_id)}/alarms"


def alarm_state_topic(stream_id: str) -> str:
    """``ecg/<id>/alarms/state``: the stream's current alarm state, retained."""
    return f"ecg/{_checked(stream_id)}/alarms/state"


def strips_topic(stream_id: str) -> str:
    """``ecg/<id>/strips``: the strip behind each onset (QoS 1, not retained)."""
    return f"ecg/{_checked(stream_id)}/strips"


def telemetry_topic(stream_id: str) -> str:
    """``ecg/<id>/telemetry``: the low-rate screen feed (QoS 0)."""
    return f"ecg/{_checked(stream_id)}/telemetry"


def stream_of_samples_topic(topic: str) -> str | None:
    """``ecg/<id>/samples`` -> ``<id>``; None for any other topic or an invalid id level."""
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != "ecg" or parts[2] != "samples" or not is_valid_stream_id(parts[1]):
        return None
    return parts[1]


def zmq_alarm_topic(stream_id: str, event: str, prefix: bytes = ZMQ_ALARM_PREFIX) -> bytes:
    """``alarm.<id>.<event>``: the first part of a ZeroMQ alarm message."""
    if not event or not set(event) <= _EVENT_CHARS:
        raise ValueError(f"invalid event name {event!r}")
    return prefix + f"{_checked(stream_id)}.{event}".encode("ascii")


def zmq_strip_topic(stream_id: str, event: str) -> bytes:
    """``strip.<id>.<event>``: the first part of a ZeroMQ strip message."""
    return zmq_alarm_topic(stream_id, event, ZMQ_STRIP_PREFIX)


def zmq_telemetry_topic(stream_id: str) -> bytes:
    """``telemetry.<id>``: the first part of a ZeroMQ telemetry message."""
    return ZMQ_TELEMETRY_PREFIX + _checked(stream_id).encode("ascii")


def zmq_stream_prefix(stream_id: str) -> bytes:
    """``alarm.<id>.``: the SUB prefix for one stream's alarms, no other stream's."""
    return ZMQ_ALARM_PREFIX + _checked(stream_id).encode("ascii") + b"."
