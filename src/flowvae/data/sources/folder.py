"""A folder of JPEG/PNG/WEBP files, with classes from subfolders."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from flowvae.data.base import (
    LIMIT_SEED,
    FolderInfo,
    ImageData,
    check_limit,
    check_size,
    subset_indices,
)
from flowvae.data.images import (
    DECODE_ERRORS,
    IMAGE_SUFFIXES,
    TEST_ALIASES,
    decode_image_files,
    folder_labels,
    has_split_folders,
    image_channels,
    list_image_files,
)
from flowvae.data.registry import DataSource, register
from flowvae.errors import DataError

__all__ = ["load_image_folder", "read_image_folder"]

_SPLIT_FOLDERS = ("train", "test", *TEST_ALIASES)
_ON_BAD = ("error", "skip")
_SUFFIXES = "/".join(IMAGE_SUFFIXES)


def read_image_folder(root: str | Path, split: str | None, size: int | None, limit: int | None, on_bad: str,
                      labelled: bool = True) -> ImageData:
    """:func:`load_image_folder`, with ``labelled=False`` for unlabelled sets whose subfolders are
    not classes (LSUN exports, CelebA-HQ): their ``limit`` subset is then not stratified by subfolder."""
    root = Path(root).expanduser()
    limit = check_limit(limit)
    if on_bad not in _ON_BAD:
        raise DataError(f"on_bad must be 'error' or 'skip', got {on_bad!r}")
    size = check_size(size)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a folder; pass a folder of JPEG/PNG files with --data PATH")
    base = root
    if split is not None:
        if (root / split).is_dir():
            base = root / split
        elif any((root / s).is_dir() for s in _SPLIT_FOLDERS):
            # Reading all of root would silently mix the other splits into this one.
            raise DataError(f"{root} has split subfolders but no {split!r}; add {root / split} or choose another split")
    name = f"{root.name or root}/{split}" if split else str(root.name or root)

    files = list_image_files(base)
    if not files:
        raise DataError(f"empty dataset {name}: no {_SUFFIXES} files under {base}; check --data PATH")
    classes = None
    if limit is not None and limit < len(files):
        # Select before decoding, so a small subset of a large folder stays fast and small; the
        # labels of all files stratify it, and their class list keeps label indices unchanged.
        labels, classes = folder_labels(files, base) if labelled else (None, None)
        files = [files[i] for i in subset_indices(len(files), limit, labels, LIMIT_SEED).tolist()]
    return decode_image_files(files, base, name, size, on_bad, classes)


def load_image_folder(
    root: str | Path,
    split: str | None = None,
    size: int | None = None,
    limit: int | None = None,
    on_bad: str = "error",
) -> ImageData:
    """A folder of JPEG/PNG/WEBP files (searched recursively, hidden files and folders ignored).

    If ``split`` is given and ``root/<split>/`` exists, only that subfolder is read. When every
    image lies in a subfolder, the first subfolder name is its class (classes sorted by name);
    otherwise labels are ``None``. Files are read in sorted relative-path order. Symlinked folders
    are not entered, and symlinked files pointing outside the folder are ignored.

    Grey images give ``C=1`` and colour images ``C=3`` (RGBA, palette, CMYK converted to RGB); a
    folder mixing both is converted to RGB throughout.

    Args:
        root: the folder.
        split: optional split subfolder name, e.g. ``"train"``.
        size: if given, every image is centre-cropped to a square and resized to ``size x size``
            with bicubic filtering; if ``None``, all images must already have the same size.
        limit: read only a seeded random subset of ``limit`` files, stratified by class folder
            (:func:`~flowvae.data.subset_indices`, seed 0), kept in sorted order; the other files
            are never opened, and labels index the classes of the whole folder.
        on_bad: ``"error"`` to stop at an unreadable or truncated file, ``"skip"`` to leave such
            files out (with one warning giving their count).

    Returns:
        ImageData, images ``uint8 [N, C, H, W]`` with ``C`` in ``{1, 3}``, labels ``int64 [N]`` or ``None``.

    Raises:
        DataError: folder missing, no images, a split subfolder missing while other splits exist,
            an unreadable file (``on_bad="error"``), mixed sizes without ``size``, or bad arguments.
    """
    return read_image_folder(root, split, size, limit, on_bad, labelled=True)


def _mode(path: Path) -> str | None:
    try:
        with Image.open(path) as img:  # reads the header only
            return img.mode
    except DECODE_ERRORS:
        return None  # the loader reports (or skips) it; it does not decide the channels


def _probe(root: Path) -> FolderInfo | None:
    # The files load_image_folder reads for split="train": train/ when it exists, else all of root.
    base = root / "train" if (root / "train").is_dir() else root
    files = list_image_files(base)
    if not files:
        return None
    try:
        with Image.open(files[0]) as img:  # reads the header only
            (w, h), mode = img.size, img.mode
    except DECODE_ERRORS as exc:
        raise DataError(f"cannot read {files[0]} ({exc}); delete or fix it") from exc
    channels = image_channels(mode)
    # One colour image makes the loader convert the whole folder to RGB, so a grey first image
    # is only the answer if no later one is colour (headers only, stopping at the first colour one).
    if channels == 1 and any(m is not None and image_channels(m) == 3 for m in map(_mode, files[1:])):
        channels = 3
    return FolderInfo(channels=channels, height=h, width=w, n_files=len(files),
                      has_split=has_split_folders(root), format="images", source="folder", first=files[0])


def _load(root: str | Path | None, split: str, size: int | None = None, limit: int | None = None,
          on_bad: str = "error") -> ImageData:
    if root is None:
        raise DataError("dataset 'folder' needs the image folder: pass it with --data PATH")
    return load_image_folder(root, split, size=size, limit=limit, on_bad=on_bad)


register(DataSource(
    name="folder",
    load=_load,
    options=frozenset({"limit", "size", "on_bad"}),
    description=f"a folder of {_SUFFIXES} images, classes from subfolders, splits from train/ and test/",
    probe=_probe,
))
