import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zmq
from hypothesis import given, settings
from hypothesis import strategies as st

from aexp.instrument import check_position
from aexp.link.serve import (
    ExecutedLogInUse,
    InsecureBind,
    InstrumentServer,
    ServerAction,
    ServerConfig,
    _ExecutedLog,
    default_state_dir,
    executed_log_name,
    is_loopback,
)
from aexp.link.wire import PROTOCOL_VERSION, VersionMismatch, decode, encode_request, raise_remote_error
from aexp.types import Bounds, InstrumentDescription, Measurement, PixelTransform, SpectrumAxis, Survey

AXIS = SpectrumAxis("energy_loss", "eV", 0.0, 4.0, 32)
DEADLINE_MS = 3000


class CountingInstrument:
    """8x8 survey; the spectrum is the position's x in nm repeated. Counts measure calls."""

    bounds = Bounds(0.0, 7e-9, 0.0, 7e-9)

    def __init__(self):
        self.measured = []

    def describe(self):
        return InstrumentDescription("counting", self.bounds, (1, 8, 8), ("haadf",), AXIS, measurement_time_s=0.01)

    def survey(self):
        return Survey(np.arange(64, dtype=np.float32).reshape(1, 8, 8), PixelTransform.square(1e-9), ("haadf",))

    def measure(self, position, command_id=""):
        check_position(self.bounds, position)
        self.measured.append(command_id)
        return Measurement(np.full(AXIS.n, position[0] * 1e9), AXIS, tuple(position), 0.01, {"command_id": command_id})


class Script:
    """Server hooks that play a list of actions for measure requests, then reply normally."""

    def __init__(self, *actions):
        self.actions = list(actions)
        self.methods = []

    def on_request(self, method, params):
        self.methods.append(method)
        if method == "measure" and self.actions:
            return self.actions.pop(0)
        return ServerAction()


def start(instrument=None, hooks=None, **config):
    server = InstrumentServer(instrument or CountingInstrument(), ServerConfig(bind="tcp://127.0.0.1:*", **config), hooks)
    server.start()
    return server


@pytest.fixture
def server():
    s = start(lease_s=5.0)
    yield s
    s.stop()


@pytest.fixture(scope="module")
def shared_server():
    s = start(max_message_bytes=64 * 1024)
    yield s
    s.stop()


def request(address, frames, deadline_ms=DEADLINE_MS):
    """Send raw frames on a fresh REQ socket; the decoded reply, or None if none came in time."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.REQ)
    sock.linger = 0
    sock.connect(address)
    try:
        sock.send_multipart(frames)
        if not sock.poll(deadline_ms):
            return None
        return decode(sock.recv_multipart(copy=False))
    finally:
        sock.close()


def call(address, method, params=None, msg_id="t"):
    return request(address, encode_request(msg_id, method, params or {}))


def header(**kw):
    h = {"v": PROTOCOL_VERSION, "id": "h", "method": "ping", "params": {}, "arrays": []}
    h.update(kw)
    return json.dumps(h).encode()


def lease(address, client="a", **params):
    """Take the lease; its token, which commands that drive the instrument carry as 'lease'."""
    reply = call(address, "lease", {"client": client, **params})
    assert reply.error is None, reply.error
    return reply.result["token"]


def assert_alive(address):
    reply = call(address, "ping")
    assert reply is not None and reply.result == {"pong": True}


def test_loopback_detection():
    for ep in ("tcp://127.0.0.1:5555", "tcp://localhost:1", "tcp://[::1]:5", "ipc:///tmp/x", "inproc://a"):
        assert is_loopback(ep), ep
    for ep in ("tcp://*:5555", "tcp://0.0.0.0:5555", "tcp://192.168.1.4:5555", "tcp://eth0:5555"):
        assert not is_loopback(ep), ep


def test_non_loopback_bind_without_keys_is_refused():
    with pytest.raises(InsecureBind, match=r"refusing to bind tcp://0.0.0.0:\* without CURVE keys"):
        InstrumentServer(CountingInstrument(), ServerConfig(bind="tcp://0.0.0.0:*")).serve()


def test_keys_without_allow_list_are_refused(tmp_path):
    with pytest.raises(InsecureBind, match="--keys needs --allow"):
        InstrumentServer(CountingInstrument(), ServerConfig(bind="tcp://0.0.0.0:*", keys=tmp_path)).serve()


def test_handshake_describe_and_survey(server):
    hello = call(server.address, "hello", {"protocol_version": PROTOCOL_VERSION})
    assert hello.result == {"protocol_version": PROTOCOL_VERSION, "instrument": "counting"}
    desc = call(server.address, "describe").result
    assert desc["name"] == "counting" and desc["measurement_time_s"] == 0.01
    token = lease(server.address)
    reply = call(server.address, "survey", {"lease": token})
    np.testing.assert_array_equal(reply.arrays["image"], np.arange(64, dtype=np.float32).reshape(1, 8, 8))


def test_version_mismatch_is_answered_naming_both_versions(server):
    reply = request(server.address, [header(v=PROTOCOL_VERSION + 1)])
    assert reply.error["type"] == "VersionMismatch"
    with pytest.raises(VersionMismatch, match=rf"version {PROTOCOL_VERSION + 1}.*version {PROTOCOL_VERSION}"):
        raise_remote_error(reply.error)
    assert_alive(server.address)


def test_unknown_method_and_bad_params_are_named(server):
    reply = call(server.address, "self_destruct")
    assert reply.error["type"] == "UnknownMethod" and "self_destruct" in reply.error["message"]
    token = lease(server.address)
    reply = call(server.address, "measure", {"lease": token, "position": "here", "command_id": "c"})
    assert reply.error["type"] == "InvalidParams" and "'position'" in reply.error["message"]
    reply = call(server.address, "measure", {"lease": token, "position": [1e-9, 1e-9], "command_id": 5})
    assert reply.error["type"] == "InvalidParams" and "'command_id'" in reply.error["message"]
    assert_alive(server.address)


def test_commands_that_drive_the_instrument_need_the_lease(server):
    reply = call(server.address, "measure", {"position": [1e-9, 1e-9], "command_id": "c"})
    assert reply.error["type"] == "LeaseRequired"
    taken = call(server.address, "lease", {"client": "first"}).result
    assert taken["client"] == "first"
    reply = call(server.address, "lease", {"client": "second"})
    assert reply.error["type"] == "LeaseHeld" and "'first'" in reply.error["message"]
    assert taken["token"] not in reply.error["message"]
    assert call(server.address, "survey", {"lease": "second"}).error["type"] == "LeaseRequired"
    # the holder's name is not a credential: the refused controller cannot use it
    assert call(server.address, "survey", {"lease": "first"}).error["type"] == "LeaseRequired"
    assert call(server.address, "release", {"lease": "first"}).error["type"] == "LeaseRequired"
    assert call(server.address, "release", {"lease": taken["token"]}).result == {"released": True}
    assert call(server.address, "lease", {"client": "second"}).error is None
    assert server.instrument.measured == []


def test_lease_expires():
    s = start(lease_s=1.0)
    try:
        call(s.address, "lease", {"client": "first"})
        assert call(s.address, "lease", {"client": "second"}).error["type"] == "LeaseHeld"
        time.sleep(1.1)
        assert call(s.address, "lease", {"client": "second"}).error is None
    finally:
        s.stop()


def test_repeated_command_id_returns_the_stored_result(server):
    params = {"lease": lease(server.address), "position": [3e-9, 1e-9], "command_id": "c1"}
    first, again = call(server.address, "measure", params), call(server.address, "measure", params)
    np.testing.assert_array_equal(first.arrays["spectrum"], again.arrays["spectrum"])
    assert server.instrument.measured == ["c1"]
    assert [e["command_id"] for e in server.executed.entries] == ["c1"]
    assert call(server.address, "status", {"command_id": "c1"}).result["state"] == "done"
    assert call(server.address, "status", {"command_id": "c2"}).result["state"] == "unknown"
    moved = call(server.address, "measure", {**params, "position": [4e-9, 1e-9]})
    assert moved.error["type"] == "InvalidParams" and "already used" in moved.error["message"]


def test_instrument_errors_are_typed_and_stored(server):
    params = {"lease": lease(server.address), "position": [1.0, 1.0], "command_id": "far"}
    for _ in range(2):
        assert call(server.address, "measure", params).error["type"] == "OutOfBounds"
    assert len(server.executed.entries) == 1


def test_stored_results_are_bounded():
    s = start(results_kept=2)
    try:
        token = lease(s.address)
        for i in range(3):
            call(s.address, "measure", {"lease": token, "position": [1e-9, 1e-9], "command_id": f"c{i}"})
        states = [call(s.address, "status", {"command_id": f"c{i}"}).result["state"] for i in range(3)]
        assert states == ["lost", "done", "done"]
        again = call(s.address, "measure", {"lease": token, "position": [1e-9, 1e-9], "command_id": "c0"})
        assert again.error["type"] == "MeasurementFailed" and "not measuring twice" in again.error["message"]
        assert s.instrument.measured == ["c0", "c1", "c2"]
    finally:
        s.stop()


@pytest.mark.parametrize("fsync", [True, False])
def test_a_restarted_server_answers_from_its_executed_log(tmp_path, fsync):
    log = tmp_path / "executed.jsonl"
    token = "t" * 32  # a controller may choose its own token: it can lease again with it after a restart
    params = {"lease": token, "position": [2e-9, 1e-9], "command_id": "c0"}
    s = start(executed_log=log, log_fsync=fsync)
    lease(s.address, token=token)
    first = call(s.address, "measure", params)
    s.stop()
    assert [json.loads(line)["command_id"] for line in log.read_text().splitlines()] == ["c0"]
    s = start(executed_log=log, log_fsync=fsync)  # a new process on the same log, with a fresh instrument
    try:
        assert call(s.address, "status", {"command_id": "c0"}).result["state"] == "done"
        lease(s.address, token=token)
        again = call(s.address, "measure", params)
        np.testing.assert_array_equal(again.arrays["spectrum"], first.arrays["spectrum"])
        assert again.result == first.result and s.instrument.measured == []
    finally:
        s.stop()


def test_hooks_drop_delay_and_restart():
    hooks = Script(ServerAction("drop"), ServerAction("restart", 0.05), ServerAction("delay", 0.05))
    s = start(hooks=hooks)
    try:
        token = "t" * 32
        params = {"lease": lease(s.address, token=token), "position": [1e-9, 1e-9], "command_id": "c0"}
        assert request(s.address, encode_request("m", "measure", params), deadline_ms=300) is None  # dropped
        assert s.instrument.measured == ["c0"]
        assert call(s.address, "status", {"command_id": "c0"}).result["state"] == "done"
        # restart before the measurement completes: nothing measured, the lease is forgotten
        assert request(s.address, encode_request("m", "measure", {**params, "command_id": "c1"}), 300) is None
        assert call(s.address, "status", {"command_id": "c1"}).result["state"] == "unknown"
        assert call(s.address, "measure", params).error["type"] == "LeaseRequired"  # (delayed 0.05 s)
        lease(s.address, token=token)
        assert call(s.address, "measure", params).error is None  # answered from the executed log
        assert s.instrument.measured == ["c0"]
    finally:
        s.stop()


@pytest.mark.parametrize(
    "frames, error",
    [
        ([b"{not json"], "MalformedMessage"),
        ([header(arrays=[{"name": "a", "dtype": "<f8", "shape": [4]}])], "MalformedMessage"),
        ([header(), b"stray"], "MalformedMessage"),
        ([header(arrays=[{"name": "a", "dtype": "<f8", "shape": [4]}]), b"x" * 8], "MalformedMessage"),
        ([header(arrays=[{"name": "a", "dtype": "<f8", "shape": [2**31, 2**31]}]), b"x" * 8], "MalformedMessage"),
        ([header(arrays=[{"name": "a", "dtype": "|O", "shape": [1]}]), b"x" * 8], "MalformedMessage"),
        ([header(method=None)], "MalformedMessage"),
        ([header(params=[])], "MalformedMessage"),
    ],
)
def test_malformed_requests_get_structured_errors(shared_server, frames, error):
    reply = request(shared_server.address, frames)
    assert reply.error["type"] == error and reply.error["code"] == 400
    assert_alive(shared_server.address)


def test_oversized_messages_are_dropped_and_the_server_goes_on(shared_server):
    frames = encode_request("big", "ping", {}, {"a": np.zeros(16 * 1024)})  # 128 KiB > 64 KiB limit
    assert request(shared_server.address, frames, deadline_ms=300) is None
    assert_alive(shared_server.address)


params_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=80, deadline=None)
@given(
    method=st.sampled_from(["hello", "describe", "ping", "status", "lease", "release", "survey", "measure",
                            "abort", "nope", ""]),
    params=st.dictionaries(st.sampled_from(["position", "command_id", "lease", "client", "x"]), params_values, max_size=4),
    extra_frames=st.lists(st.binary(max_size=16), max_size=2),
    lie=st.booleans(),
)
def test_fuzzed_requests_get_an_answer_and_the_server_goes_on(shared_server, method, params, extra_frames, lie):
    arrays = [{"name": "a", "dtype": "<f4", "shape": [3]}] if lie else []
    try:
        head = header(method=method, params=params, arrays=arrays)
    except ValueError:  # NaN in params: not JSON; send it as the server would see a bad header
        head = b'{"v": 1, "id": "h", "method": ' + json.dumps(method).encode() + b', "params": NaN}'
    reply = request(shared_server.address, [head, *extra_frames])
    assert reply is not None
    assert (reply.error is None) != (reply.result is None)
    assert_alive(shared_server.address)


def test_serve_command_prints_its_address_and_stops_on_sigterm(tmp_path):
    log = tmp_path / "ids.jsonl"
    proc = subprocess.Popen(
        [sys.executable, "-m", "aexp", "serve", "--sim", "plasmonic", "--bind", "tcp://127.0.0.1:*",
         "-o", "survey_pixels=32", "-o", "n_particles=1", "--executed-log", str(log)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("serving on tcp://127.0.0.1:")
        address = line.split()[-1]
        assert call(address, "describe").result["name"] == "plasmonic"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert "shutting down" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_serve_command_refuses_a_public_bind_without_keys():
    proc = subprocess.run(
        [sys.executable, "-m", "aexp", "serve", "--sim", "plasmonic", "--bind", "tcp://0.0.0.0:5999"],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "refusing to bind tcp://0.0.0.0:5999 without CURVE keys" in proc.stderr


def test_serve_command_with_faults_and_keys_new(tmp_path):
    from aexp.cli.main import main

    assert main(["keys", "new", str(tmp_path / "k"), "--name", "lab"]) == 0
    assert (tmp_path / "k" / "lab.key").exists() and (tmp_path / "k" / "lab.key_secret").stat().st_mode & 0o077 == 0
    assert main(["keys", "new", str(tmp_path / "k"), "--name", "lab"]) == 2  # never overwrites a key
    faults = tmp_path / "f.yaml"
    faults.write_text("seed: 1\nrefuse: {probability: 1.0}\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "aexp", "serve", "--sim", "plasmonic", "--bind", "tcp://127.0.0.1:*",
         "-o", "survey_pixels=32", "-o", "n_particles=1", "--faults", str(faults), "--state-dir", str(tmp_path)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        address = proc.stdout.readline().split()[-1]
        reply = call(address, "measure", {"lease": lease(address), "position": [1e-9, 1e-9], "command_id": "c"})
        assert reply.error["type"] == "OutOfBounds" and "refused" in reply.error["message"]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_describe_command_prints_the_description(server, capsys):
    from aexp.cli.main import main

    assert main(["describe", server.address]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["name"] == "counting" and out["protocol_version"] == PROTOCOL_VERSION
    assert out["spectrum_axis"]["n"] == 32


def test_serve_command_on_an_address_in_use_is_a_clear_error(server, capsys):
    from aexp.cli.main import main

    assert main(["serve", "--sim", "plasmonic", "--bind", server.address, "-o", "survey_pixels=32",
                 "-o", "n_particles=1"]) == 2
    assert f"cannot serve on {server.address}" in capsys.readouterr().err
    assert_alive(server.address)


def test_a_missing_or_bad_server_key_is_a_clear_error(tmp_path):
    allow = tmp_path / "allow"
    allow.mkdir()
    with pytest.raises(InsecureBind, match="expected exactly one .key_secret file, found 0"):
        InstrumentServer(CountingInstrument(), ServerConfig(bind="tcp://127.0.0.1:*", keys=allow, allow=allow)).serve()


def test_measure_reports_the_instruments_wall_time(server):
    reply = call(server.address, "measure", {"lease": lease(server.address), "position": [1e-9, 1e-9], "command_id": "c"})
    assert reply.result["metadata"]["command_id"] == "c"
    assert isinstance(reply.result["metadata"]["server_wall_s"], float)
    assert reply.result["metadata"]["server_wall_s"] >= 0.0


def nested(depth, inner=b"1"):
    return b"[" * depth + inner + b"]" * depth


def raw_header(**parts):
    """A header with some values given as raw JSON bytes (numbers and nestings json.dumps won't write)."""
    fields = {"v": b"1", "id": b'"h"', "method": b'"ping"', "params": b"{}", "arrays": b"[]", **parts}
    return b"{" + b", ".join(json.dumps(k).encode() + b": " + v for k, v in fields.items()) + b"}"


def array_spec(shape, dtype="<f8"):
    return json.dumps([{"name": "a", "dtype": dtype, "shape": shape}]).encode()


# each case once ended `aexp serve` with an exception from the decoder, numpy or int()
ISSUE_CASES = {
    "header of nested [": [b"[" * 30000 + b"]" * 30000],
    "nested [ inside the header": [raw_header(params=b'{"x": ' + nested(30000) + b"}")],
    "shape [0, 10**30], empty frame": [raw_header(arrays=array_spec([0, 10**30])), b""],
    "shape [0, 2**62, 2**62], empty frame": [raw_header(arrays=array_spec([0, 2**62, 2**62])), b""],
    "header integer of 5000 digits": [raw_header(v=b"1" * 5000)],
    "shape integer of 5000 digits": [raw_header(arrays=array_spec([0]).replace(b"[0]", b"[0, " + b"9" * 5000 + b"]")), b""],
    "coordinate of 5000 digits": [raw_header(method=b'"measure"', params=b'{"position": [' + b"1" * 5000 + b', 1]}')],
    "deeply nested params": [raw_header(method=b'"measure"', params=b'{"position": ' + nested(20000) + b"}")],
    "NaN coordinate": [raw_header(method=b'"measure"', params=b'{"position": [NaN, 1]}')],
    "coordinate of 40 digits": [raw_header(method=b'"measure"', params=b'{"position": [' + b"9" * 40 + b', 1], '
                                           b'"command_id": "c", "lease": "x"}')],
}


@pytest.mark.parametrize("frames", ISSUE_CASES.values(), ids=ISSUE_CASES.keys())
def test_messages_that_once_ended_the_server_get_a_structured_error(shared_server, frames):
    reply = request(shared_server.address, frames)
    assert reply is not None and reply.error is not None and reply.error["code"] in (400, 401, 413, 422)
    assert reply.error["type"] != "RemoteError"
    assert_alive(shared_server.address)


def test_an_unexpected_failure_outside_any_method_is_answered_and_logged(caplog):
    class Exploding:
        def on_request(self, method, params):
            raise ZeroDivisionError("hook bug")

    s = start(hooks=Exploding())
    try:
        reply = call(s.address, "ping")
        assert reply.error["type"] == "RemoteError" and "see its log" in reply.error["message"]
        assert "ZeroDivisionError: hook bug" in caplog.text
        assert call(s.address, "ping").error is not None  # still serving (the hook still fails)
    finally:
        s.stop()


numbers = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(lambda n: str(n).encode()),
    st.integers(min_value=1, max_value=6000).map(lambda n: b"9" * n),          # int-digit limit
    st.integers(min_value=1, max_value=500).map(lambda n: b"1." + b"5" * n + b"e308"),
    st.sampled_from([b"NaN", b"Infinity", b"-Infinity", b"1e999", b"-0", b"0.0"]),
)
json_raw = st.recursive(
    numbers | st.sampled_from([b"null", b"true", b'"x"', b'""', b"{}", b"[]"]),
    lambda inner: st.lists(inner, max_size=3).map(lambda xs: b"[" + b", ".join(xs) + b"]")
    | st.dictionaries(st.sampled_from(["position", "command_id", "lease", "client", "token"]), inner, max_size=3).map(
        lambda d: b"{" + b", ".join(json.dumps(k).encode() + b": " + v for k, v in d.items()) + b"}"),
    max_leaves=6,
)
# depths up to what fits in the shared server's 64 KiB (larger messages never reach it: see above)
nestings = st.one_of(st.integers(min_value=0, max_value=30000).map(lambda n: nested(n)),
                     st.integers(min_value=0, max_value=9000).map(lambda n: b'{"a": ' * n + b"1" + b"}" * n))
dims = st.one_of(st.integers(min_value=0, max_value=4), st.integers(min_value=0, max_value=2**64),
                 st.sampled_from([0, 2**31, 2**62, 2**63, 10**30, -1]))
shapes = st.lists(dims, max_size=12)
dtypes = st.sampled_from(["<f8", "<f4", "|u1", "<c16", "|b1", "|O", "|V8", ">f8", "<U4", "<M8[s]", "", "f8"])
specs = st.lists(st.fixed_dictionaries({"name": st.sampled_from(["a", "b", "spectrum"]), "dtype": dtypes,
                                        "shape": shapes}), max_size=4)
frame_sizes = st.lists(st.sampled_from([0, 1, 7, 8, 24, 4096]), max_size=5)


@st.composite
def fuzzed_messages(draw):
    kind = draw(st.sampled_from(["fields", "nesting", "arrays", "bytes"]))
    method = draw(st.sampled_from([b'"ping"', b'"measure"', b'"lease"', b'"status"', b'"release"', b'"survey"',
                                   b'"hello"', b'"nope"', b"7", b"null"]))
    if kind == "bytes":
        return draw(st.lists(st.binary(max_size=64), min_size=1, max_size=4))
    if kind == "nesting":
        where = draw(st.sampled_from(["v", "id", "params", "arrays", "whole"]))
        value = draw(nestings)
        return [value if where == "whole" else raw_header(method=method, **{where: value})]
    if kind == "arrays":
        declared = draw(specs)
        frames = [b"\0" * n for n in draw(frame_sizes)]
        return [raw_header(method=method, arrays=json.dumps(declared).encode()), *frames]
    parts = {k: draw(json_raw) for k in draw(st.sets(st.sampled_from(["v", "id", "params", "arrays"]), max_size=4))}
    return [raw_header(method=method, **parts)]


@settings(max_examples=120, deadline=None)
@given(frames=fuzzed_messages())
def test_the_server_answers_every_fuzzed_message_and_then_a_ping(shared_server, frames):
    reply = request(shared_server.address, frames)
    assert reply is not None, "no reply: the server hung or dropped the message"
    assert (reply.error is None) != (reply.result is None)
    assert_alive(shared_server.address)


@pytest.mark.parametrize("name", ["../escape", "/tmp/abs", "a/b", "..", ".hidden", "", "x" * 65, "a\\b", "ok\n"])
def test_keys_new_refuses_a_name_that_leaves_its_folder(tmp_path, capsys, name):
    from aexp.cli.main import main

    folder = tmp_path / "keys" / "inner"
    assert main(["keys", "new", str(folder), "--name", name]) == 2
    assert "must be a plain file name" in capsys.readouterr().err
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


def test_the_lease_is_a_secret_token_that_only_its_holder_learns(server, caplog):
    first = call(server.address, "lease", {"client": "lab-pc"}).result
    assert first["client"] == "lab-pc" and len(first["token"]) >= 32
    assert call(server.address, "lease", {"client": "lab-pc"}).error["type"] == "LeaseHeld"  # the name is not enough
    renewed = call(server.address, "lease", {"client": "lab-pc", "token": first["token"]}).result
    assert renewed["token"] == first["token"]
    refusals = [call(server.address, m, {"lease": "lab-pc", "command_id": "c", "position": [1e-9, 1e-9]})
                for m in ("survey", "measure", "abort", "release")]
    assert {r.error["type"] for r in refusals} == {"LeaseRequired"}
    assert all(first["token"] not in r.error["message"] for r in refusals)
    assert first["token"] not in caplog.text
    assert call(server.address, "release", {"lease": first["token"]}).result == {"released": True}
    assert call(server.address, "lease", {"client": "lab-pc"}).result["token"] != first["token"]  # a fresh one


def test_a_killed_holder_takes_its_lease_back_at_once_with_its_token(server):
    token = "resume-me-" + "x" * 22
    assert lease(server.address, "run-1", token=token) == token
    # the holder dies (SIGKILL: no release); another controller is refused until the lease expires ...
    assert call(server.address, "lease", {"client": "intruder"}).error["type"] == "LeaseHeld"
    # ... but the resumed run, which recorded its token, has it back at once
    assert lease(server.address, "run-1 (resumed)", token=token) == token
    assert call(server.address, "survey", {"lease": token}).error is None


def test_a_chosen_token_must_be_long_enough(server):
    reply = call(server.address, "lease", {"client": "a", "token": "short"})
    assert reply.error["type"] == "InvalidParams" and "'token'" in reply.error["message"]


def test_the_executed_log_stays_bounded_and_answers_after_compaction(tmp_path):
    path = tmp_path / "executed.jsonl"
    log = _ExecutedLog(path, keep=2, ids_kept=5)
    for i in range(9):
        log.append(f"c{i}", (float(i), 0.0), ({"i": i}, {"spectrum": np.full(3, float(i))}))
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert sum("result" in e for e in lines) <= 4 and len(lines) <= 5 + 2  # bounded, not 9 full entries
    log.close()
    again = _ExecutedLog(path, keep=2, ids_kept=5)
    assert list(again.recent) == ["c7", "c8"] and list(again.ids) == ["c4", "c5", "c6", "c7", "c8"]
    position, (meta, arrays) = again.outcome("c8")
    assert position == (8.0, 0.0) and meta == {"i": 8}
    np.testing.assert_array_equal(arrays["spectrum"], np.full(3, 8.0))
    again.close()


def test_a_torn_last_line_does_not_swallow_the_next_entry(tmp_path):
    path = tmp_path / "executed.jsonl"
    path.write_text(json.dumps({"command_id": "c0", "position": [0, 0], "outcome": "ok", "result": {}, "arrays": {}})
                    + "\n" + '{"command_id": "c1", "posit')  # the server died mid-write
    log = _ExecutedLog(path, keep=8)
    log.append("c2", (1.0, 0.0), ({}, {}))
    log.close()
    again = _ExecutedLog(path, keep=8)
    assert list(again.ids) == ["c0", "c2"]
    again.close()


def test_two_servers_cannot_share_one_executed_log(tmp_path):
    first = _ExecutedLog(tmp_path / "x.jsonl", keep=2)
    with pytest.raises(ExecutedLogInUse, match="in use by another 'aexp serve'"):
        _ExecutedLog(tmp_path / "x.jsonl", keep=2)
    first.close()
    _ExecutedLog(tmp_path / "x.jsonl", keep=2).close()  # free again


def test_default_state_dir_and_log_name():
    assert default_state_dir({"XDG_STATE_HOME": "/s", "HOME": "/h"}) == Path("/s/aexp/serve")
    assert default_state_dir({"HOME": "/h"}) == Path("/h/.local/state/aexp/serve")
    assert executed_log_name("plasmonic", "tcp://127.0.0.1:5555") == "executed-plasmonic-127.0.0.1_5555.jsonl"
    assert "/" not in executed_log_name("../x", "ipc:///tmp/a b")


def test_serve_keeps_a_durable_executed_log_by_default_across_a_kill(tmp_path):
    """`aexp serve` without --executed-log: a SIGKILLed server's successor answers for its commands."""
    port = free_port()
    cmd = [sys.executable, "-m", "aexp", "serve", "--sim", "plasmonic", "--bind", f"tcp://127.0.0.1:{port}",
           "-o", "survey_pixels=32", "-o", "n_particles=1", "--state-dir", str(tmp_path)]
    params = {"lease": "k" * 32, "position": [1e-9, 1e-9], "command_id": "run-1"}
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        address = first.stdout.readline().split()[-1]
        lease(address, token="k" * 32)
        measured = call(address, "measure", params)
        first.kill()  # SIGKILL: no clean shutdown
        first.wait(timeout=10)
        assert [p.name for p in tmp_path.glob("*.jsonl")] == [executed_log_name("plasmonic", address)]
        second = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert second.stdout.readline().split()[-1] == address
            assert call(address, "status", {"command_id": "run-1"}).result["state"] == "done"
            lease(address, token="k" * 32)
            again = call(address, "measure", params)
            assert again.result == measured.result  # the stored result: server_wall_s and all
            np.testing.assert_array_equal(again.arrays["spectrum"], measured.arrays["spectrum"])
        finally:
            second.terminate()
            second.wait(timeout=10)
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()


def free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
