"""MNIST, the data set: the official IDX files, verified by their MD5 checksums.

The files are read by :mod:`flowvae.data.sources.idx`. A folder of IDX files whose content is not
MNIST's (Fashion-MNIST, your own) is the ``idx`` data source's, named after its folder; given to the
``mnist`` source (``flowvae train mnist --data FOLDER``) it is read the same way and named after
its folder too, with a warning, so no figure calls it MNIST.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flowvae.data.base import ImageData, shared_or_cache
from flowvae.data.idxfile import (
    IDX_PREFIX,
    MNIST_MD5,
    find_idx_file,
    load_or_hold_out,
    probe_idx,
    read_idx,
    read_idx_split,
    split_data,
)
from flowvae.data.registry import DataSource, register
from flowvae.errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["MNIST_URLS", "find_mnist_file", "is_mnist_folder", "load_mnist"]

MNIST_URLS = "https://ossci-datasets.s3.amazonaws.com/mnist/ or http://yann.lecun.com/exdb/mnist/"
_LABELS_MAGIC = 0x00000801


def find_mnist_file(root: Path, prefix: str, kind: str) -> Path | None:
    """The IDX file ``<prefix>-<kind>-idx?-ubyte[.gz]`` in ``root``, ``root/raw`` or ``root/MNIST/raw``."""
    return find_idx_file(root, prefix, kind)


def load_mnist(root: str | Path, split: str = "train") -> ImageData:
    """MNIST from the original IDX files, gzipped or not.

    Expects ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]`` (``split="train"``)
    or ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]`` (``split="test"``) in
    ``root`` (or ``root/raw``, ``root/MNIST/raw`` as torchvision stores them). Each file's header is
    checked before its payload is read, and the decompressed content is compared with the official
    files' MD5 checksums (:data:`~flowvae.data.sources.idx.MNIST_MD5`): files that differ are not
    MNIST, so they are named after their folder (``fashion/train``), with a warning.

    Returns:
        ImageData, images ``uint8 [N, 1, 28, 28]`` (0 = background, 255 = ink), labels ``int64``
        in ``0..9``; N is 60,000 / 10,000 for the official files, which give the name
        ``"mnist/<split>"`` and ``verified == "mnist"``.

    Raises:
        DataError: if files are missing, have the wrong IDX magic number, a size that does not match
            their header, images that are not 28x28, or image and label counts that differ.
    """
    root = Path(root).expanduser()
    read = read_idx_split(root, split, "MNIST", MNIST_URLS)
    if read.images.shape[1:] != (28, 28):
        raise DataError(f"{read.images_file} holds {read.images.shape[1]}x{read.images.shape[2]} images, MNIST is "
                        "28x28; use the original files, or read other IDX files with the dataset 'idx'")
    if read.labels.size and read.labels.max() > 9:
        raise DataError(f"{read.labels_file} contains label {int(read.labels.max())}, MNIST labels are 0..9; "
                        "the file is damaged, or it is another IDX set: read it with the dataset 'idx'")
    data = split_data(read, root, split)
    if not read.is_mnist:
        logger.warning("the IDX files in %s are not MNIST's (their MD5 checksums differ from the official files'): "
                       "named %r after their folder, not mnist", root, data.name)
    return ImageData(data.images, data.labels, data.name, [str(i) for i in range(10)], data.verified)


def is_mnist_folder(path: Path) -> bool:
    """Whether ``path`` holds IDX label files whose content is MNIST's (a cheap test: the label files
    are 70 kB; :func:`load_mnist` checks the images too)."""
    found = False
    for split, prefix in IDX_PREFIX.items():
        labels = find_idx_file(path, prefix, "labels")
        if labels is None:
            continue
        try:
            _, digest = read_idx(labels, _LABELS_MAGIC)
        except DataError:
            return False
        if digest != MNIST_MD5[split, "labels"]:
            return False
        found = True
    return found


def _detect(path: Path) -> bool:
    return path.is_dir() and is_mnist_folder(path)


def _load(root: str | Path | None, split: str, holdout: float | None = None) -> ImageData:
    # Training files only are not the official MNIST, whose test files always come with it: the
    # files are named after their folder then, and a test split is held out of them.
    return load_or_hold_out(Path(shared_or_cache("mnist") if root is None else root).expanduser(), split, holdout,
                            load_mnist)


register(DataSource(
    name="mnist",
    load=_load,
    options=frozenset(),
    description="MNIST, 28x28 grey digits, 60,000 train / 10,000 test, from the official IDX files (checked by MD5)",
    holdout=True,
    detect=_detect,
    probe=lambda root: probe_idx(root, "mnist", 10) if is_mnist_folder(root) else None,
))
