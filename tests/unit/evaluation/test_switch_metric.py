"""The switch metric (:func:`flowvae.evaluation.switching.switch_metric`, ``flowvae switch``): pairs of
different classes, balanced and distinct; fractions that sum to 1; known answers on a model whose
switch is replaced by one with a known decode (on linearly separable images, so the classifier is
perfect and the fractions exact); one-line refusals of kinds without a global and a local code and
of unlabelled data; ``switch.json`` and its escaped display in the report."""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

import pytest
import torch

from flowvae.api import load_run
from flowvae.cli.main import main
from flowvae.data import ImageData, load_digits
from flowvae.errors import ConfigError, DataError
from flowvae.evaluation.switching import different_class_pair_count, pick_different_class_pairs, switch_metric
from flowvae.models import MODEL_KINDS, Samples
from flowvae.runs.data import load_data

pytestmark = pytest.mark.usefixtures("single_thread")

CPU = ["--device", "cpu", "-q"]


@pytest.fixture(scope="module")
def model(tiny_runs):
    """The tiny paper model (digits, 1x8x8), on the CPU."""
    return load_run(tiny_runs["flowvae"], "cpu")


def _separable(n_per_class: int, classes: int = 4, seed: int = 0, name: str = "toy") -> ImageData:
    """1x8x8 images whose class c has row 2c bright (255) over dark noise (0..40): linearly
    separable with a wide margin, so a linear classifier of pixels is always right."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    x = torch.randint(0, 41, (len(labels), 1, 8, 8), generator=g, dtype=torch.uint8)
    x[torch.arange(len(labels)), 0, 2 * labels] = 255
    return ImageData(x, labels, f"{name}/{seed}")


def _fake_switch(decode_v1z2: str):
    """A stand-in for ``model.switch_samples`` with a known (v1, z2) cell: image 2 (``"z"``: the class
    goes with z), image 1 (``"v"``), or alternately image 2 and image 1 (``"half"``). The (v2, z1)
    cell is the mirror image (image 1 for ``"z"``). Nothing saturates."""
    def switch_samples(x1, x2):
        if decode_v1z2 == "half":
            even = (torch.arange(len(x1)) % 2 == 0).view(-1, 1, 1, 1)
            a, b = torch.where(even, x2, x1), torch.where(even, x1, x2)
        else:
            a, b = (x2, x1) if decode_v1z2 == "z" else (x1, x2)
        return Samples(torch.stack([x1, a, x2, b], 1), None, torch.zeros(len(x1), 4, dtype=torch.bool))
    return switch_samples


# ---------------------------------------------------------------------------------------------- pairs

def test_pairs_are_of_different_classes_distinct_balanced_and_seeded(model, tiny_runs):
    test = load_data(model.config, "test")
    first, second = pick_different_class_pairs(test, 300, seed=1)
    y1, y2 = test.labels[first], test.labels[second]
    assert len(first) == 300 and bool((y1 != y2).all())
    assert len(set(zip(first.tolist(), second.tolist()))) == 300
    cells = Counter(zip(y1.tolist(), y2.tolist()))
    k = len(torch.unique(test.labels))
    assert len(cells) == k * (k - 1) and max(cells.values()) - min(cells.values()) <= 1
    again = pick_different_class_pairs(test, 300, seed=1)
    other = pick_different_class_pairs(test, 300, seed=2)
    assert torch.equal(first, again[0]) and torch.equal(second, again[1])
    assert not torch.equal(first, other[0])


def test_small_class_pairs_give_all_they_have_and_too_many_pairs_refuse():
    labels = torch.tensor([0] + [1] * 5 + [2] * 5)  # (0, b) and (b, 0): 5 image pairs each; (1, 2), (2, 1): 25
    data = ImageData(torch.zeros(len(labels), 1, 8, 8, dtype=torch.uint8), labels, "toy")
    assert different_class_pair_count(data) == 70
    first, second = pick_different_class_pairs(data, 60)
    cells = Counter(zip(labels[first].tolist(), labels[second].tolist()))
    assert cells == {(0, 1): 5, (0, 2): 5, (1, 0): 5, (2, 0): 5, (1, 2): 20, (2, 1): 20}
    first, second = pick_different_class_pairs(data, 70)
    assert len(set(zip(first.tolist(), second.tolist()))) == 70  # every ordered pair once
    with pytest.raises(ConfigError, match="pairs=71 but toy has only 70 ordered pairs"):
        pick_different_class_pairs(data, 71)
    with pytest.raises(DataError, match="one class only"):
        pick_different_class_pairs(ImageData(data.images[1:6], labels[1:6], "one"), 3)


# ---------------------------------------------------------------------------------------------- the metric

def test_fractions_sum_to_one_on_a_trained_model(model, tiny_runs):
    train, test = load_data(model.config, "train"), load_data(model.config, "test")
    res = switch_metric(model, train, test, pairs=100, seed=0, train_images=400, C=0.01)
    for r in (res, res["swapped"]):
        assert all(0 <= r[k] <= 1 for k in ("follow_z", "follow_v", "neither"))
        assert r["follow_z"] + r["follow_v"] + r["neither"] == pytest.approx(1.0)
    assert res["pairs"] == 100 and res["classes"] == len(torch.unique(test.labels))
    assert res["classifier"]["n_train"] == 400 and res["classifier"]["n_test"] == len(test)
    assert res["classifier"]["C"] == 0.01 and res["classifier"]["dim"] == 64
    assert 0.5 < res["test_accuracy"] <= 1  # pixels of digits are easy for a linear classifier
    assert switch_metric(model, train, test, pairs=100, seed=0, train_images=400, C=0.01) == res


@pytest.mark.parametrize("decode, follow_z, follow_v", [("z", 1.0, 0.0), ("v", 0.0, 1.0), ("half", 0.5, 0.5)])
def test_known_decodes_give_known_fractions(model, monkeypatch, decode, follow_z, follow_v):
    monkeypatch.setattr(model, "switch_samples", _fake_switch(decode))
    train, test = _separable(30, seed=0, name="train"), _separable(10, seed=1, name="test")
    res = switch_metric(model, train, test, pairs=40, seed=0, batch_size=8)  # C cross-validated, as by default
    assert res["test_accuracy"] == 1.0
    assert (res["follow_z"], res["follow_v"], res["neither"]) == (follow_z, follow_v, 0.0)
    # The (v2, z1) cell mirrors the (v1, z2) one, and its z comes from image 1.
    assert (res["swapped"]["follow_z"], res["swapped"]["follow_v"]) == (follow_z, follow_v)


def test_saturated_inverses_are_counted_per_cell_and_pair(model, monkeypatch):
    """The (v1, z2) decodes of every third pair and the (v2, z1) decode of every pair saturated their
    inverse (``switch_samples``' mask ``[P, 4]``, one column per cell): counted per cell."""
    plain = _fake_switch("z")
    seen = {"pairs": 0}

    def switch_samples(x1, x2):
        n = len(x1)
        idx = seen["pairs"] + torch.arange(n)
        seen["pairs"] += n
        saturated = torch.zeros(n, 4, dtype=torch.bool)
        saturated[:, 1] = idx % 3 == 0
        saturated[:, 3] = True
        return Samples(plain(x1, x2).images, None, saturated)

    monkeypatch.setattr(model, "switch_samples", switch_samples)
    train, test = _separable(30, seed=0, name="train"), _separable(10, seed=1, name="test")
    res = switch_metric(model, train, test, pairs=40, seed=0, batch_size=8)
    assert res["saturated"] == pytest.approx(len(range(0, 40, 3)) / 40)
    assert res["swapped"]["saturated"] == 1.0
    assert res["follow_z"] == 1.0  # saturation is reported beside the fractions, not taken out of them


def test_decodes_of_a_third_class_count_as_neither(model, monkeypatch):
    train, test = _separable(30, seed=0, name="train"), _separable(10, seed=1, name="test")
    third = _separable(1, seed=2).images  # image c is of class c

    def switch_samples(x1, x2):
        def label(x):  # the bright row (noise never reaches 255)
            return ((x[:, 0] == 255).all(-1).float().argmax(-1) // 2).tolist()
        c = [min({0, 1, 2, 3} - {a, b}) for a, b in zip(label(x1), label(x2))]
        return Samples(torch.stack([x1, third[c], x2, third[c]], 1))

    monkeypatch.setattr(model, "switch_samples", switch_samples)
    res = switch_metric(model, train, test, pairs=40, seed=0)
    assert (res["follow_z"], res["follow_v"], res["neither"]) == (0.0, 0.0, 1.0)
    assert res["swapped"]["neither"] == 1.0


@pytest.mark.parametrize("kind", sorted(MODEL_KINDS))
def test_every_global_local_kind_scores_and_the_others_refuse_in_one_line(tiny_runs, kind):
    m = load_run(tiny_runs[kind], "cpu")
    train, test = load_data(m.config, "train"), load_data(m.config, "test")
    if not m.capabilities.global_local:
        with pytest.raises(ConfigError) as e:
            switch_metric(m, train, test, pairs=10)
        assert str(e.value).startswith(f"the switch metric does not apply to a {kind!r} model")
        assert "\n" not in str(e.value)
        return
    res = switch_metric(m, train, test, pairs=20, train_images=300, C=0.01)
    assert res["follow_z"] + res["follow_v"] + res["neither"] == pytest.approx(1.0) and res["pairs"] == 20
    assert all(0 <= r["saturated"] <= 1 for r in (res, res["swapped"]))  # every such kind decodes by a flow
    clf = res["classifier"]
    assert clf["protocol"] == "logistic" and clf["dim"] <= 1024 and clf["pool"] == (2 if test.images.shape[-1] == 64 else 1)


def test_unlabelled_data_refuses_in_one_line(model):
    test = load_data(model.config, "test")
    bare = ImageData(test.images, None, "bare/test")
    for train, tst in ((test, bare), (bare, test)):
        with pytest.raises(DataError) as e:
            switch_metric(model, train, tst, pairs=10)
        assert str(e.value) == "bare/test has no labels: the switch metric needs class labels"
    with pytest.raises(DataError, match="has no labels"):
        pick_different_class_pairs(bare, 10)
    only = test.labels == test.labels[0]
    one = ImageData(test.images[only], test.labels[only], "one/test")
    with pytest.raises(DataError, match="one/test holds one class only"):  # not "got 0 pairs" by default
        switch_metric(model, test, one)


def test_bad_counts_refuse(model):
    test = load_data(model.config, "test")
    for kw in ({"pairs": 0}, {"train_images": 0}, {"batch_size": -1}):
        with pytest.raises(ConfigError, match="must be a positive integer"):
            switch_metric(model, test, test, **kw)


# ---------------------------------------------------------------------------------------------- command and report

@pytest.fixture
def copy(tiny_runs, tmp_path) -> Path:
    """A copy of the tiny paper run, so switch.json is not written into the shared one; without the
    switch.json that other tests' commands may have left in the shared run."""
    return Path(shutil.copytree(tiny_runs["flowvae"], tmp_path / "run", ignore=shutil.ignore_patterns("switch.json")))


def test_switch_json_and_the_report_show_the_metric_escaped(copy, capsys):
    assert main(["switch", str(copy), "--pairs", "2", "--metric-pairs", "30", "--json", *CPU]) == 0
    res = json.loads(capsys.readouterr().out)
    metric = res["metric"]
    assert metric["pairs"] == 30 and set(metric) >= {"follow_z", "follow_v", "neither", "test_accuracy", "swapped"}
    assert json.loads((copy / "switch.json").read_text()) == metric
    assert main(["switch", str(copy), "--pairs", "2", "--no-metric", "--json", *CPU]) == 0
    assert json.loads(capsys.readouterr().out)["metric"] is None
    assert json.loads((copy / "switch.json").read_text()) == metric  # --no-metric leaves it alone

    metric.update(dataset="<script>alert(1)</script>", follow_z="<b>x</b>", classifier={"C": "<i>"}, saturated=0.125)
    (copy / "switch.json").write_text(json.dumps(metric))
    assert main(["report", str(copy), "-q"]) == 0
    page = (copy / "report.html").read_text()
    section = page[page.index('id="switch-section"'):]
    section = section[:section.index("</section>")]
    assert 'id="switch-grid"' in section and 'id="switch-metric-table"' in section
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in section and "<script>" not in page
    assert "<b>" not in section and "<i>" not in section and "&lt;i&gt;" in section
    assert f"{100 * metric['follow_v']:.2f}%" in section  # the numbers that are numbers are shown
    assert "<th>inverse saturated</th>" in section and ">12.50%</td></tr>" in section

    (copy / "switch.png").unlink()  # a grid written elsewhere: the metric still has its section
    assert main(["report", str(copy), "-q"]) == 0
    page = (copy / "report.html").read_text()
    assert 'id="switch-metric-table"' in page and 'id="switch-grid"' not in page


def test_switch_on_unlabelled_test_data_writes_the_grid_and_warns(copy, tmp_path, capsys, caplog):
    from PIL import Image

    bare = tmp_path / "bare"  # digits as a flat folder: no class subfolders, no labels
    bare.mkdir()
    digits = load_digits("test")
    for i in range(40):
        Image.fromarray(digits.images[i, 0].numpy()).save(bare / f"{i:02d}.png")
    (copy / "switch.png").unlink(missing_ok=True)
    assert main(["switch", str(copy), "--pairs", "2", "--data", str(bare), "--json", "--device", "cpu"]) == 0
    assert json.loads(capsys.readouterr().out)["metric"] is None and not (copy / "switch.json").exists()
    assert (copy / "switch.png").is_file()
    assert "bare/test (held out: 4 of 40 images, seed 0) has no labels, so there is no switch metric" in caplog.text


def test_switch_json_is_not_written_through_a_planted_symlink(copy, tmp_path, capsys):
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    (copy / "switch.json").symlink_to(victim)
    assert main(["switch", str(copy), "--pairs", "2", "--metric-pairs", "10", *CPU]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("flowvae switch: error: refusing to write") and "\n" not in err
    assert victim.read_text() == "keep"


@pytest.mark.parametrize(("shape", "pool"), [((1, 8, 8), 1), ((1, 28, 28), 1), ((1, 32, 32), 1), ((1, 64, 64), 2),
                                             ((3, 32, 32), 2), ((3, 64, 64), 4), ((1, 65, 65), 3)])
def test_classifier_features_are_bounded_by_pooling(shape, pool):
    from flowvae.evaluation.switching import MAX_CLASSIFIER_FEATURES, classifier_pool

    assert classifier_pool(shape) == pool
    c, h, w = shape
    dims = [c * -(-h // s) * -(-w // s) for s in (pool - 1, pool) if s >= 1]
    assert dims[-1] <= MAX_CLASSIFIER_FEATURES and (pool == 1 or dims[0] > MAX_CLASSIFIER_FEATURES)
    x = torch.zeros(2, *shape, dtype=torch.float64)
    assert torch.nn.functional.avg_pool2d(x, pool, ceil_mode=True).flatten(1).shape[1] == dims[-1]
