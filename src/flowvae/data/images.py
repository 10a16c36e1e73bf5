"""Image files: which files count as images, how folders are listed, and how files are decoded.

One definition of each, shared by every loader that reads image files (folder, LSUN exports,
CelebA-HQ images, the CIFAR-10 JPEG zip) and by :func:`flowvae.data.describe_image_folder`, so
what a folder is described as is what the loader will read.
"""

from __future__ import annotations

import io
import logging
import os
import re
import stat
import zipfile
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path, PurePath, PurePosixPath
from typing import IO, Any

import numpy as np
from PIL import Image

from flowvae.data.base import ImageData, make_image_data
from flowvae.errors import DataError

logger = logging.getLogger(__name__)

__all__ = [
    "ALPHA_MODES",
    "DECODE_ERRORS",
    "GREY_MODES",
    "IMAGE_SUFFIXES",
    "MAX_ZIP_ENTRY_BYTES",
    "TEST_ALIASES",
    "center_crop_resize",
    "decode_image_file",
    "decode_image_files",
    "folder_labels",
    "folder_split_name",
    "has_image_files",
    "has_split_folders",
    "image_channels",
    "iter_files",
    "list_image_files",
    "list_zip_images",
    "natural_key",
    "read_zip_entry",
]

# Lower-case suffixes of the files image loaders read (in the order messages list them).
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg", ".webp")
# PIL modes decoded to one grey channel; every other mode (RGB, RGBA, P, CMYK ...) becomes RGB.
GREY_MODES: frozenset[str] = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F"})
_EIGHT_BIT_GREY = frozenset({"1", "L", "LA", "La"})  # PIL's convert("L") is exact for these
# PIL modes with an alpha channel, which the loaders drop (a palette image's transparency too).
ALPHA_MODES: frozenset[str] = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
# Largest zip entry read as one image: a photo is a few MB; anything far bigger is not one.
MAX_ZIP_ENTRY_BYTES = 256 << 20
# What PIL raises for unreadable, truncated or oversized files.
DECODE_ERRORS: tuple[type[BaseException], ...] = (OSError, SyntaxError, ValueError, Image.DecompressionBombError)
# What reading one image file or zip entry may raise for a bad file.
_READ_ERRORS: tuple[type[BaseException], ...] = (*DECODE_ERRORS, zipfile.BadZipFile)
# Folder names that stand for the test split when there is no test/ folder.
TEST_ALIASES: tuple[str, ...] = ("val", "valid", "validation")
_DIGIT_RUNS = re.compile(r"(\d+)")


def image_channels(mode: str) -> int:
    """Channels the loaders produce for an image of PIL ``mode``: 1 for :data:`GREY_MODES`, else 3."""
    return 1 if mode in GREY_MODES else 3


# --------------------------------------------------------------------------------------
# Listing
# --------------------------------------------------------------------------------------


def _inside(path: Path, real_base: str) -> bool:
    real = os.path.realpath(path)
    return real == real_base or real.startswith(real_base.rstrip(os.sep) + os.sep)


def _not_regular(path: Path) -> str:
    """What ``path`` (listed, but not a regular file) is, in words."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return "a broken symbolic link"
    for test, kind in ((stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"),
                       (stat.S_ISBLK, "a device")):
        if test(mode):
            return kind
    return "not a regular file"


def iter_files(base: Path, suffixes: Collection[str],
               skipped: list[tuple[Path, str]] | None = None) -> Iterator[Path]:
    """Regular files under ``base`` (recursive) whose lower-case suffix is in ``suffixes``, unsorted.

    Hidden files and folders (name starting with ``.``) are skipped. Symlinked folders are not
    entered and a symlinked file is only listed if its target lies inside ``base``, so a dataset
    folder can never make a loader read files outside it (or loop). FIFOs, devices and sockets
    are never listed (reading one could hang or never end).

    Args:
        base: the folder.
        suffixes: lower-case suffixes with the dot (``".png"``).
        skipped: if given, each entry left out for those reasons (not hidden or other-suffix
            files) is appended as ``(path, why)``, symlinked folders included.
    """
    real_base = os.path.realpath(base)
    for dirpath, dirnames, filenames in os.walk(base, followlinks=False):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        if skipped is not None:  # os.walk lists a link to a folder among the folders, and does not enter it
            skipped.extend((Path(dirpath, d), "a link to a folder") for d in dirnames
                           if os.path.islink(os.path.join(dirpath, d)))
        for fname in sorted(filenames):
            if fname.startswith(".") or os.path.splitext(fname)[1].lower() not in suffixes:
                continue
            path = Path(dirpath, fname)
            if path.is_symlink() and not _inside(path, real_base):
                if skipped is not None:
                    skipped.append((path, "a symbolic link leading out of the folder"))
                continue
            if path.is_file():
                yield path
            elif skipped is not None:
                skipped.append((path, _not_regular(path)))


# (folder, count, example) of the skipped entries already logged: a folder is listed once per
# split and once more when it is described, and one line about it is enough.
_LOGGED_SKIPS: set[tuple[str, int, str]] = set()


def list_image_files(base: Path) -> list[Path]:
    """Image files (:data:`IMAGE_SUFFIXES`) under ``base`` as :func:`iter_files` lists them,
    sorted by relative path: the order every image loader reads them in.

    Entries left out for being links out of ``base``, links to folders, FIFOs, devices or sockets
    are logged as one WARNING line with their count and an example (once per folder and process)."""
    skipped: list[tuple[Path, str]] = []
    files = sorted(iter_files(base, IMAGE_SUFFIXES, skipped), key=lambda p: p.relative_to(base).as_posix())
    if skipped:
        path, why = min(skipped, key=lambda item: item[0].relative_to(base).as_posix())
        example = path.relative_to(base).as_posix()
        key = (os.path.realpath(base), len(skipped), example)
        if key not in _LOGGED_SKIPS:
            _LOGGED_SKIPS.add(key)
            logger.warning("%s: skipped %d entr%s that %s not regular image files inside it (links leading out "
                           "of it, links to folders, FIFOs, devices), e.g. %s (%s)", base, len(skipped),
                           "y" if len(skipped) == 1 else "ies", "is" if len(skipped) == 1 else "are", example, why)
    return files


def list_zip_images(zf: zipfile.ZipFile) -> list[PurePosixPath]:
    """Image entries (:data:`IMAGE_SUFFIXES`) of a zip, as relative POSIX paths sorted as
    :func:`list_image_files` sorts a folder: hidden files and folders (a part starting with ``.``),
    macOS ``__MACOSX/`` resource forks, folder entries and names that are absolute or climb out
    with ``..`` are left out."""
    out = []
    for info in zf.infolist():
        name = info.filename
        if info.is_dir() or name.startswith("/") or "\\" in name:
            continue
        parts = PurePosixPath(name).parts
        if not parts or any(p.startswith(".") or p == "__MACOSX" for p in parts):
            continue
        if os.path.splitext(parts[-1])[1].lower() in IMAGE_SUFFIXES:
            out.append(PurePosixPath(name))
    return sorted(out, key=lambda p: p.as_posix())


def read_zip_entry(zf: zipfile.ZipFile, name: PurePath | str, where: Path) -> IO[bytes]:
    """The bytes of one zip entry as a file object for PIL, its size checked before it is read.

    Raises:
        DataError: an entry larger than :data:`MAX_ZIP_ENTRY_BYTES`, or missing.
        OSError, zipfile.BadZipFile: a damaged entry (callers treat it as an unreadable image).
    """
    key = name.as_posix() if isinstance(name, PurePath) else name
    try:
        info = zf.getinfo(key)
    except KeyError:
        raise DataError(f"{where} has no entry {key}; the zip changed while it was read") from None
    if info.file_size > MAX_ZIP_ENTRY_BYTES:
        raise DataError(f"{where}:{key} is {info.file_size} bytes, more than any image the loaders read "
                        f"({MAX_ZIP_ENTRY_BYTES}); remove it from the zip")
    return io.BytesIO(zf.read(info))


def has_image_files(base: Path) -> bool:
    """Whether ``base`` holds at least one listable image file (stops at the first)."""
    return next(iter_files(base, IMAGE_SUFFIXES), None) is not None


def natural_key(path: Path, base: Path) -> list[Any]:
    """Sort key comparing digit runs as numbers, so ``2.jpg < 10.jpg`` and ``imgHQ00002.npy < imgHQ00010.npy``."""
    parts = _DIGIT_RUNS.split(path.relative_to(base).as_posix())
    return [(0, int(p), "") if i % 2 else (1, 0, p) for i, p in enumerate(parts)]


def has_split_folders(root: Path) -> bool:
    """Whether ``root`` has both ``train/`` and ``test/`` subfolders."""
    return (root / "train").is_dir() and (root / "test").is_dir()


def folder_split_name(root: Path, split: str) -> str:
    """``split``, or ``"val"`` when ``root`` has ``val/`` (or ``valid/``, ``validation/``) but no ``test/``."""
    if split == "test" and not (root / "test").is_dir():
        for alias in TEST_ALIASES:
            if (root / alias).is_dir():
                return alias
    return split


def folder_labels(files: Sequence[PurePath], base: PurePath) -> tuple[np.ndarray | None, list[str] | None]:
    """Labels from the first subfolder of each file, when every file has one (``files`` may be
    paths in a folder or entries of a zip, all under ``base``).

    Returns:
        ``(int64 [len(files)], sorted class names)``, or ``(None, None)`` if any file lies
        directly in ``base``.
    """
    rel = [f.relative_to(base).parts for f in files]
    if not rel or not all(len(parts) > 1 for parts in rel):
        return None, None
    classes = sorted({parts[0] for parts in rel})
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[parts[0]] for parts in rel], dtype=np.int64), classes


# --------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------


def center_crop_resize(img: Image.Image, size: int) -> Image.Image:
    """Centre-crop ``img`` to the largest square and resize it to ``size x size`` (PIL bicubic).

    The crop box starts at ``((w - s) // 2, (h - s) // 2)`` with ``s = min(w, h)``; an image that
    is already ``size x size`` comes back unchanged (PIL returns a copy for a same-size resize).
    """
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return img.crop((left, top, left + s, top + s)).resize((size, size), Image.Resampling.BICUBIC)


def _has_alpha(img: Image.Image) -> bool:
    return img.mode in ALPHA_MODES or (img.mode in ("P", "L", "RGB") and "transparency" in img.info)


def _decode(source: Path | IO[bytes], size: int | None) -> tuple[np.ndarray, bool, bool, bool]:
    """``(pixels, resized, had alpha, had transparent pixels)`` of one image (see :func:`decode_image_file`)."""
    with Image.open(source) as img:
        img.load()  # force the full decode here so truncated files fail now, not later
        alpha = _has_alpha(img)
        transparent = False
        if alpha:
            rgba = img if img.mode in ("RGBA", "LA") else img.convert("RGBA")
            transparent = rgba.getchannel("A").getextrema()[0] < 255
        if img.mode in _EIGHT_BIT_GREY:
            img = img.convert("L")
        elif img.mode in GREY_MODES:
            # 16-bit / int / float grey: scale to 8 bits instead of letting PIL clip at 255.
            a = np.asarray(img, dtype=np.float64)
            top = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
            img = Image.fromarray(np.clip(a * (255.0 / top) + 0.5, 0, 255).astype(np.uint8), mode="L")
        else:
            img = img.convert("RGB")  # RGBA, P, CMYK, YCbCr ... -> RGB
        resized = size is not None and img.size != (size, size)
        if resized:
            assert size is not None
            img = center_crop_resize(img, size)
        return np.asarray(img, dtype=np.uint8), resized, alpha, transparent


def decode_image_file(path: Path | IO[bytes], size: int | None) -> np.ndarray:
    """Decode to ``uint8 [H, W]`` (grey) or ``[H, W, 3]`` (RGB); ``size`` centre-crops and resizes
    an image that is not already ``size x size`` (one that is keeps its exact pixels). An alpha
    channel is dropped (transparent pixels keep their stored colour). ``path`` may also be an open
    binary file (a zip entry).

    Raises:
        OSError, SyntaxError, ValueError, PIL.Image.DecompressionBombError: on bad files
            (:data:`DECODE_ERRORS`); callers turn them into DataError.
    """
    return _decode(path, size)[0]


def decode_image_files(files: Sequence[PurePath], base: PurePath, name: str, size: int | None, on_bad: str,
                       classes: Sequence[str] | None = None,
                       opener: Callable[[PurePath], Path | IO[bytes]] | None = None) -> ImageData:
    """Decode ``files`` (all under ``base``) into one :class:`ImageData`.

    Grey files give ``C=1``; if any file is colour, all are converted to RGB (``C=3``). Labels come
    from the first subfolder when every kept file has one (classes sorted by name), or from
    ``classes`` when given (a subset keeps the class indices of the whole folder).

    What was changed is logged with counts, one INFO line each: how many images were resized to
    ``size x size`` (none is mentioned when all already had that size) and how many had an alpha
    channel that was dropped (and how many of those had transparent pixels).

    Args:
        files: the files, in the order wanted.
        base: the folder they are listed under (labels and messages are relative to it).
        name: dataset name for messages and the result.
        size: centre-crop and resize to ``size x size``, or ``None`` (all files must then agree).
        on_bad: ``"error"`` or ``"skip"`` for unreadable files.
        classes: class names to index labels into, or ``None`` to derive them from ``files``.
        opener: ``opener(file)`` gives what PIL opens for ``file`` (an open binary file for a zip
            entry, see :func:`read_zip_entry`); default: the file's path.

    Returns:
        ImageData, images ``uint8 [N, C, H, W]`` with ``C`` in ``{1, 3}``.

    Raises:
        DataError: an unreadable file (``on_bad="error"``), none readable, or mixed sizes without ``size``.
    """
    arrays: list[np.ndarray] = []
    kept: list[PurePath] = []
    bad: list[PurePath] = []
    n_resized = n_alpha = n_transparent = 0
    for f in files:
        try:
            arr, resized, alpha, transparent = _decode(opener(f) if opener is not None else Path(f), size)
        except _READ_ERRORS as exc:
            if on_bad == "error":
                raise DataError(
                    f"cannot read image {f} ({exc}); delete or fix it, or skip unreadable files with --set data.on_bad=skip"
                ) from exc
            bad.append(f)
            continue
        if arrays and arr.shape[:2] != arrays[0].shape[:2]:
            h0, w0 = arrays[0].shape[:2]
            h1, w1 = arr.shape[:2]
            raise DataError(
                f"images differ in size: {kept[0]} is {w0}x{h0} but {f} is {w1}x{h1}; "
                "resize them all to one square size with --set data.image_size=N"
            )
        arrays.append(arr)
        kept.append(f)
        n_resized += resized
        n_alpha += alpha
        n_transparent += transparent
    if bad:
        logger.warning("%s: skipped %d unreadable image file(s), e.g. %s", name, len(bad), bad[0])
    if not arrays:
        raise DataError(f"empty dataset {name}: none of the {len(files)} image files under {base} could be read")
    if n_resized:
        rest = f"; the other {len(kept) - n_resized} already were" if n_resized < len(kept) else ""
        logger.info("%s: resized %d of %d images to %dx%d (centre-cropped to a square, PIL bicubic)%s",
                    name, n_resized, len(kept), size, size, rest)
    if n_alpha:
        lost = (f"{n_transparent} with transparent pixels, which keep their stored colour" if n_transparent
                else "all fully opaque, so nothing is lost")
        logger.info("%s: dropped the alpha channel of %d of %d images (RGBA, grey+alpha or palette transparency; %s)",
                    name, n_alpha, len(kept), lost)

    if all(a.ndim == 2 for a in arrays):
        images = np.stack(arrays)[:, None]
    else:
        # Grey -> RGB by repeating the plane is exactly what PIL's convert("RGB") does.
        images = np.stack([a if a.ndim == 3 else np.repeat(a[:, :, None], 3, axis=2) for a in arrays])
        images = images.transpose(0, 3, 1, 2)

    labels, found = folder_labels(kept, base)
    if labels is not None and classes is not None:
        index = {c: i for i, c in enumerate(classes)}
        labels = np.array([index[f.relative_to(base).parts[0]] for f in kept], dtype=np.int64)
        found = list(classes)
    elif labels is None and any(len(f.relative_to(base).parts) > 1 for f in kept):
        logger.warning("%s: some images are in subfolders and some are not; loading without labels", name)
    return make_image_data(images, labels, name, found)
