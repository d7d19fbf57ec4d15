"""Affine-invariant VAE: the rVAE's rotation, translation and scale, plus shear.

Encoded columns: ``[angle, dx, dy, (scale), shear, z_1..z_k]``. The decoder's grid goes to

    p -> R(angle) Sh(shear) p / exp(scale) + 0.1 (dx, dy),    Sh(k) = [[1, k], [0, 1]]

(see :func:`aexp.models.base.grid_transform`), the same order in which
:func:`aexp.datasets.make_cards` draws its cards, so on the cards the shear latent tracks
``tan(true shear)``. The loss adds ``KL(shear || N(0, shear_prior^2))`` to the rVAE's.
"""

from __future__ import annotations

from .base import check_positive
from .rvae import RVAE

__all__ = ["AffineVAE"]


class AffineVAE(RVAE):
    """rVAE with a shear latent (and optional scale): see the module docstring.

    Args:
        shear_prior: standard deviation of the Gaussian prior on the shear factor ``k``.
        others: as :class:`~aexp.models.rvae.RVAE`.

    Example:
        >>> m = AffineVAE(input_shape=(48, 48), latent_dim=2).fit(cards.images, epochs=30)
        >>> m.latent_names
        ['angle', 'dx', 'dy', 'shear', 'z1', 'z2']
    """

    shear_prior: float = 0.3

    def _validate_hyperparameters(self) -> None:
        super()._validate_hyperparameters()
        check_positive("shear_prior", self.shear_prior)

    @property
    def geometric_names(self) -> list[str]:
        return super().geometric_names + ["shear"]

    def _geometric_priors(self) -> dict[str, tuple[str, float]]:
        return super()._geometric_priors() | {"shear": ("kl_shear", float(self.shear_prior))}
