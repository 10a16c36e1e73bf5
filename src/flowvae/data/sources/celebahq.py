"""CelebA-HQ (Karras et al., 2018; the paper uses 256x256) from images or .npy arrays."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from flowvae.data.base import (
    LIMIT_SEED,
    FolderInfo,
    ImageData,
    check_limit,
    check_size,
    check_split,
    make_image_data,
    sized_reader,
    subset_indices,
)
from flowvae.data.images import (
    TEST_ALIASES,
    center_crop_resize,
    decode_image_files,
    folder_split_name,
    has_image_files,
    has_split_folders,
    iter_files,
    list_image_files,
    natural_key,
)
from flowvae.data.registry import DataSource, register
from flowvae.data.sources.folder import read_image_folder
from flowvae.errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["CELEBAHQ_HOWTO", "CELEBAHQ_TRAIN", "NpyImages", "celebahq_train_count", "load_celebahq", "open_celebahq"]

CELEBAHQ_HOWTO = (
    "build CelebA-HQ with dataset_tool.py create_celebahq of https://github.com/tkarras/progressive_growing_of_gans "
    "(from CelebA, https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html, and its deltas) or use a 256x256 export, "
    "then pass the folder of images / imgHQ*.npy files (or one .npy array) with --data DIR"
)
CELEBAHQ_TRAIN = 27000  # of 30,000 images, as in Glow and the paper; the rest (3,000) are test
_BLOCK = 256  # images per read from a memory-mapped array


def celebahq_train_count(n: int) -> int:
    """Images of an ``n``-image CelebA-HQ set that go to ``train``: 27,000 when ``n >= 30,000``
    (the paper's 27,000/3,000 split of the 30,000 images), else ``floor(0.9 * n)`` but at least one
    (so a single image is ``train`` and ``test`` is empty)."""
    if n >= 30000:
        return CELEBAHQ_TRAIN
    return min(n, max(1, (9 * n) // 10))


def _split_range(n: int, split: str, where: Path) -> tuple[int, int]:
    n_train = celebahq_train_count(n)
    lo, hi = (0, n_train) if split == "train" else (n_train, n)
    if split == "train" and n_train < n:
        rule = "the paper's 27,000/3,000 split" if n >= 30000 else "90%/10%"
        logger.info("no train/test folders in %s: the last %d of %d images in file-name order are the test split (%s)",
                    where, n - n_train, n, rule)
    if hi <= lo:
        raise DataError(f"empty dataset celebahq/{split}: {where} holds only {n} image(s), too few for a "
                        f"train/test split; add images or use train/ and test/ subfolders")
    return lo, hi


def _open_npy(path: Path) -> np.ndarray:
    """Memory-map a .npy of uint8 images as ``[n, ...]`` (a single image gets a batch axis)."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"cannot read {path} as a .npy array ({type(exc).__name__}: {exc}); the file is damaged") from exc
    if not isinstance(arr, np.ndarray) or arr.dtype != np.uint8:
        raise DataError(f"{path} holds {getattr(arr, 'dtype', type(arr).__name__)} values, expected uint8 pixels 0..255; "
                        "convert it with (x * 255).round().astype(np.uint8) or re-export the images")
    shape = arr.shape
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or not (arr.shape[1] == 3 or arr.shape[3] == 3):
        raise DataError(f"{path} has shape {shape}, expected [N, 3, H, W], [N, H, W, 3] or one image [3, H, W] "
                        "/ [H, W, 3]; it is not an array of RGB images")
    return arr


def _npy_hw(arr: np.ndarray) -> tuple[int, int]:
    h, w = arr.shape[2:4] if arr.shape[1] == 3 else arr.shape[1:3]
    return int(h), int(w)


def _npy_images(arr: np.ndarray, rows: np.ndarray, size: int | None) -> np.ndarray:
    """Images ``rows`` (sorted) of a mapped ``[n, 3, H, W]`` / ``[n, H, W, 3]`` array as a new ``uint8 [k, 3, S, S]``.

    Reads blocks of 256 images, so a large memory-mapped file is never copied whole; the result owns
    its memory (no view keeps the mapping, and its file descriptor, alive).
    """
    channels_first = arr.shape[1] == 3
    h, w = _npy_hw(arr)
    side = None if size is None or (h, w) == (size, size) else size  # images already that size keep their pixels
    out = np.empty((len(rows), 3) + ((h, w) if side is None else (side, side)), dtype=np.uint8)
    for at in range(0, len(rows), _BLOCK):
        block = np.asarray(arr[rows[at : at + _BLOCK]])
        if not channels_first:
            block = block.transpose(0, 3, 1, 2)
        if side is None:
            out[at : at + len(block)] = block
            continue
        for j, image in enumerate(block):
            resized = center_crop_resize(Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0))), side)
            out[at + j] = np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1)
    return out


def _load_celebahq_npy(paths: list[Path], base: Path, split: str, size: int | None, limit: int | None,
                       split_here: bool) -> np.ndarray:
    # Map each file only while it is used: 30,000 per-image files mapped at once would exhaust the
    # process's file descriptors (every mapping holds one).
    counts = [len(_open_npy(p)) for p in paths]
    n = sum(counts)
    lo, hi = _split_range(n, split, base) if split_here else (0, n)
    keep = lo + subset_indices(hi - lo, limit, None, LIMIT_SEED).numpy()
    chunks: list[np.ndarray] = []
    start = resized = 0
    for path, count in zip(paths, counts):
        rows = keep[(keep >= start) & (keep < start + count)] - start
        start += count
        if not len(rows):
            continue
        arr = _open_npy(path)
        resized += len(rows) if size is not None and _npy_hw(arr) != (size, size) else 0
        chunk = _npy_images(arr, rows, size)
        if chunks and chunk.shape[2:] != chunks[0].shape[2:]:
            raise DataError(f"{path} holds {chunk.shape[3]}x{chunk.shape[2]} images but earlier files "
                            f"{chunks[0].shape[3]}x{chunks[0].shape[2]}; resize them all with --set data.image_size=N")
        chunks.append(chunk)
    if resized:
        logger.info("celebahq/%s: resized %d of %d images to %dx%d (centre-cropped to a square, PIL bicubic)",
                    split, resized, len(keep), size, size)
    return np.concatenate(chunks) if len(chunks) > 1 else chunks[0]


def _split_base(root: Path, split: str) -> tuple[Path, str, bool]:
    """``(folder to read, its split subfolder name, whether root has split subfolders)``."""
    folder_split = folder_split_name(root, split)
    split_dirs = (root / "train").is_dir() and any((root / s).is_dir() for s in ("test", *TEST_ALIASES))
    return (root / folder_split if split_dirs else root), folder_split, split_dirs


def _npy_files(base: Path) -> list[Path]:
    return sorted(iter_files(base, (".npy",)), key=lambda p: natural_key(p, base))


def load_celebahq(root: str | Path, split: str = "train", size: int | None = 256, limit: int | None = None) -> ImageData:
    """CelebA-HQ (Karras et al., 2018; the paper uses 256x256) from images or .npy arrays.

    There is no official download of the finished dataset: it is built from CelebA and the deltas
    published with Progressive GAN (``dataset_tool.py create_celebahq``, which the original release
    wrote as per-image ``imgHQ00000.npy`` ... ``imgHQ29999.npy``, each ``uint8 [1, 3, 1024, 1024]``),
    and 256x256 JPEG/PNG exports of it are widely shared. ``root`` may be:

    * a folder of images (``.png/.jpg/.jpeg/.webp``, read as by :func:`~flowvae.data.load_image_folder`);
    * a folder of ``.npy`` files, each one image ``[1, 3, H, W]`` / ``[3, H, W]`` / ``[H, W, 3]`` or a
      batch ``[n, 3, H, W]`` / ``[n, H, W, 3]``, all ``uint8``;
    * one ``.npy`` file ``uint8 [N, H, W, 3]`` or ``[N, 3, H, W]`` (memory-mapped: only the images of
      the split are read).

    Split: if the folder has ``train/`` and ``test/`` (or ``val/``) subfolders they are the splits.
    Otherwise the images are ordered by file name (digit runs compared as numbers, so ``2.jpg`` comes
    before ``10.jpg``; within one .npy file by index) and the first 27,000 are ``train`` and the rest
    ``test``, the 27,000/3,000 split of the 30,000 images used by Glow and the paper; a set of fewer
    than 30,000 images is split 90%/10% (``train`` = the first ``floor(0.9 * N)``, see
    :func:`celebahq_train_count`).

    Images that are not ``size x size`` are centre-cropped to a square and resized with PIL's bicubic
    filter; images already that size keep their exact pixels.

    Args:
        root: location as above.
        split: ``"train"`` or ``"test"``.
        size: output height and width (default 256, as in the paper); ``None`` keeps the stored size
            (all images must then share it).
        limit: keep only a seeded random subset of ``limit`` images of the split
            (:func:`~flowvae.data.subset_indices`, seed 0; CelebA-HQ has no labels), in split order;
            only those images are read.

    Returns:
        ImageData named ``"celebahq/<split>"``: images ``uint8 [N, 3, size, size]`` (RGB 0..255; a
        folder of only grey images gives ``C=1``), labels ``None``.

    Raises:
        DataError: root missing or holding neither images nor .npy files (the message says how to get
            CelebA-HQ), a folder mixing .npy and image files, a .npy that is not uint8 RGB images, too
            few images to split, mixed sizes with ``size=None``, or bad ``size``/``limit``.
    """
    check_split(split)
    limit = check_limit(limit)
    size = check_size(size)
    root = Path(root).expanduser()
    name = f"celebahq/{split}"
    if not root.exists():
        raise DataError(f"CelebA-HQ not found: {root} does not exist; {CELEBAHQ_HOWTO}")
    if root.is_file():
        if root.suffix.lower() != ".npy":
            raise DataError(f"CelebA-HQ: {root} is a file but not a .npy array; pass a folder of images or a .npy file with --data DIR")
        return make_image_data(_load_celebahq_npy([root], root, split, size, limit, split_here=True), None, name, None)

    base, folder_split, split_dirs = _split_base(root, split)
    npys = _npy_files(base)
    has_images = has_image_files(base)
    if npys and has_images:
        raise DataError(f"{base} holds both .npy and image files; keep one kind, or pass one of them with --data DIR")
    if npys:
        return make_image_data(_load_celebahq_npy(npys, base, split, size, limit, split_here=not split_dirs), None, name, None)
    if not has_images:
        raise DataError(f"CelebA-HQ not found in {base}: no image or .npy files; {CELEBAHQ_HOWTO}")
    if split_dirs:
        data = read_image_folder(root, folder_split, size, limit, "error", labelled=False)
    else:
        files = sorted(list_image_files(base), key=lambda p: natural_key(p, base))
        lo, hi = _split_range(len(files), split, base)
        files = files[lo:hi]
        files = [files[i] for i in subset_indices(len(files), limit, None, LIMIT_SEED).tolist()]
        data = decode_image_files(files, base, name, size, "error")
    return ImageData(data.images, None, name)  # CelebA-HQ is unlabelled: subfolders are not classes


def _probe(root: Path) -> FolderInfo | None:
    base, _, _ = _split_base(root, "train")
    npys = _npy_files(base) if base.is_dir() else []
    if not npys:
        return None
    first = _open_npy(npys[0])  # the header only: the array is memory-mapped
    h, w = _npy_hw(first)
    # One file per image (the original release) or one array: counted without opening 30,000 files.
    n_images = len(first) * len(npys) if len(npys) > 1 else len(first)
    return FolderInfo(channels=3, height=h, width=w, n_files=len(npys), has_split=has_split_folders(root),
                      format="npy", source="celebahq", first=npys[0], n_images=n_images)




class NpyImages:
    """Images of ``.npy`` arrays read on access: a map-style dataset of ``(uint8 [3, S, S], -1)``,
    the rows :func:`load_celebahq` would read from the same files (same split and subset), each
    file memory-mapped only while one of its images is read (30,000 per-image files stay closed).

    Raises:
        DataError: (on access) a damaged file.
    """

    def __init__(self, paths: list[Path], starts: np.ndarray, rows: np.ndarray, size: int | None, name: str):
        self.paths, self.starts, self.rows, self.size, self.name = [str(p) for p in paths], starts, rows, size, name
        self.labels = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> tuple[Any, int]:
        import torch

        g = int(self.rows[i])
        k = int(np.searchsorted(self.starts, g, side="right")) - 1
        arr = _open_npy(Path(self.paths[k]))
        image = _npy_images(arr, np.array([g - self.starts[k]]), self.size)[0]
        del arr
        return torch.from_numpy(image), -1


def open_celebahq(root: str | Path, split: str = "train", size: int | None = 256, limit: int | None = None) -> Any:
    """What :func:`load_celebahq` would load, read on access when it comes from ``.npy`` arrays
    (:class:`NpyImages`); a folder of images is loaded as :func:`load_celebahq` does."""
    check_split(split)
    limit = check_limit(limit)
    size = check_size(size)
    path = Path(root).expanduser()
    if path.is_file() and path.suffix.lower() == ".npy":
        npys, base, split_here = [path], path, True
    elif path.is_dir():
        base, _, split_dirs = _split_base(path, split)
        npys, split_here = _npy_files(base), not split_dirs
        if not npys or has_image_files(base):
            return load_celebahq(root, split, size, limit)
    else:
        return load_celebahq(root, split, size, limit)
    counts = [len(_open_npy(p)) for p in npys]
    n = sum(counts)
    lo, hi = _split_range(n, split, base) if split_here else (0, n)
    keep = lo + subset_indices(hi - lo, limit, None, LIMIT_SEED).numpy()
    if size is None and len({_npy_hw(_open_npy(p)) for p in npys}) > 1:
        return load_celebahq(root, split, size, limit)  # its message names the mixed sizes
    return NpyImages(npys, np.cumsum([0] + counts), keep, size, f"celebahq/{split}")


register(DataSource(
    name="celebahq",
    load=sized_reader(load_celebahq, "celebahq"),
    lazy=sized_reader(open_celebahq, "celebahq"),
    options=frozenset({"limit", "size"}),
    description="CelebA-HQ faces, 27,000 train / 3,000 test, images or .npy arrays, resized (default 256)",
    probe=_probe,
))
