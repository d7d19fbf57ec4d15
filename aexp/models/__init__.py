"""Embedders: models that turn image patches into low-dimensional features.

:class:`RVAE` separates rotation and translation from the content of a patch; the shared training,
persistence and input handling live in :mod:`aexp.models.base`, the coordinate decoder in
:mod:`aexp.models.decoders`.
"""

from .base import BaseVAE, NotFittedError
from .rvae import RVAE

__all__ = ["BaseVAE", "NotFittedError", "RVAE"]
