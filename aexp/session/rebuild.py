"""One way to rebuild a recorded experiment: the recorded config, under the recorded torch settings,
prepared on an instrument and given its policy, ready to run the campaign again.

Replay (``aexp replay --verify``), resume and the report's model maps all start here, so they cannot
drift apart: what :func:`rebuild` checks (the candidates rebuilt from the survey are the recorded
ones; the embedding's digest) holds for each of them.

Example:
    >>> reader = SessionReader("runs/a")
    >>> with rebuild(reader, SessionInstrument(reader)) as r:
    ...     result = campaign(r.config, instrument, r.prepared, r.policy, MemoryRecorder(), r.seed, r.session_id)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..config import ExperimentConfig
from ..instrument import Instrument
from ..loop import Prepared, build_policy, prepare
from ..policies import Policy
from ..repro import features_digest, torch_settings, versions
from .manifest import Manifest, SessionError
from .store import SessionReader

__all__ = ["Rebuilt", "rebuild", "recorded_config", "version_warnings", "differences", "check_prepared"]


@dataclass
class Rebuilt:
    """A recorded experiment, prepared again: what :func:`rebuild` yields."""

    config: ExperimentConfig
    prepared: Prepared
    policy: Policy
    seed: int
    session_id: str
    warnings: list[str] = field(default_factory=list)


def recorded_config(reader: SessionReader) -> ExperimentConfig:
    """The session's config as recorded in its manifest (checked as a YAML config would be)."""
    return reader.manifest.experiment_config(source=f"{reader.folder}/manifest.json")


def version_warnings(manifest: Manifest | Mapping[str, Any]) -> list[str]:
    """One line per package whose version differs from the one that recorded the session."""
    then = manifest.versions if isinstance(manifest, Manifest) else manifest.get("versions", {})
    now = versions()
    return [
        f"{pkg} {now.get(pkg, 'missing')} here, {was} when recorded"
        for pkg, was in sorted(then.items())
        if now.get(pkg) != was
    ]


def differences(a: Any, b: Any, path: str = "") -> list[str]:
    """Dotted keys where two JSON-like values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = []
        for key in sorted(set(a) | set(b)):
            out += differences(a.get(key), b.get(key), f"{path}.{key}" if path else str(key))
        return out
    return [] if a == b else [path or "<top level>"]


def check_prepared(reader: SessionReader, prepared: Prepared, warnings: list[str]) -> None:
    """The rebuilt candidates must be the recorded ones; a different embedding is worth a warning."""
    recorded = reader.array("candidates")
    if recorded.shape != prepared.candidates.positions.shape or not np.array_equal(
        recorded, prepared.candidates.positions
    ):
        raise SessionError(
            f"{reader.folder}: the candidates rebuilt from the survey ({len(prepared.candidates)}) "
            f"differ from candidates.npy ({len(recorded)})"
        )
    digest = reader.manifest.features.get("sha256")
    if digest and digest != features_digest(prepared.features):
        warnings.append("the rebuilt features differ from the recorded ones (sha256)")


@contextmanager
def rebuild(
    reader: SessionReader,
    instrument: Instrument,
    *,
    config: ExperimentConfig | None = None,
    progress: bool = False,
    check: Any = None,
) -> Iterator[Rebuilt]:
    """Prepare the recorded experiment on ``instrument`` under the recorded torch settings.

    The settings stay in force inside the ``with`` block, where the campaign is to be run.

    Args:
        reader: the session.
        instrument: what to survey and measure (the recorded session, or a live instrument).
        config: the config to use; the recorded one by default (e.g. with the wall time lifted).
        progress: show the embedder's training bar.
        check: optional ``check(prepared)`` run before the policy is built (resume checks that the
            live instrument is still the recorded one).

    Raises:
        SessionError: the rebuilt candidates differ from the recorded ones.
    """
    man = reader.manifest
    cfg = config if config is not None else recorded_config(reader)
    warnings = version_warnings(man)
    with torch_settings(man.num_threads):
        prepared = prepare(cfg, instrument, man.seed, progress=progress)
        if check is not None:
            check(prepared)
        check_prepared(reader, prepared, warnings)
        policy = build_policy(cfg, int(prepared.features.shape[1]), man.seed, prepared.device,
                              columns=prepared.feature_info)
        yield Rebuilt(cfg, prepared, policy, man.seed, man.session_id, warnings)
