"""Hysteresis-loop maps from a real bias waveform onto the unfolded bias axis (``aexp.io.loops``).

The loops are a tanh hysteresis with known switching biases: the up branch switches at ``VC_UP``,
the down branch at ``VC_DOWN``, so ``coercive_bias = (VC_UP - VC_DOWN) / 2`` and
``imprint = (VC_UP + VC_DOWN) / 2``; the area has a closed form in ``ln cosh``. No real BEPS
recording is in the repository: the waveforms below are the shapes instruments write (triangles and
sines, even and odd lengths, any starting phase, repeated turning points, two cycles).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from aexp.griddata import load_grid
from aexp.io.loops import parse_waveform, unfold_loops
from aexp.io.recordings import ImportOptions, RecordingError, import_recording, list_recording
from aexp.targets import make_target

VC_UP, VC_DOWN, AMP = 3.0, -1.0, 2.0
V = 10.0


def _triangle(n: int, start: float, cycles: int = 1, top: float = V) -> np.ndarray:
    """``cycles`` triangle cycles of ``n`` points each; ``start`` in periods: 0 = 0 V going up,
    0.25 = +V going down, 0.75 = -V going up."""
    t = (np.arange(n * cycles) / n + start) % 1.0
    return np.interp(t, [0.0, 0.25, 0.75, 1.0], [0.0, top, -top, 0.0])


def _loops(bias: np.ndarray, width: float = 0.5, vc_up: float = VC_UP, vc_down: float = VC_DOWN) -> np.ndarray:
    """The response at each waveform point: which branch a point is on follows from the waveform."""
    rising = np.roll(bias, -1) - np.roll(bias, 1) > 0  # at a turning point the loop is saturated anyway
    return AMP * np.tanh((bias - np.where(rising, vc_up, vc_down)) / width)


def _lncosh(x):
    return np.logaddexp(x, -x) - np.log(2.0)


def _exact_area(vmax: float, width: float) -> float:
    """``int (R_down - R_up) dV`` over ``[-vmax, vmax]``."""
    def branch(vc):
        return AMP * width * (_lncosh((vmax - vc) / width) - _lncosh((-vmax - vc) / width))
    return float(branch(VC_DOWN) - branch(VC_UP))


def _targets(loop: np.ndarray, axis) -> dict[str, float]:
    u = np.linspace(axis.start, axis.stop, axis.n)
    return {t: float(make_target(t)(loop, u)) for t in ("coercive_bias", "imprint", "loop_area")}


def _analytic(axis, width: float) -> np.ndarray:
    """The tanh loop at the unfolded axis's own biases (down branch at the turning point, as ``_loops``)."""
    u = np.linspace(axis.start, axis.stop, axis.n)
    k = np.arange(axis.n)
    up = k < axis.n // 2
    return AMP * np.tanh((np.where(up, u, 2 * u[axis.n // 2] - u) - np.where(up, VC_UP, VC_DOWN)) / width)


# bias, tanh width, how close the unfolded loop is to the analytic one: a triangle's samples fall on
# the unfolded axis's biases (exact); a sine's do not (linear interpolation, h^2 |R''| / 8)
WAVEFORMS = {
    "triangle, 64 points, 0 V going up": (_triangle(64, 0.0), 0.5, 1e-9),
    "triangle, 80 points, +V going down": (_triangle(80, 0.25), 0.5, 1e-9),
    "triangle, 100 points, -V going up": (_triangle(100, 0.75), 0.5, 1e-9),
    "triangle, 2 cycles of 80, 0 V going up": (_triangle(80, 0.0, cycles=2), 0.5, 1e-9),
    "triangle, 81 points, -V .. +V .. -V closed": (np.interp(np.arange(81), [0, 40, 80], [-V, V, -V]), 0.5, 1e-9),
    "triangle, 72 points, half a step off (turning points repeated)": (_triangle(72, 1 / 144), 0.5, 1e-9),
    "sine, 96 points, 0 V going up": (V * np.sin(2 * np.pi * np.arange(96) / 96), 1.0, 0.08),
    "sine, 2 cycles of 96, +V going down": (V * np.cos(2 * np.pi * np.arange(192) / 96), 1.0, 0.08),
}


@pytest.mark.parametrize("name", list(WAVEFORMS))
def test_unfolded_loops_give_the_closed_form_for_any_phase_and_parity(name):
    bias, width, loop_tol = WAVEFORMS[name]
    responses = np.broadcast_to(_loops(bias, width), (2, 3, len(bias)))
    lm = unfold_loops(responses, bias)
    assert lm.loops.shape[:2] == (2, 3) and lm.axis.n % 2 == 1 and lm.axis.n >= 9
    vmax = float(bias.max())
    assert (lm.axis.name, lm.axis.units, lm.axis.start, lm.axis.stop) == ("unfolded_bias", "V", -vmax, 3 * vmax)
    assert np.abs(lm.loops[1, 2] - _analytic(lm.axis, width)).max() < loop_tol
    # the targets' own midline crossing on steps of 0.5-0.65 V is good to ~0.02 V
    got = _targets(lm.loops[1, 2], lm.axis)
    assert got["coercive_bias"] == pytest.approx((VC_UP - VC_DOWN) / 2, abs=0.025)
    assert got["imprint"] == pytest.approx((VC_UP + VC_DOWN) / 2, abs=0.025)
    assert got["loop_area"] == pytest.approx(_exact_area(vmax, width), rel=2e-3)
    assert lm.metadata["waveform"] == pytest.approx(bias.tolist()) and lm.metadata["waveform_points"] == len(bias)


def test_the_starting_phase_does_not_change_the_loop():
    base = _triangle(80, 0.75)  # -V going up: already on the unfolded order
    reference = unfold_loops(_loops(base)[None, None], base)
    # one point per grid bias: the unfolded loop is the recorded one, closed by its first point again
    assert np.array_equal(reference.loops[0, 0], np.append(_loops(base), _loops(base)[0]))
    for shift in (1, 20, 33, 40, 60, 79):  # every starting point of the same cycle, even length
        bias = np.roll(base, -shift)
        lm = unfold_loops(_loops(bias)[None, None], bias)
        assert np.array_equal(lm.loops, reference.loops), shift
        assert lm.metadata["turning_points"]["v_min"] == [(80 - shift) % 80]
    assert reference.metadata["start"] == "-10 V going up"
    assert unfold_loops(_loops(np.roll(base, -40))[None, None], np.roll(base, -40)).metadata["start"] == "10 V going down"


def test_two_cycles_are_averaged_unless_one_is_chosen():
    bias = _triangle(80, 0.75, cycles=2)  # -V going up: cycle 0 is the first 80 points
    # a first (virgin) cycle that switches later than the second one
    responses = np.concatenate([_loops(bias[:80], vc_up=5.0, vc_down=-3.0), _loops(bias[80:])])[None, None]
    zero = unfold_loops(responses, bias, cycle=0)
    one = unfold_loops(responses, bias, cycle=1)
    both = unfold_loops(responses, bias)
    assert _targets(zero.loops[0, 0], zero.axis)["coercive_bias"] == pytest.approx(4.0, abs=1e-6)
    assert _targets(one.loops[0, 0], one.axis)["coercive_bias"] == pytest.approx(2.0, abs=1e-6)
    assert np.array_equal(both.loops, (zero.loops + one.loops) / 2)
    assert both.metadata["cycles"] == 2 and both.metadata["cycle"] == "average"
    assert "the 2 cycles averaged" in both.metadata["resampled"]
    assert one.metadata["cycle"] == 1 and "cycle 1 of 2 kept" in one.metadata["resampled"]
    assert both.metadata["turning_points"] == {"v_min": [0, 80], "v_max": [40, 120]}
    # a waveform that starts elsewhere: its first cycle is the first to start at -V, completed at the end
    late = unfold_loops(np.roll(responses, -20, axis=-1), np.roll(bias, -20))
    assert late.metadata["turning_points"] == {"v_min": [60, 140], "v_max": [100, 20]}  # per cycle
    assert np.array_equal(late.loops, both.loops)
    with pytest.raises(RecordingError, match=r"cycle 2 asked for; the bias waveform holds 2 cycle\(s\), 0 .. 1"):
        unfold_loops(responses, bias, cycle=2)


def test_a_flat_loop_is_nan_and_nan_responses_stay_nan():
    bias = _triangle(64, 0.0)
    noise = np.random.default_rng(0).normal(0, 0.01, size=(2, 2, 64))
    responses = np.stack([np.stack([_loops(bias), np.zeros(64)]), np.stack([_loops(bias), _loops(bias)])]) + noise
    responses[1, 0] = np.nan  # a failed measurement
    responses[1, 1, 5] = np.nan  # one failed fit, on a bias that is a grid point of the unfolded axis
    lm = unfold_loops(responses, bias)
    u = np.linspace(lm.axis.start, lm.axis.stop, lm.axis.n)
    area = make_target("loop_area")(lm.loops.reshape(4, -1), u)
    assert np.isfinite(area[0]) and np.isnan(area[1])  # flat: a failed measurement, not 0
    assert np.isnan(lm.loops[1, 0]).all() and np.isnan(area[2])
    assert np.isnan(lm.loops[1, 1]).sum() == 1 and np.isfinite(area[3])


@pytest.mark.parametrize(("bias", "message"), [
    (np.linspace(-V, V, 40), r"only rises \(-10 .. 10 V over 40 points\)"),
    (np.linspace(V, -V, 40), "only falls"),
    (np.full(40, 2.0), "constant"),
    (_triangle(80, 0.0)[:61], "not whole cycles: it ends at -10 V and starts at 0 V"),
    (np.concatenate([_triangle(40, 0.0), _triangle(40, 0.0, top=5.0)]), "turns at -10, 5, -5, 10 V; every cycle must sweep the same range"),
    (np.array([1.0, -1.0] * 10), "cycle 0 of the bias waveform has 2 distinct biases on the way up"),
    (np.where(np.arange(64) == 3, np.nan, _triangle(64, 0.0)), "NaN or inf .at index 3"),
])
def test_bad_waveforms_are_one_clear_error(bias, message):
    with pytest.raises(RecordingError, match=message):
        parse_waveform(bias, "bias.npy")


def test_a_waveform_of_the_wrong_length_is_refused():
    bias = _triangle(64, 0.0)
    with pytest.raises(RecordingError, match=r"bias waveform has shape \(64,\) but each loop has 63 points"):
        unfold_loops(np.zeros((2, 2, 63)), bias)


# --- through aexp import, the replay driver and a USID file -------------------------------------------


def _npy_pair(tmp_path, cycles: int = 2):
    bias = _triangle(80, 0.0, cycles=cycles)
    rows, cols = 4, 5
    cube = np.empty((rows, cols, len(bias)), dtype=np.float32)
    for r in range(rows):
        for c in range(cols):  # a map of coercive biases: VC_UP + c / 2, so coercive_bias = 2 + c / 4
            cube[r, c] = _loops(bias, vc_up=VC_UP + c / 2)
    np.save(tmp_path / "loops.npy", cube)
    np.save(tmp_path / "bias.npy", bias)
    return tmp_path / "loops.npy", tmp_path / "bias.npy", bias


def test_aexp_import_of_a_npy_loop_map_with_its_bias(tmp_path, capsys):
    from aexp.cli.main import main

    cube, bias_file, bias = _npy_pair(tmp_path)
    out = tmp_path / "loops.npz"
    assert main(["import", str(cube), "--bias", str(bias_file), "--pixel-size", "1e-8", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "grid 4 x 5 spectra of 81 values, unfolded_bias -10 .. 30 V" in text
    assert "a bias waveform of 160 points (bias.npy, given with --bias" in text and "0 V going up" in text
    ds = load_grid(out)
    assert (ds.axis.name, ds.axis.units, ds.axis.start, ds.axis.stop, ds.axis.n) == ("unfolded_bias", "V", -V, 3 * V, 81)
    loops = ds.metadata["loops"]
    assert loops["waveform"] == pytest.approx(bias.tolist()) and loops["cycles"] == 2 and loops["cycle"] == "average"
    u = np.linspace(ds.axis.start, ds.axis.stop, ds.axis.n)
    coercive = make_target("coercive_bias")(ds.spectra.reshape(20, -1).astype(float), u).reshape(4, 5)
    assert coercive == pytest.approx(np.broadcast_to(2.0 + np.arange(5) / 4, (4, 5)), abs=1e-3)
    # one cycle kept; a bad waveform is one line and exit status 2
    assert main(["import", str(cube), "--bias", str(bias_file), "--cycle", "1", "--pixel-size", "1e-8",
                 "--out", str(tmp_path / "one.npz")]) == 0
    assert load_grid(tmp_path / "one.npz").metadata["loops"]["cycle"] == 1
    np.save(tmp_path / "ramp.npy", np.linspace(-V, V, 160))
    assert main(["import", str(cube), "--bias", str(tmp_path / "ramp.npy"), "--pixel-size", "1e-8",
                 "--out", str(tmp_path / "bad.npz")]) == 2
    err = capsys.readouterr().err
    assert "loops.npy, signal 'loops': the bias waveform only rises" in err and "Traceback" not in err
    np.save(tmp_path / "short.npy", bias[:100])
    with pytest.raises(RecordingError, match=r"bias waveform \(short.npy, .*\) has 100 values but the signal axis"):
        import_recording(cube, ImportOptions(bias=tmp_path / "short.npy", pixel_size=1e-8))
    np.save(tmp_path / "complex.npy", np.load(cube) * (1 + 1j))
    with pytest.raises(RecordingError, match="the loops are complex numbers; import a real response"):
        import_recording(tmp_path / "complex.npy", ImportOptions(bias=bias_file, pixel_size=1e-8))
    with pytest.raises(RecordingError, match="not both"):
        ImportOptions.from_mapping({"bias": "b.npy", "axis": ["bias", "V", -1, 1]}, "test")


def test_replay_driver_measures_the_unfolded_loops(tmp_path):
    from aexp.config import parse_config
    from aexp.instrument import load_instrument
    from aexp.loop import run_experiment

    cube, bias_file, _ = _npy_pair(tmp_path)
    options = {"path": str(cube), "bias": str(bias_file), "pixel_size": 1e-8}
    inst = load_instrument("replay", options)
    desc = inst.describe()
    assert desc.spectrum_axis.name == "unfolded_bias" and desc.extra["recording"]["loops"]["waveform_points"] == 160
    cfg = parse_config({"instrument": {"driver": "replay", "options": options}, "embedder": "none",
                        "candidates": {"stride": 1, "patch_size": 2}, "policy": {"kind": "random", "n_initial": 2},
                        "target": {"name": "coercive_bias"}, "stopping": {"max_steps": 4},
                        "recording": {"figure": False}})
    _, res = run_experiment(cfg, inst, tmp_path / "run", progress=False)
    assert len(res.steps) == 6 and all(s.status == "ok" for s in res.steps)
    for s in res.steps:
        col = round(s.position[0] / 1e-8)
        assert s.target == pytest.approx(2.0 + col / 4, abs=1e-3)
    with pytest.raises(RecordingError, match=r"cycle must be a cycle number"):
        load_instrument("replay", {**options, "cycle": -1})


def _usid(path, bias: np.ndarray, cube: np.ndarray, name: str = "DC_Offset", units: str = "V", monkeypatch=None):
    """A USID HDF5 file as pycroscopy writes a BEPS loop map: the DC offset as a spectroscopic dimension."""
    import h5py

    pyUSID = pytest.importorskip("pyUSID")
    if not hasattr(np, "product"):  # pyUSID 0.0.12's writer still calls the alias NumPy 2 removed
        monkeypatch.setattr(np, "product", np.prod, raising=False)
    rows, cols, n = cube.shape
    with h5py.File(path, "w") as f:
        group = pyUSID.hdf_utils.create_indexed_group(pyUSID.hdf_utils.create_indexed_group(f, "Measurement"),
                                                      "Channel")
        pos = [pyUSID.Dimension("X", "um", np.arange(cols) * 0.05), pyUSID.Dimension("Y", "um", np.arange(rows) * 0.05)]
        with pytest.warns(UserWarning):
            pyUSID.hdf_utils.write_main_dataset(group, cube.reshape(rows * cols, n), "Raw_Data", "Piezoresponse",
                                                "a.u.", pos, [pyUSID.Dimension(name, units, bias)])
    return path


def test_a_usid_file_uses_its_own_bias_waveform(tmp_path, monkeypatch):
    bias = V * np.cos(2 * np.pi * np.arange(96) / 96)  # +V going down, even length: non-uniform values
    cube = np.broadcast_to(_loops(bias, width=1.0), (3, 4, 96)).astype(np.float32)
    path = _usid(tmp_path / "beps.h5", bias, cube, monkeypatch=monkeypatch)
    with warnings.catch_warnings():  # rosettasciio's "Ignoring non-uniformity" is not passed on: aexp does not
        warnings.filterwarnings("error", "Ignoring non-uniformity")
        ds = import_recording(path)
        assert "DC_Offset (96, non-uniform, V)" in list_recording(path)
    assert ds.axis.name == "unfolded_bias" and ds.axis.n == 97 and ds.spectra.shape[:2] == (3, 4)
    loops = ds.metadata["loops"]
    assert loops["waveform_source"] == "the recording's 'DC_Offset' axis in V" and loops["start"] == "10 V going down"
    assert loops["waveform"] == pytest.approx(bias.astype(np.float32).tolist())
    u = np.linspace(ds.axis.start, ds.axis.stop, ds.axis.n)
    assert float(make_target("coercive_bias")(ds.spectra[1, 2].astype(float), u)) == pytest.approx(2.0, abs=0.03)
    assert ds.transform.pixel_size == pytest.approx(5e-8)


def test_a_non_uniform_axis_that_is_no_bias_waveform_is_still_refused(tmp_path, monkeypatch):
    freq = np.sort(np.random.default_rng(0).uniform(300e3, 320e3, 16))  # a non-uniform frequency sweep
    path = _usid(tmp_path / "sho.h5", freq, np.ones((3, 4, 16), dtype=np.float32), name="Frequency", units="Hz",
                 monkeypatch=monkeypatch)
    with pytest.raises(RecordingError, match="the signal axis 'Frequency' is non-uniform"):
        import_recording(path)


def test_a_hyperspy_file_with_a_bias_axis_in_millivolts(tmp_path):
    from rsciio.hspy import file_writer

    bias = _triangle(64, 0.25)  # +V going down, 64 points
    cube = np.broadcast_to(_loops(bias), (3, 4, 64)).astype(np.float32)
    axes = [{"name": "y", "size": 3, "scale": 20.0, "offset": 0.0, "units": "nm", "navigate": True},
            {"name": "x", "size": 4, "scale": 20.0, "offset": 0.0, "units": "nm", "navigate": True},
            {"name": "Bias", "axis": bias * 1e3, "units": "mV", "navigate": False}]
    file_writer(str(tmp_path / "loops.hspy"), {
        "data": cube, "axes": axes, "original_metadata": {}, "tmp_parameters": {}, "models": {},
        "metadata": {"General": {"title": "piezoresponse"}, "Signal": {"signal_type": ""}},
        "attributes": {"_lazy": False}, "package_info": {"name": "aexp-test", "version": "0"},
        "learning_results": {},
    })
    ds = import_recording(tmp_path / "loops.hspy")
    assert (ds.axis.name, ds.axis.start, ds.axis.stop, ds.axis.n) == ("unfolded_bias", -V, 3 * V, 65)
    assert ds.metadata["loops"]["waveform"] == pytest.approx(bias.tolist())
    assert ds.metadata["loops"]["waveform_source"] == "the recording's 'Bias' axis in mV"
    assert np.abs(ds.spectra[2, 3] - _analytic(ds.axis, 0.5)).max() < 1e-6
