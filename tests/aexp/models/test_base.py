"""Bad input to any model: errors that name the problem, and nothing half-done."""

import inspect
import math
from dataclasses import field

import numpy as np
import pytest
import torch

from aexp.models import (
    CVAE,
    EMBEDDERS,
    JRVAE,
    JVAE,
    RVAE,
    SSVAE,
    VAE,
    VED,
    AffineVAE,
    ShiftVAE,
    SkipRVAE,
    make_embedder,
)
from aexp.models.base import BaseVAE, Hyperparameters, check_positive, grid_transform

SHAPE = (8, 8)


def _small(kind):
    return make_embedder(kind, input_shape=SHAPE, hidden=4, decoder_layers=0, encoder_hidden=8)


@pytest.mark.parametrize("kind", sorted(EMBEDDERS))
@pytest.mark.parametrize(
    "X, match",
    [
        (np.zeros((4, 8, 9)), r"shape \(N, 8, 8\)"),
        (np.zeros((4, 64)), r"shape \(N, 8, 8\)"),
        (np.zeros((4, 8, 8), dtype=complex), "complex"),
        (np.array([["a"] * 8] * 8 * 4).reshape(4, 8, 8), "real numbers"),
        (np.where(np.arange(256).reshape(4, 8, 8) == 70, np.nan, 0.0), r"NaN or inf in 1 of 4 rows \(first: row 1\)"),
        (np.zeros((1, 8, 8)), "at least 2"),
    ],
)
def test_bad_training_data_is_refused_by_every_model(kind, X, match):
    model = _small(kind)
    with pytest.raises(ValueError, match=match):
        model.fit(X, epochs=1, progress=False)
    assert not hasattr(model, "network_")


@pytest.mark.parametrize(
    "y, match", [(np.zeros(3), r"one label per patch: shape \(4,\)"), (np.array(["a"] * 4), "numbers")]
)
def test_labels_that_do_not_match_are_refused(y, match):
    with pytest.raises(ValueError, match=match):
        _small("rvae").fit(np.random.default_rng(0).random((4, 8, 8)), y, epochs=1, progress=False)


def test_labels_of_the_right_length_are_accepted():
    X = np.random.default_rng(0).random((4, 8, 8))
    _small("vae").fit(X, np.arange(4), epochs=1, progress=False)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "rvae.pt"
    X = np.random.default_rng(0).random((6, 8, 8)).astype(np.float32)
    _small("rvae").fit(X, epochs=1, progress=False).save(path)
    return path


@pytest.mark.parametrize("cls", [VAE, AffineVAE, JRVAE])
def test_checkpoint_of_another_model_type_is_named(saved, cls):
    with pytest.raises(ValueError, match=f"holds a RVAE, not a {cls.__name__}"):
        cls.load(saved)


def test_checkpoint_of_another_version_or_format(saved, tmp_path):
    checkpoint = torch.load(saved, weights_only=True)
    checkpoint["version"] = 99
    torch.save(checkpoint, tmp_path / "v99.pt")
    with pytest.raises(ValueError, match="version 99 is not supported"):
        RVAE.load(tmp_path / "v99.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an aexp model checkpoint"):
        RVAE.load(tmp_path / "other.pt")


def test_checkpoints_hold_no_optimiser_and_load_weights_only(saved):
    checkpoint = torch.load(saved, weights_only=True)
    assert set(checkpoint) == {"format", "version", "model", "config", "state_dict", "data_min", "data_range", "history"}
    assert not any("optim" in key or "exp_avg" in key for key in checkpoint["state_dict"])


def test_decode_checks_its_latents():
    X = np.random.default_rng(0).random((6, 8, 8))
    model = _small("affine").fit(X, epochs=1, progress=False)
    with pytest.raises(ValueError, match="2-d array"):
        model.decode(np.zeros(4))
    with pytest.raises(ValueError, match="angle, dx, dy, shear, z1, z2"):
        model.decode(np.zeros((1, 5)))
    with pytest.raises(ValueError, match="NaN"):
        model.decode(np.full((1, 6), np.nan))


def test_grid_transform_composes_rotation_shear_scale_shift_in_order():
    names = ["angle", "dx", "dy", "scale", "shear"]
    latents = torch.tensor([[0.7, 1.0, -2.0, math.log(1.3), 0.25, 5.0]], dtype=torch.double)
    out = grid_transform(latents, names)
    c, s = math.cos(0.7), math.sin(0.7)
    expected = torch.tensor([[c, -s], [s, c]], dtype=torch.double) @ torch.tensor(
        [[1.0, 0.25], [0.0, 1.0]], dtype=torch.double
    ) / 1.3
    torch.testing.assert_close(out["matrix"][0], expected)
    torch.testing.assert_close(out["shift"][0], torch.tensor([0.1, -0.2], dtype=torch.double))
    rotation_only = grid_transform(latents[:, :3], ["angle", "dx", "dy"])
    assert "matrix" not in rotation_only and rotation_only["angle"].item() == pytest.approx(0.7)
    assert grid_transform(latents[:, 5:], []) == {}


def _fitted_for_round_trip(name):
    """A tiny fitted model of every kind, built with tuple hyper-parameters."""
    rng = np.random.default_rng(0)
    X = rng.random((6, 8, 8)).astype(np.float32)
    small = dict(hidden=4, encoder_hidden=8)
    if name in EMBEDDERS:
        model = make_embedder(name, input_shape=SHAPE, decoder_layers=0, **small)
        return model.fit(X, epochs=1, progress=False)
    if name == "ssvae":
        return SSVAE(SHAPE, rotation=True, decoder_layers=0, **small).fit(
            X, np.array([0, 1, -1, -1, -1, -1]), epochs=1, progress=False
        )
    if name == "cvae":
        return CVAE(SHAPE, **small).fit(X, np.array([0, 1, 0, 1, 0, 1]), epochs=1, progress=False)
    if name == "ved":
        return VED(SHAPE, (5,), **small).fit(X, rng.random((6, 5)), epochs=1, progress=False)
    return ShiftVAE((16,), **small).fit(rng.random((6, 16)), epochs=1, progress=False)


@pytest.mark.parametrize("name", [*sorted(EMBEDDERS), "ssvae", "cvae", "ved", "shiftvae"])
def test_save_load_keeps_every_hyperparameter_as_given(name, tmp_path):
    model = _fitted_for_round_trip(name)
    model.save(tmp_path / "m.pt")
    loaded = type(model).load(tmp_path / "m.pt")
    params = loaded.get_params()
    assert params == model.get_params()
    assert {k: type(v) for k, v in params.items()} == {k: type(v) for k, v in model.get_params().items()}
    assert isinstance(params["input_shape"], tuple)
    assert repr(loaded) == repr(model)


def test_save_load_keeps_lists_lists_and_turns_numpy_values_into_python_ones(tmp_path):
    X = np.random.default_rng(0).random((6, 8, 8))
    model = RVAE(input_shape=np.array([8, 8]), latent_dim=np.int64(2), hidden=4, decoder_layers=0)
    model.fit(X, epochs=1, progress=False).save(tmp_path / "a.pt")
    params = RVAE.load(tmp_path / "a.pt").get_params()
    assert params["input_shape"] == [8, 8] and type(params["input_shape"][0]) is int
    assert params["latent_dim"] == 2 and type(params["latent_dim"]) is int
    listed = RVAE(input_shape=[8, 8], hidden=4, decoder_layers=0).fit(X, epochs=1, progress=False)
    listed.save(tmp_path / "b.pt")
    assert RVAE.load(tmp_path / "b.pt").input_shape == [8, 8]


def test_encoders_start_with_a_narrow_log_variance_and_refuse_another_last_layer():
    from torch import nn

    from aexp.models.base import ConvEncoder, MLPEncoder, start_log_var

    def built(make, initial_log_var):
        torch.manual_seed(0)
        return make(initial_log_var).body[-1].bias.detach()

    for make in (lambda v: MLPEncoder(64, 16, 2, initial_log_var=v),
                 lambda v: ConvEncoder((1, 8, 8), 16, 2, initial_log_var=v)):
        shift = built(make, -3.0) - built(make, 0.0)  # same seed, same weights: only the start differs
        assert shift.tolist() == pytest.approx([0.0, 0.0, -3.0, -3.0])
    with pytest.raises(TypeError, match="must end in a Linear layer with bias and 4 outputs"):
        start_log_var(nn.Sequential(nn.Linear(4, 4), nn.Tanh()), 2, -3.0)


@pytest.mark.parametrize("name", [*sorted(EMBEDDERS), "ssvae", "cvae", "ved", "shiftvae"])
def test_training_settings_are_constructor_parameters_that_fit_may_override(name):
    model = _fitted_for_round_trip(name)  # trained with fit(..., epochs=1)
    params = model.get_params()
    assert {k: params[k] for k in ("epochs", "batch_size", "lr", "seed")} == {
        "epochs": 20, "batch_size": 128, "lr": 3e-3, "seed": 0}  # fit's keyword overrode, not changed them
    assert len(model.history_["loss"]) == 1
    again = type(model)(**{**params, "epochs": 2, "seed": 5})
    assert again.get_params()["epochs"] == 2 and again.get_params()["seed"] == 5


def test_fit_with_the_constructors_settings_is_fit_with_the_same_keywords():
    X = np.random.default_rng(0).random((12, 8, 8))
    small = dict(hidden=4, decoder_layers=0, encoder_hidden=8)
    built = RVAE(SHAPE, **small, epochs=2, batch_size=5, lr=1e-2, seed=3).fit(X, progress=False)
    given = RVAE(SHAPE, **small).fit(X, epochs=2, batch_size=5, lr=1e-2, seed=3, progress=False)
    np.testing.assert_array_equal(built.encode(X), given.encode(X))
    assert len(built.history_["loss"]) == 2
    with pytest.raises(ValueError, match="epochs"):
        RVAE(SHAPE, **small, epochs=0).fit(X, progress=False)


def test_a_checkpoint_saved_before_the_training_settings_were_parameters_loads(tmp_path):
    X = np.random.default_rng(0).random((6, 8, 8))
    model = RVAE(SHAPE, hidden=4, decoder_layers=0, epochs=1).fit(X, progress=False)
    model.save(tmp_path / "m.pt")
    checkpoint = torch.load(tmp_path / "m.pt", weights_only=True)
    for key in ("epochs", "batch_size", "lr", "seed"):
        del checkpoint["config"][key]
    torch.save(checkpoint, tmp_path / "old.pt")
    loaded = RVAE.load(tmp_path / "old.pt")
    assert loaded.get_params()["epochs"] == 20
    np.testing.assert_array_equal(loaded.encode(X), model.encode(X))


# ----------------------------------------------------------------- hyper-parameters as fields

_COMMON = dict(latent_dim=2, likelihood="gaussian", noise_std=0.1, device="cpu",
               epochs=20, batch_size=128, lr=3e-3, seed=0, encoder_hidden=128)
_ROTATION = dict(translation=True, rotation_prior=math.pi / 3, translation_prior=0.1, scale=False, scale_prior=0.2)
_RVAE = dict(hidden=32, decoder_layers=2, encoder="mlp", orientation=False, equivariance=0.0,
             rotation_prior_warmup=0, coordinate_scale=1.0, shift_equivariance=0.0, **_ROTATION)
_JVAE = dict(hidden=32, decoder_layers=2, encoder="mlp", n_classes=2, discrete="gumbel", temperature=(1.0, 0.67),
             capacity_epochs=10, capacity_gamma=50.0, balance_gamma=200.0)
_PAIRED = dict(hidden=128, decoder_layers=2, rotation=False, translation=False, rotation_prior=math.pi / 3,
               translation_prior=0.1)
DEFAULTS = {  # every constructor's keywords and defaults, as they were when each model wrote its own __init__
    VAE: dict(hidden=32, decoder_layers=2, encoder="mlp", coordinate_scale=1.0),
    RVAE: _RVAE,
    SkipRVAE: _RVAE,
    AffineVAE: dict(_RVAE, shear_prior=0.3),
    JVAE: _JVAE,
    JRVAE: dict(_JVAE, **_ROTATION),
    SSVAE: dict(_PAIRED, output_dim=2, task="classification", classifier_weight=20.0, classifier="mlp",
                renderer="coordinate", align_classifier=False, classifier_downsample=1),
    CVAE: dict(_PAIRED, condition="class", condition_dim=2),
    ShiftVAE: dict(hidden=32, decoder_layers=2, shift_prior=0.3),
    VED: dict(hidden=128),
}


@pytest.mark.parametrize("cls", DEFAULTS, ids=lambda cls: cls.__name__)
def test_each_constructor_keeps_its_keywords_and_defaults_and_get_params_lists_them_all(cls):
    model = cls(SHAPE, (5,)) if cls is VED else cls(SHAPE)
    positional = {"input_shape": SHAPE} | ({"output_shape": (5,)} if cls is VED else {})
    assert model.get_params() == positional | _COMMON | DEFAULTS[cls]
    parameters = inspect.signature(cls).parameters
    assert list(parameters) == cls._parameter_names()  # no learned state (network_, history_...) among them
    assert [p.name for p in parameters.values() if p.kind is p.POSITIONAL_OR_KEYWORD] == list(positional)
    with pytest.raises(TypeError, match="positional"):  # everything after the shapes is a keyword
        cls(SHAPE, (5,), 2) if cls is VED else cls(SHAPE, 2)
    assert not hasattr(model, "network_") and not hasattr(model, "history_")


def test_models_compare_and_hash_by_identity_as_before_they_were_dataclasses():
    a, b = RVAE(SHAPE), RVAE(SHAPE)
    assert a == a and a != b and len({a, b}) == 2


def test_a_subclass_declares_only_what_it_adds_or_changes(tmp_path):
    class WideRVAE(RVAE):
        hidden: int = 6  # a new default for an inherited hyper-parameter
        extra_prior: float = 0.5  # a new hyper-parameter

        def _validate_hyperparameters(self) -> None:
            super()._validate_hyperparameters()
            check_positive("extra_prior", self.extra_prior)

    model = WideRVAE(SHAPE, decoder_layers=0, encoder_hidden=8)
    assert model.get_params() == RVAE(SHAPE, decoder_layers=0, encoder_hidden=8).get_params() | {
        "hidden": 6, "extra_prior": 0.5}
    assert repr(model).startswith("WideRVAE(input_shape=(8, 8), latent_dim=2,") and "extra_prior=0.5)" in repr(model)
    X = np.random.default_rng(0).random((6, 8, 8))
    with pytest.raises(ValueError, match="extra_prior must be a finite number > 0; got -1"):
        WideRVAE(SHAPE, extra_prior=-1).fit(X, epochs=1, progress=False)
    model.fit(X, epochs=1, progress=False).save(tmp_path / "wide.pt")
    loaded = WideRVAE.load(tmp_path / "wide.pt")
    assert loaded.get_params() == model.get_params()
    np.testing.assert_array_equal(loaded.encode(X), model.encode(X))


def test_hyperparameters_make_any_subclass_a_keyword_only_dataclass():
    class Toy(Hyperparameters):
        size: int = field(kw_only=False)
        rate: float = 0.1

    assert repr(Toy(3, rate=0.5)) == "Toy(size=3, rate=0.5)" and Toy(3).get_params() == {"size": 3, "rate": 0.1}
    with pytest.raises(TypeError):
        Toy(3, 0.5)


def test_each_hyperparameter_is_declared_once_in_the_class_that_introduces_it():
    import aexp.models as package
    from aexp.models import _conditional, base, rvae

    classes = {cls for module in (package, base, rvae, _conditional) for cls in vars(module).values()
               if isinstance(cls, type) and issubclass(cls, BaseVAE)}
    assert {VAE, SSVAE, VED, _conditional.GeometricPairedVAE, rvae.RotationLatents} <= classes
    redeclared = set()
    for cls in classes:
        inherited = {name for klass in cls.__mro__[1:] for name in getattr(klass, "__dataclass_fields__", {})}
        redeclared |= {(cls.__name__, name) for name in vars(cls).get("__annotations__", {}) if name in inherited}
    # the one deliberate override: a wider default decoder; network_ only narrows its type
    assert {pair for pair in redeclared if pair[1] != "network_"} == {("GeometricPairedVAE", "hidden")}


def _negative_log_joint(model, X, z):
    """What ``encode(refine=...)`` lowers: reconstruction + the latents' Gaussian prior terms."""
    x = model._normalise(torch.as_tensor(X, dtype=torch.float32)[:, None])
    latents = torch.as_tensor(z)
    with torch.no_grad():
        loss = model._reconstruction(model.network_.decode(model._full_latents(latents)), x).sum()
        for _, columns, prior_std in model._latent_priors():
            loss += 0.5 * (latents[:, columns] / prior_std).square().sum()
    return float(loss)


@pytest.mark.parametrize("cls", [VAE, RVAE])
def test_refined_latents_are_more_probable_deterministic_and_leave_the_model_as_it_was(cls):
    rng = np.random.default_rng(0)
    X = rng.random((32, 8, 8)).astype(np.float32)
    model = cls(input_shape=SHAPE, hidden=4, decoder_layers=0, encoder_hidden=8).fit(X, epochs=2, seed=0,
                                                                                    progress=False)
    weights = {k: v.clone() for k, v in model.network_.state_dict().items()}
    grads = [None if p.grad is None else p.grad.clone() for p in model.network_.parameters()]
    plain = model.encode(X)
    refined = model.encode(X, refine=20, batch_size=10)
    assert refined.shape == plain.shape and refined.dtype == np.float32
    assert _negative_log_joint(model, X, refined) < _negative_log_joint(model, X, plain)
    np.testing.assert_array_equal(model.encode(X, refine=20, batch_size=10), refined)
    np.testing.assert_array_equal(model.encode(X), plain)
    for k, v in model.network_.state_dict().items():
        assert torch.equal(v, weights[k]), k
    for p, g in zip(model.network_.parameters(), grads):  # nothing accumulated into the weights' grads
        assert (p.grad is None and g is None) or torch.equal(p.grad, g)


def test_refine_is_checked_and_refused_where_there_is_no_gaussian_posterior():
    X = np.random.default_rng(0).random((8, 8, 8)).astype(np.float32)
    model = VAE(input_shape=SHAPE, hidden=4, decoder_layers=0, encoder_hidden=8).fit(X, epochs=1, progress=False)
    with pytest.raises(ValueError, match="refine must be"):
        model.encode(X, refine=-1)
    with pytest.raises(ValueError, match="refine_lr must be"):
        model.encode(X, refine=1, refine_lr=0.0)
    joint = JVAE(input_shape=SHAPE, hidden=4, decoder_layers=0, encoder_hidden=8).fit(X, epochs=1, progress=False)
    with pytest.raises(ValueError, match="refine: JVAE"):
        joint.encode(X, refine=5)
    np.testing.assert_array_equal(joint.encode(X, refine=0), joint.encode(X))
