"""A folder (or a zip) of JPEG/PNG/WEBP files, with classes from subfolders."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath
from typing import IO, Any

import numpy as np
from PIL import Image

from flowvae.data.base import (
    LIMIT_SEED,
    FolderInfo,
    HeldOut,
    ImageData,
    check_holdout,
    check_limit,
    check_size,
    holdout_indices,
    subset_indices,
)
from flowvae.data.images import (
    DECODE_ERRORS,
    IMAGE_SUFFIXES,
    TEST_ALIASES,
    decode_image_file,
    decode_image_files,
    folder_labels,
    has_image_files,
    image_channels,
    list_image_files,
    list_zip_images,
    read_zip_entry,
)
from flowvae.data.registry import DataSource, register
from flowvae.errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["ImageSplit", "image_split", "load_image_folder", "read_image_folder"]

_SPLIT_FOLDERS = ("train", "test", *TEST_ALIASES)
_ON_BAD = ("error", "skip")
_SUFFIXES = "/".join(IMAGE_SUFFIXES)


@dataclass(frozen=True)
class ImageSplit:
    """The image files of one split of a folder or zip of images, chosen but not decoded
    (:func:`image_split`): what :func:`load_image_folder` decodes, and what a lazy reader needs.

    Attributes:
        files: the files in reading order: paths in a folder, or entry names (``PurePosixPath``)
            of the zip ``zip_path``.
        base: the folder (or zip prefix) they lie under; a file's first part below it is its class.
        labels: ``int64 [len(files)]`` class indices into ``classes``, or ``None`` (unlabelled).
        classes: class names of the whole set (a subset keeps the indices), or ``None``.
        name: the dataset name, ``"<folder>/<split>"``, with ``" (held out: ...)"`` for a held-out split.
        held_out: how the split was drawn when the data had no test split, else ``None``.
        zip_path: the zip the entries are in, or ``None`` for a folder.
    """

    files: list[PurePath]
    base: PurePath
    labels: np.ndarray | None
    classes: list[str] | None
    name: str
    held_out: HeldOut | None = None
    zip_path: Path | None = None

    def opener(self) -> Callable[[PurePath], Path | IO[bytes]] | None:
        """What PIL opens for a file: ``None`` (its path) for a folder; for a zip, a function reading
        the entry from a ``ZipFile`` opened on first use by this process (so each ``DataLoader``
        worker gets its own)."""
        if self.zip_path is None:
            return None
        zip_path = self.zip_path
        state: dict[str, object] = {}

        def read(f: PurePath) -> IO[bytes]:
            if state.get("pid") != os.getpid():
                state["zf"], state["pid"] = zipfile.ZipFile(zip_path), os.getpid()
            zf = state["zf"]
            assert isinstance(zf, zipfile.ZipFile)
            return read_zip_entry(zf, f, zip_path)

        return read


def _zip_of(root: Path) -> Path | None:
    """The zip that ``root`` stands for: ``root`` itself, or the only ``.zip`` in a folder with no images."""
    if root.is_file():
        return root if zipfile.is_zipfile(root) else None
    if root.is_dir() and not has_image_files(root):
        zips = [p for p in root.iterdir() if p.suffix.lower() == ".zip" and p.is_file() and not p.name.startswith(".")]
        if len(zips) == 1:
            return zips[0]
    return None


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"cannot read {path} as a zip ({exc}); the file is damaged") from exc


class _Tree:
    """The image files under a folder or in a zip, listed per top-level folder on demand."""

    def __init__(self, root: Path):
        self.root = root
        self.zip_path = _zip_of(root)
        self._entries: list[PurePath] = []
        if self.zip_path is not None:
            try:
                with zipfile.ZipFile(self.zip_path) as zf:
                    self._entries = list(list_zip_images(zf))
                    names = [PurePosixPath(n).parts for n in zf.namelist()]
            except (zipfile.BadZipFile, OSError) as exc:
                raise DataError(f"cannot read {self.zip_path} as a zip ({exc}); the file is damaged") from exc
            self.dirs = {parts[0] for parts in names if len(parts) > 1}
        else:
            # is_dir follows a symlinked split folder, as reading root/<split> always has
            self.dirs = {p.name for p in root.iterdir() if not p.name.startswith(".") and p.is_dir()}

    def files(self, folder: str | None) -> tuple[PurePath, list[PurePath]]:
        """``(base, image files under it)`` for ``folder`` (a top-level folder) or the whole tree."""
        if self.zip_path is None:
            base = self.root if folder is None else self.root / folder
            return base, list(list_image_files(base))
        if folder is None:
            return PurePosixPath(""), list(self._entries)
        return PurePosixPath(folder), [f for f in self._entries if len(f.parts) > 1 and f.parts[0] == folder]

    def where(self, folder: str | None) -> str:
        """``root``, ``root/folder`` or ``zip:folder``, for messages."""
        if folder is None:
            return str(self.root)
        return f"{self.zip_path}:{folder}" if self.zip_path is not None else str(self.root / folder)


def image_split(root: str | Path, split: str | None, limit: int | None = None, labelled: bool = True,
                holdout: float | None = None, announce: bool = True) -> ImageSplit:
    """Which image files of a folder or zip make up ``split`` (see :func:`load_image_folder`).

    Layouts: ``root/<split>/`` when it exists (``test`` falls back to ``val/``, ``valid/`` or
    ``validation/``); otherwise, with ``holdout`` set and ``split`` ``"train"`` or ``"test"``, a
    held-out split of the images (of ``train/`` when that is the only split folder, else of the whole
    folder): :func:`~flowvae.data.base.holdout_indices`, stratified by class subfolder, logged at
    INFO; otherwise the whole folder. ``limit`` then keeps a seeded random subset of the split,
    stratified by class (:func:`~flowvae.data.subset_indices`, seed 0). ``announce=False`` leaves
    the held-out draw unlogged (a caller that only looks at the files before they are read).

    Raises:
        DataError: a missing folder or zip, no images, a split subfolder missing while other splits
            exist (and no held-out split applies), or bad arguments.
    """
    root = Path(root).expanduser()
    limit = check_limit(limit)
    if holdout is not None:
        holdout = check_holdout(holdout)
    if not root.exists():
        raise DataError(f"image folder {root} does not exist or is not a folder; pass a folder of JPEG/PNG files with --data PATH")
    if root.is_file() and _zip_of(root) is None:
        raise DataError(f"{root} is a file but not a zip of images; pass a folder of JPEG/PNG files (or a .zip of them) with --data PATH")
    tree = _Tree(root)
    split_dirs = [d for d in _SPLIT_FOLDERS if d in tree.dirs]
    test_dir = next((d for d in ("test", *TEST_ALIASES) if d in tree.dirs), None)
    folder: str | None = None
    hold = False
    if split is not None:
        wanted = test_dir if split == "test" and test_dir is not None else split
        if holdout is not None and split in ("train", "test") and split_dirs in ([], ["train"]):
            hold, folder = True, "train" if split_dirs else None
        elif wanted in tree.dirs:
            folder = wanted
        elif split_dirs:
            # Reading all of root would silently mix the other splits into this one.
            raise DataError(f"{root} has split subfolders but no {split!r}; add {root / split} or choose another split")
    base, files = tree.files(folder)
    label = root.stem if root.is_file() else (root.name or str(root))
    name = f"{label}/{split}" if split else label
    where = tree.where(folder)
    if not files:
        raise DataError(f"empty dataset {name}: no {_SUFFIXES} files under {where}; check --data PATH")
    labels, classes = folder_labels(files, base) if labelled else (None, None)
    held: HeldOut | None = None
    if hold:
        assert holdout is not None
        if len(files) < 2:
            if announce:
                logger.warning("%s holds a single image: too few to hold out a test split; it is used for both", where)
        else:
            train, test, held = holdout_indices(len(files), labels, holdout)
            keep = (test if split == "test" else train).tolist()
            files = [files[i] for i in keep]
            labels = None if labels is None else labels[keep]
            if announce and split == "train":
                logger.info("%s", held.message(where))
            elif announce:
                logger.info("%s: the %d images held out from the %d of %s (seed %d)", name, held.n_test, held.n_total,
                            where, held.seed)
            name = f"{name} ({held.note()})"
    if limit is not None and limit < len(files):
        # Select before decoding, so a small subset of a large folder stays fast and small; the
        # labels of all files stratify it, and their class list keeps label indices unchanged.
        keep = subset_indices(len(files), limit, labels, LIMIT_SEED).tolist()
        files = [files[i] for i in keep]
        labels = None if labels is None else labels[keep]
    return ImageSplit(files, base, labels, classes, name, held, tree.zip_path)


def read_image_folder(root: str | Path, split: str | None, size: int | None, limit: int | None, on_bad: str,
                      labelled: bool = True, holdout: float | None = None) -> ImageData:
    """:func:`load_image_folder`, with ``labelled=False`` for unlabelled sets whose subfolders are
    not classes (LSUN exports, CelebA-HQ): their ``limit`` subset is then not stratified by subfolder."""
    if on_bad not in _ON_BAD:
        raise DataError(f"on_bad must be 'error' or 'skip', got {on_bad!r}")
    size = check_size(size)
    chosen = image_split(root, split, limit, labelled, holdout)
    label = chosen.name if chosen.held_out is None else chosen.name[: -len(f" ({chosen.held_out.note()})")]
    with contextlib.ExitStack() as stack:
        opener = None
        if chosen.zip_path is not None:
            zf = stack.enter_context(_open_zip(chosen.zip_path))
            opener = functools.partial(read_zip_entry, zf, where=chosen.zip_path)
        data = decode_image_files(chosen.files, chosen.base, label, size, on_bad,  # logs under the short name
                                  chosen.classes if labelled else None, opener)
    return ImageData(data.images, data.labels if labelled else None, chosen.name, data.classes if labelled else None)


def load_image_folder(
    root: str | Path,
    split: str | None = None,
    size: int | None = None,
    limit: int | None = None,
    on_bad: str = "error",
    holdout: float | None = None,
) -> ImageData:
    """A folder (or a zip) of JPEG/PNG/WEBP files (searched recursively, hidden files and folders ignored).

    If ``split`` is given and ``root/<split>/`` exists, only that subfolder is read (for ``"test"``,
    ``val/``, ``valid/`` or ``validation/`` when there is no ``test/``). When every image lies in a
    subfolder, the first subfolder name is its class (classes sorted by name); otherwise labels are
    ``None``. Files are read in sorted relative-path order. Symlinked folders are not entered, and
    symlinked files pointing outside the folder are ignored.

    Without a split folder for ``split``, the whole folder is read, unless ``holdout`` is set: then a
    data set with no test split (no split folders, or ``train/`` only) is split into ``"train"`` and
    ``"test"`` by a seeded held-out draw of ``holdout`` of its images
    (:func:`~flowvae.data.base.holdout_indices`: seed 0, stratified by class subfolder, at least one
    test image per class of two or more), logged at INFO and named in the dataset's name
    (``"faces/test (held out: 40 of 400 images, seed 0)"``). The two splits are disjoint and the same
    on every call. :func:`flowvae.data.load_split` (training and every command) asks for it.

    ``root`` may also be a ``.zip`` of images (entries read in place, never extracted; the same
    layouts), or a folder holding no images but exactly one ``.zip``.

    Grey images give ``C=1`` and colour images ``C=3`` (RGBA, palette, CMYK converted to RGB; an
    alpha channel is dropped); a folder mixing both is converted to RGB throughout. Resized images
    and dropped alpha channels are logged with their counts.

    Args:
        root: the folder or zip.
        split: optional split subfolder name, e.g. ``"train"``.
        size: if given, every image not already ``size x size`` is centre-cropped to a square and
            resized to ``size x size`` with bicubic filtering; if ``None``, all images must already
            have the same size.
        limit: read only a seeded random subset of ``limit`` files of the split, stratified by class
            folder (:func:`~flowvae.data.subset_indices`, seed 0), kept in sorted order; the other
            files are never opened, and labels index the classes of the whole folder.
        on_bad: ``"error"`` to stop at an unreadable or truncated file, ``"skip"`` to leave such
            files out (with one warning giving their count).
        holdout: share of the images held out as the test split of a set without one (e.g. 0.1),
            or ``None`` to read the whole folder for either split.

    Returns:
        ImageData, images ``uint8 [N, C, H, W]`` with ``C`` in ``{1, 3}``, labels ``int64 [N]`` or ``None``.

    Raises:
        DataError: folder missing, no images, a split subfolder missing while other splits exist,
            an unreadable file (``on_bad="error"``), mixed sizes without ``size``, or bad arguments.
    """
    return read_image_folder(root, split, size, limit, on_bad, labelled=True, holdout=holdout)


def _mode(opened: Path | IO[bytes]) -> str | None:
    try:
        with Image.open(opened) as img:  # reads the header only
            return img.mode
    except DECODE_ERRORS:
        return None  # the loader reports (or skips) it; it does not decide the channels


# Files whose headers the description tries before it gives up on a folder (all unreadable).
_PROBE_FILES = 100


def _probe(root: Path) -> FolderInfo | None:
    # The files load_image_folder reads for split="train" (before any held-out draw).
    if not (root.is_dir() or _zip_of(root) is not None):
        return None
    tree = _Tree(root)
    base, files = tree.files("train" if "train" in tree.dirs else None)
    if not files:
        return None
    with contextlib.ExitStack() as stack:
        opener: Callable[[PurePath], Path | IO[bytes]] = Path
        if tree.zip_path is not None:
            zf = stack.enter_context(_open_zip(tree.zip_path))
            opener = functools.partial(read_zip_entry, zf, where=tree.zip_path)
        # The first readable file describes the folder: an unreadable one is the loader's to refuse
        # (data.on_bad=error, naming the fix) or skip (data.on_bad=skip), not the description's.
        first, failure = None, None
        for i, f in enumerate(files[:_PROBE_FILES]):
            try:
                with Image.open(opener(f)) as img:  # reads the header only
                    (w, h), mode = img.size, img.mode
                first = i
                break
            except DECODE_ERRORS as exc:
                failure = failure or exc
        if first is None:
            where = tree.where("train" if "train" in tree.dirs else None)
            which = (f"the only image file under {where} cannot be read" if len(files) == 1 else
                     f"none of the first {min(len(files), _PROBE_FILES)} image files under {where} can be read")
            raise DataError(f"{which}: {files[0]} ({failure}); delete or fix it") from failure
        channels = image_channels(mode)
        # One colour image makes the loader convert the whole folder to RGB, so a grey first image
        # is only the answer if no later one is colour (headers only, stopping at the first colour one).
        if channels == 1 and any(m is not None and image_channels(m) == 3
                                 for m in (_mode(opener(f)) for f in files[first + 1:])):
            channels = 3
    _, classes = folder_labels(files, base)
    has_split = "train" in tree.dirs and any(d in tree.dirs for d in ("test", *TEST_ALIASES))
    zip_path = tree.zip_path
    return FolderInfo(channels=channels, height=h, width=w, n_files=len(files), has_split=has_split,
                      format="zip" if zip_path is not None else "images", source="folder",
                      first=zip_path / files[first] if zip_path is not None else Path(files[first]),
                      n_images=len(files), n_classes=None if classes is None else len(classes))


def _detect(path: Path) -> bool:
    # Folders nobody else claims fall back to this source anyway; a zip must be claimed.
    return path.is_file() and path.suffix.lower() == ".zip"


def _load(root: str | Path | None, split: str, size: int | None = None, limit: int | None = None,
          on_bad: str = "error", holdout: float | None = None) -> ImageData:
    if root is None:
        raise DataError("dataset 'folder' needs the image folder: pass it with --data PATH")
    return load_image_folder(root, split, size=size, limit=limit, on_bad=on_bad, holdout=holdout)


def _lazy(root: str | Path | None, split: str, size: int | None = None, limit: int | None = None,
          on_bad: str = "error", holdout: float | None = None) -> Any:
    """The split :func:`_load` would decode, as files read on access (:class:`~flowvae.data.streaming.ImageFiles`).
    ``on_bad`` applies to the files before the first readable one only (``"skip"`` leaves them out,
    logged; that file sets the channels): a later unreadable file stops training when it is
    reached, naming it."""
    from flowvae.data.streaming import ImageFiles

    if root is None:
        raise DataError("dataset 'folder' needs the image folder: pass it with --data PATH")
    # Not announced: open_split looks at these files first and, for a folder that fits in memory,
    # reads it with _load, which logs the held-out draw (it was logged twice).
    chosen = image_split(root, split, limit, True, holdout, announce=False)
    if on_bad == "skip":
        chosen = _without_unreadable_head(chosen, size)
    return ImageFiles.from_split(chosen, size)


def _without_unreadable_head(chosen: ImageSplit, size: int | None) -> ImageSplit:
    """``chosen`` without the unreadable files before its first readable one (at most
    :data:`_PROBE_FILES` tried), so that a lazy reader can take its channels from that one."""
    from dataclasses import replace

    opener = chosen.opener() or Path
    for i, f in enumerate(chosen.files[:_PROBE_FILES]):
        try:
            decode_image_file(opener(f), size)
        except DECODE_ERRORS:
            continue
        if i:
            logger.info("%s: data.on_bad=skip leaves out the %d unreadable image file(s) before %s", chosen.name, i, f)
        return replace(chosen, files=chosen.files[i:], labels=None if chosen.labels is None else chosen.labels[i:])
    return chosen


register(DataSource(
    name="folder",
    load=_load,
    lazy=_lazy,
    options=frozenset({"limit", "size", "on_bad"}),
    description=f"a folder or zip of {_SUFFIXES} images, classes from subfolders, splits from train/ and test/ "
                "(held out when there are none)",
    holdout=True,
    detect=_detect,
    probe=_probe,
))
