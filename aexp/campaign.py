"""The campaign: the order of calls between a policy and an instrument, and nothing else.

One campaign asks its policy for candidates, sends each to the instrument, tells the policy what
came back and hands every step to a recorder, until its :class:`Budget` ends. The cut follows
Xopt's ``step()`` and bluesky-adaptive's ``ask(n)`` / ``tell(x, y)``: a policy implements
:class:`AskTellPolicy`; the campaign decides *when* to ask (one at a time, ``batch`` at a time, or
while the instrument is still measuring) and the policy *what* to ask for.

Schedules (``pending`` and ``max_in_flight``, see :class:`Schedule`):

- synchronous (default): decide step ``k``, measure it, record it, decide ``k + 1``;
- pending: the instrument runs in a worker thread; while step ``k`` is measured the policy decides
  ``k + 1`` with ``k`` as a pending point. At most ``max_in_flight`` commands are outstanding and
  the decision for step ``k`` always sees exactly the steps that were sent and not yet recorded, so
  the schedule (and every decision) depends on the seed and the data only, never on timing.

Each step records the candidates pending when it was decided (``Step.pending``), so
``replay --verify`` checks the schedule as well as the decisions.

Outage: an :class:`~aexp.instrument.InstrumentUnreachable` is not a failed measurement. The campaign
asks again for the same step (same command id, so a server that did measure answers from its
record) until ``max_outage_s`` has passed since the outage began, then records every completed step
and raises :class:`InstrumentOutage`; the candidate stays available and the attempts are not steps.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import torch

from .config import ConfigError
from .drift import DriftCorrection
from .errors import AexpError
from .instrument import Instrument, InstrumentError, InstrumentUnreachable, OutOfBounds, check_position
from .policies import Decision, Policy, SelectionContext
from .repro import step_rng
from .session.store import Recorder
from .targets import Target
from .types import Candidates, Directive, Measurement, Step

__all__ = [
    "AskTellPolicy",
    "Budget",
    "Campaign",
    "CampaignResult",
    "Clock",
    "Directive",
    "InstrumentOutage",
    "Operator",
    "OperatorRefused",
    "Outcome",
    "Problem",
    "Schedule",
    "SelectAskTell",
    "SystemClock",
    "TravelCost",
    "as_ask_tell",
    "initial_indices",
    "short_tour",
]

StepCallback = Callable[[Step, int], None]


@dataclass
class CampaignResult:
    """What a campaign produced. ``maps`` holds the final model's mean/std/acquisition when it has one."""

    steps: list[Step]
    maps: dict[str, np.ndarray] | None = None
    stop_reason: str = "budget"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok_steps(self) -> list[Step]:
        return [s for s in self.steps if s.status == "ok"]

    @property
    def best(self) -> Step | None:
        ok = [s for s in self.ok_steps if s.target is not None]  # an ok step always has its target
        return max(ok, key=lambda s: float(s.target or 0.0)) if ok else None


class OperatorRefused(AexpError, ValueError):
    """An operator's directive cannot be applied (a candidate already taken, a policy without the
    setting); the operator objects in :mod:`aexp.live` check first, so this is a last guard."""


class InstrumentOutage(AexpError, RuntimeError):
    """The instrument stayed unreachable for longer than ``instrument.max_outage_s``.

    Every completed step is recorded; the step that could not be sent is not a step (its candidate
    stays available). ``aexp resume`` continues once the instrument answers again.

    Attributes:
        seconds: how long the outage had lasted when the campaign gave up.
        result: the steps completed before it.
    """

    def __init__(self, message: str, seconds: float, result: CampaignResult | None = None) -> None:
        super().__init__(message)
        self.seconds = seconds
        self.result = result


# --- budget, clock, schedule ---------------------------------------------------------------------


@dataclass(frozen=True)
class Budget:
    """When a campaign ends: ``measurements`` steps (failed ones count: they cost instrument time),
    ``wall_time_s`` seconds, or ``failures`` failed steps, whichever comes first.

    Example:
        >>> Budget(measurements=20, wall_time_s=3600).stop_reason(steps=20, failed=0, elapsed_s=5.0)
        'budget'
    """

    measurements: int
    wall_time_s: float | None = None
    failures: int | None = None

    def stop_reason(self, steps: int, failed: int, elapsed_s: float) -> str | None:
        """Why no further step may be decided (``None``: go on)."""
        if steps >= self.measurements:
            return "budget"
        if self.wall_time_s is not None and elapsed_s > self.wall_time_s:
            return "wall_time"
        if self.failures is not None and failed >= self.failures:
            return "failures"
        return None


class Clock(Protocol):
    """Time as the campaign sees it: a seam for simulated clocks (tests, real-time twins)."""

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class SystemClock:
    """The process's own clock."""

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


@dataclass(frozen=True)
class Schedule:
    """How decisions and measurements interleave.

    Attributes:
        pending: decide the next point while the instrument measures (in a worker thread).
        max_in_flight: commands outstanding at most while deciding (``pending`` only).
        batch: points chosen jointly per ask once the policy takes over, visited in a short tour.
        max_outage_s: how long the instrument may stay unreachable before the campaign stops.
        rescore: ``pending`` only: when the outcomes in flight at a single decision arrive, take
            the decision again on them before sending it (:meth:`SelectAskTell.rescore`: the
            decision's fit is kept, its posterior conditioned on the measured values).
    """

    pending: bool = False
    max_in_flight: int = 1
    batch: int = 1
    max_outage_s: float = 60.0
    rescore: bool = True

    def __post_init__(self) -> None:
        if self.max_in_flight < 1 or self.batch < 1 or not self.max_outage_s > 0:
            raise ValueError(f"a schedule needs max_in_flight >= 1, batch >= 1, max_outage_s > 0: {self}")

    @property
    def ahead(self) -> int:
        """Commands that may be outstanding while the next one is decided (0: synchronous)."""
        return self.max_in_flight if self.pending else 0


# --- the ask/tell protocol -----------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """What a campaign tells a policy once, before the first ask.

    Attributes:
        features: ``M x D`` candidate features.
        positions: ``M x 2`` instrument ``(x, y)`` of the candidates, metres.
        grid_shape: ``(rows, cols)`` if the candidates are a row-major grid, else ``None``.
        allowed: bool ``M``; ``False`` for candidates that may never be chosen (outside the bounds).
        budget: measurements the campaign may take.
        seed: the run's seed; decision ``k`` draws from :func:`~aexp.repro.step_rng` ``(seed, k)``.
    """

    features: torch.Tensor
    positions: np.ndarray
    grid_shape: tuple[int, int] | None
    allowed: np.ndarray
    budget: int
    seed: int


@dataclass(frozen=True)
class Outcome:
    """The result of one step, as told to the policy: ``target`` is ``None`` for a failed step."""

    step: int
    index: int
    target: float | None


@runtime_checkable
class AskTellPolicy(Protocol):
    """Where a lab plugs in its own policy: asked for candidates, told the results.

    ``ask`` returns ``n`` distinct candidates, none of them measured, failed, outside the bounds or
    in ``pending`` (commands sent and not yet told); ``tell`` hands over the outcomes in step order.
    The ``j``-th candidate of an ask is decision ``step + j`` and may draw only from
    ``step_rng(problem.seed, step + j)``, so a replay asks and draws exactly what the run did.
    A policy is free in how it treats ``pending``; the built-in ones condition on a kriging
    believer (``y_pending = mu(x_pending)``, see :class:`SelectAskTell`).

    Shapes: ``problem.features`` is ``M x D``; ``pending`` holds candidate indices in ``[0, M)``;
    ``ask`` returns ``n`` :class:`~aexp.policies.Decision` (one index each).

    Example:
        >>> policy = as_ask_tell(make_policy("dkl", input_dim=D))
        >>> policy.start(problem)
        >>> policy.tell([Outcome(step=0, index=17, target=3.2), Outcome(1, 40, None)])
        >>> [d.index for d in policy.ask(2, pending=[8], step=3)]
        [112, 5]
    """

    name: str

    def start(self, problem: Problem) -> None: ...

    def ask(self, n: int, pending: Sequence[int] = (), *, step: int) -> list[Decision]: ...

    def tell(self, outcomes: Sequence[Outcome]) -> None: ...


@dataclass(frozen=True)
class TravelCost:
    """A penalty subtracted from the acquisition (gpax's score-then-penalise cut; additive, never a
    division, so negative acquisitions keep their order):

    ``penalty(x) = weight * T(x) + recency_weight * sum_r exp(-|x - x_r|^2 / (2 recency_radius_m^2))``

    ``T(x) = settle_s + |x - x_probe| / stage_speed_m_s`` (seconds, 0 for no move) over the
    ``recency_window`` most recently visited sites ``x_r``. ``x_probe`` is where the probe will be
    when the move starts: the last pending point, or the last one measured.

    Two units (``units``):

    - ``"acquisition"`` (the first form, kept so recorded sessions replay): ``weight`` is in
      acquisition units per second, ``recency_weight`` in acquisition units. Its effect depends on
      the target's units and the acquisition's range on the sample.
    - ``"spread"``: the move's time counts in dwells, ``T(x) / dwell_s``, and both terms are in
      units of the acquisition's spread over the candidates still allowed at that step
      (:func:`~aexp.policies.acquisition_spread`), applied by the policy. Multiplying the target
      (or the acquisition) by a constant, or adding one, leaves every choice where it was;
      ``weight = 1``: a move that takes one dwell costs one spread.

    Attributes:
        weight: per second of travel (``acquisition``) or per dwell of travel (``spread``).
        stage_speed_m_s, settle_s: the stage's speed and settle time per move.
        recency_weight: the penalty at a recently visited site (0: no recency term).
        recency_radius_m: the reach of the recency term (a physical footprint: beam damage, tip wear).
        recency_window: how many recent sites count.
        units: ``"acquisition"`` or ``"spread"``, see above.
        dwell_s: the measurement's own time (``spread`` only): what a move's time is counted in.

    Example:
        >>> cost = TravelCost(weight=1.0, stage_speed_m_s=1e-6, settle_s=0.02, units="spread", dwell_s=0.5)
        >>> cost.penalty(positions, probe=positions[3], recent=positions[[3]])  # M, in spreads
    """

    weight: float = 0.0
    stage_speed_m_s: float = 1e-6
    settle_s: float = 0.0
    recency_weight: float = 0.0
    recency_radius_m: float = 1e-9
    recency_window: int = 10
    units: Literal["acquisition", "spread"] = "acquisition"
    dwell_s: float = 1.0

    def __post_init__(self) -> None:
        if self.units not in ("acquisition", "spread"):
            raise ValueError(f"travel units must be 'acquisition' or 'spread', got {self.units!r}")
        if not self.dwell_s > 0:
            raise ValueError(f"travel dwell_s must be positive, got {self.dwell_s}")

    @property
    def in_spread(self) -> bool:
        """The penalty is in spreads of the acquisition (the policy scales it at each step)."""
        return self.units == "spread"

    def move_s(self, distance_m: np.ndarray | float) -> np.ndarray:
        """Seconds to move ``distance_m`` and settle (0 for no move)."""
        d = np.asarray(distance_m, dtype=np.float64)
        return np.where(d > 0, self.settle_s + d / self.stage_speed_m_s, 0.0)

    def penalty(self, positions: np.ndarray, probe: np.ndarray | None, recent: np.ndarray) -> np.ndarray:
        """``M``-vector of the penalty above; ``positions`` ``M x 2``, ``probe`` ``2``, ``recent`` ``r x 2``."""
        out = np.zeros(len(positions))
        if self.weight > 0 and probe is not None:
            move = self.move_s(np.linalg.norm(positions - probe, axis=1))
            out += self.weight * (move / self.dwell_s if self.in_spread else move)
        if self.recency_weight > 0 and len(recent):
            d2 = ((positions[:, None, :] - recent[None, :, :]) ** 2).sum(-1)
            out += self.recency_weight * np.exp(-d2 / (2 * self.recency_radius_m**2)).sum(1)
        return out


@runtime_checkable
class Operator(Protocol):
    """The person at the microscope, as the campaign sees them: consulted at each decision boundary.

    ``before_decision(k, excluded, steps)`` is called before decision ``k`` with the campaign's
    ``M``-bool mask of candidates that may not be chosen (measured, pending, outside the bounds,
    excluded) and the recorded steps; it may block (a pause) and returns a :class:`Directive`.
    ``review(k, proposed, excluded)`` is called with each single policy decision before it is sent
    (approve mode) and returns a :class:`Directive` whose ``goto`` replaces it. ``decided(k,
    decisions)`` hands over what the policy decided (its maps when asked for). Whatever an
    operator does takes effect at a recorded decision ``k``, so a replay re-applies it exactly.

    Example:
        >>> class StopAt:
        ...     want_maps = False
        ...     def before_decision(self, k, excluded, steps): return Directive(stop=k >= 10)
        ...     def review(self, k, proposed, excluded): return Directive()
        ...     def decided(self, k, decisions): pass
    """

    want_maps: bool

    def before_decision(self, step: int, excluded: np.ndarray, steps: Sequence[Step]) -> Directive: ...

    def review(self, step: int, proposed: int, excluded: np.ndarray) -> Directive: ...

    def decided(self, step: int, decisions: Sequence[Decision]) -> None: ...


class SelectAskTell:
    """Ask/tell over any ``select(ctx) -> Decision`` policy (:class:`~aexp.policies.Policy`).

    Pending points and batches use a kriging believer: a pending candidate joins the measured ones
    with the posterior mean the policy predicted for it when it chose it, ``y_pending = mu(x_pending)``.
    The surrogate refitted on those values keeps its mean and loses its variance around the pending
    points, so the next choice moves elsewhere. Why not botorch's ``X_pending``/fantasies: they need
    Monte-Carlo acquisitions and a model that can ``fantasize``, while ours are analytic (UCB,
    LogEI) or pathwise Thompson over up to 65,536 candidates on a DKL surrogate; the believer works
    for every surrogate, costs one refit, and is deterministic (its values are the recorded
    ``predicted_mean``), so a replay reproduces it exactly. A batch of ``n`` is chosen the same way,
    sequential greedy: each member is pending for the next (as ``optimize_acqf_discrete`` does with
    ``X_pending``), not the top ``n`` of one score.

    Model-free policies (random, raster) have no mean to believe: pending points are only excluded.

    Example:
        >>> policy = SelectAskTell(make_policy("gp-xy"), travel=TravelCost(weight=0.1))
    """

    def __init__(self, policy: Policy, travel: TravelCost | None = None) -> None:
        self.policy = policy
        self.travel = travel
        self.name = policy.name
        self._problem: Problem | None = None
        #: single asks keep what :meth:`rescore` needs (set by a campaign whose schedule rescores)
        self.keeps_rescore = False

    #: return the mean / std / acquisition maps with every decision (the live page shows them)
    want_maps = False

    def start(self, problem: Problem) -> None:
        self._problem = problem
        self.excluded = ~np.asarray(problem.allowed, dtype=bool)
        self.measured: list[int] = []
        self.targets: list[float] = []
        self.visited: list[int] = []
        self.believed: dict[int, float] = {}

    @property
    def problem(self) -> Problem:
        if self._problem is None:
            raise RuntimeError(f"policy {self.name!r} was asked before start(problem)")
        return self._problem

    def tell(self, outcomes: Sequence[Outcome]) -> None:
        for o in outcomes:
            self.excluded[o.index] = True
            self.visited.append(int(o.index))
            self.believed.pop(int(o.index), None)
            if o.target is not None:
                self.measured.append(int(o.index))
                self.targets.append(float(o.target))

    def exclude(self, indices: Sequence[int]) -> None:
        """Never choose these candidates (an operator's exclusion box)."""
        self.excluded[list(indices)] = True

    def configure(self, name: str, value: float) -> None:
        """Change a setting of the wrapped policy (``beta``) from the next decision on."""
        if not hasattr(self.policy, name):
            raise AttributeError(f"policy {self.name!r} has no setting {name!r}")
        setattr(self.policy, name, value)

    def context(self, step: int, pending: Sequence[int] = (), want_maps: bool = False,
                rescore: bool = False) -> SelectionContext:
        """The policy's view at decision ``step``: pending points excluded, and believed where the
        policy predicted a mean for them (named in ``believed`` when ``rescore``)."""
        p = self.problem
        excluded = self.excluded.copy()
        excluded[list(pending)] = True
        believed = [i for i in pending if self.believed.get(i) is not None]
        penalty = None
        if self.travel is not None:
            path = self.visited + list(pending)
            probe = p.positions[path[-1]] if path else None
            recent = p.positions[path[-self.travel.recency_window:]] if path else np.zeros((0, 2))
            penalty = self.travel.penalty(p.positions, probe, recent)
        return SelectionContext(
            features=p.features,
            positions=p.positions,
            grid_shape=p.grid_shape,
            measured=np.asarray(self.measured + believed, dtype=np.int64),
            targets=np.asarray(self.targets + [self.believed[i] for i in believed], dtype=np.float64),
            excluded=excluded,
            budget_left=p.budget - step,
            step=step,
            rng=step_rng(p.seed, step),
            want_maps=want_maps,
            penalty=penalty,
            penalty_in_spread=self.travel is not None and self.travel.in_spread,
            believed=tuple(believed) if rescore else (),
        )

    def ask(self, n: int, pending: Sequence[int] = (), *, step: int) -> list[Decision]:
        chosen: list[Decision] = []
        for j in range(n):
            flight = [*pending, *(d.index for d in chosen)]
            rescore = self.keeps_rescore and n == 1 and hasattr(self.policy, "rescore")
            decision = self.policy.select(self.context(step + j, flight, want_maps=self.want_maps,
                                                       rescore=rescore))
            if self.excluded[decision.index] or decision.index in flight:
                raise RuntimeError(f"policy {self.name!r} chose candidate {decision.index}, which is "
                                   f"measured, failed, outside the bounds or pending")
            if decision.predicted_mean is not None and math.isfinite(decision.predicted_mean):
                self.believed[decision.index] = float(decision.predicted_mean)
            chosen.append(decision)
        return chosen

    def rescore(self, decisions: Sequence[Decision], pending: Sequence[int] = ()) -> list[Decision]:
        """Decide again, without a refit, on the outcomes told since ``decisions`` were asked.

        A decision asked with candidates in flight was fitted on their believed targets; those
        told since then replace their believed values in that fit's posterior (an exact GP's mean
        is linear in its targets: no pass of the model), and the argmax is taken again among the
        candidates not measured, excluded or in ``pending`` (still in flight). Decisions without a
        :class:`~aexp.policies.Rescore` are returned as they are.
        """
        rescore = getattr(self.policy, "rescore", None)
        if rescore is None or not self.targets:
            return list(decisions)
        told = dict(zip(self.measured, self.targets))
        excluded = self.excluded.copy()
        excluded[list(pending)] = True
        out = []
        for d in decisions:
            if d.rescore is None:
                out.append(d)
                continue
            new = rescore(d, {i: told[i] for i in d.rescore.indices if i in told}, max(self.targets), excluded)
            if new is not d:
                self.believed.pop(d.index, None)
                if new.predicted_mean is not None and math.isfinite(new.predicted_mean):
                    self.believed[new.index] = float(new.predicted_mean)
            excluded[new.index] = True
            out.append(new)
        return out

    def maps(self, step: int) -> dict[str, np.ndarray] | None:
        """Mean, std and acquisition over all candidates after the last step (``None`` if model-free)."""
        return self.policy.select(self.context(step, want_maps=True)).maps


def as_ask_tell(policy: Policy | AskTellPolicy, travel: TravelCost | None = None) -> AskTellPolicy:
    """A policy as :class:`AskTellPolicy`: native ones as they are, ``select`` ones adapted."""
    if hasattr(policy, "ask") and hasattr(policy, "tell"):
        return policy  # type: ignore[return-value]
    return SelectAskTell(policy, travel=travel)  # type: ignore[arg-type]


# --- helpers -------------------------------------------------------------------------------------


def initial_indices(n_initial: int, seed: int, allowed: np.ndarray) -> np.ndarray:
    """The random seed measurements: depend on the seed only, so every policy starts alike."""
    rng = np.random.default_rng([seed, 0x1417])
    pool = np.flatnonzero(allowed)
    if len(pool) < n_initial:
        raise ConfigError(f"policy.n_initial: only {len(pool)} candidates can be measured; {n_initial} initial asked for")
    return rng.permutation(pool)[:n_initial]


def short_tour(start: np.ndarray | None, points: np.ndarray) -> list[int]:
    """Visiting order of ``points`` (``q x 2``) from ``start`` (``2`` or ``None``): an open path,
    exact for ``q <= 7`` (all orders), nearest neighbour then 2-opt above."""
    q = len(points)
    if q <= 1:
        return list(range(q))

    def length(order: Iterable[int]) -> float:
        path = points[list(order)]
        legs = np.linalg.norm(np.diff(path, axis=0), axis=1).sum()
        return float(legs + (np.linalg.norm(path[0] - start) if start is not None else 0.0))

    if q <= 7:
        from itertools import permutations

        return list(min(permutations(range(q)), key=length))
    here, todo, order = start, list(range(q)), []
    while todo:
        nxt = todo[0] if here is None else min(todo, key=lambda i: float(np.linalg.norm(points[i] - here)))
        order.append(nxt)
        todo.remove(nxt)
        here = points[nxt]
    improved = True
    while improved:
        improved = False
        for a in range(q - 1):
            for b in range(a + 1, q):
                trial = order[:a] + order[a:b + 1][::-1] + order[b + 1:]
                if length(trial) < length(order) - 1e-15:
                    order, improved = trial, True
    return order


def _finite(value: float | None) -> float | None:
    """JSON has no inf/nan: a non-finite model value is recorded as null."""
    return float(value) if value is not None and np.isfinite(value) else None


# --- the campaign --------------------------------------------------------------------------------


@dataclass
class _InFlight:
    step: Step
    future: Future
    sent: float


class _Inline:
    """An executor that runs the job at once (the synchronous schedule: no thread)."""

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(fn(*args))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller through the future
            fut.set_exception(exc)
        return fut

    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        pass


class Campaign:
    """Ask, send, tell, record, until the budget ends (see the module docstring).

    Args:
        instrument: where measurements come from; a position outside its bounds is never sent.
        candidates: ``M`` candidate positions (and pixels) to choose among.
        features: ``M x D`` inputs of the policy.
        target: spectrum -> float.
        policy: an :class:`AskTellPolicy`, or a ``select`` policy (adapted by :func:`as_ask_tell`).
        n_initial: random measurements before the policy takes over.
        budget: when to stop.
        recorder: gets every step, durable before the next command (with ``max_in_flight`` 1).
        seed: the run's seed.
        schedule: synchronous, pending, batch; outage allowance.
        travel: penalty for moves and recently visited sites (``select`` policies that use
            ``ctx.penalty``); the distance travelled is recorded on every step regardless.
        clock: time for the wall-time budget and the outage (a seam for simulated clocks).
        operator: consulted before each decision (pause, goto, exclude, settings, stop) and, in
            approve mode, on each proposal (:class:`Operator`); ``None``: nobody steers.
        drift: re-registration (:class:`aexp.drift.DriftCorrection`): when it is due, the commands in
            flight are finished, it surveys (in the measuring thread) and from then on every command goes
            to the candidate's position plus its ``offset_at(step)``.

    Example:
        >>> result = Campaign(instrument=inst, candidates=cands, features=feats, target=target,
        ...                   policy=make_policy("random"), n_initial=3, budget=Budget(20),
        ...                   recorder=MemoryRecorder(), seed=0).run()
    """

    def __init__(
        self,
        *,
        instrument: Instrument,
        candidates: Candidates,
        features: torch.Tensor,
        target: Target,
        policy: Policy | AskTellPolicy,
        n_initial: int,
        budget: Budget,
        recorder: Recorder,
        seed: int,
        schedule: Schedule | None = None,
        travel: TravelCost | None = None,
        clock: Clock | None = None,
        record_spectra: bool = True,
        want_final_maps: bool = False,
        on_step: StepCallback | None = None,
        session_id: str = "",
        stop_after: int | None = None,
        operator: Operator | None = None,
        drift: DriftCorrection | None = None,
    ) -> None:
        self.instrument = instrument
        self.candidates = candidates
        self.features = features
        self.target = target
        self.policy = as_ask_tell(policy, travel)
        self.n_initial = int(n_initial)
        self.budget = budget
        self.recorder = recorder
        self.seed = int(seed)
        self.schedule = schedule or Schedule()
        self.clock = clock or SystemClock()
        self.record_spectra = record_spectra
        self.want_final_maps = want_final_maps
        self.on_step = on_step
        self.session_id = session_id
        self.stop_after = stop_after
        self.operator = operator
        self.drift = drift
        if self.schedule.pending and self.schedule.rescore and hasattr(self.policy, "keeps_rescore"):
            self.policy.keeps_rescore = True  # type: ignore[attr-defined]

    def run(self) -> CampaignResult:
        """Run to the end of the budget; returns every step. Raises :class:`InstrumentOutage`."""
        self._setup()
        executor: Any = ThreadPoolExecutor(1, thread_name_prefix="aexp-measure") if self.schedule.pending \
            else _Inline()
        stop_reason = "budget"
        try:
            while True:
                # at most `ahead` commands outstanding while deciding (none when synchronous)
                while len(self.flight) > self.schedule.ahead:
                    self._finish(self.flight.popleft())
                reason = self._stop_reason()
                directive = self._consult() if reason is None else Directive()
                if directive.stop:
                    reason = directive.stop_reason
                elif reason is None and (~self.excluded).sum() == 0:
                    reason = "no candidates left"  # the operator excluded the rest
                if reason is not None:
                    stop_reason = reason
                    break
                if self.drift is not None and self.drift.due(self.decided, self.clock.monotonic() - self.start):
                    while self.flight:  # a survey goes to an idle instrument, after every step is recorded
                        self._finish(self.flight.popleft())
                    executor.submit(self._busy_while, self.drift.register, self.instrument, self.decided,
                                    self.clock.monotonic() - self.start).result()
                steps = self._decide(directive.goto)
                if self._stopped is not None:
                    stop_reason = self._stopped
                    break
                for step in steps:
                    while self.flight and len(self.flight) >= max(self.schedule.ahead, 1):
                        self._finish(self.flight.popleft())
                    self.flight.append(_InFlight(step, executor.submit(self._measure, step), time.perf_counter()))
            while self.flight:
                self._finish(self.flight.popleft())
        except InstrumentOutage as exc:
            for rest in self.flight:
                rest.future.cancel()
            exc.result = CampaignResult(steps=self.steps, stop_reason="instrument unreachable")
            raise
        except BaseException:
            # whatever stopped the decisions (Ctrl-C, a policy error), a command already sent is recorded
            while self.flight:
                try:
                    self._finish(self.flight.popleft())
                except BaseException:  # noqa: BLE001 - the first error is the one to report
                    break
            raise
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
        maps = None
        if self.want_final_maps and self.stop_after is None and len(self.measured) >= 2 \
                and (~self.excluded).any() and hasattr(self.policy, "maps"):
            maps = self.policy.maps(len(self.steps))  # type: ignore[attr-defined]
        result = CampaignResult(steps=self.steps, maps=maps, stop_reason=stop_reason)
        result.extra.update(self.pace())
        return result

    def pace(self) -> dict[str, float | None]:
        """How the instrument's time went, from the start to the end of its last command.

        ``instrument_idle_fraction = 1 - busy / wall_s``: ``busy`` the union of the intervals the
        instrument was inside a call (measurements and re-registration surveys), ``wall_s`` from the
        campaign's start to the end of the last call; ``travel_m`` the summed step distances.
        """
        intervals = sorted(self.busy)
        wall = (max(e for _, e in intervals) - self.t_start) if intervals else 0.0
        busy, reach = 0.0, self.t_start
        for a, b in intervals:  # union of possibly overlapping intervals (a command and its retry)
            if b > reach:
                busy += b - max(a, reach)
                reach = b
        travel = float(sum(s.travel_m for s in self.steps if s.travel_m is not None))
        return {"wall_s": wall, "instrument_busy_s": busy, "travel_m": travel,
                "instrument_idle_fraction": (1.0 - busy / wall) if wall > 0 else None}

    def _busy_while(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Call ``fn`` and keep the interval as instrument time (runs in the measuring thread)."""
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.busy.append((t0, time.perf_counter()))

    # --- the parts of one step ---

    def _setup(self) -> None:
        inside = self.instrument.bounds.contains(self.candidates.positions)
        axes = self.instrument.describe().signal_axes
        # a spectrum's target takes its axis values, a pattern's the pair (ky, kx)
        self.axis = axes[0].values() if len(axes) == 1 else tuple(a.values() for a in axes)
        self.excluded = ~inside  # decided (sent or pending), or never measurable
        self.init = list(initial_indices(self.n_initial, self.seed, inside))
        self.measured: list[int] = []
        self.failed = 0
        self.steps: list[Step] = []
        self.decided = 0
        self.flight: deque[_InFlight] = deque()
        self.start = self.clock.monotonic()
        self.t_start = time.perf_counter()
        self.busy: list[tuple[float, float]] = []  # instrument-call intervals (perf_counter)
        self.received = time.perf_counter()
        self.last_position: tuple[float, float] | None = None
        self._stopped: str | None = None
        if self.operator is not None and self.operator.want_maps and hasattr(self.policy, "want_maps"):
            self.policy.want_maps = True  # type: ignore[attr-defined]
        self.policy.start(Problem(self.features, self.candidates.positions, self.candidates.grid_shape,
                                  inside, self.budget.measurements, self.seed))

    def _stop_reason(self) -> str | None:
        limit = self.budget.measurements if self.stop_after is None else min(self.budget.measurements,
                                                                             self.stop_after)
        if self.decided >= limit:
            return "budget"
        reason = self.budget.stop_reason(self.decided, self.failed, self.clock.monotonic() - self.start)
        if reason is not None:
            return reason
        if (~self.excluded).sum() == 0:
            return "no candidates left"
        return None

    def _consult(self) -> Directive:
        """Ask the operator before decision ``k`` and apply its exclusions and settings."""
        if self.operator is None:
            return Directive()
        d = self.operator.before_decision(self.decided, self.excluded.copy(), self.steps)
        if d.exclude:
            if not hasattr(self.policy, "exclude"):
                raise OperatorRefused(f"policy {self.policy.name!r} cannot exclude candidates (no exclude())")
            self.excluded[d.exclude] = True
            self.policy.exclude(d.exclude)  # type: ignore[attr-defined]
        for name, value in d.settings.items():
            if not hasattr(self.policy, "configure"):
                raise OperatorRefused(f"policy {self.policy.name!r} has no settings to change")
            self.policy.configure(name, value)  # type: ignore[attr-defined]
        return d

    def _decide(self, goto: int | None = None) -> list[Step]:
        """The next steps: the operator's point if there is one; else the initial random points
        first, then the policy once it has two targets (each single proposal reviewed in approve mode)."""
        k = self.decided
        pending = [f.step.index for f in self.flight]
        t0 = time.perf_counter() if pending else self.received
        waited, rescored = 0.0, []
        if goto is not None:
            if self.excluded[goto]:
                raise OperatorRefused(f"the operator's candidate {goto} is measured, pending or excluded")
            decisions, phase = [Decision(int(goto), None, None, None, 0.0, 0.0, None)], "operator"
        elif k < len(self.init) or len(self.measured) < 2:
            if k < len(self.init):
                index = int(self.init[k])
            else:  # too many initial points failed: keep exploring at random
                index = int(step_rng(self.seed, k).choice(np.flatnonzero(~self.excluded)))
            decisions, phase = [Decision(index, None, None, None, 0.0, 0.0, None)], "initial"
        else:
            limit = self.budget.measurements if self.stop_after is None else min(self.budget.measurements,
                                                                                 self.stop_after)
            n = min(self.schedule.batch, limit - k, int((~self.excluded).sum()))
            decisions, phase = self.policy.ask(n, pending, step=k), "policy"
            if self.schedule.rescore and pending and n == 1 and hasattr(self.policy, "rescore"):
                # the commands the decision would wait for anyway are in: decide again on them
                asked = time.perf_counter()
                while self.flight and len(self.flight) >= max(self.schedule.ahead, 1):
                    self._finish(self.flight.popleft())
                waited = time.perf_counter() - asked
                still = [f.step.index for f in self.flight]
                believed = decisions[0].rescore.indices if decisions[0].rescore is not None else ()
                decisions = self.policy.rescore(decisions, still)  # type: ignore[attr-defined]
                measured = set(self.measured)  # a failed one keeps its belief: not taken again on it
                rescored = [i for i in pending if i in believed and i in measured and i not in still]
            seen = set(pending)
            for d in decisions:
                if self.excluded[d.index] or d.index in seen:
                    raise RuntimeError(f"policy {self.policy.name!r} chose candidate {d.index}, which is "
                                       f"measured, failed, pending or excluded")
                seen.add(d.index)
            if len(decisions) > 1:
                start = self._probe(pending)
                order = short_tour(None if start is None else np.asarray(start),
                                   self.candidates.positions[[d.index for d in decisions]])
                decisions = [decisions[i] for i in order]
            if self.operator is not None:
                self.operator.decided(k, decisions)
                if len(decisions) == 1:
                    review = self.operator.review(k, decisions[0].index, self.excluded.copy())
                    if review.stop:
                        self._stopped = review.stop_reason
                        return []
                    if review.goto is not None and review.goto != decisions[0].index:
                        if self.excluded[review.goto]:
                            raise OperatorRefused(f"the operator's candidate {review.goto} is measured, "
                                                  f"pending or excluded")
                        decisions, phase = [Decision(int(review.goto), None, None, None, 0.0, 0.0, None)], \
                            "operator"
        decision_s = time.perf_counter() - t0 - waited  # not the wait for the outcomes it rescored on
        out = []
        for d in decisions:
            out.append(self._step(self.decided, d, phase, pending, decision_s))
            out[-1].rescored = list(rescored)
            self.excluded[d.index] = True
            self.decided += 1
        return out

    def _probe(self, pending: Sequence[int]) -> tuple[float, float] | None:
        if pending:
            return tuple(self.candidates.positions[pending[-1]])  # type: ignore[return-value]
        return self.last_position

    def _step(self, k: int, d: Decision, phase: str, pending: list[int], decision_s: float) -> Step:
        idx = d.index
        c = self.candidates
        dx, dy = (0.0, 0.0) if self.drift is None else self.drift.offset_at(k)
        position = (float(c.positions[idx, 0]) + dx, float(c.positions[idx, 1]) + dy)
        previous = self.last_position
        self.last_position = position
        travel = None if previous is None else float(np.hypot(position[0] - previous[0],
                                                              position[1] - previous[1]))
        return Step(
            step=k,
            index=int(idx),
            position=position,
            pixel=(float(c.pixels[idx, 0]), float(c.pixels[idx, 1])),
            target=None,
            status="failed",
            phase=phase,
            acquisition=_finite(d.acquisition),
            predicted_mean=_finite(d.predicted_mean),
            predicted_std=_finite(d.predicted_std),
            command_id=f"{self.session_id}-{k}" if self.session_id else str(k),
            timings={"fit_s": d.fit_s, "select_s": d.select_s, "decision_s": decision_s},
            pending=list(pending),
            travel_m=travel,
            weights=d.weights,
        )

    def _measure(self, step: Step) -> Measurement:
        """Send one command (in the worker thread when pending); retry while unreachable."""
        check_position(self.instrument.bounds, step.position)  # the guard before anything is sent
        began: float | None = None
        wait = 0.5
        while True:
            try:
                return self._busy_while(lambda: self.instrument.measure(step.position, command_id=step.command_id))
            except InstrumentUnreachable as exc:
                now = self.clock.monotonic()
                began = now if began is None else began
                if now - began >= self.schedule.max_outage_s:
                    raise InstrumentOutage(
                        f"the instrument was unreachable for {now - began:.0f} s (instrument.max_outage_s "
                        f"{self.schedule.max_outage_s:g}) at step {step.step}: {exc}",
                        now - began,
                    ) from exc
                self.clock.sleep(min(wait, self.schedule.max_outage_s - (now - began)))
                wait = min(2 * wait, 5.0)

    def _finish(self, flight: _InFlight) -> None:
        """Wait for one command, record its step, tell the policy."""
        step = flight.step
        spectrum = None
        try:
            meas = flight.future.result()
            spectrum = np.asarray(meas.spectrum, dtype=float)
            value = self.target(spectrum, self.axis)
            if not np.all(np.isfinite(spectrum)) or not np.isfinite(value):
                step.error = "non-finite spectrum or target"
            else:
                step.status, step.target = "ok", float(value)
                self.measured.append(step.index)
            step.timings["instrument_s"] = float(meas.duration_s)
        except OutOfBounds as exc:
            step.error = f"out of bounds: {exc}"
        except InstrumentOutage:
            raise
        except InstrumentError as exc:
            step.error = f"{type(exc).__name__}: {exc}"
        step.timings["measure_s"] = time.perf_counter() - flight.sent
        self.received = time.perf_counter()
        self.failed += step.status != "ok"
        ok = [self.steps[-1].best_so_far] if self.steps and self.steps[-1].best_so_far is not None else []
        step.best_so_far = max(ok + ([step.target] if step.target is not None else []), default=None)
        self.recorder.append_step(step, spectrum if self.record_spectra else None)
        self.steps.append(step)
        self.policy.tell([Outcome(step.step, step.index, step.target)])
        if self.on_step is not None:
            self.on_step(step, self.budget.measurements)

