"""Synthetic two-lead ECG with scheduled episodes. Pure numpy; times in seconds, mV out.

Each beat is a sum of Gaussian waves (P, Q, R, S, T) in the spirit of ECGSYN (McSharry et
al. 2003), scaled with the R-R interval. AF drops the P wave, makes R-R irregular and adds
fibrillatory waves; VT makes wide, tall complexes at 120-250 bpm; a pause is a stretch
with no beats. Noise, baseline wander and lead-off stretches come on top.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

# (offset s at 60 bpm, width s, amplitude mV lead 1, amplitude mV lead 2)
_NORMAL_WAVES = (
    (-0.20, 0.025, 0.15, 0.10),  # P
    (-0.03, 0.010, -0.12, -0.05),  # Q
    (0.00, 0.012, 1.20, 0.70),  # R
    (0.03, 0.010, -0.25, -0.35),  # S
    (0.28, 0.060, 0.30, 0.20),  # T
)
_VT_WAVES = (
    (0.00, 0.045, 1.6, -1.1),
    (0.10, 0.050, -0.9, 0.8),
    (0.30, 0.080, -0.35, 0.30),
)
SCENARIOS = ("normal", "af", "vt", "pause", "mixed")


@dataclass(frozen=True, slots=True)
class Episode:
    event: str  # AF, VTACH, PAUSE, NOISE, LEAD_OFF
    start: float
    end: float


@dataclass(slots=True)
class PatientSpec:
    base_hr: float
    episodes: list[Episode]
    amp1: float = 1.0
    amp2: float = 1.0
    noise_mv: float = 0.02


def schedule(scenario: str, duration: float, rng: np.random.Generator) -> list[Episode]:
    """Episodes for one patient. The first 20 s are always normal (buffer fill)."""
    if scenario not in SCENARIOS:
        raise ValueError(f"scenario must be one of {', '.join(SCENARIOS)}")
    eps: list[Episode] = []
    t = 20.0 + rng.uniform(0, 10)
    kinds = {
        "normal": [],
        "af": ["AF"],
        "vt": ["VTACH"],
        "pause": ["PAUSE"],
        "mixed": ["AF", "VTACH", "PAUSE", "NOISE", "LEAD_OFF"],
    }[scenario]
    if not kinds:
        return eps
    while t < duration - 15:
        kind = kinds[int(rng.integers(len(kinds)))]
        length = {
            "AF": rng.uniform(40, 90),
            "VTACH": rng.uniform(8, 25),
            "PAUSE": rng.uniform(3.5, 8.0),
            "NOISE": rng.uniform(3, 6),
            "LEAD_OFF": rng.uniform(3, 8),
        }[kind]
        end = min(t + length, duration - 5)
        if kind == "PAUSE" or end - t >= 0.5 * length:
            eps.append(Episode(kind, round(t, 3), round(end, 3)))
        t = end + rng.uniform(25, 45)
    return eps


def make_patient(scenario: str, duration: float, rng: np.random.Generator) -> PatientSpec:
    return PatientSpec(
        base_hr=float(rng.uniform(60, 90)),
        episodes=schedule(scenario, duration, rng),
        amp1=float(rng.uniform(0.7, 1.4)),
        amp2=float(rng.uniform(0.5, 1.2)),
        noise_mv=float(rng.uniform(0.01, 0.03)),
    )


@dataclass(slots=True)
class SyntheticPatient:
    """Renders a patient chunk by chunk; consecutive chunks join seamlessly."""

    spec: PatientSpec
    fs: float
    rng: np.random.Generator
    t: float = 0.0  # time of the next sample to render
    _beats: list[tuple[float, str, float]] = field(default_factory=list)  # (time, kind, rr)
    _next_beat: float = 0.5
    _phase: float = 0.0

    def _state(self, t: float) -> str:
        for e in self.spec.episodes:
            if e.start <= t < e.end and e.event in ("AF", "VTACH", "PAUSE"):
                return e.event
        return "N"

    def _plan_beats(self, until: float) -> None:
        while self._next_beat < until + 1.0:
            tb = self._next_beat
            kind = self._state(tb)
            if kind == "PAUSE":
                end = next(e.end for e in self.spec.episodes if e.event == "PAUSE" and e.start <= tb < e.end)
                self._next_beat = end
                continue
            hr = self.spec.base_hr
            if kind == "AF":
                rr = float(np.clip(self.rng.normal(60 / (hr * 1.3), 0.18), 0.33, 1.6))
            elif kind == "VTACH":
                rr = 60.0 / float(self.rng.uniform(150, 200))
            else:
                rr = 60.0 / hr * (1 + 0.03 * np.sin(2 * np.pi * 0.25 * tb)) + self.rng.normal(0, 0.01)
            # A pause must begin with a beat: don't run a beat into a scheduled pause.
            nxt = tb + rr
            for e in self.spec.episodes:
                if e.event == "PAUSE" and tb < e.start < nxt:
                    nxt = e.start
            self._beats.append((tb, kind, rr))
            self._next_beat = nxt

    def chunk(self, n: int) -> NDArray[np.float32]:
        """The next ``n`` samples as (2, n) mV."""
        t = self.t + np.arange(n) / self.fs
        t_end = self.t + n / self.fs
        self._plan_beats(t_end)
        out = np.zeros((2, n))
        for tb, kind, rr in self._beats:
            if tb < self.t - 1.0 or tb > t_end + 1.0:
                continue
            lo = int(max(0, np.floor((tb - 0.7 - self.t) * self.fs)))
            hi = int(min(n, np.ceil((tb + 0.8 - self.t) * self.fs)))
            if hi <= lo:
                continue
            tt = t[lo:hi] - tb
            waves = _VT_WAVES if kind == "VTACH" else _NORMAL_WAVES
            scale = np.sqrt(min(rr, 1.2))
            for i, (off, width, a1, a2) in enumerate(waves):
                if kind == "AF" and i == 0:
                    continue  # no P wave in AF
                g = np.exp(-0.5 * ((tt - off * scale) / width) ** 2)
                out[0, lo:hi] += a1 * self.spec.amp1 * g
                out[1, lo:hi] += a2 * self.spec.amp2 * g
        self._beats = [b for b in self._beats if b[0] > t_end - 1.0]
        # Fibrillatory waves, baseline wander and noise.
        for e in self.spec.episodes:
            m = (t >= e.start) & (t < e.end)
            if not m.any():
                continue
            if e.event == "AF":
                f = 6.0 + 0.5 * np.sin(2 * np.pi * 0.1 * t[m])
                out[:, m] += 0.06 * np.sin(2 * np.pi * f * t[m])[None, :]
            elif e.event == "NOISE":
                out[:, m] += self.rng.normal(0, 0.25, (2, int(m.sum())))
            elif e.event == "LEAD_OFF":
                out[1, m] = 0.0
        out += 0.1 * np.sin(2 * np.pi * 0.2 * t + self._phase)[None, :]
        out += self.rng.normal(0, self.spec.noise_mv, out.shape)
        self.t = t_end
        return out.astype(np.float32)


def truth_events(spec: PatientSpec) -> list[Episode]:
    """Episodes that should raise a rhythm alarm (noise and lead-off are not rhythms)."""
    return [e for e in spec.episodes if e.event in ("AF", "VTACH", "PAUSE")]
