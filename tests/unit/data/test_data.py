"""Tests of flowvae.data: loaders on real and synthetic files, quantisation, the torch Dataset."""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import pickle
import sys
import tarfile
import urllib.error
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flowvae.data import (
    CIFAR10_CLASSES,
    ImageData,
    ImageTensorDataset,
    bins_to_uint8,
    celebahq_train_count,
    load_celebahq,
    load_cifar10,
    load_cifar10_jpeg_zip,
    load_dataset,
    load_digits,
    load_image_folder,
    load_imagenet64,
    load_lsun,
    load_mnist,
    quantize,
    subset_indices,
)
from flowvae.data.sources import cifar10 as cifar10_source
from flowvae.data.sources import imagenet64 as imagenet64_source
from flowvae.errors import DataError
from helpers import SHARED_DATA

SHARED = SHARED_DATA
MNIST_DIR = SHARED / "mnist"
CIFAR_JPEG_ZIP = SHARED / "cifar10-jpeg" / "cifar10-jpeg-images.zip"
needs_mnist = pytest.mark.skipif(
    not (MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
    reason=f"real MNIST files not found in {MNIST_DIR} (set FLOWVAE_SHARED_DATA to the shared data folder)",
)
needs_cifar_jpeg = pytest.mark.skipif(
    not CIFAR_JPEG_ZIP.is_file(),
    reason=f"CIFAR-10 JPEG zip not found at {CIFAR_JPEG_ZIP} (set FLOWVAE_SHARED_DATA to the shared data folder)",
)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    # Tests must never write into the user's real ~/.cache.
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("FLOWVAE_CACHE", str(cache))
    return cache


# ---------------------------------------------------------------------------------- ImageData


def test_imagedata_validation() -> None:
    with pytest.raises(DataError, match="empty dataset"):
        ImageData(torch.zeros(0, 1, 8, 8, dtype=torch.uint8), None, "x/train")
    with pytest.raises(DataError, match="uint8"):
        ImageData(torch.zeros(2, 1, 8, 8), None, "x/train")
    with pytest.raises(DataError, match=r"\[N, C, H, W\]"):
        ImageData(torch.zeros(2, 8, 8, dtype=torch.uint8), None, "x/train")
    with pytest.raises(DataError, match="labels"):
        ImageData(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64), "x/train")
    d = ImageData(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), None, "x/train")
    assert len(d) == 2 and d.image_shape == (1, 8, 8)


# ---------------------------------------------------------------------------------- digits


def test_digits_shapes_range_and_split() -> None:
    from sklearn.datasets import load_digits as sk_load_digits

    train, test = load_digits("train"), load_digits("test")
    assert train.images.shape == (1497, 1, 8, 8) and test.images.shape == (300, 1, 8, 8)
    assert train.images.dtype == torch.uint8 and train.labels is not None and train.labels.dtype == torch.int64
    assert train.name == "digits/train" and test.name == "digits/test"
    assert int(train.images.min()) == 0 and int(train.images.max()) == 255
    # 17 levels 0..16 -> 17 distinct uint8 values, 8 -> 128
    sk = sk_load_digits()
    values = set(torch.unique(torch.cat([train.images.flatten(), test.images.flatten()])).tolist())
    assert values <= {int(np.floor(v * 255 / 16 + 0.5)) for v in range(17)}
    assert 128 in values
    # stratified: exactly 30 per class in test
    assert torch.bincount(test.labels, minlength=10).tolist() == [30] * 10
    # disjoint and complete: the two splits together are exactly the 1,797 original images
    sk_rows = [r.tobytes() for r in np.floor(sk.images * 255 / 16 + 0.5).astype(np.uint8).reshape(1797, -1)]
    train_rows = [r.tobytes() for r in train.images.reshape(1497, -1).numpy()]
    test_rows = [r.tobytes() for r in test.images.reshape(300, -1).numpy()]
    assert Counter(train_rows) + Counter(test_rows) == Counter(sk_rows)
    # a few images occur twice in optdigits; every other test image must be absent from train
    duplicated = {r for r, n in Counter(sk_rows).items() if n > 1}
    assert not ({r for r in test_rows if r not in duplicated} & set(train_rows))


def test_digits_deterministic() -> None:
    a, b = load_digits("test"), load_digits("test")
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    with pytest.raises(DataError, match="split"):
        load_digits("validation")


# ---------------------------------------------------------------------------------- MNIST


MNIST_RAW_MD5 = {
    "train-images-idx3-ubyte.gz": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte.gz": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte.gz": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte.gz": "27ae3e4e09519cfbb04c329615203637",
}


@needs_mnist
def test_mnist_real_files() -> None:
    train, test = load_mnist(MNIST_DIR, "train"), load_mnist(MNIST_DIR, "test")
    assert train.images.shape == (60000, 1, 28, 28) and test.images.shape == (10000, 1, 28, 28)
    assert train.images.dtype == torch.uint8 and train.name == "mnist/train"
    assert abs(train.images.double().mean().item() / 255 - 0.1307) < 0.001
    assert set(train.labels.unique().tolist()) == set(range(10))
    assert set(test.labels.unique().tolist()) == set(range(10))
    # A reader that drops or shifts header bytes would still produce plausible arrays; comparing
    # the arrays with the official raw files' bytes (whose MD5s are known) rules that out.
    for fname, md5 in MNIST_RAW_MD5.items():
        raw = gzip.decompress((MNIST_DIR / fname).read_bytes())
        assert hashlib.md5(raw).hexdigest() == md5, fname
        data = train if fname.startswith("train") else test
        payload = data.images.numpy().tobytes() if "images" in fname else data.labels.numpy().astype(np.uint8).tobytes()
        assert raw.endswith(payload) and len(raw) - len(payload) in (16, 8), fname


@needs_mnist
def test_mnist_dispatcher_default_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWVAE_SHARED_DATA", str(SHARED))
    assert len(load_dataset("mnist", "test")) == 10000


def _write_idx(path: Path, array: np.ndarray, magic: int, compress: bool) -> None:
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if compress else raw)


def test_mnist_synthetic_uncompressed_and_errors(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (5, 28, 28), dtype=np.uint8)
    lbls = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    _write_idx(tmp_path / "t10k-images-idx3-ubyte", imgs, 0x803, compress=False)
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", lbls, 0x801, compress=True)
    d = load_mnist(tmp_path, "test")
    assert np.array_equal(d.images[:, 0].numpy(), imgs) and d.labels.tolist() == [3, 1, 4, 1, 5]
    # directory inference in the dispatcher: IDX files that are not MNIST's are named after their folder
    inferred = load_dataset(str(tmp_path), "test")
    assert inferred.name == f"{tmp_path.name}/test" and inferred.verified is None

    with pytest.raises(DataError, match=r"train-images-idx3-ubyte.*ossci-datasets.*--data"):
        load_mnist(tmp_path, "train")
    # swapped magic numbers
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", lbls, 0x803, compress=True)
    with pytest.raises(DataError, match="magic number"):
        load_mnist(tmp_path, "test")
    # truncated payload
    _write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", lbls, 0x801, compress=True)
    raw = (tmp_path / "t10k-images-idx3-ubyte").read_bytes()
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(raw[:-10])
    with pytest.raises(DataError, match="truncated"):
        load_mnist(tmp_path, "test")


# ---------------------------------------------------------------------------------- CIFAR-10 pickles


def _fake_cifar(root: Path, n_per_batch: int = 4) -> tuple[Path, np.ndarray, np.ndarray]:
    """Write cifar-10-batches-py in the distributed format; return (folder, train x, train y)."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    xs, ys = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        x = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        y = rng.integers(0, 10, n_per_batch).tolist()
        batch = {b"batch_label": b"fake", b"labels": y, b"data": x, b"filenames": [b"a.png"] * n_per_batch}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        if name != "test_batch":
            xs.append(x)
            ys.extend(y)
    meta = {b"label_names": [c.encode() for c in CIFAR10_CLASSES], b"num_cases_per_batch": n_per_batch, b"num_vis": 3072}
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder, np.concatenate(xs), np.array(ys)


def test_cifar10_folder_parent_and_archive(tmp_path: Path) -> None:
    folder, x, y = _fake_cifar(tmp_path / "data")
    archive = tmp_path / "cifar-10-python.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    for root in (folder, folder.parent, archive):
        train = load_cifar10(root, "train")
        assert train.images.shape == (20, 3, 32, 32) and train.images.dtype == torch.uint8
        # first row = 1024 red values, row-major
        assert np.array_equal(train.images[0, 0].numpy().ravel(), x[0, :1024])
        assert np.array_equal(train.images[3, 2].numpy().ravel(), x[3, 2048:])
        assert train.labels.tolist() == y.tolist()
        assert train.classes == list(CIFAR10_CLASSES) and train.verified is None  # not the official batches
        assert train.name == f"{'cifar-10-python' if root == archive else 'data'}/train"
        assert len(load_cifar10(root, "test")) == 4
    assert len(load_dataset(str(archive), "test")) == 4
    assert len(load_dataset("cifar10", "test", root=folder.parent)) == 4


class _Evil:
    def __reduce__(self):  # noqa: ANN204
        return (os.system, ("echo pwned",))


def test_cifar10_restricted_unpickler_refuses_globals(tmp_path: Path) -> None:
    folder, _, _ = _fake_cifar(tmp_path)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": _Evil(), b"labels": []}))
    with pytest.raises(DataError, match=r"refusing.*(posix|os|nt)\.system"):
        load_cifar10(folder, "test")


def test_cifar10_missing_and_download_failures(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError, match=r"cifar-10-python.tar.gz.*cs.toronto.edu.*--data"):
        load_cifar10(tmp_path / "nothing", "train")

    def offline(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(cifar10_source.urllib.request, "urlopen", offline)
    with pytest.raises(DataError, match=r"cannot download.*put it at .*cifar-10-python.tar.gz"):
        load_cifar10(tmp_path / "dl", "train", download=True)

    monkeypatch.setattr(cifar10_source.urllib.request, "urlopen", lambda *a, **k: io.BytesIO(b"not the archive"))
    with pytest.raises(DataError, match="MD5"):
        load_cifar10(tmp_path / "dl", "train", download=True)
    assert not (tmp_path / "dl" / "cifar-10-python.tar.gz").exists()
    assert list((tmp_path / "dl").iterdir()) == []  # no partial file left behind


def test_cifar10_download_success(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder, x, _ = _fake_cifar(tmp_path / "src")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-py")
    payload = buf.getvalue()
    monkeypatch.setattr(cifar10_source, "CIFAR10_MD5", hashlib.md5(payload).hexdigest())
    monkeypatch.setattr(cifar10_source.urllib.request, "urlopen", lambda *a, **k: io.BytesIO(payload))
    train = load_cifar10(tmp_path / "dl", "train", download=True)
    assert np.array_equal(train.images.reshape(20, -1).numpy(), x)
    assert (tmp_path / "dl" / "cifar-10-batches-py" / "data_batch_5").is_file()


# ---------------------------------------------------------------------------------- CIFAR-10 JPEG zip


@needs_cifar_jpeg
def test_cifar10_jpeg_zip_entry_counts() -> None:
    with zipfile.ZipFile(CIFAR_JPEG_ZIP) as zf:
        names = [n for n in zf.namelist() if n.endswith(".jpg")]
    assert sum(n.startswith("train/") for n in names) == 50000
    assert sum(n.startswith("test/") for n in names) == 10000
    assert sorted({n.split("/")[1] for n in names}) == sorted(CIFAR10_CLASSES)


@needs_cifar_jpeg
def test_cifar10_jpeg_zip_limited_and_cached(_private_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for split in ("train", "test"):
        d = load_cifar10_jpeg_zip(CIFAR_JPEG_ZIP, split, limit=200)
        assert d.images.shape == (200, 3, 32, 32) and d.images.dtype == torch.uint8
        assert d.name == f"CIFAR-10 (JPEG q75 re-encode)/{split}"
        assert d.classes == list(CIFAR10_CLASSES)
        # a seeded random subset stratified by class: 20 of each of the 10 equal classes
        assert torch.bincount(d.labels, minlength=10).tolist() == [20] * 10
        assert 60 < d.images.float().mean().item() < 190

    # The label comes from the folder. The split's order is (file number, class), so item i is
    # test/<class i % 10>/<i // 10>.jpg: the entry chosen for 'cat' decodes to the image labelled cat.
    d = load_cifar10_jpeg_zip(CIFAR_JPEG_ZIP, "test", limit=10)
    keep = subset_indices(10000, 10, torch.arange(10000) % 10)
    assert d.labels.tolist() == (keep % 10).tolist() and sorted(d.labels.tolist()) == list(range(10))
    at = d.labels.tolist().index(3)
    with zipfile.ZipFile(CIFAR_JPEG_ZIP) as zf:
        cat = np.asarray(Image.open(io.BytesIO(zf.read(f"test/cat/{int(keep[at]) // 10:04d}.jpg"))).convert("RGB"))
    assert np.array_equal(d.images[at].permute(1, 2, 0).numpy(), cat)

    # the second load must come from the cache (keyed as a random subset, never an old prefix):
    # make decoding impossible and load again
    assert list((_private_cache / "cifar10-jpeg").glob("*-test-random10-seed0-images.npy"))
    monkeypatch.setattr(Image, "open", lambda *a, **k: (_ for _ in ()).throw(OSError("no decode")))
    again = load_cifar10_jpeg_zip(CIFAR_JPEG_ZIP, "test", limit=10)
    assert torch.equal(again.images, d.images) and torch.equal(again.labels, d.labels)
    with pytest.raises(DataError, match="cannot decode"):
        load_cifar10_jpeg_zip(CIFAR_JPEG_ZIP, "test", limit=11)


def test_cifar10_jpeg_zip_synthetic(tmp_path: Path) -> None:
    path = tmp_path / "c.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for cls in ("truck", "airplane"):
            for i in range(2):
                buf = io.BytesIO()
                Image.new("RGB", (32, 32), (200 if cls == "truck" else 10, 0, 0)).save(buf, "JPEG", quality=95)
                zf.writestr(f"test/{cls}/{i:04d}.jpg", buf.getvalue())
    d = load_dataset(str(path), "test", cache=False)
    assert d.labels.tolist() == [0, 9, 0, 9]
    assert d.images[1, 0].float().mean() > 150 > d.images[0, 0].float().mean()
    with pytest.raises(DataError, match="no train"):
        load_cifar10_jpeg_zip(path, "train", cache=False)
    with pytest.raises(DataError, match="not found.*--data"):
        load_cifar10_jpeg_zip(tmp_path / "missing.zip", "train")


# ---------------------------------------------------------------------------------- image folder


def _save(path: Path, size: tuple[int, int], mode: str = "RGB", color: object = (255, 0, 0)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color).save(path)


def test_image_folder_classes_and_modes(tmp_path: Path) -> None:
    _save(tmp_path / "train" / "dogs" / "b.png", (6, 4), "RGBA", (0, 255, 0, 128))
    _save(tmp_path / "train" / "cats" / "a.jpg", (6, 4), "RGB", (0, 0, 255))
    _save(tmp_path / "train" / "dogs" / "a.png", (6, 4), "L", 77)
    _save(tmp_path / "train" / "dogs" / "c.png", (6, 4), "P", 3)
    (tmp_path / "train" / "notes.txt").write_text("not an image")
    _save(tmp_path / "test" / "cats" / "x.png", (5, 5), "L", 9)

    d = load_image_folder(tmp_path, "train")
    assert d.images.shape == (4, 3, 4, 6)  # mixed grey/colour -> RGB, [N, C, H, W]
    assert d.classes == ["cats", "dogs"] and d.labels.tolist() == [0, 1, 1, 1]
    assert d.images[0, 2].float().mean() > 200  # blue JPEG
    assert d.images[1].unique().tolist() == [77]  # grey repeated into 3 channels
    assert d.images[2, 1].unique().tolist() == [255]  # RGBA -> RGB keeps green

    grey = load_image_folder(tmp_path, "test")
    assert grey.images.shape == (1, 1, 5, 5) and grey.name.endswith("/test")

    with pytest.raises(DataError, match="'val'"):
        load_image_folder(tmp_path, "val")


def test_image_folder_flat_unlabelled_and_limit(tmp_path: Path) -> None:
    for i in range(5):
        _save(tmp_path / f"{i}.png", (3, 3), "L", i * 10)
    d = load_dataset("folder", "train", root=tmp_path, limit=3)  # no train/ subfolder: whole root
    assert d.labels is None and d.images.shape == (3, 1, 3, 3)
    # a seeded random subset of the sorted files (not the first 3), kept in sorted order
    assert d.images[:, 0, 0, 0].tolist() == [10 * i for i in subset_indices(5, 3).tolist()]
    assert torch.equal(load_image_folder(tmp_path, limit=3).images, d.images)
    item = ImageTensorDataset(d)[0]
    assert item[1] == -1


def test_image_folder_mixed_sizes_and_resize(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _save(tmp_path / "a.png", (8, 8))
    _save(tmp_path / "b.png", (12, 6), color=(0, 0, 255))
    with pytest.raises(DataError, match=r"a\.png is 8x8 but .*b\.png is 12x6.*data\.image_size"):
        load_image_folder(tmp_path)
    with caplog.at_level(logging.INFO, logger="flowvae.data"):
        d = load_image_folder(tmp_path, size=4)
    assert d.images.shape == (2, 3, 4, 4)
    assert "bicubic" in caplog.text
    assert d.images[1, 2].unique().tolist() == [255]  # centre crop of a uniform image stays uniform
    with pytest.raises(DataError, match="size"):
        load_image_folder(tmp_path, size=0)


def test_image_folder_bad_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _save(tmp_path / "good.png", (8, 8))
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    (tmp_path / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (tmp_path / "zzz.png").write_bytes(b"garbage")
    with pytest.raises(DataError, match=r"truncated\.jpg"):
        load_image_folder(tmp_path)
    with caplog.at_level(logging.WARNING, logger="flowvae.data"):
        d = load_image_folder(tmp_path, on_bad="skip")
    assert len(d) == 1 and "skipped 2" in caplog.text
    with pytest.raises(DataError, match="on_bad"):
        load_image_folder(tmp_path, on_bad="ignore")


def test_image_folder_empty(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="empty dataset"):
        load_image_folder(tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        load_image_folder(tmp_path / "nope")
    (tmp_path / "bad.png").write_bytes(b"x")
    with pytest.raises(DataError, match="empty dataset"):
        load_image_folder(tmp_path, on_bad="skip")


# ---------------------------------------------------------------------------------- Downsampled ImageNet 64x64


def _write_imagenet64_batch(path: Path, n: int, seed: int, with_mean: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One npz in the release's format: data uint8 [n, 12288] (R, G, B planes), labels 1..1000."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 12288), dtype=np.uint8)
    labels = rng.integers(1, 1001, n)
    labels[0] = 1000 if seed % 2 else 1  # make sure both ends of the 1-based range occur
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {"data": data, "labels": labels.tolist()}
    if with_mean:  # the train batches also carry the mean image
        arrays["mean"] = data.mean(axis=0)
    np.savez(path, **arrays)
    return data, labels


def test_imagenet64_train_batches_in_order_and_labels(tmp_path: Path) -> None:
    part1, part2 = tmp_path / "Imagenet64_train_part1_npz", tmp_path / "Imagenet64_train_part2_npz"
    x1, y1 = _write_imagenet64_batch(part1 / "train_data_batch_1.npz", 3, seed=1)
    x10, y10 = _write_imagenet64_batch(part2 / "train_data_batch_10.npz", 2, seed=10)
    x2, y2 = _write_imagenet64_batch(part1 / "train_data_batch_2.npz", 4, seed=2)
    xv, yv = _write_imagenet64_batch(tmp_path / "Imagenet64_val_npz" / "val_data.npz", 5, seed=7, with_mean=False)

    train = load_imagenet64(tmp_path, "train")
    assert train.images.shape == (9, 3, 64, 64) and train.images.dtype == torch.uint8
    assert train.name == "imagenet64/train" and train.classes is None
    # batches sorted by number (1, 2, 10), not by name (1, 10, 2)
    x = np.concatenate([x1, x2, x10])
    assert np.array_equal(train.images.reshape(9, -1).numpy(), x)
    # first 4096 values are the red plane of image 0, row-major; the last 4096 the blue plane
    assert np.array_equal(train.images[0, 0].numpy().ravel(), x1[0, :4096])
    assert np.array_equal(train.images[4, 2, 63].numpy(), x2[1, -64:])
    assert train.labels.dtype == torch.int64
    assert train.labels.tolist() == (np.concatenate([y1, y2, y10]) - 1).tolist()
    assert int(train.labels.min()) == 0 and int(train.labels.max()) == 999

    test = load_dataset("imagenet64", "test", root=tmp_path)
    assert test.name == "imagenet64/test" and test.images.shape == (5, 3, 64, 64)
    assert np.array_equal(test.images.reshape(5, -1).numpy(), xv) and test.labels.tolist() == (yv - 1).tolist()
    # a folder holding the npz files is recognised without naming the dataset
    assert load_dataset(str(tmp_path), "test").name == "imagenet64/test"


def test_imagenet64_limit_reads_only_the_chosen_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    x1, y1 = _write_imagenet64_batch(tmp_path / "train_data_batch_1.npz", 3, seed=1)
    x2, y2 = _write_imagenet64_batch(tmp_path / "train_data_batch_2.npz", 3, seed=2)
    x, y = np.concatenate([x1, x2]), np.concatenate([y1, y2]) - 1
    keep = subset_indices(6, 4, y).numpy()  # stratified by the labels of every batch
    d = load_imagenet64(tmp_path, "train", limit=4)
    assert d.images.shape == (4, 3, 64, 64)
    assert np.array_equal(d.images.reshape(4, -1).numpy(), x[keep]) and d.labels.tolist() == y[keep].tolist()
    assert len(load_dataset("imagenet64", "train", root=tmp_path, limit=2, size=64)) == 2

    # np.savez stores arrays uncompressed: 'data' is memory-mapped, so only the chosen rows are read
    real_read = imagenet64_source._read_npz
    monkeypatch.setattr(imagenet64_source, "_read_npz",
                        lambda path, key: (_ for _ in ()).throw(AssertionError("data loaded whole")) if key == "data"
                        else real_read(path, key))
    assert torch.equal(load_imagenet64(tmp_path, "train", limit=4).images, d.images)
    monkeypatch.undo()
    # a compressed npz cannot be mapped: its array is read whole, with the same result
    np.savez_compressed(tmp_path / "train_data_batch_2.npz", data=x2, labels=y2)
    assert torch.equal(load_imagenet64(tmp_path, "train", limit=4).images, d.images)

    # every batch's labels are read to stratify the subset, so a damaged batch is reported
    (tmp_path / "train_data_batch_3.npz").write_bytes(b"not an npz at all")
    with pytest.raises(DataError, match=r"cannot read .*train_data_batch_3\.npz.*download it again"):
        load_imagenet64(tmp_path, "train", limit=4)


def test_imagenet64_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"Downsampled ImageNet 64x64.*image-net\.org.*Imagenet64_val_npz\.zip.*--data DIR"):
        load_imagenet64(tmp_path / "absent", "train")
    with pytest.raises(DataError, match=r"test files not found.*val_data\.npz.*image-net\.org.*--data DIR"):
        load_imagenet64(tmp_path, "test")
    _write_imagenet64_batch(tmp_path / "val_data.npz", 2, seed=3)
    with pytest.raises(DataError, match=r"size=32.*image_size=64"):
        load_imagenet64(tmp_path, "test", size=32)
    # 0-based labels are not the release's format
    np.savez(tmp_path / "val_data.npz", data=np.zeros((2, 12288), np.uint8), labels=np.array([0, 5]))
    with pytest.raises(DataError, match=r"1\.\.1000, got 0\.\.5"):
        load_imagenet64(tmp_path, "test")
    # 32x32 rows are not 64x64 images
    np.savez(tmp_path / "val_data.npz", data=np.zeros((2, 3072), np.uint8), labels=np.array([1, 2]))
    with pytest.raises(DataError, match=r"uint8 \[n, 12288\]"):
        load_imagenet64(tmp_path, "test")
    # one label short
    np.savez(tmp_path / "val_data.npz", data=np.zeros((3, 12288), np.uint8), labels=np.array([1, 2]))
    with pytest.raises(DataError, match="3 images but 2 labels"):
        load_imagenet64(tmp_path, "test")
    # object arrays need pickle, which is refused
    np.savez(tmp_path / "val_data.npz", data=np.array([None, 1], dtype=object), labels=np.array([1, 2]))
    with pytest.raises(DataError, match="cannot read"):
        load_imagenet64(tmp_path, "test")
    np.savez(tmp_path / "val_data.npz", x=np.zeros(2))
    with pytest.raises(DataError, match="no 'labels' array"):
        load_imagenet64(tmp_path, "test")


# ---------------------------------------------------------------------------------- LSUN


def _encoded(array: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    if fmt == "WEBP":
        Image.fromarray(array).save(buf, "WEBP", lossless=True)  # exact pixels
    else:
        Image.fromarray(array).save(buf, fmt, quality=95)
    return buf.getvalue()


def _banded(w: int, h: int, centre: tuple[int, int, int]) -> np.ndarray:
    """A w x h RGB image whose centred min(w, h) square is `centre`, with a red/blue band on each side."""
    a = np.empty((h, w, 3), np.uint8)
    a[...] = centre
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    a[:, :left] = (255, 0, 0)
    a[:, left + s :] = (0, 0, 255)
    a[:top] = (255, 0, 0)
    a[top + s :] = (0, 0, 255)
    return a


def _write_lmdb(path: Path, items: dict[bytes, bytes]) -> None:
    lmdb = pytest.importorskip("lmdb")
    env = lmdb.open(str(path), map_size=1 << 26)
    with env.begin(write=True) as txn:
        for key, value in items.items():
            txn.put(key, value)
    env.close()


def test_lsun_lmdb_splits_order_crop_and_limit(tmp_path: Path) -> None:
    pytest.importorskip("lmdb")
    noise = np.random.default_rng(0).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    # LSUN keys are hex image ids; insert out of order to check that reading follows key order
    train_items = {
        b"f0a3c2a7d1": _encoded(_banded(12, 8, (10, 200, 30)), "WEBP"),  # landscape
        b"0b7e4e1c9a": _encoded(noise, "WEBP"),  # 10 wide, 6 high
        b"7c11d0e5f2": _encoded(_banded(6, 9, (90, 90, 90)), "WEBP"),  # portrait, odd margin
        b"33aa0c5b8e": _encoded(_banded(16, 16, (250, 250, 250)), "JPEG"),
    }
    _write_lmdb(tmp_path / "bedroom_train_lmdb", train_items)
    _write_lmdb(tmp_path / "bedroom_val_lmdb", {b"0e5d": _encoded(_banded(4, 4, (1, 2, 3)), "WEBP")})

    d = load_lsun(tmp_path, "train", size=4)
    assert d.images.shape == (4, 3, 4, 4) and d.images.dtype == torch.uint8
    assert d.labels is None and d.name == "lsun-bedroom/train"
    # key order: 0b7e.., 33aa.., 7c11.., f0a3..
    ref = Image.fromarray(noise[:, 2:8]).resize((4, 4), Image.Resampling.BICUBIC)  # centre 6x6, bicubic
    assert np.array_equal(d.images[0].permute(1, 2, 0).numpy(), np.asarray(ref))
    assert abs(d.images[1].float().mean().item() - 250) <= 2  # JPEG of a uniform square: near-exact
    for i, colour in ((2, (90, 90, 90)), (3, (10, 200, 30))):
        # only the centre square survives the crop, so no red/blue from the bands leaks in
        assert [d.images[i, c].unique().tolist() for c in range(3)] == [[v] for v in colour]

    test = load_dataset("lsun", "test", root=tmp_path, size=2)
    assert test.name == "lsun-bedroom/test" and test.images.shape == (1, 3, 2, 2)
    assert test.images[0, :, 0, 0].tolist() == [1, 2, 3]

    two = load_lsun(tmp_path, "train", size=4, limit=2)  # a seeded random subset, in key order
    assert torch.equal(two.images, d.images[subset_indices(4, 2)])
    assert load_dataset("lsun", "train", root=tmp_path).images.shape == (4, 3, 128, 128)  # default size
    assert load_dataset(str(tmp_path), "test", size=2).name == "lsun-bedroom/test"  # inferred from the lmdb

    # one lmdb folder given directly: usable for its own split only
    assert len(load_lsun(tmp_path / "bedroom_val_lmdb", "test", size=2)) == 1
    with pytest.raises(DataError, match=r"bedroom_train_lmdb is the train lmdb but split 'test'"):
        load_lsun(tmp_path / "bedroom_train_lmdb", "test")


def test_lsun_missing_lmdb_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "bedroom_train_lmdb").mkdir()
    (tmp_path / "bedroom_train_lmdb" / "data.mdb").write_bytes(b"\0" * 64)
    monkeypatch.setitem(sys.modules, "lmdb", None)  # makes `import lmdb` raise ImportError
    with pytest.raises(DataError, match=r"needs the lmdb package: pip install lmdb \(or pip install flowvae\[lsun\]\)"):
        load_lsun(tmp_path, "train")


def test_lsun_missing_root_and_split(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError, match=r"LSUN not found.*does not exist.*download\.py -c bedroom.*--data DIR"):
        load_lsun(tmp_path / "absent", "train")
    with pytest.raises(DataError, match=r"LSUN not found in .*no bedroom_train_lmdb.*--data DIR"):
        load_lsun(tmp_path, "train")
    monkeypatch.setenv("FLOWVAE_SHARED_DATA", str(tmp_path / "no-shared"))
    with pytest.raises(DataError, match=r"LSUN not found.*lsun does not exist.*fyu/lsun"):
        load_dataset("lsun", "train")  # default root: cache_dir()/lsun, absent
    (tmp_path / "bedroom_train_lmdb").mkdir()
    (tmp_path / "bedroom_train_lmdb" / "data.mdb").write_bytes(b"\0" * 64)
    with pytest.raises(DataError, match=r"no \*_val_lmdb folder for split 'test'"):
        load_lsun(tmp_path, "test")
    with pytest.raises(DataError, match="size"):
        load_lsun(tmp_path, "train", size=0)


def test_lsun_damaged_lmdb(tmp_path: Path) -> None:
    pytest.importorskip("lmdb")
    _write_lmdb(tmp_path / "bedroom_val_lmdb", {b"00aa": b"not an image"})
    with pytest.raises(DataError, match=r"cannot decode image '00aa'.*damaged"):
        load_lsun(tmp_path, "test")


def test_lsun_exported_image_folder(tmp_path: Path) -> None:
    # as written by the LSUN tools' export: nested .webp files; plus val/ as the test split
    for i, key in enumerate(("9f", "1a", "5c")):
        path = tmp_path / "train" / key[0] / f"{key}.webp"
        path.parent.mkdir(parents=True)
        path.write_bytes(_encoded(_banded(10, 6, (20 * i, 0, 0)), "WEBP"))
    (tmp_path / "val").mkdir()
    (tmp_path / "val" / "a.jpg").write_bytes(_encoded(_banded(8, 8, (0, 255, 0)), "JPEG"))

    d = load_lsun(tmp_path, "train", size=6, limit=2)
    assert d.images.shape == (2, 3, 6, 6) and d.labels is None and d.name == "lsun/train"
    # sorted by path: 1/1a (i=1), 5/5c (i=2), 9/9f (i=0); a random 2 of them, in that order
    by_path = [20, 40, 0]
    assert d.images[:, 0, 3, 3].tolist() == [by_path[k] for k in subset_indices(3, 2).tolist()]
    assert d.images[:, 2].unique().tolist() == [0]
    test = load_dataset("lsun", "test", root=tmp_path, size=4)
    assert test.images.shape == (1, 3, 4, 4) and test.images[0, 1].float().mean() > 250


# ---------------------------------------------------------------------------------- CelebA-HQ


def test_celebahq_split_counts() -> None:
    assert celebahq_train_count(30000) == 27000
    assert celebahq_train_count(31000) == 27000
    assert celebahq_train_count(29999) == 26999
    assert celebahq_train_count(12) == 10 and celebahq_train_count(10) == 9
    assert celebahq_train_count(2) == 1 and celebahq_train_count(1) == 1 and celebahq_train_count(0) == 0


def test_celebahq_flat_image_folder_numeric_split(tmp_path: Path) -> None:
    for i in range(12):  # unpadded names: lexicographic order would be 0, 1, 10, 11, 2, ...
        _save(tmp_path / f"{i}.png", (8, 8), "RGB", (i * 20, 255 - i * 20, 7))
    train = load_celebahq(tmp_path, "train", size=8)
    test = load_celebahq(tmp_path, "test", size=8)
    assert train.images.shape == (10, 3, 8, 8) and test.images.shape == (2, 3, 8, 8)
    assert train.images[:, 0, 0, 0].tolist() == [i * 20 for i in range(10)]
    assert test.images[:, 0, 0, 0].tolist() == [200, 220] and test.images[:, 1, 0, 0].tolist() == [55, 35]
    assert train.labels is None and train.name == "celebahq/train" and test.name == "celebahq/test"
    # limits take a seeded random subset of the split, in split order
    assert load_celebahq(tmp_path, "test", size=8, limit=1).images[:, 0, 0, 0].tolist() == \
        [[200, 220][k] for k in subset_indices(2, 1).tolist()]
    assert load_celebahq(tmp_path, "train", size=8, limit=3).images[:, 0, 0, 0].tolist() == \
        [20 * k for k in subset_indices(10, 3).tolist()]
    # default size 256, through the dispatcher
    d = load_dataset("celebahq", "test", root=tmp_path)
    assert d.images.shape == (2, 3, 256, 256) and d.images[0, 0].unique().tolist() == [200]


def test_celebahq_split_subfolders(tmp_path: Path) -> None:
    _save(tmp_path / "train" / "a.png", (10, 6), "RGB", (1, 2, 3))
    _save(tmp_path / "train" / "b.png", (10, 6), "RGB", (4, 5, 6))
    _save(tmp_path / "val" / "c.png", (6, 6), "RGB", (7, 8, 9))
    train = load_celebahq(tmp_path, "train", size=6)
    assert train.images.shape == (2, 3, 6, 6) and train.images[:, :, 0, 0].tolist() == [[1, 2, 3], [4, 5, 6]]
    test = load_celebahq(tmp_path, "test", size=None)  # val/ serves as test/; native size kept
    assert test.images.shape == (1, 3, 6, 6) and test.images[0, :, 5, 5].tolist() == [7, 8, 9]
    assert test.labels is None and test.name == "celebahq/test"


def test_celebahq_per_image_npy_files(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    arrays = [rng.integers(0, 256, (1, 3, 16, 12), dtype=np.uint8) for _ in range(5)]
    for i, a in enumerate(arrays):  # the Progressive GAN release: imgHQ00000.npy, uint8 [1, 3, H, W]
        np.save(tmp_path / f"imgHQ{i:05d}.npy", a)
    train = load_celebahq(tmp_path, "train", size=None)
    assert train.images.shape == (4, 3, 16, 12) and train.images.dtype == torch.uint8
    assert np.array_equal(train.images.numpy(), np.concatenate(arrays[:4]))
    test = load_celebahq(tmp_path, "test", size=None)
    assert np.array_equal(test.images.numpy(), arrays[4])
    small = load_celebahq(tmp_path, "test", size=8)
    hwc = arrays[4][0].transpose(1, 2, 0)  # 12 wide, 16 high: centre square is rows 2..13
    ref = np.asarray(Image.fromarray(np.ascontiguousarray(hwc[2:14])).resize((8, 8), Image.Resampling.BICUBIC))
    assert small.images.shape == (1, 3, 8, 8) and np.array_equal(small.images[0].permute(1, 2, 0).numpy(), ref)
    assert len(load_celebahq(tmp_path, "train", size=None, limit=2)) == 2
    (tmp_path / "extra.png").write_bytes(b"x")
    with pytest.raises(DataError, match=r"both \.npy and image files"):
        load_celebahq(tmp_path, "train")


def test_celebahq_single_npy_layouts_and_paper_split(tmp_path: Path) -> None:
    rng = np.random.default_rng(9)
    nhwc = rng.integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    np.save(tmp_path / "nhwc.npy", nhwc)
    np.save(tmp_path / "nchw.npy", nhwc.transpose(0, 3, 1, 2))
    for name in ("nhwc.npy", "nchw.npy"):
        d = load_celebahq(tmp_path / name, "train", size=8)
        assert d.images.shape == (4, 3, 8, 8)
        assert np.array_equal(d.images.numpy(), nhwc[:4].transpose(0, 3, 1, 2)), name
        assert np.array_equal(load_celebahq(tmp_path / name, "test", size=8).images[0].permute(1, 2, 0).numpy(), nhwc[4])

    # 30,000 images: the paper's 27,000 / 3,000 split, in index order
    index = np.arange(30000)
    big = np.stack([index % 256, index // 256, np.zeros_like(index)], axis=-1).astype(np.uint8)[:, None, None, :]
    np.save(tmp_path / "all.npy", big)  # [30000, 1, 1, 3]
    train = load_dataset("celebahq", "train", root=tmp_path / "all.npy", size=1)
    test = load_dataset("celebahq", "test", root=tmp_path / "all.npy", size=1)
    assert len(train) == 27000 and len(test) == 3000
    assert train.images[-1, :2, 0, 0].tolist() == [26999 % 256, 26999 // 256]
    assert test.images[0, :2, 0, 0].tolist() == [27000 % 256, 27000 // 256]
    assert test.images[-1, :2, 0, 0].tolist() == [29999 % 256, 29999 // 256]
    assert len(load_celebahq(tmp_path / "all.npy", "test", size=1, limit=10)) == 10


def test_celebahq_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(DataError, match=r"CelebA-HQ not found.*does not exist.*progressive_growing_of_gans.*--data DIR"):
        load_celebahq(tmp_path / "absent", "train")
    with pytest.raises(DataError, match=r"CelebA-HQ not found in .*no image or \.npy files"):
        load_celebahq(tmp_path, "train")
    monkeypatch.setenv("FLOWVAE_SHARED_DATA", str(tmp_path / "no-shared"))
    with pytest.raises(DataError, match=r"CelebA-HQ not found.*celebahq does not exist"):
        load_dataset("celebahq", "train")
    np.save(tmp_path / "float.npy", np.zeros((2, 3, 4, 4), np.float32))
    with pytest.raises(DataError, match="expected uint8"):
        load_celebahq(tmp_path / "float.npy", "train")
    np.save(tmp_path / "grey.npy", np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DataError, match=r"shape \(2, 4, 4\)"):
        load_celebahq(tmp_path / "grey.npy", "train")
    np.save(tmp_path / "one.npy", np.zeros((1, 3, 4, 4), np.uint8))
    with pytest.raises(DataError, match="too few for a train/test split"):
        load_celebahq(tmp_path / "one.npy", "test")
    with pytest.raises(DataError, match="does not take option"):
        load_dataset("celebahq", "train", root=tmp_path, on_bad="skip")


# ---------------------------------------------------------------------------------- trainer pass-through


def test_trainer_load_data_passes_limit_and_size(tmp_path: Path) -> None:
    from flowvae.presets import get_preset
    from flowvae.runs.data import load_data

    x, y = _write_imagenet64_batch(tmp_path / "imagenet" / "train_data_batch_1.npz", 5, seed=4)
    cfg = get_preset("imagenet64")
    cfg.data.dataset, cfg.data.root, cfg.data.train_limit = "imagenet64", str(tmp_path / "imagenet"), 3
    d = load_data(cfg, "train")  # image_size=64 from the preset is passed as size and accepted
    keep = subset_indices(5, 3, y).numpy()  # the loader's own stratified subset
    assert np.array_equal(d.images.reshape(3, -1).numpy(), x[keep]) and d.labels.tolist() == (y[keep] - 1).tolist()

    for i in range(4):
        _save(tmp_path / "faces" / f"{i}.png", (40, 30), "RGB", (i, 0, 0))
    cfg = get_preset("celebahq256")
    cfg.data.dataset, cfg.data.root, cfg.data.train_limit, cfg.data.test_limit = "celebahq", str(tmp_path / "faces"), 2, None
    cfg.data.image_size = cfg.model.image_size = 32
    train = load_data(cfg, "train")
    assert train.images.shape == (2, 3, 32, 32) and train.images[:, 0, 0, 0].tolist() == subset_indices(3, 2).tolist()
    assert load_data(cfg, "test").images[:, 0, 0, 0].tolist() == [3]


# ---------------------------------------------------------------------------------- dispatcher


def test_load_dataset_names_and_options() -> None:
    with pytest.raises(DataError, match=r"did you mean 'cifar10'.*digits, mnist"):
        load_dataset("cifar-10", "train")
    with pytest.raises(DataError, match="did you mean 'mnist'"):
        load_dataset("mnst", "train")
    with pytest.raises(DataError, match="does not take option"):
        load_dataset("digits", "train", size=32)
    with pytest.raises(DataError, match="--data PATH"):
        load_dataset("folder", "train")
    assert len(load_dataset("digits", "test", size=None)) == 300


def test_load_dataset_missing_default_roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLOWVAE_SHARED_DATA", str(tmp_path / "absent"))
    with pytest.raises(DataError, match=r"MNIST .*not found.*yann.lecun.com.*--data PATH"):
        load_dataset("mnist", "train")
    with pytest.raises(DataError, match=r"cifar10-jpeg-images.zip.*--data PATH"):
        load_dataset("cifar10-jpeg", "train")


# ---------------------------------------------------------------------------------- quantize


def test_quantize_and_inverse() -> None:
    x = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    for n_bits in range(1, 9):
        bins = quantize(x, n_bits)
        assert bins.dtype == torch.int64 and bins.shape == x.shape
        assert int(bins.min()) == 0 and int(bins.max()) == 2**n_bits - 1
        assert torch.bincount(bins.flatten()).tolist() == [2 ** (8 - n_bits)] * 2**n_bits
        back = bins_to_uint8(bins, n_bits)
        assert back.dtype == torch.uint8
        assert torch.equal(quantize(back, n_bits), bins)  # inside its own bin
        assert int(back.min()) == 0 and int(back.max()) == 255
    assert torch.equal(bins_to_uint8(quantize(x, 8), 8), x)
    assert quantize(torch.tensor([0, 7, 8, 255], dtype=torch.uint8), 5).tolist() == [0, 0, 1, 31]


@pytest.mark.parametrize("n_bits", [0, 9, 5.0, True, "8"])
def test_quantize_rejects_bad_n_bits(n_bits: object) -> None:
    with pytest.raises(DataError, match="n_bits"):
        quantize(torch.zeros(2, dtype=torch.uint8), n_bits)  # type: ignore[arg-type]
    with pytest.raises(DataError, match="n_bits"):
        bins_to_uint8(torch.zeros(2, dtype=torch.int64), n_bits)  # type: ignore[arg-type]


def test_quantize_rejects_bad_inputs() -> None:
    with pytest.raises(DataError, match="uint8"):
        quantize(torch.zeros(2), 8)
    with pytest.raises(DataError, match=r"0\.\.31"):
        bins_to_uint8(torch.tensor([32]), 5)


# ---------------------------------------------------------------------------------- torch Dataset


def test_image_tensor_dataset_augmentation() -> None:
    images = torch.arange(2 * 3 * 8 * 8, dtype=torch.int64).remainder(256).to(torch.uint8).reshape(2, 3, 8, 8)
    data = ImageData(images, torch.tensor([4, 7]), "toy/train")
    plain = ImageTensorDataset(data)
    img, label = plain[1]
    assert torch.equal(img, images[1]) and label == 7 and len(plain) == 2

    torch.manual_seed(0)
    aug = ImageTensorDataset(data, flip=True, crop_pad=2)
    padded = torch.nn.functional.pad(images[0].float()[None], (2, 2, 2, 2), mode="reflect")[0]
    seen_flip = seen_shift = False
    for _ in range(50):
        out, _ = aug[0]
        assert out.shape == (3, 8, 8) and out.dtype == torch.uint8
        # every output must be some crop of the reflection-padded image, possibly flipped
        crops = [padded[:, i : i + 8, j : j + 8] for i in range(5) for j in range(5)]
        match = [k for k, c in enumerate(crops) if torch.equal(c, out.float()) or torch.equal(c.flip(-1), out.float())]
        assert match
        seen_flip |= any(torch.equal(crops[k].flip(-1), out.float()) and not torch.equal(crops[k], out.float()) for k in match)
        seen_shift |= 12 not in match  # 12 = the unshifted centre crop
    assert seen_flip and seen_shift

    torch.manual_seed(123)
    first = [aug[0][0] for _ in range(5)]
    torch.manual_seed(123)
    assert all(torch.equal(a, aug[0][0]) for a in first)

    batch = next(iter(torch.utils.data.DataLoader(aug, batch_size=2)))
    assert batch[0].shape == (2, 3, 8, 8) and batch[0].dtype == torch.uint8 and batch[1].tolist() == [4, 7]
    with pytest.raises(DataError, match="crop_pad"):
        ImageTensorDataset(data, crop_pad=8)
