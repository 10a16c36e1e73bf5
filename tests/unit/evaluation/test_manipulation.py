"""Edits along directions of the vector latent (issue 31; :mod:`flowvae.evaluation.manipulation`,
``model.manipulate``, ``flowvae manipulate``): strength 0 reproduces the image exactly on the exact
kinds; a toy model whose latent is known gives the known direction and the known edit; one-line
refusals of bad directions, strengths and kinds without a vector latent; ``directions.json`` and
``manipulation.json`` read back as their records; the report shows the grid and escapes the file."""

from __future__ import annotations

import json
import shutil
from contextlib import nullcontext

import pytest
import torch

from flowvae.api import load_run
from flowvae.cli.main import main
from flowvae.data import ImageData, load_digits
from flowvae.errors import ConfigError, DataError
from flowvae.evaluation.manipulation import (
    METHODS,
    class_curves,
    find_direction,
    label_directions,
    manipulation_grid,
)
from flowvae.models import Capabilities
from flowvae.models._checks import MAX_EDIT_STRENGTHS, manipulate_mean_code
from flowvae.runs import RunFolder
from flowvae.runs.records import DirectionSet, ManipulationResult

pytestmark = pytest.mark.usefixtures("single_thread")

CPU = ["--device", "cpu", "-q"]
EXACT_KINDS = ["flowvae", "z_prior", "multistage"]


# ---------------------------------------------------------------------------------------------- a toy model


class Brightness:
    """A model whose latent is known: ``z = (mean pixel / 255, 0.5 + small noise)``, decoded as a flat
    image of value ``255 * z[0]``. Enough of the model contract for the directions and the edits."""

    capabilities = Capabilities(vector_latent=True)
    device = torch.device("cpu")
    latent_dim = 2

    def require(self, capability: str, what: str) -> None:
        if not getattr(self.capabilities, capability):
            raise ConfigError(f"{what} does not apply")

    def quantised(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.dim() != 4:
            raise DataError("images must be uint8 [B, 1, 4, 4]")

    def latent_mean(self, x: torch.Tensor) -> torch.Tensor:
        noise = torch.sin(torch.arange(len(x), dtype=torch.float32)) * 0.001
        return torch.stack([x.float().mean((1, 2, 3)) / 255, 0.5 + noise], 1)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return (z[:, 0] * 255).round().clamp(0, 255).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 1, 4, 4)

    def manipulate(self, x, direction, alphas):
        return manipulate_mean_code(self.latent_mean, self.decode, self.check_input, x, direction, alphas, 2)


def _two_levels(n: int = 20) -> ImageData:
    """Class 0: flat images of value 50; class 1: flat images of value 200."""
    labels = torch.arange(2).repeat_interleave(n)
    x = torch.where(labels.view(-1, 1, 1, 1) == 0, 50, 200).to(torch.uint8).expand(-1, 1, 4, 4).contiguous()
    return ImageData(x, labels, "levels/train", ["dark", "bright"])


@pytest.mark.parametrize("method", METHODS)
def test_the_toy_models_direction_is_the_known_one_and_moves_one_class_to_the_other(method):
    data = _two_levels()
    d = label_directions(Brightness(), data, method)  # type: ignore[arg-type]
    assert d.classes == ["dark", "bright"] and d.labels == [0, 1] and d.counts == [20, 20]
    bright = torch.tensor(d.vectors[1])
    # the class means differ by (150/255, 0): the direction is that, up to the noise in dimension 1
    assert torch.allclose(bright, torch.tensor([150 / 255, 0.0]), atol=2e-3), bright
    assert torch.allclose(torch.tensor(d.vectors[0]), -bright)
    c, v = find_direction(d, "bright")
    assert c == 1 and torch.equal(v, bright.float())
    dark = data.images[:3]
    out = Brightness().manipulate(dark, v, [0.0, 0.5, 1.0])
    assert out.shape == (3, 3, 1, 4, 4)
    assert out[:, 0].eq(50).all() and out[:, 2].eq(200).all()  # alpha 1: the other class's level
    assert out[:, 1].eq(125).all()


def test_directions_of_labels_that_are_not_0_to_k():
    data = _two_levels()
    data = ImageData(data.images, data.labels * 7 + 3, "levels/odd")  # labels 3 and 10, no class names
    d = label_directions(Brightness(), data)  # type: ignore[arg-type]
    assert d.classes == ["3", "10"] and d.labels == [3, 10]
    assert find_direction(d, "10")[0] == 1
    with pytest.raises(ConfigError, match="no class '4'.*3, 10"):
        find_direction(d, "4")


def test_directions_need_labels_and_two_classes():
    data = _two_levels()
    with pytest.raises(DataError, match="no labels"):
        label_directions(Brightness(), ImageData(data.images, None, "x"))  # type: ignore[arg-type]
    with pytest.raises(DataError, match="at least two classes"):
        label_directions(Brightness(), ImageData(data.images[:5], data.labels[:5], "x"))  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="method must be one of"):
        label_directions(Brightness(), data, "pca")  # type: ignore[arg-type]


@pytest.mark.parametrize("direction, alphas, error, match", [
    (torch.zeros(3), [1.0], DataError, r"direction must be a float tensor \[2\]"),
    (torch.zeros(2, dtype=torch.int64), [1.0], DataError, "direction must be a float tensor"),
    (torch.tensor([float("nan"), 0.0]), [1.0], DataError, "NaN"),
    ([0.0, 1.0], [1.0], DataError, "got list"),
    (torch.zeros(2), [], ConfigError, "non-empty list"),
    (torch.zeros(2), [float("inf")], ConfigError, "finite numbers"),
    (torch.zeros(2), [True], ConfigError, "finite numbers"),
    (torch.zeros(2), [0.0] * (MAX_EDIT_STRENGTHS + 1), ConfigError, f"at most {MAX_EDIT_STRENGTHS}"),
])
def test_bad_directions_and_strengths_are_refused_in_one_line(direction, alphas, error, match):
    x = _two_levels().images[:2]
    with pytest.raises(error, match=match) as e:
        Brightness().manipulate(x, direction, alphas)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------------------------------------- real kinds


@pytest.fixture(scope="module")
def digits():
    return load_digits("train"), load_digits("test")


@pytest.mark.parametrize("kind", EXACT_KINDS)
def test_alpha_0_reproduces_the_images_exactly_and_other_strengths_keep_the_local_code(kind, tiny_runs):
    model = load_run(tiny_runs[kind], "cpu")
    c, s = model.cfg.in_channels, model.cfg.image_size
    x = torch.randint(0, 256, (3, c, s, s), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    direction = torch.randn(model.latent_dim, generator=torch.Generator().manual_seed(2))
    out = model.manipulate(x, direction, [-1.0, 0.0, 1.5])
    assert out.shape == (3, 3, c, s, s) and out.dtype == torch.uint8
    assert torch.equal(out[:, 1], model.quantised(x))
    # the edit is f^-1(v; z + alpha d) with the image's own v: decode it by hand
    z, v = model.encode(x)
    assert torch.equal(out[:, 2], model.decode(z + 1.5 * direction, v))
    samples = model.manipulate_samples(x, direction, [0.0, 1.0])
    assert samples.saturated is not None and samples.saturated.shape == (3, 2)


@pytest.mark.parametrize("kind", ["vae", "btcvae"])
def test_kinds_without_a_local_code_edit_their_latent(kind, tiny_runs):
    model = load_run(tiny_runs[kind], "cpu")
    c, s = model.cfg.in_channels, model.cfg.image_size
    x = torch.randint(0, 256, (2, c, s, s), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    direction = torch.ones(model.latent_dim)
    out = model.manipulate(x, direction, [0.0, 2.0])
    assert torch.equal(out[:, 0], model.reconstruct(x))
    assert torch.equal(out[:, 1], model.decode(model.latent_mean(x) + 2.0))


@pytest.mark.parametrize("kind", ["glow", "refined_glow", "ugvae"])
def test_kinds_without_a_vector_latent_are_refused(kind, tiny_runs, digits):
    model = load_run(tiny_runs[kind], "cpu")
    with pytest.raises(ConfigError, match="does not apply") as e:
        label_directions(model, digits[0])
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="does not apply"):
        manipulation_grid(model, digits[1], [0], torch.zeros(2), [0.0])


def test_directions_grid_and_class_curves_of_the_paper_model(tiny_runs, digits):
    train, test = digits
    model = load_run(tiny_runs["flowvae"], "cpu")
    d = label_directions(model, train, "classifier", images=300)
    assert len(d.vectors) == 10 and all(len(v) == model.latent_dim for v in d.vectors)
    assert d.classifier_accuracy is not None and 0 <= d.classifier_accuracy <= 1
    assert DirectionSet.from_dict(json.loads(json.dumps(d.to_dict()))) == d
    _, direction = find_direction(d, "7")
    grid, info = manipulation_grid(model, test, [0, 5], direction, [0.0, 1.0])
    assert grid.shape == (2, 2, 1, 8, 8) and info == {"images": [0, 5], "keeps_local": True, "exact_at_zero": True}
    curve = class_curves(model, train, test, d, [0.0, 1.0], images_per_class=3, train_images=300, C=0.01)
    assert curve.edits == 30 and len(curve.to_target) == 2 and set(curve.per_class) == set(d.classes)
    assert all(0 <= f <= 1 for f in curve.to_target + curve.keeps_source)
    assert curve.saturated is not None and len(curve.saturated) == 2
    # strength 0 is the image itself, never of the target class as the classifier sees it on real images
    real = curve.classifier["test_accuracy"]
    assert curve.keeps_source[0] == pytest.approx(real, abs=0.2)


def test_the_command_writes_the_grid_the_records_and_a_report_section(tiny_runs, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(tiny_runs["flowvae"], run)
    capsys.readouterr()
    code = main(["manipulate", str(run), "--attribute", "3", "--alpha", "-1", "0", "1", "--direction-images", "200",
                 "--curves", "--curve-images", "2", "--json", *CPU])
    out, err = capsys.readouterr()
    assert code == 0, err
    res = json.loads(out)
    assert res["attribute"] == "3" and res["alphas"] == [-1.0, 0.0, 1.0] and res["exact_at_zero"] is True
    assert len(res["images"]) == 8  # the first 8 test images not of class 3
    folder = RunFolder(run)
    m = ManipulationResult.from_dict(folder.read_json("manipulation.json"))
    assert m.curve is not None and m.curve.edits == 20 and (run / "manipulate.png").is_file()
    assert DirectionSet.from_dict(folder.read_json("directions.json")).dataset == "digits/train"
    # a hostile attribute name in the file is escaped in the report
    raw = folder.read_json("manipulation.json")
    raw["attribute"] = "<script>x</script>"
    (run / "manipulation.json").write_text(json.dumps(raw))
    assert main(["report", str(run), "--out", str(tmp_path / "r.html"), "-q"]) == 0
    html = (tmp_path / "r.html").read_text()
    assert 'id="manipulation-section"' in html and 'id="manipulation-curve"' in html
    assert "&lt;script&gt;x" in html and "<script>x" not in html


@pytest.mark.parametrize("argv, match", [
    (["--attribute", "nine"], "no class 'nine'"),
    (["--attribute", "3", "--alpha"], None),
])
def test_the_command_refuses_bad_input_in_one_line(argv, match, tiny_runs, capsys):
    capsys.readouterr()
    ctx = pytest.raises(SystemExit) if match is None else nullcontext()
    with ctx:
        code = main(["manipulate", str(tiny_runs["flowvae"]), *argv, "--direction-images", "100",
                     "--out", "/dev/null", *CPU])
        out, err = capsys.readouterr()
        assert code == 1 and len(err.strip().splitlines()) == 1 and match in err, err


# ---------------------------------------------------------------------------------------------- dSprites factors


@pytest.fixture(scope="module")
def dsprites():
    from flowvae.data import shared_data_dir
    from flowvae.data.dsprites import DSPRITES_FILES, load_dsprites

    root = shared_data_dir() / "dsprites"
    if not (root / DSPRITES_FILES["grid"]).is_file():
        pytest.skip(f"dSprites grid file not found under {root} (the shared data folder is absent)")
    return load_dsprites(root, "train", limit=600), load_dsprites(root, "test", limit=200)


def test_factor_readers_say_which_factors_moved(dsprites):
    import numpy as np

    from flowvae.evaluation.factor_edits import FactorReaders

    readers = FactorReaders(dsprites[0], images=64, epochs=1)
    before = np.array([[0, 2, 5, 3, 3], [1, 2, 5, 3, 3]])
    after = np.array([[2, 3, 5, 1, 3], [1, 2, 4, 3, 9]])
    assert readers.moved(before, after).tolist() == [[1, 1, 0, -1, 0], [0, 0, -1, 0, 1]]
    read = readers.read(dsprites[1].to_image_data().images[:5])
    assert read.shape == (5, 5) and (read >= 0).all() and (read < np.array(readers.sizes)).all()


def test_factor_edits_of_a_model_and_of_pixels(dsprites, tiny_runs):
    from flowvae.evaluation.factor_edits import FactorReaders, factor_edits

    train, test = dsprites
    readers = FactorReaders(train, images=64, epochs=1)
    model = load_run(tiny_runs["btcvae"], "cpu")
    res = factor_edits(model, train, test, images=8, direction_images=300, readers=readers)
    assert res["factors"] == ["shape", "scale", "orientation", "posX", "posY"]
    for table in (res["model"], res["pixels"]):
        assert set(table) == set(res["factors"])
        for name, row in table.items():
            assert 0 <= row["hit"] <= 1 and set(row["leakage"]) == set(res["factors"]) - {name}
            assert all(0 <= v <= 1 for v in row["leakage"].values())
    assert res["model"]["scale"]["edits"] == 16  # 8 images at +alpha and -alpha
    assert factor_edits(None, train, test, images=8, direction_images=300, readers=readers)["model"] is None
    with pytest.raises(ConfigError, match="does not apply"):
        factor_edits(load_run(tiny_runs["glow"], "cpu"), train, test, readers=readers)
