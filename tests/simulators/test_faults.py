import numpy as np
import pytest
import yaml

from aexp.config import parse_config
from aexp.instrument import OutOfBounds, load_instrument
from aexp.link.serve import InstrumentServer, ServerConfig
from aexp.loop import run_experiment
from simulators.faults import FaultPlan, FaultyInstrument, ServerFaults, apply_faults, audit_campaign, load_fault_plan
from simulators.plasmonic import PlasmonicSimulator

SIM = {"survey_pixels": 32, "n_particles": 2, "size_range_m": [6e-9, 10e-9]}
ALL_KINDS = ("delay", "drop", "restart", "nan", "saturate", "refuse", "blur")


def plan(p=0.0, seed=0, **blocks):
    data = {"seed": seed, **{k: {"probability": p} for k in ALL_KINDS}}
    for k, v in blocks.items():
        data[k] = {**data.get(k, {}), **v}
    return FaultPlan.model_validate(data)


def sim():
    return PlasmonicSimulator(seed=0, **SIM)


def test_plan_errors_name_the_file_and_key(tmp_path):
    p = tmp_path / "f.yaml"
    p.write_text(yaml.safe_dump({"drop": {"probability": 1.5}}))
    with pytest.raises(ValueError, match=r"f.yaml.*drop.probability"):
        load_fault_plan(p)
    p.write_text(yaml.safe_dump({"earthquake": {"probability": 0.1}}))
    with pytest.raises(ValueError, match=r"earthquake: unknown option"):
        load_fault_plan(p)
    p.write_text("drop: [unclosed\n")
    with pytest.raises(ValueError, match="malformed YAML"):
        load_fault_plan(p)
    p.write_text(yaml.safe_dump({"seed": 3, "nan": {"probability": 0.2, "fraction": 0.5}}))
    loaded = load_fault_plan(p)
    assert loaded.seed == 3 and loaded.nan.fraction == 0.5 and loaded.drop.probability == 0.0


def test_server_faults_are_seeded_and_hit_only_their_methods():
    def actions(seed):
        f = ServerFaults(plan(0.3, seed=seed))
        return [f.on_request(m, {}).kind for m in ["measure", "ping", "survey", "hello"] * 25]

    assert actions(1) == actions(1) and actions(1) != actions(2)
    kinds = actions(1)
    assert set(kinds) == {"reply", "drop", "delay", "restart"}
    assert all(k == "reply" for k in kinds[3::4])  # hello is not in the plan's methods
    assert "restart" not in kinds[1::4] + kinds[2::4]  # restarts happen mid-measurement only
    only_restart = ServerFaults(plan(0.0, restart={"probability": 1.0, "down_s": 0.3}))
    action = only_restart.on_request("measure", {})
    assert (action.kind, action.seconds) == ("restart", 0.3) and only_restart.injected == {"restart": 1}


def test_instrument_faults():
    clean = sim().measure((10e-9, 10e-9), "a").spectrum
    nan = FaultyInstrument(sim(), plan(nan={"probability": 1.0, "fraction": 0.25}))
    s = nan.measure((10e-9, 10e-9), "a").spectrum
    assert np.isnan(s).sum() == round(0.25 * clean.size)
    np.testing.assert_array_equal(s[~np.isnan(s)], clean[~np.isnan(s)])
    sat = FaultyInstrument(sim(), plan(saturate={"probability": 1.0, "gain": 10.0, "level": 500.0}))
    s = sat.measure((10e-9, 10e-9), "a").spectrum
    np.testing.assert_array_equal(s, np.minimum(clean * 10.0, 500.0))
    with pytest.raises(OutOfBounds, match="refused"):
        FaultyInstrument(sim(), plan(refuse={"probability": 1.0})).measure((10e-9, 10e-9), "a")


def test_probe_blur_is_sudden_and_lasting():
    inst = FaultyInstrument(sim(), plan(blur={"probability": 1.0, "sigma_px": 2.0, "sigma_channels": 3.0}))
    sharp = inst.survey().image
    s = inst.measure((10e-9, 10e-9), "a").spectrum
    assert inst.blur_px == 2.0
    blurred = inst.survey().image
    assert np.abs(np.diff(blurred, axis=2)).mean() < 0.7 * np.abs(np.diff(sharp, axis=2)).mean()
    clean = sim().measure((10e-9, 10e-9), "a").spectrum
    assert np.abs(np.diff(s)).mean() < 0.7 * np.abs(np.diff(clean)).mean()
    assert s.sum() == pytest.approx(clean.sum(), rel=0.02)  # broadened, not lost


def fault_campaign(tmp_path, fault_plan, max_steps):
    instrument, hooks = apply_faults(sim(), fault_plan)
    server = InstrumentServer(instrument, ServerConfig(bind="tcp://127.0.0.1:*"), hooks)
    server.start()
    try:
        cfg = parse_config({
            "instrument": {"driver": "zmq", "options": {"address": server.address, "timeout_s": 0.25, "retries": 6}},
            "candidates": {"stride": 2, "patch_size": 8},
            "embedder": "none",
            "policy": {"kind": "random", "n_initial": 3},
            "target": {"name": "band_intensity", "window": [1.0, 3.0]},
            "stopping": {"max_steps": max_steps},
            "recording": {"figure": False},
        })
        with load_instrument("zmq", cfg.instrument.options) as client:
            _, result = run_experiment(cfg, client, tmp_path / "run", progress=False)
    finally:
        server.stop()
    executed = [e["command_id"] for e in server.executed.entries]
    return audit_campaign(executed, result.steps, cfg.budget), {**hooks.injected, **instrument.injected}


def test_a_fault_injected_campaign_loses_nothing_and_measures_nothing_twice(tmp_path):
    faults = plan(0.1, seed=4, delay={"seconds": 0.4}, restart={"down_s": 0.05})
    audit, injected = fault_campaign(tmp_path, faults, max_steps=27)
    assert audit.steps == audit.budget == 30
    assert audit.duplicates == [] and audit.unrecorded == [] and audit.lost_steps == 0
    assert sum(injected.values()) >= 5 and injected.get("nan", 0) + injected.get("refuse", 0) == audit.failed_by_instrument


@pytest.mark.slow
def test_a_long_fault_campaign_with_every_kind(tmp_path):
    faults = plan(0.05, seed=0, delay={"seconds": 0.4}, restart={"down_s": 0.05})
    audit, injected = fault_campaign(tmp_path, faults, max_steps=117)
    assert audit.clean and audit.steps == 120
    assert set(injected) == set(ALL_KINDS)


def test_the_shipped_plan_enables_every_kind_at_5_percent():
    from pathlib import Path

    shipped = load_fault_plan(Path(__file__).parents[2] / "benchmarks" / "faults-all.yaml")
    assert all(getattr(shipped, k).probability >= 0.05 for k in ALL_KINDS)
