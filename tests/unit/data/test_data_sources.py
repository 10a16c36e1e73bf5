"""Tests of the data-source registry: load_split on every source, seeded stratified subsets,
describe_image_folder, option checks and the bounds on what loaders read."""

from __future__ import annotations

import gzip
import pickle
import zipfile
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from flowvae.config import DataConfig
from flowvae.data import (
    CIFAR10_CLASSES,
    DATA_SOURCES,
    DATASET_NAMES,
    DataSource,
    FolderInfo,
    ImageData,
    describe_image_folder,
    get_source,
    load_dataset,
    load_dsprites,
    load_image_folder,
    load_mnist,
    load_split,
    subset_indices,
)
from flowvae.data import registry as registry_module
from flowvae.data.base import CONFIG_OPTIONS
from flowvae.data.sources import cifar10 as cifar10_source
from flowvae.data.sources import cifar10_jpeg as cifar10_jpeg_source
from flowvae.errors import DataError
from helpers import SHARED_DATA

SHARED = SHARED_DATA
MNIST_DIR = SHARED / "mnist"
CIFAR_JPEG_DIR = SHARED / "cifar10-jpeg"
DSPRITES_DIR = SHARED / "dsprites"
needs_mnist = pytest.mark.skipif(not (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
                                 reason=f"real MNIST files not found in {MNIST_DIR} (set FLOWVAE_SHARED_DATA)")
needs_cifar_jpeg = pytest.mark.skipif(not (CIFAR_JPEG_DIR / "cifar10-jpeg-images.zip").is_file(),
                                      reason=f"CIFAR-10 JPEG zip not found in {CIFAR_JPEG_DIR} (set FLOWVAE_SHARED_DATA)")
needs_dsprites = pytest.mark.skipif(not (DSPRITES_DIR / "dsprites_downsampled.npz").is_file(),
                                    reason=f"dSprites grid not found in {DSPRITES_DIR} (set FLOWVAE_SHARED_DATA)")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    # Tests must never write into the user's real ~/.cache.
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("FLOWVAE_CACHE", str(cache))
    return cache


def _cfg(dataset: str, root: Path | str | None = None, **kw: Any) -> DataConfig:
    cfg = DataConfig(dataset=dataset, root=None if root is None else str(root))
    for key, value in kw.items():
        setattr(cfg, key, value)
    return cfg


def _save(path: Path, size: tuple[int, int], mode: str = "RGB", color: object = (255, 0, 0)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def _counts(labels: torch.Tensor | None, k: int) -> list[int]:
    assert labels is not None
    return torch.bincount(labels, minlength=k).tolist()


# ---------------------------------------------------------------------------------- subset_indices


def test_subset_indices_seeded_sorted_and_complete() -> None:
    a = subset_indices(1000, 100, seed=3)
    assert a.dtype == torch.int64 and len(a) == 100 and len(set(a.tolist())) == 100
    assert torch.equal(a, a.sort().values) and 0 <= int(a.min()) and int(a.max()) < 1000
    assert torch.equal(a, subset_indices(1000, 100, seed=3))
    assert not torch.equal(a, subset_indices(1000, 100, seed=4))
    assert not torch.equal(subset_indices(1000, 100), torch.arange(100))  # not a prefix
    for limit in (None, 1000, 5000):
        assert torch.equal(subset_indices(1000, limit), torch.arange(1000))
    with pytest.raises(DataError, match="limit"):
        subset_indices(10, 0)
    with pytest.raises(DataError, match=r"labels must have shape \[10\]"):
        subset_indices(10, 3, labels=[0, 1])


@pytest.mark.parametrize("seed", [0, 1, 7])
@pytest.mark.parametrize("limit", [5, 37, 100, 999])
def test_subset_indices_stratified_within_one_and_covers_classes(limit: int, seed: int) -> None:
    counts = np.array([500, 300, 150, 45, 4, 1])
    labels = torch.from_numpy(np.repeat(np.arange(6), counts))[torch.randperm(1000, generator=torch.Generator().manual_seed(seed))]
    idx = subset_indices(1000, limit, labels, seed=seed)
    assert len(idx) == limit and torch.equal(idx, idx.sort().values)
    got = np.bincount(labels[idx].numpy(), minlength=6)
    assert (np.abs(got - limit * counts / 1000) <= 1).all() or limit < 6, (limit, got)
    if limit >= 6:
        assert (got >= 1).all()  # every class, even the one-item class
    assert torch.equal(idx, subset_indices(1000, limit, labels.numpy(), seed=seed))  # numpy labels too


def test_subset_indices_every_class_even_when_unbalanced() -> None:
    labels = [0] * 990 + list(range(1, 11))  # one big class, ten single items
    idx = subset_indices(1000, 11, labels)
    assert sorted(np.array(labels)[idx.numpy()].tolist()) == [0] + list(range(1, 11))


# ---------------------------------------------------------------------------------- registry


def test_registry_names_options_and_unknown_names() -> None:
    assert DATASET_NAMES == tuple(DATA_SOURCES) == (
        "digits", "mnist", "idx", "cifar10", "cifar10-jpeg", "folder", "imagenet64", "lsun", "celebahq", "dsprites")
    for source in DATA_SOURCES.values():
        assert isinstance(source, DataSource) and source.options <= set(CONFIG_OPTIONS) and source.description
    assert get_source("folder").options == {"limit", "size", "on_bad"}
    assert get_source("mnist").options == frozenset() and get_source("cifar10").accepts == {"download"}
    assert get_source("dsprites").accepts == {"limit", "variant"}
    with pytest.raises(DataError, match="did you mean 'mnist'"):
        get_source("mnst")
    with pytest.raises(ValueError, match="not DataConfig options"):
        DataSource("x", lambda root, split: None, frozenset({"variant"}), "x")  # type: ignore[arg-type,return-value]


def test_options_a_source_does_not_take_are_refused(tmp_path: Path) -> None:
    # Refused before anything is read, with what the source does take.
    with pytest.raises(DataError, match=r"dataset 'mnist' does not take option\(s\) limit \(it takes no options\)"):
        load_dataset("mnist", "train", root=tmp_path, limit=5)
    with pytest.raises(DataError, match=r"'cifar10-jpeg' does not take option\(s\) size \(it takes cache, limit\)"):
        load_dataset("cifar10-jpeg", "train", root=tmp_path, size=32)
    with pytest.raises(DataError, match=r"'lsun' does not take option\(s\) on_bad"):
        load_dataset("lsun", "train", root=tmp_path, on_bad="skip")
    with pytest.raises(DataError, match="does not take option"):
        load_dataset("dsprites", "train", root=tmp_path, download=True)


def test_load_split_passes_exactly_the_declared_options(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    images = torch.arange(20, dtype=torch.uint8).reshape(20, 1, 1, 1)
    labels = torch.tensor([0] * 10 + [1] * 10)

    def load(root: Any, split: str, **kw: Any) -> ImageData:
        calls.append({"root": root, "split": split, **kw})
        return ImageData(images, labels, f"spy/{split}")

    monkeypatch.setitem(registry_module._SOURCES, "spy-size", DataSource("spy-size", load, frozenset({"size"}), "spy"))
    monkeypatch.setitem(registry_module._SOURCES, "spy-all", DataSource("spy-all", load, frozenset(CONFIG_OPTIONS), "spy"))
    full = SimpleNamespace(dataset="spy-size", root="/r", n_bits=5, train_limit=4, test_limit=None, image_size=16, on_bad="skip")
    d = load_split(full, "train")
    assert calls[-1] == {"root": "/r", "split": "train", "size": 16}  # no limit, no on_bad
    # the source does not take limit: the result is cut to a stratified random subset
    assert len(d) == 4 and _counts(d.labels, 2) == [2, 2]
    assert torch.equal(d.images.flatten().long(), subset_indices(20, 4, labels))
    assert len(load_split(full, "test")) == 20  # test_limit for any split but train
    full.dataset = "spy-all"
    assert len(load_split(full, "test")) == 20
    assert calls[-1] == {"root": "/r", "split": "test", "size": 16, "on_bad": "skip"}  # limit None is not passed
    load_split(full, "train")
    assert calls[-1] == {"root": "/r", "split": "train", "limit": 4, "size": 16, "on_bad": "skip"}
    # attributes that are absent count as unset
    load_split(SimpleNamespace(dataset="spy-all"), "train")
    assert calls[-1] == {"root": None, "split": "train", "on_bad": "error"}
    with pytest.raises(DataError, match="limit must be a positive integer"):
        load_split(SimpleNamespace(dataset="spy-all", train_limit=0), "train")
    with pytest.raises(DataError, match="did you mean 'cifar10'"):
        load_split(SimpleNamespace(dataset="cifar-10"), "train")


# ---------------------------------------------------------------------------------- load_split on every source


def _fake_cifar(root: Path, n_per_batch: int = 6) -> np.ndarray:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    xs = []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        batch = {b"labels": (np.arange(n_per_batch) % 3).tolist(), b"data": x}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        if name != "test_batch":
            xs.append(x)
    meta = {b"label_names": [c.encode() for c in CIFAR10_CLASSES]}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return np.concatenate(xs)


def _write_lmdb(path: Path, items: dict[bytes, bytes]) -> None:
    lmdb = pytest.importorskip("lmdb")
    path.parent.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(str(path), map_size=1 << 24)
    with env.begin(write=True) as txn:
        for key, value in items.items():
            txn.put(key, value)
    env.close()


def _png(colour: tuple[int, int, int], size: tuple[int, int] = (8, 6)) -> bytes:
    import io

    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, "PNG")
    return buf.getvalue()


def _round_trip(cfg: Any, split: str, n: int, shape: tuple[int, int, int]) -> ImageData:
    d = load_split(cfg, split)
    assert isinstance(d, ImageData) and d.images.dtype == torch.uint8
    assert len(d) == n and d.image_shape == shape, (cfg.dataset, len(d), d.image_shape)
    return d


def test_load_split_digits() -> None:
    d = _round_trip(_cfg("digits", train_limit=50, image_size=8), "train", 50, (1, 8, 8))
    assert _counts(d.labels, 10) == [5] * 10  # digits takes no limit: load_split cuts it, stratified


@needs_mnist
def test_load_split_mnist_real_files() -> None:
    d = _round_trip(_cfg("mnist", MNIST_DIR, train_limit=100, on_bad="skip"), "train", 100, (1, 28, 28))
    full = load_mnist(MNIST_DIR, "train")
    keep = subset_indices(60000, 100, full.labels)
    assert torch.equal(d.images, full.images[keep]) and torch.equal(d.labels, full.labels[keep])
    assert set(d.labels.tolist()) == set(range(10)) and max(_counts(d.labels, 10)) <= 12
    assert len(load_split(_cfg("mnist", MNIST_DIR), "test")) == 10000


def test_load_split_cifar10_python_batches(tmp_path: Path) -> None:
    x = _fake_cifar(tmp_path)
    d = _round_trip(_cfg("cifar10", tmp_path, train_limit=9), "train", 9, (3, 32, 32))
    keep = subset_indices(30, 9, np.arange(30) % 3)
    assert _counts(d.labels, 3) == [3, 3, 3]
    assert np.array_equal(d.images.reshape(9, -1).numpy(), x[keep.numpy()])
    _round_trip(_cfg("cifar10", tmp_path), "test", 6, (3, 32, 32))


@needs_cifar_jpeg
def test_load_split_cifar10_jpeg_real_zip() -> None:
    cfg = _cfg("cifar10-jpeg", CIFAR_JPEG_DIR, train_limit=50, test_limit=20, image_size=32)  # size: not taken, ignored
    train = _round_trip(cfg, "train", 50, (3, 32, 32))
    assert _counts(train.labels, 10) == [5] * 10 and train.name == "CIFAR-10 (JPEG q75 re-encode)/train"
    assert _counts(_round_trip(cfg, "test", 20, (3, 32, 32)).labels, 10) == [2] * 10
    # the zip path itself is recognised as the CIFAR-10 JPEG zip
    cfg.dataset = str(CIFAR_JPEG_DIR / "cifar10-jpeg-images.zip")
    assert torch.equal(load_split(cfg, "test").images, load_split(_cfg("cifar10-jpeg", CIFAR_JPEG_DIR, test_limit=20), "test").images)


def test_load_split_image_folder_with_classes(tmp_path: Path) -> None:
    # a prefix limit of a class-subfolder dataset would be all one class (the linear-probe crash)
    for c, name in enumerate(("ants", "bees", "cats")):
        for i in range(10):
            _save(tmp_path / "train" / name / f"{i:02d}.png", (6, 4), "RGB", (10 * c, i, 0))
    _save(tmp_path / "test" / "ants" / "x.png", (6, 4), "L", 3)
    (tmp_path / "train" / "ants" / "00.png").write_bytes(b"not a png")
    cfg = _cfg("folder", tmp_path, train_limit=6, image_size=4, on_bad="skip")
    d = _round_trip(cfg, "train", 6, (3, 4, 4))
    assert d.classes == ["ants", "bees", "cats"] and _counts(d.labels, 3) == [2, 2, 2]
    assert d.images[:, 0, 0, 0].tolist() == [10 * int(label) for label in d.labels]
    # classes come from the whole folder, so labels keep their meaning in a subset missing a class
    two = load_image_folder(tmp_path, "train", size=4, limit=2, on_bad="skip")
    assert two.classes == ["ants", "bees", "cats"] and len(set(two.labels.tolist())) == 2
    assert len(load_split(cfg, "test")) == 1
    # a folder path as the dataset: inferred as a folder, the same options passed
    assert torch.equal(load_split(_cfg(str(tmp_path), train_limit=6, image_size=4, on_bad="skip"), "train").images, d.images)


def test_load_split_imagenet64_npz(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.integers(0, 256, (8, 12288), dtype=np.uint8)
    np.savez(tmp_path / "train_data_batch_1.npz", data=data, labels=np.array([1, 2] * 4))
    np.savez(tmp_path / "val_data.npz", data=data[:3], labels=np.array([5, 6, 7]))
    d = _round_trip(_cfg("imagenet64", tmp_path, train_limit=4, image_size=64), "train", 4, (3, 64, 64))
    keep = subset_indices(8, 4, np.array([0, 1] * 4)).numpy()
    assert np.array_equal(d.images.reshape(4, -1).numpy(), data[keep]) and _counts(d.labels, 2) == [2, 2]
    _round_trip(_cfg("imagenet64", tmp_path), "test", 3, (3, 64, 64))


def test_load_split_lsun_exported_folder_and_lmdb(tmp_path: Path) -> None:
    for i in range(4):
        _save(tmp_path / "export" / "train" / f"{i}" / f"{i}.png", (8, 6), "RGB", (40 * i, 0, 0))
    _save(tmp_path / "export" / "val" / "a.png", (8, 6), "RGB", (0, 9, 0))
    cfg = _cfg("lsun", tmp_path / "export", train_limit=2, image_size=4)
    d = _round_trip(cfg, "train", 2, (3, 4, 4))
    assert d.labels is None and d.images[:, 0, 0, 0].tolist() == [40 * k for k in subset_indices(4, 2).tolist()]
    _round_trip(cfg, "test", 1, (3, 4, 4))
    pytest.importorskip("lmdb")
    _write_lmdb(tmp_path / "lmdb" / "bedroom_train_lmdb", {f"{k:02x}".encode(): _png((k, 0, 0)) for k in range(5)})
    d = load_split(_cfg("lsun", tmp_path / "lmdb", train_limit=3, image_size=2), "train")
    assert d.name == "lsun-bedroom/train" and d.images[:, 0, 0, 0].tolist() == subset_indices(5, 3).tolist()


def test_load_split_celebahq_npy(tmp_path: Path) -> None:
    faces = np.arange(10, dtype=np.uint8)[:, None, None, None] * np.ones((1, 3, 6, 6), np.uint8)
    np.save(tmp_path / "faces.npy", faces)  # 10 images: 9 train, 1 test
    d = _round_trip(_cfg("celebahq", tmp_path, train_limit=3, image_size=6), "train", 3, (3, 6, 6))
    assert d.images[:, 0, 0, 0].tolist() == subset_indices(9, 3).tolist()
    assert load_split(_cfg("celebahq", tmp_path), "test").images.shape == (1, 3, 256, 256)  # default size


@needs_dsprites
def test_load_split_dsprites_real_file() -> None:
    d = _round_trip(_cfg("dsprites", DSPRITES_DIR, train_limit=30, image_size=64), "train", 30, (1, 64, 64))
    assert _counts(d.labels, 3) == [10, 10, 10] and d.classes == ["square", "ellipse", "heart"]  # not all squares
    whole = load_dsprites(DSPRITES_DIR, "train")
    keep = subset_indices(len(whole), 30, whole.factors[:, 0])
    assert torch.equal(d.images, whole.images[keep]) and d.images.unique().tolist() == [0, 255]


def test_every_registered_source_has_a_round_trip_test() -> None:
    # The load_split tests above cover these sources; a newly registered one needs its own.
    # idx: tests/integration/test_own_folders.py (IDX training files only) and tests/unit/data/test_data_identity.py
    covered = {"digits", "mnist", "idx", "cifar10", "cifar10-jpeg", "folder", "imagenet64", "lsun", "celebahq",
               "dsprites"}
    assert set(DATA_SOURCES) <= covered, f"add a load_split test for {sorted(set(DATA_SOURCES) - covered)}"


# ---------------------------------------------------------------------------------- describe_image_folder


def test_describe_image_folder_channels_follow_the_loader(tmp_path: Path) -> None:
    _save(tmp_path / "la" / "b.png", (4, 5), "LA", (90, 128))
    _save(tmp_path / "la" / "a.png", (4, 5), "LA", (30, 255))  # first in sorted order
    info = describe_image_folder(tmp_path / "la")
    assert isinstance(info, FolderInfo)
    assert (info.channels, info.height, info.width, info.n_files, info.format, info.source) == (1, 5, 4, 2, "images", "folder")
    assert info.first == tmp_path / "la" / "a.png" and not info.has_split
    assert load_image_folder(tmp_path / "la").image_shape == (1, 5, 4)  # grey+alpha is grey
    # one colour image makes the loader convert the whole folder to RGB: described as 3 channels
    _save(tmp_path / "mixed" / "a.png", (4, 5), "LA", (90, 128))
    _save(tmp_path / "mixed" / "b.png", (4, 5), "RGBA", (1, 2, 3, 4))
    assert describe_image_folder(tmp_path / "mixed").channels == 3 == load_image_folder(tmp_path / "mixed").image_shape[0]
    for mode, colour, channels in (("RGBA", (1, 2, 3, 4), 3), ("L", 7, 1), ("P", 3, 3), ("I;16", 300, 1), ("RGB", (1, 2, 3), 3)):
        folder = tmp_path / mode.replace(";", "_")
        _save(folder / "x.png", (3, 2), mode, colour)
        assert describe_image_folder(folder).channels == channels == load_image_folder(folder).image_shape[0], mode


def test_describe_image_folder_listing_is_the_loaders(tmp_path: Path) -> None:
    _save(tmp_path / "train" / "b" / "1.jpg", (12, 10))
    _save(tmp_path / "train" / "a" / "2.webp", (7, 3))
    _save(tmp_path / "train" / ".hidden" / "0.png", (5, 5))
    _save(tmp_path / "train" / "0.bmp", (5, 5))  # not a suffix the loader reads
    _save(tmp_path / "test" / "a" / "z.png", (7, 3))
    info = describe_image_folder(tmp_path)
    assert (info.height, info.width, info.n_files, info.has_split) == (3, 7, 2, True)
    assert info.first == tmp_path / "train" / "a" / "2.webp" and info.channels == 3
    only_bmp = tmp_path / "bmp"
    _save(only_bmp / "x.bmp", (4, 4))
    with pytest.raises(DataError, match=r"no usable data under .*bmp: no \.png/\.jpg/\.jpeg/\.webp") as err:
        describe_image_folder(only_bmp)
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match="not a folder"):
        describe_image_folder(tmp_path / "absent")


def test_describe_image_folder_dataset_formats(tmp_path: Path) -> None:
    _fake_cifar(tmp_path / "cifar")
    info = describe_image_folder(tmp_path / "cifar")
    assert (info.format, info.source, info.channels, info.height, info.n_files) == ("cifar-python", "cifar10", 3, 32, 6)

    idx = tmp_path / "idx"
    idx.mkdir()
    header = (0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (2, 20, 24))
    (idx / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(header + bytes(2 * 20 * 24)))
    info = describe_image_folder(idx)
    assert (info.format, info.source, info.channels, info.height, info.width, info.n_files) == ("idx", "idx", 1, 20, 24, 1)

    np.savez(tmp_path / "val_data.npz", data=np.zeros((1, 12288), np.uint8), labels=np.array([1]))
    info = describe_image_folder(tmp_path)
    assert (info.format, info.source, info.channels, info.height) == ("npz", "imagenet64", 3, 64)

    npy = tmp_path / "npy"
    npy.mkdir()
    np.save(npy / "imgHQ00000.npy", np.zeros((1, 3, 16, 12), np.uint8))
    info = describe_image_folder(npy)
    assert (info.format, info.source, info.channels, info.height, info.width) == ("npy", "celebahq", 3, 16, 12)

    pytest.importorskip("lmdb")
    _write_lmdb(tmp_path / "lsun" / "bedroom_train_lmdb", {b"00": _png((1, 2, 3), (10, 7))})
    info = describe_image_folder(tmp_path / "lsun")
    assert (info.format, info.source, info.channels, info.height, info.width) == ("lmdb", "lsun", 3, 7, 10)


@pytest.mark.skipif(not (MNIST_DIR.is_dir() and CIFAR_JPEG_DIR.is_dir() and DSPRITES_DIR.is_dir()),
                    reason=f"shared data folders not found in {SHARED} (set FLOWVAE_SHARED_DATA)")
def test_describe_image_folder_on_the_shared_data() -> None:
    mnist = describe_image_folder(MNIST_DIR)
    assert (mnist.format, mnist.channels, mnist.height, mnist.width, mnist.n_files) == ("idx", 1, 28, 28, 4)
    cifar = describe_image_folder(CIFAR_JPEG_DIR)
    assert (cifar.format, cifar.source, cifar.channels, cifar.height, cifar.width) == ("zip", "cifar10-jpeg", 3, 32, 32)
    sprites = describe_image_folder(DSPRITES_DIR)
    assert (sprites.format, sprites.source, sprites.channels, sprites.height) == ("npz", "dsprites", 1, 64)


# ---------------------------------------------------------------------------------- what loaders may read


def test_symlinks_out_of_the_folder_are_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    _save(outside / "secret.png", (4, 4), "RGB", (9, 9, 9))
    data = tmp_path / "data"
    _save(data / "a.png", (4, 4), "RGB", (1, 1, 1))
    try:
        (data / "b.png").symlink_to(outside / "secret.png")
        (data / "sub").symlink_to(outside, target_is_directory=True)
        (data / "c.png").symlink_to(data / "a.png")  # inside the folder: fine
    except OSError:
        pytest.skip("this file system cannot make symlinks")
    d = load_image_folder(data)
    assert len(d) == 2 and d.images[:, 0, 0, 0].tolist() == [1, 1]
    assert describe_image_folder(data).n_files == 2


def test_sizes_are_bounded_before_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # an IDX header claiming 2**40 bytes is refused without reading (or allocating) its payload
    header = (0x803).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (1 << 24, 256, 256))
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(header + bytes(100))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes((0x801).to_bytes(4, "big") + (1).to_bytes(4, "big") + b"\0")
    with pytest.raises(DataError, match=r"claims \d+ bytes.*damaged"):
        load_mnist(tmp_path, "test")

    _fake_cifar(tmp_path / "c")
    monkeypatch.setattr(cifar10_source, "_MAX_BATCH_BYTES", 1000)
    with pytest.raises(DataError, match="more than any CIFAR-10 batch"):
        load_dataset("cifar10", "test", root=tmp_path / "c")

    path = tmp_path / "c.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("test/cat/0000.jpg", _png((1, 2, 3), (32, 32)) + bytes(5000))
    monkeypatch.setattr(cifar10_jpeg_source, "_MAX_ENTRY_BYTES", 4000)
    with pytest.raises(DataError, match="too large for a 32x32 JPEG"):
        load_dataset(str(path), "test", cache=False)
