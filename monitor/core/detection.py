"""The one typed detection config: what the per-bed core, the rules and the classifier share.

Every clinical threshold lives here once. The daemon's ``MonitorConfig`` builds it from its flat
keys; the core, the rule-based classifier (``rule_thresholds``) and the window scheduler read it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from classifier.constants import MAX_WINDOW_S, MIN_WINDOW_S, PAUSE_THRESHOLD_S
from classifier.rules import RuleThresholds
from monitor.core.alarms import DEFAULT_POLICIES, AlarmPolicy


class DetectionConfigError(ValueError):
    """A bad detection setting; the message starts with the setting's name."""


@dataclass(frozen=True, slots=True)
class DetectionConfig:
    """Times in seconds of stream time unless a name says otherwise."""

    #: A window is classified every ``hop_s`` of new data...
    hop_s: float = 2.0
    #: ...or every ``hop_s / suspect_hop_divisor`` while the last verdict was VTACH, PAUSE or an
    #: unsure NORMAL, so an onset is confirmed quickly without doubling the load of normal beds.
    suspect_hop_divisor: int = 4
    #: A NORMAL verdict less confident than this makes the bed a suspect.
    suspect_below: float = 0.8
    #: A calm bed (last verdict a confident NORMAL, no rhythm alarm, and the per-frame beat
    #: tracker seeing a steady rate under ``calm_below_bpm``) is classified every ``calm_hop_s``
    #: instead: most beds are calm, and they cost half. The moment the tracker sees a fast or
    #: irregular rate (VT, VF, AF, noise), the bed is back on ``hop_s``, so a VT is not waited
    #: for. ``calm_hop_s`` equal to ``hop_s`` turns this off.
    calm_hop_s: float = 4.0
    calm_below_bpm: float = 100.0
    #: Length of the window handed to the classifier.
    window_s: float = 10.0
    #: Ring buffer per bed.
    buffer_s: float = 90.0
    #: AF is judged from the R-R intervals and P waves of up to this much gap-free signal (the
    #: network still sees ``window_s``). With the P-wave evidence, 30 s was not better than the
    #: window's own 10 s on validation (reports/af_rr.md), and each window would then cost a QRS
    #: detection over it, so the default is the window.
    rhythm_context_s: float = 0.0  # 0: the window itself
    #: No QRS for this long on a usable lead is a PAUSE (asystole), everywhere it is decided.
    pause_threshold_s: float = PAUSE_THRESHOLD_S
    #: Wall seconds without a frame before NO_SIGNAL.
    no_signal_s: float = 3.0
    #: Consecutive frames that agree with each other but not with the stream's sequence or clock
    #: before the bed resynchronises to them (a glitched frame must not blind a bed).
    resync_frames: int = 5
    #: An admitted bed silent this long (wall s) is forgotten; its active alarms resolve.
    forget_s: float = 600.0
    #: A new stream id becomes an admitted bed after this much contiguous data (stream s). Until
    #: then it raises no technical alarms and is forgotten after ``forget_pending_s``.
    admit_after_s: float = 2.0
    forget_pending_s: float = 10.0
    policies: Mapping[str, AlarmPolicy] = field(default_factory=lambda: MappingProxyType(dict(DEFAULT_POLICIES)))

    def __post_init__(self) -> None:
        _check(0.1 <= self.hop_s <= 10.0, "hop_s", "must be 0.1-10 s")
        _check(1 <= self.suspect_hop_divisor <= 16, "suspect_hop_divisor", "must be 1-16")
        _check(0.0 <= self.suspect_below <= 1.0, "suspect_below", "must be 0-1")
        _check(self.hop_s <= self.calm_hop_s <= 4 * self.hop_s, "calm_hop_s", "must be hop_s to 4 x hop_s")
        _check(40.0 <= self.calm_below_bpm <= 200.0, "calm_below_bpm", "must be 40-200 bpm")
        _check(10.0 <= self.buffer_s <= 600.0, "buffer_s", "must be 10-600 s")
        _check(
            MIN_WINDOW_S <= self.window_s <= min(MAX_WINDOW_S, self.buffer_s),
            "window_s",
            f"must be {MIN_WINDOW_S:.0f}-{MAX_WINDOW_S:.0f} s and fit the buffer",
        )
        _check(
            self.rhythm_context_s == 0.0 or self.window_s <= self.rhythm_context_s <= self.buffer_s,
            "rhythm_context_s",
            "must be 0 (the window) or at least window_s and fit the buffer",
        )
        _check(1.5 <= self.pause_threshold_s <= 10.0, "pause_threshold_s", "must be 1.5-10 s")
        _check(0.5 <= self.no_signal_s <= 60.0, "no_signal_s", "must be 0.5-60 s")
        _check(2 <= self.resync_frames <= 100, "resync_frames", "must be 2-100")
        _check(self.forget_s >= 10.0 * self.no_signal_s, "forget_s", "must be at least 10 x no_signal_s")
        _check(0.0 <= self.admit_after_s <= 60.0, "admit_after_s", "must be 0-60 s")
        _check(1.0 <= self.forget_pending_s <= self.forget_s, "forget_pending_s", "must be 1 s to forget_s")
        missing = {"VTACH", "AF", "PAUSE", "NO_SIGNAL", "LEADS_OFF"} - set(self.policies)
        _check(not missing, "policies", f"missing {sorted(missing)}")

    @property
    def suspect_hop_s(self) -> float:
        return self.hop_s / self.suspect_hop_divisor

    def rule_thresholds(self) -> RuleThresholds:
        """The rule-based classifier's thresholds, with this config's pause threshold."""
        return RuleThresholds(pause_s=self.pause_threshold_s)


def _check(ok: bool, key: str, msg: str) -> None:
    if not ok:
        raise DetectionConfigError(f"{key}: {msg}")
