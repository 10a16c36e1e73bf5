"""MNIST from the original IDX files, gzipped or not."""

from __future__ import annotations

import gzip
import logging
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

from flowvae.data.base import (
    FolderInfo,
    ImageData,
    check_split,
    holdout_indices,
    make_image_data,
    shared_or_cache,
    take,
)
from flowvae.data.images import has_split_folders
from flowvae.data.registry import DataSource, register
from flowvae.errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["MNIST_URLS", "find_mnist_file", "load_mnist"]

MNIST_URLS = "https://ossci-datasets.s3.amazonaws.com/mnist/ or http://yann.lecun.com/exdb/mnist/"
_MNIST_PREFIX = {"train": "train", "test": "t10k"}
_IDX_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
_IDX_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension
# The payload a header may claim before anything is read: MNIST-like sets are far below it, a
# damaged header (or a gzip bomb) is not.
_IDX_MAX_BYTES = 1 << 30


def _mnist_candidates(prefix: str, kind: str) -> list[str]:
    ndim = 3 if kind == "images" else 1
    # The unpacked official files are sometimes renamed with a dot ("train-images.idx3-ubyte").
    stems = [f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte"]
    return [s + ext for s in stems for ext in ("", ".gz")]


def find_mnist_file(root: Path, prefix: str, kind: str) -> Path | None:
    """The IDX file ``<prefix>-<kind>-idx?-ubyte[.gz]`` in ``root``, ``root/raw`` or ``root/MNIST/raw``."""
    # torchvision keeps the raw files in MNIST/raw; accept that layout too.
    for folder in (root, root / "raw", root / "MNIST" / "raw"):
        for name in _mnist_candidates(prefix, kind):
            if (folder / name).is_file():
                return folder / name
    return None


def _open_idx(path: Path) -> BinaryIO:
    with open(path, "rb") as f:
        head = f.read(2)
    # Trust the content, not the suffix: some mirrors serve decompressed files named .gz.
    return gzip.open(path, "rb") if head == b"\x1f\x8b" else open(path, "rb")  # type: ignore[return-value]


def _idx_header(f: BinaryIO, path: Path, magic: int) -> tuple[int, ...]:
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    raw = f.read(header)
    if len(raw) < header:
        raise DataError(f"{path} is too short to be an IDX file ({len(raw)} bytes); download it again")
    got = int.from_bytes(raw[:4], "big")
    if got != magic:
        raise DataError(
            f"{path} has IDX magic number 0x{got:08x}, expected 0x{magic:08x}; "
            "it is not an MNIST file of this kind (images/labels swapped?) or it is damaged"
        )
    return tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))


def _read_idx(path: Path, magic: int) -> np.ndarray:
    """The array of an IDX file; the header is checked before the payload is read."""
    header = 4 + 4 * (magic & 0xFF)
    try:
        with _open_idx(path) as f:
            dims = _idx_header(f, path, magic)
            expected = int(np.prod(dims, dtype=np.int64))
            if expected > _IDX_MAX_BYTES:
                raise DataError(f"{path}: its header {dims} claims {expected} bytes, more than an MNIST file holds; "
                                "the file is damaged, download it again")
            payload = f.read(expected)
            extra = 0
            while chunk := f.read(1 << 20):  # count, do not keep, what lies beyond the payload
                extra += len(chunk)
    except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError; a damaged stream, zlib.error
        raise DataError(f"cannot read {path}: {exc}; the file is damaged, download it again") from exc
    if len(payload) != expected or extra:
        raise DataError(
            f"{path} holds {header + len(payload) + extra} bytes but its header {dims} needs {header + expected}; "
            "the file is truncated or damaged, download it again"
        )
    return np.frombuffer(payload, dtype=np.uint8).reshape(dims)


def load_mnist(root: str | Path, split: str = "train") -> ImageData:
    """MNIST from the original IDX files, gzipped or not.

    Expects ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]`` (``split="train"``)
    or ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]`` (``split="test"``) in
    ``root`` (or ``root/raw``, ``root/MNIST/raw`` as torchvision stores them). Each file's header is
    checked before its payload is read.

    Returns:
        ImageData, images ``uint8 [N, 1, 28, 28]`` (0 = background, 255 = ink), labels ``int64``
        in ``0..9``; N is 60,000 / 10,000 for the official files.

    Raises:
        DataError: if files are missing, have the wrong IDX magic number, a size that does not match
            their header, images that are not 28x28, or image and label counts that differ.
    """
    check_split(split)
    root = Path(root).expanduser()
    prefix = _MNIST_PREFIX[split]
    img_path = find_mnist_file(root, prefix, "images")
    lbl_path = find_mnist_file(root, prefix, "labels")
    if img_path is None or lbl_path is None:
        raise DataError(
            f"MNIST {split} files not found in {root}: expected {prefix}-images-idx3-ubyte.gz and "
            f"{prefix}-labels-idx1-ubyte.gz (or unzipped); download them from {MNIST_URLS} "
            "and pass their folder with --data PATH"
        )
    images = _read_idx(img_path, _IDX_IMAGES_MAGIC)
    labels = _read_idx(lbl_path, _IDX_LABELS_MAGIC)
    if images.shape[1:] != (28, 28):
        raise DataError(f"{img_path} holds {images.shape[1]}x{images.shape[2]} images, MNIST is 28x28; use the original files")
    if len(images) != len(labels):
        raise DataError(
            f"{img_path} has {len(images)} images but {lbl_path} has {len(labels)} labels; "
            "the files come from different splits or one is damaged"
        )
    if labels.size and labels.max() > 9:
        raise DataError(f"{lbl_path} contains label {int(labels.max())}, MNIST labels are 0..9; the file is damaged")
    return make_image_data(images[:, None], labels, f"mnist/{split}", [str(i) for i in range(10)])


def _detect(path: Path) -> bool:
    return path.is_dir() and any(find_mnist_file(path, p, "images") is not None for p in _MNIST_PREFIX.values())


def _probe(root: Path) -> FolderInfo | None:
    found = [find_mnist_file(root, p, k) for p in _MNIST_PREFIX.values() for k in ("images", "labels")]
    images = next((f for f in found[::2] if f is not None), None)
    if images is None:
        return None
    try:
        with _open_idx(images) as f:
            dims = _idx_header(f, images, _IDX_IMAGES_MAGIC)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"cannot read {images}: {exc}; the file is damaged, download it again") from exc
    return FolderInfo(channels=1, height=dims[1], width=dims[2], n_files=sum(f is not None for f in found),
                      has_split=has_split_folders(root) or all(f is not None for f in found), format="idx",
                      source="mnist", first=images, n_images=dims[0], n_classes=10)


def _load(root: str | Path | None, split: str, holdout: float | None = None) -> ImageData:
    path = Path(shared_or_cache("mnist") if root is None else root).expanduser()
    has = {s: find_mnist_file(path, p, "images") is not None and find_mnist_file(path, p, "labels") is not None
           for s, p in _MNIST_PREFIX.items()}
    if holdout is not None and split in _MNIST_PREFIX and has["train"] and not has["test"]:
        # Only the training files (a Fashion-MNIST or EMNIST-like set sent without t10k-*): hold out a test split.
        check_split(split)
        whole = load_mnist(path, "train")
        train, test, held = holdout_indices(len(whole), whole.labels, holdout)
        if split == "train":
            logger.info("%s", held.message(f"{path} (no t10k-* files)"))
        data = take(whole, test if split == "test" else train)
        return ImageData(data.images, data.labels, f"mnist/{split} ({held.note()})", data.classes)
    return load_mnist(path, split)


register(DataSource(
    name="mnist",
    load=_load,
    options=frozenset(),
    description="MNIST, 28x28 grey digits, 60,000 train / 10,000 test, from the IDX files (Fashion-MNIST's too)",
    holdout=True,
    detect=_detect,
    probe=_probe,
))
