import numpy as np
import pytest

from aexp.instrument import Instrument, OutOfBounds, load_instrument
from aexp.link.serve import InstrumentServer, ServerConfig
from drivers.example_lab import ExampleLabInstrument


def test_the_example_is_an_instrument_and_is_registered():
    assert isinstance(ExampleLabInstrument(), Instrument)
    assert isinstance(load_instrument("example-lab", {"pixels": 32}), ExampleLabInstrument)


def test_the_example_served_and_driven_over_the_link():
    server = InstrumentServer(ExampleLabInstrument(pixels=32), ServerConfig(bind="tcp://127.0.0.1:*"))
    server.start()
    try:
        with load_instrument("zmq", {"address": server.address, "timeout_s": 2.0}) as lab:
            desc = lab.describe()
            assert desc.name == "example-lab" and desc.survey_shape == (1, 32, 32)
            left = lab.measure((0.0, 10e-9), command_id="left")
            right = lab.measure((31e-9, 10e-9), command_id="right")
            axis = desc.spectrum_axis.values()
            # the peak moves from 1.5 eV at the left edge to 3.5 eV at the right edge
            assert axis[np.argmax(left.spectrum)] == pytest.approx(1.5, abs=0.2)
            assert axis[np.argmax(right.spectrum)] == pytest.approx(3.5, abs=0.2)
            with pytest.raises(OutOfBounds):
                lab.measure((40e-9, 0.0), command_id="outside")
    finally:
        server.stop()
