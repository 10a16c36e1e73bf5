"""Disentanglement metrics on synthetic codes with known answers, and the dSprites loader."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flowvae.data import DSpritesData, ImageData, load_dataset, load_dsprites, shared_data_dir, subset_indices
from flowvae.data.dsprites import DSPRITES_FILES, FULL_FACTOR_SIZES, GRID_FACTOR_SIZES
from flowvae.errors import DataError
from flowvae.evaluation.disentanglement import (
    GroundTruthData,
    beta_vae_score,
    beta_vae_score_from_codes,
    dci,
    dci_from_importance,
    factor_vae_score,
    factor_vae_score_from_codes,
    histogram_discretize,
    mig,
    sample_codes,
    sap_score,
)

# --------------------------------------------------------------------------------------
# Synthetic codes
# --------------------------------------------------------------------------------------

SIZES = (3, 4, 5)
N = 1500


@pytest.fixture(scope="module")
def synthetic() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    factors = np.stack([rng.integers(0, s, N) for s in SIZES], axis=1)
    std = (factors - factors.mean(0)) / factors.std(0)
    noise = 0.01 * rng.normal(size=(N, 3))
    # Perfect: a permuted, rescaled identity (code 0 <- factor 2, code 1 <- factor 0, code 2 <- factor 1).
    perfect = std[:, [2, 0, 1]] * np.array([2.0, 0.5, 3.0]) + noise
    # Entangled: factors 0 and 1 mixed by a 45 degree rotation, factor 2 kept.
    c, s = np.cos(np.pi / 4), np.sin(np.pi / 4)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    entangled = std @ rot.T + noise
    return {
        "factors": factors,
        "perfect": perfect,
        "random": rng.normal(size=(N, 3)),
        "entangled": entangled,
    }


def test_histogram_discretize_matches_reference_rule() -> None:
    x = np.array([[0.0, 5.0], [1.0, 5.0], [2.0, 5.0], [10.0, 5.0]])
    out = histogram_discretize(x, num_bins=5)
    assert out.dtype == np.int64 and out.shape == (4, 2)
    assert out[:, 0].tolist() == [1, 1, 2, 5]  # bins of width 2 over [0, 10]; the maximum falls in the last
    assert len(np.unique(out[:, 1])) == 1  # a constant dimension is one bin


def test_mig_known_answers(synthetic) -> None:
    f = synthetic["factors"]
    perfect = mig(synthetic["perfect"], f, num_train=1000)
    random = mig(synthetic["random"], f, num_train=1000)
    entangled = mig(synthetic["entangled"], f, num_train=1000)
    assert perfect["discrete_mig"] > 0.95
    assert random["discrete_mig"] < 0.05
    assert entangled["discrete_mig"] < perfect["discrete_mig"] - 0.4
    # The mixed factors lose their gap, the untouched one keeps it.
    assert entangled["mig_per_factor"][2] > 0.95 and entangled["mig_per_factor"][:2].max() < 0.3
    assert perfect["mutual_info"].shape == (3, 3) and perfect["factor_entropy"].shape == (3,)
    np.testing.assert_allclose(perfect["factor_entropy"], np.log(SIZES), atol=0.02)
    assert perfect["num_points"] == 1000
    # Torch input, all rows, and determinism.
    t = mig(torch.from_numpy(synthetic["perfect"]), torch.from_numpy(f), num_train=None)
    assert t["num_points"] == N and t["discrete_mig"] > 0.95
    again = mig(synthetic["random"], f, num_train=1000, seed=3)
    assert again["discrete_mig"] == mig(synthetic["random"], f, num_train=1000, seed=3)["discrete_mig"]


def test_dci_known_answers(synthetic) -> None:
    f = synthetic["factors"]
    perfect = dci(synthetic["perfect"], f, num_train=600, num_test=300, gbt_kwargs={"n_estimators": 30})
    assert perfect["disentanglement"] > 0.95 and perfect["completeness"] > 0.95
    assert perfect["informativeness_test"] > 0.98 and perfect["informativeness_train"] > 0.98
    imp = perfect["importance_matrix"]
    assert imp.shape == (3, 3) and imp.argmax(axis=0).tolist() == [1, 2, 0]
    random = dci(synthetic["random"], f, num_train=600, num_test=300, gbt_kwargs={"n_estimators": 30})
    assert random["disentanglement"] < 0.1 and random["completeness"] < 0.1
    assert random["informativeness_test"] < 0.4
    entangled = dci(synthetic["entangled"], f, num_train=600, num_test=300, gbt_kwargs={"n_estimators": 30})
    assert entangled["disentanglement"] < perfect["disentanglement"] - 0.2


def test_dci_from_importance_extremes() -> None:
    assert dci_from_importance(np.eye(3)) == pytest.approx({"disentanglement": 1.0, "completeness": 1.0}, abs=1e-6)
    uniform = dci_from_importance(np.ones((4, 3)))
    assert uniform == pytest.approx({"disentanglement": 0.0, "completeness": 0.0}, abs=1e-6)
    # Two codes for one factor: disentangled codes, incomplete factor.
    split = dci_from_importance(np.array([[0.5, 0.0], [0.5, 0.0], [0.0, 1.0]]))
    assert split["disentanglement"] == pytest.approx(1.0, abs=1e-6)
    assert split["completeness"] < 0.8
    assert dci_from_importance(np.zeros((2, 2)))["disentanglement"] == pytest.approx(0.0, abs=1e-6)


def test_sap_known_answers(synthetic) -> None:
    f = synthetic["factors"]
    perfect = sap_score(synthetic["perfect"], f, num_train=600, num_test=300)
    random = sap_score(synthetic["random"], f, num_train=600, num_test=300)
    assert perfect["score_matrix"].shape == (3, 3)
    assert perfect["SAP_score"] > 0.4 and random["SAP_score"] < 0.05
    cont = sap_score(synthetic["perfect"], f, num_train=600, num_test=300, continuous_factors=True)
    assert cont["SAP_score"] > 0.95
    cont_random = sap_score(synthetic["random"], f, num_train=600, num_test=300, continuous_factors=True)
    assert cont_random["SAP_score"] < 0.05
    cont_ent = sap_score(synthetic["entangled"], f, num_train=600, num_test=300, continuous_factors=True)
    assert cont_ent["SAP_score"] < cont["SAP_score"] - 0.4


def test_factor_vae_from_codes_known_answers(synthetic) -> None:
    f = synthetic["factors"]
    kw = dict(num_train=300, num_eval=200, num_variance_estimate=1000)
    perfect = factor_vae_score_from_codes(synthetic["perfect"], f, **kw)
    assert perfect["train_accuracy"] == 1.0 and perfect["eval_accuracy"] == 1.0
    assert perfect["num_active_dims"] == 3 == perfect["num_dims"]
    random = factor_vae_score_from_codes(synthetic["random"], f, **kw)
    assert random["eval_accuracy"] < 0.5  # chance is 1/3
    # A dimension below the pruning threshold is ignored; all dims below -> all zeros.
    tiny = factor_vae_score_from_codes(np.c_[synthetic["perfect"], np.zeros(N)], f, **kw)
    assert tiny["num_active_dims"] == 3 and tiny["num_dims"] == 4 and tiny["eval_accuracy"] == 1.0
    dead = factor_vae_score_from_codes(1e-3 * synthetic["random"], f, **kw)
    assert dead == {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0, "num_dims": 3}


def test_beta_vae_from_codes_known_answers(synthetic) -> None:
    f = synthetic["factors"]
    perfect = beta_vae_score_from_codes(synthetic["perfect"], f, num_train=300, num_eval=200)
    assert perfect["eval_accuracy"] > 0.97 and perfect["train_accuracy"] > 0.97
    random = beta_vae_score_from_codes(synthetic["random"], f, num_train=300, num_eval=200)
    assert random["eval_accuracy"] < 0.5
    entangled = beta_vae_score_from_codes(synthetic["entangled"], f, num_train=300, num_eval=200)
    assert entangled["eval_accuracy"] < perfect["eval_accuracy"] - 0.15


class ToyGrid:
    """A ground-truth dataset whose 'images' are the factor tuples themselves (as floats)."""

    factor_sizes = SIZES

    def sample_factors(self, n: int, rng: np.random.Generator) -> np.ndarray:
        return np.stack([rng.integers(0, s, n) for s in self.factor_sizes], axis=1)

    def images_from_factors(self, factors: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(factors), dtype=torch.float64)


def _perfect_rep(x: torch.Tensor) -> torch.Tensor:
    return x[:, [2, 0, 1]] * torch.tensor([2.0, 0.5, 3.0], dtype=torch.float64)


def _random_rep(x: torch.Tensor) -> np.ndarray:
    return np.random.default_rng(int(x.sum())).normal(size=(len(x), 3))


def test_generative_protocol_scores() -> None:
    data = ToyGrid()
    assert isinstance(data, GroundTruthData)
    fv = factor_vae_score(_perfect_rep, data, num_train=200, num_eval=100, num_variance_estimate=500)
    assert fv["eval_accuracy"] == 1.0 and fv["train_accuracy"] == 1.0 and fv["num_active_dims"] == 3
    fv_random = factor_vae_score(_random_rep, data, num_train=200, num_eval=100, num_variance_estimate=500)
    assert fv_random["eval_accuracy"] < 0.5
    bv = beta_vae_score(_perfect_rep, data, num_train=200, num_eval=100)
    assert bv["eval_accuracy"] > 0.97
    bv_random = beta_vae_score(_random_rep, data, num_train=200, num_eval=100)
    assert bv_random["eval_accuracy"] < 0.55
    assert fv == factor_vae_score(_perfect_rep, data, num_train=200, num_eval=100, num_variance_estimate=500)

    codes, factors = sample_codes(_perfect_rep, data, 1000, seed=1, batch_size=16)
    assert codes.shape == (1000, 3) and factors.shape == (1000, 3) and factors.dtype == np.int64
    np.testing.assert_allclose(codes, _perfect_rep(torch.from_numpy(factors).double()).numpy())
    assert mig(codes, factors, num_train=1000)["discrete_mig"] > 0.95


def test_metric_input_errors(synthetic) -> None:
    c, f = synthetic["perfect"], synthetic["factors"]
    with pytest.raises(ValueError, match="rows"):
        mig(c[:10], f, num_train=None)
    with pytest.raises(ValueError, match=r"2-D array \[N, d\]"):
        mig(c[:, 0], f, num_train=None)
    with pytest.raises(ValueError, match="at least 2 code dimensions"):
        mig(c[:, :1], f, num_train=None)
    with pytest.raises(ValueError, match="integer class indices"):
        mig(c, f + 0.5, num_train=None)
    with pytest.raises(ValueError, match="num_train=2000 needs 2000 rows but only 1500"):
        mig(c, f, num_train=2000)
    with pytest.raises(ValueError, match="single value"):
        mig(c, np.c_[f, np.zeros(N, dtype=int)], num_train=None)
    with pytest.raises(ValueError, match="NaN"):
        mig(np.full((N, 3), np.nan), f, num_train=None)
    with pytest.raises(ValueError, match=r"num_train=1000 \+ num_test=600"):
        dci(c, f, num_train=1000, num_test=600)
    with pytest.raises(ValueError, match="2 factors"):
        dci(c, f[:, :1], num_train=100, num_test=50)
    with pytest.raises(ValueError, match="batch_size"):
        factor_vae_score_from_codes(c, f, batch_size=1)
    with pytest.raises(ValueError, match="prune_threshold"):
        factor_vae_score_from_codes(c, f, prune_threshold=-1.0)
    with pytest.raises(ValueError, match=r"\[16, d\]"):
        sample_codes(lambda x: x[:, 0], ToyGrid(), 16)


def test_the_command_and_the_record_know_every_metric() -> None:
    """flowvae disentangle spells the metric names out (its parser does not import the evaluation
    package); its default, the evaluation's list and the fields of disentanglement.json's record agree."""
    import dataclasses

    from flowvae.cli.main import build_parser
    from flowvae.evaluation.representations import DISENTANGLEMENT_METRICS
    from flowvae.runs.records import DisentanglementResult

    assert build_parser().parse_args(["disentangle", "RUN"]).metrics == list(DISENTANGLEMENT_METRICS)
    fields = [f.name for f in dataclasses.fields(DisentanglementResult)]
    assert fields[-len(DISENTANGLEMENT_METRICS):] == list(DISENTANGLEMENT_METRICS)


# --------------------------------------------------------------------------------------
# dSprites
# --------------------------------------------------------------------------------------

DSPRITES_DIR = shared_data_dir() / "dsprites"


def _need(variant: str) -> None:
    if not (DSPRITES_DIR / DSPRITES_FILES[variant]).is_file():
        pytest.skip(f"dSprites {variant} file not in {DSPRITES_DIR}")


@pytest.fixture(scope="module")
def grid() -> DSpritesData:
    _need("grid")
    return load_dsprites(split="all")


def test_grid_shapes_values_and_factor_sizes(grid: DSpritesData) -> None:
    assert len(grid) == 46080 and grid.name == "dsprites-grid/all"
    assert grid.images.shape == (46080, 1, 64, 64) and grid.images.dtype == torch.uint8
    counts = torch.bincount(grid.images.view(-1), minlength=256)
    assert counts[0] > 0 and counts[255] > 0 and counts[0] + counts[255] == grid.images.numel()
    assert grid.factors.shape == (46080, 5) and grid.factors.dtype == torch.int64
    assert grid.factor_values.shape == (46080, 5) and grid.factor_values.dtype == torch.float64
    assert grid.factor_sizes == GRID_FACTOR_SIZES == (3, 6, 10, 16, 16)
    assert grid.factor_names == ("shape", "scale", "orientation", "posX", "posY")
    assert (grid.factors.max(0).values + 1).tolist() == list(GRID_FACTOR_SIZES)
    assert grid.factors.min() == 0


def test_grid_order_is_mixed_radix(grid: DSpritesData) -> None:
    f = grid.factors.numpy()
    # Row r holds the tuple whose mixed-radix number (bases factor_sizes, posY fastest) is r ...
    np.testing.assert_array_equal(np.ravel_multi_index(f.T, GRID_FACTOR_SIZES), np.arange(len(f)))
    # ... and is the original image at orientation 4*o, positions 2*x, 2*y of the full grid.
    full = np.ravel_multi_index((f * np.array([1, 1, 4, 2, 2])).T, FULL_FACTOR_SIZES)
    np.testing.assert_array_equal(grid.source_indices.numpy(), full)
    v = grid.factor_values.numpy()
    np.testing.assert_allclose(v[:, 2], f[:, 2] * 4 * 2 * np.pi / 39)
    np.testing.assert_allclose(v[:, 3], f[:, 3] * 2 / 31)
    np.testing.assert_allclose(v[:, 0], f[:, 0] + 1)


def test_images_from_factors_returns_the_image(grid: DSpritesData) -> None:
    rng = np.random.default_rng(0)
    rows = rng.integers(0, len(grid), 8)
    for i in rows:
        out = grid.images_from_factors(grid.factors[i])
        assert out.shape == (1, 1, 64, 64)
        assert torch.equal(out[0], grid.images[i])
    assert torch.equal(grid.images_from_factors(grid.factors[rows].numpy()), grid.images[rows])
    sampled = grid.sample_factors(100, np.random.default_rng(1))
    assert sampled.shape == (100, 5) and sampled.dtype == np.int64
    assert (sampled >= 0).all() and (sampled < np.array(GRID_FACTOR_SIZES)).all()
    np.testing.assert_array_equal(sampled, grid.sample_factors(100, 1))
    assert torch.equal(grid.factors[torch.from_numpy(grid.rows_from_factors(sampled))], torch.from_numpy(sampled))
    with pytest.raises(ValueError, match="orientation"):
        grid.images_from_factors([0, 0, 10, 0, 0])
    with pytest.raises(ValueError, match=r"\[n, 5\]"):
        grid.images_from_factors([0, 0, 0])


def test_factor_vae_score_on_dsprites(grid: DSpritesData) -> None:
    """A hand-made code (sprite centroid x, y and mass) isolates posX, posY and scale."""
    cols = torch.arange(64, dtype=torch.float64)

    def centroid(images: torch.Tensor) -> torch.Tensor:
        x = images[:, 0].double() / 255
        mass = x.sum((1, 2))
        return torch.stack([(x.sum(1) * cols).sum(1) / mass, (x.sum(2) * cols).sum(1) / mass, mass], 1)

    codes = centroid(grid.images[:2000])
    assert np.corrcoef(codes[:, 0], grid.factors[:2000, 3])[0, 1] > 0.99  # posX is the column position
    score = factor_vae_score(centroid, grid, num_train=100, num_eval=100, num_variance_estimate=300)
    assert 0.5 <= score["eval_accuracy"] <= 1.0 and score["num_active_dims"] == 3


def test_binary_limit_and_image_data(grid: DSpritesData) -> None:
    small = load_dsprites(split="all", limit=50, binary=True)
    assert len(small) == 50 and small.binary
    # a limit is a seeded subset stratified by shape (the file order puts shape slowest)
    assert torch.equal(small.images * 255, grid.images[subset_indices(len(grid), 50, grid.factors[:, 0])])
    as_images = small.to_image_data()
    assert isinstance(as_images, ImageData) and as_images.images.max() == 255
    assert torch.equal(as_images.labels, small.factors[:, 0]) and as_images.classes == ["square", "ellipse", "heart"]
    with pytest.raises(DataError, match="complete factor grid"):
        small.images_from_factors(small.factors[0])


def test_train_test_split(grid: DSpritesData) -> None:
    train = load_dsprites(split="train")
    test = load_dsprites(split="test")
    assert len(train) == 41472 and len(test) == 4608 and test.name == "dsprites-grid/test"
    tr, te = set(train.source_indices.tolist()), set(test.source_indices.tolist())
    assert not tr & te and tr | te == set(grid.source_indices.tolist())
    assert (np.diff(test.source_indices.numpy()) > 0).all()  # file order kept
    again = load_dsprites(split="test", limit=100)
    keep = subset_indices(len(test), 100, test.factors[:, 0])
    assert torch.equal(again.images, test.images[keep]) and torch.equal(again.factors, test.factors[keep])
    with pytest.raises(DataError, match="split='all'"):
        train.images_from_factors(train.factors[0])
    # Through the dispatcher: ImageData with the shape as label.
    d = load_dataset("dsprites", "test", limit=10)
    assert isinstance(d, ImageData) and d.images.shape == (10, 1, 64, 64) and d.name == "dsprites-grid/test"
    keep = subset_indices(len(test), 10, test.factors[:, 0])
    assert torch.equal(d.labels, test.factors[keep, 0]) and torch.equal(d.images, test.images[keep])
    with pytest.raises(DataError, match="does not take option"):
        load_dataset("dsprites", "test", size=32)


def test_subset_variant() -> None:
    _need("subset")
    sub = load_dsprites(split="all", variant="subset")
    assert len(sub) == 20000 and sub.images.shape == (20000, 1, 64, 64)
    assert sub.factor_sizes == FULL_FACTOR_SIZES
    np.testing.assert_array_equal(np.ravel_multi_index(sub.factors.numpy().T, FULL_FACTOR_SIZES),
                                  sub.source_indices.numpy())
    with pytest.raises(DataError, match="not the complete factor grid"):
        sub.images_from_factors(sub.factors[0])
    assert len(load_dsprites(split="test", variant="subset")) == 2000


def test_missing_and_bad_files(tmp_path) -> None:
    with pytest.raises(DataError, match=r"does not exist.*github\.com/deepmind/dsprites-dataset.*--data"):
        load_dsprites(tmp_path / "nope")
    with pytest.raises(DataError, match=r"dsprites_downsampled\.npz not found.*--data"):
        load_dsprites(tmp_path)
    with pytest.raises(DataError, match="unknown split"):
        load_dsprites(tmp_path, split="valid")
    with pytest.raises(DataError, match="unknown dSprites variant"):
        load_dsprites(tmp_path, variant="tiny")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="cannot read"):
        load_dsprites(junk)
    other = tmp_path / "other.npz"
    np.savez(other, x=np.zeros(3))
    with pytest.raises(DataError, match="no imgs"):
        load_dsprites(other)


def test_original_layout_with_colour_column(tmp_path) -> None:
    """A miniature file laid out like the DeepMind original: 6 latent columns, colour first."""
    sizes = (1, 3, 2, 2, 2, 2)  # colour, shape, scale, orientation, posX, posY
    classes = np.stack(np.unravel_index(np.arange(int(np.prod(sizes))), sizes), axis=1).astype(np.int64)
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 2, size=(len(classes), 64, 64), dtype=np.uint8)
    path = tmp_path / DSPRITES_FILES["full"]
    np.savez(path, imgs=imgs, latents_classes=classes, latents_values=classes.astype(np.float64))
    full = load_dsprites(tmp_path, split="all", variant="full")
    assert full.factor_sizes == (3, 2, 2, 2, 2) and full.factors.shape == (48, 5)
    np.testing.assert_array_equal(full.factors.numpy(), classes[:, 1:])
    np.testing.assert_array_equal(full.source_indices.numpy(), np.arange(48))
    assert torch.equal(full.images_from_factors(classes[7, 1:]), torch.from_numpy(imgs[7] * 255)[None, None])
    with pytest.raises(DataError, match="not the downsampled dSprites grid.*variant='full'"):
        load_dsprites(path, split="all", variant="grid")
