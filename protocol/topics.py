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
    "ZMQ_ALARM_PREFIX",
    "alarm_state_topic",
    "alarms_topic",
    "is_valid_stream_id",
    "samples_topic",
    "stream_of_samples_topic",
    "zmq_alarm_topic",
    "zmq_stream_prefix",
]

#: MQTT subscription for every stream's sample frames.
SAMPLES_SUBSCRIPTION: Final = "ecg/+/samples"
#: MQTT subscription for every stream's alarm messages (not the retained state).
ALARMS_SUBSCRIPTION: Final = "ecg/+/alarms"
#: ZeroMQ SUB prefix for every alarm.
ZMQ_ALARM_PREFIX: Final = b"alarm."

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


def stream_of_samples_topic(topic: str) -> str | None:
    """``ecg/<id>/samples`` -> ``<id>``; None for any other topic or an invalid id level."""
    parts = topic.split("/")
    if len(parts) != 3 or parts[0] != "ecg" or parts[2] != "samples" or not is_valid_stream_id(parts[1]):
        return None
    return parts[1]


def zmq_alarm_topic(stream_id: str, event: str) -> bytes:
    """``alarm.<id>.<event>``: the first part of a ZeroMQ alarm message."""
    if not event or not set(event) <= _EVENT_CHARS:
        raise ValueError(f"invalid event name {event!r}")
    return ZMQ_ALARM_PREFIX + f"{_checked(stream_id)}.{event}".encode("ascii")


def zmq_stream_prefix(stream_id: str) -> bytes:
    """``alarm.<id>.``: the SUB prefix for one stream's alarms, no other stream's."""
    return ZMQ_ALARM_PREFIX + _checked(stream_id).encode("ascii") + b"."
