"""Transports behind two small protocols: ``SampleSource`` (ingest) and ``AlarmSink`` (alarms out)."""

from monitor.transports.base import AlarmSink, RawFrame, SampleSource
from monitor.transports.factory import make_sink, make_source

__all__ = ["AlarmSink", "RawFrame", "SampleSource", "make_sink", "make_source"]
