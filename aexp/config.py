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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .errors import AexpError
from .targets import Target, TargetError, make_target, target_function
from .types import InstrumentDescription

__all__ = [
    "ConfigError",
    "ExperimentConfig",
    "InstrumentConfig",
    "CandidatesConfig",
    "EmbedderConfig",
    "EmbedderPipeline",
    "VAEEmbedderConfig",
    "RVAEEmbedderConfig",
    "AffineEmbedderConfig",
    "SkipRVAEEmbedderConfig",
    "JVAEEmbedderConfig",
    "JRVAEEmbedderConfig",
    "NoEmbedderConfig",
    "SurrogateConfig",
    "SurrogateInputs",
    "DKLSurrogateConfig",
    "GroupsSurrogateConfig",
    "AcquisitionConfig",
    "UCBConfig",
    "LogEIConfig",
    "ThompsonConfig",
    "MaxVarianceConfig",
    "PolicyConfig",
    "PolicyBase",
    "DKLPolicyConfig",
    "GPXYPolicyConfig",
    "RandomPolicyConfig",
    "RasterPolicyConfig",
    "KINDS",
    "parse_section",
    "with_kind",
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


@dataclass(frozen=True)
class _Family:
    """The kinds of one kind-switched section: each kind has its own class, so a key given to a kind
    that does not take it is an error naming the key and the kind."""

    name: str
    default: str
    members: dict[str, type[_Section]]


def _family_of(union: Any, name: str, default: str) -> _Family:
    classes = get_args(get_args(union)[0])  # Annotated[A | B | ..., ...] -> (A, B, ...)
    return _Family(name, default, {get_args(c.model_fields["kind"].annotation)[0]: c for c in classes})


def _foreign_keys(family: _Family, data: dict[str, Any], recorded: bool) -> dict[str, Any]:
    """``data`` without the keys its kind does not take but that mean nothing there; an error naming
    the others.

    Configs written before each kind had its own class (every recorded session, every full dump of
    ``aexp config``) hold every kind's options: ``orientation: false`` under a ``vae``, ``beta: 4.0``
    beside ``acquisition: log_ei``. Such a key at its default is dropped. One set to something else
    was ignored by the run, which a user's config must not be silently again: an error naming the key
    and the kind. A recorded config keeps replaying: the run that recorded it ignored the key too.
    """
    cls = family.members[data["kind"]]
    # a key of no kind (a misspelling) is left to the class, which names it as an unknown key
    foreign = [key for key in data if key not in cls.model_fields and _owners(family, key)]
    wrong = [key for key in foreign if not recorded and not _at_default(family, key, data[key])]
    if wrong:
        notes = [f"{key!r} (an option of {', '.join(_owners(family, key))})" for key in wrong]
        raise ValueError(f"{', '.join(notes)} {'is not an option' if len(notes) == 1 else 'are not options'} "
                         f"of {family.name} kind {data['kind']!r}, {_takes(cls)}")
    return {key: value for key, value in data.items() if key not in foreign}


def _owners(family: _Family, key: str) -> list[str]:
    return [kind for kind, cls in family.members.items() if key in cls.model_fields]


def _takes(cls: type[BaseModel]) -> str:
    takes = [name for name in cls.model_fields if name != "kind"]
    return f"which takes {', '.join(takes)}" if takes else "which takes no options"


def _at_default(family: _Family, key: str, value: Any) -> bool:
    """Whether ``value`` is the default of ``key`` in a kind of ``family`` that takes it."""
    for kind, cls in family.members.items():
        if key in cls.model_fields:
            try:
                given = cls.model_validate({"kind": kind, key: value})
            except ValidationError:
                continue
            if getattr(given, key) == getattr(cls.model_validate({"kind": kind}), key):
                return True
    return False


def _switch(name: str) -> Callable[[Any, ValidationInfo], Any]:
    """The ``mode="before"`` step of a kind-switched section: the shorthands of the family, the
    default kind when none is given, and the check of every key against the kind's own class."""

    def before(data: Any, info: ValidationInfo) -> Any:
        family = KINDS[name]
        data = _SHORTHANDS[name](data)
        if not isinstance(data, dict):
            return data  # a section object, or a wrong type the union names
        data = {"kind": family.default, **data}
        if data["kind"] not in family.members:
            raise ValueError(f"{name} kind {shorten(data['kind'])} is not one of {', '.join(family.members)}")
        return _foreign_keys(family, data, recorded=bool(info.context and info.context.get("recorded")))

    return before


def _kind_name(data: Any) -> Any:
    # `acquisition: ucb` means `acquisition: {kind: ucb}`
    return {"kind": data} if isinstance(data, str) else data


def _embedder_shorthand(data: Any) -> Any:
    # `embedder: none` in YAML is the string "none"; `embedder: null` is None
    if data is None or (isinstance(data, str) and data.lower() == "none"):
        return {"kind": "none"}
    return _kind_name(data)


def _nest_acquisition(data: Any) -> Any:
    """The flat policy of every config before acquisitions had their own section, ``{acquisition: ucb,
    beta: 4.0}``, as ``{acquisition: {kind: ucb, beta: 4.0}}``."""
    if not isinstance(data, dict) or not (isinstance(data.get("acquisition"), str) or "beta" in data):
        return data
    acquisition = _kind_name(data.get("acquisition", {}))
    if "beta" in data:
        if not isinstance(acquisition, dict):
            return data  # the section's own check names the problem
        if "beta" in acquisition:
            raise ValueError("beta is given both on the policy and under acquisition; give it once")
        acquisition = {**acquisition, "beta": data["beta"]}
    return {**{k: v for k, v in data.items() if k != "beta"}, "acquisition": acquisition}


_SHORTHANDS: dict[str, Callable[[Any], Any]] = {
    "embedder": _embedder_shorthand, "acquisition": _kind_name, "policy": _nest_acquisition,
    "surrogate": _kind_name,
}


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
    (``mode: grid``), one per atom found in the survey (``mode: atoms``), or either, chosen from the
    survey and the instrument (``mode: auto``, :func:`aexp.patches.choose_mode`)."""

    mode: Literal["grid", "atoms", "auto"] = Field(
        "grid",
        description="grid | atoms | auto: atoms when the survey is periodic and the instrument can probe "
        "anywhere (not a recorded grid), with atom_sigma_px and min_distance_px from the period; else grid",
    )
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


class EmbedderPipeline(_Section):
    """What every model embedder shares around its model: how the patches are prepared for it and
    which of its latents the surrogate sees. The other fields of each kind are the arguments of its
    model's constructor (:func:`aexp.models.build_embedder`)."""

    kind: str  # each kind's class names itself; first, so a dumped section starts with it
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

    def model_options(self) -> dict[str, Any]:
        """Keyword arguments of the model's constructor: this kind's fields beyond the pipeline's."""
        skip = {"kind", *EmbedderPipeline.model_fields}
        return {name: getattr(self, name) for name in type(self).model_fields if name not in skip}


class _ModelEmbedder(EmbedderPipeline):
    # constructor arguments every model kind takes (aexp.models.base.BaseVAE and CoordinateVAE)
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(128, ge=1)
    lr: float = Field(3e-3, gt=0)
    latent_dim: int = Field(2, ge=1, description="content latents (rotation and shift come extra)")
    hidden: int = Field(32, ge=4)
    decoder_layers: int = Field(2, ge=0, description="hidden x hidden layers of the coordinate decoder")
    noise_std: float = Field(
        0.1, gt=0, description="Gaussian likelihood width, in units of each channel's scaled range"
    )


class _Rotating(_ModelEmbedder):
    rotation_prior: float = Field(math.pi / 3, gt=0, description="prior std of the angle, radians")
    translation: bool = True


class _Oriented(_Rotating):
    orientation: bool = Field(False, description="one angle offset for all kinds of object")
    equivariance: float = Field(0.0, ge=0, description="weight of the encoder-equivariance penalty")
    rotation_prior_warmup: int = Field(0, ge=0, description="epochs over which the angle prior widens")


class _Discrete(_Section):
    n_classes: int = Field(4, ge=2, description="classes of the discrete latent")


class VAEEmbedderConfig(_ModelEmbedder):
    """``vae``: a plain VAE over the patch (:class:`aexp.models.VAE`); features are its latent means."""

    kind: Literal["vae"] = "vae"


class RVAEEmbedderConfig(_Oriented):
    """``rvae``: rotation- and translation-invariant VAE (:class:`aexp.models.RVAE`); features are
    [angle, dx, dy, z...]."""

    kind: Literal["rvae"] = "rvae"


class AffineEmbedderConfig(_Oriented):
    """``affine``: the rVAE with scale and shear latents too (:class:`aexp.models.AffineVAE`)."""

    kind: Literal["affine"] = "affine"


class SkipRVAEEmbedderConfig(_Oriented):
    """``skiprvae``: the rVAE with the latent fed to every decoder layer (:class:`aexp.models.SkipRVAE`)."""

    kind: Literal["skiprvae"] = "skiprvae"


class JVAEEmbedderConfig(_ModelEmbedder, _Discrete):
    """``jvae``: a VAE with a discrete latent beside the continuous one (:class:`aexp.models.JVAE`)."""

    kind: Literal["jvae"] = "jvae"


class JRVAEEmbedderConfig(_Rotating, _Discrete):
    """``jrvae``: the jVAE with rotation and translation latents (:class:`aexp.models.JRVAE`)."""

    kind: Literal["jrvae"] = "jrvae"


class NoEmbedderConfig(_Section):
    """``none``: the surrogate sees the raw patch, flattened and standardised; no model is trained."""

    kind: Literal["none"] = "none"


EmbedderConfig = Annotated[
    RVAEEmbedderConfig | VAEEmbedderConfig | AffineEmbedderConfig | JVAEEmbedderConfig | JRVAEEmbedderConfig
    | SkipRVAEEmbedderConfig | NoEmbedderConfig,
    Field(discriminator="kind"),
    BeforeValidator(_switch("embedder")),
]
"""How patches become features, one class per ``kind`` (the names of :data:`aexp.models.EMBEDDERS`
and ``none``)."""


class NeighbourCount(_Section):
    """One neighbour-count column for atom candidates: how many found atoms of one brightness class
    lie within ``radius_px`` of the candidate."""

    brightness: int = Field(ge=0, description="brightness class, 0 = the dimmest")
    radius_px: float = Field(gt=0, description="radius of the count (survey pixels)")


class SurrogateInputs(_Section):
    """What every surrogate kind shares: the columns appended to the embedder's features
    (:func:`aexp.features.with_surrogate_columns`)."""

    kind: str  # each kind's class names itself; first, so a dumped section starts with it
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
    neighbour_counts: list[NeighbourCount] | Literal["auto"] = Field(
        default_factory=list,
        description="atom candidates: per entry, the found atoms of a brightness class within a "
        "radius of each candidate (vacancies and dopants among its neighbours); auto (with "
        "candidates.mode: auto): one per brightness class found, within 1.25 lattice periods, "
        "none on a grid (aexp.features.auto_neighbour_counts)",
    )
    brightness_classes: int = Field(
        3, ge=2, le=8, description="classes the atoms' brightness is split into for neighbour_counts"
    )

    @field_validator("centre_pixels")
    @classmethod
    def _odd_centre(cls, v: int) -> int:
        if v and v % 2 == 0:
            raise ValueError(f"must be odd (a square around the centre pixel) or 0, not {v}")
        return v

    @model_validator(mode="after")
    def _counts_within_classes(self) -> SurrogateInputs:
        for i, count in enumerate(self.neighbour_counts if isinstance(self.neighbour_counts, list) else []):
            if count.brightness >= self.brightness_classes:
                raise ValueError(f"neighbour_counts[{i}].brightness is {count.brightness}; the classes "
                                 f"are 0..{self.brightness_classes - 1} (brightness_classes)")
        return self


class DKLNetwork(_Section):
    """The deep kernel's settings (:class:`aexp.surrogates.dkl.DKLSurrogate`): the ``dkl`` surrogate's,
    and the DKL member's of a ``groups`` average (``dkl_from``)."""

    feature_dim: int = Field(2, ge=1)
    hidden: list[int] = Field(default_factory=lambda: [64, 32])
    kernel: Literal["rbf", "matern52"] = "rbf"
    lr: float = Field(0.01, gt=0)
    iterations: int = Field(200, ge=1, description="Adam iterations of the first fit")
    warm_iterations: int = Field(
        15, ge=0, description="Adam iterations of each warm-started refit (15 keeps a decision at 65,536 candidates "
        "within a 0.5 s dwell; it was 50: docs/realtime.md)"
    )
    base_kernel: bool = Field(True, description="add an ARD kernel on the raw inputs to the deep kernel")

    @field_validator("hidden")
    @classmethod
    def _positive_widths(cls, v: list[int]) -> list[int]:
        if not v or any(h < 1 for h in v):
            raise ValueError("hidden must be a non-empty list of positive layer widths")
        return v


class DKLSurrogateConfig(DKLNetwork, SurrogateInputs):
    """``dkl``: deep kernel learning, an MLP feature map -> GP kernel trained on the measured points
    (:class:`aexp.surrogates.dkl.DKLSurrogate`), with an exact GP standing in below ``gp_until``."""

    kind: Literal["dkl"] = "dkl"
    gp_until: int = Field(
        0, ge=0, description="measured points below which an exact ARD GP on the inputs stands in for the DKL"
    )
    gp_warm_maxiter: int | None = Field(
        None, ge=1, description="L-BFGS iterations of each warm-started refit of the gp_until stage; null: to "
        "convergence (as before)"
    )
    position_kernel: Literal["joint", "additive"] = Field(
        "joint", description="joint: one ARD kernel over features and (x, y); additive: k(features) + k(x, y)"
    )

    @model_validator(mode="after")
    def _consistent(self) -> DKLSurrogateConfig:
        if self.position_kernel == "additive" and not self.position:
            raise ValueError("position_kernel: additive splits the inputs into features and (x, y); "
                             "it needs position: true")
        if self.position_kernel == "additive" and not self.base_kernel:
            raise ValueError("position_kernel: additive acts on the base kernel; it needs base_kernel: true")
        return self


class GroupsSurrogateConfig(DKLNetwork, SurrogateInputs):
    """``groups``: an average of exact GPs, one per input group (embedding, survey under the probe,
    context, position) and one additive over all, weighted by leave-one-out likelihood at every step
    (:mod:`aexp.surrogates.groups`)."""

    kind: Literal["groups"] = "groups"
    dkl_from: int | None = Field(
        None,
        ge=0,
        description="measured points from which a deep-kernel GP over all inputs (the DKL settings of this "
        "section, begun as the additive GP) joins the average, weighted by its one-step-ahead predictive "
        "likelihood against the exact GPs' average; 0 or null: no DKL member",
    )
    joint: bool = Field(
        False,
        description="also average a joint exact GP over all input columns together (one RBF, a lengthscale "
        "per column: it can express a target that needs the survey and the position at once, which the "
        "additive member cannot), weighted by its leave-one-out likelihood like the others and recorded "
        "as weight 'joint'",
    )

    @model_validator(mode="after")
    def _member_needs_base_kernel(self) -> GroupsSurrogateConfig:
        if self.dkl_from and not self.base_kernel:
            raise ValueError("dkl_from: the DKL member begins as the additive GP, which becomes its base "
                             "kernel; it needs base_kernel: true")
        return self


SurrogateConfig = Annotated[
    DKLSurrogateConfig | GroupsSurrogateConfig, Field(discriminator="kind"), BeforeValidator(_switch("surrogate"))
]
"""What the ``dkl`` policy fits to the measured points, one class per ``kind``."""


class TravelConfig(_Section):
    """Travel and recency penalties, subtracted from the acquisition (see :class:`aexp.campaign.TravelCost`).

    Stage speed and settle time default to the instrument's ``describe().extra`` entries
    ``stage_speed_m_s`` and ``settle_s``, and ``dwell_s`` to its ``measurement_time_s``, when the
    config leaves them out. ``units: spread`` makes the weights independent of the target's units
    and of the acquisition's range on the sample: a move's time is counted in dwells and both
    penalties in spreads of the acquisition over the candidates at that step.
    """

    weight: float = Field(0.0, ge=0, description="penalty per second of travel (units: acquisition) "
                          "or per dwell of travel (units: spread)")
    units: Literal["acquisition", "spread"] = Field(
        "acquisition", description="acquisition: weights in acquisition units (per second of travel); "
        "spread: in spreads of the acquisition over the candidates (1.4826 x its median absolute "
        "deviation) at each step, travel time in dwells")
    dwell_s: float | None = Field(None, gt=0, description="units: spread: the dwell a move's time is "
                                  "counted in; the instrument's measurement_time_s if omitted")
    stage_speed_m_s: float | None = Field(None, gt=0, description="stage speed; from the instrument if omitted")
    settle_s: float | None = Field(None, ge=0, description="settle time per move; from the instrument if omitted")
    recency_weight: float = Field(0.0, ge=0, description="penalty at a just-measured site, in the units "
                                  "of `units`")
    recency_radius_m: float = Field(1e-9, gt=0, description="reach of the recency penalty, metres")
    recency_window: int = Field(10, ge=1, description="how many recent sites count")


class UCBConfig(_Section):
    """``ucb``: upper confidence bound, ``mu + sqrt(beta) * sigma`` (botorch ``UpperConfidenceBound``)."""

    kind: Literal["ucb"] = "ucb"
    beta: float = Field(4.0, ge=0, description="exploration weight: mu + sqrt(beta) * sigma")


class LogEIConfig(_Section):
    """``log_ei``: log expected improvement over the best measured target (botorch ``LogExpectedImprovement``)."""

    kind: Literal["log_ei"] = "log_ei"


class ThompsonConfig(_Section):
    """``thompson``: the argmax of one pathwise posterior draw, seeded per step."""

    kind: Literal["thompson"] = "thompson"


class MaxVarianceConfig(_Section):
    """``max_variance``: the largest posterior std, pure exploration (botorch ``PosteriorStandardDeviation``)."""

    kind: Literal["max_variance"] = "max_variance"


AcquisitionConfig = Annotated[
    UCBConfig | LogEIConfig | MaxVarianceConfig | ThompsonConfig,
    Field(discriminator="kind"),
    BeforeValidator(_switch("acquisition")),
]
"""How a model policy scores the candidates, one class per ``kind`` (:data:`aexp.policies.ACQUISITIONS`)."""


class PolicyBase(_Section):
    """What every policy kind shares: the initial random measurements, the schedule of commands and
    the travel penalty."""

    kind: str  # each kind's class names itself; first, so a dumped section starts with it
    n_initial: int = Field(5, ge=1, description="random measurements before the policy takes over")
    pending: bool = Field(
        True, description="decide the next point while the instrument measures, with the points in "
        "flight as pending (kriging believer; false: measure, then decide)"
    )
    max_in_flight: int = Field(1, ge=1, description="pending: commands outstanding while deciding")
    rescore: bool = Field(
        True, description="pending: when the points in flight are measured, condition the decision's "
        "model on their values (no refit) and take its argmax again before sending it"
    )
    batch: int = Field(1, ge=1, description="points chosen jointly per decision, visited in a short tour")
    travel: TravelConfig | None = Field(None, description="penalty for moving the probe and for recent sites")

    @model_validator(mode="before")
    @classmethod
    def _recorded_before_the_defaults(cls, data: Any, info: ValidationInfo) -> Any:
        # a session recorded before pending points were the default ran sequentially; one recorded
        # with pending points before `rescore` existed sent the believer's choice as it was
        if info.context and info.context.get("recorded") and isinstance(data, dict):
            if "pending" not in data:
                data = {**data, "pending": False}
            if data.get("pending") and "rescore" not in data:
                data = {**data, "rescore": False}
        return data

    @property
    def acquisition_kind(self) -> str | None:
        """The acquisition's kind, for the policies that have one."""
        return None

    @property
    def label(self) -> str:
        """``dkl/ucb``, or the kind alone for a policy without an acquisition."""
        return self.kind if self.acquisition_kind is None else f"{self.kind}/{self.acquisition_kind}"


class _ModelPolicy(PolicyBase):
    @model_validator(mode="before")
    @classmethod
    def _flat_acquisition(cls, data: Any) -> Any:
        return _nest_acquisition(data)

    @property
    def acquisition_kind(self) -> str:
        return self.acquisition.kind

    acquisition: AcquisitionConfig = Field(
        default_factory=UCBConfig, description="what the surrogate's posterior is scored by: a kind "
        "(`ucb`, `log_ei`, `thompson`, `max_variance`) and its options, e.g. `{kind: ucb, beta: 4}`; "
        "`acquisition: ucb` with `beta` beside it on the policy means the same"
    )


class DKLPolicyConfig(_ModelPolicy):
    """``dkl``: the surrogate of the ``surrogate`` section on the embedder's features, then the acquisition."""

    kind: Literal["dkl"] = "dkl"


class GPXYPolicyConfig(_ModelPolicy):
    """``gp-xy``: an exact GP on the candidates' positions only (a baseline), then the acquisition."""

    kind: Literal["gp-xy"] = "gp-xy"


class RandomPolicyConfig(PolicyBase):
    """``random``: candidates in a seeded random order (a baseline)."""

    kind: Literal["random"] = "random"


class RasterPolicyConfig(PolicyBase):
    """``raster``: a regular raster over the candidate grid, spread to fit the budget (a baseline)."""

    kind: Literal["raster"] = "raster"


PolicyConfig = Annotated[
    DKLPolicyConfig | GPXYPolicyConfig | RandomPolicyConfig | RasterPolicyConfig,
    Field(discriminator="kind"),
    BeforeValidator(_switch("policy")),
]
"""How the next point is chosen, one class per ``kind`` (:data:`aexp.policies.POLICY_KINDS`)."""

#: Every kind-switched section: its kinds, each with its own class, and the kind taken when none is given.
KINDS: dict[str, _Family] = {
    "embedder": _family_of(EmbedderConfig, "embedder", "rvae"),
    "surrogate": _family_of(SurrogateConfig, "surrogate", "dkl"),
    "acquisition": _family_of(AcquisitionConfig, "acquisition", "ucb"),
    "policy": _family_of(PolicyConfig, "policy", "dkl"),
}


_UNIONS: dict[str, Any] = {
    "embedder": EmbedderConfig, "surrogate": SurrogateConfig, "acquisition": AcquisitionConfig, "policy": PolicyConfig,
}


def parse_section(family: str, data: Any, *, recorded: bool = False) -> Any:
    """One kind-switched section (``embedder``, ``surrogate``, ``acquisition``, ``policy``) from a
    mapping or a kind's name, checked as in a config file: the class of its ``kind``.

    Raises a pydantic ``ValidationError`` (a ``ValueError``) naming the key at fault.

    Example:
        >>> type(parse_section("embedder", {"kind": "vae", "epochs": 5})).__name__
        'VAEEmbedderConfig'
    """
    return TypeAdapter(_UNIONS[family]).validate_python(data, context={"recorded": recorded})


def with_kind(section: _Section, kind: str) -> Any:
    """``section`` switched to another ``kind``, keeping the fields the new kind also takes (the
    benchmark runs several embedders and policies from one config)."""
    family = next((f for f in KINDS.values() if type(section) in f.members.values()), None)
    if family is None:
        raise TypeError(f"{type(section).__name__} has no kinds")
    if kind not in family.members:
        raise ConfigError(f"{family.name} kind {kind!r} is not one of {', '.join(family.members)}")
    cls = family.members[kind]
    kept = {k: v for k, v in section.model_dump().items() if k in cls.model_fields and k != "kind"}
    return cls.model_validate({**kept, "kind": kind})


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
    predict: bool = Field(
        False, description="feed-forward: between registrations, move the correction on at the drift rate per "
        "step of the last two registrations (the first survey counts as zero); off: the last correction holds"
    )

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
    embedder: EmbedderConfig = Field(default_factory=RVAEEmbedderConfig)
    surrogate: SurrogateConfig = Field(default_factory=DKLSurrogateConfig)
    policy: PolicyConfig = Field(default_factory=DKLPolicyConfig)
    target: TargetConfig
    stopping: StoppingConfig = Field(default_factory=StoppingConfig)
    recording: RecordingConfig = Field(default_factory=RecordingConfig)
    drift: DriftConfig | None = Field(None, description="re-registration against sample drift; off when null")

    @model_validator(mode="after")
    def _surrogate_columns_fit_the_candidates(self) -> ExperimentConfig:
        if self.surrogate.neighbour_counts == "auto":
            if self.candidates.mode != "auto":
                raise ValueError("surrogate.neighbour_counts: auto takes the lattice period candidates.mode: auto "
                                 "finds; with candidates.mode: " + self.candidates.mode + " give the counts")
        elif self.surrogate.neighbour_counts and self.candidates.mode != "atoms":
            raise ValueError("surrogate.neighbour_counts counts found atoms; it needs candidates.mode: atoms")
        if self.candidates.patch_size == "auto":  # at least 4 px: centre 3 x 3 and gradient fit
            if self.surrogate.centre_pixels > 3:
                raise ValueError(f"surrogate.centre_pixels ({self.surrogate.centre_pixels}) may be larger "
                                 "than an automatic patch (4 px or more); give candidates.patch_size")
            return self
        if self.surrogate.centre_pixels > self.candidates.patch_size:
            raise ValueError(f"surrogate.centre_pixels ({self.surrogate.centre_pixels}) is larger than "
                             f"candidates.patch_size ({self.candidates.patch_size})")
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
        """A copy with dotted-path overrides, validated again: ``with_overrides(**{"stopping.max_steps": 10})``.

        A new ``kind`` of a kind-switched section (``"embedder.kind": "vae"``) keeps the options the
        new kind takes (:func:`with_kind`) and is applied before the other overrides.
        """
        data = self.to_dict()
        for path, value in sorted(changes.items(), key=lambda change: not change[0].endswith(".kind")):
            node = data
            *parents, leaf = path.split(".")
            for key in parents:
                node = node.setdefault(key, {})
            section: Any = self
            for key in parents:
                section = getattr(section, key, None)
            if leaf == "kind" and any(type(section) in f.members.values() for f in KINDS.values()):
                node.clear()
                node.update(with_kind(section, value).model_dump(mode="json"))
            else:
                node[leaf] = value
        return parse_config(data, source="<overrides>")


def _location(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for p in loc:
        # pydantic names the kind it tried after a kind-switched section: `policy.dkl.batch` is `policy.batch`
        if parts and parts[-1] in KINDS and p in KINDS[parts[-1]].members:
            continue
        if not str(p).startswith("function-"):
            parts.append(str(p))
    return ".".join(parts) or "<top level>"


def _of_kind(loc: tuple[Any, ...]) -> str:
    """`` of policy kind 'dkl', which takes ...`` when ``loc`` lies in a kind-switched section."""
    found = ""
    for name, tag in zip(loc, loc[1:]):  # the innermost section names the key
        if name in KINDS and tag in KINDS[name].members:
            found = f" of {name} kind {tag!r}, {_takes(KINDS[name].members[tag])}"
    return found


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
            msg = "unknown key" + _of_kind(err["loc"])
        got = ""
        if err["type"] not in ("missing", "extra_forbidden") and not isinstance(err.get("input"), dict):
            got = f" (got {shorten(err.get('input'))})"
        msg = msg if len(msg) <= 300 else msg[:297] + "..."
        lines.append(f"{source}: {_location(err['loc'])}: {msg}{got}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "<config>", *, recorded: bool = False) -> ExperimentConfig:
    """Validate an already-parsed mapping. Raises :class:`ConfigError` naming ``source`` and keys.

    ``recorded``: the config comes from a session's manifest. Sessions recorded before each kind had
    its own class hold every kind's options (``orientation`` under a ``vae`` embedder); those the kind
    does not take are dropped, as the recording run ignored them. In any other config they are errors.
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping of sections, got {type(data).__name__}")
    try:
        return ExperimentConfig.model_validate(data, context={"recorded": recorded})
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
        axes = desc.signal_axes
        cfg.target.build().check_axis(axes[0] if len(axes) == 1 else axes)
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
