"""Prometheus metrics of the daemon, on a registry passed in (no global state). Stream ids only."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info


class Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.frames = Counter("ecg_frames_ingested", "Sample frames accepted", ["transport"], registry=registry)
        self.samples = Counter("ecg_samples_ingested", "Samples accepted (per channel)", registry=registry)
        self.rejected = Counter("ecg_frames_rejected", "Frames rejected, by reason", ["reason"], registry=registry)
        self.gaps = Counter("ecg_stream_gaps", "Gaps in a stream's data (missing frames)", registry=registry)
        self.streams = Gauge("ecg_active_streams", "Streams with data in the last minute", registry=registry)
        self.buffer_fill = Gauge("ecg_buffer_fill_ratio", "Mean ring-buffer fill over streams", registry=registry)
        self.batch_size = Histogram(
            "ecg_inference_batch_size",
            "Windows per inference batch",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=registry,
        )
        self.inference_latency = Histogram(
            "ecg_inference_latency_seconds",
            "Wall time of one inference batch",
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
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
        self.alarms_dropped = Counter(
            "ecg_alarms_dropped", "Alarm messages dropped by a full sink queue", ["sink"], registry=registry
        )
        self.skipped = Counter("ecg_windows_skipped", "Windows skipped under overload", registry=registry)
        self.rules_only = Counter(
            "ecg_rules_only_seconds", "Seconds of inference done by the rules alone", registry=registry
        )
        self.model = Info("ecg_model", "The classifier in use", registry=registry)
        self.other_shard = Counter("ecg_frames_other_shard", "Frames of streams another shard owns", registry=registry)
