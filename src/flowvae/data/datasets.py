"""Image datasets as uint8 tensors, plus the bit-depth quantisation used by flows.

Every loader returns an :class:`ImageData`: ``images`` is a ``torch.uint8`` tensor of shape
``[N, C, H, W]`` with pixel values ``0..255``; ``labels`` is ``torch.int64`` ``[N]`` or ``None``.
Loaders never convert to float: dequantisation and scaling belong to the model, so the
exact discrete data the likelihood is measured on stays visible here.

All problems a user can cause (missing or damaged files, wrong sizes, unknown names) raise
:class:`flowvae.errors.DataError` with a one-line message that says what to do.
"""

from __future__ import annotations

import difflib
import gzip
import hashlib
import io
import logging
import os
import pickle
import re
import tarfile
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch
from PIL import Image

from flowvae.errors import DataError

logger = logging.getLogger(__name__)

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "DATASET_NAMES",
    "ImageData",
    "ImageTensorDataset",
    "bins_to_uint8",
    "cache_dir",
    "celebahq_train_count",
    "load_celebahq",
    "load_cifar10",
    "load_cifar10_jpeg_zip",
    "load_dataset",
    "load_digits",
    "load_image_folder",
    "load_imagenet64",
    "load_lsun",
    "load_mnist",
    "quantize",
    "shared_data_dir",
]

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
CIFAR10_JPEG_NAME = "CIFAR-10 (JPEG q75 re-encode)"
MNIST_URLS = "https://ossci-datasets.s3.amazonaws.com/mnist/ or http://yann.lecun.com/exdb/mnist/"

DATASET_NAMES: tuple[str, ...] = (
    "digits", "mnist", "cifar10", "cifar10-jpeg", "folder", "imagenet64", "lsun", "celebahq", "dsprites",
)

_IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp"})
_SPLITS = ("train", "test")


# --------------------------------------------------------------------------------------
# Container
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

    Raises:
        DataError: if ``images`` is not a 4-D uint8 tensor, is empty, or ``labels`` does not
            match it.
    """

    images: torch.Tensor
    labels: torch.Tensor | None
    name: str
    classes: list[str] | None = None

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


def _make(images: np.ndarray, labels: np.ndarray | None, name: str, classes: Sequence[str] | None) -> ImageData:
    """Wrap NCHW uint8 / int labels numpy arrays without copying more than needed."""
    images = np.ascontiguousarray(images, dtype=np.uint8)
    if not images.flags.writeable:
        # np.frombuffer over immutable bytes is read-only; torch tensors must own writable memory.
        images = images.copy()
    return ImageData(
        images=torch.from_numpy(images),
        labels=None if labels is None else torch.from_numpy(np.asarray(labels, dtype=np.int64).copy()),
        name=name,
        classes=None if classes is None else list(classes),
    )


def _check_split(split: str, allowed: Sequence[str] = _SPLITS) -> str:
    if split not in allowed:
        raise DataError(f"unknown split {split!r}; use one of: {', '.join(allowed)}")
    return split


def _check_limit(limit: int | None) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise DataError(f"limit must be a positive integer or None, got {limit!r}")
    return limit


# --------------------------------------------------------------------------------------
# Locations
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


# --------------------------------------------------------------------------------------
# scikit-learn digits
# --------------------------------------------------------------------------------------

_DIGITS_SEED = 20240607
_DIGITS_TEST_PER_CLASS = 30  # 10 classes x 30 = 300 test images, 1497 train


def load_digits(split: str = "train") -> ImageData:
    """scikit-learn's 8x8 digits (UCI optdigits) as ``uint8 [N, 1, 8, 8]``.

    The 1,797 images have 17 intensity levels ``0..16``; they are mapped to ``0..255`` by
    ``round(v * 255 / 16)`` (so 0 -> 0, 8 -> 128, 16 -> 255) so every loader shares one pixel range.

    The split is fixed and stratified: for each digit class, a ``numpy`` PCG64 generator seeded
    with ``20240607`` permutes that class's indices and the first 30 go to ``test``; the remaining
    1,497 images are ``train``. Within a split images keep scikit-learn's original order.

    Args:
        split: ``"train"`` (1,497 images) or ``"test"`` (300 images, 30 per class).

    Returns:
        ImageData with labels ``int64`` in ``0..9`` and classes ``"0".."9"``.

    Raises:
        DataError: for an unknown split.
    """
    _check_split(split)
    from sklearn.datasets import load_digits as _sk_load_digits

    bunch = _sk_load_digits()
    levels = np.asarray(bunch.images)  # float64 [1797, 8, 8], integer values 0..16
    targets = np.asarray(bunch.target, dtype=np.int64)
    # floor(v + 0.5) rather than np.round: half-up is the documented rule, not banker's rounding.
    pixels = np.floor(levels * (255.0 / 16.0) + 0.5).astype(np.uint8)

    rng = np.random.Generator(np.random.PCG64(_DIGITS_SEED))
    is_test = np.zeros(len(targets), dtype=bool)
    for c in range(10):
        members = np.flatnonzero(targets == c)
        is_test[rng.permutation(members)[:_DIGITS_TEST_PER_CLASS]] = True
    keep = is_test if split == "test" else ~is_test
    return _make(pixels[keep][:, None], targets[keep], f"digits/{split}", [str(i) for i in range(10)])


# --------------------------------------------------------------------------------------
# MNIST (IDX files)
# --------------------------------------------------------------------------------------

_MNIST_PREFIX = {"train": "train", "test": "t10k"}
_IDX_IMAGES_MAGIC = 0x00000803  # unsigned byte, 3 dimensions
_IDX_LABELS_MAGIC = 0x00000801  # unsigned byte, 1 dimension


def _mnist_candidates(prefix: str, kind: str) -> list[str]:
    ndim = 3 if kind == "images" else 1
    # The unpacked official files are sometimes renamed with a dot ("train-images.idx3-ubyte").
    stems = [f"{prefix}-{kind}-idx{ndim}-ubyte", f"{prefix}-{kind}.idx{ndim}-ubyte"]
    return [s + ext for s in stems for ext in ("", ".gz")]


def _find_mnist_file(root: Path, prefix: str, kind: str) -> Path | None:
    # torchvision keeps the raw files in MNIST/raw; accept that layout too.
    for folder in (root, root / "raw", root / "MNIST" / "raw"):
        for name in _mnist_candidates(prefix, kind):
            if (folder / name).is_file():
                return folder / name
    return None


def _read_maybe_gzip(path: Path) -> bytes:
    try:
        with open(path, "rb") as f:
            head = f.read(2)
        # Trust the content, not the suffix: some mirrors serve decompressed files named .gz.
        opener: Callable[..., Any] = gzip.open if head == b"\x1f\x8b" else open
        with opener(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as exc:
        raise DataError(f"cannot read {path}: {exc}; the file is damaged, download it again") from exc


def _parse_idx(raw: bytes, path: Path, magic: int) -> np.ndarray:
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{path} is too short to be an IDX file ({len(raw)} bytes); download it again")
    got = int.from_bytes(raw[:4], "big")
    if got != magic:
        raise DataError(
            f"{path} has IDX magic number 0x{got:08x}, expected 0x{magic:08x}; "
            "it is not an MNIST file of this kind (images/labels swapped?) or it is damaged"
        )
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims)) + header
    if len(raw) != expected:
        raise DataError(
            f"{path} holds {len(raw)} bytes but its header {dims} needs {expected}; "
            "the file is truncated or damaged, download it again"
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)


def load_mnist(root: str | Path, split: str = "train") -> ImageData:
    """MNIST from the original IDX files, gzipped or not.

    Expects ``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]`` (``split="train"``)
    or ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]`` (``split="test"``) in
    ``root`` (or ``root/raw``, ``root/MNIST/raw`` as torchvision stores them).

    Returns:
        ImageData, images ``uint8 [N, 1, 28, 28]`` (0 = background, 255 = ink), labels ``int64``
        in ``0..9``; N is 60,000 / 10,000 for the official files.

    Raises:
        DataError: if files are missing, have the wrong IDX magic number, a size that does not match
            their header, images that are not 28x28, or image and label counts that differ.
    """
    _check_split(split)
    root = Path(root).expanduser()
    prefix = _MNIST_PREFIX[split]
    img_path = _find_mnist_file(root, prefix, "images")
    lbl_path = _find_mnist_file(root, prefix, "labels")
    if img_path is None or lbl_path is None:
        raise DataError(
            f"MNIST {split} files not found in {root}: expected {prefix}-images-idx3-ubyte.gz and "
            f"{prefix}-labels-idx1-ubyte.gz (or unzipped); download them from {MNIST_URLS} "
            "and pass their folder with --data PATH"
        )
    images = _parse_idx(_read_maybe_gzip(img_path), img_path, _IDX_IMAGES_MAGIC)
    labels = _parse_idx(_read_maybe_gzip(lbl_path), lbl_path, _IDX_LABELS_MAGIC)
    if images.shape[1:] != (28, 28):
        raise DataError(f"{img_path} holds {images.shape[1]}x{images.shape[2]} images, MNIST is 28x28; use the original files")
    if len(images) != len(labels):
        raise DataError(
            f"{img_path} has {len(images)} images but {lbl_path} has {len(labels)} labels; "
            "the files come from different splits or one is damaged"
        )
    if labels.size and labels.max() > 9:
        raise DataError(f"{lbl_path} contains label {int(labels.max())}, MNIST labels are 0..9; the file is damaged")
    return _make(images[:, None], labels, f"mnist/{split}", [str(i) for i in range(10)])


# --------------------------------------------------------------------------------------
# CIFAR-10 (python pickle batches)
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
    frombuffer = _numeric._frombuffer
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
            out[n] = (source / n).read_bytes()
        return out
    try:
        with tarfile.open(source, "r:*") as tar:
            for member in tar:
                base = PurePosixPath(member.name).name
                if member.isfile() and base in names and base not in out:
                    f = tar.extractfile(member)
                    if f is not None:
                        out[base] = f.read()
    except (tarfile.TarError, OSError, EOFError) as exc:
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
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(CIFAR10_URL, timeout=60) as resp:
                while chunk := resp.read(1 << 20):
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
        _atomic_write(folder / name, lambda f, raw=raw: f.write(raw))
    return folder


def load_cifar10(root: str | Path, split: str = "train", download: bool = False) -> ImageData:
    """CIFAR-10 from the python pickle batches as distributed by its authors.

    ``root`` may be the ``cifar-10-batches-py`` folder, its parent, or the
    ``cifar-10-python.tar.gz`` archive (read in place, not extracted). The pickles are loaded with a
    restricted unpickler that only rebuilds containers and numpy arrays, because a pickle from an
    untrusted source could otherwise run arbitrary code.

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
            a pickle referencing a disallowed global, or batches of the wrong shape.
    """
    _check_split(split)
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
    return _make(images, labels, f"cifar10/{split}", classes)


# --------------------------------------------------------------------------------------
# CIFAR-10 JPEG zip
# --------------------------------------------------------------------------------------


def _atomic_write(path: Path, write: Callable[[Any], Any]) -> None:
    """Write via a temp file in the same folder and os.replace, so readers never see half a file."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _jpeg_zip_entries(zf: zipfile.ZipFile, split: str, path: Path) -> list[tuple[str, int]]:
    """``(entry name, label)`` for one split, ordered by (file number, class)."""
    entries: list[tuple[str, str, int]] = []
    class_index = {c: i for i, c in enumerate(CIFAR10_CLASSES)}
    for name in zf.namelist():
        parts = name.split("/")
        if len(parts) != 3 or parts[0] != split or not parts[2].lower().endswith((".jpg", ".jpeg")):
            continue
        if parts[1] not in class_index:
            raise DataError(
                f"{path} has entry {name} whose class {parts[1]!r} is not a CIFAR-10 class "
                f"({' '.join(CIFAR10_CLASSES)}); use load_image_folder for other data"
            )
        entries.append((parts[2], name, class_index[parts[1]]))
    # Interleave classes (0000.jpg of every class, then 0001.jpg, ...) so that a `limit`
    # prefix is class-balanced instead of being all airplanes.
    entries.sort(key=lambda e: (e[0], e[2]))
    return [(name, label) for _, name, label in entries]


def load_cifar10_jpeg_zip(
    path: str | Path,
    split: str = "train",
    limit: int | None = None,
    cache: bool = True,
) -> ImageData:
    """CIFAR-10 re-encoded as JPEG (quality 75) in one zip with ``<split>/<class>/NNNN.jpg`` entries.

    The pixels are not the original CIFAR-10 pixels (lossy JPEG), so the dataset name is
    ``"CIFAR-10 (JPEG q75 re-encode)/<split>"``: bits/dim or FID on it are not comparable with
    published CIFAR-10 figures.

    Images are ordered by file number, then class in CIFAR-10 order (``train/airplane/0000.jpg``,
    ``train/automobile/0000.jpg``, ..., ``train/truck/0000.jpg``, ``train/airplane/0001.jpg``, ...),
    so ``limit=N`` takes a class-balanced prefix. Decoded arrays are cached as ``.npy`` under
    ``cache_dir()/cifar10-jpeg`` keyed by the zip's size and mtime (and split, limit); the first full
    load takes a few seconds, later ones only read the cache.

    Args:
        path: the zip file.
        split: ``"train"`` (50,000 images) or ``"test"`` (10,000).
        limit: keep only the first ``limit`` images of the split in the order above.
        cache: read and write the decoded-array cache.

    Returns:
        ImageData, images ``uint8 [N, 3, 32, 32]`` RGB, labels ``int64`` in ``0..9``, classes
        ``CIFAR10_CLASSES``.

    Raises:
        DataError: zip missing or unreadable, no entries for the split, an unknown class folder,
            or an entry that is not a decodable 32x32 image.
    """
    _check_split(split)
    limit = _check_limit(limit)
    path = Path(path).expanduser()
    name = f"{CIFAR10_JPEG_NAME}/{split}"
    if not path.is_file():
        raise DataError(
            f"CIFAR-10 JPEG zip not found at {path}; pass the path of cifar10-jpeg-images.zip with --data PATH "
            f"(or use the original CIFAR-10 from {CIFAR10_URL} with dataset cifar10)"
        )
    st = path.stat()
    key = f"{path.stem}-{st.st_size}-{st.st_mtime_ns}-{split}-{limit or 'all'}"
    cached_images = cache_dir() / "cifar10-jpeg" / f"{key}-images.npy"
    cached_labels = cached_images.with_name(f"{key}-labels.npy")
    if cache and cached_images.is_file() and cached_labels.is_file():
        try:
            images = np.load(cached_images, allow_pickle=False)
            labels = np.load(cached_labels, allow_pickle=False)
            if images.dtype == np.uint8 and images.ndim == 4 and labels.shape == (len(images),):
                return _make(images, labels, name, CIFAR10_CLASSES)
        except (OSError, ValueError) as exc:
            logger.warning("ignoring unreadable cache %s (%s); decoding the zip again", cached_images, exc)

    try:
        with zipfile.ZipFile(path) as zf:
            entries = _jpeg_zip_entries(zf, split, path)
            if limit is not None:
                entries = entries[:limit]
            if not entries:
                raise DataError(f"{path} has no {split}/<class>/*.jpg entries; it is not the CIFAR-10 JPEG zip")
            images = np.empty((len(entries), 32, 32, 3), dtype=np.uint8)
            for i, (entry, _) in enumerate(entries):
                try:
                    with Image.open(io.BytesIO(zf.read(entry))) as img:
                        arr = np.asarray(img.convert("RGB"))
                except (OSError, SyntaxError, ValueError) as exc:
                    raise DataError(f"cannot decode {path}:{entry} ({exc}); the zip is damaged") from exc
                if arr.shape != (32, 32, 3):
                    raise DataError(f"{path}:{entry} is {arr.shape[1]}x{arr.shape[0]}, expected 32x32; not CIFAR-10")
                images[i] = arr
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"cannot read {path} as a zip ({exc}); the file is damaged") from exc
    images = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    labels = np.array([label for _, label in entries], dtype=np.int64)

    if cache:
        try:
            cached_images.parent.mkdir(parents=True, exist_ok=True)
            # Labels first: the images file is the "cache present" marker checked above.
            _atomic_write(cached_labels, lambda f: np.save(f, labels))
            _atomic_write(cached_images, lambda f: np.save(f, images))
        except OSError as exc:
            logger.warning("could not write cache %s (%s); set FLOWVAE_CACHE to a writable folder", cached_images, exc)
    return _make(images, labels, name, CIFAR10_CLASSES)


# --------------------------------------------------------------------------------------
# Folder of images
# --------------------------------------------------------------------------------------

_GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "F"})


def _decode_image_file(path: Path, size: int | None) -> np.ndarray:
    """Decode to ``uint8 [H, W]`` (grey) or ``[H, W, 3]`` (RGB); raises OSError/ValueError on bad files."""
    with Image.open(path) as img:
        img.load()  # force the full decode here so truncated files fail now, not later
        if img.mode in ("1", "L", "LA", "La"):
            img = img.convert("L")
        elif img.mode in _GRAY_MODES:
            # 16-bit / int / float grey: scale to 8 bits instead of letting PIL clip at 255.
            a = np.asarray(img, dtype=np.float64)
            top = 65535.0 if img.mode.startswith("I;16") or a.max() > 255 else 255.0
            img = Image.fromarray(np.clip(a * (255.0 / top) + 0.5, 0, 255).astype(np.uint8), mode="L")
        else:
            img = img.convert("RGB")  # RGBA, P, CMYK, YCbCr ... -> RGB
        if size is not None:
            img = _center_crop_resize(img, size)
        return np.asarray(img, dtype=np.uint8)


def _center_crop_resize(img: Image.Image, size: int) -> Image.Image:
    """Centre-crop ``img`` to the largest square and resize it to ``size x size`` (PIL bicubic).

    The crop box starts at ``((w - s) // 2, (h - s) // 2)`` with ``s = min(w, h)``; an image that
    is already ``size x size`` comes back unchanged (PIL returns a copy for a same-size resize).
    """
    w, h = img.size
    s = min(w, h)
    left, top = (w - s) // 2, (h - s) // 2
    return img.crop((left, top, left + s, top + s)).resize((size, size), Image.Resampling.BICUBIC)


def _check_size(size: int | None, allow_none: bool = True) -> int | None:
    if size is None and allow_none:
        return None
    if size is None or isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise DataError(f"image size must be a positive integer, got {size!r}; e.g. --set data.image_size=64")
    return size


def _is_listed_image(path: Path, base: Path) -> bool:
    return (path.suffix.lower() in _IMAGE_SUFFIXES and path.is_file()
            and not any(part.startswith(".") for part in path.relative_to(base).parts))


def _list_image_files(base: Path) -> list[Path]:
    """Image files under ``base`` (recursive, hidden files/folders skipped), sorted by relative path."""
    return sorted((p for p in base.rglob("*") if _is_listed_image(p, base)), key=lambda p: p.relative_to(base).as_posix())


def _has_image_files(base: Path) -> bool:
    """Whether ``base`` holds at least one listable image file (stops at the first)."""
    return any(_is_listed_image(p, base) for p in base.rglob("*"))


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
    otherwise labels are ``None``. Files are read in sorted relative-path order.

    Grey images give ``C=1`` and colour images ``C=3`` (RGBA, palette, CMYK converted to RGB); a
    folder mixing both is converted to RGB throughout.

    Args:
        root: the folder.
        split: optional split subfolder name, e.g. ``"train"``.
        size: if given, every image is centre-cropped to a square and resized to ``size x size``
            with bicubic filtering; if ``None``, all images must already have the same size.
        limit: read only the first ``limit`` files (in sorted order).
        on_bad: ``"error"`` to stop at an unreadable or truncated file, ``"skip"`` to leave such
            files out (with one warning giving their count).

    Returns:
        ImageData, images ``uint8 [N, C, H, W]`` with ``C`` in ``{1, 3}``.

    Raises:
        DataError: folder missing, no images, a split subfolder missing while other splits exist,
            an unreadable file (``on_bad="error"``), mixed sizes without ``size``, or bad arguments.
    """
    root = Path(root).expanduser()
    limit = _check_limit(limit)
    if on_bad not in ("error", "skip"):
        raise DataError(f"on_bad must be 'error' or 'skip', got {on_bad!r}")
    size = _check_size(size)
    if not root.is_dir():
        raise DataError(f"image folder {root} does not exist or is not a folder; pass a folder of JPEG/PNG files with --data PATH")
    base = root
    if split is not None:
        if (root / split).is_dir():
            base = root / split
        elif any((root / s).is_dir() for s in ("train", "test", "val", "valid", "validation")):
            # Reading all of root would silently mix the other splits into this one.
            raise DataError(f"{root} has split subfolders but no {split!r}; add {root / split} or choose another split")
    name = f"{root.name or root}/{split}" if split else str(root.name or root)

    files = _list_image_files(base)
    if not files:
        raise DataError(f"empty dataset {name}: no .png/.jpg/.jpeg/.webp files under {base}; check --data PATH")
    if limit is not None:
        files = files[:limit]
    return _decode_image_files(files, base, name, size, on_bad)


def _decode_image_files(files: list[Path], base: Path, name: str, size: int | None, on_bad: str) -> ImageData:
    """Decode ``files`` (all under ``base``) as :func:`load_image_folder` documents: labels from
    the first subfolder when every file has one, grey/colour handling, ``on_bad``."""
    if size is not None:
        logger.info("%s: centre-cropping images to squares and resizing to %dx%d (PIL bicubic)", name, size, size)
    arrays: list[np.ndarray] = []
    kept: list[Path] = []
    bad: list[Path] = []
    for f in files:
        try:
            arr = _decode_image_file(f, size)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
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
    if bad:
        logger.warning("%s: skipped %d unreadable image file(s), e.g. %s", name, len(bad), bad[0])
    if not arrays:
        raise DataError(f"empty dataset {name}: none of the {len(files)} image files under {base} could be read")

    if all(a.ndim == 2 for a in arrays):
        images = np.stack(arrays)[:, None]
    else:
        # Grey -> RGB by repeating the plane is exactly what PIL's convert("RGB") does.
        images = np.stack([a if a.ndim == 3 else np.repeat(a[:, :, None], 3, axis=2) for a in arrays])
        images = images.transpose(0, 3, 1, 2)

    rel = [f.relative_to(base).parts for f in kept]
    labels: np.ndarray | None = None
    classes: list[str] | None = None
    if all(len(parts) > 1 for parts in rel):
        classes = sorted({parts[0] for parts in rel})
        index = {c: i for i, c in enumerate(classes)}
        labels = np.array([index[parts[0]] for parts in rel], dtype=np.int64)
    elif any(len(parts) > 1 for parts in rel):
        logger.warning("%s: some images are in subfolders and some are not; loading without labels", name)
    return _make(images, labels, name, classes)


# --------------------------------------------------------------------------------------
# Downsampled ImageNet 64x64 (npz batches)
# --------------------------------------------------------------------------------------

IMAGENET64_URL = "https://image-net.org/download-images.php"
IMAGENET64_HOWTO = (
    f"log in at {IMAGENET64_URL}, download 'Downsampled ImageNet 64x64' (Imagenet64_train_part1_npz.zip, "
    "Imagenet64_train_part2_npz.zip, Imagenet64_val_npz.zip), unzip them into one folder and pass it with --data DIR"
)
_IMAGENET64_BATCH = re.compile(r"train_data_batch_(\d+)\.npz")
_IMAGENET64_PIXELS = 3 * 64 * 64


def _imagenet64_files(root: Path, split: str) -> list[Path]:
    """The split's npz files in ``root`` or its direct subfolders (the unzipped part folders)."""
    folders = [root] + sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
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


def _read_npz(path: Path, key: str) -> np.ndarray:
    try:
        z = np.load(path, allow_pickle=False)
        if not isinstance(z, np.lib.npyio.NpzFile):
            raise ValueError("not an .npz archive")
        with z:
            return z[key]
    except KeyError:
        raise DataError(f"{path} has no {key!r} array; it is not a Downsampled ImageNet npz batch, {IMAGENET64_HOWTO}") from None
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise DataError(f"cannot read {path} ({type(exc).__name__}: {exc}); the file is damaged, download it again") from exc


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
    ``numpy.load(allow_pickle=False)``.

    ``split="train"`` reads every ``train_data_batch_<k>.npz`` present, in order of ``k`` (a warning
    is logged when fewer than 10 are there); ``split="test"`` reads ``val_data.npz`` (the paper
    reports ImageNet results on the validation set).

    The whole training set takes 15.7 GB in memory; ``limit`` keeps only the first ``limit`` images
    and stops opening batches once it has them (labels are read first to count the images, so the
    images array is allocated once and a batch's pixels are only read if needed).

    Args:
        root: folder holding the npz files.
        split: ``"train"`` or ``"test"``.
        limit: keep only the first ``limit`` images of the split.
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
    _check_split(split)
    limit = _check_limit(limit)
    if _check_size(size) not in (None, 64):
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

    # Pass 1: labels only (small), to count images and stop at `limit` without touching pixels.
    parts: list[tuple[Path, np.ndarray, int]] = []  # (file, labels kept, images in the file)
    total = 0
    for f in files:
        labels = _imagenet64_labels(f)
        n_file = len(labels)
        if limit is not None:
            labels = labels[: limit - total]
        parts.append((f, labels, n_file))
        total += len(labels)
        if limit is not None and total >= limit:
            break
    # Pass 2: pixels, written straight into one preallocated array (one batch in memory at a time).
    images = np.empty((total, 3, 64, 64), dtype=np.uint8)
    start = 0
    for f, labels, n_file in parts:
        data = _read_npz(f, "data")
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _IMAGENET64_PIXELS:
            raise DataError(f"{f}: 'data' must be uint8 [n, {_IMAGENET64_PIXELS}] (64x64 RGB), got {data.dtype} "
                            f"{data.shape}; use the 64x64 npz release, {IMAGENET64_HOWTO}")
        if data.shape[0] != n_file:
            raise DataError(f"{f} has {data.shape[0]} images but {n_file} labels; the file is damaged, download it again")
        n = len(labels)
        images[start : start + n] = data[:n].reshape(n, 3, 64, 64)
        start += n
        del data
    labels_all = np.concatenate([lab for _, lab, _ in parts])
    return _make(images, labels_all, f"imagenet64/{split}", None)


# --------------------------------------------------------------------------------------
# LSUN (lmdb as distributed, or exported images)
# --------------------------------------------------------------------------------------

LSUN_URL = "http://dl.yf.io/lsun/scenes/"
LSUN_HOWTO = (
    "download bedroom_train_lmdb.zip and bedroom_val_lmdb.zip with `python download.py -c bedroom` from "
    f"https://github.com/fyu/lsun (files at {LSUN_URL}), unzip both into one folder and pass it with --data DIR "
    "(a folder of exported .webp/.jpg images works too)"
)
_LSUN_SPLIT_DIR = {"train": "train", "test": "val"}


def _is_lmdb_env(path: Path) -> bool:
    return (path / "data.mdb").is_file()


def _find_lsun_lmdb(root: Path, split: str) -> Path | None:
    """The lmdb folder for ``split`` under ``root`` (or ``root`` itself), or None if there is no lmdb.

    Raises:
        DataError: ``root`` is (or holds) lmdb folders, but none for this split, or several categories.
    """
    suffix = f"_{_LSUN_SPLIT_DIR[split]}_lmdb"
    if _is_lmdb_env(root):
        other = "_val_lmdb" if split == "train" else "_train_lmdb"
        if root.name.endswith(other):
            raise DataError(
                f"{root} is the {other[1:-5]} lmdb but split {split!r} was asked for; pass the folder that holds "
                f"both *_train_lmdb and *_val_lmdb with --data DIR"
            )
        if not root.name.endswith(suffix):
            logger.warning("%s: one lmdb given; it is used for the %s split whatever its name", root, split)
        return root
    if _is_lmdb_env(root / f"bedroom{suffix}"):
        return root / f"bedroom{suffix}"
    found = sorted(p for p in root.glob(f"*{suffix}") if _is_lmdb_env(p))
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise DataError(
            f"{root} holds several LSUN categories ({', '.join(p.name for p in found)}); "
            "pass the one lmdb folder to use with --data DIR"
        )
    if any(_is_lmdb_env(p) for p in root.glob("*_lmdb")):
        raise DataError(f"{root} has no *{suffix} folder for split {split!r}; {LSUN_HOWTO}")
    return None


def _load_lsun_lmdb(path: Path, split: str, size: int, limit: int | None) -> ImageData:
    try:
        import lmdb  # optional dependency: pip install flowvae[lsun]
    except ImportError:
        raise DataError(
            f"reading the LSUN lmdb {path} needs the lmdb package: pip install lmdb (or pip install flowvae[lsun]); "
            "or export the images to a folder and pass that with --data DIR"
        ) from None
    category = path.name[: -len("_lmdb")].rsplit("_", 1)[0] if path.name.endswith("_lmdb") else path.name
    name = f"lsun-{category}/{split}" if category else f"lsun/{split}"
    try:
        # lock=False: read-only shared data folders cannot hold lock.mdb, and nothing writes here.
        env = lmdb.open(str(path), readonly=True, lock=False, readahead=False, meminit=False, max_readers=1)
    except lmdb.Error as exc:
        raise DataError(f"cannot open {path} as an lmdb ({exc}); the download is damaged, {LSUN_HOWTO}") from exc
    try:
        n = int(env.stat()["entries"])
        if limit is not None:
            n = min(n, limit)
        if n == 0:
            raise DataError(f"empty dataset {name}: the lmdb {path} holds no images; {LSUN_HOWTO}")
        logger.info("%s: decoding %d images, centre-cropped and resized to %dx%d (PIL bicubic); %.1f GB",
                    name, n, size, size, n * 3 * size * size / 1e9)
        images = np.empty((n, size, size, 3), dtype=np.uint8)
        with env.begin(write=False, buffers=False) as txn:
            cursor = txn.cursor()
            for i, (key, value) in enumerate(cursor):  # keys in lmdb (bytewise) order
                if i == n:
                    break
                try:
                    with Image.open(io.BytesIO(value)) as img:
                        images[i] = np.asarray(_center_crop_resize(img.convert("RGB"), size), dtype=np.uint8)
                except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
                    label = key.decode("ascii", "replace")
                    raise DataError(f"cannot decode image {label!r} in {path} ({exc}); the lmdb is damaged, download it again") from exc
    except lmdb.Error as exc:
        raise DataError(f"cannot read {path} as an lmdb ({exc}); the download is damaged, {LSUN_HOWTO}") from exc
    finally:
        env.close()
    return _make(images.transpose(0, 3, 1, 2), None, name, None)


def _folder_split_name(root: Path, split: str) -> str:
    """``split``, or ``"val"`` when ``root`` has ``val/`` (or ``valid/``, ``validation/``) but no ``test/``."""
    if split == "test" and not (root / "test").is_dir():
        for alias in ("val", "valid", "validation"):
            if (root / alias).is_dir():
                return alias
    return split


def load_lsun(root: str | Path, split: str = "train", size: int = 128, limit: int | None = None) -> ImageData:
    """LSUN scenes (the paper: bedroom at 128x128) from the lmdb release, or from exported images.

    Files: ``bedroom_train_lmdb.zip`` (3,033,042 images) and ``bedroom_val_lmdb.zip`` (300 images) from
    ``http://dl.yf.io/lsun/scenes/``, fetched by ``python download.py -c bedroom`` of
    https://github.com/fyu/lsun; unzipped, each is a folder with ``data.mdb`` whose keys are image ids
    and values the encoded images (WEBP, JPEG works too). Reading lmdb needs the optional ``lmdb``
    package (``pip install flowvae[lsun]``).

    ``root`` may be:

    * a folder holding ``bedroom_train_lmdb/`` and ``bedroom_val_lmdb/``: ``split="train"`` reads the
      first, ``"test"`` the second (another single category, e.g. ``church_outdoor_*_lmdb``, is used
      the same way);
    * one lmdb folder itself (used for the split asked for; a ``*_train_lmdb`` folder refuses
      ``"test"`` and a ``*_val_lmdb`` folder refuses ``"train"``);
    * a folder of exported images (``.webp/.jpg/.png``, e.g. from the LSUN tools' ``export``):
      read by :func:`load_image_folder` with this ``size`` and ``limit``; ``root/train`` and
      ``root/test`` (or ``root/val``) are used as splits when present, otherwise all of ``root``
      is used for either split.

    lmdb entries are read in key order. Every image is converted to RGB, centre-cropped to a square
    and resized to ``size x size`` with PIL's bicubic filter. The full training set at 128x128 takes
    about 150 GB; use ``limit`` for a subset (reading stops after ``limit`` entries).

    Args:
        root: location as above.
        split: ``"train"`` or ``"test"``.
        size: output height and width (default 128, as in the paper).
        limit: keep only the first ``limit`` images.

    Returns:
        ImageData named ``"lsun-<category>/<split>"`` (lmdb) or ``"lsun/<split>"`` (images):
        images ``uint8 [N, 3, size, size]`` (RGB 0..255; an exported folder of only grey images gives
        ``C=1``), labels ``None``.

    Raises:
        DataError: root missing or holding neither an lmdb nor images (the message says where to
            download LSUN), ``lmdb`` not installed, an lmdb for the other split only, several
            categories, a damaged lmdb or undecodable image, or bad ``size``/``limit``.
    """
    _check_split(split)
    limit = _check_limit(limit)
    size = _check_size(size, allow_none=False)
    root = Path(root).expanduser()
    if not root.exists():
        raise DataError(f"LSUN not found: {root} does not exist; {LSUN_HOWTO}")
    if root.is_file() and root.name == "data.mdb":
        root = root.parent
    if not root.is_dir():
        raise DataError(f"LSUN: {root} is not a folder; pass the folder holding bedroom_train_lmdb/ and bedroom_val_lmdb/ with --data DIR")
    found = _find_lsun_lmdb(root, split)
    if found is not None:
        return _load_lsun_lmdb(found, split, size, limit)
    if not _has_image_files(root):
        raise DataError(f"LSUN not found in {root}: no bedroom_train_lmdb/ or bedroom_val_lmdb/ and no image files; {LSUN_HOWTO}")
    data = load_image_folder(root, _folder_split_name(root, split), size=size, limit=limit)
    return ImageData(data.images, None, f"lsun/{split}")  # LSUN scenes are unlabelled: subfolders are not classes


# --------------------------------------------------------------------------------------
# CelebA-HQ (images or .npy arrays)
# --------------------------------------------------------------------------------------

CELEBAHQ_HOWTO = (
    "build CelebA-HQ with dataset_tool.py create_celebahq of https://github.com/tkarras/progressive_growing_of_gans "
    "(from CelebA, https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html, and its deltas) or use a 256x256 export, "
    "then pass the folder of images / imgHQ*.npy files (or one .npy array) with --data DIR"
)
CELEBAHQ_TRAIN = 27000  # of 30,000 images, as in Glow and the paper; the rest (3,000) are test
_DIGIT_RUNS = re.compile(r"(\d+)")


def _natural_key(path: Path, base: Path) -> list[Any]:
    """Sort key comparing digit runs as numbers, so ``2.jpg < 10.jpg`` and ``imgHQ00002.npy < imgHQ00010.npy``."""
    parts = _DIGIT_RUNS.split(path.relative_to(base).as_posix())
    return [(0, int(p), "") if i % 2 else (1, 0, p) for i, p in enumerate(parts)]


def celebahq_train_count(n: int) -> int:
    """Images of an ``n``-image CelebA-HQ set that go to ``train``: 27,000 when ``n >= 30,000``
    (the paper's 27,000/3,000 split of the 30,000 images), else ``floor(0.9 * n)`` but at least one
    (so a single image is ``train`` and ``test`` is empty)."""
    if n >= 30000:
        return CELEBAHQ_TRAIN
    return min(n, max(1, (9 * n) // 10))


def _split_range(n: int, split: str, limit: int | None, where: Path) -> tuple[int, int]:
    n_train = celebahq_train_count(n)
    lo, hi = (0, n_train) if split == "train" else (n_train, n)
    if hi <= lo:
        raise DataError(f"empty dataset celebahq/{split}: {where} holds only {n} image(s), too few for a "
                        f"train/test split; add images or use train/ and test/ subfolders")
    if limit is not None:
        hi = min(hi, lo + limit)
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


def _npy_images(arr: np.ndarray, lo: int, hi: int, size: int | None) -> np.ndarray:
    """Images ``lo:hi`` of a mapped ``[n, 3, H, W]`` / ``[n, H, W, 3]`` array as a new ``uint8 [k, 3, S, S]``.

    Reads blocks of 256 images, so a large memory-mapped file is never copied whole; the result owns
    its memory (no view keeps the mapping, and its file descriptor, alive).
    """
    channels_first = arr.shape[1] == 3
    h, w = arr.shape[2:4] if channels_first else arr.shape[1:3]
    keep = size is None or (h, w) == (size, size)
    out = np.empty((hi - lo, 3) + ((h, w) if keep else (size, size)), dtype=np.uint8)
    for start in range(lo, hi, 256):
        block = np.asarray(arr[start : min(start + 256, hi)])
        if not channels_first:
            block = block.transpose(0, 3, 1, 2)
        at = start - lo
        if keep:
            out[at : at + len(block)] = block
            continue
        for j, image in enumerate(block):
            resized = _center_crop_resize(Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0))), size)
            out[at + j] = np.asarray(resized, dtype=np.uint8).transpose(2, 0, 1)
    return out


def _load_celebahq_npy(paths: list[Path], base: Path, split: str, size: int | None, limit: int | None,
                       split_here: bool) -> np.ndarray:
    # Map each file only while it is used: 30,000 per-image files mapped at once would exhaust the
    # process's file descriptors (every mapping holds one).
    counts = [len(_open_npy(p)) for p in paths]
    n = sum(counts)
    lo, hi = _split_range(n, split, limit, base) if split_here else (0, n if limit is None else min(n, limit))
    chunks: list[np.ndarray] = []
    start = 0
    for path, count in zip(paths, counts):
        a, b = max(lo, start) - start, min(hi, start + count) - start
        if a < b:
            chunk = _npy_images(_open_npy(path), a, b, size)
            if chunks and chunk.shape[2:] != chunks[0].shape[2:]:
                raise DataError(f"{path} holds {chunk.shape[3]}x{chunk.shape[2]} images but earlier files "
                                f"{chunks[0].shape[3]}x{chunks[0].shape[2]}; resize them all with --set data.image_size=N")
            chunks.append(chunk)
        start += count
    return np.concatenate(chunks) if len(chunks) > 1 else chunks[0]


def load_celebahq(root: str | Path, split: str = "train", size: int | None = 256, limit: int | None = None) -> ImageData:
    """CelebA-HQ (Karras et al., 2018; the paper uses 256x256) from images or .npy arrays.

    There is no official download of the finished dataset: it is built from CelebA and the deltas
    published with Progressive GAN (``dataset_tool.py create_celebahq``, which the original release
    wrote as per-image ``imgHQ00000.npy`` ... ``imgHQ29999.npy``, each ``uint8 [1, 3, 1024, 1024]``),
    and 256x256 JPEG/PNG exports of it are widely shared. ``root`` may be:

    * a folder of images (``.png/.jpg/.jpeg/.webp``, read by :func:`load_image_folder`);
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
        limit: keep only the first ``limit`` images of the split.

    Returns:
        ImageData named ``"celebahq/<split>"``: images ``uint8 [N, 3, size, size]`` (RGB 0..255; a
        folder of only grey images gives ``C=1``), labels ``None``.

    Raises:
        DataError: root missing or holding neither images nor .npy files (the message says how to get
            CelebA-HQ), a folder mixing .npy and image files, a .npy that is not uint8 RGB images, too
            few images to split, mixed sizes with ``size=None``, or bad ``size``/``limit``.
    """
    _check_split(split)
    limit = _check_limit(limit)
    size = _check_size(size)
    root = Path(root).expanduser()
    name = f"celebahq/{split}"
    if not root.exists():
        raise DataError(f"CelebA-HQ not found: {root} does not exist; {CELEBAHQ_HOWTO}")
    if root.is_file():
        if root.suffix.lower() != ".npy":
            raise DataError(f"CelebA-HQ: {root} is a file but not a .npy array; pass a folder of images or a .npy file with --data DIR")
        return _make(_load_celebahq_npy([root], root, split, size, limit, split_here=True), None, name, None)

    folder_split = _folder_split_name(root, split)
    split_dirs = (root / "train").is_dir() and any((root / s).is_dir() for s in ("test", "val", "valid", "validation"))
    base = root / folder_split if split_dirs else root
    npys = sorted((p for p in base.rglob("*.npy") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(base).parts)), key=lambda p: _natural_key(p, base))
    has_images = _has_image_files(base)
    if npys and has_images:
        raise DataError(f"{base} holds both .npy and image files; keep one kind, or pass one of them with --data DIR")
    if npys:
        return _make(_load_celebahq_npy(npys, base, split, size, limit, split_here=not split_dirs), None, name, None)
    if not has_images:
        raise DataError(f"CelebA-HQ not found in {base}: no image or .npy files; {CELEBAHQ_HOWTO}")
    if split_dirs:
        data = load_image_folder(root, folder_split, size=size, limit=limit)
    else:
        files = sorted(_list_image_files(base), key=lambda p: _natural_key(p, base))
        lo, hi = _split_range(len(files), split, limit, base)
        data = _decode_image_files(files[lo:hi], base, name, size, "error")
    return ImageData(data.images, None, name)  # CelebA-HQ is unlabelled: subfolders are not classes


# --------------------------------------------------------------------------------------
# Dispatcher
# --------------------------------------------------------------------------------------


def _infer_kind(path: Path) -> str:
    """Dataset kind for a path given instead of a dataset name."""
    if path.is_file():
        if path.suffix.lower() == ".zip":
            return "cifar10-jpeg"
        if path.name.endswith((".tar.gz", ".tgz")):
            return "cifar10"
        raise DataError(f"cannot tell what dataset {path} is; pass a folder of images, an MNIST/CIFAR-10 folder, or a .zip/.tar.gz")
    for prefix in ("train", "t10k"):
        if _find_mnist_file(path, prefix, "images") is not None:
            return "mnist"
    if _locate_cifar10(path) is not None:
        return "cifar10"
    if _imagenet64_files(path, "train") or _imagenet64_files(path, "test"):
        return "imagenet64"
    if _is_lmdb_env(path) or any(_is_lmdb_env(p) for p in path.glob("*_lmdb")):
        return "lsun"
    return "folder"


# Keyword options each loader accepts through load_dataset.
_LOADER_OPTIONS: dict[str, frozenset[str]] = {
    "digits": frozenset(),
    "mnist": frozenset(),
    "cifar10": frozenset({"download"}),
    "cifar10-jpeg": frozenset({"limit", "cache"}),
    "folder": frozenset({"size", "limit", "on_bad"}),
    "imagenet64": frozenset({"size", "limit"}),
    "lsun": frozenset({"size", "limit"}),
    "celebahq": frozenset({"size", "limit"}),
    "dsprites": frozenset({"variant", "limit"}),
}


def load_dataset(name: str, split: str = "train", root: str | Path | None = None, **kw: Any) -> ImageData:
    """Load a dataset by name, or by a path whose kind is inferred.

    Args:
        name: one of ``DATASET_NAMES`` (``digits``, ``mnist``, ``cifar10``, ``cifar10-jpeg``,
            ``folder``, ``imagenet64``, ``lsun``, ``celebahq``, ``dsprites``), or an existing folder / ``.zip`` /
            ``.tar.gz`` path (an MNIST, CIFAR-10, Downsampled ImageNet or LSUN lmdb folder is
            recognised by its files; a zip is read as the CIFAR-10 JPEG zip; any other folder is
            read as a folder of images).
        split: ``"train"`` or ``"test"`` (any subfolder name for ``folder``).
        root: data location; defaults: mnist -> ``../shared/data/mnist`` if it exists, else
            ``cache_dir()/mnist``; cifar10 -> ``cache_dir()/cifar10``; cifar10-jpeg ->
            ``../shared/data/cifar10-jpeg/cifar10-jpeg-images.zip``; imagenet64, lsun, celebahq ->
            ``../shared/data/<name>`` if it exists, else ``cache_dir()/<name>``; folder has no default.
            (``../shared/data`` is ``$FLOWVAE_SHARED_DATA`` when that is set.)
        **kw: loader options: ``download`` (cifar10), ``limit``/``cache`` (cifar10-jpeg),
            ``size``/``limit``/``on_bad`` (folder), ``size``/``limit`` (imagenet64, lsun, celebahq),
            ``variant``/``limit`` (dsprites: ``"grid"``, ``"subset"`` or ``"full"``; its split may also be
            ``"all"``, and its root defaults to ``../shared/data/dsprites``; see :mod:`flowvae.data.dsprites`).
            Options set to ``None`` are ignored, so the loaders' defaults apply (lsun 128, celebahq 256).

    Returns:
        ImageData as documented by the chosen loader.

    Raises:
        DataError: unknown name (with the nearest valid one suggested), an option the dataset
            does not support, or anything the loader raises (missing files say where to get them).
    """
    kind = name
    if name not in DATASET_NAMES:
        as_path = Path(str(name)).expanduser()
        if as_path.exists():
            kind, root = _infer_kind(as_path), as_path
        else:
            near = difflib.get_close_matches(str(name), DATASET_NAMES, n=1, cutoff=0.5)
            hint = f"did you mean {near[0]!r}? " if near else ""
            raise DataError(
                f"unknown dataset {name!r}; {hint}valid names: {', '.join(DATASET_NAMES)} "
                "(or an existing folder/.zip path)"
            )
    options = {k: v for k, v in kw.items() if v is not None}
    unsupported = sorted(set(options) - _LOADER_OPTIONS[kind])
    if unsupported:
        raise DataError(f"dataset {kind!r} does not take option(s) {', '.join(unsupported)}; remove them")

    if kind == "digits":
        return load_digits(split)
    if kind == "mnist":
        if root is None:
            shared = shared_data_dir() / "mnist"
            root = shared if shared.is_dir() else cache_dir() / "mnist"
        return load_mnist(root, split)
    if kind == "cifar10":
        return load_cifar10(cache_dir() / "cifar10" if root is None else root, split, **options)
    if kind == "cifar10-jpeg":
        if root is None:
            root = shared_data_dir() / "cifar10-jpeg" / "cifar10-jpeg-images.zip"
        elif Path(root).is_dir():
            root = Path(root) / "cifar10-jpeg-images.zip"
        return load_cifar10_jpeg_zip(root, split, **options)
    if kind in ("imagenet64", "lsun", "celebahq"):
        if root is None:
            shared = shared_data_dir() / kind
            root = shared if shared.is_dir() else cache_dir() / kind
        loader = {"imagenet64": load_imagenet64, "lsun": load_lsun, "celebahq": load_celebahq}[kind]
        return loader(root, split, **options)
    if kind == "dsprites":
        from flowvae.data.dsprites import load_dsprites

        # uint8 0/255 images [N, 1, 64, 64], labels = shape class (square, ellipse, heart).
        return load_dsprites(root, split, **options).to_image_data()
    # kind == "folder"
    if root is None:
        raise DataError("dataset 'folder' needs the image folder: pass it with --data PATH")
    return load_image_folder(root, split, **options)


# --------------------------------------------------------------------------------------
# Bit depth
# --------------------------------------------------------------------------------------


def _check_n_bits(n_bits: int) -> int:
    if isinstance(n_bits, bool) or not isinstance(n_bits, int) or not 1 <= n_bits <= 8:
        raise DataError(f"n_bits must be an integer from 1 to 8, got {n_bits!r}; e.g. 5 for Glow's 5-bit images or 8")
    return n_bits


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
    _check_n_bits(n_bits)
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
    _check_n_bits(n_bits)
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
