import numpy as np
import pytest

from aexp.config import KINDS, EmbedderPipeline, JRVAEEmbedderConfig, RVAEEmbedderConfig, parse_section
from aexp.features import embed_candidates
from aexp.models import EMBEDDERS, JRVAE, VAE, AffineVAE, build_embedder, make_embedder
from aexp.patches import grid_candidates
from aexp.types import PixelTransform, Survey


def test_make_embedder_builds_each_kind_and_refuses_options_it_does_not_take():
    assert sorted(EMBEDDERS) == ["affine", "jrvae", "jvae", "rvae", "skiprvae", "vae"]
    vae = make_embedder("vae", input_shape=(8, 8), latent_dim=3)
    assert isinstance(vae, VAE) and vae.latent_dim == 3 and not hasattr(vae, "rotation_prior")
    with pytest.raises(ValueError, match="'vae' .*takes no n_classes, rotation_prior"):
        make_embedder("vae", input_shape=(8, 8), latent_dim=3, rotation_prior=1.0, n_classes=4)
    assert isinstance(make_embedder("affine", input_shape=(8, 8)), AffineVAE)
    assert make_embedder("jrvae", input_shape=(8, 8), n_classes=5).n_classes == 5
    with pytest.raises(ValueError, match="'pca' is not one of"):
        make_embedder("pca", input_shape=(8, 8))


def test_the_configs_embedder_kinds_are_the_registrys_and_each_maps_onto_its_constructor():
    kinds = KINDS["embedder"].members
    assert set(kinds) == set(EMBEDDERS) | {"none"}
    # every constructor argument that some kind's section sets is a field of each kind whose model takes it
    settable = {f for cls in kinds.values() for f in cls.model_fields} - set(EmbedderPipeline.model_fields)
    for kind, model in EMBEDDERS.items():
        section = kinds[kind]()
        options = section.model_options()
        assert set(options) == settable & set(model._parameter_names()), kind
        built = build_embedder(section, input_shape=(8, 8), seed=7)
        assert type(built) is model and {k: built.get_params()[k] for k in options} == options
        assert {"epochs", "batch_size", "lr"} <= set(options) and built.get_params()["seed"] == 7


@pytest.mark.parametrize("kind, all_dim, content_dim", [("vae", 2, 2), ("affine", 6, 2), ("jrvae", 9, 6), ("skiprvae", 5, 2)])
def test_every_kind_works_as_the_loops_embedder(kind, all_dim, content_dim):
    img = np.random.default_rng(0).normal(size=(1, 12, 12)).astype(np.float32)
    candidates = grid_candidates(Survey(img, PixelTransform.square(1e-9), ("haadf",)), 2, 4)
    for features, dim in (("all", all_dim), ("content", content_dim)):
        cfg = parse_section("embedder", dict(kind=kind, epochs=1, hidden=4, n_classes=4, features=features))
        f, info = embed_candidates(candidates, cfg, seed=0, progress=False)
        assert f.shape == (36, dim) and info["kind"] == kind and info["dim"] == dim
        assert np.all(np.isfinite(f))


def test_config_rejects_unknown_kind_and_too_few_classes():
    with pytest.raises(ValueError, match="kind"):
        parse_section("embedder", {"kind": "pca"})
    with pytest.raises(ValueError, match="n_classes"):
        JRVAEEmbedderConfig(n_classes=1)
    assert JRVAEEmbedderConfig().n_classes == 4 and JRVAE(input_shape=(4, 4)).n_classes == 2


def test_decoder_layers_reach_the_model():
    img = np.random.default_rng(0).normal(size=(1, 12, 12)).astype(np.float32)
    candidates = grid_candidates(Survey(img, PixelTransform.square(1e-9), ("haadf",)), 2, 4)
    cfg = RVAEEmbedderConfig(epochs=1, hidden=4, decoder_layers=0)
    _, info = embed_candidates(candidates, cfg, seed=0, progress=False)
    one = RVAEEmbedderConfig(epochs=1, hidden=4, decoder_layers=1)
    _, info_one = embed_candidates(candidates, one, seed=0, progress=False)
    assert info["final_loss"]["loss"] != info_one["final_loss"]["loss"]
    with pytest.raises(ValueError, match="decoder_layers"):
        RVAEEmbedderConfig(decoder_layers=-1)
