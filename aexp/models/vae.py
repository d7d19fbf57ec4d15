"""Plain VAE: every factor of variation, geometric or not, shares one latent space.

The baseline the invariant models are measured against. Encoder: MLP or small CNN; decoder: the
shared :class:`~aexp.models.decoders.CoordinateDecoder` with no transform, so the only difference
from :class:`~aexp.models.rvae.RVAE` is the absence of geometric latents. Loss per patch:

    reconstruction + w(epoch) * KL(z || N(0, 1))
"""

from __future__ import annotations

from collections.abc import Sequence

from .base import ENCODERS, BaseVAE, InvariantNetwork, LatentNetwork, check_int, check_positive

__all__ = ["VAE"]


class VAE(BaseVAE):
    """Variational autoencoder for image patches; :meth:`encode` gives ``[z_1..z_k]``.

    Args:
        input_shape: ``(h, w)`` or ``(C, h, w)``.
        latent_dim: number of latents ``k``.
        hidden: width of the decoder's per-pixel layers.
        decoder_layers: hidden ``hidden x hidden`` layers after the decoder's first layer.
        encoder: ``"mlp"`` or ``"conv"``.
        encoder_hidden: width of the encoder's hidden layers.
        likelihood, noise_std, device: see :class:`~aexp.models.base.BaseVAE`.
        coordinate_scale: factor on the decoder's initial coordinate weights (see
            :class:`~aexp.models.decoders.CoordinateDecoder`).

    Example:
        >>> m = VAE(input_shape=(16, 16), latent_dim=2, encoder="conv").fit(patches, epochs=10)
        >>> m.encode(patches).shape
        (4096, 2)
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        latent_dim: int = 2,
        hidden: int = 32,
        decoder_layers: int = 2,
        encoder: str = "mlp",
        encoder_hidden: int = 128,
        likelihood: str = "gaussian",
        noise_std: float = 0.1,
        device: str = "cpu",
        coordinate_scale: float = 1.0,
    ):
        super().__init__(input_shape, latent_dim, likelihood, noise_std, device)
        self.hidden = hidden
        self.decoder_layers = decoder_layers
        self.encoder = encoder
        self.encoder_hidden = encoder_hidden
        self.coordinate_scale = coordinate_scale

    def _validate_hyperparameters(self) -> None:
        super()._validate_hyperparameters()
        check_int("hidden", self.hidden, 1)
        check_int("decoder_layers", self.decoder_layers, 0)
        check_int("encoder_hidden", self.encoder_hidden, 1)
        check_positive("coordinate_scale", self.coordinate_scale)
        if self.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {ENCODERS}; got {self.encoder!r}")

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
