"""One bed: everything clinical about one stream, pure and synchronous, with the clock passed in.

``Bedside`` owns the stream state (sequence checks, resampler, ring buffer, pause tracker), the
single PAUSE rule, the technical alarms (NO_SIGNAL, LEADS_OFF), the event trackers, and building
the alarm message. It is fed frames (``on_frame``), classifier window results (``on_result``)
and clock ticks (``on_tick``), and returns the alarms to publish. Nothing here awaits, sleeps or
reads a clock of its own, so its clinical behaviour is tested in milliseconds.

Times: alarm and tracker times are the stream's clock (seconds); ``now`` arguments are the
daemon's monotonic clock, used only to measure silence (a host clock step must not forget or
silence a bed). ``published_at`` is stamped by the daemon when it hands the alarm on.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from classifier.constants import MIN_WINDOW_S, MODEL_FS
from monitor.core.alarms import EventTracker, Observation
from monitor.core.analysis import WindowJob, WindowResult
from monitor.core.detection import DetectionConfig
from monitor.core.display import TelemetryCursor, cut_strip, telemetry
from monitor.core.pause import pause_observation
from monitor.core.quality import LeadQuality
from monitor.core.stream import IngestResult, StreamState
from protocol.alarm import AF, LEADS_OFF, NO_SIGNAL, PAUSE, PRIORITY, VTACH, Alarm, AlarmState
from protocol.strip import Strip, Telemetry
from protocol.wire import Frame

#: Onsets of these events carry a strip (NO_SIGNAL has no signal to show).
STRIP_EVENTS = frozenset({VTACH, AF, PAUSE, LEADS_OFF})
#: Strips not taken by the daemon are kept this many per bed at most (the core alone, in tests).
MAX_HELD_STRIPS = 8


@dataclass(slots=True)
class FrameOutcome:
    """What one accepted frame did, for the daemon's counters, and the alarms it raised."""

    alarms: list[Alarm] = field(default_factory=list)
    ingest: IngestResult | None = None
    due: bool = False
    admitted: bool = False  # this frame admitted the bed


class Bedside:
    def __init__(self, stream_id: str, config: DetectionConfig, now: float, model_version: str = "rules") -> None:
        self.stream_id = stream_id
        self.config = config
        self.model_version = model_version
        self.stream: StreamState | None = None
        self.trackers: dict[str, EventTracker] = {}
        self.admitted = False
        self.last_now = now  # monotonic time of the newest frame (or of the restore)
        self.t_ref = math.nan  # stream time of the newest sample (or of the restored alarms)
        self.gap_open = False  # NO_SIGNAL raised for silence; resolves when data flows again
        self.last_eval_total = 0
        self.suspect = False  # last verdict abnormal or unsure: evaluate again sooner
        # Latest verdict, for the console and the station.
        self.heart_rate = math.nan
        self.current = "-"
        self.confidence = 0.0
        self.quality: tuple[str, str] = ("-", "-")
        #: Strips cut at onsets, by strip id, until the daemon takes them with their alarm.
        self.strips: dict[str, Strip] = {}
        self._telemetry = TelemetryCursor()

    # -- inputs -------------------------------------------------------------------------

    def on_frame(self, frame: Frame, now: float) -> FrameOutcome:
        """Take one decoded frame of this bed; raise ``WireError`` to reject it (nothing changes)."""
        cfg = self.config
        if self.stream is None:
            self.stream = StreamState(self.stream_id, frame.fs, frame.samples.shape[0], cfg.buffer_s, cfg.resync_frames)
        st = self.stream
        prev_end = st.t_end
        elapsed = now - self.last_now
        result = st.ingest(frame)
        out = FrameOutcome(ingest=result)
        self.last_now, self.t_ref = now, st.t_end
        if not self.admitted and st.contiguous_s >= cfg.admit_after_s:
            self.admitted = out.admitted = True
        alarms = out.alarms
        if result.resynced:
            # The stream clock stepped: move the alarm state with it by the part of the jump
            # that time passing does not explain, so latching and clearing keep their lengths.
            # (clock time from the old frame's end to the new one's end, less the time between them)
            step = result.resync_s + frame.duration - max(0.0, elapsed)
            for tracker in self.trackers.values():
                tracker.shift(step)
            alarms += self._observe(
                NO_SIGNAL,
                Observation(
                    True,
                    frame.t0,
                    1.0,
                    frame.t0,
                    "rules",
                    f"stream resynchronised: its clock jumped {result.resync_s:+.1f} s, or its sequence or "
                    f"format changed; the data between is lost",
                ),
                now,
            )
            self.gap_open = True
        elif result.gap_s > 0 or result.restarted:
            onset = prev_end if math.isfinite(prev_end) else frame.t0
            alarms += self._observe(
                NO_SIGNAL,
                Observation(
                    True, frame.t0, 1.0, onset, "rules", f"no data for {result.gap_s:.1f} s (gap in the stream)"
                ),
                now,
            )
            self.gap_open = True
        elif self.gap_open:
            alarms += self._observe(NO_SIGNAL, Observation(False, st.t_end, 1.0, explanation="data flowing"), now)
            self.gap_open = NO_SIGNAL in self.trackers and self.trackers[NO_SIGNAL].active
        obs = pause_observation(
            st.pause,
            st.t_end,
            st.valid_samples / MODEL_FS,
            st.buffer,
            cfg.pause_threshold_s,
        )
        if obs is not None:
            alarms += self._observe(PAUSE, obs, now)
        new = st.buffer.total - self.last_eval_total
        due = new >= (cfg.suspect_hop_s if self.suspect else cfg.hop_s) * MODEL_FS
        if due and not self.suspect and new < cfg.calm_hop_s * MODEL_FS and self._calm(st):
            due = False  # a calm bed waits for calm_hop_s: judged only when it would decide
        if due:
            self.last_eval_total = st.buffer.total
            out.due = st.valid_samples >= MIN_WINDOW_S * MODEL_FS
        return out

    def _calm(self, st: StreamState) -> bool:
        """Nothing to watch closely: a confident NORMAL, no rhythm alarm, slow steady beats now."""
        if self.current != "NORMAL" or self.confidence < self.config.suspect_below:
            return False
        if any(self.trackers[e].active for e in (VTACH, AF, PAUSE) if e in self.trackers):
            return False
        return st.pause.steady_rate_bpm() < self.config.calm_below_bpm  # NaN (not steady) is not calm

    def take_window(self) -> WindowJob | None:
        """The window to classify now: the newest gap-free ``window_s``, or None while filling."""
        st = self.stream
        if st is None or st.valid_samples < MIN_WINDOW_S * MODEL_FS:
            return None
        sig, t0 = st.window(self.config.window_s)
        rhythm = None
        if self.config.rhythm_context_s > self.config.window_s and st.valid_samples > sig.shape[1]:
            rhythm, _ = st.window(self.config.rhythm_context_s)
        return WindowJob(self.stream_id, sig, t0, rhythm, st.epoch)

    def is_current(self, job: WindowJob) -> bool:
        """False for a window taken before the latest gap or resync: its times are of another stretch."""
        return self.stream is not None and job.epoch == self.stream.epoch

    def on_result(self, r: WindowResult, now: float, *, calm: bool = False) -> list[Alarm]:
        """Take the classifier's verdict on one window of this bed.

        The lead quality of the window also decides which leads the per-frame pause tracker
        reads: a noisy lead's artefact must not count as beats that hide an asystole, and a
        lead that is off must not count at all. ``calm``: the daemon is shedding load, so a
        suspect bed is not re-checked sooner than every hop.
        """
        st = self.stream
        if st is None or not self.is_current(r.job):
            return []
        self.quality = (r.quality[0].value, r.quality[1].value)
        st.pause.set_usable(np.array([q is LeadQuality.OK for q in r.quality]), r.t_end)
        t = r.t_end
        res = r.result
        alarms: list[Alarm] = []
        if res is None:
            self.current, self.confidence, self.heart_rate = LEADS_OFF, 0.0, math.nan
            self.suspect = False
            return self._observe(
                LEADS_OFF,
                Observation(
                    True,
                    t,
                    1.0,
                    r.job.t_start,
                    "rules",
                    f"no usable lead: lead 1 {self.quality[0]}, lead 2 {self.quality[1]}",
                ),
                now,
            )
        alarms += self._observe(LEADS_OFF, Observation(False, t, 1.0, explanation="a lead is usable"), now)
        self.current, self.confidence, self.heart_rate = res.event, res.confidence, res.heart_rate_bpm
        # Re-check sooner only where a quick confirmation matters: a possible VT or pause, or an
        # unsure NORMAL. AF needs 30 s to be an alarm anyway.
        self.suspect = not calm and (
            res.event in (VTACH, PAUSE) or (res.event == "NORMAL" and res.confidence < self.config.suspect_below)
        )
        for event in (VTACH, AF):
            if event == AF and self.trackers.get(VTACH) is not None and self.trackers[VTACH].active:
                continue  # no AF judgement while a VT alarm stands: VT and VF beats look irregular
            present = res.event == event
            alarms += self._observe(
                event,
                Observation(
                    present,
                    t,
                    res.confidence,
                    r.onset_time() if present else None,
                    res.source,
                    res.explanation if present else f"window called {res.event}: {res.explanation}",
                ),
                now,
            )
        return alarms

    def on_tick(self, now: float) -> list[Alarm]:
        """Housekeeping: a bed silent for ``no_signal_s`` (monotonic seconds) raises NO_SIGNAL."""
        silent = now - self.last_now
        if not self.admitted or silent <= self.config.no_signal_s or not math.isfinite(self.t_ref):
            return []
        self.gap_open = True
        return self._observe(
            NO_SIGNAL,
            Observation(True, self.t_ref, 1.0, self.t_ref, "rules", f"no data for {silent:.1f} s"),
            now,
        )

    def restore(self, alarms: list[Alarm], now: float) -> None:
        """Continue alarms that were active when the daemon stopped: same onset, no new onset."""
        self.admitted = True
        self.last_now = now
        for a in alarms:
            policy = self.config.policies.get(a.event)
            if policy is not None and a.stream_id == self.stream_id:
                self.trackers[a.event] = EventTracker.restored(a, policy)
                self.gap_open |= a.event == NO_SIGNAL  # cleared by data flowing again
                self.t_ref = a.detected_time if math.isnan(self.t_ref) else max(self.t_ref, a.detected_time)

    def close(self, now: float, why: str) -> list[Alarm]:
        """The bed is forgotten: resolve what is still active, so no display keeps a stale alarm."""
        out: list[Alarm] = []
        t = self.t_ref + (now - self.last_now) if math.isfinite(self.t_ref) else 0.0
        for event, tracker in self.trackers.items():
            if tracker.active:
                tracker.active = False
                out.append(
                    self._message(
                        event, AlarmState.RESOLVED, Observation(False, t, 0.0, None, "rules", why), tracker, now
                    )
                )
        return out

    # -- display ------------------------------------------------------------------------

    def take_strip(self, strip_id: str) -> Strip | None:
        return self.strips.pop(strip_id, None)

    def telemetry(self) -> Telemetry | None:
        """The screen feed since the last call; None before the bed is admitted."""
        if self.stream is None or not self.admitted:
            return None
        return telemetry(
            self.stream,
            self._telemetry,
            heart_rate=self.heart_rate,
            rhythm=self.current,
            confidence=self.confidence,
            quality=self.quality,
            alarms={ev: PRIORITY[ev] for ev in self.active_alarms()},
        )

    # -- alarms -------------------------------------------------------------------------

    def active_alarms(self) -> list[str]:
        return [ev for ev, tr in self.trackers.items() if tr.active]

    def _observe(self, event: str, obs: Observation, now: float) -> list[Alarm]:
        if not self.admitted:
            return []  # a stream not yet admitted raises nothing: junk ids cannot storm
        tracker = self.trackers.get(event)
        if tracker is None:
            if not obs.present:
                return []
            tracker = self.trackers[event] = EventTracker(event, self.config.policies[event])
        emitted = tracker.observe(obs)
        if emitted is None:
            return []
        state, o = emitted
        alarm = self._message(event, state, o, tracker, now)
        if state is AlarmState.ONSET and event in STRIP_EVENTS and self.stream is not None:
            ok = (self.quality[0] == "ok", self.quality[1] == "ok")
            alarm, strip = cut_strip(self.stream, alarm, ok)
            self.strips[alarm.strip_id] = strip
            while len(self.strips) > MAX_HELD_STRIPS:
                del self.strips[next(iter(self.strips))]
        return [alarm]

    def _message(self, event: str, state: AlarmState, o: Observation, tracker: EventTracker, now: float) -> Alarm:
        return Alarm(
            stream_id=self.stream_id,
            event=event,
            state=state.value,
            priority=PRIORITY[event],
            confidence=round(float(o.confidence), 4),
            onset_time=round(tracker.onset_time, 3),
            detected_time=round(o.time, 3),
            published_at=0.0,  # stamped by the daemon when it hands the alarm on
            source=o.source,
            model_version=self.model_version if o.source == "ml" else "rules",
            explanation=o.explanation,
        )
