"""Seeded, YAML-configured fault injection for the instrument link and the instrument.

Two seams, because ``aexp`` (which holds the server) may not import ``simulators``:

- link faults -- delayed reply, dropped reply, server restart mid-measurement -- are a
  :class:`ServerFaults` object passed to :class:`aexp.link.serve.InstrumentServer` as its ``hooks``
  (the :class:`aexp.link.serve.ServerHooks` protocol): the server asks it, per request, what to do;
- instrument faults -- NaN or saturated spectra, refusal of a position, sudden probe blur -- are a
  :class:`FaultyInstrument` wrapping any Instrument, so they happen "inside the microscope".

``aexp serve --faults FILE.yaml`` finds :func:`apply_faults` through the entry-point group
``aexp.faults`` (name ``yaml``) and gets both.

A fault plan (every block optional; ``probability`` per request / per measurement)::

    seed: 0
    methods: [measure, survey, status, describe, ping, lease]   # requests link faults may hit
    delay:    {probability: 0.05, seconds: 1.0}   # reply held back this long (beyond the deadline)
    drop:     {probability: 0.05}                 # the command runs, its reply never leaves
    restart:  {probability: 0.05, down_s: 0.2}    # on a measure, before it completes: the server
                                                  # forgets leases and stored results, rebinds
    nan:      {probability: 0.05, fraction: 0.1}  # that fraction of channels become NaN
    saturate: {probability: 0.05, gain: 10, level: 65535}  # detector clipped at ``level``
    refuse:   {probability: 0.05}                 # OutOfBounds: the stage refuses the position
    blur:     {probability: 0.05, sigma_px: 1.5, sigma_channels: 2.0}
              # the probe blurs from then on (cumulative): later surveys are Gaussian-blurred by
              # the total sigma_px, later spectra broadened by the total sigma_channels

Draws come from ``rng_for(seed, kind, n)`` with ``n`` counting the requests (or measurements) that
kind has seen, so a plan replays the same way for the same sequence of requests.

Example:
    >>> instrument, hooks = apply_faults(PlasmonicSimulator(seed=0), "faults.yaml")
    >>> InstrumentServer(instrument, ServerConfig(), hooks=hooks).serve()
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aexp.instrument import Instrument, OutOfBounds
from aexp.link.serve import ServerAction
from aexp.types import Bounds, InstrumentDescription, Measurement, Step, Survey

from .common import gaussian_blur, options_error, rng_for

__all__ = [
    "FaultPlan", "ServerFaults", "FaultyInstrument", "load_fault_plan", "apply_faults", "CampaignAudit",
    "audit_campaign",
]


class _Fault(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    probability: float = Field(0.0, ge=0, le=1, description="chance per request or measurement")


class DelayFault(_Fault):
    seconds: float = Field(1.0, gt=0, description="how late the reply leaves")


class RestartFault(_Fault):
    down_s: float = Field(0.2, ge=0, description="time the server is gone")


class NanFault(_Fault):
    fraction: float = Field(0.1, gt=0, le=1, description="fraction of channels set to NaN")


class SaturateFault(_Fault):
    gain: float = Field(10.0, gt=0, description="signal multiplied by this before clipping")
    level: float = Field(65535.0, gt=0, description="detector full scale")


class BlurFault(_Fault):
    sigma_px: float = Field(1.5, ge=0, description="survey blur added per event (pixels)")
    sigma_channels: float = Field(2.0, ge=0, description="spectral broadening added per event (channels)")


class FaultPlan(BaseModel):
    """Which faults happen, how often, seeded. See the module docstring for the YAML shape."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, ge=0)
    methods: list[str] = Field(
        default_factory=lambda: ["measure", "survey", "status", "describe", "ping", "lease"],
        description="requests that link faults (delay, drop) may hit; restart hits measure only",
    )
    delay: DelayFault = Field(default_factory=DelayFault)
    drop: _Fault = Field(default_factory=_Fault)
    restart: RestartFault = Field(default_factory=RestartFault)
    nan: NanFault = Field(default_factory=NanFault)
    saturate: SaturateFault = Field(default_factory=SaturateFault)
    refuse: _Fault = Field(default_factory=_Fault)
    blur: BlurFault = Field(default_factory=BlurFault)


class _Dice:
    """Seeded draws per fault kind; counts what was injected."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.draws: collections.Counter[str] = collections.Counter()
        self.injected: collections.Counter[str] = collections.Counter()

    def roll(self, kind: str, probability: float) -> bool:
        n = self.draws[kind]
        self.draws[kind] += 1
        hit = probability > 0 and rng_for(self.seed, f"fault-{kind}", n).random() < probability
        if hit:
            self.injected[kind] += 1
        return hit


class ServerFaults:
    """Link faults as :class:`aexp.link.serve.ServerHooks`: at most one of restart, drop, delay per request."""

    def __init__(self, plan: FaultPlan) -> None:
        self.plan = plan
        self.dice = _Dice(plan.seed)

    @property
    def injected(self) -> dict[str, int]:
        return dict(self.dice.injected)

    def on_request(self, method: str, params: dict[str, Any]) -> ServerAction:
        p = self.plan
        if method == "measure" and self.dice.roll("restart", p.restart.probability):
            return ServerAction("restart", p.restart.down_s)
        if method in p.methods and self.dice.roll("drop", p.drop.probability):
            return ServerAction("drop")
        if method in p.methods and self.dice.roll("delay", p.delay.probability):
            return ServerAction("delay", p.delay.seconds)
        return ServerAction()


def _blur_1d(spectrum: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian broadening along the channels, mirrored at the ends (as the survey blur)."""
    radius = max(1, int(np.ceil(4 * sigma)))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    padded = np.pad(spectrum, radius, mode="symmetric")
    return np.convolve(padded, taps / taps.sum(), mode="valid")


class FaultyInstrument:
    """Wraps an Instrument; measurements and surveys suffer the plan's instrument faults."""

    def __init__(self, inner: Instrument, plan: FaultPlan) -> None:
        self.inner = inner
        self.plan = plan
        self.dice = _Dice(plan.seed)
        self.blur_px = 0.0
        self.blur_channels = 0.0

    @property
    def injected(self) -> dict[str, int]:
        return dict(self.dice.injected)

    @property
    def bounds(self) -> Bounds:
        return self.inner.bounds

    def describe(self) -> InstrumentDescription:
        return self.inner.describe()

    def survey(self) -> Survey:
        s = self.inner.survey()
        if self.blur_px <= 0:
            return s
        image = np.stack([gaussian_blur(c, self.blur_px) for c in s.image]).astype(np.float32)
        return Survey(image, s.transform, s.channels)

    def measure(self, position: tuple[float, float], command_id: str = "") -> Measurement:
        p = self.plan
        if self.dice.roll("refuse", p.refuse.probability):
            raise OutOfBounds(
                f"the instrument refused position (x={position[0]:.4g} m, y={position[1]:.4g} m) "
                f"(simulated interlock), command {command_id!r}"
            )
        if self.dice.roll("blur", p.blur.probability):
            self.blur_px += p.blur.sigma_px
            self.blur_channels += p.blur.sigma_channels
        m = self.inner.measure(position, command_id=command_id)
        spectrum = np.array(m.spectrum, dtype=float)  # a copy: the inner one may be shared
        if self.blur_channels > 0:
            spectrum = _blur_1d(spectrum, self.blur_channels)
        if self.dice.roll("saturate", p.saturate.probability):
            spectrum = np.minimum(spectrum * p.saturate.gain, p.saturate.level)
        if self.dice.roll("nan", p.nan.probability):
            n = max(1, int(round(p.nan.fraction * spectrum.size)))
            spectrum[rng_for(p.seed, "fault-nan-channels", self.dice.draws["nan"]).choice(spectrum.size, n, replace=False)] = np.nan
        m.spectrum = spectrum
        return m


def load_fault_plan(path: str | Path) -> FaultPlan:
    """Read a fault plan; errors name the file and the key at fault."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as exc:
        raise ValueError(f"{path}: cannot read fault plan: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: malformed YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a fault plan is a mapping of fault kinds")
    try:
        return FaultPlan.model_validate(data)
    except ValidationError as exc:
        raise options_error(exc, f"fault plan {path}", FaultPlan.model_fields) from None


def apply_faults(
    instrument: Instrument, plan: FaultPlan | str | Path, seed: int | None = None
) -> tuple[FaultyInstrument, ServerFaults]:
    """The instrument wrapped in its faults, and the server hooks of the link faults.

    ``seed`` (when given) replaces the plan's seed. Entry point ``aexp.faults: yaml``.
    """
    if not isinstance(plan, FaultPlan):
        plan = load_fault_plan(plan)
    if seed is not None:
        plan = plan.model_copy(update={"seed": int(seed)})
    return FaultyInstrument(instrument, plan), ServerFaults(plan)


@dataclass
class CampaignAudit:
    """What a fault-injected campaign lost, from the steps it recorded and the server's executed log.

    Attributes:
        steps: steps recorded by the client.
        budget: steps the campaign was asked for.
        duplicates: command ids the instrument executed more than once (each is a second exposure).
        lost_steps: steps missing from the record, plus steps that failed because the link gave
            up (``InstrumentTimeout``) or a result that ran was lost on the way back.
        unrecorded: command ids the instrument executed that no recorded step carries.
        failed_by_instrument: steps the instrument itself failed (refusals, NaN spectra): recorded,
            not lost.
    """

    steps: int
    budget: int
    duplicates: list[str]
    lost_steps: int
    unrecorded: list[str]
    failed_by_instrument: int

    @property
    def clean(self) -> bool:
        return not self.duplicates and self.lost_steps == 0 and not self.unrecorded


_LINK_FAILURES = ("InstrumentTimeout", "its result was lost", "no longer kept")


def audit_campaign(executed_ids: list[str], steps: list[Step], budget: int) -> CampaignAudit:
    """Compare a campaign's recorded steps with the ids its server executed."""
    counts = collections.Counter(executed_ids)
    recorded = {s.command_id for s in steps}
    link_failed = [s for s in steps if s.error and any(k in s.error for k in _LINK_FAILURES)]
    return CampaignAudit(
        steps=len(steps),
        budget=budget,
        duplicates=sorted(cid for cid, n in counts.items() if n > 1),
        lost_steps=(budget - len(steps)) + len(link_failed),
        unrecorded=sorted(set(counts) - recorded),
        failed_by_instrument=sum(1 for s in steps if s.status != "ok") - len(link_failed),
    )
