"""The Instrument protocol, its errors, and discovery of instruments by name.

aexp talks to every instrument, real or simulated, through :class:`Instrument`. Concrete
instruments live outside this package (``drivers/``, ``simulators/`` or a lab's own plugin) and are
found by name through the entry-point group ``aexp.instruments``. An entry point names a factory
``factory(options: dict, seed: int) -> Instrument``; a class whose ``__init__`` accepts
``seed=`` and the options as keyword arguments is such a factory.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from .errors import AexpError
from .types import Bounds, InstrumentDescription, Measurement, Survey

if TYPE_CHECKING:
    from .targets import Target

__all__ = [
    "Instrument",
    "GroundTruth",
    "InstrumentError",
    "OutOfBounds",
    "MeasurementFailed",
    "InstrumentTimeout",
    "InstrumentUnreachable",
    "UnknownInstrument",
    "InstrumentOptionsError",
    "ENTRY_POINT_GROUP",
    "available_instruments",
    "load_instrument",
    "check_position",
]

ENTRY_POINT_GROUP = "aexp.instruments"


class InstrumentError(AexpError, RuntimeError):
    """Base class of everything an instrument can raise."""


class OutOfBounds(InstrumentError):
    """A position outside the instrument's bounds was asked for. Nothing was measured."""


class MeasurementFailed(InstrumentError):
    """The instrument tried to measure and could not (detector fault, lost signal, ...)."""


class InstrumentTimeout(InstrumentError):
    """The instrument did not answer within its deadline."""


class InstrumentUnreachable(InstrumentTimeout):
    """The instrument could not be reached at all for longer than the allowed outage.

    Unlike :class:`MeasurementFailed` (the instrument could not measure *here*), this says nothing
    about the position: the loop stops the run as interrupted, keeps the candidate available, does
    not count the attempt against the budget, and ``aexp resume`` continues once the link is back.
    """


class InstrumentOptionsError(AexpError, ValueError):
    """A driver rejected the options it was given (the message names the option)."""


class UnknownInstrument(AexpError, LookupError):
    """No instrument of that name is registered in the ``aexp.instruments`` entry-point group."""


@runtime_checkable
class Instrument(Protocol):
    """A microscope, or a simulator of one, that aexp can drive.

    Positions are instrument coordinates ``(x, y)`` in metres. ``measure`` must raise
    :class:`OutOfBounds` for a position outside ``bounds`` rather than clamp it.
    """

    @property
    def bounds(self) -> Bounds: ...

    def describe(self) -> InstrumentDescription: ...

    def survey(self) -> Survey: ...

    def measure(self, position: tuple[float, float], command_id: str = "") -> Measurement: ...


def check_position(bounds: Bounds, position: tuple[float, float]) -> None:
    """Raise :class:`OutOfBounds` unless ``position`` lies inside ``bounds`` (and is finite)."""
    if not bool(bounds.contains(np.asarray(position, dtype=float))):
        raise OutOfBounds(
            f"position (x={position[0]:.4g} m, y={position[1]:.4g} m) is outside the instrument "
            f"bounds x in [{bounds.xmin:.4g}, {bounds.xmax:.4g}], y in [{bounds.ymin:.4g}, {bounds.ymax:.4g}]"
        )


@runtime_checkable
class GroundTruth(Protocol):
    """An instrument that knows the noiseless target everywhere: a simulator, or a full-grid data set.

    ``aexp bench`` scores discovery against it, and ``aexp report`` draws the discovery curve.

    Example:
        >>> if isinstance(instrument, GroundTruth):
        ...     truth = instrument.truth(candidates.positions, target)   # N x 2 -> N
    """

    def truth(self, positions: np.ndarray, target: Target) -> np.ndarray:
        """The target's noiseless value at each position: ``N x 2`` metres -> ``N``."""
        ...


@runtime_checkable
class LinkClient(Protocol):
    """An instrument reached over a link (the ``zmq`` driver): it can greet the server and hang up.

    ``hello()`` -> the server's greeting (``protocol_version``, ...); ``close()`` releases the socket.

    Example:
        >>> client = load_instrument("zmq", {"address": "tcp://127.0.0.1:5555"})
        >>> if isinstance(client, LinkClient):
        ...     print(client.hello()["protocol_version"]); client.close()
    """

    def hello(self) -> dict[str, Any]: ...

    def close(self) -> None: ...


def available_instruments() -> list[str]:
    """Names registered in the ``aexp.instruments`` entry-point group."""
    return sorted({ep.name for ep in entry_points(group=ENTRY_POINT_GROUP)})


def _factory(name: str) -> Callable[..., Any]:
    matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    if not matches:
        known = ", ".join(available_instruments()) or "none"
        raise UnknownInstrument(
            f"no instrument driver named {name!r} (registered: {known}); a driver registers itself "
            f"in the entry-point group {ENTRY_POINT_GROUP!r}"
        )
    return matches[0].load()


def load_instrument(name: str, options: dict[str, Any] | None = None, seed: int = 0) -> Instrument:
    """Build the instrument registered as ``name`` with its ``options`` and ``seed``.

    Raises:
        UnknownInstrument: nothing is registered under ``name``.
        InstrumentOptionsError: the driver rejected its options (a driver says so with a
            ``ValueError`` naming the option, as the plugin contract asks).
    """
    factory = _factory(name)
    options = dict(options or {})
    build = getattr(factory, "from_options", None)
    try:
        if build is not None:
            return build(options, seed=seed)
        return factory(seed=seed, **options)
    except AexpError:
        raise
    except TypeError as exc:  # unknown keyword: name it in a config-level error
        raise InstrumentOptionsError(f"instrument {name!r}: {exc}") from exc
    except ValueError as exc:
        raise InstrumentOptionsError(str(exc) if name in str(exc) else f"instrument {name!r}: {exc}") from exc
