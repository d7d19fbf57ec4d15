"""The instrument link's message codec: one JSON header frame + one raw frame per array.

A request is a multipart ZeroMQ message::

    frame 0   JSON  {"v": 1, "id": "...", "method": "measure", "params": {...},
                     "arrays": [{"name": "spectrum", "dtype": "<f8", "shape": [2048]}, ...]}
    frame 1.. raw C-ordered bytes of each array, in the order of "arrays"

A reply has the same shape with ``"result"`` in place of ``method``/``params``, or, on failure, no
arrays and ``"error": {"code": int, "type": str, "message": str}`` (JSON-RPC style). The error
``type`` names an exception class of this module or :mod:`aexp.instrument`; the client raises it
again with :func:`raise_remote_error`, so a refused position arrives as :class:`OutOfBounds`.

Receiving is zero-copy (the "multipart messages with zero-copy frames" pattern of the pyzmq guide):
arrays are ``np.frombuffer`` views on the received frames. Every input is bounded before it reaches
a parser or an allocator (:class:`Limits`): the total size and the header's bytes before JSON is
parsed, the header's nesting depth before the (recursive) JSON decoder sees it, the digits of each
number as the decoder meets it (Python's int conversion is quadratic and capped at 4300 digits), and
for each array its dtype (an allow-list: no object, void or big-endian dtypes), its number of
dimensions, each dimension and its element count before ``prod(shape) * itemsize`` is compared
with the frame's length. Whatever else goes wrong while decoding is still a
:class:`MalformedMessage`, never another exception. Nothing is ever unpickled: headers are JSON,
arrays are raw numbers.

Example:
    >>> frames = encode_request("r1", "ping", {})
    >>> decode(frames).method
    'ping'
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..instrument import InstrumentError, InstrumentTimeout, MeasurementFailed, OutOfBounds
from ..types import InstrumentDescription, Measurement, PixelTransform, SpectrumAxis, Survey, axes_from_dicts

__all__ = [
    "PROTOCOL_VERSION",
    "ALLOWED_DTYPES",
    "Limits",
    "Message",
    "ProtocolError",
    "MalformedMessage",
    "MessageTooLarge",
    "VersionMismatch",
    "UnknownMethod",
    "InvalidParams",
    "LeaseHeld",
    "LeaseRequired",
    "RemoteError",
    "encode_request",
    "encode_result",
    "encode_error",
    "decode",
    "parse_header",
    "best_effort_id",
    "error_payload",
    "raise_remote_error",
    "exception_from_payload",
    "survey_to_wire",
    "survey_from_wire",
    "measurement_to_wire",
    "measurement_from_wire",
    "description_from_wire",
]

PROTOCOL_VERSION = 1

# Little-endian or byte-order-free numbers only: what ``np.dtype(...).str`` prints for them.
ALLOWED_DTYPES = frozenset(
    {"|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f2", "<f4", "<f8", "<c8", "<c16"}
)


class ProtocolError(InstrumentError):
    """A message broke the wire protocol. ``code`` travels in the structured error reply."""

    code = 400


class MalformedMessage(ProtocolError):
    """Bad JSON, missing or mistyped header keys, wrong frame count, lying shapes, bad dtypes."""

    code = 400


class MessageTooLarge(ProtocolError):
    """A message (or its declared arrays) exceeds the receiver's configured maximum size."""

    code = 413


class VersionMismatch(ProtocolError):
    """Client and server speak different protocol versions; the message names both."""

    code = 426


class UnknownMethod(ProtocolError):
    """The method is not in the server's method table."""

    code = 404


class InvalidParams(ProtocolError):
    """A method's parameters are missing or of the wrong type; the message names the parameter."""

    code = 422


class LeaseHeld(ProtocolError):
    """Another controller holds the instrument's lease."""

    code = 423


class LeaseRequired(ProtocolError):
    """The command needs a lease and the caller's is missing, unknown or expired."""

    code = 401


class RemoteError(InstrumentError):
    """The server failed in a way that has no typed exception here (its type is in the message)."""

    code = 500


_ERROR_TYPES: dict[str, type[InstrumentError]] = {
    cls.__name__: cls
    for cls in (
        OutOfBounds, MeasurementFailed, InstrumentTimeout, MalformedMessage, MessageTooLarge,
        VersionMismatch, UnknownMethod, InvalidParams, LeaseHeld, LeaseRequired, RemoteError,
    )
}
_ERROR_CODES = {OutOfBounds: 416, MeasurementFailed: 502, InstrumentTimeout: 504}


@dataclass(frozen=True)
class Limits:
    """What a receiver accepts before it looks inside a message.

    Attributes:
        max_message_bytes: header + all array frames together.
        max_header_bytes: the JSON header frame alone.
        max_arrays: array frames per message.
        max_depth: nesting of JSON arrays and objects in the header (the header itself is depth 1).
        max_number_chars: characters of one JSON number (a float's ``repr`` needs at most 24).
        max_dims: dimensions of one array.
        max_elements: elements of one array, and its largest dimension; zero-length dimensions
            count as one, so ``[0, 10**30]`` is refused like ``[10**30]``.
    """

    max_message_bytes: int = 64 * 2**20
    max_header_bytes: int = 64 * 2**10
    max_arrays: int = 16
    max_depth: int = 32
    max_number_chars: int = 40
    max_dims: int = 8
    max_elements: int = 64 * 2**20


@dataclass
class Message:
    """A decoded request or reply. ``arrays`` are read-only views on the received frames."""

    id: str
    method: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    v: int = PROTOCOL_VERSION


# --- encoding ---


def _array_frames(arrays: Mapping[str, np.ndarray]) -> tuple[list[dict[str, Any]], list[Any]]:
    specs, frames = [], []
    for name, arr in arrays.items():
        a = np.ascontiguousarray(arr)
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        if a.dtype.str not in ALLOWED_DTYPES:
            raise TypeError(f"array {name!r}: dtype {a.dtype} cannot travel (allowed: numeric, little-endian)")
        specs.append({"name": name, "dtype": a.dtype.str, "shape": list(a.shape)})
        frames.append(a.data.cast("B") if a.size else b"")  # a.data: the array's own memoryview, no copy
    return specs, frames


def _encode(header: dict[str, Any], arrays: Mapping[str, np.ndarray] | None) -> list[Any]:
    specs, frames = _array_frames(arrays or {})
    header = {"v": PROTOCOL_VERSION, **header, "arrays": specs}
    # allow_nan=False: JSON has no NaN; a NaN in a header is a bug on the sending side
    return [json.dumps(header, allow_nan=False).encode(), *frames]


def encode_request(
    msg_id: str, method: str, params: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None
) -> list[Any]:
    """Frames of a request: header ``{v, id, method, params, arrays}`` + one frame per array."""
    return _encode({"id": msg_id, "method": method, "params": dict(params)}, arrays)


def encode_result(
    msg_id: str, result: Mapping[str, Any], arrays: Mapping[str, np.ndarray] | None = None
) -> list[Any]:
    """Frames of a successful reply."""
    return _encode({"id": msg_id, "result": dict(result)}, arrays)


def error_payload(exc: BaseException) -> dict[str, Any]:
    """``{code, type, message}`` of an exception; unknown kinds travel as ``RemoteError``."""
    for cls in type(exc).__mro__:
        if cls.__name__ in _ERROR_TYPES and _ERROR_TYPES[cls.__name__] is cls:
            code = getattr(cls, "code", None) or _ERROR_CODES.get(cls, 500)
            return {"code": int(code), "type": cls.__name__, "message": str(exc)}
    return {"code": 500, "type": "RemoteError", "message": f"{type(exc).__name__}: {exc}"}


def encode_error(msg_id: str | None, exc: BaseException) -> list[Any]:
    """Frames of an error reply ``{v, id, error: {code, type, message}}``."""
    return _encode({"id": msg_id, "error": error_payload(exc)}, None)


def exception_from_payload(error: Mapping[str, Any]) -> InstrumentError:
    """The typed exception a structured error ``{code, type, message}`` stands for."""
    cls = _ERROR_TYPES.get(str(error.get("type")), RemoteError)
    message = str(error.get("message", ""))
    if cls is RemoteError and error.get("type") != "RemoteError":
        message = f"{error.get('type')}: {message}"
    return cls(message)


def raise_remote_error(error: Mapping[str, Any]) -> None:
    """Raise the typed exception a structured error reply stands for."""
    raise exception_from_payload(error)


# --- decoding ---


def _frame_bytes(frame: Any) -> memoryview:
    """A byte view of a zmq.Frame (``copy=False`` receive), bytes or buffer, without copying."""
    buf = getattr(frame, "buffer", frame)
    return memoryview(buf).cast("B") if not isinstance(buf, bytes) else memoryview(buf)


def _json_depth(text: bytes, limit: int) -> int:
    """Deepest nesting of ``[``/``{`` outside JSON strings, counted up to ``limit + 1``.

    Runs before ``json.loads``, whose decoder recurses once per level: tens of thousands of ``[``
    would otherwise end in a RecursionError inside the parser.
    """
    if text.count(b"[") + text.count(b"{") <= limit:  # the usual header: nothing to scan
        return 0
    depth = deepest = 0
    in_string = escaped = False
    for byte in text:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # closing quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
            if deepest > limit:
                break
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


def _bounded_number(limit: int, convert: Any) -> Any:
    def parse(text: str) -> Any:
        if len(text) > limit:
            raise MalformedMessage(f"a number of {len(text)} characters exceeds the limit of {limit}")
        return convert(text)

    return parse


def _no_constant(name: str) -> Any:
    raise MalformedMessage(f"{name} is not a JSON number")


def parse_header(raw: bytes | memoryview, limits: Limits = Limits()) -> dict[str, Any]:
    """The JSON object of a header frame, every bound of ``limits`` checked before or while parsing.

    Raises:
        MessageTooLarge: more than ``limits.max_header_bytes``.
        MalformedMessage: not UTF-8 JSON, nested deeper than ``limits.max_depth``, a number longer
            than ``limits.max_number_chars``, NaN/Infinity, or not an object.
    """
    if len(raw) > limits.max_header_bytes:
        raise MessageTooLarge(f"header of {len(raw)} bytes exceeds the limit of {limits.max_header_bytes}")
    data = bytes(raw)
    depth = _json_depth(data, limits.max_depth)
    if depth > limits.max_depth:
        raise MalformedMessage(f"header nests arrays/objects deeper than the limit of {limits.max_depth}")
    try:
        header = json.loads(
            data.decode("utf-8"),
            parse_int=_bounded_number(limits.max_number_chars, int),
            parse_float=_bounded_number(limits.max_number_chars, float),
            parse_constant=_no_constant,
        )
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedMessage(f"header frame is not JSON: {exc}") from None
    except RecursionError:  # the depth scan should make this unreachable; a parser bug must not kill us
        raise MalformedMessage("header nests too deeply to parse") from None
    if not isinstance(header, dict):
        raise MalformedMessage(f"header must be a JSON object, got {type(header).__name__}")
    return header


def _header(raw: memoryview, limits: Limits) -> dict[str, Any]:
    return parse_header(raw, limits)


def _check_version(header: dict[str, Any]) -> int:
    v = header.get("v")
    if not isinstance(v, int) or isinstance(v, bool):
        raise MalformedMessage(f"header 'v' must be the protocol version (an integer), got {v!r}")
    if v != PROTOCOL_VERSION:
        raise VersionMismatch(
            f"peer speaks aexp wire protocol version {v}, this side speaks version {PROTOCOL_VERSION}; "
            f"install matching aexp versions on both computers"
        )
    return v


def _array_specs(header: dict[str, Any], n_frames: int, limits: Limits) -> list[tuple[str, np.dtype, tuple[int, ...]]]:
    specs = header.get("arrays", [])
    if not isinstance(specs, list):
        raise MalformedMessage("header 'arrays' must be a list")
    if len(specs) > limits.max_arrays:
        raise MessageTooLarge(f"{len(specs)} arrays exceed the limit of {limits.max_arrays}")
    if len(specs) != n_frames:
        raise MalformedMessage(f"header declares {len(specs)} arrays but {n_frames} array frames arrived")
    out = []
    for i, s in enumerate(specs):
        if not isinstance(s, dict) or set(s) != {"name", "dtype", "shape"}:
            raise MalformedMessage(f"arrays[{i}] must be {{name, dtype, shape}}, got {s!r:.80}")
        name, dt, shape = s["name"], s["dtype"], s["shape"]
        if not isinstance(name, str) or not isinstance(dt, str):
            raise MalformedMessage(f"arrays[{i}]: name and dtype must be strings")
        if dt not in ALLOWED_DTYPES:
            raise MalformedMessage(f"arrays[{i}] ({name!r}): dtype {dt!r} is not allowed")
        out.append((name, np.dtype(dt), _shape(shape, f"arrays[{i}] ({name!r})", limits)))
    return out


def _shape(shape: Any, where: str, limits: Limits) -> tuple[int, ...]:
    if not isinstance(shape, list) or len(shape) > limits.max_dims or not all(
        isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape
    ):
        raise MalformedMessage(f"{where}: shape must be a list of <= {limits.max_dims} non-negative integers")
    return tuple(shape)


def _check_elements(name: str, shape: tuple[int, ...], limits: Limits) -> None:
    """Refuse a shape numpy cannot hold even when a zero dimension makes the frame empty
    (``[0, 10**30]``: numpy's own refusal would be a ValueError from inside ``reshape``)."""
    elements = 1
    for n in shape:
        elements *= max(n, 1)
        if n > limits.max_elements or elements > limits.max_elements:
            raise MalformedMessage(
                f"array {name!r}: shape {list(shape)} exceeds the limit of {limits.max_elements} elements"
            )


def decode(frames: Sequence[Any], limits: Limits = Limits()) -> Message:
    """Check and decode a received multipart message (request or reply).

    ``frames``: ``zmq.Frame`` objects (from ``recv_multipart(copy=False)``), bytes or buffers.
    Arrays in the result are read-only views on those frames.

    Raises:
        MalformedMessage, MessageTooLarge, VersionMismatch: the message is refused; nothing was
            allocated for its arrays. No other exception leaves this function.
    """
    try:
        return _decode(frames, limits)
    except ProtocolError:
        raise
    except Exception as exc:  # a check we lack must still end in a refusal, not in the caller's crash
        raise MalformedMessage(f"message could not be decoded: {type(exc).__name__}: {exc!s:.200}") from None


def _decode(frames: Sequence[Any], limits: Limits) -> Message:
    if not frames:
        raise MalformedMessage("empty message")
    raws = [_frame_bytes(f) for f in frames]
    total = sum(len(r) for r in raws)
    if total > limits.max_message_bytes:
        raise MessageTooLarge(f"message of {total} bytes exceeds the limit of {limits.max_message_bytes}")
    header = parse_header(raws[0], limits)
    v = _check_version(header)
    msg_id = header.get("id")
    if not isinstance(msg_id, str) and not (msg_id is None and "error" in header):
        raise MalformedMessage(f"header 'id' must be a string, got {msg_id!r:.40}")
    arrays = {}
    for (name, dt, shape), raw in zip(_array_specs(header, len(raws) - 1, limits), raws[1:]):
        # at most max_dims factors of at most max_number_chars digits each: a cheap, exact product
        declared = math.prod(shape) * dt.itemsize
        if declared != len(raw):
            raise MalformedMessage(f"array {name!r}: shape {list(shape)} x {dt.itemsize} B = {declared} B, frame has {len(raw)} B")
        _check_elements(name, shape, limits)
        if name in arrays:
            raise MalformedMessage(f"array {name!r} appears twice")
        view = np.frombuffer(raw, dtype=dt).reshape(shape)
        view.flags.writeable = False  # a view on the message: copy before changing it
        arrays[name] = view
    return _message(header, msg_id, v, arrays)


def best_effort_id(frames: Sequence[Any], limits: Limits = Limits()) -> str | None:
    """The id of a message that failed to decode, if its header is readable within ``limits``."""
    try:
        msg_id = parse_header(_frame_bytes(frames[0]), limits).get("id")
    except Exception:
        return None
    return msg_id if isinstance(msg_id, str) and len(msg_id) <= 200 else None


def _message(header: dict[str, Any], msg_id: Any, v: int, arrays: dict[str, np.ndarray]) -> Message:
    if "error" in header:
        err = header["error"]
        if not isinstance(err, dict) or not isinstance(err.get("type"), str):
            raise MalformedMessage("'error' must be {code, type, message}")
        return Message(id=msg_id or "", error=err, arrays=arrays, v=v)
    if "result" in header:
        if not isinstance(header["result"], dict):
            raise MalformedMessage("'result' must be a JSON object")
        return Message(id=msg_id, result=header["result"], arrays=arrays, v=v)
    method, params = header.get("method"), header.get("params", {})
    if not isinstance(method, str):
        raise MalformedMessage(f"header 'method' must be a string, got {method!r:.40}")
    if not isinstance(params, dict):
        raise MalformedMessage(f"header 'params' must be a JSON object, got {type(params).__name__}")
    return Message(id=msg_id, method=method, params=params, arrays=arrays, v=v)


# --- the shared vocabulary on the wire ---


def survey_to_wire(survey: Survey) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(result, arrays)`` of a survey: the image travels raw, ``C x H x W`` float32."""
    meta = {"transform": survey.transform.to_dict(), "channels": list(survey.channels)}
    return meta, {"image": np.asarray(survey.image, dtype=np.float32)}


def _need(d: Mapping[str, Any], arrays: Mapping[str, np.ndarray], keys: Sequence[str], names: Sequence[str]) -> None:
    missing = [k for k in keys if k not in d] + [f"array {n!r}" for n in names if n not in arrays]
    if missing:
        raise MalformedMessage(f"reply lacks {', '.join(missing)}")


def survey_from_wire(result: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Survey:
    """Inverse of :func:`survey_to_wire` (the image stays a view on the received frame)."""
    _need(result, arrays, ("transform", "channels"), ("image",))
    try:
        return Survey(arrays["image"], PixelTransform.from_dict(result["transform"]), tuple(result["channels"]))
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise MalformedMessage(f"survey reply: {exc}") from None


def measurement_to_wire(m: Measurement) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(result, arrays)`` of a measurement: the spectrum travels raw, ``L`` values (an N-D
    measurement, e.g. a pattern ``ky x kx``, with its shape, and its axes under ``"axes"``)."""
    nd = {"axes": [a.to_dict() for a in m.axes]} if m.axes else {}
    meta = {
        **nd,
        "axis": m.axis.to_dict(),
        "position": [float(m.position[0]), float(m.position[1])],
        "duration_s": float(m.duration_s),
        "metadata": m.metadata,
    }
    return meta, {"spectrum": np.asarray(m.spectrum)}


def measurement_from_wire(result: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Measurement:
    """Inverse of :func:`measurement_to_wire`."""
    _need(result, arrays, ("axis", "position", "duration_s"), ("spectrum",))
    try:
        x, y = result["position"]
        return Measurement(
            spectrum=arrays["spectrum"],
            axis=SpectrumAxis(**result["axis"]),
            position=(float(x), float(y)),
            duration_s=float(result["duration_s"]),
            metadata=dict(result.get("metadata") or {}),
            axes=axes_from_dicts(result["axes"]) if result.get("axes") is not None else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedMessage(f"measurement reply: {exc}") from None


def description_from_wire(result: Mapping[str, Any]) -> InstrumentDescription:
    """An :class:`InstrumentDescription` from its ``to_dict()`` form, malformed ones refused."""
    try:
        return InstrumentDescription.from_dict(dict(result))
    except (KeyError, TypeError, ValueError) as exc:
        raise MalformedMessage(f"describe reply: {exc}") from None
