"""``flowvae encode``: the exported arrays of every model kind against the model's own posterior, the
dataset's labels and the images (the exact local code v decodes back to them), the same arrays from
data read on access and in other batch sizes, and the refusals (``--local`` on a kind without exact
codes, output paths that cannot be written).

Every run is a tiny run of ``tiny_runs`` (tests/conftest.py); each encodes a few images.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from flowvae.api import load_run
from flowvae.cli.main import main
from flowvae.data import ImageData, bins_to_uint8, quantize, subset_indices
from flowvae.data.registry import load_split
from flowvae.evaluation.encoding import encode_images, encode_splits
from flowvae.maths import gaussian_kl
from flowvae.models import MODEL_KINDS

pytestmark = pytest.mark.usefixtures("single_thread")

KINDS = sorted(MODEL_KINDS)
CPU = ["--device", "cpu", "-q"]
LIMIT = 12


def _split(model, split: str) -> ImageData:
    """The whole split of the run's dataset, as the data source numbers it (no limit)."""
    cfg = model.config
    cfg.data.train_limit = cfg.data.test_limit = None
    return load_split(cfg.data, split)


def _own_posterior(model, x: torch.Tensor) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Each latent's posterior (mean, log-variance) from the model's own public methods, by kind,
    not from the export module. Log-variances the model does not return are checked elsewhere."""
    kind = model.kind
    with torch.no_grad():
        if kind in ("flowvae", "z_prior", "multistage"):
            mu, lv = model.posterior(model.to_bins(x))
            assert torch.equal(mu, model.latent_mean(x))
            return {"z": (mu, lv)}
        if kind == "btcvae":
            t = model.decomposition(x)
            return {"z": (t["mu"], t["logvar"])}
        if kind == "vae":
            return {"z": (model.latent_mean(x), None)}  # log-variance: through the closed-form KL below
        if kind == "ugvae":
            t = model.elbo_terms(x)
            # q(beta | X) of a group of one image, each image on its own
            singles = [model.elbo_terms(x[i:i + 1]) for i in range(len(x))]
            beta_mu = torch.cat([s["beta_mu"] for s in singles])
            beta_lv = torch.cat([s["beta_logvar"] for s in singles])
            return {"z": (t["mu_z"], t["logvar_z"]), "beta": (beta_mu, beta_lv)}
        if kind in ("refined_glow", "glow"):
            return {}
    pytest.fail(f"tests/unit/evaluation/test_encode.py has no posterior check for the kind {kind!r}; add it to _own_posterior",
                pytrace=False)


class _Encoded:
    """One ``flowvae encode`` per kind (both splits, ``--limit``, ``--local`` where it applies), cached."""

    def __init__(self, root: Path):
        self.root, self.done = root, {}

    def __call__(self, kind: str, tiny_runs, capsys) -> tuple[dict, dict]:
        if kind not in self.done:
            run = tiny_runs[kind]
            out = self.root / f"{kind}.npz"
            local = ["--local"] if tiny_runs.capabilities(kind).exact_codes else []
            capsys.readouterr()
            code = main(["encode", str(run), "--limit", str(LIMIT), "--out", str(out), *local, "--json", *CPU])
            res, err = capsys.readouterr()
            assert code == 0, err
            with np.load(out) as f:
                arrays = {k: f[k] for k in f.files}
            self.done[kind] = (arrays, json.loads(res))
        return self.done[kind]


@pytest.fixture(scope="module")
def encoded(tmp_path_factory) -> _Encoded:
    return _Encoded(tmp_path_factory.mktemp("encoded"))


@pytest.mark.parametrize("kind", KINDS)
def test_keys_shapes_and_dtypes(kind, encoded, tiny_runs, capsys):
    arrays, res = encoded(kind, tiny_runs, capsys)
    meta = json.loads(str(arrays["meta"]))
    model = load_run(tiny_runs[kind])
    latents = {lat["name"]: lat["dim"] for lat in meta["latents"]}
    expect_latents = {"flowvae": {"z": 4}, "z_prior": {"z": 4}, "vae": {"z": 3}, "btcvae": {"z": 3},
                      "multistage": {"z": 3}, "ugvae": {"z": 3, "beta": 2}, "refined_glow": {}, "glow": {}}
    assert latents == expect_latents[kind]
    has_v = model.capabilities.exact_codes
    keys = {"meta"}
    for s in ("train", "test"):
        n = meta["splits"][s]["n"]
        assert n == LIMIT
        keys |= {f"{s}_labels", f"{s}_index"} | {f"{s}_{name}_{m}" for name in latents for m in ("mean", "logvar")}
        for name, dim in latents.items():
            for m in ("mean", "logvar"):
                a = arrays[f"{s}_{name}_{m}"]
                assert a.shape == (n, dim) and a.dtype == np.float32 and np.isfinite(a).all()
        if has_v:
            keys.add(f"{s}_v")
            assert arrays[f"{s}_v"].shape == (n, model.dim) and arrays[f"{s}_v"].dtype == np.float32
        assert arrays[f"{s}_labels"].dtype == np.int64 and arrays[f"{s}_index"].dtype == np.int64
    assert set(arrays) == keys
    assert meta["kind"] == kind and meta["format"] == "flowvae-encode/1"
    assert meta["config_sha256"] == hashlib.sha256((tiny_runs[kind] / "config.yaml").read_bytes()).hexdigest()
    assert res["arrays"]["test_index"] == {"shape": [LIMIT], "dtype": "int64"} and res["kind"] == kind


@pytest.mark.parametrize("kind", KINDS)
def test_codes_are_the_models_posterior_of_the_indexed_images(kind, encoded, tiny_runs, capsys):
    arrays, _ = encoded(kind, tiny_runs, capsys)
    model = load_run(tiny_runs[kind])
    for s in ("train", "test"):
        data = _split(model, s)
        index = torch.from_numpy(arrays[f"{s}_index"])
        # unique, in range, and the seeded stratified subset every data limit draws
        assert len(torch.unique(index)) == len(index) and 0 <= int(index.min()) and int(index.max()) < len(data)
        assert torch.equal(index, subset_indices(len(data), LIMIT, data.labels))
        assert np.array_equal(arrays[f"{s}_labels"], data.labels[index].numpy())
        x = data.images[index]
        for name, (mu, lv) in _own_posterior(model, x).items():
            np.testing.assert_allclose(arrays[f"{s}_{name}_mean"], mu.numpy(), rtol=1e-5, atol=1e-6)
            if lv is not None:
                np.testing.assert_allclose(arrays[f"{s}_{name}_logvar"], lv.numpy(), rtol=1e-5, atol=1e-6)
        if kind == "vae":  # the model's closed-form KL(q(z|x) || N(0, I)) from the exported mean and log-variance
            kl = gaussian_kl(torch.from_numpy(arrays[f"{s}_z_mean"]), torch.from_numpy(arrays[f"{s}_z_logvar"]))
            torch.testing.assert_close(kl, model.bits_per_dim(x)["kl"], rtol=1e-4, atol=1e-4)
        if f"{s}_z_mean" in arrays:  # the features flowvae probe reads
            np.testing.assert_allclose(arrays[f"{s}_z_mean"], model.representations(x)["z"].numpy(), rtol=1e-5,
                                       atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
def test_local_code_decodes_to_the_images_exactly_or_is_refused(kind, encoded, tiny_runs, tmp_path, capsys):
    if not tiny_runs.capabilities(kind).exact_codes:  # --local refused in one line, nothing written
        out = tmp_path / "codes.npz"
        capsys.readouterr()
        code = main(["encode", str(tiny_runs[kind]), "--local", "--out", str(out), *CPU])
        lines = capsys.readouterr().err.strip().splitlines()
        assert code == 1 and len(lines) == 1, lines
        assert "flowvae encode --local does not apply" in lines[0] and repr(kind) in lines[0]
        assert not out.exists()
        return
    arrays, _ = encoded(kind, tiny_runs, capsys)
    model = load_run(tiny_runs[kind])
    data = _split(model, "test")
    x = data.images[torch.from_numpy(arrays["test_index"])]
    v = torch.from_numpy(arrays["test_v"])
    z = torch.from_numpy(arrays["test_z_mean"]) if "test_z_mean" in arrays else None
    assert torch.equal(model.decode(z, v), bins_to_uint8(quantize(x, model.n_bits), model.n_bits))
    np.testing.assert_allclose(arrays["test_v"], model.representations(x)["v"].numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_batches_and_data_read_on_access_give_the_same_arrays(kind, tiny_runs):
    """One image at a time, odd batches, and a map-style dataset (the streamed path) agree."""

    class Items(torch.utils.data.Dataset):  # (image, label) items read on access, as ImageFiles
        def __init__(self, data: ImageData):
            self.data, self.labels, self.name = data, data.labels, data.name

        def __len__(self) -> int:
            return len(self.data)

        def __getitem__(self, i: int):
            return self.data.images[i], int(self.data.labels[i])

    model = load_run(tiny_runs[kind])
    data = _split(model, "test")
    index = torch.tensor([7, 0, 3, 12, 5, 9, 1])
    ref = encode_images(model, data, index=index, batch_size=64)
    workers = 1 if kind == "flowvae" else 0  # one DataLoader worker process: slow to start, once is enough
    for got in (encode_images(model, data, index=index, batch_size=1),
                encode_images(model, Items(data), index=index, batch_size=3, num_workers=workers)):
        assert set(got) == set(ref)
        for k in ref:
            np.testing.assert_allclose(got[k], ref[k], rtol=1e-5, atol=1e-5, err_msg=k)
    assert np.array_equal(ref["index"], index.numpy())


def test_an_item_that_cannot_be_read_in_a_worker_is_one_line(tiny_runs):
    from flowvae.errors import DataError

    class Broken(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int):
            if i == 2:
                raise DataError("cannot decode item 2: truncated file")
            return torch.zeros(1, 8, 8, dtype=torch.uint8)

    model = load_run(tiny_runs["vae"])
    with pytest.raises(DataError) as e:
        encode_images(model, Broken(), batch_size=2, num_workers=1)
    assert str(e.value) == "cannot decode item 2: truncated file"


def test_unlabelled_data_gets_labels_minus_one_and_one_split_only(tiny_runs):
    model = load_run(tiny_runs["vae"])
    data = _split(model, "test")
    unlabelled = ImageData(data.images[:10], None, "unlabelled")
    arrays = encode_splits(model, {"test": unlabelled}, batch_size=4)
    meta = json.loads(str(arrays["meta"]))
    assert np.array_equal(arrays["test_labels"], np.full(10, -1)) and not meta["splits"]["test"]["has_labels"]
    assert np.array_equal(arrays["test_index"], np.arange(10))
    assert not any(k.startswith("train_") for k in arrays)


def test_limit_gives_the_images_a_limited_run_reads(tiny_runs, tmp_path, capsys):
    """dSprites takes its limit itself; --limit N of the whole split picks the same images."""
    run = tiny_runs["btcvae"]
    out = tmp_path / "codes.npz"
    assert main(["encode", str(run), "--split", "train", "--limit", "40", "--out", str(out), *CPU]) == 0
    model = load_run(run)
    cfg = model.config
    cfg.data.train_limit = 40
    limited = load_split(cfg.data, "train")
    with np.load(out) as f:
        index = torch.from_numpy(f["train_index"])
        assert set(f.files) == {"meta", "train_z_mean", "train_z_logvar", "train_labels", "train_index"}
        np.testing.assert_allclose(f["train_z_mean"], model.latent_mean(limited.images).numpy(), rtol=1e-5, atol=1e-6)
    assert torch.equal(_split(model, "train").images[index], limited.images)


def test_data_option_reads_another_root(tiny_runs, tmp_path, capsys):
    run = tiny_runs["btcvae"]
    model = load_run(run)
    copy = tmp_path / "dsprites"
    shutil.copytree(model.config.data.root, copy)
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    argv = ["encode", str(run), "--split", "test", "--limit", "8", *CPU]
    assert main([*argv, "--out", str(a)]) == 0
    capsys.readouterr()
    assert main([*argv, "--out", str(b), "--data", str(copy), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["splits"]["test"]["n"] == 8
    with np.load(a) as fa, np.load(b) as fb:
        assert np.array_equal(fa["test_z_mean"], fb["test_z_mean"])
        assert json.loads(str(fb["meta"]))["data_root"] == str(copy)
    empty = tmp_path / "empty"
    empty.mkdir()
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "c.npz"), "--data", str(empty)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("flowvae encode: error:") and not (tmp_path / "c.npz").exists()


@pytest.mark.parametrize("case", ["missing folder", "symlink", "not npz"])
def test_output_that_cannot_be_written_is_refused_in_one_line(case, tiny_runs, tmp_path, capsys):
    target = tmp_path / "elsewhere.npz"
    target.write_bytes(b"keep")
    out = {"missing folder": tmp_path / "no" / "such" / "codes.npz", "symlink": tmp_path / "link.npz",
           "not npz": tmp_path / "codes.txt"}[case]
    if case == "symlink":
        out.symlink_to(target)
    capsys.readouterr()
    code = main(["encode", str(tiny_runs["flowvae"]), "--split", "test", "--limit", "4", "--out", str(out), *CPU])
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(lines) == 1 and lines[0].startswith("flowvae encode: error:"), lines
    assert target.read_bytes() == b"keep"
    assert not (tmp_path / "no").exists() and not (tmp_path / "codes.txt").exists()
