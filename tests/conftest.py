"""Fixtures shared across the test tree: a tiny simulated experiment that runs in seconds."""

from __future__ import annotations

import copy
import os
from typing import Any

import pytest
import torch

from aexp.config import KINDS, parse_config, parse_section, with_kind
from aexp.instrument import load_instrument
from aexp.loop import run_experiment

if os.environ.get("PYTEST_XDIST_WORKER"):
    # ``make test`` runs the suite on several processes: one torch thread each, so they do not
    # oversubscribe the cores (torch's own default takes every core in every process)
    torch.set_num_threads(1)

# Two small particles on a 32 x 32 px survey: 256 candidates with 8 x 8 patches.
TINY_SAMPLE = {"survey_pixels": 32, "n_particles": 2, "size_range_m": [6e-9, 10e-9]}
_TINY = {
    "instrument": {"driver": "plasmonic", "options": TINY_SAMPLE},
    "candidates": {"stride": 2, "patch_size": 8},
    "embedder": "none",
    "surrogate": {"iterations": 20, "warm_iterations": 5},
    "policy": {"kind": "dkl", "n_initial": 3},
    "target": {"name": "band_intensity", "window": [1.0, 3.0]},
    "stopping": {"max_steps": 5},
    "recording": {"figure": False},
}


def _tiny_config(sample: dict[str, Any] | None = None, **sections: Any) -> dict[str, Any]:
    """The tiny experiment as a config dict. ``sample``: more plasmonic options; each other keyword
    updates the section of that name (a dict section key by key, anything else replaced); a new
    ``kind`` keeps only the section's keys that kind takes (:func:`aexp.config.with_kind`)."""
    cfg = copy.deepcopy(_TINY)
    cfg["instrument"]["options"] = {**TINY_SAMPLE, **(sample or {})}
    for name, value in sections.items():
        if isinstance(value, dict) and isinstance(cfg.get(name), dict):
            base = cfg[name]
            if name in KINDS and "kind" in value and value["kind"] != base.get("kind", KINDS[name].default):
                base = with_kind(parse_section(name, base), value["kind"]).model_dump(mode="json")
            cfg[name] = {**base, **value}
        else:
            cfg[name] = value
    return cfg


@pytest.fixture(scope="session")
def tiny_config():
    """Factory: ``tiny_config(sample={...}, stopping={"max_steps": 9}, ...)`` -> config dict."""
    return _tiny_config


@pytest.fixture(scope="session")
def tiny_session(tmp_path_factory):
    """Factory: ``tiny_session(seed, **changes)`` runs the tiny experiment in a fresh folder and
    returns ``(folder, result)`` as :func:`aexp.loop.run_experiment` does."""

    def run(seed: int, **changes: Any):
        cfg = _tiny_config(**changes)
        inst = load_instrument("plasmonic", cfg["instrument"]["options"], seed=seed)
        return run_experiment(parse_config(cfg), inst, tmp_path_factory.mktemp("tiny") / "s", seed=seed,
                              progress=False)

    return run
