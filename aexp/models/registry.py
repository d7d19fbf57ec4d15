"""Embedders by name, for the loop's ``embedder: {kind: ...}`` configuration.

Example:
    >>> model = make_embedder("affine", input_shape=(1, 16, 16), latent_dim=2)
    >>> type(model).__name__
    'AffineVAE'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .affine import AffineVAE
from .base import BaseVAE
from .jvae import JRVAE, JVAE
from .rvae import RVAE
from .skiprvae import SkipRVAE
from .vae import VAE

__all__ = ["EMBEDDERS", "make_embedder"]

EMBEDDERS: dict[str, type[BaseVAE]] = {
    "vae": VAE,
    "rvae": RVAE,
    "affine": AffineVAE,
    "jvae": JVAE,
    "jrvae": JRVAE,
    "skiprvae": SkipRVAE,
}
"""Embedder kind -> model class."""


def make_embedder(kind: str, input_shape: Sequence[int], **options: Any) -> BaseVAE:
    """A new, unfitted model of ``kind``; ``options`` the model does not take are left out, so one
    configuration section can serve every kind (e.g. ``rotation_prior`` for a plain VAE)."""
    if kind not in EMBEDDERS:
        raise ValueError(f"embedder kind {kind!r} is not one of {sorted(EMBEDDERS)}")
    cls = EMBEDDERS[kind]
    accepted = set(cls._parameter_names())
    return cls(input_shape=input_shape, **{k: v for k, v in options.items() if k in accepted})
