"""A simulated piezoresponse force microscope (PFM) on a ferroelectric film with 180 deg domains.

Sample. The polarisation ``P = sign(phi)`` of a Gaussian random field ``phi`` (white noise blurred
over ``domain_size_m``): domain walls are the zero level set of ``phi``, so they bend with every
curvature the field offers, from nearly straight to tight bubbles. ``n_defects`` point defects
(charged vacancies, say) sit at random places; ``D(r) = sum_k exp(-|r - r_k|^2 / 2 defect_radius^2)``.
For every place on the survey grid the simulator knows ``d``, the distance to the nearest wall,
``kappa``, the curvature of that nearest wall (``div(grad phi / |grad phi|)``), ``D`` and ``P``.

Survey (``"amplitude"``, ``"phase"``; ``2 x H x W``). The band-excitation amplitude (pm, arbitrary
scale) drops at walls and at defects, ``A(r) = amplitude * (1 - wall_dip exp(-d^2 / 2 w^2))
(1 - defect_dip D)`` with ``w = wall_width_m``; the phase is 0 deg where ``P = +1`` and 180 deg
where ``P = -1``. Gaussian noise of ``survey_noise`` (relative) and ``phase_noise_deg``.

Spectrum at a position: a piezoresponse loop under a triangular bias sweep
``-bias_max_v -> +bias_max_v -> -bias_max_v`` with ``points_per_branch`` steps per branch. Each
branch is a tanh switching curve ``R(V) = A tanh((V - V_c) / w_s)`` with ``V_c = imprint +- Vc``
(up branch ``+``, down branch ``-``) where::

    near  = exp(-d / wall_reach_m)                                  wall-mediated switching
    soft  = near (1 + tanh(|kappa| wall_reach_m)) / 2               curved walls move more easily
    Vc    = coercive_bias_v (1 - wall_softening soft) + defect_pinning_v D   defects pin switching
    w_s   = switching_width_v (1 + 2 near)                          wall motion switches gradually
    imprint = imprint_v P + defect_imprint_v D                      built-in fields

so the loop's coercive biases, nucleation bias (where the up branch starts to switch), imprint and
area all follow the distance to the nearest wall, its curvature and the defects.

The spectrum axis is the *unfolded* bias (``"unfolded_bias"``, V): ``2 p + 1`` values ``u`` from
``-bias_max_v`` to ``3 bias_max_v``; the applied bias is ``u`` on the way up (the first ``p + 1``
points) and ``2 bias_max_v - u`` on the way back. The loop targets of :mod:`aexp.targets` fold it.

Measured loop: the noiseless loop at the place the probe really lands (drift and placement error,
:class:`~simulators.common.ProbePlacement`) plus Gaussian noise ``loop_noise x amplitude``, keyed
by (seed, position, repeat). With ``damage_radius_m > 0`` every sweep also writes: each earlier
sweep within reach adds ``imprint_per_sweep_v`` (weighted by a Gaussian footprint) to the imprint.

Ground truth (not part of the Instrument protocol): :meth:`FerroelectricSimulator.loop_parameters`,
:meth:`FerroelectricSimulator.noiseless_spectra`, :meth:`FerroelectricSimulator.truth`,
:meth:`FerroelectricSimulator.defects`, :meth:`FerroelectricSimulator.polarisation`,
:meth:`FerroelectricSimulator.hidden_features`.

Example:
    >>> sim = FerroelectricSimulator(seed=1)
    >>> survey = sim.survey()                           # 2 x 80 x 80: amplitude, phase
    >>> loop = sim.measure((200e-9, 310e-9)).spectrum   # 2 p + 1 points over the unfolded bias
    >>> sim.truth(np.array([[200e-9, 310e-9]]), make_target("loop_area"))
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import Field, ValidationInfo, field_validator
from scipy import ndimage

from aexp.targets import Target
from aexp.types import InstrumentDescription, Measurement, SpectrumAxis, Survey

from .common import (
    RealismOptions,
    SquareScan,
    as_positions,
    rng_for,
)

__all__ = ["FerroelectricSimulator", "FerroelectricOptions", "LOOP_PARAMETERS"]

NAME = "ferroelectric"
LOOP_PARAMETERS = ("amplitude", "coercive", "width", "imprint")


class FerroelectricOptions(RealismOptions):
    """Options of :class:`FerroelectricSimulator`; units are in the names (m, V, deg, s)."""

    survey_pixels: int = Field(80, ge=8, le=4096, description="survey is survey_pixels x survey_pixels")
    pixel_size_m: float = Field(10e-9, gt=0, description="survey pixel edge (m)")
    domain_size_m: float = Field(100e-9, gt=0, description="correlation length of the domain pattern (m)")
    n_defects: int = Field(8, ge=0, description="point defects in the field")
    defect_radius_m: float = Field(15e-9, gt=0, description="reach of a defect (m)")
    wall_width_m: float = Field(12e-9, gt=0, description="width of the amplitude dip at a wall (m)")
    wall_reach_m: float = Field(40e-9, gt=0, description="distance over which a wall eases switching (m)")
    amplitude: float = Field(1.0, gt=0, description="saturated piezoresponse far from walls and defects")
    wall_dip: float = Field(0.4, ge=0, le=1, description="relative drop of the response at a wall")
    defect_dip: float = Field(0.25, ge=0, le=1, description="relative drop of the response at a defect")
    coercive_bias_v: float = Field(4.0, gt=0, description="coercive bias far from walls and defects (V)")
    wall_softening: float = Field(0.6, ge=0, lt=1, description="largest relative drop of Vc at a wall")
    defect_pinning_v: float = Field(4.0, ge=0, description="coercive bias added at a defect core (V)")
    switching_width_v: float = Field(0.8, gt=0, description="bias width of switching far from walls (V)")
    imprint_v: float = Field(0.5, description="imprint of an as-grown +P domain (V; -P gets the opposite)")
    defect_imprint_v: float = Field(1.0, description="imprint added at a defect core (V)")
    bias_max_v: float = Field(14.0, gt=0, description="the sweep runs -bias_max_v -> +bias_max_v -> back (V)")
    points_per_branch: int = Field(60, description="bias steps per branch of the sweep")
    loop_noise: float = Field(0.03, ge=0, description="loop noise std, relative to amplitude")
    survey_noise: float = Field(0.03, ge=0, description="amplitude image noise std, relative to amplitude")
    phase_noise_deg: float = Field(5.0, ge=0, description="phase image noise std (deg)")
    measurement_time_s: float = Field(1.0, ge=0, description="simulated time per loop (s)")
    imprint_per_sweep_v: float = Field(0.3, description="imprint written by one earlier sweep at the spot (V)")

    @field_validator("points_per_branch")
    @classmethod
    def _sweep_has_points(cls, v: int) -> int:
        if v < 4:
            raise ValueError(f"a bias sweep needs at least 4 points per branch, got {v}")
        return v

    @field_validator("domain_size_m")
    @classmethod
    def _domains_resolved(cls, v: float, info: ValidationInfo) -> float:
        pixel = info.data.get("pixel_size_m")
        if pixel is not None and v < 2 * pixel:
            raise ValueError(f"{v:.3g} m is under 2 pixels ({2 * pixel:.3g} m): domains would not be resolved")
        return v


def _unit_gradient_divergence(phi: np.ndarray) -> np.ndarray:
    """``div(grad phi / |grad phi|)`` in 1/pixel: the curvature of the level sets of ``phi``."""
    gr, gc = np.gradient(phi)
    norm = np.maximum(np.hypot(gr, gc), 1e-12)
    return np.gradient(gr / norm, axis=0) + np.gradient(gc / norm, axis=1)


class FerroelectricSimulator(SquareScan):
    """Simulated PFM with band-excitation spectroscopy (an ``aexp.instrument.Instrument``).

    Args:
        seed: sample and noise seed (``>= 0``).
        **options: fields of :class:`FerroelectricOptions`.

    Raises:
        ValueError: an option is invalid or unknown (the message names it).
    """

    twin_name = NAME
    options_model = FerroelectricOptions

    def __init__(self, seed: int = 0, **options: Any) -> None:
        super().__init__(seed, **options)
        o = self.options
        p = o.points_per_branch
        self._axis = SpectrumAxis("unfolded_bias", "V", -o.bias_max_v, 3 * o.bias_max_v, 2 * p + 1)
        self._build_sample()

    # --- sample ---

    def _build_sample(self) -> None:
        o = self.options
        n, px = o.survey_pixels, o.pixel_size_m
        noise = rng_for(self.seed, "domains").normal(size=(n, n))
        phi = ndimage.gaussian_filter(noise, o.domain_size_m / px / 2, mode="reflect")
        phi /= phi.std()
        polar = np.where(phi >= 0, 1.0, -1.0)
        wall = np.zeros((n, n), dtype=bool)  # pixels with an opposite neighbour
        wall[:-1] |= polar[:-1] != polar[1:]
        wall[1:] |= polar[1:] != polar[:-1]
        wall[:, :-1] |= polar[:, :-1] != polar[:, 1:]
        wall[:, 1:] |= polar[:, 1:] != polar[:, :-1]
        if wall.any():
            dist_px, (ir, ic) = ndimage.distance_transform_edt(~wall, return_indices=True)
            # a wall lies between its two pixels: half a pixel from either centre
            distance = (dist_px + 0.5) * px
            curvature = _unit_gradient_divergence(phi)[ir, ic] / px
        else:
            distance = np.full((n, n), np.inf)
            curvature = np.zeros((n, n))
        extent = (n - 1) * px
        self._defects = rng_for(self.seed, "defects").uniform(0.0, extent, size=(o.n_defects, 2))
        xy = self.transform.to_instrument(
            np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1).reshape(-1, 2)
        )
        defect = self._defect_field(xy).reshape(n, n)
        self._maps = {"phi": phi, "distance_m": distance, "curvature_per_m": curvature, "defect": defect}

    def _defect_field(self, xy: np.ndarray) -> np.ndarray:
        if len(self._defects) == 0:
            return np.zeros(len(xy))
        d2 = ((xy[:, None, :] - self._defects[None]) ** 2).sum(-1)
        return np.exp(-d2 / (2 * self.options.defect_radius_m**2)).sum(1)

    def _local(self, positions: np.ndarray) -> dict[str, np.ndarray]:
        """Sample descriptors at positions ``N x 2`` (bilinear between survey pixels)."""
        rc = self.transform.to_pixel(positions).T
        out = {k: ndimage.map_coordinates(v, rc, order=1, mode="nearest") for k, v in self._maps.items()
               if k != "defect"}
        out["defect"] = self._defect_field(positions)
        out["polarisation"] = np.where(out.pop("phi") >= 0, 1.0, -1.0)
        return out

    # --- Instrument protocol ---

    def describe(self) -> InstrumentDescription:
        return self._description(NAME, ("amplitude", "phase"), {
            "bias_max_v": self.options.bias_max_v,
            "spectrum_units": "piezoresponse (a.u.)",
            "axis_note": "unfolded bias: applied V = u for the first half, 2 bias_max_v - u after",
        })

    def survey(self) -> Survey:
        """Amplitude (a.u.) and phase (deg) images ``2 x H x W`` float32; the same on every call."""
        return self._cached_survey(("amplitude", "phase"))

    def _render_survey(self) -> np.ndarray:
        o = self.options
        n = o.survey_pixels
        rc = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1).reshape(-1, 2)
        local = self._local(self.transform.to_instrument(rc))
        amp = self._response(local).reshape(n, n)
        phase = (90.0 * (1.0 - local["polarisation"])).reshape(n, n)
        rng = rng_for(self.seed, "survey")
        amp = amp + rng.normal(0.0, o.survey_noise * o.amplitude, size=amp.shape)
        phase = phase + rng.normal(0.0, o.phase_noise_deg, size=phase.shape)
        return np.stack([amp, phase]).astype(np.float32)

    def measure(self, position: tuple[float, float], command_id: str = "") -> Measurement:
        """One hysteresis loop (``2 p + 1`` points) with the tip sent to ``position`` (x, y) m.

        Raises:
            OutOfBounds: ``position`` is outside :attr:`bounds` (nothing happens, no time passes).
        """
        key, repeat = self._next_attempt(position)
        self._move_to(position)
        actual = self._land(position, self.clock.now_s, repeat)
        written = 0.0
        if self._ledger is not None:
            written = self.options.imprint_per_sweep_v * float(self._ledger.exposure(np.array([actual]))[0])
        loop = self.noiseless_spectra(np.array([actual]), extra_imprint_v=written)[0]
        sigma = self.options.loop_noise * self.options.amplitude
        loop = loop + rng_for(self.seed, "measure", *key, repeat).normal(0.0, sigma, size=loop.shape)
        now = self.clock.advance(self.options.measurement_time_s)
        if self._ledger is not None:
            self._ledger.deposit(actual)
        return Measurement(
            spectrum=loop,
            axis=self._axis,
            position=(float(position[0]), float(position[1])),
            duration_s=self.options.measurement_time_s,
            metadata={"command_id": command_id, "clock_s": now, "repeat": repeat,
                      "probe_at_m": [actual[0], actual[1]], "written_imprint_v": written},
        )

    # --- hidden ground truth ---

    def defects(self) -> np.ndarray:
        """``K x 2`` defect positions (m)."""
        return self._defects.copy()

    def polarisation(self) -> np.ndarray:
        """``H x W`` polarisation (+1 / -1) on the survey grid."""
        return np.where(self._maps["phi"] >= 0, 1.0, -1.0)

    def hidden_features(self, positions: np.ndarray) -> dict[str, np.ndarray]:
        """What the loop depends on, at positions ``N x 2`` (x, y) m: ``wall_distance_m`` (to the
        nearest wall), ``wall_curvature_per_m`` (of that wall), ``defect`` (the defect density
        ``D``) and ``polarisation`` (+1 / -1). The benchmarks use them as an upper reference for
        what a learned feature set could say."""
        local = self._local(np.asarray(positions, dtype=float).reshape(-1, 2))
        return {
            "wall_distance_m": local["distance_m"],
            "wall_curvature_per_m": local["curvature_per_m"],
            "defect": local["defect"],
            "polarisation": local["polarisation"],
        }

    def loop_parameters(self, positions: np.ndarray) -> dict[str, np.ndarray]:
        """Loop parameters ``N`` each (``LOOP_PARAMETERS``) and descriptors at positions ``N x 2``."""
        o = self.options
        local = self._local(np.asarray(positions, dtype=float).reshape(-1, 2))
        near = np.exp(-local["distance_m"] / o.wall_reach_m)
        soft = near * (1.0 + np.tanh(np.abs(local["curvature_per_m"]) * o.wall_reach_m)) / 2.0
        return {
            **local,
            "amplitude": self._response(local),
            "coercive": o.coercive_bias_v * (1.0 - o.wall_softening * soft) + o.defect_pinning_v * local["defect"],
            "width": o.switching_width_v * (1.0 + 2.0 * near),
            "imprint": o.imprint_v * local["polarisation"] + o.defect_imprint_v * local["defect"],
        }

    def noiseless_spectra(self, positions: np.ndarray, extra_imprint_v: float = 0.0) -> np.ndarray:
        """Noiseless loops ``N x (2 p + 1)`` at positions ``N x 2`` (x, y) m; no bounds check."""
        p = as_positions(positions)
        par = self.loop_parameters(p)
        u = self._axis.values()
        half = self.options.points_per_branch
        bias = np.where(np.arange(len(u)) <= half, u, 2 * self.options.bias_max_v - u)
        going_up = (np.arange(len(u)) <= half)[None, :]
        shift = par["imprint"][:, None] + extra_imprint_v
        vc = np.where(going_up, shift + par["coercive"][:, None], shift - par["coercive"][:, None])
        return par["amplitude"][:, None] * np.tanh((bias[None, :] - vc) / par["width"][:, None])

    def truth(self, positions: np.ndarray, target: Target) -> np.ndarray:
        """Noiseless target ``N`` at positions ``N x 2``."""
        return np.asarray(target(self.noiseless_spectra(positions), self._axis.values()), dtype=float)

    # --- internals ---

    def _response(self, local: dict[str, np.ndarray]) -> np.ndarray:
        o = self.options
        at_wall = np.exp(-(local["distance_m"] ** 2) / (2 * o.wall_width_m**2))
        return o.amplitude * (1.0 - o.wall_dip * at_wall) * (1.0 - o.defect_dip * np.minimum(local["defect"], 1.0))
