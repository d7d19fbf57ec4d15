"""How a lab serves its own microscope: implement four members of the Instrument protocol, then
hand the object to :func:`aexp.link.serve.run_server`.

This example stands in for a lab's driver. Its "hardware" is two small functions (a stage move and
a spectrometer read-out) that a real driver replaces with its vendor library's calls; everything
else -- the protocol, leases, idempotent commands, CURVE security, signals -- comes from
``aexp.link.serve``. Run it on the microscope computer::

    python -m drivers.example_lab --bind tcp://127.0.0.1:5555

and on the analysis computer (through an SSH tunnel, or with CURVE keys for a network bind)::

    aexp describe tcp://127.0.0.1:5555
    aexp run configs/plasmonic-zmq.yaml --out runs/lab    # with instrument.options.address set

The class is also registered as ``example-lab`` in ``aexp.instruments``, so
``aexp serve --sim example-lab`` serves it too.
"""

from __future__ import annotations

import argparse
import logging
import sys

import numpy as np

from aexp.instrument import MeasurementFailed, check_position
from aexp.link.serve import ServerConfig, run_server
from aexp.types import Bounds, InstrumentDescription, Measurement, PixelTransform, SpectrumAxis, Survey

__all__ = ["ExampleLabInstrument", "main"]


class ExampleLabInstrument:
    """A 64 x 64 nm field, 1 nm survey pixels, 512-channel spectra whose peak shifts along x.

    Args:
        seed: noise seed (a real instrument has none; the protocol passes one to every driver).
        pixels: survey edge in pixels.
    """

    def __init__(self, seed: int = 0, pixels: int = 64) -> None:
        self.pixels = int(pixels)
        self.pixel_size_m = 1e-9
        self.axis = SpectrumAxis("energy_loss", "eV", 0.5, 4.5, 512)
        self._rng = np.random.default_rng(seed)

    # -- the four members aexp needs --

    @property
    def bounds(self) -> Bounds:
        extent = (self.pixels - 1) * self.pixel_size_m
        return Bounds(0.0, extent, 0.0, extent)

    def describe(self) -> InstrumentDescription:
        return InstrumentDescription(
            name="example-lab", bounds=self.bounds, survey_shape=(1, self.pixels, self.pixels),
            channels=("haadf",), spectrum_axis=self.axis, measurement_time_s=0.01,
        )

    def survey(self) -> Survey:
        rows, cols = np.mgrid[0 : self.pixels, 0 : self.pixels]
        image = np.sin(rows / 6.0) * np.cos(cols / 9.0)  # replace with the vendor's scan call
        return Survey(image[None].astype(np.float32), PixelTransform.square(self.pixel_size_m), ("haadf",))

    def measure(self, position: tuple[float, float], command_id: str = "") -> Measurement:
        check_position(self.bounds, position)  # refuse, never clamp
        self._move_stage(position)
        spectrum = self._read_spectrometer(position)
        if not np.all(np.isfinite(spectrum)):
            raise MeasurementFailed(f"spectrometer returned invalid data for command {command_id!r}")
        return Measurement(spectrum, self.axis, (float(position[0]), float(position[1])), 0.01,
                           {"command_id": command_id})

    # -- stand-ins for the vendor library --

    def _move_stage(self, position: tuple[float, float]) -> None:
        pass  # e.g. vendor.stage.move_to(x, y); vendor.stage.wait()

    def _read_spectrometer(self, position: tuple[float, float]) -> np.ndarray:
        e = self.axis.values()
        centre = 1.5 + 2.0 * position[0] / self.bounds.xmax
        expected = 50.0 + 400.0 * np.exp(-0.5 * ((e - centre) / 0.15) ** 2)
        return self._rng.poisson(expected).astype(float)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Serve the example lab instrument over ZeroMQ.")
    p.add_argument("--bind", default="tcp://127.0.0.1:5555")
    p.add_argument("--keys", default=None, help="server secret key folder (needed for a non-loopback bind)")
    p.add_argument("--allow", default=None, help="folder of accepted client public keys")
    args = p.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO)
    run_server(ExampleLabInstrument(), ServerConfig(bind=args.bind, keys=args.keys, allow=args.allow))
    return 0


if __name__ == "__main__":
    sys.exit(main())
