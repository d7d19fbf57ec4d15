"""Embedders by name, for the loop's ``embedder: {kind: ...}`` configuration.

Example:
    >>> model = make_embedder("affine", input_shape=(1, 16, 16), latent_dim=2)
    >>> type(model).__name__
    'AffineVAE'
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..config import EmbedderPipeline
from .affine import AffineVAE
from .base import BaseVAE
from .jvae import JRVAE, JVAE
from .rvae import RVAE
from .skiprvae import SkipRVAE
from .vae import VAE

__all__ = ["EMBEDDERS", "build_embedder", "make_embedder"]

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
    """A new, unfitted model of ``kind`` with the constructor arguments ``options``; one the model
    does not take is an error naming it (it used to be dropped, and a setting meant for another kind
    then went unnoticed)."""
    if kind not in EMBEDDERS:
        raise ValueError(f"embedder kind {kind!r} is not one of {sorted(EMBEDDERS)}")
    cls = EMBEDDERS[kind]
    unknown = sorted(set(options) - set(cls._parameter_names()))
    if unknown:
        raise ValueError(f"embedder kind {kind!r} ({cls.__name__}) takes no {', '.join(unknown)}")
    return cls(input_shape=input_shape, **options)


def build_embedder(
    section: EmbedderPipeline, input_shape: Sequence[int], *, seed: int = 0, device: str = "cpu"
) -> BaseVAE:
    """The model a config's ``embedder`` section describes: its kind's class, built from the section's
    model fields (:meth:`~aexp.config.EmbedderPipeline.model_options`, training settings included)
    with the experiment's ``seed``; ``model.fit(patches)`` then trains it as configured.

    Example:
        >>> build_embedder(RVAEEmbedderConfig(latent_dim=3, epochs=5), input_shape=(1, 16, 16)).get_params()["epochs"]
        5
    """
    return make_embedder(section.kind, input_shape, seed=seed, device=device, **section.model_options())
