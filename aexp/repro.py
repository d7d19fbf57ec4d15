"""Reproducibility helpers: the randomness of a decision, the torch settings in force, the versions
that shape a decision, and the digest a replay checks its rebuilt embedding against."""

from __future__ import annotations

import hashlib
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import numpy as np
import torch

__all__ = ["features_digest", "step_rng", "torch_settings", "versions"]


def versions() -> dict[str, str]:
    """Versions of everything that shapes a decision, for the manifest."""
    out = {"python": platform.python_version()}
    for pkg in ("aexp", "torch", "gpytorch", "botorch", "numpy"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = "unknown"
    return out


def step_rng(seed: int, step: int) -> np.random.Generator:
    """The randomness of decision ``step`` (Thompson draws, random policies): a function of the seed
    and the step alone, so a replay or a resumed run draws exactly what the original run drew."""
    return np.random.default_rng([seed, 0x5E1EC7, step])


@contextmanager
def torch_settings(num_threads: int | None = None) -> Iterator[dict[str, Any]]:
    """Run a block with deterministic torch algorithms and a fixed intra-op thread count.

    Float reductions may be split differently with another thread count, which can change the last
    bits of a fit and, rarely, a decision; so the count is recorded in the manifest and applied on
    replay. Yields the settings in force; the previous ones are restored afterwards.
    """
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    try:
        if num_threads is not None:
            torch.set_num_threads(int(num_threads))
        # warn_only: an op with no deterministic kernel warns instead of stopping an experiment
        torch.use_deterministic_algorithms(True, warn_only=True)
        yield {"num_threads": torch.get_num_threads(), "deterministic": True}
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def features_digest(features: torch.Tensor) -> str:
    """SHA-256 of the float64 feature matrix: a replay checks it rebuilt the same embedding."""
    data = features.detach().to("cpu", torch.float64).contiguous().numpy()
    return hashlib.sha256(data.tobytes()).hexdigest()
