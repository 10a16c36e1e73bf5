"""The registry of data sources, and the functions that dispatch through it.

Each module in :mod:`flowvae.data.sources` registers one :class:`DataSource`: its name (the
``data.dataset`` value), a loader, and which :class:`flowvae.config.DataConfig` options it
accepts. :func:`load_dataset` (by name and keyword options), :func:`load_split` (from a
``DataConfig``) and :func:`describe_image_folder` all look sources up here, so adding a data
source is one new module and nothing else.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from flowvae.data.base import (
    CONFIG_OPTIONS,
    HOLDOUT_FRACTION,
    LIMIT_SEED,
    FolderInfo,
    ImageData,
    check_holdout,
    check_limit,
    subset_indices,
    take,
)
from flowvae.data.images import IMAGE_SUFFIXES
from flowvae.errors import DataError

__all__ = [
    "DATA_SOURCES",
    "DataSource",
    "describe_image_folder",
    "get_source",
    "load_dataset",
    "load_split",
    "open_split",
    "register",
    "source_for_path",
]

logger = logging.getLogger(__name__)
# Single files that describe_image_folder reads like folders: a zip of images, the CIFAR-10 archive.
ARCHIVES = (".zip", ".tar.gz", ".tgz")
# Used when a folder given as a path is none of the recognised layouts.
FALLBACK_SOURCE = "folder"


@dataclass(frozen=True, repr=False)
class DataSource:
    """One kind of data on disk and how to load it.

    Attributes:
        name: the dataset name (``data.dataset``, ``flowvae train <name>``), e.g. ``"mnist"``.
        load: ``load(root, split, **options) -> ImageData``; ``root`` is a path or ``None`` for the
            source's default location; only options in ``options | extra_options`` are passed.
        options: the ``DataConfig`` options the source accepts, among ``"limit"`` (a seeded random
            subset, see :func:`flowvae.data.subset_indices`), ``"size"`` (centre-crop and resize to
            ``size x size``) and ``"on_bad"``; :func:`load_split` passes exactly these.
        description: one line for listings and error messages.
        extra_options: further keywords :func:`load_dataset` passes on (``download``, ``cache``,
            ``variant``); no ``DataConfig`` field maps to them.
        detect: ``detect(path) -> bool``, whether a path given instead of a name is this kind of
            data (tried in registration order; folders nobody claims are read as image folders).
        probe: ``probe(folder) -> FolderInfo | None``, for :func:`describe_image_folder`.
        holdout: whether ``load`` takes ``holdout=FRACTION``: for data that comes without a test
            split, hold out that share as the ``"test"`` split (and leave it out of ``"train"``).
            :func:`load_split` always passes it to such sources; :func:`load_dataset` when asked.
        lazy: ``lazy(root, split, **options) -> Dataset``, the same split read on access (the same
            files, limits and held-out split as ``load``), for :func:`open_split`; ``None``: the
            source is always loaded into memory.

    Raises:
        ValueError: if ``options`` names something that is not a ``DataConfig`` option.
    """

    name: str
    load: Callable[..., ImageData]
    options: frozenset[str]
    description: str
    extra_options: frozenset[str] = field(default_factory=frozenset)
    detect: Callable[[Path], bool] | None = None
    probe: Callable[[Path], FolderInfo | None] | None = None
    holdout: bool = False
    lazy: Callable[..., Any] | None = None

    def __post_init__(self) -> None:
        unknown = sorted(set(self.options) - set(CONFIG_OPTIONS))
        if unknown:
            raise ValueError(f"data source {self.name!r}: options {unknown} are not DataConfig options {CONFIG_OPTIONS}; "
                             "declare them in extra_options")

    def __repr__(self) -> str:
        # Sorted, not frozenset order: that changes with the hash seed, and the API docs print this.
        return (f"DataSource({self.name!r}, options={sorted(self.options)}, "
                f"extra_options={sorted(self.extra_options)})")

    @property
    def accepts(self) -> frozenset[str]:
        """Every keyword :func:`load_dataset` passes to ``load``."""
        return frozenset(self.options) | frozenset(self.extra_options)


_SOURCES: dict[str, DataSource] = {}
DATA_SOURCES: Mapping[str, DataSource] = MappingProxyType(_SOURCES)
"""Registered sources by name, in registration order (read-only view)."""


def register(source: DataSource) -> DataSource:
    """Add ``source`` to :data:`DATA_SOURCES`; returns it. Raises ValueError for a taken name."""
    if source.name in _SOURCES:
        raise ValueError(f"a data source named {source.name!r} is already registered")
    _SOURCES[source.name] = source
    return source


def _unknown(name: str) -> DataError:
    names = tuple(_SOURCES)
    near = difflib.get_close_matches(str(name), names, n=1, cutoff=0.5)
    hint = f"did you mean {near[0]!r}? " if near else ""
    return DataError(f"unknown dataset {name!r}; {hint}valid names: {', '.join(names)} (or an existing folder/.zip path)")


def get_source(name: str) -> DataSource:
    """The registered source called ``name``.

    Raises:
        DataError: no such source (the nearest valid name is suggested).
    """
    try:
        return _SOURCES[name]
    except KeyError:
        raise _unknown(name) from None


def source_for_path(path: str | Path) -> DataSource:
    """The source that reads an existing ``path`` given instead of a dataset name.

    Each source's ``detect`` is asked in registration order (MNIST IDX files, CIFAR-10 batches or
    ``.tar.gz``, the CIFAR-10 JPEG ``.zip`` or a folder holding it, any other ``.zip`` of images,
    Downsampled ImageNet npz files, an LSUN lmdb); any other folder is read as a folder of images.

    Raises:
        DataError: ``path`` is a file of no known kind.
    """
    path = Path(path).expanduser()
    for source in _SOURCES.values():
        if source.detect is not None and source.detect(path):
            return source
    if path.is_file():
        raise DataError(f"cannot tell what dataset {path} is; pass a folder of images, an MNIST/CIFAR-10 folder, "
                        "or a .zip of images / CIFAR-10 .tar.gz")
    return get_source(FALLBACK_SOURCE)


def _resolve(name: str, root: str | Path | None) -> tuple[DataSource, str | Path | None]:
    if name in _SOURCES:
        return _SOURCES[name], root
    as_path = Path(str(name)).expanduser()
    if as_path.exists():
        return source_for_path(as_path), as_path
    raise _unknown(name)


def load_dataset(name: str, split: str = "train", root: str | Path | None = None, **kw: Any) -> ImageData:
    """Load a dataset by name, or by a path whose kind is inferred.

    Args:
        name: a registered source (``digits``, ``mnist``, ``cifar10``, ``cifar10-jpeg``,
            ``folder``, ``imagenet64``, ``lsun``, ``celebahq``, ``dsprites``; see
            :data:`DATA_SOURCES`), or an existing folder / ``.zip`` / ``.tar.gz`` path (an MNIST,
            CIFAR-10, Downsampled ImageNet or LSUN lmdb folder is recognised by its files; a zip
            laid out as the CIFAR-10 JPEG zip is read as that, any other zip as a zip of images;
            any other folder is read as a folder of images; see :func:`source_for_path`).
        split: ``"train"`` or ``"test"`` (any subfolder name for ``folder``; ``"all"`` for dsprites).
        root: data location; defaults: mnist -> ``../shared/data/mnist`` if it exists, else
            ``cache_dir()/mnist``; cifar10 -> ``cache_dir()/cifar10``; cifar10-jpeg ->
            ``../shared/data/cifar10-jpeg/cifar10-jpeg-images.zip``; imagenet64, lsun, celebahq ->
            ``../shared/data/<name>`` if it exists, else ``cache_dir()/<name>``; dsprites ->
            ``../shared/data/dsprites``; folder has no default.
            (``../shared/data`` is ``$FLOWVAE_SHARED_DATA`` when that is set.)
        **kw: loader options, as each source declares them (:attr:`DataSource.accepts`):
            ``limit`` (cifar10-jpeg, folder, imagenet64, lsun, celebahq, dsprites: a seeded random
            subset, stratified by class where there are labels), ``size`` (folder, imagenet64,
            lsun, celebahq), ``on_bad`` (folder), ``download`` (cifar10), ``cache`` (cifar10-jpeg),
            ``variant`` (dsprites: ``"grid"``, ``"subset"`` or ``"full"``), ``holdout`` (folder,
            mnist: the share of a set without a test split held out as its test split; without it
            such a folder is read whole for either split). Options set to ``None`` are ignored, so
            the loaders' defaults apply (lsun 128, celebahq 256).

    Returns:
        ImageData as documented by the chosen loader: ``uint8 [N, C, H, W]``, 0..255.

    Raises:
        DataError: unknown name (with the nearest valid one suggested), an option the dataset
            does not take, or anything the loader raises (missing files say where to get them).
    """
    source, root = _resolve(name, root)
    options = {k: v for k, v in kw.items() if v is not None}
    unsupported = sorted(set(options) - source.accepts - ({"holdout"} if source.holdout else set()))
    if unsupported:
        takes = ", ".join(sorted(source.accepts)) or "no options"
        raise DataError(f"dataset {source.name!r} does not take option(s) {', '.join(unsupported)} "
                        f"(it takes {takes}); remove them")
    return source.load(root, split, **options)


def load_split(data_cfg: Any, split: str) -> ImageData:
    """The ``split`` of the data that a :class:`flowvae.config.DataConfig` describes.

    Reads ``dataset``, ``root``, ``train_limit`` / ``test_limit`` (``train_limit`` for
    ``split="train"``, ``test_limit`` for any other split), ``image_size`` and ``on_bad`` from
    ``data_cfg`` (any object with those attributes; missing ones count as unset) and passes the
    source exactly the options it declares (:attr:`DataSource.options`): ``limit``, ``size`` (from
    ``image_size``, when set) and ``on_bad``. Sources that declare ``holdout`` (folder, mnist) also
    get ``holdout`` (``data_cfg.holdout`` if the config has it, else
    :data:`~flowvae.data.base.HOLDOUT_FRACTION`, 0.1; ``None`` turns it off): a folder without a test split is then split
    into a training split and a seeded, class-stratified held-out test split (logged, and named in
    the dataset's name), and the limits are drawn within each. A source that does not take ``limit`` is loaded whole
    and then cut to a seeded random subset, stratified by class, with the same
    :func:`~flowvae.data.subset_indices` the loaders use; ``image_size`` and ``on_bad`` are ignored
    by sources that do not take them. ``n_bits`` is not used: quantisation belongs to the model.

    Returns:
        ImageData, images ``uint8 [N, C, H, W]`` (0..255), ``N <= limit``, in the source's order.

    Raises:
        DataError: unknown dataset, a bad limit, or anything the loader raises.
    """
    source, root, options, limit = _split_options(data_cfg, split)
    data = source.load(root, split, **options)
    if limit is not None and len(data) > limit:
        data = take(data, subset_indices(len(data), limit, data.labels, LIMIT_SEED))
    return data


def open_split(data_cfg: Any, split: str, max_bytes: int = 2 * 1024**3) -> Any:
    """:func:`load_split`'s data, or, for a source that can read lazily (image folders and zips),
    the same images as a dataset read on access when ``data_cfg.in_memory`` is ``False``, or is
    ``None`` and the split would take more than ``max_bytes`` decoded (its first image's size
    times the number of files). The choice is logged.

    Returns:
        :class:`ImageData`, or a map-style dataset of ``(uint8 [C, H, W], label)`` items with
        ``labels``, ``classes`` and ``name`` attributes.

    Raises:
        DataError: as :func:`load_split`.
    """
    in_memory = getattr(data_cfg, "in_memory", None)
    source, root, options, limit = _split_options(data_cfg, split)
    if source.lazy is None or in_memory is True:
        return load_split(data_cfg, split)
    lazy = source.lazy(root, split, **options)
    c, h, w = lazy[0][0].shape
    size = len(lazy) * c * h * w
    if in_memory is None and size <= max_bytes:
        return load_split(data_cfg, split)
    logger.info("%s: %d images, %.2f GB decoded: read from disk as training needs them", lazy.name, len(lazy),
                size / 1e9)
    return lazy


def _split_options(data_cfg: Any, split: str) -> tuple[DataSource, Any, dict[str, Any], int | None]:
    source, root = _resolve(data_cfg.dataset, getattr(data_cfg, "root", None))
    limit = check_limit(getattr(data_cfg, "train_limit" if split == "train" else "test_limit", None))
    size = getattr(data_cfg, "image_size", None)
    options: dict[str, Any] = {}
    if "limit" in source.options and limit is not None:
        options["limit"] = limit
    if "size" in source.options and size is not None:
        options["size"] = size
    if "on_bad" in source.options:
        options["on_bad"] = getattr(data_cfg, "on_bad", None) or "error"
    holdout = getattr(data_cfg, "holdout", HOLDOUT_FRACTION)  # an explicit None: read such a folder whole
    if source.holdout and holdout is not None:
        options["holdout"] = check_holdout(holdout)
    return source, root, options, limit


def describe_image_folder(root: str | Path) -> FolderInfo:
    """Channels, size, file count and format of the data in a folder (or a zip), without loading it.

    The folder is recognised as :func:`load_dataset` would read it (:func:`source_for_path`), by
    the same file listing and image suffixes (:data:`flowvae.data.images.IMAGE_SUFFIXES`); a folder
    of images is described by its first image in the loader's sorted order, in ``train/`` when
    there is one, and its channel count uses the loader's grey-mode list (so grey+alpha ``LA`` PNGs
    are 1 channel and RGBA ones 3; one colour image among grey ones makes it 3, as the loader then
    converts the folder to RGB). If the folder is none of those, the other sources are asked
    (a folder of ``.npy`` arrays, one holding the CIFAR-10 JPEG zip, dSprites ``.npz`` files).
    ``root`` may also be a ``.zip`` of images, described as the folder loader reads it (format
    ``"zip"``), or the CIFAR-10 ``.tar.gz``. Only file headers are read (every image's, until a colour one, for a grey folder),
    plus the first entry of an LSUN lmdb or a zip.

    Returns:
        FolderInfo.

    Raises:
        DataError: ``root`` is not a folder or zip, or holds nothing any source can read.
    """
    root = Path(root).expanduser()
    if not (root.is_dir() or (root.is_file() and root.name.lower().endswith(ARCHIVES))):
        raise DataError(f"{root} is not a folder; pass a folder of images (or of a known dataset's files) with --data PATH")
    first = source_for_path(root)
    for source in [first, *(s for s in _SOURCES.values() if s is not first)]:
        info = source.probe(root) if source.probe is not None else None
        if info is not None:
            return info
    raise DataError(f"no usable data under {root}: no {'/'.join(IMAGE_SUFFIXES)} images and no known dataset files; "
                    "check --data PATH")
