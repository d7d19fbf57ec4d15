"""Plain VAE: every factor of variation, geometric or not, shares one latent space.

The baseline the invariant models are measured against. Encoder: MLP or small CNN; decoder: the
shared :class:`~aexp.models.decoders.CoordinateDecoder` with no transform, so the only difference
from :class:`~aexp.models.rvae.RVAE` is the absence of geometric latents. Loss per patch:

    reconstruction + w(epoch) * KL(z || N(0, 1))
"""

from __future__ import annotations

from .base import InvariantNetwork, LatentNetwork, PatchVAE, check_positive

__all__ = ["VAE"]


class VAE(PatchVAE):
    """Variational autoencoder for image patches; :meth:`encode` gives ``[z_1..z_k]``.

    Args:
        input_shape: ``(h, w)`` or ``(C, h, w)``.
        latent_dim: number of latents ``k``.
        hidden, decoder_layers, encoder_hidden: see :class:`~aexp.models.base.CoordinateVAE`.
        encoder: ``"mlp"`` or ``"conv"``.
        likelihood, noise_std, device, epochs, batch_size, lr, seed: see
            :class:`~aexp.models.base.BaseVAE`.
        coordinate_scale: factor on the decoder's initial coordinate weights (see
            :class:`~aexp.models.decoders.CoordinateDecoder`).

    Example:
        >>> m = VAE(input_shape=(16, 16), latent_dim=2, encoder="conv").fit(patches, epochs=10)
        >>> m.encode(patches).shape
        (4096, 2)
    """

    coordinate_scale: float = 1.0

    def _validate_hyperparameters(self) -> None:
        super()._validate_hyperparameters()
        check_positive("coordinate_scale", self.coordinate_scale)

    @property
    def latent_names(self) -> list[str]:
        return [f"z{i + 1}" for i in range(self.latent_dim)]

    def _latent_priors(self) -> list[tuple[str, slice, float]]:
        return [("kl_content", slice(0, None), 1.0)]

    def _build_network(self) -> LatentNetwork:
        return InvariantNetwork(
            self._patch_shape(),
            self.latent_dim,
            (),
            self.hidden,
            self.decoder_layers,
            self.encoder,
            self.encoder_hidden,
            self.coordinate_scale,
        )
