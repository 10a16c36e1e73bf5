"""Image sets stored as MNIST-style IDX files (Fashion-MNIST, KMNIST, EMNIST-like sets, your own).

The IDX format is a file format, not a data set: this source reads such files from a folder you
name and names the set after that folder (``fashion/train``); only files whose content is MNIST's
are named ``mnist`` (:mod:`flowvae.data.idxfile`). The ``mnist`` source is that data set, with its
default location and checks.
"""

from __future__ import annotations

from pathlib import Path

from flowvae.data.base import ImageData
from flowvae.data.idxfile import IDX_PREFIX, find_idx_file, load_or_hold_out, probe_idx, read_idx_split, split_data
from flowvae.data.registry import DataSource, register
from flowvae.errors import DataError

__all__ = ["load_idx"]


def load_idx(root: str | Path, split: str = "train") -> ImageData:
    """An image set from MNIST-style IDX files, gzipped or not, named after its folder.

    Expects ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]`` (``split="train"``)
    or ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]`` (``split="test"``) in
    ``root`` (or ``root/raw``, ``root/MNIST/raw`` as torchvision stores them). Each file's header is
    checked before its payload is read.

    Returns:
        ImageData, images ``uint8 [N, 1, H, W]`` as stored, labels ``int64``, classes ``"0"`` up to
        the largest label; named ``"<folder>/<split>"`` (``"mnist/<split>"`` and
        ``verified="mnist"`` when the files' content is the official MNIST's).

    Raises:
        DataError: files missing, a wrong IDX magic number, a size that does not match the header,
            or image and label counts that differ.
    """
    root = Path(root).expanduser()
    return split_data(read_idx_split(root, split), root, split)


def _detect(path: Path) -> bool:
    return path.is_dir() and any(find_idx_file(path, p, "images") is not None for p in IDX_PREFIX.values())


def _load(root: str | Path | None, split: str, holdout: float | None = None) -> ImageData:
    if root is None:
        raise DataError("the 'idx' data source reads IDX files from a folder you name: pass it with --data PATH "
                        "(or data.root); for MNIST itself use the dataset 'mnist'")
    return load_or_hold_out(Path(root).expanduser(), split, holdout, load_idx)


register(DataSource(
    name="idx",
    load=_load,
    options=frozenset(),
    description="MNIST-style IDX files of any image set (Fashion-MNIST, KMNIST, ...), named after their folder",
    holdout=True,
    detect=_detect,
    probe=lambda root: probe_idx(root, "idx"),
))
