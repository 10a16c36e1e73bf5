"""``flowvae train --data FOLDER`` on users' own data: every format the loaders know is recognised
(and said so in the log), a set without a test split gets a seeded, class-stratified held-out one,
resized images and dropped alpha channels are counted, and the architecture suits the images and
the machine (a CPU-sized one on a CPU, the paper's named as the GPU option; a warning for a large
model on a CPU).

Real data: MNIST's IDX files and the CIFAR-10 JPEGs of ``../shared/data`` (written here into the
formats under test: IDX, a 64x64 grey PNG folder, CIFAR-10 python batches, npz, a zip); tests that
need them skip when the folder is absent. Each training run is 2 steps of a CPU-sized model.
"""

from __future__ import annotations

import gzip
import io
import json
import logging
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flowvae.cli.main import main
from flowvae.config import DataConfig, load_config
from flowvae.data import describe_image_folder, load_image_folder, load_split, subset_indices
from flowvae.data.base import HOLDOUT_SEED, holdout_indices
from flowvae.errors import DataError
from flowvae.presets import CPU_PARAMETER_WARNING, choose_preset, cpu_size_warning, parameter_count
from helpers import SHARED_DATA

pytestmark = pytest.mark.usefixtures("single_thread")




MNIST_DIR = SHARED_DATA / "mnist"
CIFAR_ZIP = SHARED_DATA / "cifar10-jpeg" / "cifar10-jpeg-images.zip"
needs_mnist = pytest.mark.skipif(not (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
                                 reason=f"real MNIST files not found in {MNIST_DIR} (set FLOWVAE_SHARED_DATA)")
needs_cifar = pytest.mark.skipif(not CIFAR_ZIP.is_file(),
                                 reason=f"CIFAR-10 JPEG zip not found at {CIFAR_ZIP} (set FLOWVAE_SHARED_DATA)")

# Two steps of a CPU-sized model, evaluated on 16 images, one sample grid.
STEPS = ["--steps", "2", "--device", "cpu", "--set", "train.eval_every=2", "train.checkpoint_every=2",
         "train.init_batch_size=16", "train.batch_size=8", "data.test_limit=16", "train.eval_images=16",
         "train.sample_temperatures=[1.0]"]


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWVAE_CACHE", str(tmp_path_factory.mktemp("cache")))  # never the user's ~/.cache


@pytest.fixture(scope="module")
def cifar() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """20 real CIFAR-10 training images per class: ``uint8 [200, 32, 32, 3]``, labels, class names."""
    if not CIFAR_ZIP.is_file():
        pytest.skip(f"CIFAR-10 JPEG zip not found at {CIFAR_ZIP}")
    from flowvae.data.sources.cifar10 import CIFAR10_CLASSES

    images, labels = [], []
    with zipfile.ZipFile(CIFAR_ZIP) as zf:
        for c, name in enumerate(CIFAR10_CLASSES):
            for i in range(20):
                with Image.open(io.BytesIO(zf.read(f"train/{name}/{i:04d}.jpg"))) as img:
                    images.append(np.asarray(img.convert("RGB")))
                labels.append(c)
    return np.stack(images), np.array(labels), list(CIFAR10_CLASSES)


def _train(tmp_path: Path, data: Path, *extra: str) -> tuple[int, Path]:
    run = tmp_path / "run"
    return main(["train", "--data", str(data), "--run", str(run), *STEPS, *extra]), run


def _write_idx(path: Path, array: np.ndarray, magic: int) -> None:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


def _idx_folder(folder: Path, n_train: int, n_test: int, gz: bool = True) -> Path:
    """IDX files in the real format (Fashion-MNIST's names, gzipped or not) from real MNIST images."""
    from flowvae.data import load_mnist

    folder.mkdir(parents=True)
    ext = ".gz" if gz else ""
    for prefix, split, n in (("train", "train", n_train), ("t10k", "test", n_test)):
        if not n:
            continue
        d = load_mnist(MNIST_DIR, split)
        keep = subset_indices(len(d), n, d.labels, 1)
        _write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", d.images[keep, 0].numpy(), 0x803)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", d.labels[keep].numpy(), 0x801)
    return folder


def _log(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


# ---------------------------------------------------------------------------------------------- formats


@needs_mnist
def test_idx_folder_trains_without_a_preset(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Fashion-MNIST as Debian ships it: IDX files, gzipped; the IDX reader reads them (not the MNIST
    source: their checksums are not MNIST's), named after their folder."""
    folder = _idx_folder(tmp_path / "fashion-mnist", 300, 50)
    caplog.set_level(logging.INFO)
    code, run = _train(tmp_path, folder)
    assert code == 0
    cfg = load_config(run / "config.yaml")
    assert (cfg.data.dataset, cfg.model.in_channels, cfg.model.image_size) == ("idx", 1, 28)
    log = _log(caplog)
    assert "recognised MNIST-style IDX files (4 files, 300 training images)" in log
    assert "'idx' data source" in log and "using the mnist architecture" in log
    assert "fashion-mnist/train" in log and "mnist/train" not in log.replace("fashion-mnist/train", "")
    assert "resiz" not in log  # 28x28 already: nothing to resize, nothing said
    assert parameter_count(cfg) < CPU_PARAMETER_WARNING


@needs_mnist
def test_idx_train_files_only_get_a_held_out_test_split(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = _idx_folder(tmp_path / "idx", 120, 0, gz=False)
    info = describe_image_folder(folder)
    assert (info.format, info.source, info.n_images, info.has_split) == ("idx", "idx", 120, False)
    caplog.set_level(logging.INFO)
    cfg = DataConfig(dataset=str(folder))
    train, test = load_split(cfg, "train"), load_split(cfg, "test")
    assert (len(train), len(test)) == (108, 12) and "held out: 12 of 120 images, seed 0" in test.name
    assert set(test.labels.tolist()) == set(range(10))  # stratified: every class is tested
    assert f"no test split in {folder}" in _log(caplog)


@needs_cifar
def test_grey_64_folder_gets_a_cpu_architecture_and_names_the_papers(tmp_path: Path, cifar, caplog) -> None:
    """400 grey 64x64 faces got the 107 M-parameter ImageNet model on a 2-core CPU: now a small one."""
    images, labels, classes = cifar
    folder = tmp_path / "grey64"
    for k, (img, c) in enumerate(zip(images, labels)):
        (folder / classes[c]).mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).convert("L").resize((64, 64), Image.Resampling.BICUBIC).save(folder / classes[c] / f"{k:03d}.png")
    caplog.set_level(logging.INFO)
    code, run = _train(tmp_path, folder)
    assert code == 0
    cfg = load_config(run / "config.yaml")
    assert (cfg.data.dataset, cfg.model.in_channels, cfg.model.image_size) == ("folder", 1, 64)
    assert parameter_count(cfg) < CPU_PARAMETER_WARNING
    log = _log(caplog)
    assert "recognised a folder of 200 images in 10 class subfolders, without a test split" in log
    assert "on a GPU, the paper's architecture for 64x64 images is preset imagenet64's" in log
    assert "--set model.steps=[0,[8,8],[8,8],[6,6],4] model.hidden=[24,512,512,512,512]" in log
    assert f"no test split in {folder}: holding out 20 of 200 images, seed {HOLDOUT_SEED}, stratified by class" in log
    assert "resiz" not in log
    assert json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["test_n"] == 16


@needs_cifar
def test_cifar_batches_and_npz_through_data(tmp_path: Path, cifar, caplog: pytest.LogCaptureFixture) -> None:
    images, labels, classes = cifar
    rows = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # CIFAR's rows: R, G, B planes
    batches = tmp_path / "cifar-10-batches-py"
    batches.mkdir()
    for name, part in [*((f"data_batch_{i + 1}", slice(30 * i, 30 * i + 30)) for i in range(5)), ("test_batch", slice(150, 200))]:
        d = {b"data": np.ascontiguousarray(rows[part]), b"labels": labels[part].tolist()}
        (batches / name).write_bytes(pickle.dumps(d, protocol=2))
    (batches / "batches.meta").write_bytes(pickle.dumps({b"label_names": [c.encode() for c in classes]}, protocol=2))
    caplog.set_level(logging.INFO)
    code, run = _train(tmp_path, batches)
    assert code == 0 and load_config(run / "config.yaml").data.dataset == "cifar10"
    assert "recognised CIFAR-10 python batches (6 files); read by the 'cifar10' data source" in _log(caplog)
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(batches, arcname="cifar-10-batches-py")
    info = describe_image_folder(archive)
    assert (info.format, info.source, info.channels, info.height) == ("cifar-python", "cifar10", 3, 32)

    npz = tmp_path / "imagenet64"
    npz.mkdir()
    big = np.stack([np.asarray(Image.fromarray(i).resize((64, 64), Image.Resampling.BICUBIC)) for i in images])
    flat = big.transpose(0, 3, 1, 2).reshape(len(big), -1)
    np.savez(npz / "train_data_batch_1.npz", data=flat[:160], labels=labels[:160] + 1)
    np.savez(npz / "val_data.npz", data=flat[160:], labels=labels[160:] + 1)
    caplog.clear()
    run2 = tmp_path / "run2"
    assert main(["train", "--data", str(npz), "--run", str(run2), *STEPS]) == 0
    cfg = load_config(run2 / "config.yaml")
    assert (cfg.data.dataset, cfg.data.image_size, cfg.model.image_size, cfg.model.in_channels) == ("imagenet64", 64, 64, 3)
    assert parameter_count(cfg) < CPU_PARAMETER_WARNING
    assert "recognised Downsampled ImageNet npz batches (2 files, 160 training images)" in _log(caplog)


def test_zip_of_images_and_lmdb_are_recognised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "shapes.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for c in ("circles", "squares"):
            for i in range(10):
                buf = io.BytesIO()
                Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(buf, "PNG")
                zf.writestr(f"{c}/{i}.png", buf.getvalue())
        zf.writestr("__MACOSX/circles/._0.png", b"junk")
    info = describe_image_folder(path)
    assert (info.format, info.source, info.n_images, info.n_classes, info.channels) == ("zip", "folder", 20, 2, 1)
    caplog.set_level(logging.INFO)
    cfg = DataConfig(dataset="folder", root=str(path), image_size=8)
    train, test = load_split(cfg, "train"), load_split(cfg, "test")
    assert (len(train), len(test)) == (18, 2) and sorted(test.labels.tolist()) == [0, 1]
    assert "holding out 2 of 20 images" in _log(caplog)
    # a folder that holds just that zip reads it too
    (tmp_path / "only").mkdir()
    (tmp_path / "only" / "shapes.zip").write_bytes(path.read_bytes())
    assert torch.equal(load_split(DataConfig(dataset="folder", root=str(tmp_path / "only"), image_size=8), "test").images,
                       test.images)
    code, run = _train(tmp_path, path, "model.d_z=4")
    assert code == 0 and load_config(run / "config.yaml").data.dataset == "folder"
    assert "recognised a zip of 20 images in 2 class subfolders, without a test split" in _log(caplog)

    lmdb = pytest.importorskip("lmdb")
    (tmp_path / "lsun" / "bedroom_train_lmdb").mkdir(parents=True)
    env = lmdb.open(str(tmp_path / "lsun" / "bedroom_train_lmdb"), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for k in range(3):
            buf = io.BytesIO()
            Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(buf, "WEBP")
            txn.put(f"{k:02d}".encode(), buf.getvalue())
    env.close()
    from flowvae.cli.folders import preset_for_folder

    caplog.clear()
    cfg2 = preset_for_folder(tmp_path / "lsun", ["train.device=cpu"])
    assert (cfg2.data.dataset, cfg2.data.image_size, cfg2.model.image_size) == ("lsun", 32, 32)
    assert "recognised an LSUN lmdb (1 file, 3 training images)" in _log(caplog)


# ---------------------------------------------------------------------------------------------- held-out split


def test_held_out_split_is_stratified_seeded_disjoint_and_logged(tmp_path: Path, caplog) -> None:
    counts = {"ants": 30, "bees": 12, "cats": 6, "dogs": 2, "eels": 1}
    for c, n in counts.items():
        for i in range(n):
            path = tmp_path / "data" / c / f"{i:02d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.new("L", (4, 4), 10 * len(c) + i).save(path)
    root = tmp_path / "data"
    caplog.set_level(logging.INFO)
    cfg = DataConfig(dataset="folder", root=str(root))
    train, test = load_split(cfg, "train"), load_split(cfg, "test")
    n = sum(counts.values())  # 51: 5 held out (10%), one from each class of two or more
    assert (len(train), len(test)) == (n - 5, 5)
    assert np.bincount(test.labels.numpy(), minlength=5).tolist() == [2, 1, 1, 1, 0]  # the single eel stays
    assert np.bincount(train.labels.numpy(), minlength=5).tolist() == [28, 11, 5, 1, 1]
    assert train.classes == test.classes == sorted(counts)
    # disjoint and covering: the pixels identify the files
    key = lambda d: {(int(lab), int(px)) for lab, px in zip(d.labels, d.images[:, 0, 0, 0])}  # noqa: E731
    assert not key(train) & key(test) and len(key(train) | key(test)) == n
    # the same on every call (seeded), named and logged
    assert torch.equal(load_split(cfg, "test").images, test.images)
    assert test.name == f"data/test (held out: 5 of {n} images, seed 0)" and "held out" in train.name
    assert (f"no test split in {root}: holding out 5 of {n} images, seed 0, stratified by class; "
            f"training on the other {n - 5}") in _log(caplog)
    # limits are seeded, stratified subsets of each side
    limited = load_split(DataConfig(dataset="folder", root=str(root), train_limit=10), "train")
    assert len(limited) == 10 and set(key(limited)) <= key(train) and len(set(limited.labels.tolist())) == 5
    # the plain loader still reads the whole folder unless asked
    assert len(load_image_folder(root, "test")) == n
    assert torch.equal(load_image_folder(root, "test", holdout=0.1).images, test.images)


def test_held_out_split_of_a_train_folder_only_and_unlabelled(tmp_path: Path) -> None:
    for i in range(20):
        path = tmp_path / "a" / "train" / f"{i:02d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (4, 4), i).save(path)
    cfg = DataConfig(dataset="folder", root=str(tmp_path / "a"))
    train, test = load_split(cfg, "train"), load_split(cfg, "test")
    assert (len(train), len(test), train.labels) == (18, 2, None)
    _, expected, held = holdout_indices(20)
    assert test.images[:, 0, 0, 0].tolist() == expected.tolist() and not held.stratified
    # val/ stands for test/
    path = tmp_path / "a" / "val" / "x.png"
    path.parent.mkdir()
    Image.new("L", (4, 4), 99).save(path)
    assert load_split(cfg, "test").images.flatten().unique().tolist() == [99] and len(load_split(cfg, "train")) == 20


def test_holdout_indices_edge_cases() -> None:
    train, test, held = holdout_indices(10, [0] * 5 + [1] * 5)
    assert torch.equal(torch.sort(torch.cat([train, test])).values, torch.arange(10))
    assert np.bincount(np.array([0] * 5 + [1] * 5)[test.numpy()]).tolist() == [1, 1] and held.n_test == 2
    assert torch.equal(holdout_indices(10, [0] * 5 + [1] * 5, seed=0)[1], test)
    assert not torch.equal(holdout_indices(1000, seed=1)[1], holdout_indices(1000, seed=2)[1])
    with pytest.raises(DataError, match="single image"):
        holdout_indices(3, [0, 1, 2])
    with pytest.raises(DataError, match="from 1 image"):
        holdout_indices(1)
    with pytest.raises(DataError, match="at most 0.5"):
        holdout_indices(10, fraction=0.9)


# ---------------------------------------------------------------------------------------------- what changed


def test_resized_and_alpha_counts_are_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i in range(8):
        Image.new("RGB", (28, 28), (i, 0, 0)).save(folder / f"a{i}.png")
    for i in range(3):
        Image.new("RGB", (40, 30), (0, i, 0)).save(folder / f"b{i}.png")
    Image.new("RGBA", (28, 28), (1, 2, 3, 255)).save(folder / "c0.png")
    Image.new("RGBA", (28, 28), (1, 2, 3, 0)).save(folder / "c1.png")
    Image.new("LA", (40, 40), (9, 128)).save(folder / "c2.png")
    caplog.set_level(logging.INFO, logger="flowvae")
    d = load_image_folder(folder, size=28)
    assert d.images.shape == (14, 3, 28, 28)
    log = _log(caplog)
    assert "mixed: resized 4 of 14 images to 28x28 (centre-cropped to a square, PIL bicubic); the other 10 already were" in log
    assert "mixed: dropped the alpha channel of 3 of 14 images" in log and "2 with transparent pixels" in log
    assert torch.equal(d.images[0, :, 0, 0], torch.tensor([0, 0, 0], dtype=torch.uint8))  # same size: exact pixels
    caplog.clear()
    assert len(load_image_folder(folder, size=28, limit=8)) == 8  # a seeded subset
    same = tmp_path / "same"
    same.mkdir()
    for i in range(3):
        Image.new("RGB", (28, 28), (i, 0, 0)).save(same / f"{i}.png")
    caplog.clear()
    load_image_folder(same, size=28)
    assert "resiz" not in _log(caplog)  # nothing to resize: nothing said

    code, run = _train(tmp_path, folder)  # 13 images to train on, 1 held out
    assert code == 0 and load_config(run / "config.yaml").model.image_size == 28
    assert "of 13 images to 28x28" in _log(caplog) and "of 13 images (RGBA" in _log(caplog)


# ---------------------------------------------------------------------------------------------- the machine


def test_architecture_depends_on_size_channels_data_and_machine() -> None:
    cpu = choose_preset(1, 64, 64, 360, device="cpu")
    assert (cpu.size, cpu.device, cpu.published) == (64, "cpu", "imagenet64") and cpu.parameters < CPU_PARAMETER_WARNING
    assert cpu.config.model.in_channels == 1 and cpu.config.model.steps[0] == 0 and "half width" in cpu.variant
    assert cpu.gpu_overrides and cpu.published_parameters > 50_000_000
    big_cpu = choose_preset(3, 64, 64, 100_000, device="cpu")
    assert big_cpu.parameters > cpu.parameters and big_cpu.parameters < CPU_PARAMETER_WARNING
    gpu = choose_preset(3, 64, 64, 100_000, device="cuda")
    assert gpu.name == "imagenet64" and gpu.parameters == gpu.published_parameters and not gpu.gpu_overrides
    assert choose_preset(3, 64, 64, 500, device="cuda").parameters < CPU_PARAMETER_WARNING  # too few images
    assert choose_preset(3, 32, 32, 50_000, device="cpu").name == "cifar10-small"
    assert choose_preset(3, 32, 32, 50_000, device="cuda").name == "cifar10"
    assert choose_preset(1, 28, 28, 60_000, device="cuda").name == "mnist"
    for side in (128, 256):
        c = choose_preset(3, side, side, 30_000, device="cpu")
        assert c.size == side and c.parameters < CPU_PARAMETER_WARNING
        assert c.config.train.batch_size <= 16
    assert choose_preset(3, 32, 32, 5).config.train.batch_size == 5  # never more than the images


def test_cpu_size_warning() -> None:
    from flowvae.models import create_model
    from flowvae.presets import get_preset

    with torch.device("meta"):
        big = create_model(get_preset("cifar10"))
        small = create_model(get_preset("digits"))
    message = cpu_size_warning(big, "cpu")
    assert message is not None and "51.9 M parameters" in message and "CPU" in message
    assert cpu_size_warning(big, torch.device("cuda", 0)) is None
    assert cpu_size_warning(small, "cpu") is None
