"""What people see of a bed: the alarm strip behind an onset and the screen telemetry.

Both are cut from the bed's ring buffer (model rate, mV, NaN = no data), so a strip shows
exactly the signal the decision was made on. Pure numpy; times are the stream's clock.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from classifier.constants import MODEL_FS
from classifier.qrs import detect_qrs
from monitor.core.stream import StreamState
from protocol.alarm import Alarm
from protocol.strip import MAX_STRIP_S, PRE_ONSET_S, Strip, Telemetry, strip_id_for

#: Telemetry is decimated from the model rate by this factor (128 -> 64 Hz: enough for a screen
#: tile a few hundred pixels wide, half the bytes).
TELEMETRY_DECIMATE = 2
#: The strip's heart rate is the median over this many newest beats.
RATE_BEATS = 6
#: At most this much waveform per telemetry message; older unsent samples are skipped.
TELEMETRY_MAX_S = 2.0


def cut_strip(st: StreamState, alarm: Alarm, lead_ok: tuple[bool, bool]) -> tuple[Alarm, Strip]:
    """The strip for ``alarm`` (an onset): from ``PRE_ONSET_S`` before onset to the newest sample,
    at most ``MAX_STRIP_S``. Returns the alarm with its ``strip_id`` set, and the strip."""
    start = max(alarm.onset_time - PRE_ONSET_S, st.t_end - MAX_STRIP_S)
    n = round((st.t_end - start) * MODEL_FS)
    n = max(0, min(n, len(st.buffer), int(MAX_STRIP_S * MODEL_FS)))
    sig = st.buffer.latest(n)
    t0 = st.t_end - sig.shape[1] / MODEL_FS
    leads = tuple(sig[i] for i in range(sig.shape[0]) if i == 0 or np.isfinite(sig[i]).any())
    beats, hr = _beats(sig, lead_ok)
    linked = replace(alarm, strip_id=strip_id_for(alarm))
    return linked, Strip(linked, t0=t0, fs=MODEL_FS, leads=leads, beats=beats, heart_rate=hr)


def _beats(sig: np.ndarray, lead_ok: tuple[bool, bool]) -> tuple[tuple[int, ...], float]:
    """Beats on the usable lead with the most data (lead 1 when neither is judged usable)."""
    if sig.shape[1] < MODEL_FS:
        return (), math.nan
    finite = np.isfinite(sig).sum(axis=1)
    order = sorted(range(sig.shape[0]), key=lambda i: (not lead_ok[i] if i < len(lead_ok) else True, -finite[i]))
    lead = order[0]
    if finite[lead] < MODEL_FS:
        return (), math.nan
    beats = detect_qrs(sig[lead], MODEL_FS)
    # The rate at detection (the last few beats), not the strip's median: a strip of 12 s of
    # sinus and 3 s of VT must not say 86 bpm.
    rr = np.diff(beats[-RATE_BEATS:])
    hr = 60.0 * MODEL_FS / float(np.median(rr)) if rr.size >= 2 else math.nan
    return tuple(int(b) for b in beats), hr


class TelemetryCursor:
    """Remembers how far a bed's telemetry has been sent, so each message carries only new samples."""

    __slots__ = ("sent_total",)

    def __init__(self) -> None:
        self.sent_total = 0

    def take(self, st: StreamState) -> tuple[tuple[np.ndarray, ...], float]:
        """The new samples (decimated, one array per lead) and the stream time just after them."""
        total = st.buffer.total
        new = total - self.sent_total
        if new < 0 or new > len(st.buffer):  # the buffer wrapped past us, or restarted: resume at its end
            new = min(max(new, 0), int(TELEMETRY_MAX_S * MODEL_FS))
            self.sent_total = total - new
        whole = new - new % TELEMETRY_DECIMATE
        cap = int(TELEMETRY_MAX_S * MODEL_FS)
        skip = max(0, whole - cap)
        if whole == 0:
            return (), st.time_of(self.sent_total)
        sig = st.buffer.latest(new)[:, skip:whole]
        self.sent_total += whole
        dec = sig.reshape(sig.shape[0], -1, TELEMETRY_DECIMATE).mean(axis=2)
        leads = tuple(dec[i] for i in range(dec.shape[0]) if i == 0 or np.isfinite(dec[i]).any())
        return leads, st.time_of(self.sent_total)


def telemetry(
    st: StreamState,
    cursor: TelemetryCursor,
    *,
    heart_rate: float,
    rhythm: str,
    confidence: float,
    quality: tuple[str, str],
    alarms: dict[str, str],
) -> Telemetry:
    leads, t_end = cursor.take(st)
    return Telemetry(
        stream_id=st.stream_id,
        t_end=t_end,
        fs=MODEL_FS / TELEMETRY_DECIMATE,
        leads=leads,
        heart_rate=heart_rate,
        rhythm=rhythm,
        confidence=confidence,
        quality=quality,
        alarms=alarms,
    )
