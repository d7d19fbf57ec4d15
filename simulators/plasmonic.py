"""A simulated STEM-EELS microscope looking at plasmonic (silver-like) nanoparticles.

Sample. ``n_particles`` flat particles seen in projection: cubes (squares), rods (rectangles of
aspect 2-4) and triangular prisms (equilateral). Shape, size, orientation and place are drawn from
the seed; particles never overlap (a ``margin_m`` gap is kept between their circumscribed circles)
and stay ``margin_m`` inside the field.

Survey (``"haadf"``, ``1 x H x W``). Z-contrast is proportional to projected thickness, taken
uniform per particle (cube: its side; rod: its width; prism: ``prism_thickness_ratio`` x side):
``I = haadf_background + haadf_per_nm * t_nm``, blurred by a Gaussian probe of ``probe_fwhm_m``,
with Poisson shot noise of ``survey_dose`` counts per unit signal.

Spectrum at a beam position ``r`` on the energy-loss axis ``E`` (eV), in expected counts::

    S(E, r) = dose * [ Z (E / 1 eV)^-p + b + sum_modes A_m w_m(r) L(E; E_m, fwhm) ]

- ``Z (E/1 eV)^-p``: the tail of the zero-loss peak (``zlp_tail_at_1ev``, ``zlp_tail_exponent``),
  ``b`` a flat background (``spectral_background``).
- ``L``: a Lorentzian of unit height and full width ``plasmon_fwhm_ev``.
- Modes per particle (shape.family): cube and prism have ``corner``, ``edge`` and ``face`` modes;
  a rod has its long-axis dipole (family ``edge``, strongest at the two ends) and a transverse /
  bulk ``face`` mode. Energies follow the quasi-static size trend ``E_m = e_inf_ev + k_ev_nm /
  size_nm``: larger particles red-shift. ``size`` is the side (cube, prism), the length (rod long
  axis) or the width (rod transverse mode). Defaults put corner modes near 1.6-2.3 eV, edge modes
  near 2.4-2.9 eV and face modes near 3.3-4.0 eV for 10-30 nm particles.
- Weights ``w_m(r)`` in [0, 1] fall off with the beam's distance to the mode's feature. With
  ``d_out`` the distance outside the particle (0 inside) and ``d_f`` the distance to the feature
  (nearest corner or nearest edge segment)::

      w_corner, w_edge = exp(-(d_f - d_out) / mode_localization_m) * exp(-d_out / aloof_decay_m)
      w_face = 1 - exp(-depth / mode_localization_m) / 2   inside (depth below the outline)
             = exp(-d_out / aloof_decay_m) / 2              outside (aloof excitation)

Measured spectrum: Poisson counts around ``S``, drawn from a generator keyed by (seed, position in
picometres, repeat), so noise never depends on the order of measurements. ``S`` is taken where the
beam really lands: the requested place moved by scan drift and a placement error
(``drift_offset_m``, ``drift_rate_m_per_s``, ``probe_error_m``; all 0 by default).

Ground truth (not part of the Instrument protocol): :meth:`PlasmonicSimulator.noiseless_spectra`,
:meth:`PlasmonicSimulator.truth`, :meth:`PlasmonicSimulator.particles`,
:meth:`PlasmonicSimulator.hidden_features`.

Example:
    >>> sim = PlasmonicSimulator(seed=1, n_particles=6)
    >>> survey = sim.survey()                               # 1 x 128 x 128 HAADF
    >>> m = sim.measure((40e-9, 52e-9), command_id="c1")    # Poisson counts, 256 channels
    >>> edge = make_target("band_intensity", window=(2.3, 2.9))    # the edge-mode band
    >>> sim.truth(np.array([[40e-9, 52e-9]]), edge)         # noiseless edge-mode intensity
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from aexp.instrument import MeasurementFailed
from aexp.targets import Target
from aexp.types import InstrumentDescription, Measurement, SpectrumAxis, Survey

from .common import (
    PlacementOptions,
    SquareScan,
    as_positions,
    gaussian_blur,
    rng_for,
)

__all__ = ["PlasmonicSimulator", "PlasmonicOptions", "ModeSpec", "Particle", "DEFAULT_MODES"]

NAME = "plasmonic"
Shape = Literal["cube", "rod", "triangle"]
_NM = 1e-9
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
# Beam positions per vectorised step: the geometry temporaries of a chunk stay at a few MB, so
# memory is bounded by the N x L result itself.
_CHUNK = 8192


class ModeSpec(BaseModel):
    """One plasmon mode family of one shape: ``E = e_inf_ev + k_ev_nm / size_nm``, height ``amplitude``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    e_inf_ev: float = Field(gt=0, description="energy of the mode for a very large particle (eV)")
    k_ev_nm: float = Field(ge=0, description="size coefficient (eV nm): how far small particles blue-shift")
    amplitude: float = Field(ge=0, description="peak height at full excitation (spectral-model units)")

    def energy_ev(self, size_m: float) -> float:
        return self.e_inf_ev + self.k_ev_nm / (size_m / _NM)


DEFAULT_MODES: dict[str, ModeSpec] = {
    "cube.corner": ModeSpec(e_inf_ev=1.5, k_ev_nm=8.0, amplitude=1.0),
    "cube.edge": ModeSpec(e_inf_ev=2.3, k_ev_nm=6.0, amplitude=1.0),
    "cube.face": ModeSpec(e_inf_ev=3.2, k_ev_nm=4.0, amplitude=0.8),
    # Sharper tips than a cube's corners concentrate charge more: lower corner energy.
    "triangle.corner": ModeSpec(e_inf_ev=1.3, k_ev_nm=8.0, amplitude=1.0),
    "triangle.edge": ModeSpec(e_inf_ev=2.2, k_ev_nm=6.0, amplitude=1.0),
    "triangle.face": ModeSpec(e_inf_ev=3.1, k_ev_nm=5.0, amplitude=0.8),
    # Rod long-axis dipole (size = length) and transverse mode (size = width).
    "rod.edge": ModeSpec(e_inf_ev=2.1, k_ev_nm=8.0, amplitude=1.0),
    "rod.face": ModeSpec(e_inf_ev=3.2, k_ev_nm=2.0, amplitude=0.8),
}


def _check_range(value: tuple[float, float], low: float, strict_order: bool) -> tuple[float, float]:
    lo, hi = value
    if not (lo > low and (lo < hi if strict_order else lo <= hi)):
        order = "low < high" if strict_order else "low <= high"
        raise ValueError(f"must be [low, high] with {low} < low and {order}")
    return value


class PlasmonicOptions(PlacementOptions):
    """Options of :class:`PlasmonicSimulator`; units are in the names (m, eV, s)."""

    survey_pixels: int = Field(128, ge=8, le=4096, description="survey is survey_pixels x survey_pixels")
    pixel_size_m: float = Field(1e-9, gt=0, description="survey pixel edge (m)")
    n_particles: int = Field(8, ge=0, description="number of particles in the field")
    shapes: tuple[Shape, ...] = Field(
        ("cube", "rod", "triangle"), min_length=1, description="shapes dealt out evenly"
    )
    size_range_m: tuple[float, float] = Field((10e-9, 30e-9), description="side / rod length range (m)")
    rod_aspect_range: tuple[float, float] = Field((2.0, 4.0), description="rod length / width range")
    prism_thickness_ratio: float = Field(0.25, gt=0, description="triangular prism thickness / side")
    margin_m: float = Field(3e-9, ge=0, description="gap between particles and to the field edge (m)")
    energy_range_ev: tuple[float, float] = Field((0.2, 5.0), description="energy-loss axis (eV)")
    n_channels: int = Field(256, ge=2, description="spectrum channels")
    plasmon_fwhm_ev: float = Field(0.25, gt=0, description="Lorentzian full width of every mode (eV)")
    modes: dict[str, ModeSpec] = Field(
        default_factory=lambda: dict(DEFAULT_MODES),
        description="mode energies/heights by 'shape.family'; keys given override the defaults",
    )
    mode_localization_m: float = Field(4e-9, gt=0, description="decay of a mode away from its feature (m)")
    aloof_decay_m: float = Field(4e-9, gt=0, description="decay of excitation with distance outside (m)")
    zlp_tail_at_1ev: float = Field(0.5, ge=0, description="zero-loss tail height at 1 eV (model units)")
    zlp_tail_exponent: float = Field(3.0, gt=0, description="zero-loss tail ~ E^-exponent")
    spectral_background: float = Field(0.02, ge=0, description="flat spectral background (model units)")
    dose: float = Field(200.0, gt=0, description="expected counts per channel per model unit")
    haadf_per_nm: float = Field(0.03, gt=0, description="HAADF signal per nm of projected thickness")
    haadf_background: float = Field(0.05, ge=0, description="HAADF signal of the support film")
    survey_dose: float = Field(200.0, gt=0, description="survey counts per unit HAADF signal per pixel")
    probe_fwhm_m: float = Field(1e-9, ge=0, description="survey probe blur, full width (m)")
    measurement_time_s: float = Field(0.05, ge=0, description="simulated time per spectrum (s)")
    fail_probability: float = Field(
        0.0, ge=0, le=1, description="chance that a measurement raises MeasurementFailed"
    )

    @field_validator("size_range_m")
    @classmethod
    def _sizes(cls, v: tuple[float, float]) -> tuple[float, float]:
        return _check_range(v, 0.0, strict_order=False)

    @field_validator("rod_aspect_range")
    @classmethod
    def _aspects(cls, v: tuple[float, float]) -> tuple[float, float]:
        if v[0] < 1.0:
            raise ValueError("rod aspect (length / width) must be >= 1")
        return _check_range(v, 0.0, strict_order=False)

    @field_validator("energy_range_ev")
    @classmethod
    def _energies(cls, v: tuple[float, float]) -> tuple[float, float]:
        # The zero-loss tail E^-p diverges at 0: the axis must start above it.
        return _check_range(v, 0.0, strict_order=True)

    @field_validator("modes")
    @classmethod
    def _modes(cls, v: dict[str, ModeSpec]) -> dict[str, ModeSpec]:
        unknown = sorted(set(v) - set(DEFAULT_MODES))
        if unknown:
            raise ValueError(f"unknown mode(s) {unknown}; known: {', '.join(DEFAULT_MODES)}")
        return {**DEFAULT_MODES, **v}


@dataclass(frozen=True)
class Particle:
    """One particle in projection.

    Attributes:
        shape: ``"cube"``, ``"rod"`` or ``"triangle"``.
        centre_m: ``(x, y)`` of its centre (m).
        size_m: side (cube, triangle) or length (rod), m.
        angle_rad: rotation of the shape about its centre (counter-clockwise from +x).
        thickness_m: projected thickness seen by HAADF (m).
        aspect: length / width for a rod; 1 otherwise.
    """

    shape: str
    centre_m: tuple[float, float]
    size_m: float
    angle_rad: float
    thickness_m: float
    aspect: float = 1.0

    @property
    def width_m(self) -> float:
        return self.size_m / self.aspect

    @property
    def circumradius_m(self) -> float:
        return float(np.max(np.hypot(*self._local_vertices().T)))

    def _local_vertices(self) -> np.ndarray:
        a = self.size_m
        if self.shape == "triangle":
            phis = np.deg2rad([90.0, 210.0, 330.0])
            return (a / math.sqrt(3.0)) * np.stack([np.cos(phis), np.sin(phis)], axis=1)
        half_w = self.width_m / 2 if self.shape == "rod" else a / 2
        return np.array([[-a / 2, -half_w], [a / 2, -half_w], [a / 2, half_w], [-a / 2, half_w]])

    def vertices(self) -> np.ndarray:
        """``K x 2`` corners (x, y) in metres, counter-clockwise."""
        c, s = math.cos(self.angle_rad), math.sin(self.angle_rad)
        rot = np.array([[c, -s], [s, c]])
        return self._local_vertices() @ rot.T + np.asarray(self.centre_m)

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        """Distance (m) of each of ``N x 2`` points to the outline: negative inside, positive outside."""
        return _signed_distance(np.asarray(points, dtype=float), self.vertices())

    def corner_points(self) -> np.ndarray:
        """``K x 2`` places of the corner modes; none for a rod (its ends are rounded in reality)."""
        return np.zeros((0, 2)) if self.shape == "rod" else self.vertices()

    def edge_segments(self) -> tuple[np.ndarray, np.ndarray]:
        """Start and end points (``S x 2`` each) of the segments carrying the edge mode.

        For a rod these are its two ends, where the long-axis dipole piles up charge.
        """
        v = self.vertices()
        a, b = v, np.roll(v, -1, axis=0)
        if self.shape == "rod":
            return a[[1, 3]], b[[1, 3]]
        return a, b

    def families(self) -> tuple[str, ...]:
        return ("edge", "face") if self.shape == "rod" else ("corner", "edge", "face")

    def mode_size_m(self, family: str) -> float:
        """The length that sets a mode's energy: the width for a rod's transverse mode."""
        return self.width_m if (self.shape == "rod" and family == "face") else self.size_m


# --- geometry --------------------------------------------------------------------------------


def _segment_distances(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distances from points ``N x 2`` to segments ``a -> b`` (``S x 2`` each): ``N x S``."""
    ab = b - a
    ap = p[:, None, :] - a[None, :, :]
    t = np.clip((ap * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-300), 0.0, 1.0)
    d = ap - t[..., None] * ab
    return np.hypot(d[..., 0], d[..., 1])


def _signed_distance(p: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Signed distance ``N`` from points ``N x 2`` to a convex CCW polygon: < 0 inside."""
    a, b = vertices, np.roll(vertices, -1, axis=0)
    dist = _segment_distances(p, a, b).min(axis=1)
    edge = b - a
    outward = np.stack([edge[:, 1], -edge[:, 0]], axis=1)
    inside = (((p[:, None, :] - a[None]) * outward[None]).sum(-1) <= 0).all(axis=1)
    return np.where(inside, -dist, dist)


def _point_distances(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Distance ``N`` from each point ``N x 2`` to the nearest of ``q`` (``K x 2``, K >= 1)."""
    d = p[:, None, :] - q[None, :, :]
    return np.hypot(d[..., 0], d[..., 1]).min(axis=1)


# --- sample ----------------------------------------------------------------------------------

_SYMMETRY_RAD = {"cube": math.pi / 2, "rod": math.pi, "triangle": 2 * math.pi / 3}


def _draw_particle(rng: np.random.Generator, opts: PlasmonicOptions, shape: str) -> Particle:
    """A particle of ``shape`` centred at the origin with random size, angle and aspect."""
    size = float(rng.uniform(*opts.size_range_m))
    angle = float(rng.uniform(0.0, _SYMMETRY_RAD[shape]))
    aspect = float(rng.uniform(*opts.rod_aspect_range)) if shape == "rod" else 1.0
    thickness = {"cube": size, "rod": size / aspect, "triangle": opts.prism_thickness_ratio * size}[shape]
    return Particle(shape, (0.0, 0.0), size, angle, thickness_m=thickness, aspect=aspect)


def _try_centre(
    rng: np.random.Generator, p: Particle, placed: list[Particle], opts: PlasmonicOptions, tries: int
) -> tuple[float, float] | None:
    """A centre for ``p`` clear of ``placed`` and of the field edge, or None after ``tries``."""
    extent = (opts.survey_pixels - 1) * opts.pixel_size_m
    r = p.circumradius_m
    lo, hi = r + opts.margin_m, extent - r - opts.margin_m
    if lo > hi:
        return None
    centres = rng.uniform(lo, hi, size=(tries, 2))
    if placed:
        others = np.array([q.centre_m for q in placed])
        clearance = np.array([q.circumradius_m for q in placed]) + r + opts.margin_m
        gaps = np.linalg.norm(centres[:, None, :] - others[None], axis=-1)
        free = np.flatnonzero((gaps >= clearance).all(axis=1))
    else:
        free = np.arange(tries)
    if len(free) == 0:
        return None
    return float(centres[free[0], 0]), float(centres[free[0], 1])


def place_particles(opts: PlasmonicOptions, seed: int) -> tuple[Particle, ...]:
    """Draw ``n_particles`` non-overlapping particles inside the field.

    Shapes are dealt evenly from ``shapes`` in a random order, so every shape is present when
    ``n_particles >= len(shapes)``. Each particle keeps its draw while free places are sought
    (redrawing at once would bias the sample towards small particles).

    Raises:
        ValueError: they do not fit (the message names ``n_particles``).
    """
    rng = rng_for(seed, "particles")
    n = opts.n_particles
    shapes = rng.permutation(np.resize(np.array(opts.shapes), n)) if n else []
    placed: list[Particle] = []
    for shape in shapes:
        for _ in range(20):
            p = _draw_particle(rng, opts, str(shape))
            centre = _try_centre(rng, p, placed, opts, tries=200)
            if centre is not None:
                placed.append(replace(p, centre_m=centre))
                break
        else:
            extent = (opts.survey_pixels - 1) * opts.pixel_size_m
            raise ValueError(
                f"{NAME}: invalid option(s): n_particles: could not place {n} particles of size "
                f"{opts.size_range_m} m without overlap in a {extent:.3g} m field (placed "
                f"{len(placed)}); lower n_particles or size_range_m, or enlarge survey_pixels"
            )
    return tuple(placed)


# --- the instrument --------------------------------------------------------------------------


class PlasmonicSimulator(SquareScan):
    """Simulated STEM-EELS on plasmonic nanoparticles (implements ``aexp.instrument.Instrument``).

    Args:
        seed: sample and noise seed (``>= 0``); same seed -> same sample and same noise per
            (position, repeat).
        **options: fields of :class:`PlasmonicOptions`.

    Raises:
        ValueError: an option is invalid or unknown (the message names it).
    """

    twin_name = NAME
    options_model = PlasmonicOptions

    def __init__(self, seed: int = 0, **options: Any) -> None:
        super().__init__(seed, **options)
        self._particles = place_particles(self.options, self.seed)
        self._axis = SpectrumAxis("energy_loss", "eV", *self.options.energy_range_ev, self.options.n_channels)
        self._profiles = self._mode_profiles()
        self._baseline = self._zlp_and_background()

    # --- Instrument protocol ---

    def describe(self) -> InstrumentDescription:
        return self._description(NAME, ("haadf",), {
            "n_particles": len(self._particles),
            "dose": self.options.dose,
            "spectrum_units": "counts",
        })

    def survey(self) -> Survey:
        """HAADF image ``1 x H x W`` float32; identical on every call for a given seed."""
        return self._cached_survey(("haadf",))

    def measure(self, position: tuple[float, float], command_id: str = "") -> Measurement:
        """One spectrum (Poisson counts, ``L`` channels) with the beam at ``position`` (x, y) m.

        A failed attempt costs the measurement time and counts as a repeat, so a retry at the same
        place draws afresh.

        Raises:
            OutOfBounds: ``position`` is outside :attr:`bounds` (nothing happens, no time passes).
            MeasurementFailed: with probability ``fail_probability`` (seeded per position, repeat).
        """
        key, repeat = self._next_attempt(position)
        self._move_to(position)
        now = self.clock.advance(self.options.measurement_time_s)
        p_fail = self.options.fail_probability
        if p_fail > 0 and rng_for(self.seed, "fail", *key, repeat).random() < p_fail:
            raise MeasurementFailed(
                f"simulated detector fault at (x={position[0]:.4g} m, y={position[1]:.4g} m), "
                f"repeat {repeat}, command {command_id!r}"
            )
        xy = (float(position[0]), float(position[1]))
        actual = self._land(xy, now - self.options.measurement_time_s, repeat)  # at the start
        expected = self.noiseless_spectra(np.array([actual]))[0]
        counts = rng_for(self.seed, "measure", *key, repeat).poisson(expected).astype(float)
        return Measurement(
            spectrum=counts,
            axis=self._axis,
            position=xy,
            duration_s=self.options.measurement_time_s,
            metadata={"command_id": command_id, "clock_s": now, "repeat": repeat},
        )

    # --- hidden ground truth ---

    def particles(self) -> list[Particle]:
        """The sample: every particle's shape, centre, size, angle, aspect and thickness."""
        return list(self._particles)

    def hidden_features(self, positions: np.ndarray) -> dict[str, np.ndarray]:
        """What the physics of the target depends on, at positions ``N x 2`` (x, y) m, for the
        particle whose outline is nearest each one: ``size_m``, ``outline_distance_m`` (unsigned
        distance to that outline) and ``shape`` (index into the sorted shapes of the sample).

        The benchmarks use them as an upper reference for what a learned feature set could say.
        """
        p = as_positions(positions)
        particles = self._particles
        if not particles:
            raise ValueError("hidden_features: the sample has no particles (n_particles = 0)")
        distance = np.abs(np.stack([q.signed_distance(p) for q in particles], axis=1))
        nearest = distance.argmin(axis=1)
        shapes = sorted({q.shape for q in particles})
        return {
            "size_m": np.array([q.size_m for q in particles])[nearest],
            "outline_distance_m": distance[np.arange(len(p)), nearest],
            "shape": np.array([shapes.index(q.shape) for q in particles])[nearest],
        }

    def noiseless_spectra(self, positions: np.ndarray) -> np.ndarray:
        """Expected counts ``N x L`` at beam positions ``N x 2`` (x, y) m; no bounds check."""
        p = as_positions(positions)
        out = np.empty((len(p), self._axis.n))
        for start in range(0, len(p), _CHUNK):
            rows = out[start : start + _CHUNK]
            np.matmul(self._mode_weights(p[start : start + _CHUNK]), self._profiles, out=rows)
            rows += self._baseline
        return out

    def truth(self, positions: np.ndarray, target: Target) -> np.ndarray:
        """Noiseless target ``N`` at positions ``N x 2``: ``target(noiseless_spectra, axis)``."""
        return np.asarray(target(self.noiseless_spectra(positions), self._axis.values()), dtype=float)

    def mode_table(self) -> list[tuple[int, str, float]]:
        """``(particle index, family, energy eV)`` of every mode, in the order of the weights."""
        return [
            (i, fam, self.options.modes[f"{p.shape}.{fam}"].energy_ev(p.mode_size_m(fam)))
            for i, p in enumerate(self._particles)
            for fam in p.families()
        ]

    # --- internals ---

    def _mode_profiles(self) -> np.ndarray:
        """``M x L``: each mode's Lorentzian on the energy axis, height ``amplitude x dose`` counts."""
        e = self._axis.values()
        half = self.options.plasmon_fwhm_ev / 2
        rows = []
        for i, fam, energy in self.mode_table():
            p = self._particles[i]
            amp = self.options.modes[f"{p.shape}.{fam}"].amplitude
            rows.append(self.options.dose * amp / (1.0 + ((e - energy) / half) ** 2))
        return np.array(rows).reshape(len(rows), len(e))

    def _zlp_and_background(self) -> np.ndarray:
        """``L`` expected counts that do not depend on the beam position."""
        e = self._axis.values()
        o = self.options
        return o.dose * (o.zlp_tail_at_1ev * e ** (-o.zlp_tail_exponent) + o.spectral_background)

    def _mode_weights(self, p: np.ndarray) -> np.ndarray:
        """Excitation ``N x M`` of every mode (order of :meth:`mode_table`) at positions ``N x 2``."""
        loc, aloof = self.options.mode_localization_m, self.options.aloof_decay_m
        columns = []
        for particle in self._particles:
            sd = _signed_distance(p, particle.vertices())
            d_out = np.maximum(sd, 0.0)
            reach = np.exp(-d_out / aloof)
            for fam in particle.families():
                if fam == "face":
                    inside = 1.0 - 0.5 * np.exp(-np.maximum(-sd, 0.0) / loc)
                    columns.append(np.where(sd > 0, 0.5 * reach, inside))
                    continue
                if fam == "corner":
                    d_f = _point_distances(p, particle.corner_points())
                else:
                    d_f = _segment_distances(p, *particle.edge_segments()).min(axis=1)
                # Along the surface the mode decays over mode_localization_m; off it, aloof.
                columns.append(np.exp(-np.maximum(d_f - d_out, 0.0) / loc) * reach)
        return np.stack(columns, axis=1) if columns else np.zeros((len(p), 0))

    def _render_survey(self) -> np.ndarray:
        """``H x W`` float32 HAADF: thickness map, probe blur, Poisson shot noise."""
        o = self.options
        n = o.survey_pixels
        rc = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), axis=-1).reshape(-1, 2)
        xy = self.transform.to_instrument(rc)
        thickness = np.zeros(len(xy))
        for particle in self._particles:
            # Area coverage of a pixel by the outline (linear ramp over one pixel): anti-aliasing.
            cover = np.clip(0.5 - _signed_distance(xy, particle.vertices()) / o.pixel_size_m, 0.0, 1.0)
            thickness += cover * particle.thickness_m
        signal = (o.haadf_background + o.haadf_per_nm * thickness / _NM).reshape(n, n)
        blurred = gaussian_blur(signal, o.probe_fwhm_m / _FWHM_PER_SIGMA / o.pixel_size_m)
        counts = rng_for(self.seed, "survey").poisson(np.maximum(blurred, 0.0) * o.survey_dose)
        return (counts / o.survey_dose).astype(np.float32)
