"""CIFAR-10 from the python pickle batches as distributed by its authors.

The batches are pickles, and a pickle can call any importable function while loading, so they
are read with :class:`_RestrictedUnpickler`, which can only rebuild containers and numpy arrays.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import pickle
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO

import numpy as np

from flowvae.data.base import FolderInfo, ImageData, atomic_write, cache_dir, check_split, make_image_data
from flowvae.data.images import has_split_folders
from flowvae.data.registry import DataSource, register
from flowvae.errors import DataError

logger = logging.getLogger(__name__)

__all__ = ["CIFAR10_ARCHIVE", "CIFAR10_CLASSES", "CIFAR10_FOLDER", "CIFAR10_MD5", "CIFAR10_URL", "load_cifar10"]

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"
CIFAR10_ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_FOLDER = "cifar-10-batches-py"
# Largest file read into memory: an official batch is 31 MB; anything far bigger is not CIFAR-10.
_MAX_BATCH_BYTES = 64 << 20
_MAX_ARCHIVE_BYTES = 256 << 20  # the archive is 170 MB


# --------------------------------------------------------------------------------------
# Restricted unpickling
# --------------------------------------------------------------------------------------


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    # Protocol-2 pickles written by Python 3 store bytes as _codecs.encode(text, "latin1");
    # only that codec is needed, so nothing else is reachable through this hook.
    if encoding.lower().replace("-", "") not in ("latin1", "iso88591"):
        raise pickle.UnpicklingError(f"codec {encoding!r} is not allowed in dataset pickles")
    return text.encode("latin1")


def _allowed_pickle_globals() -> dict[tuple[str, str], Any]:
    try:
        from numpy._core import multiarray as _multiarray
        from numpy._core import numeric as _numeric
    except ImportError:  # numpy < 2 has no numpy._core
        from numpy.core import multiarray as _multiarray  # type: ignore[no-redef]
        from numpy.core import numeric as _numeric  # type: ignore[no-redef]

    reconstruct = _multiarray._reconstruct
    frombuffer = _numeric._frombuffer  # type: ignore[attr-defined]
    return {
        # numpy array reconstruction, under numpy 1.x and 2.x module names. Mapped to the
        # objects directly so the deprecated numpy.core alias is never imported.
        ("numpy.core.multiarray", "_reconstruct"): reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): reconstruct,
        ("numpy.core.numeric", "_frombuffer"): frombuffer,
        ("numpy._core.numeric", "_frombuffer"): frombuffer,
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_encode,
        ("codecs", "encode"): _latin1_encode,
    }


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that can only build plain containers, strings, numbers and numpy arrays.

    A pickle can call any importable function while loading (``os.system`` included), and
    dataset files come from the internet or from other people, so they are untrusted input.
    The CIFAR-10 batches only need dicts, lists, bytes, str, int and numpy arrays; dicts,
    lists and scalars are built by pickle opcodes without any lookup, so the only globals
    allowed are numpy's array/dtype reconstructors. Anything else raises UnpicklingError.
    """

    _allowed: dict[tuple[str, str], Any] | None = None

    def find_class(self, module: str, name: str) -> Any:
        if _RestrictedUnpickler._allowed is None:
            _RestrictedUnpickler._allowed = _allowed_pickle_globals()
        try:
            return _RestrictedUnpickler._allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a dataset file") from None


def _safe_unpickle(raw: bytes, source: str) -> Any:
    try:
        # encoding="bytes": the official batches were written by Python 2, whose str is bytes.
        return _RestrictedUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except pickle.UnpicklingError as exc:
        raise DataError(f"refusing to load {source}: {exc}; only use CIFAR-10 files from {CIFAR10_URL}") from exc
    except Exception as exc:  # truncated or garbage pickles raise many types
        raise DataError(f"cannot read {source} as a CIFAR-10 pickle ({type(exc).__name__}: {exc}); download it again") from exc


# --------------------------------------------------------------------------------------
# Batches
# --------------------------------------------------------------------------------------


def _get(d: dict[Any, Any], key: str) -> Any:
    # Python 2 batches have bytes keys; re-pickled ones may have str keys.
    if key.encode() in d:
        return d[key.encode()]
    return d.get(key)


def _parse_cifar_batch(obj: Any, source: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(obj, dict):
        raise DataError(f"{source} is not a CIFAR-10 batch (a pickled dict); download the python version from {CIFAR10_URL}")
    data, labels = _get(obj, "data"), _get(obj, "labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise DataError(f"{source}: 'data' must be uint8 [n, 3072], got {type(data).__name__} {shape}; the file is damaged")
    labels = np.asarray(labels if labels is not None else [], dtype=np.int64)
    if labels.shape != (data.shape[0],) or (labels.size and (labels.min() < 0 or labels.max() > 9)):
        raise DataError(f"{source}: expected {data.shape[0]} labels in 0..9, got {labels.shape[0]}; the file is damaged")
    # Rows are 1024 red, 1024 green, 1024 blue values, each plane row-major: exactly NCHW.
    return data.reshape(-1, 3, 32, 32), labels


# MD5 of the official batch files (the authors' page; torchvision lists the same): data whose
# batches match are CIFAR-10 for certain, any other batches in this format are named after their folder.
CIFAR10_BATCH_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}


def _cifar_members(split: str) -> list[str]:
    return [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]


def _locate_cifar10(root: Path) -> Path | None:
    """The batches folder or the archive that ``root`` points at, or None."""
    if root.is_file():
        return root
    for folder in (root, root / CIFAR10_FOLDER):
        if (folder / "batches.meta").is_file() or (folder / "test_batch").is_file():
            return folder
    if (root / CIFAR10_ARCHIVE).is_file():
        return root / CIFAR10_ARCHIVE
    return None


def _too_big(where: str, size: int) -> DataError:
    return DataError(f"{where} is {size} bytes, more than any CIFAR-10 batch ({_MAX_BATCH_BYTES}); "
                     f"it is not a CIFAR-10 file, download {CIFAR10_URL}")


def _read_cifar_files(source: Path, names: list[str]) -> dict[str, bytes]:
    """Raw bytes of the named batch files from a folder or from the .tar.gz (without extracting)."""
    out: dict[str, bytes] = {}
    if source.is_dir():
        for n in names:
            if not (source / n).is_file():
                raise DataError(
                    f"{source / n} is missing; the CIFAR-10 folder needs data_batch_1..5, test_batch and "
                    f"batches.meta, download {CIFAR10_URL}"
                )
            if (size := (source / n).stat().st_size) > _MAX_BATCH_BYTES:
                raise _too_big(str(source / n), size)
            out[n] = (source / n).read_bytes()
        return out
    try:
        with tarfile.open(source, "r:*") as tar:
            for member in tar:
                base = PurePosixPath(member.name).name
                if member.isfile() and base in names and base not in out:
                    if member.size > _MAX_BATCH_BYTES:
                        raise _too_big(f"{source}:{member.name}", member.size)
                    f = tar.extractfile(member)
                    if f is not None:
                        out[base] = f.read()
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:  # zlib.error: a damaged .tar.gz stream
        raise DataError(f"cannot read {source} as a tar archive ({exc}); download {CIFAR10_URL} again") from exc
    missing = [n for n in names if n not in out]
    if missing:
        raise DataError(f"{source} lacks {', '.join(missing)}; it is not the CIFAR-10 python archive from {CIFAR10_URL}")
    return out


def _download_cifar10(dest_dir: Path) -> Path:
    """Fetch the archive into ``dest_dir``, check its MD5, unpack the batches; return the folder."""
    archive = dest_dir / CIFAR10_ARCHIVE
    where = f"download {CIFAR10_URL} yourself and put it at {archive} (or pass its location with --data PATH)"
    try:
        dest_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create {dest_dir} ({exc}); choose a writable folder with --data PATH") from exc
    if not archive.is_file():
        logger.info("downloading CIFAR-10 from %s to %s", CIFAR10_URL, archive)
        fd, tmp = tempfile.mkstemp(dir=dest_dir, prefix=".cifar10-", suffix=".part")
        try:
            md5 = hashlib.md5()
            received = 0
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(CIFAR10_URL, timeout=60) as resp:
                while chunk := resp.read(1 << 20):
                    received += len(chunk)
                    if received > _MAX_ARCHIVE_BYTES:
                        raise DataError(f"the download from {CIFAR10_URL} is larger than the CIFAR-10 archive "
                                        f"({received} bytes and counting); {where}")
                    md5.update(chunk)
                    out.write(chunk)
            if md5.hexdigest() != CIFAR10_MD5:
                raise DataError(
                    f"downloaded CIFAR-10 archive has MD5 {md5.hexdigest()}, expected {CIFAR10_MD5}; "
                    f"the download was corrupted, retry or {where}"
                )
            # Rename only after the checksum passed, so a partial file never looks complete.
            os.replace(tmp, archive)
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            raise DataError(f"cannot download CIFAR-10 ({exc}); {where}") from exc
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    # Unpack by hand instead of tar.extractall: only the expected regular files are written,
    # under fixed names, so a crafted archive cannot write outside dest_dir.
    names = _cifar_members("train") + _cifar_members("test") + ["batches.meta"]
    files = _read_cifar_files(archive, names)
    folder = dest_dir / CIFAR10_FOLDER
    folder.mkdir(exist_ok=True)
    for name, raw in files.items():
        def put(f: BinaryIO, raw: bytes = raw) -> None:
            f.write(raw)

        atomic_write(folder / name, put)
    return folder


def load_cifar10(root: str | Path, split: str = "train", download: bool = False) -> ImageData:
    """CIFAR-10 from the python pickle batches as distributed by its authors.

    ``root`` may be the ``cifar-10-batches-py`` folder, its parent, or the
    ``cifar-10-python.tar.gz`` archive (read in place, not extracted). The pickles are loaded with a
    restricted unpickler that only rebuilds containers and numpy arrays, because a pickle from an
    untrusted source could otherwise run arbitrary code; files over 64 MB are refused unread.

    Args:
        root: location as above.
        split: ``"train"`` (``data_batch_1..5``, 50,000 images) or ``"test"`` (``test_batch``, 10,000).
        download: if nothing is found at ``root``, fetch ``CIFAR10_URL`` into ``root`` (a folder),
            verify MD5 ``c58f30108f718f92721af3b95e74349a`` and unpack ``cifar-10-batches-py``.

    Returns:
        ImageData, images ``uint8 [N, 3, 32, 32]`` (RGB), labels ``int64`` in ``0..9``, classes
        from ``batches.meta`` (airplane ... truck).

    Raises:
        DataError: files missing (and ``download`` false), download failed or had the wrong MD5,
            a pickle referencing a disallowed global, or batches of the wrong shape or size.
    """
    check_split(split)
    root = Path(root).expanduser()
    source = _locate_cifar10(root)
    if source is None:
        if not download:
            raise DataError(
                f"CIFAR-10 not found at {root}: expected {CIFAR10_FOLDER}/ (data_batch_1..5, test_batch, "
                f"batches.meta) or {CIFAR10_ARCHIVE}; download {CIFAR10_URL} and pass its location with "
                "--data PATH, or allow downloading"
            )
        source = _download_cifar10(root.parent if root.name.endswith(".tar.gz") else root)
    names = _cifar_members(split)
    files = _read_cifar_files(source, names + ["batches.meta"])
    parts = [_parse_cifar_batch(_safe_unpickle(files[n], f"{source}:{n}"), f"{source}:{n}") for n in names]
    meta = _safe_unpickle(files["batches.meta"], f"{source}:batches.meta")
    label_names = _get(meta, "label_names") if isinstance(meta, dict) else None
    if not isinstance(label_names, list) or len(label_names) != 10:
        raise DataError(f"{source}: batches.meta has no list of 10 label_names; the file is damaged, download {CIFAR10_URL} again")
    classes = [n.decode() if isinstance(n, bytes) else str(n) for n in label_names]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
    if all(hashlib.md5(files[n], usedforsecurity=False).hexdigest() == CIFAR10_BATCH_MD5[n] for n in names):
        return make_image_data(images, labels, f"cifar10/{split}", classes, verified="cifar10")
    label = _folder_label(root)
    logger.warning("the batches in %s are not CIFAR-10's (their MD5 checksums differ from the official files'): "
                   "named %r after their folder, not cifar10", source, label)
    return make_image_data(images, labels, f"{label}/{split}", classes)


def _folder_label(root: Path) -> str:
    """The name of a set of CIFAR-format batches that are not CIFAR-10's: their folder's (or
    archive's), or its parent's when that is the official folder name."""
    root = root.resolve()
    if root.name.endswith((".tar.gz", ".tgz")):
        name = root.name.removesuffix(".tar.gz").removesuffix(".tgz")
    else:
        name = root.parent.name if root.name == CIFAR10_FOLDER else root.name
    return name or "cifar-format"


# --------------------------------------------------------------------------------------
# Registration
# --------------------------------------------------------------------------------------


def _detect(path: Path) -> bool:
    if path.is_file():
        return path.name.endswith((".tar.gz", ".tgz"))
    return path.is_dir() and _locate_cifar10(path) is not None


def _probe(root: Path) -> FolderInfo | None:
    source = _locate_cifar10(root) if root.is_dir() or _detect(root) else None
    if source is None:
        return None
    if source.is_dir():
        present = [source / n for n in [*_cifar_members("train"), *_cifar_members("test")] if (source / n).is_file()]
        first, n_files = (present[0] if present else source / "batches.meta"), len(present)
        train = [p for p in present if p.name.startswith("data_batch_")]
        # The official batches hold 10,000 images each (31 MB); others are counted only when read.
        n_train = 10000 * len(train) if train and all(p.stat().st_size > 30_000_000 for p in train) else 0
    else:
        first, n_files, n_train = source, 1, 50000
    return FolderInfo(channels=3, height=32, width=32, n_files=n_files, has_split=has_split_folders(root),
                      format="cifar-python", source="cifar10", first=first, n_images=n_train or None, n_classes=10)


def _load(root: str | Path | None, split: str, download: bool = False) -> ImageData:
    return load_cifar10(cache_dir() / "cifar10" if root is None else root, split, download=download)


register(DataSource(
    name="cifar10",
    load=_load,
    options=frozenset(),
    description="CIFAR-10, 32x32 RGB, 50,000 train / 10,000 test, from the python pickle batches",
    extra_options=frozenset({"download"}),
    detect=_detect,
    probe=_probe,
))
