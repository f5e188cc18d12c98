"""PAUSE: the per-frame R-R gap tracker and the one rule that turns a gap into a PAUSE.

Asystole cannot wait for the next classifier window, so a pause is judged on every frame from a
cheap slope tracker. This module is the only place a PAUSE is decided; the rule-based
classifier's own R-R gap check takes the same threshold from ``DetectionConfig``.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import numpy as np
from numpy.lib.stride_tricks import as_strided
from numpy.typing import NDArray
from scipy import signal

from classifier.constants import MODEL_FS
from classifier.qrs import detect_qrs, rr_deviation
from monitor.core.alarms import Observation
from monitor.core.quality import LeadQuality, lead_quality
from monitor.core.ringbuffer import RingBuffer

#: Slope hits closer than this belong to one QRS complex...
_HIT_GAP_S = 0.12
#: ...unless the complex would grow longer than a QRS can be (VT and VF keep hitting).
_QRS_MAX_S = 0.2
#: The QRS level is learnt from slope maxima per block of this much signal (samples at the model
#: rate, 0.2 s), whatever the sender's frame size: counted in frames, 20 ms frames (most holding
#: no QRS) dragged the level down to the noise within a second of asystole, and hid it.
_BLOCK = round(0.2 * MODEL_FS)
#: Blocks whose maxima form the QRS level (a ring, 12.8 s), how often the level is refreshed
#: (blocks), and how many blocks are learnt before the tracker judges anything (3 s).
_LEVEL_BLOCKS = 64
_LEVEL_EVERY = 8
_LEARN_BLOCKS = 15
#: A slope above this fraction of the QRS level is a QRS hit.
_HIT_FRACTION = 0.35
#: The beat rate that paces a calm bed's evaluations is the median over this many R-R intervals.
_RATE_BEATS = 8
#: Blocks once the open gap is this long (s) no longer feed the level, so a pause cannot lower it.
_LEVEL_FREEZE_GAP_S = 1.5
#: Hits are judged against the level capped by the median of its values over the last minute (one
#: per refresh): a burst of artefact lifts the 90th percentile for 12.8 s, and ordinary beats then
#: fall under 35% of it and look like a pause (CinC 2015 b587l, a false bradycardia alarm).
_SLOW_LEVELS = round(60.0 / (_LEVEL_EVERY * _BLOCK / MODEL_FS))
#: A hit must also swing this far (mV, peak to peak of the low-passed lead over the trailing
#: ``_AMP_SPAN`` samples, 0.1 s):
#: the relative level follows a signal that fades slowly (VF dying out into asystole) down to the
#: noise, and then counts noise as beats. Chosen on the training and validation records (README,
#: How a stream is judged); below all but 0.1% of the QRS complexes of the handheld CinC 2017 lead.
QRS_MIN_MV = 0.125
_AMP_SPAN = 13
#: Mains interference (50 or 60 Hz) is not filtered out by every sender, and it lies in the band
#: the slope follows and swings the lead well past ``QRS_MIN_MV``: 0.05-0.1 mV of it was enough to
#: count as QRS hits through an asystole (with 0.05 and 0.1 mV of 50 Hz added, the tracker alone
#: found 5 and 4 of the 13 annotated pauses of the training and validation records instead of 9;
#: README). So slope and swing are read off the lead low-passed first: a linear-phase FIR (13 taps,
#: 47 ms delay) flat within 3% to 30 Hz, where the QRS slopes are, and down at least 34 dB from
#: 46 Hz to the 64 Hz Nyquist limit, which holds both mains frequencies and their drift. The delay
#: makes a pause alarm 47 ms later; gaps run onset to onset and keep their length.
MAINS_FIR = signal.remez(13, [0.0, 30.0, 46.0, MODEL_FS / 2], [1.0, 0.0], fs=MODEL_FS)


def _p90(x: NDArray[np.float64]) -> NDArray[np.float64]:
    """``np.percentile(x, 90, axis=1)`` (linear interpolation), by partition: a tenth of the cost."""
    n = x.shape[1]
    pos = 0.9 * (n - 1)
    lo = int(pos)
    hi = min(lo + 1, n - 1)
    part = np.partition(x, (lo, hi), axis=1)
    out: NDArray[np.float64] = part[:, lo] + (pos - lo) * (part[:, hi] - part[:, lo])
    return out


def _swing(ext: NDArray[np.float64], lead: NDArray[np.intp], pos: NDArray[np.intp]) -> NDArray[np.float64]:
    """Peak to peak (mV) of ``ext[lead]`` over the ``_AMP_SPAN`` samples ending at ``pos``
    (fewer at a stream's start): computed for the few hit samples only."""
    idx = np.maximum(pos[:, None] - np.arange(_AMP_SPAN)[None, :], 0)
    vals = ext[lead[:, None], idx]
    out: NDArray[np.float64] = vals.max(axis=1) - vals.min(axis=1)
    return out


def _slope(filt: NDArray[np.float64]) -> NDArray[np.float64]:
    """|x[n] - x[n-2]| of each low-passed lead, for the samples with two behind them: what the
    tracker calls a QRS hit and learns its level from, in ``update`` and ``relearn`` alike."""
    out: NDArray[np.float64] = np.abs(filt[:, 2:] - filt[:, :-2])
    return out


def _lowpass(raw: NDArray[np.float64]) -> NDArray[np.float64]:
    """``MAINS_FIR`` over (2, n) raw samples: the n - 12 outputs that have every tap behind them, as
    one strided product (a few microseconds at a frame's 26 samples)."""
    k = MAINS_FIR.size
    c, m = raw.shape
    s0, s1 = raw.strides
    windows = as_strided(raw, (c, m - k + 1, k), (s0, s1, s1), writeable=False)
    out: NDArray[np.float64] = windows @ MAINS_FIR  # symmetric taps: no reversal needed
    return out


@dataclass(slots=True)
class PauseTracker:
    """Cheap per-frame R-R gap check on the model-rate signal.

    The slope over two samples (x[n] - x[n-2]) of each lead, low-passed first against mains
    interference (``MAINS_FIR``; together about 8-30 Hz at 128 Hz), follows the lead; a
    slope above 35% of the typical QRS slope (90th percentile of recent maxima per 0.2 s of
    signal, at most the median of that over the last minute) counts as a hit when the low-passed
    lead also swings ``QRS_MIN_MV`` within 0.1 s, and hits are grouped into QRS complexes. Gaps run from
    QRS onset to QRS onset, like the R-R interval they stand for (timing from the end of a QRS
    would shorten every gap by the QRS width). A gap that ends inside a frame is kept in ``closed_gap``, so
    a pause a little over the threshold is not lost between two frame ends. The open gap grows
    between frames, never on missing data. Plain numpy on a few dozen samples a frame.
    """

    raw_tail: NDArray[np.float64] | None = None  # the last 12 raw samples of each lead, for the filter
    prev: NDArray[np.float64] | None = None  # the last _AMP_SPAN low-passed samples of each lead
    min_mv: float = QRS_MIN_MV
    maxima: NDArray[np.float64] = field(default_factory=lambda: np.zeros((2, _LEVEL_BLOCKS)))
    n_max: int = 0  # blocks learnt
    block_peak: NDArray[np.float64] = field(default_factory=lambda: np.zeros(2))
    block_fill: int = 0  # samples in the block being filled
    levels: NDArray[np.float64] = field(default_factory=lambda: np.zeros((2, _SLOW_LEVELS)))  # the last minute's
    n_levels: int = 0
    hit_level: NDArray[np.float64] = field(default_factory=lambda: np.zeros(2))  # the latest, capped by their median
    last_beat_t: float | None = None  # onset of the latest QRS, stream seconds
    last_hit_t: float | None = None
    closed_gap: float = 0.0  # longest onset-to-onset gap that ended in the latest frame, s
    closed_at: float = 0.0  # when that gap ended (the onset of the QRS that closed it)
    usable: NDArray[np.bool_] = field(default_factory=lambda: np.ones(2, dtype=bool))
    onsets: deque[float] = field(default_factory=lambda: deque(maxlen=_RATE_BEATS + 1))  # latest QRS onsets
    #: Stream time of each lead's latest QRS hit (-inf: none yet): a lead that never showed the
    #: beat that opened a gap cannot tell that none followed.
    lead_hit_t: NDArray[np.float64] = field(default_factory=lambda: np.full(2, -np.inf))
    #: Whether a QRS was seen since the tracker last started over (a gap in the data, leads back).
    #: Until one is, it cannot say there is no pause: the asystole that was under way when the data
    #: broke off may still be going on, and a "no pause" then would resolve its alarm.
    beat_seen: bool = False
    next_recheck_t: float = -np.inf  # stream time of the next ``rhythm_back`` check in a long gap

    def steady_rate_bpm(self, tolerance: float = 0.15) -> float:
        """Heart rate from the latest QRS onsets (median R-R) when every one of those R-R intervals
        lies within ``tolerance`` of their median (not AF, not a run of ectopy); NaN otherwise, or
        while too few are seen. (A slowing to a pause is the PAUSE rule's business.)"""
        if len(self.onsets) < 4:
            return float("nan")
        med, dev = rr_deviation(np.diff(np.asarray(self.onsets)))
        if not np.all(np.abs(dev) <= tolerance):
            return float("nan")
        return 60.0 / max(med, 1e-3)

    def set_usable(self, usable: NDArray[np.bool_], t: float) -> None:
        """Which leads count, from the window analysis' lead quality, known at stream time ``t``.

        While no lead counts nothing is judged, and a gap must not span that time: it restarts
        when a lead comes back, or a lead that was off for a minute returns as a minute's asystole.
        """
        back = not self.usable.any() and bool(np.any(usable))
        self.usable = np.asarray(usable, dtype=bool)
        if back:
            self.last_beat_t = t if self.last_beat_t is None else max(self.last_beat_t, t)
            self.last_hit_t = None
            self.onsets.clear()
            self.beat_seen = False

    def reset(self) -> None:
        self.onsets.clear()
        self.raw_tail = None
        self.prev = None
        self.n_max = 0
        self.n_levels = 0
        self.block_peak = np.zeros(2)
        self.block_fill = 0
        self.last_beat_t = None
        self.last_hit_t = None
        self.closed_gap = 0.0
        self.lead_hit_t = np.full(2, -np.inf)
        self.beat_seen = False
        self.next_recheck_t = -np.inf

    def relearn(self, stretch: NDArray[np.floating], last_beat_t: float) -> None:
        """Learn the QRS level afresh from ``stretch`` (2, n), model rate, which ``rhythm_back``
        found holding a steady rhythm whose latest QRS began at ``last_beat_t``; the gap ends there."""
        x = np.nan_to_num(np.asarray(stretch, dtype=np.float64))
        slope = _slope(_lowpass(x))
        nb = slope.shape[1] // _BLOCK
        if nb == 0:
            return
        peaks = slope[:, : nb * _BLOCK].reshape(2, nb, _BLOCK).max(axis=2)
        self.maxima = np.resize(peaks, (2, _LEVEL_BLOCKS)).astype(np.float64)
        self.n_max = _LEVEL_BLOCKS
        level = _p90(self.maxima)
        self.levels = np.repeat(level[:, None], _SLOW_LEVELS, axis=1)
        self.n_levels = _SLOW_LEVELS
        self.hit_level = level
        self.last_beat_t, self.last_hit_t = last_beat_t, None
        self.onsets.clear()
        self.lead_hit_t = np.where(self.usable, last_beat_t, self.lead_hit_t)
        self.closed_gap = 0.0
        self.beat_seen = True

    def update(self, block: NDArray[np.float32], t_end: float) -> None:
        """Feed a (2, n) model-rate block whose last sample is at stream time ``t_end``."""
        n = block.shape[1]
        self.closed_gap = 0.0
        if n == 0:
            return
        x = block.astype(np.float64)
        x[np.isnan(x)] = 0.0  # (nan_to_num's checks cost more than this at 26 samples)
        raw = x if self.raw_tail is None else np.concatenate([self.raw_tail, x], axis=1)
        self.raw_tail = raw[:, -(MAINS_FIR.size - 1) :].copy()
        if raw.shape[1] < MAINS_FIR.size:
            return
        filt = _lowpass(raw)  # ends with the frame's last sample, like ``block``
        old = 0 if self.prev is None else self.prev.shape[1]
        ext = filt if self.prev is None else np.concatenate([self.prev, filt], axis=1)
        self.prev = ext[:, -_AMP_SPAN:].copy()
        first = max(old, 2)  # the first new sample with two before it
        if ext.shape[1] <= first:
            return
        slope = _slope(ext[:, first - 2 :])  # aligned with the last len-first samples
        if self.n_max > _LEARN_BLOCKS:
            hits = (slope >= _HIT_FRACTION * self.hit_level[:, None]) & self.usable[:, None]
            if hits.any():
                if self.min_mv > 0.0:
                    lead, col = np.nonzero(hits)
                    low = _swing(ext, lead, first + col) < self.min_mv
                    if low.any():
                        hits[lead[low], col[low]] = False
                cols = np.flatnonzero(hits.any(axis=0))
                if cols.size:
                    m = slope.shape[1]
                    self._group_hits(t_end - (m - 1 - cols) / MODEL_FS)
                    last = m - 1 - np.argmax(hits[:, ::-1], axis=1)  # each lead's latest hit
                    self.lead_hit_t = np.where(hits.any(axis=1), t_end - (m - 1 - last) / MODEL_FS, self.lead_hit_t)
        else:
            self.last_beat_t = t_end  # still learning the QRS level: no judgement yet
        self._learn(slope, t_end)

    def _learn(self, slope: NDArray[np.float64], t_end: float) -> None:
        """Fold the frame's slopes into 0.2 s blocks; each full block's maxima feed the level."""
        i, m = 0, slope.shape[1]
        while i < m:
            take = min(_BLOCK - self.block_fill, m - i)
            self.block_peak = np.maximum(self.block_peak, slope[:, i : i + take].max(axis=1))
            self.block_fill += take
            i += take
            if self.block_fill < _BLOCK:
                break
            # Blocks inside a pause must not drag the QRS level down.
            if self.gap(t_end) < _LEVEL_FREEZE_GAP_S:
                self.maxima[:, self.n_max % _LEVEL_BLOCKS] = self.block_peak
                self.n_max += 1
                if self.n_max == _LEARN_BLOCKS or (self.n_max > _LEARN_BLOCKS and self.n_max % _LEVEL_EVERY == 0):
                    level = _p90(self.maxima[:, : min(self.n_max, _LEVEL_BLOCKS)])
                    self.levels[:, self.n_levels % _SLOW_LEVELS] = level
                    self.n_levels += 1
                    slow = np.median(self.levels[:, : min(self.n_levels, _SLOW_LEVELS)], axis=1)
                    self.hit_level = np.minimum(level, slow)
            self.block_peak = np.zeros(2)
            self.block_fill = 0

    def _group_hits(self, times: NDArray[np.float64]) -> None:
        onset, last = self.last_beat_t, self.last_hit_t
        for t in times.tolist():
            if last is None or onset is None or t - last > _HIT_GAP_S or t - onset > _QRS_MAX_S:
                if onset is not None and t - onset > self.closed_gap:
                    self.closed_gap, self.closed_at = t - onset, t
                onset = t
                self.onsets.append(t)
                self.beat_seen = True
            last = t
        self.last_beat_t, self.last_hit_t = onset, last

    def gap(self, now: float) -> float:
        return 0.0 if self.last_beat_t is None else now - self.last_beat_t

    def witness_lost(self, onset: float) -> bool:
        """Whether the QRS at ``onset`` (that opened the gap) was seen only on leads that no longer
        count. The lead left over never showed it, so its silence says nothing: a near-flat ICU
        lead that takes over when the lead carrying the beats turns noisy would otherwise report
        every second after as asystole. A gap that no lead opened (leads just back, or asystole
        from the start) is still judged."""
        seen = self.lead_hit_t >= onset - 1.0 / MODEL_FS
        return bool(seen.any() and not (seen & self.usable).any())


#: The QRS level is frozen while a gap lasts (a pause must not lower it), so beats that come back
#: smaller than 35% of it (an electrode or gain change, a wide escape rhythm) would never count and
#: the PAUSE alarm would never resolve. Once a pause is this far past the threshold (s), the newest
#: ``_BACK_SPAN_S`` are checked once a second for a rhythm that came back: ``_BACK_MIN_BEATS`` or
#: more QRS complexes from the classifier's detector, every R-R within ``_BACK_RR_TOLERANCE`` of
#: their median and that median under the pause threshold, complexes alike (median correlation with
#: their median beat >= ``_BACK_CORR``) and swinging ``_BACK_MIN_MV`` or more. Noise and fibrillation
#: do not make such a train; an escape or paced rhythm does, and so do the P waves of ventricular
#: standstill (an asystole), which is why the floor is well above ``QRS_MIN_MV``: a P wave rarely
#: swings more than 0.25 mV. A smaller returning QRS keeps the alarm up, the safe side.
_BACK_AFTER_S = 3.0
_BACK_SPAN_S = 8.0
_BACK_EVERY_S = 1.0
_BACK_MIN_BEATS = 5
_BACK_RR_TOLERANCE = 0.2
_BACK_CORR = 0.9
_BACK_MIN_MV = 0.3


def rhythm_back(stretch: NDArray[np.floating], usable: NDArray[np.bool_], max_rr_s: float) -> float | None:
    """Seconds from the start of ``stretch`` (2, n, model rate, mV) to the onset of the latest QRS
    of a steady rhythm of alike complexes on a usable lead (see ``_BACK_AFTER_S``), or None."""
    h = round(0.06 * MODEL_FS)
    for lead in np.flatnonzero(usable[: stretch.shape[0]]):
        x = np.nan_to_num(np.asarray(stretch[lead], dtype=np.float64))
        beats = detect_qrs(x, MODEL_FS)
        if beats.size < _BACK_MIN_BEATS:
            continue
        med, dev = rr_deviation(np.diff(beats) / MODEL_FS)
        if med >= max_rr_s or float(np.max(np.abs(dev))) > _BACK_RR_TOLERANCE:
            continue
        b = beats[(beats >= h) & (beats + h < x.size)]
        if b.size < _BACK_MIN_BEATS:
            continue
        seg = x[b[:, None] + np.arange(-h, h + 1)[None, :]]
        tmpl = np.median(seg, axis=0)
        if float(np.ptp(tmpl)) < _BACK_MIN_MV:  # the median beat's size: noise averages out
            continue
        seg = seg - seg.mean(axis=1, keepdims=True)
        tmpl = tmpl - tmpl.mean()
        corr = (seg @ tmpl) / np.maximum(np.linalg.norm(seg, axis=1) * np.linalg.norm(tmpl), 1e-12)
        if float(np.median(corr)) < _BACK_CORR:
            continue
        return float(beats[-1]) / MODEL_FS
    return None


#: Never judge a pause from less than this much of its end (s): shorter stretches look flat.
_JUDGE_MAX_S = 2.0
#: Keep clear of the T wave of the beat that opened the gap (s).
_JUDGE_CLEAR_S = 0.5
#: PAUSE confidence at the threshold, and its rise per second beyond it.
PAUSE_BASE_CONFIDENCE = 0.7
PAUSE_CONFIDENCE_PER_S = 0.05


def pause_confidence(gap_s: float, threshold_s: float) -> float:
    """Confidence of a PAUSE: 0.7 at the threshold, +0.05 per second beyond, at most 0.99."""
    return float(min(0.99, PAUSE_BASE_CONFIDENCE + PAUSE_CONFIDENCE_PER_S * (gap_s - threshold_s)))


def pause_observation(
    tracker: PauseTracker,
    now: float,
    valid_s: float,
    buffer: RingBuffer,
    threshold_s: float,
) -> Observation | None:
    """The PAUSE rule: no QRS for ``threshold_s`` of valid signal, on a lead that is not off.

    ``now`` is the stream time of the newest sample, ``valid_s`` the gap-free seconds behind it and
    ``buffer`` the bed's model-rate ring buffer (read only when a gap reaches the threshold).
    Both the open gap and one that closed inside the latest frame count: a 3.1 s pause can end
    between two frame ends without either of them seeing 3.0 s. Returns a positive observation,
    a negative one (no gap of that length), or None (cannot judge: no usable lead, too little
    data, no QRS seen yet since the tracker started over, the beat before the gap seen only on
    leads that no longer count, or every lead flat, which is a LEADS_OFF and never an asystole).
    """
    if not tracker.usable.any():
        return None
    gap, end = tracker.gap(now), now
    if tracker.closed_gap > gap:
        gap, end = tracker.closed_gap, tracker.closed_at
    if gap < threshold_s:
        return Observation(False, now) if tracker.beat_seen else None
    if gap >= threshold_s + _BACK_AFTER_S and end == now and now >= tracker.next_recheck_t:
        tracker.next_recheck_t = now + _BACK_EVERY_S
        n = min(int(_BACK_SPAN_S * MODEL_FS), int(valid_s * MODEL_FS), len(buffer))
        if n >= int(_BACK_SPAN_S * MODEL_FS):
            stretch = buffer.latest(n)
            back = rhythm_back(stretch, tracker.usable, threshold_s)
            if back is not None:
                tracker.relearn(stretch, now - (n - 1) / MODEL_FS + back)
                return Observation(False, now)
    onset = end - gap
    if valid_s < now - onset or tracker.witness_lost(onset):
        return None
    # Judge the end of the gap, clear of the beat that opened it and of any that closed it.
    since_end = round((now - end) * MODEL_FS)
    span = int(min(gap - _JUDGE_CLEAR_S, _JUDGE_MAX_S) * MODEL_FS)
    if span <= 0 or len(buffer) < span + since_end:
        return None
    stretch = buffer.latest(span + since_end)[:, :span]
    if all(lead_quality(stretch[i], MODEL_FS) in (LeadQuality.FLAT, LeadQuality.MISSING) for i in range(2)):
        return None
    return Observation(
        True,
        now,
        pause_confidence(gap, threshold_s),
        onset,
        "rules",
        f"no QRS for {gap:.2f} s (threshold {threshold_s:.1f} s)",
    )
