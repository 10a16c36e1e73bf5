"""What data a run was trained on (issue 32, items 1-3, 7 and 14): data sets named by what they are,
not by their file format; the run's data record (``data.json``) and the commands that check it or
read ``--data PATH`` instead; exported models without local paths; the model card's data set, tag
and sample grid; ``flowvae sample`` on a broken model.

IDX sets that are not MNIST are written here from MNIST's own test images (inverted), so no test
depends on a data set the machine lacks beyond ``../shared/data/mnist``.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import pickle
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import flowvae
from flowvae.api import load_run
from flowvae.cli.main import main
from flowvae.config import apply_overrides, load_config, save_config
from flowvae.data import load_dataset, shared_data_dir
from flowvae.data.registry import describe_image_folder, source_for_path
from flowvae.errors import CheckpointError, DataError
from flowvae.hub import save_pretrained
from flowvae.runs.data import DataRecord, read_data_record

pytestmark = pytest.mark.usefixtures("single_thread")

CPU = ["--device", "cpu", "-q"]
MNIST = shared_data_dir() / "mnist"
needs_mnist = pytest.mark.skipif(not (MNIST / "t10k-images-idx3-ubyte.gz").is_file(),
                                 reason=f"MNIST not found at {MNIST} (the shared data folder is absent)")


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def _write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array, dtype=np.uint8).tobytes())


@pytest.fixture(scope="module")
def fashion(tmp_path_factory) -> Path:
    """A folder ``fashion/`` of IDX training files that are not MNIST's: 200 inverted MNIST test
    digits, without t10k-* files (so a test split is held out)."""
    from flowvae.data.idxfile import read_idx

    if not (MNIST / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"MNIST not found at {MNIST}")
    images, _ = read_idx(MNIST / "t10k-images-idx3-ubyte.gz", 0x803)
    labels, _ = read_idx(MNIST / "t10k-labels-idx1-ubyte.gz", 0x801)
    root = tmp_path_factory.mktemp("sets") / "fashion"
    root.mkdir()
    _write_idx(root / "train-images-idx3-ubyte.gz", 255 - images[:200], 0x803)
    _write_idx(root / "train-labels-idx1-ubyte.gz", labels[:200], 0x801)
    return root


# ------------------------------------------------------------------------------------ item 1: names


@needs_mnist
def test_mnist_is_named_mnist_only_when_its_checksums_match(fashion, caplog):
    assert source_for_path(MNIST).name == "mnist" and describe_image_folder(MNIST).source == "mnist"
    real = load_dataset(str(MNIST), "test")
    assert (real.name, real.verified) == ("mnist/test", "mnist")
    # Other IDX files: the 'idx' source, named after their folder, never verified as MNIST.
    assert source_for_path(fashion).name == "idx" and describe_image_folder(fashion).source == "idx"
    other = load_dataset(str(fashion), "train", holdout=0.1)
    assert other.name.startswith("fashion/train (held out:") and other.verified is None
    # The same files given to the 'mnist' source are read, named after their folder, with a warning.
    with caplog.at_level(logging.WARNING, logger="flowvae"):
        as_mnist = load_dataset("mnist", "test", root=fashion, holdout=0.1)
    assert as_mnist.name.startswith("fashion/test") and as_mnist.verified is None
    assert "not MNIST's" in caplog.text
    with pytest.raises(DataError, match="pass it with --data PATH"):
        load_dataset("idx", "train")


def test_idx_sets_of_other_sizes_and_classes_are_read(tmp_path):
    root = tmp_path / "kmnist" / "raw"
    root.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        _write_idx(root / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (30, 16, 16)), 0x803)
        _write_idx(root / f"{prefix}-labels-idx1-ubyte.gz", np.arange(30) % 12, 0x801)
    data = load_dataset(str(root.parent), "test")
    # named after the set's folder, not the 'raw' folder the files sit in
    assert data.name == "kmnist/test" and data.image_shape == (1, 16, 16) and len(data.classes) == 12


def test_cifar_format_batches_that_are_not_cifar10_are_named_after_their_folder(tmp_path, caplog):
    folder = tmp_path / "my-cifar" / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (4, 3072), dtype=np.uint8), b"labels": list(range(4))}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"c%d" % i for i in range(10)]}))
    with caplog.at_level(logging.WARNING, logger="flowvae"):
        data = load_dataset("cifar10", "test", root=folder.parent)
    assert data.name == "my-cifar/test" and data.verified is None and "not CIFAR-10's" in caplog.text


def test_cifar10_jpeg_zip_is_verified_by_its_sha256(tmp_path):
    published = shared_data_dir() / "cifar10-jpeg" / "cifar10-jpeg-images.zip"
    if not published.is_file():
        pytest.skip(f"{published} not found")
    assert load_dataset("cifar10-jpeg", "test", limit=10).verified == "cifar10-jpeg"
    other = tmp_path / "recoloured.zip"
    with zipfile.ZipFile(published) as src, zipfile.ZipFile(other, "w") as dst:
        for info in src.infolist()[:40]:
            dst.writestr(info.filename, src.read(info))
    data = load_dataset(str(other), "train")
    assert data.verified is None and data.name == "recoloured/train"


def test_train_data_folder_without_preset_names_the_idx_source(fashion):
    from flowvae.cli.folders import preset_for_folder

    # as flowvae train passes it: the flags as typed fields, after the --set overrides
    cfg = preset_for_folder(fashion, [], [("train.device", "cpu"), ("data.root", str(fashion))])
    assert cfg.data.dataset == "idx" and cfg.data.root == str(fashion)


# ------------------------------------------------------------------------------------ item 2: the data record


class _Wrapped(torch.utils.data.Dataset):
    """A user's own map-style dataset: (uint8 image, label) pairs."""

    def __init__(self, data):
        self.data = data

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return self.data.images[i], int(self.data.labels[i])


@pytest.fixture(scope="module")
def python_run(tiny_runs, tmp_path_factory) -> Path:
    """A tiny flowvae run trained from Python on the digits, wrapped in a Dataset of our own."""
    cfg = apply_overrides(load_config(tiny_runs["flowvae"] / "config.yaml"), ["train.steps=1"])
    run = tmp_path_factory.mktemp("py") / "run"
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        flowvae.train(cfg, run, progress=False, train_data=_Wrapped(train), test_data=_Wrapped(test))
    finally:
        torch.set_num_threads(threads)
    return run


def test_the_run_records_what_it_was_trained_on(tiny_runs, python_run):
    record = read_data_record(tiny_runs["flowvae"])
    assert record is not None and record.origin == "config" and record.dataset == "digits"
    assert (record.train.name, record.test.name, record.verified) == ("digits/train", "digits/test", "digits")
    assert record.test.images == 64 and record.train.shape == (1, 8, 8) and record.train.labelled
    py = read_data_record(python_run)
    assert py is not None and py.origin == "python" and py.train.type == "_Wrapped" and py.train.images == 1497


@pytest.mark.parametrize("argv", [["eval"], ["check"], ["switch", "--no-metric"], ["interpolate"], ["probe"],
                                  ["traverse"], ["encode", "--out", "OUT"]])
def test_a_python_trained_run_needs_data_named(python_run, tmp_path, capsys, argv):
    argv = [a if a != "OUT" else str(tmp_path / "x.npz") for a in argv]
    assert main([argv[0], str(python_run), *argv[1:], *CPU]) == 1
    line = _one_line(capsys.readouterr().err)
    assert "trained on data passed from Python (_Wrapped: 1,497 training and 300 test images)" in line
    assert "pass --data PATH" in line


def _digits_folder(root: Path, n: int = 60) -> Path:
    """The first ``n`` test digits as PNG files in class folders (8x8 grey)."""
    from PIL import Image

    data = load_dataset("digits", "test")
    for i in range(n):
        folder = root / str(int(data.labels[i]))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(data.images[i, 0].numpy()).save(folder / f"{i}.png")
    return root


@pytest.mark.parametrize("argv", [["eval", "-k", "1"], ["check", "--limit", "4"], ["switch", "--pairs", "2"],
                                  ["interpolate", "--rows", "2", "--cols", "2"],
                                  ["probe", "--train-limit", "40", "--C", "1"], ["traverse", "--dims", "0"],
                                  ["encode", "--out", "OUT", "--split", "test"]])
def test_every_command_that_reads_images_takes_data(python_run, tmp_path, capsys, argv):
    folder = _digits_folder(tmp_path / "digits-png")
    argv = [a if a != "OUT" else str(tmp_path / "x.npz") for a in argv]
    assert main([argv[0], str(python_run), *argv[1:], "--data", str(folder), "--json", *CPU]) == 0, \
        capsys.readouterr().err
    out = capsys.readouterr().out
    if argv[0] == "eval":
        assert json.loads(out)["dataset"].startswith("digits-png/test (held out:")


def test_data_of_another_shape_is_refused_in_one_line(tiny_runs, capsys):
    published = shared_data_dir() / "cifar10-jpeg" / "cifar10-jpeg-images.zip"
    if not published.is_file():
        pytest.skip(f"{published} not found")
    assert main(["eval", str(tiny_runs["flowvae"]), "--data", str(published), *CPU]) == 1
    line = _one_line(capsys.readouterr().err)
    assert "images are 3x32x32 but the model expects 1x8x8" in line


def test_a_config_that_now_reads_other_data_is_refused(tiny_runs, fashion, tmp_path, capsys):
    run = Path(shutil.copytree(tiny_runs["flowvae"], tmp_path / "run"))
    record = json.loads((run / "data.json").read_text())
    record["test"]["name"] = "digits/test (of another day)"
    (run / "data.json").write_text(json.dumps(record))
    assert main(["eval", str(run), *CPU]) == 1
    line = _one_line(capsys.readouterr().err)
    assert "was trained on digits/test (of another day), but its config.yaml now reads digits/test" in line
    assert main(["eval", str(run), "--data", str(_digits_folder(tmp_path / "d")), *CPU]) == 0


def test_a_damaged_data_record_is_one_line(tiny_runs, tmp_path, capsys):
    run = Path(shutil.copytree(tiny_runs["flowvae"], tmp_path / "run"))
    (run / "data.json").write_text(json.dumps({"origin": "config", "dataset": "digits", "train": {"name": 1}}))
    assert main(["eval", str(run), *CPU]) == 1
    assert "is not a flowvae data record" in _one_line(capsys.readouterr().err)
    (run / "data.json").unlink()
    (run / "data.json").symlink_to("/etc/passwd")
    with pytest.raises(CheckpointError, match="symbolic link"):
        read_data_record(run)
    assert DataRecord.from_dict(json.loads((tiny_runs["flowvae"] / "data.json").read_text())).origin == "config"


# ------------------------------------------------------------------------------------ item 3: exports


def test_exports_carry_no_local_paths_but_the_data_record(tiny_runs, tmp_path, capsys):
    for kind in ("flowvae", "multistage"):
        run = tiny_runs[kind]
        assert load_config(run / "config.yaml").data.root is not None or kind == "flowvae"
        out = tmp_path / kind
        save_pretrained(load_run(run), out)
        text = (out / "config.yaml").read_text()
        cfg = yaml.safe_load(text)
        assert cfg["data"]["root"] is None and str(Path.cwd()) not in text and "/tmp" not in text
        assert cfg["model"].get("stage1_run") is None
        assert json.loads((out / "data.json").read_text()) == json.loads((run / "data.json").read_text())
        card = (out / "README.md").read_text()
        record = read_data_record(run)
        assert record is not None and record.train.name in card
    # the export is a run folder: eval reads the same data, checked against the record it carries
    assert main(["eval", str(tmp_path / "flowvae"), "-k", "1", *CPU]) == 0


def test_the_card_tags_a_hub_data_set_only_for_verified_files(tiny_runs, tmp_path):
    run = Path(shutil.copytree(tiny_runs["flowvae"], tmp_path / "run"))
    cfg = load_config(run / "config.yaml")
    cfg.data = cfg.data.replace(dataset="mnist")  # a config that names MNIST proves nothing
    save_config(cfg, run / "config.yaml")
    record = json.loads((run / "data.json").read_text())

    def card() -> dict:
        shutil.rmtree(tmp_path / "out", ignore_errors=True)
        save_pretrained(load_run(run), tmp_path / "out")
        text = (tmp_path / "out" / "README.md").read_text()
        return yaml.safe_load(text.split("---")[1])

    assert "datasets" not in card()
    for split in ("train", "test"):
        record[split]["verified"] = "mnist"
    (run / "data.json").write_text(json.dumps(record))
    assert card()["datasets"] == ["ylecun/mnist"]


# ------------------------------------------------------------------------------------ item 7: the card's grid


def test_the_card_shows_the_grid_with_the_fewest_saturated_samples(tiny_runs, tmp_path):
    from flowvae.reporting.card import sample_grid as _sample_grid

    run = Path(shutil.copytree(tiny_runs["flowvae"], tmp_path / "run"))
    samples = run / "samples"
    for f in samples.iterdir():
        f.unlink()
    png = (tiny_runs["flowvae"] / "samples" / "samples_t1.00.png").read_bytes()
    grids = {0.7: png + b"a", 0.9: png + b"b", 1.0: png + b"c"}
    saturated = {0.7: 3, 0.9: 0, 1.0: 30}
    for t, data in grids.items():
        (samples / f"samples_t{t:.2f}.png").write_bytes(data)
    stats = [{"file": f"samples_t{t:.2f}.png", "sha256": hashlib.sha256(d).hexdigest(), "samples": 64,
              "saturated_samples": saturated[t], "nonfinite_samples": 0} for t, d in grids.items()]
    (samples / "sample_stats.json").write_text(json.dumps({"grids": stats}))
    data, caption = _sample_grid(run)
    assert data == grids[0.9]
    assert caption == ("samples at temperature 0.90 (0 of 64 saturated the inverse flow), the grid with the "
                       "fewest; at temperature 1, 30 of 64 did")
    # statistics of another file (its digest differs) are not believed: temperature 1 again
    (samples / "samples_t0.90.png").write_bytes(png + b"changed")
    stats = [s for s in stats if s["file"] != "samples_t0.70.png"]
    (samples / "sample_stats.json").write_text(json.dumps({"grids": stats}))
    (samples / "samples_t0.70.png").unlink()
    assert _sample_grid(run)[0] == grids[1.0]


def test_training_writes_the_statistics_of_its_grids(tiny_runs):
    stats = json.loads((tiny_runs["flowvae"] / "samples" / "sample_stats.json").read_text())
    png = (tiny_runs["flowvae"] / "samples" / "samples_t1.00.png").read_bytes()
    (record,) = stats["grids"]
    assert record["file"] == "samples_t1.00.png" and record["sha256"] == hashlib.sha256(png).hexdigest()
    assert record["samples"] == 64 and isinstance(record["saturated_samples"], int)


# ------------------------------------------------------------------------------------ item 14: sample on NaN weights


def test_sample_exits_1_on_a_model_with_nan_weights(tiny_runs, tmp_path, capsys):
    from safetensors.torch import load_file, save_file

    run = Path(shutil.copytree(tiny_runs["flowvae"], tmp_path / "run"))
    state = load_file(str(run / "model.safetensors"))
    name = next(k for k in state if k.endswith("net.conv3.bias") and "decoder" in k)
    state[name] = torch.full_like(state[name], float("nan"))
    save_file(state, str(run / "model.safetensors"), metadata={"format": "flowvae", "kind": "flowvae"})
    assert main(["sample", str(run), "-n", "4", "-t", "1", "--out", str(tmp_path / "s"), *CPU]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out and "the model is broken" in out and (tmp_path / "s" / "samples_t1.00.png").is_file()
