"""Downsampled ImageNet 64x64 (Chrabaszcz, Loshchilov & Hutter, 2017) from its npz batches."""

from __future__ import annotations

import logging
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from flowvae.data.base import (
    LIMIT_SEED,
    FolderInfo,
    ImageData,
    check_limit,
    check_size,
    check_split,
    make_image_data,
    shared_or_cache,
    subset_indices,
)
from flowvae.data.images import has_split_folders
from flowvae.data.registry import DataSource, register
from flowvae.errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["IMAGENET64_HOWTO", "IMAGENET64_URL", "load_imagenet64", "open_imagenet64"]

IMAGENET64_URL = "https://image-net.org/download-images.php"
IMAGENET64_HOWTO = (
    f"log in at {IMAGENET64_URL}, download 'Downsampled ImageNet 64x64' (Imagenet64_train_part1_npz.zip, "
    "Imagenet64_train_part2_npz.zip, Imagenet64_val_npz.zip), unzip them into one folder and pass it with --data DIR"
)
_IMAGENET64_BATCH = re.compile(r"train_data_batch_(\d+)\.npz")
_IMAGENET64_PIXELS = 3 * 64 * 64
_DAMAGED = "the file is damaged, download it again"


def _imagenet64_files(root: Path, split: str) -> list[Path]:
    """The split's npz files in ``root`` or its direct subfolders (the unzipped part folders)."""
    # Symlinked part folders are not entered: nothing outside root is read.
    folders = [root] + sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink() and not p.name.startswith("."))
    if split == "test":
        return [f / "val_data.npz" for f in folders if (f / "val_data.npz").is_file()][:1]
    batches: dict[int, Path] = {}
    for folder in folders:
        for f in folder.glob("train_data_batch_*.npz"):
            m = _IMAGENET64_BATCH.fullmatch(f.name)
            if m is None or not f.is_file():
                continue
            number = int(m.group(1))
            if number in batches:
                raise DataError(f"{batches[number]} and {f} are both train batch {number}; delete one of them")
            batches[number] = f
    return [batches[k] for k in sorted(batches)]


# --------------------------------------------------------------------------------------
# npz members, read by header first
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Member:
    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int | None  # file offset of the array's bytes when they can be memory-mapped, else None


def _npz_member(path: Path, key: str) -> _Member:
    """Shape, dtype and (for stored, C-order arrays) the data offset of one npz member, from headers only.

    Raises:
        DataError: the member is missing or the file is not a readable npz.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            try:
                info = zf.getinfo(f"{key}.npy")
            except KeyError:
                raise DataError(f"{path} has no {key!r} array; it is not a Downsampled ImageNet npz batch, {IMAGENET64_HOWTO}") from None
            with zf.open(info) as f:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise ValueError(f"unsupported .npy format version {version}")
                header_len = f.tell()
        if dtype.hasobject:
            raise ValueError("it holds Python objects, which would need pickle")
        offset = None
        if info.compress_type == zipfile.ZIP_STORED and not fortran:
            with open(path, "rb") as raw:
                raw.seek(info.header_offset)
                local = raw.read(30)  # the local file header; its name and extra lengths may differ from the directory's
            if len(local) == 30 and local[:4] == b"PK\x03\x04":
                name_len, extra_len = struct.unpack("<HH", local[26:30])
                offset = info.header_offset + 30 + name_len + extra_len + header_len
            needed = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            if info.file_size - header_len < needed:
                raise ValueError(f"{key} is truncated: {info.file_size - header_len} bytes for {needed}")
        return _Member(tuple(int(s) for s in shape), dtype, offset)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"cannot read {path} ({type(exc).__name__}: {exc}); {_DAMAGED}") from exc


def _read_npz(path: Path, key: str) -> np.ndarray:
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError("not an .npz archive")
        with z:
            return z[key]
    except KeyError:
        raise DataError(f"{path} has no {key!r} array; it is not a Downsampled ImageNet npz batch, {IMAGENET64_HOWTO}") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataError(f"cannot read {path} ({type(exc).__name__}: {exc}); {_DAMAGED}") from exc


def _read_rows(path: Path, member: _Member, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` (sorted) of the ``data`` member: only those rows are read when it can be
    memory-mapped, else the whole member is loaded (one batch in memory at a time)."""
    if member.offset is not None:
        try:
            mapped = np.memmap(path, dtype=member.dtype, mode="r", offset=member.offset, shape=member.shape)
            out = np.asarray(mapped[rows])  # fancy indexing copies just these rows off the mapping
            del mapped
            return out
        except (OSError, ValueError) as exc:
            raise DataError(f"cannot read {path} ({type(exc).__name__}: {exc}); {_DAMAGED}") from exc
    data = _read_npz(path, "data")
    return data[rows] if len(rows) != len(data) else data


def _imagenet64_labels(path: Path) -> np.ndarray:
    labels = _read_npz(path, "labels")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{path}: 'labels' must be a 1-D integer array, got {labels.dtype} {labels.shape}; the file is damaged")
    if labels.size and (labels.min() < 1 or labels.max() > 1000):
        raise DataError(
            f"{path}: labels must be the 1-based ImageNet classes 1..1000, got {int(labels.min())}..{int(labels.max())}; "
            "the file is not from the official Downsampled ImageNet release"
        )
    return labels.astype(np.int64) - 1


def load_imagenet64(root: str | Path, split: str = "train", limit: int | None = None, size: int | None = None) -> ImageData:
    """Downsampled ImageNet 64x64 (Chrabaszcz, Loshchilov & Hutter, 2017) from its npz batches.

    Files (from ``https://image-net.org/download-images.php`` after a free login, "Downsampled
    ImageNet 64x64"): ``Imagenet64_train_part1_npz.zip`` and ``..._part2_npz.zip`` hold
    ``train_data_batch_1.npz`` ... ``train_data_batch_10.npz`` (1,281,167 images),
    ``Imagenet64_val_npz.zip`` holds ``val_data.npz`` (50,000 images). They are looked for in
    ``root`` and in its direct subfolders (the unzipped ``Imagenet64_*_npz`` folders). Each npz has
    ``data``, ``uint8 [n, 12288]`` whose rows are the R, G and B planes of a 64x64 image (each
    plane row-major), and ``labels``, the 1-based class numbers ``1..1000``. Files are read with
    ``numpy.load(allow_pickle=False)`` or, for ``data`` stored uncompressed, memory-mapped.

    ``split="train"`` reads every ``train_data_batch_<k>.npz`` present, in order of ``k`` (a warning
    is logged when fewer than 10 are there); ``split="test"`` reads ``val_data.npz`` (the paper
    reports ImageNet results on the validation set).

    The whole training set takes 15.7 GB in memory. ``limit`` keeps a seeded random subset,
    stratified by class (:func:`~flowvae.data.subset_indices`, seed 0), in file order: the labels of
    every batch are read first (they are small), then each batch's ``data`` header is checked and
    only the chosen rows are read when the array is stored uncompressed (the whole array, one batch
    at a time, otherwise); the result is allocated once.

    Args:
        root: folder holding the npz files.
        split: ``"train"`` or ``"test"``.
        limit: keep only a stratified random subset of ``limit`` images of the split.
        size: accepted only as ``64`` (or ``None``), so a config's ``data.image_size=64`` can be passed
            through; these images are not resized.

    Returns:
        ImageData named ``"imagenet64/<split>"``: images ``uint8 [N, 3, 64, 64]`` (RGB, 0..255),
        labels ``int64 [N]`` in ``0..999`` (the file's label minus one), classes ``None``.

    Raises:
        DataError: root or the split's files missing (the message says where to download them),
            a damaged or non-npz file, ``data`` that is not ``uint8 [n, 12288]``, labels outside
            ``1..1000`` or not one per image, a size other than 64, or a bad ``limit``.
    """
    check_split(split)
    limit = check_limit(limit)
    if check_size(size) not in (None, 64):
        raise DataError(f"Downsampled ImageNet 64x64 images are 64x64 and are not resized, got size={size}; "
                        "set data.image_size=64 or leave it unset")
    root = Path(root).expanduser()
    wanted = "train_data_batch_1.npz ... train_data_batch_10.npz" if split == "train" else "val_data.npz"
    if not root.is_dir():
        raise DataError(f"Downsampled ImageNet 64x64 not found: {root} is not a folder (expected {wanted}); {IMAGENET64_HOWTO}")
    files = _imagenet64_files(root, split)
    if not files:
        raise DataError(f"Downsampled ImageNet 64x64 {split} files not found in {root}: expected {wanted}; {IMAGENET64_HOWTO}")
    if split == "train" and len(files) < 10 and limit is None:
        logger.warning("imagenet64/train: only %d of the 10 train batches are in %s (%s)", len(files), root,
                       ", ".join(f.name for f in files))

    # Pass 1: labels only (small), to count images and choose the subset without touching pixels.
    per_file = [_imagenet64_labels(f) for f in files]
    labels_all = np.concatenate(per_file)
    keep = subset_indices(len(labels_all), limit, labels_all, LIMIT_SEED).numpy()
    # Pass 2: pixels of the chosen rows, written straight into one preallocated array.
    images = np.empty((len(keep), 3, 64, 64), dtype=np.uint8)
    start = at = 0
    for f, labels in zip(files, per_file):
        stop = start + len(labels)
        rows = keep[(keep >= start) & (keep < stop)] - start
        start = stop
        if not len(rows):
            continue
        member = _npz_member(f, "data")
        if member.dtype != np.uint8 or len(member.shape) != 2 or member.shape[1] != _IMAGENET64_PIXELS:
            raise DataError(f"{f}: 'data' must be uint8 [n, {_IMAGENET64_PIXELS}] (64x64 RGB), got {member.dtype} "
                            f"{member.shape}; use the 64x64 npz release, {IMAGENET64_HOWTO}")
        if member.shape[0] != len(labels):
            raise DataError(f"{f} has {member.shape[0]} images but {len(labels)} labels; {_DAMAGED}")
        images[at : at + len(rows)] = _read_rows(f, member, rows).reshape(len(rows), 3, 64, 64)
        at += len(rows)
    return make_image_data(images, labels_all[keep], f"imagenet64/{split}", None)


def open_imagenet64(root: str | Path, split: str = "train", limit: int | None = None, size: int | None = None) -> Any:
    """The images :func:`load_imagenet64` would load, memory-mapped instead
    (:class:`~flowvae.data.streaming.MappedRows`): a batch's ``data`` stored uncompressed is mapped
    in place; a compressed one is decompressed once into ``cache_dir()/imagenet64-mapped/``
    (named by the file's size and modification time, written atomically) and mapped there.

    Raises:
        DataError: as :func:`load_imagenet64`.
    """
    import hashlib

    from flowvae.data.base import atomic_write, cache_dir
    from flowvae.data.streaming import MappedRows

    limit = check_limit(limit)
    if check_size(size) not in (None, 64):
        raise DataError(f"Downsampled ImageNet 64x64 images are 64x64 and are not resized, got size={size}; "
                        "set data.image_size=64 or leave it unset")
    root = Path(root).expanduser()
    files = _imagenet64_files(root, split) if root.is_dir() else []
    if not files:
        return load_imagenet64(root, split, limit, size)  # its message says what is missing
    per_file = [_imagenet64_labels(f) for f in files]
    labels_all = np.concatenate(per_file)
    keep = subset_indices(len(labels_all), limit, labels_all, LIMIT_SEED).numpy()
    parts = []
    for f, labels in zip(files, per_file):
        member = _npz_member(f, "data")
        if member.dtype != np.uint8 or len(member.shape) != 2 or member.shape[1] != _IMAGENET64_PIXELS \
                or member.shape[0] != len(labels):
            raise DataError(f"{f}: 'data' must be uint8 [{len(labels)}, {_IMAGENET64_PIXELS}] (64x64 RGB, one row per "
                            f"label), got {member.dtype} {member.shape}; {_DAMAGED}")
        if member.offset is not None:
            parts.append((str(f), member.offset, len(labels)))
            continue
        st = f.stat()
        tag = hashlib.sha256(f"{f.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
        raw = cache_dir() / "imagenet64-mapped" / f"{f.stem}-{tag}.u8"
        if not raw.is_file() or raw.stat().st_size != len(labels) * _IMAGENET64_PIXELS:
            logger.info("imagenet64: decompressing %s once into %s, to memory-map it", f.name, raw)
            data = _read_npz(f, "data")
            raw.parent.mkdir(parents=True, exist_ok=True)
            payload = np.ascontiguousarray(data)

            def write(out: Any, payload: np.ndarray = payload) -> None:
                payload.tofile(out)

            atomic_write(raw, write)
            del data, payload
        parts.append((str(raw), 0, len(labels)))
    return MappedRows(parts, (3, 64, 64), keep, torch.from_numpy(labels_all[keep]), f"imagenet64/{split}")


def _detect(path: Path) -> bool:
    return path.is_dir() and bool(_imagenet64_files(path, "train") or _imagenet64_files(path, "test"))


def _probe(root: Path) -> FolderInfo | None:
    if not root.is_dir():
        return None
    train, test = _imagenet64_files(root, "train"), _imagenet64_files(root, "test")
    if not (train or test):
        return None
    n_images = sum(_npz_member(f, "labels").shape[0] for f in (train or test))  # npz headers only
    return FolderInfo(channels=3, height=64, width=64, n_files=len(train) + len(test),
                      has_split=has_split_folders(root), format="npz", source="imagenet64", first=(train or test)[0],
                      n_images=n_images, n_classes=1000)


def _load(root: str | Path | None, split: str, limit: int | None = None, size: int | None = None) -> ImageData:
    return load_imagenet64(shared_or_cache("imagenet64") if root is None else root, split, limit=limit, size=size)


def _lazy(root: str | Path | None, split: str, limit: int | None = None, size: int | None = None) -> Any:
    return open_imagenet64(shared_or_cache("imagenet64") if root is None else root, split, limit=limit, size=size)


register(DataSource(
    name="imagenet64",
    load=_load,
    lazy=_lazy,
    options=frozenset({"limit", "size"}),
    description="Downsampled ImageNet 64x64, 1,281,167 train / 50,000 validation images, 1000 classes, npz batches",
    detect=_detect,
    probe=_probe,
))
