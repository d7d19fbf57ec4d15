"""A simulated atomic-resolution STEM looking at a 2-D MX2 crystal (a MoS2-like monolayer).

Sample. A hexagonal monolayer seen down its c axis: metal (M) columns on one sublattice and
chalcogen pairs (X2 columns) on the other, ``a / sqrt 3`` apart, ``a = lattice_constant_m``. The
orientation and origin of the lattice are drawn from the seed. Defects: a fraction
``vacancy_fraction`` of the X2 columns is missing; a fraction ``dopant_fraction`` of the M sites
holds a heavier metal (``z_dopant``). A smooth strain field, a sum of ``n_strain_centres`` Gaussian
dilatation bumps of peak ``strain_amplitude`` and width ``strain_length_m``, displaces every
column by ``u(r) = sum_c s_c (r - c) exp(-|r - c|^2 / 2 L^2)``; its dilatation is
``div u = sum_c s_c exp(-rho^2 / 2 L^2) (2 - rho^2 / L^2)``.

Survey (``"haadf"``, ``1 x H x W``). Z-contrast: each column scatters ``(Z / z_metal)^exponent``
(an X2 column counts twice ``z_chalcogen``), imaged as a Gaussian of the probe's width
(``probe_fwhm_m``) on a flat ``haadf_background``, with Poisson shot noise of ``survey_dose``
counts per unit signal (a metal column's peak is ~1).

Spectrum at a beam position ``r``: the X core-loss edge (S L2,3-like, near ``edge_onset_ev``) on
a power-law background, in expected counts::

    S(E, r) = dose * [ b (E / E0)^-p + sum_j w_j(r) (step(E - E0 - d_j) + f_j G(E - E0 - d_j - e_f)) ]

- ``w_j(r) = exp(-|r - x_j|^2 / 2 delocalisation^2)``: how much of X column ``j`` the beam excites
  (inelastic delocalisation plus beam spread).
- ``step``: an error-function edge of width ``edge_width_ev``; ``G`` a Gaussian near-edge peak
  (the fine structure) ``e_f = elnes_offset_ev`` above the onset.
- The onset shift of column ``j`` follows its surroundings::

      d_j = shift_per_vacancy_ev * (missing X among its 6 X neighbours)
          + shift_per_dopant_ev * (dopants among its 3 M neighbours) + shift_per_strain_ev * div u

- The near-edge peak ``f_j = elnes_height * (1 - 0.2 n_vac) * (1 + 0.3 n_dop)``: fewer neighbours
  weaken it, a dopant's extra d-electrons strengthen it.

Measured spectrum: Poisson counts around ``S`` at the place the probe really lands (drift and
placement error, :class:`~simulators.common.ProbePlacement`), keyed by (seed, position, repeat).
With ``damage_radius_m > 0`` every measurement adds a Gaussian exposure footprint; an X2 column
whose exposure passes its own threshold (``damage_threshold`` x an exponential draw per column)
is knocked out, which changes later spectra nearby (its edge vanishes, its neighbours shift).

Ground truth (not part of the Instrument protocol): :meth:`LatticeSimulator.atoms` (positions and
species of the pristine sample), :meth:`LatticeSimulator.noiseless_spectra`,
:meth:`LatticeSimulator.truth`, :meth:`LatticeSimulator.damaged_columns`,
:meth:`LatticeSimulator.hidden_features`.

Example:
    >>> sim = LatticeSimulator(seed=1)
    >>> survey = sim.survey()                                  # 1 x 256 x 256 HAADF
    >>> atoms = sim.atoms()                                    # positions (m) and species
    >>> m = sim.measure(tuple(atoms.positions_m[0]), command_id="c1")
    >>> sim.truth(atoms.positions_m[:5], make_target("edge_onset", window=(155, 175)))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field, ValidationInfo, field_validator
from scipy.spatial import cKDTree
from scipy.special import erf

from aexp.targets import Target
from aexp.types import InstrumentDescription, Measurement, SpectrumAxis, Survey

from .common import (
    RealismOptions,
    SquareScan,
    as_positions,
    rng_for,
)

__all__ = ["LatticeSimulator", "LatticeOptions", "Atoms"]

NAME = "lattice"
_FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))
_CHUNK = 2048
METAL, CHALCOGEN, DOPANT = "M", "X2", "D"


class LatticeOptions(RealismOptions):
    """Options of :class:`LatticeSimulator`; units are in the names (m, eV, s)."""

    survey_pixels: int = Field(256, ge=16, le=4096, description="survey is survey_pixels x survey_pixels")
    pixel_size_m: float = Field(0.3e-10, gt=0, description="survey pixel edge (m)")
    lattice_constant_m: float = Field(3.16e-10, gt=0, description="in-plane lattice constant a (m)")
    z_metal: float = Field(42.0, gt=0, description="atomic number of the host metal")
    z_chalcogen: float = Field(16.0, gt=0, description="atomic number of the chalcogen (two per column)")
    z_dopant: float = Field(74.0, gt=0, description="atomic number of the substitutional metal dopant")
    contrast_exponent: float = Field(1.7, gt=0, description="Z-contrast ~ Z^exponent")
    vacancy_fraction: float = Field(0.04, ge=0, le=0.5, description="fraction of X2 columns missing")
    dopant_fraction: float = Field(0.04, ge=0, le=0.5, description="fraction of M sites holding a dopant")
    strain_amplitude: float = Field(0.02, ge=0, le=0.2, description="peak dilatation of a strain bump")
    strain_length_m: float = Field(1.5e-9, gt=0, description="width of a strain bump (m)")
    n_strain_centres: int = Field(3, ge=0, description="strain bumps in the field")
    probe_fwhm_m: float = Field(0.8e-10, gt=0, description="probe full width at half maximum (m)")
    haadf_background: float = Field(0.02, ge=0, description="HAADF signal between columns")
    survey_dose: float = Field(300.0, gt=0, description="survey counts per unit signal (metal column ~ 1)")
    energy_range_ev: tuple[float, float] = Field((150.0, 185.0), description="energy-loss axis (eV)")
    n_channels: int = Field(176, ge=16, description="spectrum channels")
    edge_onset_ev: float = Field(162.0, gt=0, description="onset of the X edge in the pristine crystal (eV)")
    edge_width_ev: float = Field(0.7, gt=0, description="width of the edge step (eV)")
    elnes_offset_ev: float = Field(2.5, gt=0, description="near-edge peak above the onset (eV)")
    elnes_height: float = Field(0.6, ge=0, description="near-edge peak height, relative to the step")
    elnes_width_ev: float = Field(1.0, gt=0, description="near-edge peak std (eV)")
    background_at_onset: float = Field(2.0, ge=0, description="power-law background at the onset / step")
    background_exponent: float = Field(3.0, gt=0, description="background ~ E^-exponent")
    delocalisation_m: float = Field(1.0e-10, gt=0, description="reach of the inelastic signal (m)")
    shift_per_vacancy_ev: float = Field(0.5, description="onset shift per missing X neighbour (eV)")
    shift_per_dopant_ev: float = Field(0.4, description="onset shift per dopant M neighbour (eV)")
    shift_per_strain_ev: float = Field(-5.0, description="onset shift per unit dilatation (eV)")
    dose: float = Field(2000.0, gt=0, description="expected counts per channel per unit edge step")
    measurement_time_s: float = Field(0.1, ge=0, description="simulated time per spectrum (s)")
    damage_threshold: float = Field(
        5.0, gt=0, description="mean exposure (measurements at the column) that knocks out an X2 column"
    )

    @field_validator("energy_range_ev")
    @classmethod
    def _energies(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not 0 < v[0] < v[1]:
            raise ValueError("must be [low, high] with 0 < low < high (eV)")
        return v

    @field_validator("lattice_constant_m")
    @classmethod
    def _resolvable(cls, v: float, info: ValidationInfo) -> float:
        # Neighbouring columns are a / sqrt 3 apart: below 2 px they cannot be told apart.
        pixel = info.data.get("pixel_size_m")
        if pixel is not None and v / math.sqrt(3) / pixel < 2.0:
            raise ValueError(
                f"{v:.3g} m puts columns {v / math.sqrt(3) / pixel:.2f} px apart at pixel_size_m "
                f"{pixel:.3g} m; they need >= 2 px (lattice_constant_m >= {2 * math.sqrt(3) * pixel:.3g} m)"
            )
        return v

    @field_validator("edge_onset_ev")
    @classmethod
    def _onset_on_axis(cls, v: float, info: ValidationInfo) -> float:
        lo, hi = info.data.get("energy_range_ev") or (-math.inf, math.inf)
        if not lo < v < hi:
            raise ValueError(f"{v} eV lies outside energy_range_ev [{lo}, {hi}]")
        return v


@dataclass(frozen=True)
class Atoms:
    """Atom columns of the sample.

    Attributes:
        positions_m: ``N x 2`` (x, y) of each column (m), strain included.
        species: ``N`` strings: ``"M"`` host metal, ``"D"`` dopant metal, ``"X2"`` chalcogen pair.
    """

    positions_m: np.ndarray
    species: np.ndarray

    def __len__(self) -> int:
        return len(self.positions_m)


def _strain(points: np.ndarray, centres: np.ndarray, amps: np.ndarray, length: float) -> tuple[np.ndarray, np.ndarray]:
    """Displacement ``N x 2`` and dilatation ``N`` of the Gaussian strain bumps at ``points``."""
    u = np.zeros_like(points)
    dil = np.zeros(len(points))
    for c, s in zip(centres, amps):
        d = points - c
        rho2 = (d**2).sum(1) / length**2
        g = np.exp(-rho2 / 2)
        u += s * d * g[:, None]
        dil += s * g * (2 - rho2)
    return u, dil


class LatticeSimulator(SquareScan):
    """Simulated atomic-resolution STEM-EELS on an MX2 monolayer (an ``aexp.instrument.Instrument``).

    Args:
        seed: sample and noise seed (``>= 0``).
        **options: fields of :class:`LatticeOptions`.

    Raises:
        ValueError: an option is invalid or unknown (the message names it).
    """

    twin_name = NAME
    options_model = LatticeOptions

    def __init__(self, seed: int = 0, **options: Any) -> None:
        super().__init__(seed, **options)
        o = self.options
        self._axis = SpectrumAxis("energy_loss", "eV", *o.energy_range_ev, o.n_channels)
        self._build_sample()

    # --- sample ---

    def _build_sample(self) -> None:
        o = self.options
        rng = rng_for(self.seed, "lattice")
        a = o.lattice_constant_m
        extent = (o.survey_pixels - 1) * o.pixel_size_m
        theta = rng.uniform(0.0, math.pi / 3)
        rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
        a1, a2 = rot @ np.array([a, 0.0]), rot @ np.array([a / 2, a * math.sqrt(3) / 2])
        origin = rng.uniform(0.0, a, size=2)
        n = int(math.ceil(2 * extent / a)) + 3
        ij = np.stack(np.meshgrid(np.arange(-n, n + 1), np.arange(-n, n + 1), indexing="ij"), -1).reshape(-1, 2)
        cells = origin + ij[:, :1] * a1 + ij[:, 1:] * a2
        metal = cells
        chalc = cells + (a1 + a2) / 3
        pts = np.vstack([metal, chalc])
        kind = np.array([METAL] * len(metal) + [CHALCOGEN] * len(chalc), dtype=object)
        centres = rng.uniform(0.0, extent, size=(o.n_strain_centres, 2))
        signs = rng.choice([-1.0, 1.0], size=o.n_strain_centres)  # compressive or tensile bumps
        amps = o.strain_amplitude * signs * rng.uniform(0.5, 1.0, size=o.n_strain_centres)
        disp, dil = _strain(pts, centres, amps, o.strain_length_m)
        pts = pts + disp
        margin = a  # columns just outside the field still blur into it
        keep = ((pts >= -margin) & (pts <= extent + margin)).all(axis=1)
        pts, kind, dil = pts[keep], kind[keep], dil[keep]
        is_x = kind == CHALCOGEN
        is_m = ~is_x
        dopant = is_m & (rng.random(len(pts)) < o.dopant_fraction)
        vacant = is_x & (rng.random(len(pts)) < o.vacancy_fraction)
        kind[dopant] = DOPANT
        present = ~vacant
        self._sites, self._kind, self._present0, self._dilatation = pts, kind, present, dil
        self._strain_field = (centres, amps)
        # neighbour lists over all sites (present or not): the 3 M of each X, the 6 X of each X
        tree = cKDTree(pts)
        spacing = a / math.sqrt(3)
        self._x_index = np.flatnonzero(is_x)
        xs = pts[self._x_index]
        near = tree.query_ball_point(xs, r=1.2 * spacing)
        second = tree.query_ball_point(xs, r=1.2 * a)
        self._n_dop = np.array([sum(kind[k] == DOPANT for k in nb) for nb in near], dtype=float)
        self._x_neighbours = [
            np.array([k for k in nb if is_x[k] and k != j], dtype=int) for nb, j in zip(second, self._x_index)
        ]
        self._threshold = o.damage_threshold * rng_for(self.seed, "damage-threshold").exponential(size=len(pts))
        self._damaged = np.zeros(len(pts), dtype=bool)
        self._profiles_cache: tuple[bytes, np.ndarray] | None = None

    def _present(self) -> np.ndarray:
        return self._present0 & ~self._damaged

    def _edge_profiles(self, present: np.ndarray) -> np.ndarray:
        """``J x L`` edge (step + near-edge peak) of every X site (zero for a missing one)."""
        o = self.options
        key = present.tobytes()
        if self._profiles_cache is not None and self._profiles_cache[0] == key:
            return self._profiles_cache[1]
        n_vac = self._missing_neighbours(present)
        shift = (
            o.shift_per_vacancy_ev * n_vac
            + o.shift_per_dopant_ev * self._n_dop
            + o.shift_per_strain_ev * self._dilatation[self._x_index]
        )
        e = self._axis.values()[None, :]
        onset = (o.edge_onset_ev + shift)[:, None]
        step = 0.5 * (1.0 + erf((e - onset) / (math.sqrt(2) * o.edge_width_ev)))
        fine = o.elnes_height * np.clip(1 - 0.2 * n_vac, 0, None) * (1 + 0.3 * self._n_dop)
        peak = fine[:, None] * np.exp(-0.5 * ((e - onset - o.elnes_offset_ev) / o.elnes_width_ev) ** 2)
        profiles = (step + peak) * present[self._x_index][:, None]
        self._profiles_cache = (key, profiles)
        return profiles

    # --- Instrument protocol ---

    def describe(self) -> InstrumentDescription:
        return self._description(NAME, ("haadf",), {
            "lattice_constant_m": self.options.lattice_constant_m,
            "dose": self.options.dose,
            "spectrum_units": "counts",
        })

    def survey(self) -> Survey:
        """HAADF image ``1 x H x W`` float32 of the pristine sample; the same on every call."""
        return self._cached_survey(("haadf",))

    def measure(self, position: tuple[float, float], command_id: str = "") -> Measurement:
        """One core-loss spectrum (Poisson counts) with the beam sent to ``position`` (x, y) m.

        Raises:
            OutOfBounds: ``position`` is outside :attr:`bounds` (nothing happens, no time passes).
        """
        key, repeat = self._next_attempt(position)
        self._move_to(position)
        start = self.clock.now_s
        actual = self._land(position, start, repeat)
        expected = self.noiseless_spectra(np.array([actual]), present=self._present())[0]
        counts = rng_for(self.seed, "measure", *key, repeat).poisson(expected).astype(float)
        now = self.clock.advance(self.options.measurement_time_s)
        if self._ledger is not None:
            self._ledger.deposit(actual)
            self._damaged |= self._ledger.exposure(self._sites) >= self._threshold
            self._damaged &= self._kind == CHALCOGEN  # the heavy metal columns stay put
        return Measurement(
            spectrum=counts,
            axis=self._axis,
            position=(float(position[0]), float(position[1])),
            duration_s=self.options.measurement_time_s,
            metadata={"command_id": command_id, "clock_s": now, "repeat": repeat,
                      "probe_at_m": [actual[0], actual[1]]},
        )

    # --- hidden ground truth ---

    def atoms(self) -> Atoms:
        """The pristine sample's columns (the survey's): positions (m) and species, vacancies omitted."""
        keep = self._present0
        return Atoms(self._sites[keep].copy(), self._kind[keep].astype(str))

    def damaged_columns(self) -> np.ndarray:
        """``K x 2`` positions (m) of the columns knocked out by measurements so far."""
        return self._sites[self._damaged & self._present0].copy()

    def noiseless_spectra(self, positions: np.ndarray, present: np.ndarray | None = None) -> np.ndarray:
        """Expected counts ``N x L`` at beam positions ``N x 2`` (x, y) m (pristine sample by default)."""
        p = as_positions(positions)
        o = self.options
        profiles = self._edge_profiles(self._present0 if present is None else present)
        e = self._axis.values()
        background = o.background_at_onset * (e / o.edge_onset_ev) ** (-o.background_exponent)
        xs = self._sites[self._x_index]
        out = np.empty((len(p), len(e)))
        for start in range(0, len(p), _CHUNK):
            w = self._beam_weights(p[start : start + _CHUNK], xs)
            out[start : start + _CHUNK] = o.dose * (w @ profiles + background)
        return out

    def hidden_features(self, positions: np.ndarray) -> dict[str, np.ndarray]:
        """What the edge onset depends on, at positions ``N x 2`` (x, y) m on the pristine sample:
        the chalcogen columns' ``missing_neighbours`` (missing X among each one's 6 X neighbours),
        ``dopant_neighbours`` (dopants among its 3 M neighbours) and ``dilatation`` (``div u``),
        each averaged over the columns the beam excites there, with the spectrum's weights
        ``exp(-d^2 / 2 delocalisation^2)``. The benchmarks use them as an upper reference for what a
        learned feature set could say."""
        p = as_positions(positions)
        present = self._present0[self._x_index]
        xs = self._sites[self._x_index][present]
        n_vac = self._missing_neighbours(self._present0)[present]
        columns = np.stack([n_vac, self._n_dop[present], self._dilatation[self._x_index][present]], axis=1)
        out = np.empty((len(p), 3))
        for start in range(0, len(p), _CHUNK):
            w = self._beam_weights(p[start : start + _CHUNK], xs)
            out[start : start + _CHUNK] = (w @ columns) / np.maximum(w.sum(1, keepdims=True), 1e-300)
        return {"missing_neighbours": out[:, 0], "dopant_neighbours": out[:, 1], "dilatation": out[:, 2]}

    def truth(self, positions: np.ndarray, target: Target) -> np.ndarray:
        """Noiseless target ``N`` at positions ``N x 2`` on the pristine sample."""
        return np.asarray(target(self.noiseless_spectra(positions), self._axis.values()), dtype=float)

    # --- internals ---

    def _missing_neighbours(self, present: np.ndarray) -> np.ndarray:
        """Missing X among the 6 X neighbours of every X site, given the sites ``present``."""
        return np.array([(~present[nb]).sum() for nb in self._x_neighbours], dtype=float)

    def _beam_weights(self, positions: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """``N x J``: how much a beam at each position excites each column, ``exp(-d^2 / 2 delocalisation^2)``."""
        d2 = ((positions[:, None, :] - columns[None]) ** 2).sum(-1)
        return np.exp(-d2 / (2 * self.options.delocalisation_m**2))

    def _render_survey(self) -> np.ndarray:
        """``H x W`` float32: Gaussian columns weighted by Z^exponent, Poisson shot noise."""
        o = self.options
        n = o.survey_pixels
        z = {METAL: o.z_metal, DOPANT: o.z_dopant}
        weight = np.array([
            2 * (o.z_chalcogen / o.z_metal) ** o.contrast_exponent if k == CHALCOGEN
            else (z[k] / o.z_metal) ** o.contrast_exponent for k in self._kind
        ]) * self._present0
        sigma_px = o.probe_fwhm_m / _FWHM_PER_SIGMA / o.pixel_size_m
        rc = self.transform.to_pixel(self._sites)
        img = np.full((n, n), o.haadf_background)
        r = max(2, int(math.ceil(4 * sigma_px)))
        offs = np.arange(-r, r + 1)
        for (row, col), wgt in zip(rc, weight):
            if wgt == 0:
                continue
            r0, c0 = int(round(row)), int(round(col))
            rows, cols = r0 + offs, c0 + offs
            gr = np.exp(-0.5 * ((rows - row) / sigma_px) ** 2)
            gc = np.exp(-0.5 * ((cols - col) / sigma_px) ** 2)
            ok_r, ok_c = (rows >= 0) & (rows < n), (cols >= 0) & (cols < n)
            if ok_r.any() and ok_c.any():
                img[np.ix_(rows[ok_r], cols[ok_c])] += wgt * np.outer(gr[ok_r], gc[ok_c])
        counts = rng_for(self.seed, "survey").poisson(img * o.survey_dose)
        return (counts / o.survey_dose).astype(np.float32)
