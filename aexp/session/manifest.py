"""``manifest.json``: what a session was run with, as one typed record.

The manifest is written once, before the first measurement, and read by replay, resume, export and
report. This module is the one place that knows its keys: :meth:`Manifest.to_dict` writes them and
:meth:`Manifest.from_dict` reads them, naming the field at fault when one is missing or malformed.

Format versions: ``format_version`` is the session folder's version (:data:`FORMAT_VERSION`); a
manifest of a newer version is refused, an older one is read as far as
its fields go. Keys this version does not know are kept in :attr:`Manifest.extra` and written back,
so a newer writer's additions survive a round trip.

Example:
    >>> man = read_manifest("runs/a")
    >>> man.seed, man.survey.channels, man.torch.num_threads
    (0, ('haadf',), 1)
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import AexpError
from ..types import InstrumentDescription, PixelTransform, SpectrumAxis

if TYPE_CHECKING:
    from ..config import ExperimentConfig

__all__ = [
    "FORMAT_VERSION",
    "SessionError",
    "Manifest",
    "TorchRecord",
    "SurveyRecord",
    "CandidatesRecord",
    "check_version",
    "read_manifest",
]

FORMAT_VERSION = 1


class SessionError(AexpError, RuntimeError):
    """A session folder is missing, not a session, damaged, or would be overwritten."""


@dataclass(frozen=True)
class TorchRecord:
    """The torch settings a session's decisions were made under (applied again on replay)."""

    device: str = "cpu"
    num_threads: int | None = None
    deterministic: bool = True

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "num_threads": self.num_threads, "deterministic": self.deterministic}


@dataclass(frozen=True)
class SurveyRecord:
    """The survey's shape ``(C, H, W)``, channel names and pixel -> instrument transform."""

    shape: tuple[int, ...]
    channels: tuple[str, ...]
    transform: PixelTransform

    def to_dict(self) -> dict[str, Any]:
        return {"shape": list(self.shape), "channels": list(self.channels), "transform": self.transform.to_dict()}


@dataclass(frozen=True)
class CandidatesRecord:
    """How many candidates there were, their grid (``None`` for atom candidates) and patch shape."""

    count: int
    grid_shape: tuple[int, int] | None
    patch_shape: tuple[int, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "grid_shape": list(self.grid_shape) if self.grid_shape else None,
            "patch_shape": list(self.patch_shape),
        }


@dataclass(frozen=True)
class Manifest:
    """Everything fixed before a session's first measurement.

    Attributes:
        config: the experiment's config as a plain dict (:meth:`experiment_config` parses it).
        features: how the surrogate's inputs were built (columns, embedder, ``sha256`` of the matrix).
        extra: top-level keys this version does not know, kept for the round trip.
    """

    session_id: str
    created: str
    seed: int
    budget: int
    config: dict[str, Any]
    versions: dict[str, str]
    torch: TorchRecord
    instrument: InstrumentDescription
    spectrum_axis: SpectrumAxis
    survey: SurveyRecord
    candidates: CandidatesRecord
    features: dict[str, Any]
    format_version: int = FORMAT_VERSION
    #: the instrument link's lease token (a ZeroMQ server's lease), so ``aexp resume`` takes the
    #: lease back at once instead of waiting for it to expire; as private as the session folder
    lease_token: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        lease = {"lease_token": self.lease_token} if self.lease_token else {}
        return {
            **self.extra,
            "format_version": self.format_version,
            "session_id": self.session_id,
            "created": self.created,
            "seed": self.seed,
            "budget": self.budget,
            "config": self.config,
            "versions": dict(self.versions),
            "torch": self.torch.to_dict(),
            "instrument": self.instrument.to_dict(),
            "spectrum_axis": self.spectrum_axis.to_dict(),
            "survey": self.survey.to_dict(),
            "candidates": self.candidates.to_dict(),
            "features": self.features,
            **lease,
        }

    @classmethod
    def from_dict(cls, d: Any, source: str = "manifest.json") -> Manifest:
        """Read a manifest; :class:`SessionError` names ``source`` and the field at fault."""
        if not isinstance(d, dict):
            raise SessionError(f"{source}: not a JSON object (got {type(d).__name__})")
        version = check_version(d, source)
        reader = _Fields(d, source)
        man = cls(
            format_version=version,
            session_id=reader.get("session_id", str, default=""),
            created=reader.get("created", str, default=""),
            seed=reader.get("seed", int),
            budget=reader.get("budget", int),
            config=reader.get("config", dict),
            versions=reader.get("versions", dict, default={}),
            torch=reader.parse("torch", _torch, default=TorchRecord()),
            instrument=reader.parse("instrument", InstrumentDescription.from_dict),
            spectrum_axis=reader.parse("spectrum_axis", lambda v: SpectrumAxis(**v)),
            survey=reader.parse("survey", _survey),
            candidates=reader.parse("candidates", _candidates),
            features=reader.get("features", dict, default={}),
            lease_token=reader.get("lease_token", str, default=None),
            extra={k: v for k, v in d.items() if k not in _KNOWN},
        )
        if man.spectrum_axis.n < 1:
            raise SessionError(f"{source}: spectrum_axis.n must be at least 1 (got {man.spectrum_axis.n})")
        return man

    def experiment_config(self, source: str = "manifest.json") -> ExperimentConfig:
        """The recorded config, parsed and checked as ``aexp run`` checks a YAML file."""
        from ..config import parse_config

        return parse_config(self.config, source=f"{source} config", recorded=True)

    @property
    def num_threads(self) -> int | None:
        return self.torch.num_threads

    @property
    def signal_axes(self) -> tuple[SpectrumAxis, ...]:
        """The axes of each recorded measurement: ``(spectrum_axis,)`` for spectra, the instrument's
        ``measurement_axes`` (e.g. ``ky``, ``kx``) for N-D measurements."""
        axes = self.instrument.measurement_axes
        return axes if axes and len(axes) > 1 else (self.spectrum_axis,)


_KNOWN = {
    "format_version", "session_id", "created", "seed", "budget", "config", "versions", "torch",
    "instrument", "spectrum_axis", "survey", "candidates", "features", "lease_token",
}


def check_version(d: dict[str, Any], source: str) -> int:
    """The manifest's ``format_version``: an int from 1 to the newest this aexp reads."""
    version = d.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise SessionError(f"{source}: no valid format_version (got {version!r})")
    if version > FORMAT_VERSION:
        raise SessionError(
            f"{source}: session format version {version} is newer than this aexp reads "
            f"({FORMAT_VERSION}); upgrade aexp to read it"
        )
    return version


class _Fields:
    """Typed lookups in a JSON object whose errors name the file and the key."""

    _MISSING = object()

    def __init__(self, d: dict[str, Any], source: str) -> None:
        self.d, self.source = d, source

    def get(self, key: str, kind: type, default: Any = _MISSING) -> Any:
        if key not in self.d or self.d[key] is None:
            if default is self._MISSING:
                raise SessionError(f"{self.source}: missing field {key!r}")
            return default
        value = self.d[key]
        if (kind is int and isinstance(value, bool)) or not isinstance(value, kind):
            raise SessionError(f"{self.source}: field {key!r} must be {kind.__name__}, got {type(value).__name__}")
        return value

    def parse(self, key: str, build: Any, default: Any = _MISSING) -> Any:
        value = self.get(key, dict, default)
        if value is default:
            return value
        try:
            return build(value)
        except (KeyError, TypeError, ValueError) as exc:
            raise SessionError(f"{self.source}: field {key!r} is malformed ({type(exc).__name__}: {exc})") from None


def _torch(d: dict[str, Any]) -> TorchRecord:
    threads = d.get("num_threads")
    return TorchRecord(str(d.get("device", "cpu")), None if threads is None else int(threads),
                       bool(d.get("deterministic", True)))


def _survey(d: dict[str, Any]) -> SurveyRecord:
    return SurveyRecord(tuple(int(v) for v in d["shape"]), tuple(str(c) for c in d["channels"]),
                        PixelTransform.from_dict(d["transform"]))


def _candidates(d: dict[str, Any]) -> CandidatesRecord:
    grid = d.get("grid_shape")
    return CandidatesRecord(int(d["count"]), None if grid is None else (int(grid[0]), int(grid[1])),
                            tuple(int(v) for v in d["patch_shape"]))


def read_manifest(folder: str | Path) -> Manifest:
    """``folder/manifest.json`` as a :class:`Manifest` (:class:`SessionError` if it is not one)."""
    path = Path(folder) / "manifest.json"
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise SessionError(f"{Path(folder)} is not a session folder (no manifest.json)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SessionError(f"{path}: not valid JSON ({exc})") from None
    return Manifest.from_dict(raw, source=str(path))
