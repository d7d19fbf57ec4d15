"""Experiment configuration: YAML -> typed, validated objects.

One YAML file describes one experiment, in sections that swap cleanly: ``instrument``,
``candidates``, ``embedder``, ``surrogate``, ``policy``, ``target``, ``stopping``, ``recording``,
plus ``seed`` and ``device``. Unknown keys and wrong types are errors that name the file, the key and
the reason (:class:`ConfigError`). Checks that need the instrument (the target window against its
energy axis, the patch against its survey, the budget against the candidate count) are in
:func:`check_against`, which runs before anything is measured.

Example:
    >>> cfg = load_config("configs/plasmonic-dkl.yaml")
    >>> cfg.policy.kind, cfg.budget
    ('dkl', 128)
"""

from __future__ import annotations

import inspect
import math
import reprlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .errors import AexpError
from .targets import Target, TargetError, make_target, target_function
from .types import InstrumentDescription

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "InstrumentConfig",
    "CandidatesConfig",
    "EmbedderConfig",
    "SurrogateConfig",
    "PolicyConfig",
    "TravelConfig",
    "TargetConfig",
    "StoppingConfig",
    "RecordingConfig",
    "load_config",
    "parse_config",
    "check_against",
    "n_grid_candidates",
]


#: Seeds are recorded in JSON and fed to NumPy's SeedSequence: non-negative and within 63 bits.
MAX_SEED = 2**63 - 1


class ConfigError(AexpError, ValueError):
    """A configuration is malformed or does not fit the instrument. The message names file and key."""


class _Section(BaseModel):
    # inf and nan mean nothing in a config (an infinite learning rate, a NaN window edge)
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class InstrumentConfig(_Section):
    """Which instrument to drive: a name in the ``aexp.instruments`` entry-point group + its options."""

    driver: str = Field(description="registered instrument name, e.g. 'plasmonic'")
    options: dict[str, Any] = Field(default_factory=dict, description="passed to the driver")
    max_outage_s: float = Field(
        60.0, gt=0, description="seconds the instrument may stay unreachable before the run stops as "
        "interrupted (resumable); a measurement that fails is a failed step instead"
    )

    @model_validator(mode="before")
    @classmethod
    def _flat_options(cls, data: Any) -> Any:
        """``{driver: zmq, address: ...}`` means ``{driver: zmq, options: {address: ...}}``.

        The driver checks its own options when it is built (``aexp check`` builds it), so a
        misspelt key is still an error naming the key.
        """
        if not isinstance(data, dict):
            return data
        flat = {k: v for k, v in data.items() if k not in ("driver", "options", "max_outage_s")}
        if not flat:
            return data
        options = data.get("options") or {}
        if not isinstance(options, dict):
            return data  # let the field's own check name the problem
        both = sorted(set(flat) & set(options))
        if both:
            raise ValueError(f"{both} given both beside driver and under options; give each once")
        kept = {k: data[k] for k in ("max_outage_s",) if k in data}
        return {"driver": data.get("driver"), "options": {**options, **flat}, **kept}


class CandidatesConfig(_Section):
    """Probe positions with a square patch around each: a regular grid over the survey
    (``mode: grid``), or one per atom found in the survey (``mode: atoms``)."""

    mode: Literal["grid", "atoms"] = "grid"
    stride: int = Field(2, ge=1, description="pixels between neighbouring candidates")
    patch_size: int | Literal["auto"] = Field(
        16,
        description="patch edge in survey pixels (>= 2), or auto: 2 correlation lengths of the survey, "
        "within [max(4, stride), 32] px (aexp.patches.auto_patch_size)",
    )
    channels: list[str] | None = Field(None, description="survey channels to cut; all when omitted")
    context: int = Field(
        1, ge=1, description="> 1: also a view this many patches wide, pooled to patch_size, embedded on its own"
    )
    atom_channel: str | None = Field(None, description="atoms: channel to find atoms in; first when omitted")
    atom_sigma_px: float = Field(1.5, gt=0, description="atoms: Laplacian-of-Gaussian scale (px)")
    min_distance_px: int = Field(3, ge=1, description="atoms: least distance between two atoms (px)")
    threshold: float = Field(
        0.1, gt=0, description="atoms: least filter response, relative to its 99.9th percentile"
    )
    survey_nan: Literal["drop", "repair"] = Field(
        "drop",
        description="survey pixels that are NaN (outside a paired image, NaN spectra): drop the candidates "
        "centred there, or keep them with the pixel repaired from its nearest finite neighbour",
    )

    @field_validator("patch_size")
    @classmethod
    def _patch_at_least_two(cls, v: int | str) -> int | str:
        if v != "auto" and int(v) < 2:
            raise ValueError(f"must be at least 2 px (or auto), not {v}")
        return v


class EmbedderConfig(_Section):
    """How patches become features: a model's latent means (``rvae``, ``vae``, ``affine``, ``jvae``,
    ``jrvae``), or the raw patch (``none``)."""

    kind: Literal["rvae", "vae", "affine", "jvae", "jrvae", "skiprvae", "none"] = "rvae"
    latent_dim: int = Field(2, ge=1, description="content latents (rotation and shift come extra)")
    hidden: int = Field(32, ge=4)
    decoder_layers: int = Field(2, ge=0, description="hidden x hidden layers of the coordinate decoder")
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(3e-3, gt=0)
    rotation_prior: float = Field(math.pi / 3, gt=0, description="prior std of the angle, radians")
    translation: bool = True
    n_classes: int = Field(4, ge=2, description="classes of the discrete latent (jvae, jrvae)")
    orientation: bool = Field(
        False, description="rvae, affine, skiprvae: one angle offset for all kinds of object"
    )
    equivariance: float = Field(
        0.0, ge=0, description="rvae, affine, skiprvae: weight of the encoder-equivariance penalty"
    )
    rotation_prior_warmup: int = Field(
        0, ge=0, description="rvae, affine, skiprvae: epochs over which the angle prior widens"
    )
    noise_std: float = Field(
        0.1, gt=0, description="Gaussian likelihood width, in units of each channel's scaled range"
    )
    clip_percentile: float = Field(
        0.0,
        ge=0,
        lt=50,
        description="clip each channel to its [p, 100 - p] percentiles over the candidates before "
        "the embedder scales it to [0, 1], so a few bright pixels cannot squash the rest (0: off)",
    )
    features: Literal["all", "content"] = Field(
        "all", description="feed the surrogate all latents or only the content ones"
    )
    train_subsample: int | None = Field(
        None, ge=1, description="train on this many candidates drawn from the seed (then encode all): "
        "training is the cost before the first decision, encoding is cheap; null: train on all"
    )


class NeighbourCount(_Section):
    """One neighbour-count column for atom candidates: how many found atoms of one brightness class
    lie within ``radius_px`` of the candidate."""

    brightness: int = Field(ge=0, description="brightness class, 0 = the dimmest")
    radius_px: float = Field(gt=0, description="radius of the count (survey pixels)")


class SurrogateConfig(_Section):
    """Deep kernel learning: MLP feature map -> GP kernel, trained on the measured points."""

    kind: Literal["dkl", "groups"] = Field(
        "dkl",
        description="dkl: deep kernel learning (with the GP stage of gp_until); groups: an average of "
        "exact GPs, one per input group (embedding, survey under the probe, context, position) and one "
        "additive over all, weighted by leave-one-out likelihood at every step (aexp.surrogates.groups)",
    )
    dkl_from: int | None = Field(
        None,
        ge=0,
        description="kind: groups: measured points from which a deep-kernel GP over all inputs (the DKL "
        "settings below, begun as the additive GP) joins the average, weighted by its one-step-ahead "
        "predictive likelihood against the exact GPs' average; 0 or null: no DKL member",
    )
    feature_dim: int = Field(2, ge=1)
    hidden: list[int] = Field(default_factory=lambda: [64, 32])
    kernel: Literal["rbf", "matern52"] = "rbf"
    lr: float = Field(0.01, gt=0)
    iterations: int = Field(200, ge=1, description="Adam iterations of the first fit")
    warm_iterations: int = Field(50, ge=0, description="Adam iterations of each warm-started refit")
    base_kernel: bool = Field(True, description="add an ARD kernel on the raw inputs to the deep kernel")
    gp_until: int = Field(
        0, ge=0, description="measured points below which an exact ARD GP on the inputs stands in for the DKL"
    )
    gp_warm_maxiter: int | None = Field(
        None, ge=1, description="L-BFGS iterations of each warm-started refit of the gp_until stage; null: to "
        "convergence (as before)"
    )
    position: bool = Field(
        True, description="append the candidate's standardised (x, y) to the surrogate's inputs"
    )
    centre_pixels: int = Field(
        0,
        ge=0,
        description="k > 0: also the survey's k x k pixels at the centre of each candidate's patch "
        "(every channel; k odd), the signal where the probe lands; 0: off",
    )
    centre_gradient: bool = Field(
        False,
        description="also the survey's gradient magnitude (3 x 3 Sobel, every channel) where the probe "
        "lands: how steeply the image changes there, whatever the direction",
    )
    neighbour_counts: list[NeighbourCount] = Field(
        default_factory=list,
        description="atom candidates: per entry, the found atoms of a brightness class within a "
        "radius of each candidate (vacancies and dopants among its neighbours)",
    )
    brightness_classes: int = Field(
        3, ge=2, le=8, description="classes the atoms' brightness is split into for neighbour_counts"
    )
    position_kernel: Literal["joint", "additive"] = Field(
        "joint", description="joint: one ARD kernel over features and (x, y); additive: k(features) + k(x, y)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> SurrogateConfig:
        if self.position_kernel == "additive" and not self.position:
            raise ValueError("position_kernel: additive splits the inputs into features and (x, y); "
                             "it needs position: true")
        if self.position_kernel == "additive" and not self.base_kernel:
            raise ValueError("position_kernel: additive acts on the base kernel; it needs base_kernel: true")
        if self.dkl_from and self.kind != "groups":
            raise ValueError("dkl_from adds a DKL member to the group average: it needs kind: groups "
                             "(kind: dkl has gp_until for its GP stage)")
        if self.dkl_from and not self.base_kernel:
            raise ValueError("dkl_from: the DKL member begins as the additive GP, which becomes its base "
                             "kernel; it needs base_kernel: true")
        for i, count in enumerate(self.neighbour_counts):
            if count.brightness >= self.brightness_classes:
                raise ValueError(f"neighbour_counts[{i}].brightness is {count.brightness}; the classes "
                                 f"are 0..{self.brightness_classes - 1} (brightness_classes)")
        return self

    def options(self) -> dict[str, Any]:
        """Keyword arguments of :class:`aexp.policies.make_policy`'s ``surrogate_options``."""
        features = {"hidden", "position", "centre_pixels", "centre_gradient", "neighbour_counts", "brightness_classes"}
        return {**self.model_dump(exclude=features), "hidden": tuple(self.hidden)}

    @field_validator("centre_pixels")
    @classmethod
    def _odd_centre(cls, v: int) -> int:
        if v and v % 2 == 0:
            raise ValueError(f"must be odd (a square around the centre pixel) or 0, not {v}")
        return v

    @field_validator("hidden")
    @classmethod
    def _positive_widths(cls, v: list[int]) -> list[int]:
        if not v or any(h < 1 for h in v):
            raise ValueError("hidden must be a non-empty list of positive layer widths")
        return v


class TravelConfig(_Section):
    """Travel and recency penalties, subtracted from the acquisition (see :class:`aexp.campaign.TravelCost`).

    Stage speed and settle time default to the instrument's ``describe().extra`` entries
    ``stage_speed_m_s`` and ``settle_s`` when the config leaves them out.
    """

    weight: float = Field(0.0, ge=0, description="acquisition units per second of travel")
    stage_speed_m_s: float | None = Field(None, gt=0, description="stage speed; from the instrument if omitted")
    settle_s: float | None = Field(None, ge=0, description="settle time per move; from the instrument if omitted")
    recency_weight: float = Field(0.0, ge=0, description="acquisition units at a just-measured site")
    recency_radius_m: float = Field(1e-9, gt=0, description="reach of the recency penalty, metres")
    recency_window: int = Field(10, ge=1, description="how many recent sites count")


class PolicyConfig(_Section):
    """How the next point is chosen."""

    kind: Literal["dkl", "gp-xy", "random", "raster"] = "dkl"
    acquisition: Literal["ucb", "log_ei", "thompson", "max_variance"] = "ucb"
    beta: float = Field(4.0, ge=0, description="UCB: mu + sqrt(beta) * sigma")
    n_initial: int = Field(5, ge=1, description="random measurements before the policy takes over")
    pending: bool = Field(
        False, description="decide the next point while the instrument measures, with the points in "
        "flight as pending (kriging believer)"
    )
    max_in_flight: int = Field(1, ge=1, description="pending: commands outstanding while deciding")
    batch: int = Field(1, ge=1, description="points chosen jointly per decision, visited in a short tour")
    travel: TravelConfig | None = Field(None, description="penalty for moving the probe and for recent sites")


class TargetConfig(BaseModel):
    """A named scalariser (``aexp.targets``) and its parameters, e.g. ``window: [2.0, 2.6]``."""

    model_config = ConfigDict(extra="allow", frozen=True)
    name: str

    @model_validator(mode="after")
    def _known_target(self) -> TargetConfig:
        try:
            fn = target_function(self.name)
        except TargetError as exc:
            raise ValueError(str(exc)) from None
        sig = inspect.signature(fn)
        wanted = [p for p in sig.parameters if p not in ("spectra", "axis")]
        given = set(self.params)
        unknown = given - set(wanted)
        missing = [p for p in wanted if p not in given and sig.parameters[p].default is inspect._empty]
        if unknown:
            raise ValueError(f"target {self.name!r} takes {wanted}, not {sorted(unknown)}")
        if missing:
            raise ValueError(f"target {self.name!r} needs {missing}")
        make_target(self.name, **self.params)  # checks window shapes
        return self

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})

    def build(self) -> Target:
        return make_target(self.name, **self.params)


class StagnationConfig(_Section):
    """When the campaign has stopped learning (docs/live.md): ``window`` steps without a better
    target and the largest posterior std over the unmeasured candidates at most ``std_ratio`` times
    the measured targets' std. The page and the terminal say so; ``stop: true`` ends the run."""

    window: int = Field(10, ge=1, description="steps without a better target")
    std_ratio: float = Field(0.05, gt=0, description="largest unmeasured std / std of the measured targets")
    stop: bool = Field(False, description="end the run when stagnant (else only say so)")


class StoppingConfig(_Section):
    """When the experiment ends: after ``max_steps`` policy measurements, or ``wall_time_s``."""

    max_steps: int = Field(100, ge=0, description="measurements after the initial random ones")
    wall_time_s: float | None = Field(None, gt=0)
    max_failures: int | None = Field(None, ge=1, description="stop after this many failed steps")
    stagnation: StagnationConfig | None = Field(
        None, description="say (and optionally stop) when the campaign stagnates; needs a model policy")


class RecordingConfig(_Section):
    """What the session folder keeps besides the steps."""

    spectra: bool = True
    figure: bool = True


class DriftConfig(_Section):
    """Re-registration against sample drift (see :mod:`aexp.drift`): a fresh survey on a schedule, its
    shift against the first by phase correlation, and the candidate -> instrument correction."""

    resurvey_every_s: float | None = Field(None, gt=0, description="re-register every this many seconds")
    resurvey_every: int | None = Field(None, ge=1, description="re-register every this many steps")
    upsample_factor: int = Field(20, ge=1, le=1000, description="sub-pixel precision: 1 / upsample_factor px")
    max_shift_px: float = Field(16.0, gt=0, description="a larger estimated shift is a failed registration")
    min_correlation: float = Field(
        0.5, ge=-1, le=1, description="a lower correlation of the re-aligned surveys is a failed registration"
    )
    channel: int = Field(0, ge=0, description="survey channel to register")

    @model_validator(mode="after")
    def _a_schedule(self) -> DriftConfig:
        if self.resurvey_every_s is None and self.resurvey_every is None:
            raise ValueError("give drift.resurvey_every_s (seconds) or drift.resurvey_every (steps)")
        return self


class ExperimentConfig(_Section):
    """A whole experiment. ``budget`` = initial random measurements + ``stopping.max_steps``."""

    name: str = "experiment"
    seed: int = Field(0, ge=0, le=MAX_SEED, description="seeds every random choice of the run")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int | None = Field(
        1, ge=1, description="torch intra-op threads for the run; 1 keeps the many small fits of a "
        "decision from collapsing when other processes share the cores (docs/loop.md); null: torch's default"
    )
    instrument: InstrumentConfig
    candidates: CandidatesConfig = Field(default_factory=CandidatesConfig)
    embedder: EmbedderConfig = Field(default_factory=EmbedderConfig)
    surrogate: SurrogateConfig = Field(default_factory=SurrogateConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    target: TargetConfig
    stopping: StoppingConfig = Field(default_factory=StoppingConfig)
    recording: RecordingConfig = Field(default_factory=RecordingConfig)
    drift: DriftConfig | None = Field(None, description="re-registration against sample drift; off when null")

    @field_validator("embedder", mode="before")
    @classmethod
    def _embedder_none(cls, v: Any) -> Any:
        # `embedder: none` in YAML is the string "none"; `embedder: null` is None
        if v is None or (isinstance(v, str) and v.lower() == "none"):
            return {"kind": "none"}
        return v

    @model_validator(mode="after")
    def _surrogate_columns_fit_the_candidates(self) -> ExperimentConfig:
        if self.surrogate.neighbour_counts and self.candidates.mode != "atoms":
            raise ValueError("surrogate.neighbour_counts counts found atoms; it needs candidates.mode: atoms")
        if self.candidates.patch_size == "auto":  # at least 4 px: centre 3 x 3 and gradient fit
            if self.surrogate.centre_pixels > 3:
                raise ValueError(f"surrogate.centre_pixels ({self.surrogate.centre_pixels}) may be larger "
                                 "than an automatic patch (4 px or more); give candidates.patch_size")
            return self
        if self.surrogate.centre_pixels > self.candidates.patch_size:
            raise ValueError(f"surrogate.centre_pixels ({self.surrogate.centre_pixels}) is larger than "
                             f"candidates.patch_size ({self.candidates.patch_size})")
        if self.surrogate.neighbour_counts and self.candidates.mode != "atoms":
            raise ValueError("surrogate.neighbour_counts counts found atoms; it needs candidates.mode: atoms")
        if self.surrogate.centre_gradient and self.candidates.patch_size < 3:
            raise ValueError(f"surrogate.centre_gradient takes the 3 x 3 around the centre; "
                             f"candidates.patch_size is {self.candidates.patch_size}")
        return self

    @property
    def budget(self) -> int:
        return self.policy.n_initial + self.stopping.max_steps

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def with_overrides(self, **changes: Any) -> ExperimentConfig:
        """A copy with dotted-path overrides, validated again: ``with_overrides(**{"stopping.max_steps": 10})``."""
        data = self.to_dict()
        for path, value in changes.items():
            node = data
            *parents, leaf = path.split(".")
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = value
        return parse_config(data, source="<overrides>")


def _location(loc: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in loc if not str(p).startswith("function-")) or "<top level>"


def shorten(value: Any, limit: int = 80) -> str:
    """``repr(value)`` cut to ``limit`` characters: an error never quotes a huge value in full."""
    short = reprlib.Repr()
    short.maxlevel, short.maxstring, short.maxother = 3, limit, limit
    text = short.repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _format_validation(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors(include_input=True, include_url=False)[:20]:
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        got = ""
        if err["type"] not in ("missing", "extra_forbidden") and not isinstance(err.get("input"), dict):
            got = f" (got {shorten(err.get('input'))})"
        msg = msg if len(msg) <= 300 else msg[:297] + "..."
        lines.append(f"{source}: {_location(err['loc'])}: {msg}{got}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "<config>") -> ExperimentConfig:
    """Validate an already-parsed mapping. Raises :class:`ConfigError` naming ``source`` and keys."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(data).__name__}")
    try:
        return ExperimentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_validation(exc, source)) from None


#: The largest config file read, and the most YAML nodes it may stand for once aliases are expanded
#: (a "billion laughs" file of a few hundred bytes stands for billions).
MAX_CONFIG_BYTES = 1 << 20
MAX_EXPANDED_NODES = 100_000


class _StrictLoader(yaml.SafeLoader):
    """Safe YAML that refuses duplicate keys and alias bombs."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, Any] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                line = key_node.start_mark.line + 1
                raise ConfigError(f"line {line}: duplicate key {shorten(key)} "
                                  f"(first at line {seen[key]}); give each key once")
            if isinstance(key, (str, int, float, bool)):
                seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _expanded_size(node: yaml.Node, memo: dict[int, int]) -> int:
    """How many nodes ``node`` stands for once every alias is expanded (shared nodes counted each
    time they are used, computed once each)."""
    key = id(node)
    if key not in memo:
        memo[key] = 0  # a recursive alias counts as nothing more; the limit still holds
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        memo[key] = min(1 + sum(_expanded_size(c, memo) for c in children), 10 * MAX_EXPANDED_NODES)
    return memo[key]


def _read_yaml(text: str, source: str) -> Any:
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}) > MAX_EXPANDED_NODES:
            raise ConfigError(f"{source}: the YAML expands to more than {MAX_EXPANDED_NODES:,} values "
                              f"(nested aliases?); a config is far smaller")
        return loader.construct_document(node)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}" if not str(exc).startswith(source) else str(exc)) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}:{where}: malformed YAML: {shorten(problem, 200)}") from None
    except RecursionError:
        raise ConfigError(f"{source}: the YAML is nested too deeply for a config") from None
    finally:
        loader.dispose()


def load_config(path: str | Path) -> ExperimentConfig:
    """Read and validate a YAML experiment file.

    Refused with a :class:`ConfigError` naming the file (and the line or key): an unreadable or
    non-UTF-8 file, one over :data:`MAX_CONFIG_BYTES`, malformed YAML, a duplicate key, aliases that
    expand beyond :data:`MAX_EXPANDED_NODES` values, and anything the config models reject.
    """
    path = Path(path)
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {path.stat().st_size:,} bytes; a config is at most {MAX_CONFIG_BYTES:,}")
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    return parse_config(_read_yaml(text, str(path)), source=str(path))


def n_grid_candidates(survey_hw: tuple[int, int], stride: int) -> tuple[int, int]:
    """Rows and columns of the candidate grid for a survey of ``(H, W)`` pixels."""
    h, w = survey_hw
    return len(range(0, h, stride)), len(range(0, w, stride))


def check_against(cfg: ExperimentConfig, desc: InstrumentDescription, source: str = "<config>") -> None:
    """Check what needs the instrument: channels, patch vs survey, target vs axis, budget vs candidates."""
    _, h, w = desc.survey_shape
    problems = []
    # "auto" is chosen from the survey, within its size (at least 4 px); the context view may be wider
    p = min(4, h, w) if cfg.candidates.patch_size == "auto" else int(cfg.candidates.patch_size)
    if p > min(h, w):
        problems.append(
            f"candidates.patch_size: {p} px is larger than the survey ({h} x {w} px)"
        )
    elif p * cfg.candidates.context > min(h, w):
        problems.append(
            f"candidates.context: {cfg.candidates.context} x patch_size {p} = "
            f"{p * cfg.candidates.context} px is larger than the survey ({h} x {w} px)"
        )
    if cfg.candidates.channels is not None:
        unknown = [c for c in cfg.candidates.channels if c not in desc.channels]
        if unknown:
            problems.append(
                f"candidates.channels: {unknown} not among the instrument's channels {list(desc.channels)}"
            )
    atom_channel = cfg.candidates.atom_channel
    if atom_channel is not None and atom_channel not in desc.channels:
        problems.append(
            f"candidates.atom_channel: {atom_channel!r} is not among the instrument's channels {list(desc.channels)}"
        )
    try:
        cfg.target.build().check_axis(desc.spectrum_axis)
    except TargetError as exc:
        problems.append(f"target: {exc}")
    rows, cols = n_grid_candidates((h, w), cfg.candidates.stride)
    # atom-centred candidates are counted only once the survey is taken
    if cfg.candidates.mode == "grid" and cfg.budget > rows * cols:
        problems.append(
            f"stopping.max_steps: a budget of {cfg.budget} measurements ({cfg.policy.n_initial} initial"
            f" + {cfg.stopping.max_steps}) exceeds the {rows * cols} candidates"
        )
    if cfg.device == "cuda" and not _cuda_available():
        problems.append("device: cuda was asked for but torch sees no CUDA GPU here; use auto or cpu")
    if problems:
        raise ConfigError("\n".join(f"{source}: {m}" for m in problems))


def _cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())
