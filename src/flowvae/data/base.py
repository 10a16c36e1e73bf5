"""What every data source shares: the in-memory container, argument checks, locations, seeded
subsets, bit-depth quantisation and the torch ``Dataset``.

Every loader returns an :class:`ImageData`: ``images`` is a ``torch.uint8`` tensor of shape
``[N, C, H, W]`` with pixel values ``0..255``; ``labels`` is ``torch.int64`` ``[N]`` or ``None``.
Loaders never convert to float: dequantisation and scaling belong to the model, so the
exact discrete data the likelihood is measured on stays visible here.

All problems a user can cause (missing or damaged files, wrong sizes, unknown names) raise
:class:`flowvae.errors.DataError` with a one-line message that says what to do.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

from flowvae.errors import DataError

__all__ = [
    "CONFIG_OPTIONS",
    "HOLDOUT_FRACTION",
    "HOLDOUT_SEED",
    "LIMIT_SEED",
    "SPLITS",
    "FolderInfo",
    "HeldOut",
    "ImageData",
    "ImageTensorDataset",
    "atomic_write",
    "bins_to_uint8",
    "cache_dir",
    "check_holdout",
    "check_limit",
    "check_n_bits",
    "check_size",
    "check_split",
    "holdout_indices",
    "make_image_data",
    "quantize",
    "shared_data_dir",
    "subset_indices",
    "take",
]

SPLITS: tuple[str, ...] = ("train", "test")
# The options of flowvae.config.DataConfig that a data source may declare (see registry.DataSource).
CONFIG_OPTIONS: tuple[str, ...] = ("limit", "size", "on_bad")
# One seed for every `limit`, so a limited run always sees the same images.
LIMIT_SEED = 0
# A folder without a test split: the share of its images held out for testing, and the seed of the
# draw (fixed, not train.seed, so runs with different seeds are tested on the same images).
HOLDOUT_FRACTION = 0.1
HOLDOUT_SEED = 0


# --------------------------------------------------------------------------------------
# Containers
# --------------------------------------------------------------------------------------


@dataclass
class ImageData:
    """A whole image dataset held in memory.

    Attributes:
        images: ``torch.uint8`` tensor ``[N, C, H, W]``, pixel values ``0..255``.
        labels: ``torch.int64`` tensor ``[N]`` of class indices into ``classes``, or ``None``
            for unlabelled data.
        name: human-readable ``"<dataset>/<split>"``, e.g. ``"mnist/train"``; used in logs and
            figure captions, so lossy variants say so (``"CIFAR-10 (JPEG q75 re-encode)/test"``).
        classes: class names indexed by label, or ``None``.
        verified: the known data set these images were checked to be by the checksums of their
            files (``"mnist"``, ``"cifar10"``, ``"cifar10-jpeg"``, ``"digits"``), else ``None``: the
            name then comes from the files' folder and says nothing certain about their origin.
            Model cards tag a Hub data set only for verified data.

    Raises:
        DataError: if ``images`` is not a 4-D uint8 tensor, is empty, or ``labels`` does not
            match it.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    name: str
    classes: list[str] | None = None
    verified: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.images, torch.Tensor) or self.images.dtype != torch.uint8:
            raise DataError(
                f"{self.name}: images must be a torch.uint8 tensor, got "
                f"{getattr(self.images, 'dtype', type(self.images).__name__)}; "
                "convert pixels to 0..255 uint8 before building ImageData"
            )
        if self.images.dim() != 4:
            raise DataError(
                f"{self.name}: images must have shape [N, C, H, W], got "
                f"{tuple(self.images.shape)}; add the missing channel/batch dimension"
            )
        if self.images.shape[0] == 0:
            raise DataError(f"empty dataset {self.name}: it holds no images; check the path and split")
        if self.labels is not None:
            if self.labels.dtype != torch.int64 or tuple(self.labels.shape) != (self.images.shape[0],):
                raise DataError(
                    f"{self.name}: labels must be int64 of shape [{self.images.shape[0]}], got "
                    f"{self.labels.dtype} {tuple(self.labels.shape)}; pass one label per image or None"
                )

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one image."""
        c, h, w = self.images.shape[1:]
        return int(c), int(h), int(w)


@dataclass(frozen=True)
class FolderInfo:
    """What :func:`flowvae.data.describe_image_folder` found in a data folder.

    Attributes:
        channels: ``1`` or ``3``, as the loader will produce them from the first image (grey
            modes, grey+alpha ``LA`` included, give 1; RGB, RGBA, palette ... give 3).
        height: height of the first image, in pixels, as stored (before any resizing).
        width: width of the first image, as stored.
        n_files: files holding the data: image files the loader reads for ``split="train"``
            (format ``"images"``; the image entries of a zip of images), else the data files found (IDX files, batches, npz/npy files,
            lmdb folders, the zip).
        has_split: whether the folder has both ``train/`` and ``test/`` subfolders (for a folder
            or zip of images also ``val/``, ``valid/`` or ``validation/`` beside ``train/``; for
            MNIST-style IDX files, also both the ``train-*`` and the ``t10k-*`` files).
        format: ``"images"``, ``"idx"`` (MNIST), ``"cifar-python"``, ``"npz"``, ``"npy"``,
            ``"lmdb"`` or ``"zip"`` (the CIFAR-10 JPEG zip, or any zip of images).
        source: name of the registered data source that reads it (``"folder"``, ``"mnist"`` ...).
        first: the file the geometry was read from.
        n_images: images of the training split as far as headers tell (image files of
            ``train/`` or of the whole folder, IDX/npz/npy header counts, lmdb entries), or ``None``
            when unknown without reading the data.
        n_classes: classes of a labelled set (class subfolders, the datasets' labels), ``None`` if
            unlabelled or unknown.
    """

    channels: int
    height: int
    width: int
    n_files: int
    has_split: bool
    format: str
    source: str
    first: Path
    n_images: int | None = None
    n_classes: int | None = None


@dataclass(frozen=True)
class HeldOut:
    """How the test split of a dataset without one was drawn (:func:`holdout_indices`).

    Attributes:
        n_test: images held out for the test split.
        n_total: images of the whole set (train + held out).
        seed: seed of the draw (:data:`HOLDOUT_SEED`).
        stratified: whether the draw kept the class proportions (a labelled set).
    """

    n_test: int
    n_total: int
    seed: int
    stratified: bool

    def note(self) -> str:
        """The suffix a split's dataset name carries, e.g. ``"held out: 40 of 400 images, seed 0"``."""
        return f"held out: {self.n_test} of {self.n_total} images, seed {self.seed}"

    def message(self, where: object) -> str:
        """The log line, e.g. ``"no test split in FOLDER: holding out 40 of 400 images, seed 0,
        stratified by class; training on the other 360"``."""
        how = "stratified by class" if self.stratified else "uniformly at random (no labels)"
        return (f"no test split in {where}: holding out {self.n_test} of {self.n_total} images, seed {self.seed}, "
                f"{how}; training on the other {self.n_total - self.n_test}")


def make_image_data(images: np.ndarray, labels: np.ndarray | None, name: str,
                    classes: Sequence[str] | None, verified: str | None = None) -> ImageData:
    """Wrap NCHW uint8 images / integer labels (numpy) without copying more than needed."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    if not images.flags.writeable:
        # np.frombuffer over immutable bytes is read-only; torch tensors must own writable memory.
        images = images.copy()
    return ImageData(
        images=torch.from_numpy(images),
        labels=None if labels is None else torch.from_numpy(np.asarray(labels, dtype=np.int64).copy()),
        name=name,
        classes=None if classes is None else list(classes),
        verified=verified,
    )


def take(data: ImageData, index: torch.Tensor) -> ImageData:
    """The images (and labels) of ``data`` at ``index`` (``int64 [k]``), same name and classes."""
    labels = None if data.labels is None else data.labels[index]
    return ImageData(data.images[index], labels, data.name, data.classes, data.verified)


# --------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------


def check_split(split: str, allowed: Sequence[str] = SPLITS) -> str:
    """``split`` if it is one of ``allowed``; raises DataError otherwise."""
    if split not in allowed:
        raise DataError(f"unknown split {split!r}; use one of: {', '.join(allowed)}")
    return split


def check_limit(limit: int | None) -> int | None:
    """``limit`` if it is ``None`` or a positive integer; raises DataError otherwise."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise DataError(f"limit must be a positive integer or None, got {limit!r}")
    return limit


def check_holdout(fraction: float) -> float:
    """``fraction`` (the share of a dataset held out for testing) if it is a number in ``(0, 0.5]``."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 < fraction <= 0.5:
        raise DataError(f"the held-out share must be a number above 0 and at most 0.5, got {fraction!r}; e.g. 0.1")
    return float(fraction)


def check_size(size: int | None, allow_none: bool = True) -> int | None:
    """``size`` (an output side in pixels) if it is a positive integer, or ``None`` when allowed."""
    if size is None and allow_none:
        return None
    if size is None or isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise DataError(f"image size must be a positive integer, got {size!r}; e.g. --set data.image_size=64")
    return size


def check_n_bits(n_bits: int) -> int:
    """``n_bits`` if it is an integer in ``1..8``; raises DataError otherwise."""
    if isinstance(n_bits, bool) or not isinstance(n_bits, int) or not 1 <= n_bits <= 8:
        raise DataError(f"n_bits must be an integer from 1 to 8, got {n_bits!r}; e.g. 5 for Glow's 5-bit images or 8")
    return n_bits


# --------------------------------------------------------------------------------------
# Locations and files
# --------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Per-user cache folder: ``$FLOWVAE_CACHE`` if set, else ``~/.cache/flowvae`` (not created)."""
    env = os.environ.get("FLOWVAE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "flowvae"


def shared_data_dir() -> Path:
    """The project's read-only real-data folder: ``$FLOWVAE_SHARED_DATA`` or ``../shared/data``.

    The relative default is resolved against the current directory, because runs are started
    from the project root where ``../shared/data`` sits beside the checkout.
    """
    env = os.environ.get("FLOWVAE_SHARED_DATA")
    return Path(env).expanduser() if env else Path("..") / "shared" / "data"


def shared_or_cache(name: str) -> Path:
    """``shared_data_dir()/name`` if that folder exists, else ``cache_dir()/name``."""
    shared = shared_data_dir() / name
    return shared if shared.is_dir() else cache_dir() / name


def sized_reader(read: Callable[..., Any], name: str) -> Callable[..., Any]:
    """``read(root, split, size=..., limit=...)`` as a registry loader: ``root=None`` means
    :func:`shared_or_cache` ``(name)``, and ``size=None`` leaves ``read``'s own default size."""
    def reader(root: str | Path | None, split: str, size: int | None = None, limit: int | None = None) -> Any:
        where = shared_or_cache(name) if root is None else root
        return read(where, split, limit=limit) if size is None else read(where, split, size=size, limit=limit)

    return reader


def atomic_write(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Write ``path`` through ``write(file)`` via a temp file in the same folder and
    ``os.replace``, so readers never see half a file. Raises OSError if the folder is not writable."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


# --------------------------------------------------------------------------------------
# Seeded subsets
# --------------------------------------------------------------------------------------


def _allocate(counts: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    """Images per class: largest-remainder apportionment of ``limit`` by ``counts``, every class
    at least one when ``limit`` allows it."""
    n = int(counts.sum())
    share = limit * counts  # exact integers: class c is owed share[c] / n images
    alloc = share // n
    remainder = share % n
    # Ties between equal remainders are broken at random, so no class is always favoured.
    order = np.lexsort((rng.permutation(len(counts)), -remainder))
    alloc[order[: limit - int(alloc.sum())]] += 1
    if limit >= len(counts):
        # A probe or a class-conditional check needs every class; take the missing ones from the
        # classes furthest above their share (only happens for very unbalanced labels).
        for c in np.flatnonzero(alloc == 0):
            surplus = alloc * n - share
            surplus[alloc <= 1] = np.iinfo(np.int64).min
            donor = int(np.argmax(surplus))
            alloc[donor] -= 1
            alloc[c] += 1
    return alloc


def subset_indices(n: int, limit: int | None, labels: Any = None, seed: int = LIMIT_SEED) -> torch.Tensor:
    """Indices of a seeded random subset of ``limit`` of ``n`` items, stratified by class.

    This is what every ``limit`` in :mod:`flowvae.data` means: not the first ``limit`` files
    (which for class-subfolder datasets would be one class) but a random subset that keeps the
    class proportions and is the same on every call with the same seed.

    With ``labels``, each class ``c`` with ``n_c`` items gets ``round(limit * n_c / n)`` items by
    largest-remainder apportionment (so within one of ``limit * n_c / n``, ties broken at random),
    and every class gets at least one when ``limit >= number of classes`` (for very unbalanced
    labels that one is taken from the classes furthest above their share). Within a class the
    items are drawn uniformly without replacement. Without labels the subset is uniform.

    Args:
        n: number of items.
        limit: subset size; ``None`` or ``limit >= n`` selects everything.
        labels: ``[n]`` integer class labels (numpy, torch or a sequence), or ``None``.
        seed: seed of the ``numpy`` PCG64 generator that draws the subset.

    Returns:
        ``torch.int64 [min(n, limit)]``, sorted ascending (so a subset keeps the original order).

    Raises:
        DataError: ``limit`` not a positive integer or ``None``, or ``labels`` not of length ``n``.
    """
    limit = check_limit(limit)
    if limit is None or limit >= n:
        return torch.arange(n, dtype=torch.int64)
    rng = np.random.Generator(np.random.PCG64(seed))
    if labels is None:
        chosen = rng.permutation(n)[:limit]
    else:
        lab = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
        if lab.shape != (n,):
            raise DataError(f"subset_indices: labels must have shape [{n}], got {tuple(lab.shape)}; pass one label per item")
        _, inverse, counts = np.unique(lab, return_inverse=True, return_counts=True)
        alloc = _allocate(counts.astype(np.int64), limit, rng)
        members = np.argsort(inverse, kind="stable")  # item indices grouped by class, ascending within
        starts = np.concatenate([[0], np.cumsum(counts)])
        chosen = np.concatenate([
            members[starts[c] : starts[c + 1]][rng.permutation(int(counts[c]))[: int(alloc[c])]]
            for c in range(len(counts))
        ])
    return torch.from_numpy(np.sort(chosen).astype(np.int64))


def holdout_indices(n: int, labels: Any = None, fraction: float = HOLDOUT_FRACTION,
                    seed: int = HOLDOUT_SEED) -> tuple[torch.Tensor, torch.Tensor, HeldOut]:
    """A seeded held-out test split of ``n`` items, for data that comes without one.

    ``round(fraction * n)`` items are drawn for the test split (:func:`subset_indices` with ``seed``:
    stratified by class where there are labels, uniform otherwise); the rest are the training split.
    With labels, every class of at least two items gives at least one test item and keeps at least
    one training item (so the test split may be larger than ``fraction * n`` when there are many small
    classes); a class of a single item stays in training. Without labels at least one item is held
    out. The same ``n``, labels, fraction and seed give the same split on every call and machine
    (numpy's PCG64), and the two splits are disjoint and cover all ``n`` items.

    Args:
        n: number of items, at least 2.
        labels: ``[n]`` integer class labels (numpy, torch or a sequence), or ``None``.
        fraction: share held out, in ``(0, 0.5]`` (default :data:`HOLDOUT_FRACTION`, 0.1).
        seed: seed of the draw (default :data:`HOLDOUT_SEED`, 0).

    Returns:
        ``(train, test, held_out)``: ``int64`` index tensors, each sorted ascending, and the
        :class:`HeldOut` record of the draw.

    Raises:
        DataError: fewer than 2 items, a class-labelled set with no class of two items, a bad
            ``fraction``, or ``labels`` not of length ``n``.
    """
    fraction = check_holdout(fraction)
    if n < 2:
        raise DataError(f"cannot hold out a test split from {n} image(s); add images or a test/ folder")
    want = max(1, int(fraction * n + 0.5))
    if labels is None:
        test = subset_indices(n, min(want, n - 1), None, seed)
    else:
        lab = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
        if lab.shape != (n,):
            raise DataError(f"holdout_indices: labels must have shape [{n}], got {tuple(lab.shape)}; pass one label per item")
        _, inverse, counts = np.unique(lab, return_inverse=True, return_counts=True)
        eligible = np.flatnonzero(counts[inverse] >= 2)  # items of classes that can give one and keep one
        n_classes = int((counts >= 2).sum())
        if n_classes == 0:
            raise DataError(f"cannot hold out a test split: each of the {len(counts)} classes has a single image; "
                            "add images or a test/ folder")
        k = min(max(want, n_classes), len(eligible) - n_classes)
        test = torch.from_numpy(eligible[subset_indices(len(eligible), k, lab[eligible], seed).numpy()])
    is_test = torch.zeros(n, dtype=torch.bool)
    is_test[test] = True
    train = torch.nonzero(~is_test).flatten()
    return train, test, HeldOut(len(test), n, seed, labels is not None)


# --------------------------------------------------------------------------------------
# Bit depth
# --------------------------------------------------------------------------------------


def quantize(x: torch.Tensor, n_bits: int) -> torch.Tensor:
    """Reduce 8-bit pixels to ``n_bits`` bits as in Glow: ``floor(x / 2**(8 - n_bits))``.

    Args:
        x: ``torch.uint8`` tensor of any shape, values ``0..255``.
        n_bits: integer in ``1..8``.

    Returns:
        ``torch.int64`` tensor of the same shape with bins in ``0..2**n_bits - 1``.

    Raises:
        DataError: if ``x`` is not uint8 or ``n_bits`` is not an integer in ``1..8``.
    """
    check_n_bits(n_bits)
    if x.dtype != torch.uint8:
        raise DataError(f"quantize expects uint8 pixels 0..255, got {x.dtype}; quantize the raw images before scaling")
    return x.to(torch.int64) >> (8 - n_bits)


def bins_to_uint8(bins: torch.Tensor, n_bits: int) -> torch.Tensor:
    """Map ``n_bits`` bins back to 8-bit pixels over the full range: ``round(bins * 255 / (2**n_bits - 1))``.

    The exact inverse of :func:`quantize` when ``n_bits == 8``; for fewer bits the value lies inside
    its bin (``quantize(bins_to_uint8(b)) == b``), bin 0 is 0 and the top bin is 255, so binary
    images (``n_bits = 1``, e.g. dSprites) come back as 0/255 and white stays white.

    Args:
        bins: integer tensor of any shape, values ``0..2**n_bits - 1``.
        n_bits: integer in ``1..8``.

    Returns:
        ``torch.uint8`` tensor of the same shape, values ``0..255``.

    Raises:
        DataError: if ``n_bits`` is invalid, ``bins`` is not an integer tensor or holds values
            outside ``0..2**n_bits - 1``.
    """
    check_n_bits(n_bits)
    if bins.dtype.is_floating_point or bins.dtype.is_complex or bins.dtype == torch.bool:
        raise DataError(f"bins_to_uint8 expects integer bins, got {bins.dtype}; round or floor samples first")
    if bins.numel() and (int(bins.min()) < 0 or int(bins.max()) >= 2**n_bits):
        raise DataError(
            f"bins must lie in 0..{2**n_bits - 1} for n_bits={n_bits}, got {int(bins.min())}..{int(bins.max())}; "
            "clamp samples before converting"
        )
    top = 2**n_bits - 1
    return ((bins.to(torch.int64) * 510 + top) // (2 * top)).to(torch.uint8)  # integer round-half-up


# --------------------------------------------------------------------------------------
# torch Dataset
# --------------------------------------------------------------------------------------


def _reflect(index: torch.Tensor, n: int) -> torch.Tensor:
    # Reflection without repeating the edge pixel, as torch.nn.functional.pad(mode="reflect").
    index = index.abs()
    return torch.where(index >= n, 2 * (n - 1) - index, index)


class ImageTensorDataset(torch.utils.data.Dataset):
    """A map-style dataset over :class:`ImageData` with optional light augmentation.

    Items are ``(image, label)``: ``image`` is ``torch.uint8 [C, H, W]`` (0..255), ``label`` an
    ``int`` (``-1`` for unlabelled data), so the default collate gives ``uint8 [B, C, H, W]`` and
    ``int64 [B]``.

    Augmentation draws from torch's global RNG (``torch.rand``/``torch.randint``) so that
    ``DataLoader`` worker seeding and ``torch.manual_seed`` make it reproducible.

    Args:
        data: the dataset.
        flip: random horizontal flip with probability 0.5.
        crop_pad: if > 0, reflection-pad by ``crop_pad`` pixels on each side and take a random
            ``H x W`` crop (4 for CIFAR-10, as in the usual flow/VAE training setup).

    Raises:
        DataError: if ``crop_pad`` is negative or not smaller than the image height and width
            (reflection needs that many pixels).
    """

    def __init__(self, data: ImageData, flip: bool = False, crop_pad: int = 0) -> None:
        _, h, w = data.image_shape
        if isinstance(crop_pad, bool) or not isinstance(crop_pad, int) or crop_pad < 0 or (crop_pad and crop_pad >= min(h, w)):
            raise DataError(f"crop_pad must be an integer from 0 to {min(h, w) - 1} for {h}x{w} images, got {crop_pad!r}")
        self.data = data
        self.flip = bool(flip)
        self.crop_pad = crop_pad
        self._rows = torch.arange(h)
        self._cols = torch.arange(w)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = self.data.images[index]
        label = -1 if self.data.labels is None else int(self.data.labels[index])
        if self.crop_pad:
            # Index the reflected rows/columns directly instead of materialising the padded image.
            offset = torch.randint(0, 2 * self.crop_pad + 1, (2,)) - self.crop_pad
            rows = _reflect(self._rows + offset[0], len(self._rows))
            cols = _reflect(self._cols + offset[1], len(self._cols))
            image = image[:, rows][:, :, cols]
        if self.flip and bool(torch.rand(()) < 0.5):
            image = image.flip(-1)
        return image, label
