import json
import logging
import socket
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import yaml
import zmq
import zmq.auth

from aexp.cli.main import main
from aexp.config import check_against, load_config, parse_config
from aexp.instrument import InstrumentTimeout, MeasurementFailed, OutOfBounds, load_instrument
from aexp.link.serve import InstrumentServer, ServerAction, ServerConfig
from aexp.link.wire import LeaseHeld, VersionMismatch, encode_result
from aexp.loop import run_experiment
from aexp.session.store import SessionReader
from drivers.zmq import ZmqInstrument
from simulators.plasmonic import PlasmonicSimulator

SIM = {"survey_pixels": 32, "n_particles": 2, "size_range_m": [6e-9, 10e-9]}


class Hooks:
    """Plays the given actions for measure requests; records every method asked for."""

    def __init__(self, *actions):
        self.actions = list(actions)
        self.methods = []

    def on_request(self, method, params):
        self.methods.append(method)
        if method == "measure" and self.actions:
            return self.actions.pop(0)
        return ServerAction()


class Counting:
    """Wraps a simulator and counts its measurements."""

    def __init__(self, inner):
        self.inner, self.measured = inner, []
        self.bounds = inner.bounds

    def describe(self):
        return self.inner.describe()

    def survey(self):
        return self.inner.survey()

    def measure(self, position, command_id=""):
        self.measured.append(command_id)
        return self.inner.measure(position, command_id)


@pytest.fixture
def serve():
    servers = []

    def _start(instrument=None, hooks=None, **config):
        s = InstrumentServer(instrument or Counting(PlasmonicSimulator(seed=0, **SIM)),
                             ServerConfig(**{"bind": "tcp://127.0.0.1:*", **config}), hooks)
        s.start()
        servers.append(s)
        return s

    yield _start
    for s in servers:
        s.stop()


def client(address, **options):
    return ZmqInstrument(address=address, **{"timeout_s": 0.3, "retries": 3, **options})


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_options_are_checked():
    with pytest.raises(ValueError, match="zmq: invalid option.*adress"):
        load_instrument("zmq", {"adress": "tcp://127.0.0.1:1"})
    with pytest.raises(ValueError, match="timeout_s"):
        ZmqInstrument(timeout_s=-1)
    with pytest.raises(ValueError, match="both 'keys'.*'server_key'"):
        ZmqInstrument(keys="/tmp")


def test_the_driver_is_an_instrument_over_the_wire(serve):
    sim = PlasmonicSimulator(seed=0, **SIM)
    hooks = Hooks()
    s = serve(hooks=hooks)
    with client(s.address) as inst:
        for _ in range(3):  # the loop asks several times; one round trip
            assert inst.describe().to_dict() == sim.describe().to_dict()
        assert hooks.methods.count("describe") == 1
        np.testing.assert_array_equal(inst.survey().image, sim.survey().image)
        m = inst.measure((9e-9, 11e-9), command_id="c0")
        np.testing.assert_array_equal(m.spectrum, sim.measure((9e-9, 11e-9), "c0").spectrum)
        assert m.metadata["command_id"] == "c0" and inst.ping() > 0
        with pytest.raises(OutOfBounds, match="outside the instrument bounds"):
            inst.measure((1.0, 0.0), command_id="c1")


@pytest.mark.parametrize(
    "action, state",
    [(ServerAction("drop"), "done"), (ServerAction("delay", 0.5), "done"), (ServerAction("restart", 0.1), "unknown")],
)
def test_a_measure_without_reply_is_resolved_by_status_and_never_repeated(serve, action, state, caplog):
    caplog.set_level(logging.INFO, logger="aexp.drivers.zmq")
    s = serve(hooks=Hooks(action))
    with client(s.address) as inst:
        m = inst.measure((5e-9, 5e-9), command_id="c0")
    assert s.instrument.measured == ["c0"]
    assert [e["command_id"] for e in s.executed.entries] == ["c0"]
    assert m.position == (5e-9, 5e-9)
    assert f"server says {state}" in caplog.text


def test_a_result_lost_by_the_server_is_a_failed_measurement_not_a_second_exposure(serve):
    s = serve(results_kept=1, hooks=Hooks(ServerAction("drop")))
    with client(s.address) as inst:
        s.executed.append("c0", (5e-9, 5e-9), ({"x": 1}, {}))  # ran ...
        s.executed.append("other", (6e-9, 5e-9), ({"x": 1}, {}))  # ... and was pushed out
        with pytest.raises(MeasurementFailed, match="already ran|was lost"):
            inst.measure((5e-9, 5e-9), command_id="c0")
    assert s.instrument.measured == []


def test_no_server_is_a_timeout_in_bounded_time():
    port = free_port()
    inst = client(f"tcp://127.0.0.1:{port}", timeout_s=0.1, retries=2)
    with pytest.raises(InstrumentTimeout, match=r"3 attempts of 0.1 s; is 'aexp serve' running"):
        inst.describe()
    inst.close()


def test_second_controller_is_refused_until_the_lease_is_released(serve):
    s = serve()
    first, second = client(s.address), client(s.address)
    first.survey()
    with pytest.raises(LeaseHeld, match=first.client_id):
        second.survey()
    assert second.describe().name == "plasmonic"  # reading needs no lease
    first.close()
    assert second.survey().image.shape == (1, 32, 32)
    second.close()


def test_version_mismatch_names_both_versions():
    ctx = zmq.Context.instance()
    router = ctx.socket(zmq.ROUTER)
    port = router.bind_to_random_port("tcp://127.0.0.1")

    def answer_as_version_2():
        if router.poll(5000):
            ident, empty, header = router.recv_multipart()
            frames = encode_result(json.loads(header)["id"], {"protocol_version": 2})
            frames[0] = frames[0].replace(b'"v": 1', b'"v": 2')
            router.send_multipart([ident, empty, *frames])

    t = threading.Thread(target=answer_as_version_2)
    t.start()
    inst = client(f"tcp://127.0.0.1:{port}", timeout_s=5)
    with pytest.raises(VersionMismatch, match="peer speaks aexp wire protocol version 2, this side speaks version 1"):
        inst.hello()
    t.join()
    inst.close()
    router.close(linger=0)


@pytest.fixture
def curve_keys(tmp_path):
    dirs = {name: tmp_path / name for name in ("server", "good", "bad", "allow")}
    for name in ("server", "good", "bad"):
        dirs[name].mkdir()
        zmq.auth.create_certificates(str(dirs[name]), name)
    dirs["allow"].mkdir()
    (dirs["allow"] / "good.key").write_bytes((dirs["good"] / "good.key").read_bytes())
    return dirs


def test_curve_accepts_only_allowed_clients(serve, curve_keys):
    s = serve(keys=curve_keys["server"], allow=curve_keys["allow"])
    server_key = curve_keys["server"] / "server.key"
    with client(s.address, keys=curve_keys["good"], server_key=server_key, timeout_s=3.0) as good:
        assert good.describe().name == "plasmonic"
    with client(s.address, keys=curve_keys["bad"], server_key=server_key, retries=1) as bad:
        with pytest.raises(InstrumentTimeout):
            bad.ping()
    with client(s.address, retries=1) as plain:
        with pytest.raises(InstrumentTimeout):
            plain.ping()


def small_config(address, **extra):
    return parse_config({
        "name": "net-small",
        "instrument": {"driver": "zmq", "options": {"address": address, "timeout_s": 1.0, "retries": 8}},
        "candidates": {"stride": 2, "patch_size": 8},
        "embedder": "none",
        "policy": {"kind": "random", "n_initial": 3},
        "target": {"name": "band_intensity", "window": [1.0, 3.0]},
        "stopping": {"max_steps": 9},
        "recording": {"figure": False},
        **extra,
    })


def steps_of(folder):
    return [(s.index, s.status, s.target) for s in SessionReader(folder).steps]


def test_a_campaign_over_the_network_matches_the_in_process_one(serve, tmp_path):
    s = serve()
    cfg = small_config(s.address).with_overrides(
        **{"policy.kind": "dkl", "surrogate.iterations": 20, "surrogate.warm_iterations": 5})
    with load_instrument("zmq", cfg.instrument.options) as inst:
        net, _ = run_experiment(cfg, inst, tmp_path / "net", progress=False)
        token = inst.lease_token
    # the session keeps the lease token, so a resume takes the lease back at once
    assert SessionReader(net).manifest.lease_token == token and len(token) >= 22
    local, _ = run_experiment(
        cfg.with_overrides(instrument={"driver": "plasmonic", "options": SIM}),
        PlasmonicSimulator(seed=0, **SIM), tmp_path / "local", progress=False,
    )
    assert steps_of(net) == steps_of(local) and len(steps_of(net)) == 12
    assert len(s.instrument.measured) == 12


def test_a_campaign_survives_the_server_being_killed_and_restarted(tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    log = tmp_path / "executed.jsonl"
    cmd = [sys.executable, "-m", "aexp.cli.main", "serve", "--sim", "plasmonic", "--bind", address,
           "--executed-log", str(log)] + [f"-o{k}={json.dumps(v)}" for k, v in SIM.items()]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)]
    try:
        assert procs[0].stdout.readline().startswith("serving on")

        def kill_and_restart(step, budget):
            if step.step == 4:
                procs[-1].kill()  # SIGKILL: no clean shutdown
                procs[-1].wait()
                procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))

        cfg = small_config(address)
        with load_instrument("zmq", cfg.instrument.options) as inst:
            folder, result = run_experiment(cfg, inst, tmp_path / "run", progress=False, on_step=kill_and_restart)
        assert len(procs) == 2 and procs[1].poll() is None
        assert [s.status for s in result.steps] == ["ok"] * 12
        ids = [json.loads(line)["command_id"] for line in log.read_text().splitlines()]
        assert sorted(ids) == sorted(s.command_id for s in result.steps)  # each measured exactly once
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


NET_CONFIGS = [p for p in sorted((Path(__file__).parents[2] / "configs").glob("*.yaml"))
               if load_config(p).instrument.driver == "zmq"]


def test_there_is_a_shipped_network_config():
    assert [p.name for p in NET_CONFIGS] == ["plasmonic-zmq.yaml"]


@pytest.mark.parametrize("path", NET_CONFIGS, ids=lambda p: p.name)
def test_every_shipped_network_config_fits_the_served_simulator(serve, path):
    cfg = load_config(path)
    assert cfg.instrument.options["address"] == "tcp://127.0.0.1:5555"  # the default of aexp serve
    s = serve(instrument=PlasmonicSimulator(seed=cfg.seed))  # `aexp serve --sim plasmonic`, on a free port
    local = cfg.with_overrides(**{"instrument.options": {**cfg.instrument.options, "address": s.address}})
    with load_instrument("zmq", local.instrument.options) as inst:
        check_against(local, inst.describe(), source=str(path))


def test_check_without_a_server_says_so(tmp_path, capsys):
    cfg = small_config(f"tcp://127.0.0.1:{free_port()}").with_overrides(
        **{"instrument.options": {"address": f"tcp://127.0.0.1:{free_port()}", "timeout_s": 0.1, "retries": 1}})
    p = tmp_path / "net.yaml"
    p.write_text(yaml.safe_dump(cfg.to_dict()))
    assert main(["check", str(p)]) == 2
    err = capsys.readouterr().err
    assert "InstrumentUnreachable" in err and "no reply from tcp://127.0.0.1:" in err and "'aexp serve' running" in err


def test_an_unreachable_server_is_not_a_failed_measurement(serve, tmp_path):
    from aexp.instrument import InstrumentUnreachable

    address = f"tcp://127.0.0.1:{free_port()}"
    log = tmp_path / "executed.jsonl"
    first = serve(bind=address, executed_log=log)
    inst = client(address, timeout_s=0.2, retries=1)
    m0 = inst.measure((5e-9, 5e-9), command_id="c0")
    first.stop()  # the server goes away; nothing answers any more
    with pytest.raises(InstrumentUnreachable, match="no reply from"):
        inst.measure((6e-9, 5e-9), command_id="c1")
    second = serve(bind=address, executed_log=log)  # back, on the same log, with the lease forgotten
    m1 = inst.measure((6e-9, 5e-9), command_id="c1")  # the same command, re-sent: the lease is taken again
    again = inst.measure((5e-9, 5e-9), command_id="c0")
    np.testing.assert_array_equal(again.spectrum, m0.spectrum)
    assert m1.position == (6e-9, 5e-9)
    assert first.instrument.measured == ["c0"] and second.instrument.measured == ["c1"]
    inst.close()


def test_a_measurement_the_server_reports_failed_stays_a_failed_measurement(serve):
    class Broken(Counting):
        def measure(self, position, command_id=""):
            raise MeasurementFailed("detector saturated")

    s = serve(instrument=Broken(PlasmonicSimulator(seed=0, **SIM)))
    with client(s.address) as inst:
        with pytest.raises(MeasurementFailed, match="detector saturated") as info:
            inst.measure((5e-9, 5e-9), command_id="c0")
    assert not isinstance(info.value, InstrumentTimeout)


def test_a_resumed_driver_takes_its_lease_back_with_the_recorded_token(serve):
    s = serve(lease_s=30.0)
    killed = client(s.address)
    killed.survey()  # holds the lease; then "killed": never releases it
    token = killed.lease_token
    with client(s.address) as other, pytest.raises(LeaseHeld, match=killed.client_id) as info:
        other.survey()
    assert token not in str(info.value)
    with client(s.address, lease_token=token) as resumed:
        assert resumed.survey().image.shape == (1, 32, 32)
        assert resumed.lease_token == token
    with client(s.address) as later:  # the resumed driver released it on close
        assert later.survey().image.shape == (1, 32, 32)
    killed.close()


def test_under_curve_the_lease_is_bound_to_the_key_that_took_it(serve, curve_keys, tmp_path):
    zmq.auth.create_certificates(str(curve_keys["bad"]), "second")
    (curve_keys["allow"] / "second.key").write_bytes((curve_keys["bad"] / "second.key").read_bytes())
    second_keys = tmp_path / "second"
    second_keys.mkdir()
    for suffix in (".key", ".key_secret"):
        (second_keys / f"second{suffix}").write_bytes((curve_keys["bad"] / f"second{suffix}").read_bytes())
    s = serve(keys=curve_keys["server"], allow=curve_keys["allow"])
    server_key = curve_keys["server"] / "server.key"
    holder = client(s.address, keys=curve_keys["good"], server_key=server_key, timeout_s=3.0)
    holder.survey()
    thief = client(s.address, keys=second_keys, server_key=server_key, timeout_s=3.0, lease_token=holder.lease_token)
    with pytest.raises(LeaseHeld):
        thief.survey()  # the right token from the wrong key
    thief.close()
    holder.close()


def test_the_driver_is_a_link_client_for_aexp_describe():
    from aexp.instrument import LinkClient

    assert isinstance(ZmqInstrument(address="tcp://127.0.0.1:1"), LinkClient)
    assert not isinstance(PlasmonicSimulator(seed=0, **SIM), LinkClient)


def test_a_diffraction_pattern_crosses_the_link_with_its_axes(serve):
    from simulators.fourdstem import FourDStemSimulator

    s = serve(instrument=FourDStemSimulator(seed=3, survey_pixels=16))
    with client(s.address) as inst:
        assert [a.name for a in inst.describe().signal_axes] == ["ky", "kx"]
        m = inst.measure((5e-9, 5e-9), command_id="c0")
    local = FourDStemSimulator(seed=3, survey_pixels=16).measure((5e-9, 5e-9), command_id="c0")
    assert m.spectrum.shape == (64, 64) and m.signal_axes == local.signal_axes
    np.testing.assert_array_equal(m.spectrum, local.spectrum)


def test_a_request_to_a_peer_that_takes_nothing_times_out_instead_of_blocking_in_send():
    # ZMQ_IMMEDIATE makes a REQ socket's send block until a connection completes, as a refused
    # CURVE handshake does: the request must give up at its deadline, not wait in send forever
    inst = client(f"tcp://127.0.0.1:{free_port()}", retries=1, timeout_s=0.2)
    inst._ctx = zmq.Context()
    inst._ctx.setsockopt(zmq.IMMEDIATE, 1)  # the default of every socket the driver makes from it
    outcome: list[BaseException] = []

    def ping():
        try:
            inst.ping()
        except BaseException as exc:  # noqa: BLE001 - the test reads what was raised
            outcome.append(exc)

    worker = threading.Thread(target=ping, daemon=True)
    worker.start()
    worker.join(10)
    assert not worker.is_alive(), "the request blocked past its deadline"
    assert len(outcome) == 1 and isinstance(outcome[0], InstrumentTimeout)
    inst.close()
