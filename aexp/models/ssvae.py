"""Semi-supervised VAE (ssVAE, Kingma et al.'s "M2"): a few labelled patches teach a classifier
(or regressor) that the many unlabelled ones refine.

Three networks: a classifier ``q(y | x)``, an encoder ``q(z | x, y)`` and a decoder
``p(x | z, y)``. Per patch, with ``c(y)`` the decoder's condition (one-hot class or the scaled
value) and ``ELBO(x, y) = reconstruction(x | z, y) + w KL(q(z | x, y) || p(z))``:

* labelled ``(x, y)``:      ``ELBO(x, y) + classifier_weight * (N / N_labelled) * (-log q(y | x))``
  (the factor ``N / N_labelled`` weighs the labelled patches as if every patch were labelled, the
  balance of cycling through the labelled set once per pass over the unlabelled one)
* unlabelled, classes:      ``sum_y q(y | x) ELBO(x, y) + w KL(q(y | x) || uniform)``
  (exact enumeration over the classes: the unlabelled part of a batch costs ``n_classes`` times)
* unlabelled, regression:   ``ELBO(x, y~q(y | x)) + w KL(q(y | x) || N(0, 1))`` (reparameterised)

``w`` is the epoch's KL weight. With ``rotation``/``translation`` the encoder adds ``angle``/``dx,
dy`` latents and the decoder turns and moves what it draws (an ss-rVAE): it needs no
class-specific copies of every turn. It draws per pixel with the rVAE's coordinate decoder
(``renderer="coordinate"``) or draws the upright patch once with an MLP and resamples it
(``renderer="resample"``), which costs one MLP pass per patch and class instead of one per pixel.

By default the classifier sees the patch as it is, so it learns turned patches only from the
unlabelled ones, through the reconstruction term. With ``align_classifier`` the geometric latents
come from a pose encoder ``q(angle, dx, dy | x)`` that does not see the class, and the classifier
sees each patch turned and moved back by that pose: labelled patches in one orientation then
teach it to name patches in any orientation the pose encoder has learned from the unlabelled ones.

Unlabelled patches are marked in ``y``: ``-1`` for classification, a NaN (whole row) for
regression. Regression targets are standardised by the labelled values' mean and standard
deviation; :meth:`SSVAE.predict` answers in the original units.
"""

from __future__ import annotations

import math
from dataclasses import field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ._conditional import (
    RENDERERS,
    ConditionalDecoder,
    ConditionalEncoder,
    GeometricPairedVAE,
    PairedNetwork,
    check_class_labels,
    check_values,
    geometric_names,
    transform_grid,
)
from .base import SHIFT_SCALE, MLPEncoder, check_flags, check_int, check_positive, gaussian_kl

__all__ = ["SSVAE"]

TASKS = ("classification", "regression")


CLASSIFIERS = ("mlp", "conv")


def _conv_classifier(channels: int, n_out: int) -> nn.Sequential:
    """Small CNN ``N x C x h x w -> N x n_out``: three 3x3 conv layers (16, 32, 64 channels, ReLU,
    2x2 max-pooling after the first two) and a global average pool, which makes its output
    nearly independent of where the object sits in the patch."""
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, n_out),
    )


class _PoseContentEncoder(nn.Module):
    """``q(angle, dx, dy | x) q(z | x, c)``: the geometric latents from the patch alone, so that
    the classifier can use them before any class is known; the content latents from the patch
    and the condition.

    Shapes as :class:`ConditionalEncoder`: ``x`` N x C x h x w, ``c`` (N*K) x m with ``repeats =
    K`` -> mean and log-variance, each (N*K) x (n_geometric + latent_dim), geometric ones first.
    """

    def __init__(self, features: int, condition_dim: int, hidden: int, n_geometric: int, latent_dim: int):
        super().__init__()
        self.pose = MLPEncoder(features, hidden, n_geometric)
        self.content = ConditionalEncoder(features, condition_dim, hidden, latent_dim)

    def forward(
        self, x: torch.Tensor, c: torch.Tensor, repeats: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor]:
        pose_mean, pose_log_var = self.pose(x)
        if repeats > 1:
            pose_mean = pose_mean.repeat_interleave(repeats, dim=0)
            pose_log_var = pose_log_var.repeat_interleave(repeats, dim=0)
        mean, log_var = self.content(x, c, repeats)
        return torch.cat([pose_mean, mean], dim=1), torch.cat([pose_log_var, log_var], dim=1)


def upright_patches(x: torch.Tensor, angle: torch.Tensor | None, shift: torch.Tensor | None) -> torch.Tensor:
    """Patches ``x`` (N x C x h x w) turned and moved back: the inverse of the decoders' transform.

    A decoder draws ``x(p) = upright(R(angle) p + shift)``, so ``upright(q) = x(R(-angle) (q -
    shift))``: the transform with angle ``-angle`` and shift ``-R(-angle) shift``. Bilinear
    resampling; pixels from outside the patch take the nearest border value.
    """
    if angle is not None and shift is not None:
        c, s = torch.cos(angle), torch.sin(angle)
        shift = torch.stack([c * shift[:, 0] + s * shift[:, 1], c * shift[:, 1] - s * shift[:, 0]], dim=1)
    grid = transform_grid(
        None if angle is None else -angle, None if shift is None else -shift, (x.shape[1], x.shape[2], x.shape[3]), x
    )
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)


class _SSVAENetwork(PairedNetwork):
    target_mean: torch.Tensor  # buffers, registered in __init__
    target_std: torch.Tensor

    def __init__(
        self,
        shape,
        latent_dim,
        output_dim,
        regression,
        rotation,
        translation,
        hidden,
        decoder_layers,
        encoder_hidden,
        classifier,
        renderer,
        align_classifier,
        classifier_downsample,
    ):
        super().__init__()
        self.regression = regression
        self.rotation, self.translation = rotation, translation
        self.align_classifier = align_classifier
        self.classifier_downsample = classifier_downsample
        n_geometric = len(geometric_names(rotation, translation))
        features = int(np.prod(shape))
        n_out = 2 * output_dim if regression else output_dim
        # The classifier's input: avg_pool2d with ceil_mode rounds each side up.
        seen = [shape[0]] + [-(-side // classifier_downsample) for side in shape[1:]]
        if classifier == "conv":
            self.classifier = _conv_classifier(shape[0], n_out)
        else:
            self.classifier = nn.Sequential(
                nn.Flatten(),
                nn.Linear(int(np.prod(seen)), encoder_hidden),
                nn.Tanh(),
                nn.Linear(encoder_hidden, encoder_hidden),
                nn.Tanh(),
                nn.Linear(encoder_hidden, n_out),
            )
        if align_classifier:
            self.encoder = _PoseContentEncoder(features, output_dim, encoder_hidden, n_geometric, latent_dim)
        else:
            self.encoder = ConditionalEncoder(features, output_dim, encoder_hidden, n_geometric + latent_dim)
        self.decoder = ConditionalDecoder(
            shape, latent_dim, output_dim, rotation, translation, hidden, decoder_layers, renderer
        )
        # Scaling of regression targets; saved with the weights.
        self.register_buffer("target_mean", torch.zeros(output_dim))
        self.register_buffer("target_std", torch.ones(output_dim))

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """Classifier output for patches ``x`` (N x C x h x w -> N x n_out). With
        ``align_classifier`` the classifier sees each patch turned and moved back by the pose
        encoder's mean angle and shift; that pose is learned from the reconstruction only (no
        gradient from the classifier), so it means the same for labelled and unlabelled patches.
        """
        if isinstance(self.encoder, _PoseContentEncoder):  # the encoder align_classifier builds
            pose = self.encoder.pose(x)[0].detach()
            angle = pose[:, 0] if self.rotation else None
            first = int(self.rotation)
            shift = SHIFT_SCALE * pose[:, first : first + 2] if self.translation else None
            x = upright_patches(x, angle, shift)
        if self.classifier_downsample > 1:
            x = F.avg_pool2d(x, self.classifier_downsample, ceil_mode=True)
        return self.classifier(x)

    def condition(self, x: torch.Tensor) -> torch.Tensor:
        """The classifier's best condition for ``x``: one-hot argmax class or the mean value."""
        out = self.classify(x)
        if self.regression:
            return out.chunk(2, dim=-1)[0]
        return F.one_hot(out.argmax(dim=-1), out.shape[-1]).to(out.dtype)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.encoder(x, self.condition(x))


class SSVAE(GeometricPairedVAE):
    """Semi-supervised VAE for classification or regression (see the module docstring).

    Encoded columns: ``[angle, dx, dy, z_1..z_k]`` (geometric ones only where switched on), the
    means of ``q(z | x, y_hat)`` with ``y_hat`` the classifier's prediction.

    Args:
        input_shape: ``(h, w)`` or ``(C, h, w)``.
        latent_dim: number of content latents ``k``.
        output_dim: number of classes (classification) or of regressed values (regression).
        task: ``"classification"`` (``y``: ints, ``-1`` = unlabelled) or ``"regression"``
            (``y``: ``N`` or ``N x output_dim`` floats, NaN row = unlabelled).
        classifier_weight: weight of the labelled patches' classification (or regression) loss.
        classifier: ``"mlp"`` (two tanh layers of ``encoder_hidden``) or ``"conv"`` (a small
            CNN with global average pooling; far less sensitive to where the object sits).
        rotation, translation: add ``angle`` / ``(dx, dy)`` latents and turn / move the decoded
            patch (ss-rVAE).
        hidden: width of the decoder's layers.
        decoder_layers: hidden layers of the coordinate decoder (with geometric latents).
        encoder_hidden: width of the encoder's (and the MLP classifier's) hidden layers.
        renderer: with geometric latents, ``"coordinate"`` (per-pixel coordinate decoder with
            ``decoder_layers`` hidden layers) or ``"resample"`` (an MLP of width ``hidden`` draws
            the upright patch, ``grid_sample`` turns and moves it; far cheaper on large patches).
        align_classifier: classify each patch turned and moved back by a class-free pose
            encoder's angle and shift (needs ``rotation`` or ``translation``); see the module
            docstring. Default False: the classifier sees the patch as it is.
        classifier_downsample: the classifier sees patches average-pooled by this factor (2: a
            48 x 48 patch as 24 x 24), which divides the conv classifier's cost by its square.
        rotation_prior, translation_prior: as in :class:`~aexp.models.rvae.RVAE`.
        likelihood, noise_std, device: see :class:`~aexp.models.base.BaseVAE`.

    Example:
        >>> y = np.full(len(X), -1); y[:100] = labels[:100]        # 100 labelled patches
        >>> m = SSVAE(input_shape=(16, 16), output_dim=2).fit(X, y, epochs=20)
        >>> m.predict(X_new)                                       # class per patch
    """

    network_: _SSVAENetwork = field(init=False, repr=False)

    output_dim: int = 2
    task: str = "classification"
    classifier_weight: float = 20.0
    classifier: str = "mlp"
    renderer: str = "coordinate"
    align_classifier: bool = False
    classifier_downsample: int = 1

    # ----------------------------------------------------------------- contract

    def _validate_hyperparameters(self) -> None:
        super()._validate_hyperparameters()
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}; got {self.task!r}")
        check_int("output_dim", self.output_dim, 2 if self.task == "classification" else 1)
        check_positive("classifier_weight", self.classifier_weight)
        if self.classifier not in CLASSIFIERS:
            raise ValueError(f"classifier must be one of {CLASSIFIERS}; got {self.classifier!r}")
        check_int("classifier_downsample", self.classifier_downsample, 1)
        if self.classifier == "conv" and min(self._patch_shape()[1:]) < 4 * self.classifier_downsample:
            raise ValueError(
                f"classifier='conv' needs patches of at least 4 x 4 after classifier_downsample="
                f"{self.classifier_downsample}; got {self.input_shape!r}"
            )
        check_flags(self, "align_classifier")
        if self.align_classifier and not (self.rotation or self.translation):
            raise ValueError("align_classifier=True needs geometric latents: set rotation and/or translation")
        if self.renderer not in RENDERERS:
            raise ValueError(f"renderer must be one of {RENDERERS}; got {self.renderer!r}")

    @property
    def _regression(self) -> bool:
        return self.task == "regression"

    def _build_network(self) -> _SSVAENetwork:
        return _SSVAENetwork(
            self._patch_shape(),
            self.latent_dim,
            self.output_dim,
            self._regression,
            self.rotation,
            self.translation,
            self.hidden,
            self.decoder_layers,
            self.encoder_hidden,
            self.classifier,
            self.renderer,
            self.align_classifier,
            self.classifier_downsample,
        )

    # ----------------------------------------------------------------- labels

    def _check_targets(self, y: Any, n: int) -> torch.Tensor:
        if self._regression:
            values = check_values(y, n, self.output_dim, allow_unlabelled=True)
            labelled = values[~torch.isnan(values[:, 0])]
            if len(labelled) < 2:
                raise ValueError(f"y has {len(labelled)} labelled rows (not NaN); at least 2 are needed")
            std = labelled.std(dim=0)
            mean, std = labelled.mean(dim=0), torch.where(std > 0, std, torch.ones_like(std))
            self._fit_context.update(target_scaling=(mean, std), label_boost=n / len(labelled))
            return (values - mean) / std
        labels = check_class_labels(y, n, self.output_dim, allow_unlabelled=True)
        if not (labels >= 0).any():
            raise ValueError("y has no labelled patch (all are -1); label at least one per class")
        self._fit_context["label_boost"] = n / int((labels >= 0).sum())
        return labels

    def _after_fit(self, targets: torch.Tensor) -> None:
        if self._regression:
            mean, std = self._fit_context["target_scaling"]
            self.network_.target_mean.copy_(mean)
            self.network_.target_std.copy_(std)

    # ----------------------------------------------------------------- loss

    @property
    def _supervised_weight(self) -> float:
        # As if every patch were labelled: the few labelled ones (a few per batch, or none) would
        # otherwise be outweighed by the unlabelled ones' pull towards whichever class
        # reconstructs best; the same balance as cycling through the labelled set once per
        # pass over the unlabelled one.
        return self.classifier_weight * self._fit_context["label_boost"]

    def _paired_loss_terms(self, network, x, y, noise) -> dict[str, torch.Tensor]:
        n = len(x)
        out = network.classify(x)
        if self._regression:
            labelled = ~torch.isnan(y[:, 0])
            return self._regression_terms(network, x, y, out, labelled, noise, n)
        labelled = y >= 0
        k = self.output_dim
        lab = self._elbo_rows(network, x[labelled], F.one_hot(y[labelled], k).to(x.dtype), noise)
        unl_x = x[~labelled]
        classes = torch.eye(k, device=x.device, dtype=x.dtype).repeat(len(unl_x), 1)
        unl = self._elbo_rows(network, unl_x, classes, noise, repeats=k)
        log_q = F.log_softmax(out[~labelled], dim=-1)
        q = log_q.exp()
        terms = {name: (lab[name].sum() + (q * unl[name].view(-1, k)).sum()) / n for name in lab}
        terms["kl_class"] = (q * (log_q + math.log(k))).sum() / n
        terms["classification"] = (
            self._supervised_weight * F.cross_entropy(out[labelled], y[labelled], reduction="sum") / n
        )
        return terms

    def _regression_terms(self, network, x, y, out, labelled, noise, n) -> dict[str, torch.Tensor]:
        mean, log_var = out.chunk(2, dim=-1)
        lab = self._elbo_rows(network, x[labelled], y[labelled], noise)
        m, lv = mean[~labelled], log_var[~labelled]
        eps = torch.randn(m.shape, generator=noise, device=m.device, dtype=m.dtype)
        unl = self._elbo_rows(network, x[~labelled], m + eps * torch.exp(0.5 * lv), noise)
        terms = {name: (lab[name].sum() + unl[name].sum()) / n for name in lab}
        terms["kl_target"] = gaussian_kl(m, lv).sum() / n
        nll = 0.5 * (log_var[labelled] + (y[labelled] - mean[labelled]).square() / log_var[labelled].exp())
        terms["regression"] = self._supervised_weight * nll.sum() / n
        return terms

    # ----------------------------------------------------------------- use

    def _classifier_output(self, X: Any, batch_size: int) -> torch.Tensor:
        self._check_fitted()
        x = self._check_patches(X, min_samples=0)
        width = 2 * self.output_dim if self._regression else self.output_dim
        out = torch.empty(len(x), width)
        with torch.inference_mode():
            for first in range(0, len(x), batch_size):
                batch = self._normalise(x[first : first + batch_size].to(self.device))
                out[first : first + batch_size] = self.network_.classify(batch).cpu()
        return out

    def predict_proba(self, X: Any, *, batch_size: int = 1024) -> np.ndarray:
        """Class probabilities ``q(y | x)`` of patches ``X``: ``N x output_dim`` (classification)."""
        if self._regression:
            raise ValueError("predict_proba is for task='classification'; use predict for regression")
        return torch.softmax(self._classifier_output(X, batch_size), dim=-1).numpy()

    def predict(self, X: Any, *, batch_size: int = 1024) -> np.ndarray:
        """Most probable class per patch (``N`` int64), or for regression the mean of
        ``q(y | x)`` in the units of ``y`` (``N x output_dim`` float32)."""
        out = self._classifier_output(X, batch_size)
        if not self._regression:
            return out.argmax(dim=-1).numpy()
        mean = out[:, : self.output_dim]
        return (mean * self.network_.target_std.cpu() + self.network_.target_mean.cpu()).numpy()

    def decode(self, z: Any, y: Any = None, *, batch_size: int = 1024) -> np.ndarray:
        """Mean patches for latents ``z`` (``n x k`` content only, or ``n x n_latents``) drawn as
        class (or value) ``y`` (``n`` labels, or ``n`` / ``n x output_dim`` values):
        ``n x C x h x w`` (``n x h x w`` for 2-d ``input_shape``)."""
        self._check_fitted()
        latents = self._decoder_latents(z)
        if self._regression:
            values = check_values(y, len(latents), self.output_dim, allow_unlabelled=False)
            c = (values - self.network_.target_mean.cpu()) / self.network_.target_std.cpu()
        else:
            c = F.one_hot(
                check_class_labels(y, len(latents), self.output_dim, allow_unlabelled=False), self.output_dim
            ).to(torch.float32)
        return self._decode_conditioned(latents, c, batch_size)
