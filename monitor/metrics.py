"""Prometheus metrics of the daemon, on a registry passed in (no global state). Stream ids only.

Counters and histograms are pushed as things happen; the ward's state (beds, backlog, sheds) is
read by ``WardCollector`` at scrape time, so it is never stale and costs nothing between scrapes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from monitor.core.ward import Ward


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.frames = Counter("ecg_frames_ingested", "Sample frames accepted", ["transport"], registry=registry)
        self.samples = Counter("ecg_samples_ingested", "Samples accepted (per channel)", registry=registry)
        self.rejected = Counter("ecg_frames_rejected", "Frames rejected, by reason", ["reason"], registry=registry)
        self.gaps = Counter(
            "ecg_stream_gaps", "Discontinuities in a stream: missing data, restarts, resyncs", registry=registry
        )
        self.batch_size = Histogram(
            "ecg_inference_batch_size",
            "Windows per inference batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=registry,
        )
        self.inference_latency = Histogram(
            "ecg_inference_latency_seconds",
            "Wall time of one inference batch",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10),
            registry=registry,
        )
        self.alarm_latency = Histogram(
            "ecg_alarm_latency_seconds",
            "Stream time from event onset to alarm decision",
            ["event"],
            buckets=(0.5, 1, 1.5, 2, 3, 5, 10, 20, 45, 90),
            registry=registry,
        )
        self.alarms = Counter("ecg_alarms", "Alarm messages published", ["event", "state"], registry=registry)
        self.worker_restarts = Gauge(
            "ecg_analysis_process_restarts",
            "Times the analysis worker process died and was replaced",
            registry=registry,
        )
        self.strips = Counter("ecg_strips_published", "Alarm strips queued for the sinks", registry=registry)
        self.telemetry_dropped = Counter(
            "ecg_telemetry_dropped",
            "Telemetry messages dropped (sink disconnected or behind); the next second supersedes them",
            ["sink"],
            registry=registry,
        )
        self.alarms_dropped = Counter(
            "ecg_alarms_dropped",
            "Alarm messages a sink lost: its queue full, its send failed, or still queued at close",
            ["sink"],
            registry=registry,
        )
        self.alarms_dead_letter = Counter(
            "ecg_alarms_dead_letter",
            "Alarm messages a sink gave up on after repeated failures (kept in the dead-letter log)",
            ["sink"],
            registry=registry,
        )
        self.journal_errors = Counter(
            "ecg_journal_errors",
            "Alarm journal failures, by kind (write, dropped, state, rotate, sync)",
            ["kind"],
            registry=registry,
        )
        self.window_errors = Counter(
            "ecg_window_errors",
            "Windows whose handling raised, by stage (classifier: the rules judged them instead)",
            ["stage"],
            registry=registry,
        )
        self.rules_only = Counter(
            "ecg_rules_only_windows", "Windows judged by the rules alone (no model, or model failed)", registry=registry
        )
        self.transport_connected = Gauge(
            "ecg_transport_connected",
            "1 while a transport is connected to its broker or bound",
            ["transport"],
            registry=registry,
        )
        self.loop_lag = Gauge(
            "ecg_event_loop_lag_seconds", "How late the event loop ran a timer, latest probe", registry=registry
        )
        self.worker_heartbeat_age = Gauge(
            "ecg_worker_heartbeat_age_seconds",
            "Seconds since the inference worker last finished a batch or went idle",
            registry=registry,
        )
        self.model = Info("ecg_model", "The classifier in use", registry=registry)
        self.model_integrity_failures = Counter(
            "ecg_model_integrity_failures",
            "Model weights refused because their SHA-256 did not match the model card (rules used instead)",
            registry=registry,
        )
        self.pace_pulses = Counter(
            "ecg_pace_pulses_rejected",
            "Pacemaker pulses taken out of the signal before beats are counted (per lead)",
            registry=registry,
        )
        self.other_shard = Counter("ecg_frames_other_shard", "Frames of streams another shard owns", registry=registry)
        self.auth_failures = Counter(
            "ecg_auth_failures",
            "ZeroMQ CURVE clients refused at the handshake (unknown key), by socket (ingest, alarms)",
            ["socket"],
            registry=registry,
        )


class WardCollector(Collector):
    """The beds' state, read when Prometheus scrapes."""

    def __init__(self, ward: Ward) -> None:
        self.ward = ward

    def collect(self) -> Iterator[Metric]:
        w = self.ward
        c = w.counters
        yield GaugeMetricFamily("ecg_active_streams", "Admitted beds", value=len(w.beds))
        yield GaugeMetricFamily("ecg_pending_streams", "Stream ids heard but not yet admitted", value=len(w.pending))
        # Scrapes run in the HTTP server's thread while the loop admits and forgets beds: take
        # the beds in one step (list() of a dict view holds the GIL), never iterate the live dict.
        beds = [b.stream for b in list(w.beds.values()) if b.stream is not None]
        fill = sum(len(s.buffer) / s.buffer.capacity for s in beds) / len(beds) if beds else 0.0
        yield GaugeMetricFamily("ecg_buffer_fill_ratio", "Mean ring-buffer fill over beds", value=fill)
        yield GaugeMetricFamily("ecg_windows_due", "Windows waiting for the classifier", value=w.due_count)
        for name, doc, value in (
            ("ecg_windows_shed", "Due windows shed under overload (oldest first)", c.shed),
            ("ecg_windows_superseded", "Windows merged: the bed came due again before being classified", c.superseded),
            ("ecg_stream_resyncs", "Beds resynchronised after a clock or sequence jump", c.resyncs),
            ("ecg_streams_admitted", "Stream ids admitted as beds", c.admitted),
            ("ecg_streams_forgotten", "Beds forgotten after long silence", c.forgotten),
            ("ecg_pending_evicted", "Pending stream ids pushed out by newer ones", c.pending_evicted),
            ("ecg_alarms_restored", "Active alarms restored at start from the journal state", c.restored),
            ("ecg_windows_stale", "Window results dropped: their bed had a gap or resync since", c.stale_results),
        ):
            yield CounterMetricFamily(name, doc, value=value)
