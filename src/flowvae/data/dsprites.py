"""dSprites (Matthey et al., 2017) with its ground-truth factors, for disentanglement metrics.

dSprites holds 64x64 binary images of one white sprite on black, generated from five
independent factors (plus a constant colour): ``shape`` (square, ellipse, heart), ``scale``
(6 values), ``orientation`` (40 values in ``[0, 2*pi]``), ``posX`` and ``posY`` (32 values each
in ``[0, 1]``). The original file enumerates the full factorial grid, 737,280 images.

Three files are understood (``variant``):

* ``"grid"`` -- ``dsprites_downsampled.npz``: the full factorial grid with orientation
  downsampled 4x and positions 2x, 3 x 6 x 10 x 16 x 16 = 46,080 images. Its factor classes are
  re-indexed to ``0..size-1`` (orientation class ``o`` is original class ``4*o``, position ``p``
  is original ``2*p``). Rows are in grid order, so it supports sampling images by factors
  (:meth:`DSpritesData.images_from_factors`), which the FactorVAE and BetaVAE scores need.
* ``"subset"`` -- ``dsprites_subset.npz``: 20,000 images drawn at random from the original
  file, factors at full resolution (sizes 3, 6, 40, 32, 32). Not a grid, so images cannot be
  looked up by arbitrary factors.
* ``"full"`` -- the original DeepMind file ``dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz``
  from https://github.com/deepmind/dsprites-dataset (all 737,280 images; the leading constant
  colour column of its latents is dropped). Loading it takes about 3 GB of memory.

``grid`` and ``subset`` store the keys ``imgs`` ``(N, 64, 64)`` uint8 in ``{0, 1}``,
``latents_classes`` and ``latents_values`` ``(N, 5)`` and ``original_dataset_indices`` ``(N,)``
(the row of each image in the original file); the original file has the same keys with 6 latent
columns and no ``original_dataset_indices``. Files are read with ``allow_pickle=False``: their
pickled ``metadata`` entry is never loaded.

Splits. dSprites has no official split, and disentanglement metrics are computed over the whole
factor space, so ``split="all"`` (every image, in file order) is the protocol for metrics and for
:meth:`DSpritesData.images_from_factors`. For training a model with held-out likelihood,
``"train"``/``"test"`` is a fixed 90/10 split of the file's rows: a ``numpy`` PCG64 generator seeded
with ``20240611`` permutes the row indices and the first ``N // 10`` are ``test`` (4,608 for the
grid, 2,000 for the subset, 73,728 for the full file); the rest are ``train``. Both keep file order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowvae.data.base import LIMIT_SEED, ImageData, check_limit, check_split, shared_data_dir, subset_indices
from flowvae.errors import DataError

__all__ = [
    "DSPRITES_FACTOR_NAMES",
    "DSPRITES_FILES",
    "DSPRITES_SHAPES",
    "DSPRITES_SPLIT_SEED",
    "DSPRITES_URL",
    "DSPRITES_VARIANTS",
    "DSpritesData",
    "FULL_FACTOR_SIZES",
    "GRID_FACTOR_SIZES",
    "load_dsprites",
]

DSPRITES_URL = "https://github.com/deepmind/dsprites-dataset"
DSPRITES_FILES: dict[str, str] = {
    "grid": "dsprites_downsampled.npz",
    "subset": "dsprites_subset.npz",
    "full": "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz",
}
DSPRITES_VARIANTS: tuple[str, ...] = tuple(DSPRITES_FILES)
DSPRITES_FACTOR_NAMES: tuple[str, ...] = ("shape", "scale", "orientation", "posX", "posY")
DSPRITES_SHAPES: tuple[str, ...] = ("square", "ellipse", "heart")
GRID_FACTOR_SIZES: tuple[int, ...] = (3, 6, 10, 16, 16)
FULL_FACTOR_SIZES: tuple[int, ...] = (3, 6, 40, 32, 32)
DSPRITES_SPLIT_SEED = 20240611

_SPLITS = ("train", "test", "all")
_HOWTO = (
    f"get dSprites from {DSPRITES_URL} (dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz, "
    "load it with variant='full') and pass the file or its folder with --data PATH"
)


# --------------------------------------------------------------------------------------
# Container
# --------------------------------------------------------------------------------------


@dataclass(eq=False)
class DSpritesData:
    """dSprites images with their ground-truth factors.

    Attributes:
        images: ``torch.uint8 [N, 1, 64, 64]``; pixel values ``0``/``255`` (so the images work as
            8-bit images everywhere else in the library), or ``0``/``1`` when loaded with
            ``binary=True``.
        factors: ``torch.int64 [N, 5]`` class index of each factor (columns in
            ``factor_names`` order), ``0 <= factors[:, j] < factor_sizes[j]``.
        factor_values: ``torch.float64 [N, 5]`` the generating values (shape 1..3, scale 0.5..1,
            orientation in radians, positions in ``[0, 1]``).
        source_indices: ``torch.int64 [N]`` row of each image in the original 737,280-image
            DeepMind file (for the original file itself, the row index).
        factor_names: ``("shape", "scale", "orientation", "posX", "posY")``.
        factor_sizes: number of classes per factor: ``(3, 6, 10, 16, 16)`` for the grid; for the
            other variants ``max class + 1`` over the whole file (``(3, 6, 40, 32, 32)`` for the
            subset and the original file).
        name: ``"dsprites-<variant>/<split>"``.
        variant: ``"grid"``, ``"subset"`` or ``"full"``.
        split: ``"all"``, ``"train"`` or ``"test"``.
        binary: whether pixels are ``0``/``1`` instead of ``0``/``255``.

    Raises:
        DataError: if the arrays do not agree in length or shape.
    """

    images: torch.Tensor
    factors: torch.Tensor
    factor_values: torch.Tensor
    source_indices: torch.Tensor
    factor_names: tuple[str, ...]
    factor_sizes: tuple[int, ...]
    name: str
    variant: str
    split: str
    binary: bool = False
    _rows_by_code: np.ndarray | None = field(default=None, init=False, repr=False, compare=False)
    _grid_checked: bool = field(default=False, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        n = self.images.shape[0] if self.images.dim() == 4 else -1
        k = len(self.factor_names)
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or tuple(self.images.shape[1:]) != (1, 64, 64):
            raise DataError(f"{self.name}: images must be uint8 [N, 1, 64, 64], got {self.images.dtype} {tuple(self.images.shape)}")
        if n == 0:
            raise DataError(f"empty dataset {self.name}: it holds no images; check the file and split")
        if tuple(self.factors.shape) != (n, k) or tuple(self.factor_values.shape) != (n, k):
            raise DataError(
                f"{self.name}: factors and factor_values must be [{n}, {k}], got "
                f"{tuple(self.factors.shape)} and {tuple(self.factor_values.shape)}"
            )
        if tuple(self.source_indices.shape) != (n,) or len(self.factor_sizes) != k:
            raise DataError(f"{self.name}: source_indices must be [{n}] and factor_sizes have {k} entries")

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def num_factors(self) -> int:
        """Number of ground-truth factors (5)."""
        return len(self.factor_sizes)

    def to_image_data(self) -> ImageData:
        """The images as :class:`ImageData` (``uint8`` 0/255, labels = shape class 0..2).

        Binary images are scaled to 0/255 (a copy); otherwise the tensor is shared.
        """
        images = self.images * 255 if self.binary else self.images
        return ImageData(images, self.factors[:, 0].clone(), self.name, list(DSPRITES_SHAPES))

    # ---------------------------------------------------------------- ground-truth sampling

    def _grid_rows(self) -> np.ndarray:
        """Row of every factor tuple in mixed-radix order; raises if this is not a full grid."""
        if not self._grid_checked:
            sizes = np.asarray(self.factor_sizes, dtype=np.int64)
            total = int(np.prod(sizes))
            codes = np.ravel_multi_index(self.factors.numpy().T, sizes)
            rows = np.full(total, -1, dtype=np.int64)
            rows[codes] = np.arange(len(codes))
            complete = len(codes) == total and bool((rows >= 0).all())
            self._rows_by_code = rows if complete else None
            self._grid_checked = True
        if self._rows_by_code is None:
            raise DataError(
                f"{self.name} is not the complete factor grid ({len(self)} images, "
                f"{int(np.prod(self.factor_sizes))} factor combinations), so images cannot be looked up "
                "by factors; load variant='grid' (or 'full') with split='all' and no limit"
            )
        return self._rows_by_code

    def sample_factors(self, n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
        """``n`` factor tuples, each factor drawn uniformly and independently from its classes.

        As ``sample_factors`` of disentanglement_lib's ``DSprites`` ground-truth data
        (``disentanglement_lib/data/ground_truth/dsprites.py``): ``rng.integers(size_j)`` per factor.

        Args:
            n: number of tuples (>= 1).
            rng: a ``numpy`` Generator, or a seed for ``np.random.default_rng``.

        Returns:
            ``np.int64 [n, 5]`` class indices.

        Raises:
            ValueError: if ``n`` is not a positive integer.
        """
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        rng = np.random.default_rng(rng)
        return np.stack([rng.integers(0, s, size=int(n)) for s in self.factor_sizes], axis=1).astype(np.int64)

    def rows_from_factors(self, factors: Any) -> np.ndarray:
        """Row index of each factor tuple in this (complete grid) dataset.

        The row of ``(f_1, ..., f_K)`` is found through the mixed-radix number
        ``((f_1 * s_2 + f_2) * s_3 + f_3) ...`` with bases ``factor_sizes`` (posY fastest, the order
        of the DeepMind file and of the grid file); the table is built from the loaded factors, so it
        is right whatever the row order.

        Args:
            factors: integer array-like ``[n, 5]`` or one tuple ``[5]`` (numpy or torch).

        Returns:
            ``np.int64 [n]`` (``[1]`` for one tuple).

        Raises:
            ValueError: wrong shape or a class index outside ``0..factor_sizes[j]-1``.
            DataError: if this dataset is not the complete grid (a split, a limit, or the subset).
        """
        f = np.asarray(factors.detach().cpu() if isinstance(factors, torch.Tensor) else factors)
        if f.ndim == 1:
            f = f[None]
        k = self.num_factors
        if f.ndim != 2 or f.shape[1] != k:
            raise ValueError(f"factors must have shape [n, {k}] or [{k}], got {tuple(np.shape(factors))}")
        if not np.issubdtype(f.dtype, np.integer):
            if not np.issubdtype(f.dtype, np.floating) or not np.array_equal(f, np.round(f)):
                raise ValueError(f"factors must be integer class indices, got dtype {f.dtype}")
        f = f.astype(np.int64)
        sizes = np.asarray(self.factor_sizes, dtype=np.int64)
        bad = (f < 0) | (f >= sizes)
        if bad.any():
            j = int(np.flatnonzero(bad.any(axis=0))[0])
            raise ValueError(
                f"factor {self.factor_names[j]!r} has class {int(f[bad.any(axis=1)][0, j])} outside "
                f"0..{self.factor_sizes[j] - 1}"
            )
        rows = self._grid_rows()
        return rows[np.ravel_multi_index(f.T, sizes)]

    def images_from_factors(self, factors: Any) -> torch.Tensor:
        """The image of each factor tuple (dSprites is noiseless: one image per tuple).

        As ``sample_observations_from_factors`` in disentanglement_lib, except that images stay
        ``uint8`` like :attr:`images`.

        Args:
            factors: integer array-like ``[n, 5]`` or one tuple ``[5]`` (numpy or torch).

        Returns:
            ``torch.uint8 [n, 1, 64, 64]`` (``n = 1`` for one tuple), values as in :attr:`images`.

        Raises:
            ValueError: wrong shape or out-of-range class indices.
            DataError: if this dataset is not the complete grid (see :meth:`rows_from_factors`).
        """
        return self.images[torch.from_numpy(self.rows_from_factors(factors))]


# --------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------


def _resolve(root: str | Path | None, variant: str) -> Path:
    root = shared_data_dir() / "dsprites" if root is None else Path(root).expanduser()
    if root.is_file():
        return root
    if root.is_dir():
        path = root / DSPRITES_FILES[variant]
        if path.is_file():
            return path
        present = sorted(v for v, f in DSPRITES_FILES.items() if (root / f).is_file())
        hint = f" (this folder has variant(s) {', '.join(present)})" if present else ""
        raise DataError(f"dSprites {variant} file {DSPRITES_FILES[variant]} not found in {root}{hint}; {_HOWTO}")
    raise DataError(f"dSprites not found: {root} does not exist; {_HOWTO}")


def _read(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"cannot read {path} as a dSprites .npz file ({exc}); download it again from {DSPRITES_URL}") from exc
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise DataError(f"{path} is a single .npy array, not a dSprites .npz archive; {_HOWTO}")
    with archive:
        missing = [k for k in ("imgs", "latents_classes", "latents_values") if k not in archive.files]
        if missing:
            raise DataError(f"{path} has no {', '.join(missing)} (it holds {', '.join(archive.files)}); "
                            f"it is not a dSprites file; {_HOWTO}")
        try:
            imgs = archive["imgs"]
            classes = archive["latents_classes"]
            values = archive["latents_values"]
            source = archive["original_dataset_indices"] if "original_dataset_indices" in archive.files else None
        except Exception as exc:  # zip/format errors of a damaged file come in many types
            raise DataError(f"cannot read {path} ({type(exc).__name__}: {exc}); the file is damaged, download it again") from exc
    return imgs, classes, values, source


def _validate(path: Path, variant: str, imgs: np.ndarray, classes: np.ndarray, values: np.ndarray,
              source: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, ...]]:
    if imgs.ndim != 3 or imgs.shape[1:] != (64, 64) or imgs.dtype != np.uint8:
        raise DataError(f"{path}: imgs must be uint8 (N, 64, 64), got {imgs.dtype} {imgs.shape}; use the original dSprites files")
    n = imgs.shape[0]
    if n == 0:
        raise DataError(f"empty dataset: {path} holds no images")
    if int(imgs.max()) > 1:
        raise DataError(f"{path}: dSprites pixels are 0/1 but the file has values up to {int(imgs.max())}; use the original files")
    if classes.ndim != 2 or classes.shape[0] != n or not np.issubdtype(classes.dtype, np.integer):
        raise DataError(f"{path}: latents_classes must be integers of shape ({n}, 5 or 6), got {classes.dtype} {classes.shape}")
    if values.shape != classes.shape:
        raise DataError(f"{path}: latents_values has shape {values.shape} but latents_classes {classes.shape}; the file is damaged")
    if classes.shape[1] == 6:  # the original file: (colour, shape, scale, orientation, posX, posY)
        if classes[:, 0].min() != classes[:, 0].max():
            raise DataError(f"{path}: the first latent column (colour) is not constant; this is not a dSprites file")
        classes, values = classes[:, 1:], values[:, 1:]
    if classes.shape[1] != 5:
        raise DataError(f"{path}: expected 5 latent factors (shape, scale, orientation, posX, posY), got {classes.shape[1]}")
    if int(classes.min()) < 0:
        raise DataError(f"{path}: latents_classes holds negative classes; the file is damaged")
    if source is not None and (source.shape != (n,) or not np.issubdtype(source.dtype, np.integer)):
        raise DataError(f"{path}: original_dataset_indices must be integers of shape ({n},), got {source.dtype} {source.shape}")
    sizes = tuple(int(s) for s in classes.max(axis=0) + 1)
    if variant == "grid":
        codes = np.ravel_multi_index(classes.T, sizes) if sizes == GRID_FACTOR_SIZES else None
        if codes is None or n != int(np.prod(GRID_FACTOR_SIZES)) or len(np.unique(codes)) != n:
            raise DataError(
                f"{path} is not the downsampled dSprites grid ({n} images, factor sizes {sizes}; "
                f"expected {int(np.prod(GRID_FACTOR_SIZES))} images, sizes {GRID_FACTOR_SIZES}, each once); "
                "pass variant='subset' or variant='full' for that file"
            )
        sizes = GRID_FACTOR_SIZES
    return classes.astype(np.int64, copy=False), values.astype(np.float64, copy=False), \
        (np.arange(n, dtype=np.int64) if source is None else source.astype(np.int64, copy=False)), sizes


def _split_rows(n: int, split: str) -> np.ndarray | None:
    """Row indices of ``split`` in file order, or ``None`` for all rows."""
    if split == "all":
        return None
    rng = np.random.Generator(np.random.PCG64(DSPRITES_SPLIT_SEED))
    is_test = np.zeros(n, dtype=bool)
    is_test[rng.permutation(n)[: n // 10]] = True
    return np.flatnonzero(is_test if split == "test" else ~is_test)


def load_dsprites(root: str | Path | None = None, split: str = "train", variant: str = "grid",
                  limit: int | None = None, binary: bool = False) -> DSpritesData:
    """Load dSprites images and factors (see the module docstring for variants and splits).

    Args:
        root: a folder holding the dSprites file(s) under their usual names (``DSPRITES_FILES``)
            or one ``.npz`` file, read as ``variant``. Default: ``shared_data_dir() / "dsprites"``
            (``../shared/data/dsprites``).
        split: ``"all"`` (every image, in file order: the protocol for disentanglement metrics and
            the only split that supports :meth:`DSpritesData.images_from_factors`), ``"train"`` (90%)
            or ``"test"`` (10%): a fixed seeded split of the file's rows (module docstring).
        variant: ``"grid"`` (46,080 images, default), ``"subset"`` (20,000) or ``"full"`` (737,280).
        limit: keep only a seeded random subset of ``limit`` images of the split, stratified by
            shape (:func:`~flowvae.data.subset_indices`, seed 0), in file order. A limited set is
            not the complete grid, so :meth:`DSpritesData.images_from_factors` refuses it.
        binary: keep the file's ``0``/``1`` pixels instead of scaling them to ``0``/``255``.

    Returns:
        DSpritesData: images ``uint8 [N, 1, 64, 64]`` (0/255, or 0/1 with ``binary=True``), factors
        ``int64 [N, 5]``, factor values ``float64 [N, 5]``, factor names and sizes.

    Raises:
        DataError: unknown split or variant, bad ``limit``, a missing root or file (the message says
            where to get dSprites and how to pass ``--data``), an unreadable file, or a file that
            does not hold what ``variant`` expects (e.g. the original file read as the grid).
    """
    check_split(split, _SPLITS)
    limit = check_limit(limit)
    if variant not in DSPRITES_FILES:
        raise DataError(f"unknown dSprites variant {variant!r}; use one of: {', '.join(DSPRITES_VARIANTS)}")
    path = _resolve(root, variant)
    imgs, classes, values, source = _read(path)
    classes, values, source, sizes = _validate(path, variant, imgs, classes, values, source)

    rows = _split_rows(len(imgs), split)
    if rows is None and (limit is None or limit >= len(imgs)):
        images = imgs  # the whole file: no copy
    else:
        if rows is None:
            rows = np.arange(len(imgs))
        if limit is not None:
            # File order puts shape slowest, so a prefix would be all squares: take a seeded
            # random subset stratified by shape instead (the label of to_image_data()).
            rows = rows[subset_indices(len(rows), limit, classes[rows, 0], LIMIT_SEED).numpy()]
        images = imgs[rows]
        classes, values, source = classes[rows], values[rows], source[rows]
    del imgs
    if not binary:
        np.multiply(images, np.uint8(255), out=images)  # 0/1 -> 0/255 in place
    return DSpritesData(
        images=torch.from_numpy(np.ascontiguousarray(images)[:, None]),
        factors=torch.from_numpy(np.ascontiguousarray(classes)),
        factor_values=torch.from_numpy(np.ascontiguousarray(values)),
        source_indices=torch.from_numpy(np.ascontiguousarray(source)),
        factor_names=DSPRITES_FACTOR_NAMES,
        factor_sizes=tuple(sizes),
        name=f"dsprites-{variant}/{split}",
        variant=variant,
        split=split,
        binary=bool(binary),
    )
