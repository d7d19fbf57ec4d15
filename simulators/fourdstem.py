"""A simulated 4D-STEM: a nanobeam diffraction pattern at every probe position over a crystal.

Model. A documented analytic (kinematic, rigid-disk) model, not a multislice simulation: abTEM
installs from PyPI but would move the shared environment to zarr 3 and costs a multislice run per
probe position, and py4DSTEM pins numpy 1.26; neither fits a twin that has to answer in
milliseconds on two cores. What the model keeps is what 4D-STEM analysis reads off a pattern: disk
positions (lattice orientation and strain), the shift of the whole pattern (the in-plane field,
DPC), disk intensities (polarity, disorder, thickness) and shot noise.

Sample. A crystal with a rectangular cell ``a x b`` (``lattice_a_m``, ``lattice_b_m``) whose
orientation ``theta_0`` is drawn from the seed, seen through a probe of convergence semi-angle
``alpha`` (``convergence_mrad``). At a position ``r``:

- rotation ``theta(r) = theta_0 + (wall_rotation / 2) tanh(s / w) + bend_rotation (r - c).b / L``:
  a straight domain wall (signed distance ``s``, width ``w = wall_width_m``, place and angle from
  the seed) across which the lattice turns by ``wall_rotation_deg``, plus a bend of the foil that
  turns it by ``bend_rotation_deg`` across the field (direction ``b`` from the seed, ``L`` the
  field's width, ``c`` its centre);
- strain ``eps(r)``: ``n_strain_centres`` Gaussian dilatation bumps, displacement
  ``u = sum_c s_c (r - c) exp(-|r - c|^2 / 2 l^2)`` (``l = strain_length_m``, peak
  ``strain_amplitude``), ``eps = sym(grad u)``;
- polarity ``P(r) = tanh(s / w)``: the two domains have opposite polarity, which breaks Friedel's
  law for the ``(+-1, 0)`` disks: ``I(+-g_10) ~ 1 +- friedel_asymmetry P``;
- beam deflection ``d(r)`` (mrad; the DPC signal, ``d ~ -E t`` for the projected in-plane field
  ``E``): a uniform ``background_deflection_mrad`` (direction from the seed), a bound charge at the
  wall, ``wall_deflection_mrad n (s / w) exp(1/2 - s^2 / 2 w^2)`` along the wall normal ``n``, and
  ``n_defects`` charged point defects, ``+-defect_deflection_mrad (r - r_k) / l_d exp(1/2 - |r -
  r_k|^2 / 2 l_d^2)`` (``l_d = defect_radius_m``);
- disorder ``D(r) = sum_k exp(-|r - r_k|^2 / 2 l_d^2)`` at the defects (plus beam damage, below)
  and a relative thickness ``t(r)`` (a smooth random field around 1, ``thickness_variation``).

Pattern (``ky x kx``, ``detector_pixels`` square, ``detector_pixel_mrad`` per pixel, the
undeflected beam at the detector's centre). Disks of radius ``alpha`` with a logistic edge
(``disk_edge_mrad``) at ``d + (I + eps)^-1 R(theta) g_hk`` for the central beam and the eight
reflections ``h, k in {-1, 0, 1}`` (``g_10 = lambda / a``, ``g_01 = lambda / b``, ``lambda`` the
electron wavelength at ``beam_energy_kev``), each normalised to unit area and weighted: 1 for the
central disk, ``t exp(-D) I_hk`` for a reflection (``bragg_10``, ``bragg_01``, ``bragg_11``), and a
diffuse Lorentzian halo of weight ``diffuse * t (1 + D)``. The weights are normalised so the
expected counts sum to ``dose`` electrons; the measured pattern is Poisson counts keyed by (seed,
position, repeat), taken where the probe really lands (drift, placement error; see
:class:`~simulators.common.ProbePlacement`). With ``damage_radius_m > 0`` each pattern leaves a
Gaussian exposure footprint, and ``damage_disorder`` x the exposure adds to ``D`` of later
patterns there (amorphisation: weaker disks, stronger halo).

Survey (``4 x H x W``, channels ``haadf``, ``adf``, ``com_x``, ``com_y``): virtual images of the
pristine sample. ``haadf``: high-angle diffuse scattering beyond the detector, ``t (1 + haadf_disorder
D)``; ``adf``: the fraction of the pattern between ``1.2 alpha`` and the detector's edge; both with
Poisson noise at ``survey_dose`` counts per unit signal. ``com_x``, ``com_y``: the centre of mass
of the pattern (mrad), a coarse DPC: averaged over ``dpc_bin`` x ``dpc_bin`` scan blocks, with the
shot noise of ``survey_dose`` electrons per pixel.

Measurement: ``measure`` returns the pattern ``ky x kx`` in ``Measurement.spectrum`` with its two
axes, ``ky`` and ``kx`` in mrad (0 where the undeflected beam falls), in ``Measurement.axes``;
``describe()`` names them in ``measurement_axes``. :meth:`FourDStemSimulator.measure_pattern`
returns the pattern and its :class:`~aexp.diffraction.DetectorCalibration`; it is the same acquisition.

Ground truth (not part of the Instrument protocol): :meth:`FourDStemSimulator.noiseless_patterns`,
:meth:`FourDStemSimulator.local_physics`, :meth:`FourDStemSimulator.hidden_features`,
:meth:`FourDStemSimulator.truth`, :meth:`FourDStemSimulator.pattern_truth`.

Example:
    >>> sim = FourDStemSimulator(seed=1)
    >>> survey = sim.survey()                                  # 4 x 64 x 64: haadf, adf, com_x, com_y
    >>> pattern, cal = sim.measure_pattern((20e-9, 31e-9))     # 64 x 64 counts
    >>> com_magnitude(pattern, cal)                             # mrad
    >>> sim.pattern_truth(np.array([[20e-9, 31e-9]]), com_magnitude)
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from importlib import import_module, metadata
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, model_validator
from scipy import ndimage

from aexp.diffraction import DetectorCalibration, centre_of_mass
from aexp.instrument import MeasurementFailed
from aexp.targets import Target
from aexp.types import InstrumentDescription, Measurement, SpectrumAxis, Survey

from .common import (
    RealismOptions,
    SquareScan,
    as_positions,
    rng_for,
)

__all__ = [
    "FourDStemSimulator", "FourDStemOptions", "electron_wavelength_m", "detector_axes", "write_4d", "CHANNELS",
    "PHYSICS",
]

NAME = "fourdstem"
CHANNELS = ("haadf", "adf", "com_x", "com_y")
PHYSICS = (
    "rotation_rad", "strain_xx", "strain_yy", "strain_xy", "polarity", "deflection_x_mrad",
    "deflection_y_mrad", "disorder", "thickness",
)
# (h, k) of the disks: the central beam first, then the eight first-order reflections.
_HK = np.array([(0, 0), (1, 0), (-1, 0), (0, 1), (0, -1), (1, 1), (-1, -1), (1, -1), (-1, 1)], dtype=float)
# Probe positions rendered per vectorised step: chunk x disks x pixels floats stay near 40 MB.
_CHUNK = 128
_HALO_MRAD = 2.0  # half width of the diffuse halo


def electron_wavelength_m(energy_kev: float) -> float:
    """Relativistic electron wavelength ``h / sqrt(2 m e V (1 + e V / 2 m c^2))`` in metres."""
    h, m, e, c = 6.62607015e-34, 9.1093837015e-31, 1.602176634e-19, 299792458.0
    v = energy_kev * 1e3
    return h / math.sqrt(2 * m * e * v * (1 + e * v / (2 * m * c**2)))


class FourDStemOptions(RealismOptions):
    """Options of :class:`FourDStemSimulator`; units are in the names (m, mrad, deg, keV, s)."""

    survey_pixels: int = Field(64, ge=8, le=1024, description="scan is survey_pixels x survey_pixels")
    pixel_size_m: float = Field(1e-9, gt=0, description="scan step (m)")
    detector_pixels: int = Field(64, ge=32, le=256, description="pattern is detector_pixels x detector_pixels")
    detector_pixel_mrad: float = Field(0.35, gt=0, description="scattering angle per detector pixel (mrad)")
    beam_energy_kev: float = Field(200.0, gt=0, description="beam energy (keV)")
    lattice_a_m: float = Field(0.60e-9, gt=0, description="cell edge a of the rectangular lattice (m)")
    lattice_b_m: float = Field(0.45e-9, gt=0, description="cell edge b of the rectangular lattice (m)")
    convergence_mrad: float = Field(1.5, gt=0, description="probe convergence semi-angle = disk radius (mrad)")
    disk_edge_mrad: float = Field(0.08, gt=0, description="softness of a disk's edge (mrad)")
    bragg_10: float = Field(0.35, ge=0, description="weight of a (+-1, 0) disk, central disk = 1")
    bragg_01: float = Field(0.25, ge=0, description="weight of a (0, +-1) disk")
    bragg_11: float = Field(0.12, ge=0, description="weight of a (+-1, +-1) disk")
    diffuse: float = Field(0.3, ge=0, description="weight of the diffuse halo at t = 1, D = 0")
    friedel_asymmetry: float = Field(0.15, ge=0, lt=1, description="I(+-g_10) ~ 1 +- this x polarity")
    wall_rotation_deg: float = Field(14.0, ge=0, le=60, description="lattice turn across the domain wall (deg)")
    wall_width_m: float = Field(4e-9, gt=0, description="width of the domain wall (m)")
    bend_rotation_deg: float = Field(8.0, ge=0, le=60, description="lattice turn across the field from bending (deg)")
    n_strain_centres: int = Field(3, ge=0, description="strain bumps in the field")
    strain_amplitude: float = Field(0.02, ge=0, le=0.1, description="peak dilatation of a strain bump")
    strain_length_m: float = Field(6e-9, gt=0, description="width of a strain bump (m)")
    n_defects: int = Field(4, ge=0, description="charged point defects in the field")
    defect_radius_m: float = Field(2.5e-9, gt=0, description="reach of a defect's field and disorder (m)")
    defect_deflection_mrad: float = Field(0.5, ge=0, description="peak beam deflection by a defect (mrad)")
    wall_deflection_mrad: float = Field(0.6, ge=0, description="peak beam deflection by the wall's bound charge (mrad)")
    background_deflection_mrad: float = Field(0.1, ge=0, description="uniform deflection (mrad), direction from the seed")
    thickness_variation: float = Field(0.15, ge=0, lt=1, description="std of the relative thickness about 1")
    dose: float = Field(2e4, gt=0, description="electrons per diffraction pattern")
    survey_dose: float = Field(500.0, gt=0, description="survey counts per unit signal (electrons per DPC pixel)")
    haadf_disorder: float = Field(0.5, ge=0, description="extra HAADF signal per unit disorder")
    dpc_bin: int = Field(4, ge=1, description="the survey's DPC is averaged over dpc_bin x dpc_bin scan pixels")
    damage_disorder: float = Field(0.3, ge=0, description="disorder added per unit exposure (with damage_radius_m > 0)")
    measurement_time_s: float = Field(0.01, ge=0, description="simulated time per pattern (s)")
    fail_probability: float = Field(0.0, ge=0, le=1, description="chance that a measurement raises MeasurementFailed")

    @model_validator(mode="after")
    def _disks_fit(self) -> FourDStemOptions:
        lam = electron_wavelength_m(self.beam_energy_kev)
        g10, g01 = lam / self.lattice_a_m * 1e3, lam / self.lattice_b_m * 1e3
        if 2 * self.convergence_mrad >= 0.95 * min(g10, g01):
            raise ValueError(
                f"convergence_mrad {self.convergence_mrad} makes neighbouring disks overlap (g_10 = {g10:.3g}, "
                f"g_01 = {g01:.3g} mrad): it must be below {0.95 * min(g10, g01) / 2:.3g} mrad"
            )
        shift = self.background_deflection_mrad + self.wall_deflection_mrad + 2 * self.defect_deflection_mrad
        reach = math.hypot(g10, g01) * (1 + 2 * self.strain_amplitude) + self.convergence_mrad + shift
        half = (self.detector_pixels - 1) / 2 * self.detector_pixel_mrad
        if reach >= half:
            raise ValueError(
                f"the (1, 1) disks reach {reach:.3g} mrad but the detector's half width is {half:.3g} mrad "
                f"(detector_pixels x detector_pixel_mrad / 2): raise detector_pixels or detector_pixel_mrad, "
                "or lattice_a_m / lattice_b_m"
            )
        return self


class FourDStemSimulator(SquareScan):
    """Simulated nanobeam 4D-STEM over a crystal with a domain wall (an ``aexp.instrument.Instrument``).

    Args:
        seed: sample and noise seed (``>= 0``).
        **options: fields of :class:`FourDStemOptions`.

    Raises:
        ValueError: an option is invalid or unknown (the message names it).
    """

    twin_name = NAME
    options_model = FourDStemOptions

    def __init__(self, seed: int = 0, **options: Any) -> None:
        super().__init__(seed, **options)
        n = self.options.detector_pixels
        self.calibration = DetectorCalibration(self.options.detector_pixel_mrad, ((n - 1) / 2, (n - 1) / 2))
        self._axes = detector_axes(self.calibration, n)
        self._axis = self._axes[0]
        self._build_sample()

    # --- sample ---

    def _build_sample(self) -> None:
        o = self.options
        rng = rng_for(self.seed, "fourdstem")
        extent = (o.survey_pixels - 1) * o.pixel_size_m
        centre = np.array([extent / 2, extent / 2])
        self.orientation_rad = float(rng.uniform(0.0, math.pi))  # the pattern is 2-fold symmetric
        wall_angle = rng.uniform(0.0, math.pi)
        self._wall_normal = np.array([math.cos(wall_angle), math.sin(wall_angle)])
        self._wall_point = centre + rng.uniform(-0.15, 0.15, size=2) * extent
        bend = rng.uniform(0.0, 2 * math.pi)
        self._bend = (centre, np.array([math.cos(bend), math.sin(bend)]) / max(extent, 1e-30))
        back = rng.uniform(0.0, 2 * math.pi)
        self._background = o.background_deflection_mrad * np.array([math.cos(back), math.sin(back)])
        self._strain_centres = rng.uniform(0.0, extent, size=(o.n_strain_centres, 2))
        signs = rng.choice([-1.0, 1.0], size=o.n_strain_centres)  # tensile or compressive bumps
        self._strain_amps = o.strain_amplitude * signs * rng.uniform(0.5, 1.0, size=o.n_strain_centres)
        self._defects = rng.uniform(0.0, extent, size=(o.n_defects, 2))
        self._charges = rng.choice([-1.0, 1.0], size=o.n_defects)
        n = o.survey_pixels
        noise = rng_for(self.seed, "thickness").normal(size=(n, n))
        smooth = ndimage.gaussian_filter(noise, max(1.0, n / 8), mode="reflect")
        self._thickness = 1.0 + o.thickness_variation * smooth / max(float(smooth.std()), 1e-12)
        lam = electron_wavelength_m(o.beam_energy_kev)
        self._g0 = _HK * np.array([lam / o.lattice_a_m, lam / o.lattice_b_m]) * 1e3  # 9 x 2 mrad, unrotated
        self._polar_sign = np.zeros(len(_HK))
        self._polar_sign[[1, 2]] = [1.0, -1.0]  # only the (+-1, 0) Friedel pair feels the polarity
        self._bragg = np.array([1.0, o.bragg_10, o.bragg_10, o.bragg_01, o.bragg_01] + [o.bragg_11] * 4)

    def local_physics(self, positions: np.ndarray, extra_disorder: np.ndarray | float = 0.0) -> dict[str, np.ndarray]:
        """The sample's state at positions ``N x 2`` (x, y) m: ``N`` values each of
        :data:`PHYSICS` (rotation relative to the mean orientation, radians; strain components;
        polarity in [-1, 1]; beam deflection, mrad; disorder; relative thickness)."""
        o = self.options
        p = as_positions(positions)
        s = (p - self._wall_point) @ self._wall_normal
        polarity = np.tanh(s / o.wall_width_m)
        centre, bend_dir = self._bend
        rotation = (math.radians(o.wall_rotation_deg) / 2 * polarity
                    + math.radians(o.bend_rotation_deg) * ((p - centre) @ bend_dir))
        grad = np.zeros((len(p), 2, 2))
        for c, amp in zip(self._strain_centres, self._strain_amps):
            d = p - c
            g = np.exp(-(d**2).sum(1) / (2 * o.strain_length_m**2))
            grad += amp * g[:, None, None] * (np.eye(2)[None] - d[:, :, None] * d[:, None, :] / o.strain_length_m**2)
        u = s / o.wall_width_m
        deflection = self._background + (o.wall_deflection_mrad * u * np.exp(0.5 - u**2 / 2))[:, None] * self._wall_normal
        disorder = np.zeros(len(p)) + extra_disorder
        for k, q in zip(self._defects, self._charges):
            d = (p - k) / o.defect_radius_m
            g = np.exp(-(d**2).sum(1) / 2)
            deflection = deflection + q * o.defect_deflection_mrad * d * (math.sqrt(math.e) * g)[:, None]
            disorder = disorder + g
        rc = self.transform.to_pixel(p).T
        thickness = ndimage.map_coordinates(self._thickness, rc, order=1, mode="nearest")
        return {
            "rotation_rad": rotation, "strain_xx": grad[:, 0, 0], "strain_yy": grad[:, 1, 1],
            "strain_xy": grad[:, 0, 1], "polarity": polarity, "deflection_x_mrad": deflection[:, 0],
            "deflection_y_mrad": deflection[:, 1], "disorder": disorder, "thickness": thickness,
        }

    # --- Instrument protocol ---

    def describe(self) -> InstrumentDescription:
        n = self.options.detector_pixels
        desc = self._description(NAME, CHANNELS, {
            "dose": self.options.dose,
            "spectrum_units": "counts",
            "pattern_shape": [n, n],
            "calibration": self.calibration.to_dict(),
        })
        desc.measurement_axes = self._axes
        return desc

    def survey(self) -> Survey:
        """Virtual images ``4 x H x W`` float32 (haadf, adf, com_x mrad, com_y mrad); the same on every call."""
        return self._cached_survey(CHANNELS)

    def measure_pattern(
        self, position: tuple[float, float], command_id: str = ""
    ) -> tuple[np.ndarray, DetectorCalibration]:
        """One diffraction pattern ``ky x kx`` (Poisson counts) with the probe sent to ``position``
        (x, y) m, and its calibration.

        Raises:
            OutOfBounds: ``position`` is outside :attr:`bounds` (nothing happens, no time passes).
            MeasurementFailed: with probability ``fail_probability`` (seeded per position, repeat).
        """
        pattern, _ = self._acquire(position, command_id)
        return pattern, self.calibration

    def measure(self, position: tuple[float, float], command_id: str = "") -> Measurement:
        """:meth:`measure_pattern` as a :class:`~aexp.types.Measurement`: the pattern ``ky x kx``
        on the axes ``ky``, ``kx`` (mrad), its calibration also in the metadata."""
        pattern, meta = self._acquire(position, command_id)
        return Measurement(
            spectrum=pattern,
            axis=self._axis,
            position=(float(position[0]), float(position[1])),
            duration_s=self.options.measurement_time_s,
            metadata=meta,
            axes=self._axes,
        )

    def _acquire(self, position: tuple[float, float], command_id: str) -> tuple[np.ndarray, dict[str, Any]]:
        key, repeat = self._next_attempt(position)
        self._move_to(position)
        start = self.clock.now_s
        now = self.clock.advance(self.options.measurement_time_s)
        p_fail = self.options.fail_probability
        if p_fail > 0 and rng_for(self.seed, "fail", *key, repeat).random() < p_fail:
            raise MeasurementFailed(
                f"simulated detector fault at (x={position[0]:.4g} m, y={position[1]:.4g} m), "
                f"repeat {repeat}, command {command_id!r}"
            )
        actual = self._land(position, start, repeat)
        damage = 0.0
        if self._ledger is not None:
            damage = self.options.damage_disorder * float(self._ledger.exposure(np.array([actual]))[0])
        expected = self.noiseless_patterns(np.array([actual]), extra_disorder=damage)[0]
        counts = rng_for(self.seed, "measure", *key, repeat).poisson(expected).astype(float)
        if self._ledger is not None:
            self._ledger.deposit(actual)
        n = self.options.detector_pixels
        meta = {"command_id": command_id, "clock_s": now, "repeat": repeat, "probe_at_m": [actual[0], actual[1]],
                "pattern_shape": [n, n], "calibration": self.calibration.to_dict(), "damage_disorder": damage}
        return counts, meta

    # --- hidden ground truth ---

    def noiseless_patterns(
        self, positions: np.ndarray, extra_disorder: np.ndarray | float = 0.0
    ) -> np.ndarray:
        """Expected counts ``N x ky x kx`` at positions ``N x 2`` (x, y) m; no bounds check."""
        p = as_positions(positions)
        extra = np.broadcast_to(np.asarray(extra_disorder, dtype=float), (len(p),))
        n = self.options.detector_pixels
        out = np.empty((len(p), n, n))
        for start in range(0, len(p), _CHUNK):
            stop = start + _CHUNK
            out[start:stop] = self._render(self.local_physics(p[start:stop], extra[start:stop]))
        return out

    def hidden_features(self, positions: np.ndarray) -> dict[str, np.ndarray]:
        """What a pattern depends on, at positions ``N x 2`` (x, y) m: every entry of
        :meth:`local_physics`, plus ``com_x_mrad`` and ``com_y_mrad``, the centre of mass of the
        noiseless pattern (the deflection, plus the small pull of the polarity's Friedel
        asymmetry and of the detector's edge on the halo). The benchmarks use them as the truth
        an analysis of the patterns should recover."""
        p = as_positions(positions)
        features = self.local_physics(p)
        com = centre_of_mass(self.noiseless_patterns(p), self.calibration).reshape(-1, 2)
        return {**features, "com_x_mrad": com[:, 0], "com_y_mrad": com[:, 1]}

    def truth(self, positions: np.ndarray, target: Target) -> np.ndarray:
        """Noiseless target ``N`` at positions ``N x 2``: a pattern target (``target.ndim == 2``) on
        the patterns and their ``(ky, kx)`` axes, any other on the patterns flattened row-major."""
        patterns = self.noiseless_patterns(positions)
        if getattr(target, "ndim", 1) == 2:
            return np.asarray(target(patterns, tuple(a.values() for a in self._axes)), dtype=float)
        flat = patterns.reshape(len(patterns), -1)
        return np.asarray(target(flat, np.arange(flat.shape[1], dtype=float)), dtype=float)

    def pattern_truth(
        self, positions: np.ndarray, scalar: Callable[..., Any], **params: Any
    ) -> np.ndarray:
        """``scalar(noiseless patterns, calibration, **params)`` at positions ``N x 2``: ``N``
        floats, for a function of :mod:`aexp.diffraction`."""
        patterns = self.noiseless_patterns(positions)
        return np.atleast_1d(np.asarray(scalar(patterns, self.calibration, **params), dtype=float))

    def reflections(self, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Where the disks are, relative to the (deflected) central beam, at positions ``N x 2``:
        ``N x 9 x 2`` (kx, ky) in mrad, and the ``9 x 2`` Miller indices ``(h, k)`` of each
        (the central beam first)."""
        return self._reflections(self.local_physics(positions)), _HK.astype(int)

    # --- internals ---

    def _reflections(self, physics: dict[str, np.ndarray]) -> np.ndarray:
        """``N x 9 x 2`` (kx, ky) mrad: the reciprocal vectors of the turned, strained lattice,
        ``(I + eps)^-1 R(theta) g_hk`` (``eps`` symmetric and small)."""
        theta = self.orientation_rad + physics["rotation_rad"]
        rot = np.stack([np.stack([np.cos(theta), -np.sin(theta)], -1), np.stack([np.sin(theta), np.cos(theta)], -1)], -2)
        eps = np.stack([np.stack([physics["strain_xx"], physics["strain_xy"]], -1),
                        np.stack([physics["strain_xy"], physics["strain_yy"]], -1)], -2)
        return np.einsum("nij,njk,dk->ndi", np.linalg.inv(np.eye(2)[None] + eps), rot, self._g0)

    def _render(self, physics: dict[str, np.ndarray]) -> np.ndarray:
        """Expected counts ``N x ky x kx`` for the local physics of ``N`` positions."""
        o = self.options
        shift = np.stack([physics["deflection_x_mrad"], physics["deflection_y_mrad"]], -1)
        centres = self._reflections(physics) + shift[:, None, :]  # N x 9 x 2 (kx, ky) mrad
        t, dis = physics["thickness"], physics["disorder"]
        weight = self._bragg[None, :] * (1.0 + o.friedel_asymmetry * physics["polarity"][:, None] * self._polar_sign)
        weight[:, 1:] *= (t * np.exp(-dis))[:, None]
        n = o.detector_pixels
        pattern = self._disks(centres, weight)
        kx, ky = self.calibration.k_grid((n, n))
        r0 = np.hypot(kx[None] - shift[:, :1, None], ky[None] - shift[:, 1:, None])
        halo = 1.0 / (1.0 + (r0 / _HALO_MRAD) ** 2)
        halo /= halo.sum((1, 2), keepdims=True)
        halo_weight = o.diffuse * t * (1.0 + dis)
        pattern += halo_weight[:, None, None] * halo
        total = weight.sum(1) + halo_weight
        return o.dose * pattern / total[:, None, None]

    def _disks(self, centres: np.ndarray, weight: np.ndarray) -> np.ndarray:
        """``N x ky x kx``: disks of unit area times ``weight`` (``N x D``) at ``centres``
        (``N x D x 2``, (kx, ky) mrad). Each disk is drawn on a small window around its centre
        (a disk covers a few per cent of the detector), the part off the detector is lost."""
        o = self.options
        n, px = o.detector_pixels, o.detector_pixel_mrad
        half = int(math.ceil((o.convergence_mrad + 8 * o.disk_edge_mrad) / px)) + 1
        offs = np.arange(-half, half + 1)
        row = centres[..., 1] / px + self.calibration.centre_px[0]  # N x D
        col = centres[..., 0] / px + self.calibration.centre_px[1]
        rows = np.rint(row)[..., None] + offs  # N x D x W
        cols = np.rint(col)[..., None] + offs
        r = px * np.hypot((rows - row[..., None])[..., :, None], (cols - col[..., None])[..., None, :])
        disk = 1.0 / (1.0 + np.exp(np.clip((r - o.convergence_mrad) / o.disk_edge_mrad, -50, 50)))
        disk *= (weight / disk.sum((2, 3)))[..., None, None]
        inside = ((rows >= 0) & (rows < n))[..., :, None] & ((cols >= 0) & (cols < n))[..., None, :]
        which = np.arange(len(centres))[:, None, None, None]
        flat = (which * n + rows[..., :, None]) * n + cols[..., None, :]
        out = np.bincount(flat[inside].astype(np.int64), disk[inside], minlength=len(centres) * n * n)
        return out.reshape(len(centres), n, n)

    def _render_survey(self) -> np.ndarray:
        """``4 x H x W`` float32: HAADF, ADF, coarse DPC (CoM x, CoM y)."""
        o = self.options
        n = o.survey_pixels
        rc = np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1).reshape(-1, 2)
        xy = self.transform.to_instrument(rc)
        physics = self.local_physics(xy)
        haadf = physics["thickness"] * (1.0 + o.haadf_disorder * physics["disorder"])
        kx, ky = self.calibration.k_grid((o.detector_pixels, o.detector_pixels))
        annulus = np.hypot(kx, ky) >= 1.2 * o.convergence_mrad
        adf = np.empty(len(xy))
        com = np.empty((len(xy), 2))
        spread = np.empty(len(xy))
        for start in range(0, len(xy), _CHUNK):
            sl = slice(start, start + _CHUNK)
            chunk = self._render({k: v[sl] for k, v in physics.items()}) / o.dose
            adf[sl] = (chunk * annulus).sum((1, 2))
            com[sl] = centre_of_mass(chunk, self.calibration).reshape(-1, 2)
            spread[sl] = (chunk * (kx**2 + ky**2)).sum((1, 2)) - (com[sl] ** 2).sum(1)
        rng = rng_for(self.seed, "survey")
        images = [rng.poisson(np.maximum(v, 0) * o.survey_dose) / o.survey_dose for v in (haadf, adf)]
        # a coarse DPC: block means, with the shot noise of the block's electrons per axis
        b = o.dpc_bin
        blocks = (rc[:, 0] // b) * ((n + b - 1) // b) + rc[:, 1] // b
        size = np.bincount(blocks)
        for axis in (0, 1):
            mean = np.bincount(blocks, com[:, axis]) / size
            sd = np.sqrt(np.bincount(blocks, spread) / size / 2 / (o.survey_dose * size))
            images.append((mean + sd * rng.standard_normal(len(size)))[blocks])
        return np.stack([im.reshape(n, n) for im in images]).astype(np.float32)


_WRITERS = {".hspy": "rsciio.hspy", ".zspy": "rsciio.zspy"}


def detector_axes(calibration: DetectorCalibration, n: int) -> tuple[SpectrumAxis, SpectrumAxis]:
    """The ``(ky, kx)`` axes in mrad of an ``n x n`` detector: ``k = pixel_mrad (pixel - centre)``."""
    p = calibration.pixel_mrad
    (cy, cx) = calibration.centre_px
    return (SpectrumAxis("ky", "mrad", -cy * p, (n - 1 - cy) * p, n),
            SpectrumAxis("kx", "mrad", -cx * p, (n - 1 - cx) * p, n))


def write_4d(path: str | Path, sim: FourDStemSimulator, stride: int = 1) -> np.ndarray:
    """Measure a pattern at every ``stride``-th survey pixel of ``sim`` and write the
    ``rows x cols x ky x kx`` data set to ``path`` (``.hspy``, HDF5, or ``.zspy``, Zarr) through
    rosettasciio, as HyperSpy, pyxem and py4DSTEM users read it: navigation axes ``y``, ``x`` in
    nm, signal axes ``ky``, ``kx`` in mrad (offset so the undeflected beam is at 0),
    ``signal_type`` ``"electron_diffraction"``, and the twin's name, seed, options and detector
    calibration under ``original_metadata["aexp"]``. Returns the data written.

    Raises:
        ValueError: the suffix is not ``.hspy`` or ``.zspy``, or ``stride < 1``.
        ImportError: rosettasciio is missing (``pip install 'aexp[export]'``).
    """
    path = Path(path)
    if path.suffix not in _WRITERS:
        raise ValueError(f"{path}: a 4D-STEM file must end in {' or '.join(_WRITERS)}")
    if int(stride) != stride or stride < 1:
        raise ValueError(f"write_4d: stride must be an integer >= 1, got {stride!r}")
    try:
        writer = import_module(_WRITERS[path.suffix]).file_writer
    except ImportError as exc:
        raise ImportError(f"writing {path.suffix} needs rosettasciio: pip install 'aexp[export]' ({exc})") from exc
    o = sim.options
    idx = np.arange(0, o.survey_pixels, stride)
    rc = np.stack(np.meshgrid(idx, idx, indexing="ij"), -1).reshape(-1, 2)
    xy = sim.transform.to_instrument(rc)
    patterns = np.stack([sim.measure_pattern((float(x), float(y)))[0] for x, y in xy])
    n = o.detector_pixels
    data = patterns.reshape(len(idx), len(idx), n, n).astype(np.float32)
    cal = sim.calibration
    step_nm = o.pixel_size_m * stride * 1e9
    axes = [
        {"name": "y", "units": "nm", "scale": step_nm, "offset": 0.0, "size": len(idx), "navigate": True},
        {"name": "x", "units": "nm", "scale": step_nm, "offset": 0.0, "size": len(idx), "navigate": True},
        {"name": "ky", "units": "mrad", "scale": cal.pixel_mrad, "offset": -cal.centre_px[0] * cal.pixel_mrad,
         "size": n, "navigate": False},
        {"name": "kx", "units": "mrad", "scale": cal.pixel_mrad, "offset": -cal.centre_px[1] * cal.pixel_mrad,
         "size": n, "navigate": False},
    ]
    signal = {
        "data": data,
        "axes": axes,
        "metadata": {"General": {"title": f"{NAME} twin, seed {sim.seed}"},
                     "Signal": {"signal_type": "electron_diffraction", "quantity": "Counts (electrons)"}},
        "original_metadata": {"aexp": {"instrument": NAME, "seed": sim.seed, "stride": int(stride),
                                       "options": json.loads(o.model_dump_json()),
                                       "calibration": cal.to_dict()}},
        # the remaining keys are those of a HyperSpy signal's dictionary, which the writers expect
        "attributes": {"_lazy": False}, "tmp_parameters": {}, "learning_results": {}, "models": {},
        "package_info": {"name": "aexp", "version": _version()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    writer(str(path), signal, show_progressbar=False)
    return data


def _version() -> str:
    try:
        return metadata.version("aexp")
    except metadata.PackageNotFoundError:
        return "unknown"
