"""Re-registration: shift estimates against known drift on the twins, failures, the campaign seam,
the session record and its exact replay."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aexp.config import ConfigError, parse_config
from aexp.drift import (
    REGISTRATIONS_FILE,
    Registrar,
    Registration,
    RegistrationWarning,
    estimate_shift,
    read_registrations,
)
from aexp.instrument import load_instrument
from aexp.loop import run_experiment
from aexp.session.replay import verify_session
from aexp.session.store import SESSION_FILES, SessionReader
from simulators.lattice import LatticeSimulator
from simulators.plasmonic import PlasmonicSimulator

PX = 1e-9


def _drifted(sim, seconds: float):  # noqa: ANN001, ANN202 - any twin
    first = sim.survey()
    sim.clock.advance(seconds)
    return first, sim.survey(), sim.sample_drift_m(seconds)


@pytest.mark.parametrize("seconds", [1.0, 3.5])
def test_the_estimate_recovers_a_known_drift_on_the_plasmonic_twin(seconds: float) -> None:
    sim = PlasmonicSimulator(seed=2, survey_pixels=64, n_particles=3, drift_nm_per_min=90.0,
                             drift_walk_nm_per_sqrt_min=3.0)
    first, later, truth = _drifted(sim, seconds)
    est = estimate_shift(first.image, later.image, first.transform, upsample_factor=20)
    assert est.ok and est.correlation > 0.9
    assert np.hypot(*truth) > 1.4 * PX  # a real shift, over a pixel
    np.testing.assert_allclose(est.shift_m, truth, atol=0.1 * PX)  # sub-pixel
    np.testing.assert_allclose(est.shift_px, (truth[1] / PX, truth[0] / PX), atol=0.1)  # (row, col)


def test_the_estimate_recovers_a_known_drift_on_the_lattice_twin() -> None:
    sim = LatticeSimulator(seed=1, survey_pixels=96, drift_nm_per_min=1.5)  # px 0.03 nm: 1.7 px in 2 s
    first, later, truth = _drifted(sim, 2.0)
    est = estimate_shift(first.image, later.image, first.transform, upsample_factor=20)
    px = sim.options.pixel_size_m
    assert est.ok
    np.testing.assert_allclose(est.shift_m, truth, atol=0.15 * px)


def test_a_shift_beyond_the_window_fails() -> None:
    sim = PlasmonicSimulator(seed=2, survey_pixels=64, n_particles=3, drift_nm_per_min=600.0)  # 10 px/s
    first, later, _ = _drifted(sim, 1.0)
    est = estimate_shift(first.image, later.image, first.transform, max_shift_px=4.0)
    assert not est.ok and "max_shift_px" in est.reason


def test_an_unrelated_image_has_low_correlation_and_fails() -> None:
    sim = PlasmonicSimulator(seed=2, survey_pixels=64, n_particles=3)
    first = sim.survey()
    noise = np.random.default_rng(0).normal(size=first.image.shape).astype(np.float32)
    est = estimate_shift(first.image, noise, first.transform, max_shift_px=100.0)
    assert not est.ok and "correlation" in est.reason


class _Surveys:
    """An instrument whose surveys are given in order (for the registrar alone)."""

    def __init__(self, images: list[np.ndarray]) -> None:
        self.images = images

    def survey(self):  # noqa: ANN201
        from aexp.types import PixelTransform, Survey

        return Survey(self.images.pop(0), PixelTransform.square(PX), ("haadf",))


def test_a_failed_registration_is_recorded_keeps_the_correction_and_warns() -> None:
    sim = PlasmonicSimulator(seed=2, survey_pixels=64, n_particles=3, drift_nm_per_min=60.0)
    first, later, truth = _drifted(sim, 2.0)
    noise = np.random.default_rng(0).normal(size=first.image.shape).astype(np.float32)
    records: list[Registration] = []
    reg = Registrar(first, every_steps=2, sink=records.append)
    assert not reg.due(0, 0.0) and not reg.due(1, 0.0) and reg.due(2, 0.0)
    reg.register(_Surveys([later.image]), 2, 10.0)
    np.testing.assert_allclose(reg.offset_m, truth, atol=0.1 * PX)
    assert not reg.due(3, 0.0) and reg.due(4, 0.0)
    with pytest.warns(RegistrationWarning, match="keeping the correction"):
        bad = reg.register(_Surveys([noise]), 4, 20.0)
    assert not bad.ok and bad.offset_m == reg.offset_m == records[0].offset_m
    assert [r.step for r in records] == [2, 4]


def test_a_time_schedule_and_recorded_registrations_replayed_without_surveying() -> None:
    sim = PlasmonicSimulator(seed=2, survey_pixels=64, n_particles=3)
    reg = Registrar(sim.survey(), every_s=60.0)
    assert not reg.due(5, 59.0) and reg.due(5, 60.0)
    recorded = [Registration(3, 61.0, (0.5, 1.0), (1e-9, 5e-10), 0.97, True, "", (1e-9, 5e-10))]
    replay = Registrar(sim.survey(), every_s=60.0, recorded=recorded, live_from=None)
    assert not replay.due(2, 1e9) and replay.due(3, 0.0)
    replay.register(None, 3, 0.0)  # type: ignore[arg-type] - no instrument: nothing is surveyed
    assert replay.offset_m == (1e-9, 5e-10) and not replay.due(4, 1e9)


def test_predict_moves_the_correction_on_at_the_rate_of_the_last_two_registrations() -> None:
    sim = PlasmonicSimulator(seed=2, survey_pixels=64, n_particles=3)
    recorded = [Registration(3, 3.0, (0.0, 1.0), (1e-9, 0.0), 0.9, True, "", (1e-9, 0.0)),
                Registration(6, 6.0, (1.0, 2.0), (2e-9, 1e-9), 0.9, True, "", (2e-9, 1e-9)),
                Registration(9, 9.0, (0.0, 0.0), (0.0, 0.0), 0.1, False, "correlation", (2e-9, 1e-9))]
    hold = Registrar(sim.survey(), every_steps=3, recorded=recorded, live_from=None)
    reg = Registrar(sim.survey(), every_steps=3, recorded=recorded, live_from=None, predict=True)
    assert reg.offset_at(2) == (0.0, 0.0)  # nothing registered yet: nothing to extrapolate
    for r in (hold, reg):
        r.register(None, 3, 3.0)  # type: ignore[arg-type] - recorded: nothing is surveyed
    # from the first survey's zero at step 0 to 1 nm at step 3: 1/3 nm per step
    assert reg.offset_at(3) == (1e-9, 0.0) and reg.offset_at(5) == pytest.approx((1e-9 + 2e-9 / 3, 0.0))
    assert hold.offset_at(5) == (1e-9, 0.0)
    for r in (hold, reg):
        r.register(None, 6, 6.0)  # type: ignore[arg-type]
        r.register(None, 9, 9.0)  # type: ignore[arg-type] - a failed one: the rate of steps 3 -> 6 holds
    assert reg.offset_at(12) == pytest.approx((2e-9 + 2e-9, 1e-9 + 2e-9))
    assert hold.offset_at(12) == (2e-9, 1e-9)


def test_a_predicted_correction_keeps_up_between_registrations_and_replays_exactly(tiny_config, tmp_path) -> None:
    # 0.5 px per 1 s measurement, no walk: the held correction falls up to 1 px behind before each
    # survey; the predicted one follows the constant drift from the second registration on
    errors = {}
    for predict in (False, True):
        cfg = tiny_config(sample={"drift_nm_per_min": 30.0, "measurement_time_s": 1.0}, stopping={"max_steps": 9},
                          drift={"resurvey_every": 3, "predict": predict},
                          policy={"kind": "dkl", "n_initial": 3, "pending": False})
        inst = load_instrument("plasmonic", cfg["instrument"]["options"], seed=4)
        folder, _ = run_experiment(parse_config(cfg), inst, tmp_path / str(predict), seed=4, progress=False)
        errors[predict] = _position_errors(folder, inst)
        assert verify_session(folder).steps == 12
    late = slice(7, None)  # the steps after the second registration (step 6), but its own
    assert errors[False][late].mean() > 0.4 and errors[True][late].mean() < 0.5 * errors[False][late].mean()


def test_drift_needs_a_schedule(tiny_config) -> None:
    with pytest.raises(ConfigError, match="resurvey_every"):
        parse_config(tiny_config(drift={"max_shift_px": 4}))


def _position_errors(folder, inst) -> np.ndarray:  # noqa: ANN001
    """|sample point really probed - candidate chosen| per step, in pixels (the twin knows the truth)."""
    cands = SessionReader(folder).array("candidates")
    return np.array([np.hypot(*(np.asarray(actual) - cands[s.index])) / PX
                     for s, (_, actual, _) in zip(_sent(folder), inst.probe_log(), strict=True)])


def _sent(folder):  # noqa: ANN001, ANN202
    """The steps that reached the twin (a corrected position past the field's edge never leaves)."""
    return [s for s in SessionReader(folder).steps if not (s.error or "").startswith("out of bounds")]


@pytest.mark.parametrize("pending", [False, True])
def test_a_drifting_run_re_registers_records_and_replays_exactly(tiny_config, tmp_path, pending: bool) -> None:
    # 0.5 nm/s on a 1 nm pixel, 1 s per measurement: 6 px by the end without correction
    sample = {"drift_nm_per_min": 30.0, "measurement_time_s": 1.0}
    errors = {}
    for name, drift in (("off", None), ("on", {"resurvey_every": 3, "upsample_factor": 20})):
        cfg = tiny_config(sample=sample, stopping={"max_steps": 9}, drift=drift,
                          policy={"kind": "dkl", "n_initial": 3, "pending": pending})
        inst = load_instrument("plasmonic", cfg["instrument"]["options"], seed=4)
        folder, result = run_experiment(parse_config(cfg), inst, tmp_path / name, seed=4, progress=False)
        errors[name] = _position_errors(folder, inst)
        if drift is not None:
            records = read_registrations(folder)
            assert [r.step for r in records] == [3, 6, 9]
            assert all(r.ok for r in records)
            assert [r.to_dict() for r in records] == result.extra["registrations"]
            lines = (folder / REGISTRATIONS_FILE).read_text().splitlines()
            assert json.loads(lines[0])["step"] == 3
            for r, step in zip(records, [3, 6, 9], strict=True):
                # the correction in force is the drift when the survey was taken (sub-pixel)
                t = next(t for (_, _, t), s in zip(inst.probe_log(), _sent(folder), strict=True) if s.step >= step)
                assert np.hypot(*(np.asarray(r.offset_m) - inst.sample_drift_m(t))) < 0.2 * PX
            assert verify_session(folder).steps == 12
    assert errors["off"][-1] > 4.0  # left alone, the probe misses by pixels
    assert errors["on"].max() < 2.0 and errors["on"].mean() < 0.5 * errors["off"].mean()


def test_registrations_is_a_session_file() -> None:
    assert REGISTRATIONS_FILE in SESSION_FILES


def test_the_report_draws_the_corrections_and_refits_through_them(tiny_config, tmp_path) -> None:
    from aexp.session.report import write_report

    cfg = tiny_config(sample={"drift_nm_per_min": 30.0, "measurement_time_s": 1.0}, stopping={"max_steps": 5},
                      drift={"resurvey_every": 3})
    inst = load_instrument("plasmonic", cfg["instrument"]["options"], seed=4)
    folder, _ = run_experiment(parse_config(cfg), inst, tmp_path / "s", seed=4, progress=False)
    page = write_report(folder, tmp_path / "r", map_steps=[6])  # maps after a registration: replayed
    assert (tmp_path / "r" / "registrations.png").stat().st_size > 0
    assert 'id="registrations"' in page.read_text() and 'id="maps"' in page.read_text()


def test_resume_replays_the_recorded_registrations_then_re_registers_the_live_field(tiny_config, tmp_path) -> None:
    from aexp.session.replay import resume_session

    cfg = tiny_config(sample={"drift_nm_per_min": 30.0, "measurement_time_s": 1.0}, stopping={"max_steps": 9},
                      drift={"resurvey_every": 3})
    inst = load_instrument("plasmonic", cfg["instrument"]["options"], seed=4)
    folder, _ = run_experiment(parse_config(cfg), inst, tmp_path / "s", seed=4, progress=False)
    # a crash after step 7: steps 0-7 and the registrations at 3 and 6 on disk, no summary
    lines = (folder / "steps.jsonl").read_bytes().splitlines(True)
    (folder / "steps.jsonl").write_bytes(b"".join(lines[:8]))
    regs = (folder / REGISTRATIONS_FILE).read_bytes().splitlines(True)
    (folder / REGISTRATIONS_FILE).write_bytes(b"".join(regs[:2]))
    (folder / "summary.json").unlink()
    # the live twin restarted, so its field is where it was at the survey: the resumed run catches up
    out = resume_session(folder)
    assert (out.replayed, out.new) == (8, 4)
    records = read_registrations(folder)
    assert [r.step for r in records] == [3, 6, 8, 11]  # the recorded two, at once on resuming, then on schedule
    assert np.hypot(*records[2].offset_m) < 0.2 * PX  # a fresh twin has not drifted yet
    assert verify_session(folder).steps == 12  # the whole session, both halves, replays exactly


def test_the_command_line_warns_the_operator_of_every_failed_registration(tiny_config, tmp_path, capsys) -> None:
    import yaml

    from aexp.cli.main import main

    # min_correlation 1: no real pair of surveys is that alike, so every registration fails
    cfg = tiny_config(sample={"drift_nm_per_min": 30.0, "measurement_time_s": 1.0}, stopping={"max_steps": 5},
                      drift={"resurvey_every": 3, "min_correlation": 1.0})
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    with pytest.warns(RegistrationWarning) as caught:
        assert main(["run", str(path), "--out", str(tmp_path / "s"), "--quiet"]) == 0
    messages = [str(w.message) for w in caught if w.category is RegistrationWarning]
    assert len(messages) == 2 and all("below drift.min_correlation 1" in m for m in messages)
    records = read_registrations(tmp_path / "s")
    assert [(r.step, r.ok, r.offset_m) for r in records] == [(3, False, (0.0, 0.0)), (6, False, (0.0, 0.0))]


def test_without_scikit_image_a_drift_run_is_refused_before_anything_is_written(tiny_config, tmp_path,
                                                                                 monkeypatch) -> None:
    import sys

    from aexp.drift import RegistrationUnavailable

    monkeypatch.setitem(sys.modules, "skimage.registration", None)  # what an uninstalled package looks like
    cfg = tiny_config(drift={"resurvey_every": 3})
    inst = load_instrument("plasmonic", cfg["instrument"]["options"], seed=0)
    with pytest.raises(RegistrationUnavailable, match=r"aexp\[drift\]"):
        run_experiment(parse_config(cfg), inst, tmp_path / "s", seed=0, progress=False)
    assert not (tmp_path / "s").exists()
