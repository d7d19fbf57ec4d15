import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aexp.instrument import MeasurementFailed, OutOfBounds
from aexp.link.wire import (
    PROTOCOL_VERSION,
    LeaseHeld,
    Limits,
    MalformedMessage,
    MessageTooLarge,
    ProtocolError,
    RemoteError,
    VersionMismatch,
    decode,
    encode_error,
    encode_request,
    encode_result,
    measurement_from_wire,
    measurement_to_wire,
    raise_remote_error,
    survey_from_wire,
    survey_to_wire,
)
from aexp.types import Measurement, PixelTransform, SpectrumAxis, Survey


def _header(**kw):
    h = {"v": PROTOCOL_VERSION, "id": "a", "method": "ping", "params": {}, "arrays": []}
    h.update(kw)
    return json.dumps(h).encode()


def test_request_round_trip_is_zero_copy():
    spec = np.arange(2048, dtype=np.float64)
    frames = encode_request("r1", "measure", {"position": [1e-9, 2e-9]}, {"spectrum": spec})
    msg = decode(frames)
    assert (msg.id, msg.method, msg.params) == ("r1", "measure", {"position": [1e-9, 2e-9]})
    np.testing.assert_array_equal(msg.arrays["spectrum"], spec)
    assert np.shares_memory(msg.arrays["spectrum"], np.frombuffer(frames[1], dtype=np.uint8))
    assert not msg.arrays["spectrum"].flags.writeable


def test_non_contiguous_and_big_endian_arrays_travel_as_values():
    a = np.arange(12, dtype=">i4").reshape(3, 4)[:, ::2]
    msg = decode(encode_result("x", {}, {"a": a}))
    np.testing.assert_array_equal(msg.arrays["a"], a)
    assert msg.arrays["a"].dtype == np.dtype("<i4")


def test_object_arrays_cannot_be_sent():
    with pytest.raises(TypeError, match="cannot travel"):
        encode_request("r", "m", {}, {"o": np.array([object()])})


def test_survey_and_measurement_helpers_round_trip():
    s = Survey(np.random.default_rng(0).random((1, 8, 6), dtype=np.float32), PixelTransform.square(2e-9), ("haadf",))
    meta, arrays = survey_to_wire(s)
    back = survey_from_wire(decode(encode_result("s", meta, arrays)).result, decode(encode_result("s", meta, arrays)).arrays)
    np.testing.assert_array_equal(back.image, s.image)
    assert back.transform == s.transform and back.channels == ("haadf",)
    m = Measurement(np.ones(5), SpectrumAxis("e", "eV", 0, 1, 5), (1e-9, 2e-9), 0.5, {"k": 1})
    msg = decode(encode_result("m", *measurement_to_wire(m)))
    got = measurement_from_wire(msg.result, msg.arrays)
    assert got.position == m.position and got.axis == m.axis and got.metadata == {"k": 1}
    np.testing.assert_array_equal(got.spectrum, m.spectrum)
    with pytest.raises(MalformedMessage, match="lacks array 'spectrum'"):
        measurement_from_wire(msg.result, {})


@pytest.mark.parametrize("exc", [OutOfBounds("x outside"), MeasurementFailed("beam lost"), LeaseHeld("held by b")])
def test_errors_travel_typed(exc):
    msg = decode(encode_error("e", exc))
    assert msg.error["type"] == type(exc).__name__ and msg.error["code"] >= 400
    with pytest.raises(type(exc), match=str(exc)):
        raise_remote_error(msg.error)


def test_foreign_exceptions_become_remote_errors_naming_their_type():
    msg = decode(encode_error("e", ZeroDivisionError("boom")))
    with pytest.raises(RemoteError, match="ZeroDivisionError: boom"):
        raise_remote_error(msg.error)


def test_version_mismatch_names_both_versions():
    with pytest.raises(VersionMismatch, match=rf"version {PROTOCOL_VERSION + 1}.*version {PROTOCOL_VERSION}"):
        decode([_header(v=PROTOCOL_VERSION + 1)])


@pytest.mark.parametrize(
    "frames, error, match",
    [
        ([], MalformedMessage, "empty"),
        ([b"{not json"], MalformedMessage, "not JSON"),
        ([b"[1, 2]"], MalformedMessage, "JSON object"),
        ([_header(method=3)], MalformedMessage, "method"),
        ([_header(params=[1])], MalformedMessage, "params"),
        ([_header(id=7)], MalformedMessage, "'id'"),
        ([_header(arrays=[{"name": "a", "dtype": "<f8", "shape": [2]}])], MalformedMessage, "1 arrays but 0"),
        ([_header(), b"extra"], MalformedMessage, "0 arrays but 1"),
        ([_header(arrays=[{"name": "a", "dtype": "|O", "shape": [1]}]), b"x" * 8], MalformedMessage, "not allowed"),
        ([_header(arrays=[{"name": "a", "dtype": "|V8", "shape": [1]}]), b"x" * 8], MalformedMessage, "not allowed"),
        ([_header(arrays=[{"name": "a", "dtype": ">f8", "shape": [1]}]), b"x" * 8], MalformedMessage, "not allowed"),
        ([_header(arrays=[{"name": "a", "dtype": "<f8", "shape": [3]}]), b"x" * 16], MalformedMessage, "24 B, frame has 16"),
        ([_header(arrays=[{"name": "a", "dtype": "<f8", "shape": [2**40, 2**40]}]), b"x" * 8], MalformedMessage, "frame has 8"),
        ([_header(arrays=[{"name": "a", "dtype": "<f8", "shape": [-1]}]), b""], MalformedMessage, "non-negative"),
    ],
)
def test_malformed_messages_are_refused_with_the_reason(frames, error, match):
    with pytest.raises(error, match=match):
        decode(frames)


def test_size_limits_apply_before_decoding():
    limits = Limits(max_message_bytes=1000, max_header_bytes=200, max_arrays=1)
    with pytest.raises(MessageTooLarge, match="exceeds the limit of 1000"):
        decode(encode_request("r", "m", {}, {"a": np.zeros(200)}), limits)
    with pytest.raises(MessageTooLarge, match="header"):
        decode(encode_request("r", "m", {"pad": "x" * 300}), limits)
    with pytest.raises(MessageTooLarge, match="2 arrays"):
        decode(encode_request("r", "m", {}, {"a": np.zeros(1), "b": np.zeros(1)}), limits)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=10,
)


@settings(max_examples=150, deadline=None)
@given(
    header=st.dictionaries(
        st.sampled_from(["v", "id", "method", "params", "arrays", "result", "error"]), json_values, max_size=7
    ),
    frames=st.lists(st.binary(max_size=64), max_size=3),
)
def test_fuzzed_headers_decode_or_raise_a_protocol_error(header, frames):
    try:
        msg = decode([json.dumps(header).encode(), *frames], Limits(max_message_bytes=4096))
    except ProtocolError:
        return
    assert isinstance(msg.id, str)


@settings(max_examples=100, deadline=None)
@given(raw=st.lists(st.binary(max_size=128), min_size=1, max_size=4))
def test_fuzzed_bytes_decode_or_raise_a_protocol_error(raw):
    try:
        decode(raw)
    except ProtocolError:
        pass


@pytest.mark.parametrize(
    "frames, match",
    [
        ([b"[" * 30000 + b"]" * 30000], "deeper than the limit of 32"),
        ([b'{"v": 1, "id": "a", "method": "m", "params": {"p": ' + b"[" * 33 + b"]" * 33 + b"}}"], "deeper"),
        ([b'{"v": ' + b"1" * 5000 + b"}"], "number of 5000 characters exceeds the limit of 40"),
        ([b'{"v": 1, "id": "a", "method": "m", "params": {"p": [1.' + b"5" * 100 + b"]}}"], "102 characters"),
        ([b'{"v": 1, "id": "a", "method": "m", "params": {"p": NaN}}'], "NaN is not a JSON number"),
        ([_header(arrays=[{"name": "a", "dtype": "<f8", "shape": [0, 10**30]}]), b""], "exceeds the limit of 67108864 elements"),
        ([_header(arrays=[{"name": "a", "dtype": "<f8", "shape": [0, 2**62, 2**62]}]), b""], "limit of 67108864 elements"),
        ([_header(arrays=[{"name": "a", "dtype": "<f8", "shape": [1] * 9}]), b"x" * 8], "<= 8 non-negative"),
    ],
)
def test_every_input_is_bounded_before_a_parser_or_allocator_sees_it(frames, match):
    with pytest.raises(MalformedMessage, match=match):
        decode(frames)


def test_the_bounds_are_limits_a_receiver_can_set():
    deep = b'{"v": 1, "id": "a", "method": "m", "params": {"p": [[[1]]]}}'
    assert decode([deep]).params == {"p": [[[1]]]}
    with pytest.raises(MalformedMessage, match="deeper than the limit of 3"):
        decode([deep], Limits(max_depth=3))
    empty = [_header(arrays=[{"name": "a", "dtype": "<f8", "shape": [0, 100]}]), b""]
    assert decode(empty).arrays["a"].shape == (0, 100)
    with pytest.raises(MalformedMessage, match="limit of 99 elements"):
        decode(empty, Limits(max_elements=99))


def test_brackets_inside_strings_are_not_nesting():
    frames = [_header(params={"note": "[" * 1000 + "{" * 1000 + '\\"['})]
    assert decode(frames).params["note"].startswith("[[[")


@settings(max_examples=100, deadline=None)
@given(
    depth=st.integers(min_value=0, max_value=20000),
    digits=st.integers(min_value=1, max_value=6000),
    shape=st.lists(st.integers(min_value=0, max_value=2**70), max_size=10),
    frame=st.binary(max_size=64),
)
def test_fuzzed_nesting_numbers_and_shapes_decode_or_raise_a_protocol_error(depth, digits, shape, frame):
    for frames in (
        [b"[" * depth + b"]" * depth],
        [b'{"v": 1, "id": "a", "method": "m", "params": {"p": ' + b"[" * depth + b"1" + b"]" * depth + b"}}"],
        [b'{"v": 1, "id": "a", "method": "m", "params": {"p": ' + b"7" * digits + b"}}"],
        [_header(arrays=[{"name": "a", "dtype": "<f4", "shape": shape}]), frame],
    ):
        try:
            decode(frames)
        except ProtocolError:
            pass


def test_a_pattern_travels_with_its_axes_and_a_lying_shape_is_refused():
    ky, kx = SpectrumAxis("ky", "mrad", -1.0, 1.0, 3), SpectrumAxis("kx", "mrad", -2.0, 2.0, 4)
    pattern = np.arange(12.0).reshape(3, 4)
    m = Measurement(pattern, ky, (1e-9, 2e-9), 0.5, {}, axes=(ky, kx))
    meta, arrays = measurement_to_wire(m)
    msg = decode(encode_result("m", meta, arrays))
    got = measurement_from_wire(msg.result, msg.arrays)
    assert got.signal_axes == (ky, kx)
    np.testing.assert_array_equal(got.spectrum, pattern)
    with pytest.raises(MalformedMessage, match=r"shape \(4, 3\)"):
        measurement_from_wire(msg.result, {"spectrum": pattern.T.copy()})
