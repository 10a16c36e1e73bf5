"""Training batches from any image dataset: in memory, or streamed through ``DataLoader`` workers.

The trainer separates *which* images form a step's batch from *how* they are read:

* an **order** (:class:`ShuffledOrder`, :class:`GroupedOrder`) draws the indices of each global
  batch from the seed alone, so its state is two integers in the checkpoint and a resumed run
  draws exactly the batches an uninterrupted one would;
* a **source** (:class:`InMemorySource`, :class:`StreamingSource`) reads the images of this
  process's rows of that batch, ``[lo, hi)``: under DDP each rank reads only its own shard of every
  global batch and, with the augmentation drawn for the whole batch
  (:func:`~flowvae.data.augment.augment_batch`), computes what one process computes on it.

:class:`InMemorySource` indexes a uint8 tensor (:class:`~flowvae.data.ImageData`, the fast path for
data that fits in memory). :class:`StreamingSource` reads any map-style
``torch.utils.data.Dataset`` lazily: items are decoded in ``DataLoader`` worker processes, a copy
of the order runs ahead to prefetch, and batches are pinned and copied without blocking on CUDA.
Items may be ``uint8`` tensors ``[C, H, W]`` (or ``[H, W]``), PIL images, uint8 numpy arrays
``[H, W, C]`` / ``[H, W]``, or ``(image, label)`` pairs of those: torchvision datasets work as they
are (without a ``ToTensor`` transform, which would give floats).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .base import ImageData

__all__ = ["ShuffledOrder", "GroupedOrder", "InMemorySource", "StreamingSource", "ImageFiles", "MappedRows",
           "to_uint8_chw",
           "collate_images",
           "dataset_labels", "dataset_image_shape", "training_source", "head_images"]

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- orders

class ShuffledOrder:
    """Global batches of ``batch_size`` indices into ``n`` items: a permutation per epoch seeded by
    ``(seed, epoch)``, the ragged end of each epoch dropped. State: ``{"epoch", "pos"}``.

    Raises:
        DataError: ``batch_size`` larger than ``n``.
    """

    def __init__(self, n: int, batch_size: int, seed: int):
        if batch_size > n:
            raise DataError(f"batch size {batch_size} is larger than the dataset ({n} images); "
                            f"lower train.batch_size")
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.epoch, self.pos = 0, 0
        self._perm = self._permutation()

    def _permutation(self) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        return torch.randperm(self.n, generator=g)

    def next(self) -> tuple[torch.Tensor, None]:
        """The next global batch's indices ``int64 [B]``, and no group labels."""
        if self.pos + self.batch_size > self.n:
            self.epoch, self.pos = self.epoch + 1, 0
            self._perm = self._permutation()
        idx = self._perm[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx, None

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "pos": self.pos}

    def load_state_dict(self, s: dict) -> None:
        self.epoch, self.pos = int(s["epoch"]), int(s["pos"])
        self._perm = self._permutation()

    def copy(self) -> ShuffledOrder:
        other = ShuffledOrder(self.n, self.batch_size, self.seed)
        other.load_state_dict(self.state_dict())
        return other


class GroupedOrder:
    """Batches of ``groups`` classes, ``batch_size // groups`` images each (UG-VAE with
    ``model.group_by=label``): ``next()`` gives the indices and each row's group ``[B]``. Each
    step's draw depends only on ``(seed, step)``, so the state is one counter.

    Raises:
        DataError: no labels. ConfigError: a batch size that is not a multiple of ``groups``, or
            more groups than classes.
    """

    def __init__(self, labels: torch.Tensor | None, batch_size: int, groups: int, seed: int):
        if labels is None:
            raise DataError("model.group_by=label needs class labels, and this dataset has none; "
                            "use model.group_by=batch")
        if groups < 1 or batch_size % groups:
            raise ConfigError(f"train.batch_size={batch_size} must be a multiple of model.groups_per_batch={groups}")
        self.labels, self.batch_size, self.groups, self.seed = labels, batch_size, groups, seed
        self.per = batch_size // groups
        self.by_class = [torch.nonzero(labels == c).flatten() for c in torch.unique(labels)]
        if groups > len(self.by_class):
            raise ConfigError(f"model.groups_per_batch={groups} but the data has {len(self.by_class)} classes")
        self.step = 0

    def next(self) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(self.seed * 1000003 + self.step)
        self.step += 1
        classes = torch.randperm(len(self.by_class), generator=g)[: self.groups]
        idx = [pool[torch.randint(len(pool), (self.per,), generator=g)]
               for pool in (self.by_class[c] for c in classes.tolist())]
        return torch.cat(idx), torch.arange(self.groups).repeat_interleave(self.per)

    def state_dict(self) -> dict:
        return {"step": self.step}

    def load_state_dict(self, s: dict) -> None:
        self.step = int(s["step"])

    def copy(self) -> GroupedOrder:
        other = GroupedOrder(self.labels, self.batch_size, self.groups, self.seed)
        other.step = self.step
        return other


Order = ShuffledOrder | GroupedOrder


# ---------------------------------------------------------------------------------------------- items

def to_uint8_chw(item: Any) -> torch.Tensor:
    """One dataset item as a ``uint8 [C, H, W]`` tensor (pixels 0..255).

    Accepts a uint8 tensor ``[C, H, W]`` or ``[H, W]``, a PIL image (grey, RGB; other modes are
    converted to RGB), a uint8 numpy array ``[H, W, C]`` or ``[H, W]``, or a tuple/list whose first
    element is one of those (``(image, label)``).

    Raises:
        DataError: a float tensor (a ``ToTensor`` transform: drop it, or use ``PILToTensor``), or
            anything else.
    """
    if isinstance(item, (tuple, list)) and item:
        item = item[0]
    if isinstance(item, torch.Tensor):
        if item.dtype != torch.uint8:
            raise DataError(f"dataset items must be uint8 images 0..255, got a {item.dtype} tensor; drop a "
                            f"ToTensor() transform (or use torchvision's PILToTensor())")
        t = item
        if t.dim() == 2:
            t = t[None]
        if t.dim() != 3:
            raise DataError(f"dataset items must be images [C, H, W] or [H, W], got shape {list(item.shape)}")
        return t
    try:
        from PIL import Image

        if isinstance(item, Image.Image):
            if item.mode not in ("L", "RGB"):
                item = item.convert("RGB")
            item = np.asarray(item)
    except ImportError:  # Pillow is a dependency; only a broken install lands here
        pass
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8:
            raise DataError(f"dataset items must be uint8 images 0..255, got a {item.dtype} array")
        a = item[..., None] if item.ndim == 2 else item
        if a.ndim != 3:
            raise DataError(f"dataset items must be images [H, W, C] or [H, W], got shape {list(item.shape)}")
        return torch.from_numpy(a.transpose(2, 0, 1).copy())  # a copy: PIL arrays are read-only
    raise DataError(f"dataset items must be images (uint8 tensors, PIL images, uint8 arrays) or (image, label) "
                    f"pairs, got {type(item).__name__}")


def collate_images(items: list[Any]) -> torch.Tensor:
    """A batch ``uint8 [B, C, H, W]`` from dataset items (:func:`to_uint8_chw`).

    Raises:
        DataError: items of different shapes (resize them to one size first).
    """
    images = [to_uint8_chw(it) for it in items]
    shapes = {tuple(t.shape) for t in images}
    if len(shapes) > 1:
        raise DataError(f"dataset items have different shapes {sorted(shapes)[:3]}; resize them to one size "
                        f"(e.g. torchvision.transforms.Resize + CenterCrop)")
    return torch.stack(images)


def dataset_image_shape(dataset: Any) -> tuple[int, int, int]:
    """``(C, H, W)`` of a dataset's items (its first item, decoded once)."""
    if isinstance(dataset, ImageData):
        c, h, w = dataset.images.shape[1:]
        return int(c), int(h), int(w)
    if len(dataset) == 0:
        raise DataError("the dataset is empty")
    c, h, w = to_uint8_chw(dataset[0]).shape
    return int(c), int(h), int(w)


def dataset_labels(dataset: Any) -> torch.Tensor | None:
    """Class labels ``int64 [N]`` without decoding images: ``ImageData.labels``, a dataset's
    ``labels`` or ``targets`` attribute (torchvision), else ``None``."""
    if isinstance(dataset, ImageData):
        return dataset.labels
    for name in ("labels", "targets"):
        value = getattr(dataset, name, None)
        if value is not None:
            t = torch.as_tensor(np.asarray(value)).to(torch.int64).flatten()
            if len(t) == len(dataset):
                return t
    return None


def head_images(dataset: Any, n: int | None, index: torch.Tensor | None = None) -> torch.Tensor:
    """``uint8 [n, C, H, W]``: the first ``n`` items (all when ``None``), or the items ``index``."""
    if isinstance(dataset, ImageData):
        images = dataset.images
        return images[index] if index is not None else images if n is None else images[:n]
    idx = index.tolist() if index is not None else list(range(len(dataset) if n is None else min(n, len(dataset))))
    return collate_images([dataset[i] for i in idx])


# ---------------------------------------------------------------------------------------------- lazy readers

class ImageFiles(torch.utils.data.Dataset):
    """Image files read when an item is asked for: a map-style dataset of ``(uint8 [C, H, W], label)``.

    Memory holds only the file names, as one numpy byte-string array (a few tens of bytes per
    file, shared with forked DataLoader workers without copying), and the labels, so it does not
    grow with the images. :meth:`from_folder` lists a folder as the in-memory folder loader does.

    Args:
        files: the image files, in dataset order (relative to ``root`` when it is given).
        labels: ``int64 [N]`` class indices, or ``None`` (items then have label ``-1``).
        channels: 1 (grey) or 3 (RGB); each file is converted to it.
        size: centre-crop and resize to ``size x size`` (:func:`~flowvae.data.images.decode_image_file`);
            ``None`` keeps the file's size.
        root: the folder ``files`` are relative to.

    Raises:
        DataError: (on access) a file that cannot be decoded, naming it.
    """

    def __init__(self, files: Any, labels: torch.Tensor | None, channels: int, size: int | None,
                 root: str | Path | None = None, zip_path: str | Path | None = None, name: str = "images"):
        if channels not in (1, 3):
            raise DataError(f"channels must be 1 or 3, got {channels}")
        self.names = (files if isinstance(files, np.ndarray) and files.dtype.kind == "S"
                      else np.array([os.fsencode(str(f)) for f in files], dtype=bytes))
        self.labels, self.channels, self.size, self.name = labels, channels, size, name
        self.root = None if root is None else os.fsencode(str(root))
        self.zip_path = None if zip_path is None else str(zip_path)
        self._zip: tuple[int, Any] | None = None  # (pid, ZipFile): one per DataLoader worker
        self.classes: list[str] | None = None

    @classmethod
    def from_split(cls, split: Any, size: int | None) -> ImageFiles:
        """The files an :class:`~flowvae.data.sources.folder.ImageSplit` chose (a folder's or a
        zip's, with its held-out split and limits), read on access. Channels: those of the first
        file (the in-memory loader converts everything to RGB when any file is colour).

        Raises:
            DataError: the first file cannot be decoded.
        """
        if split.zip_path is not None:
            names = [f.as_posix() for f in split.files]
            out = cls(names, None, 3, size, zip_path=split.zip_path, name=split.name)
        else:
            base = Path(split.base)
            names = [Path(f).relative_to(base).as_posix() for f in split.files]
            out = cls(names, None, 3, size, root=base, name=split.name)
        out.labels = None if split.labels is None else torch.from_numpy(np.asarray(split.labels, dtype=np.int64))
        out.classes = split.classes
        first = out._decode(0)
        out.channels = 1 if first.ndim == 2 else 3
        return out

    @classmethod
    def from_folder(cls, root: str | Path, channels: int, size: int | None) -> ImageFiles:
        """The image files under ``root`` in the order of :func:`~flowvae.data.images.list_image_files`
        (sorted relative paths; hidden files and links out of ``root`` skipped), labelled by their
        first sub-folder when every file has one.

        Raises:
            DataError: no image files under ``root``.
        """
        from .images import IMAGE_SUFFIXES, iter_files

        root = Path(root)
        # Straight into one byte-string array (UTF-8 bytes sort as the strings do): no per-file
        # Python objects outlive the listing, so memory stays flat in the number of files.
        raw = [os.fsencode(p.relative_to(root).as_posix()) for p in iter_files(root, IMAGE_SUFFIXES)]
        if not raw:
            raise DataError(f"no image files under {root}")
        names = np.sort(np.array(raw, dtype=bytes))
        del raw
        labels, classes = None, None
        if bool((np.char.find(names, b"/") >= 0).all()):
            tops, inverse = np.unique(np.char.partition(names, b"/")[:, 0], return_inverse=True)
            classes = [os.fsdecode(bytes(t)) for t in tops]
            labels = torch.from_numpy(inverse.astype(np.int64).reshape(-1))
        out = cls(names, labels, channels, size, root)
        out.classes = classes
        return out

    def __len__(self) -> int:
        return len(self.names)

    def path(self, i: int) -> Path:
        """The file of item ``i`` (for a zip: the entry's name)."""
        name = bytes(self.names[i])
        return Path(os.fsdecode(os.path.join(self.root, name) if self.root is not None else name))

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_zip": None}  # a worker opens the zip itself

    def _decode(self, i: int) -> np.ndarray:
        from .images import DECODE_ERRORS, decode_image_file, read_zip_entry

        path = self.path(i)
        try:
            if self.zip_path is None:
                return decode_image_file(path, self.size)
            import zipfile

            if self._zip is None or self._zip[0] != os.getpid():
                self._zip = (os.getpid(), zipfile.ZipFile(self.zip_path))
            return decode_image_file(read_zip_entry(self._zip[1], path.as_posix(), Path(self.zip_path)), self.size)
        except DECODE_ERRORS as e:
            where = f"{self.zip_path}:{path.as_posix()}" if self.zip_path else str(path)
            raise DataError(f"cannot decode {where}: {e}") from None

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        a = self._decode(i)
        if self.channels == 3 and a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)
        elif self.channels == 1 and a.ndim == 3:
            a = np.asarray(Image.fromarray(a).convert("L"))
        return to_uint8_chw(a), -1 if self.labels is None else int(self.labels[i])


class MappedRows(torch.utils.data.Dataset):
    """Rows of uint8 arrays in files, memory-mapped: a map-style dataset of ``(uint8 [C, H, W], label)``.

    Each part is ``(path, offset, n_rows)``: ``n_rows`` rows of ``C*H*W`` bytes at byte ``offset``
    of ``path`` (an npz member stored uncompressed, or a raw cache file). The operating system's
    page cache holds what is read, shared by every process and DDP rank on a machine, so a
    process's memory does not grow with the dataset. Each process maps the files on first use.

    Args:
        parts: the files and where their rows are.
        shape: ``(C, H, W)`` of one row.
        rows: ``int64 [N]`` global row indices (over the parts in order) that make the dataset.
        labels: ``int64 [N]`` or ``None``.
        name: for messages.
    """

    def __init__(self, parts: list[tuple[str, int, int]], shape: tuple[int, int, int], rows: np.ndarray,
                 labels: torch.Tensor | None, name: str):
        self.parts, self.shape, self.rows, self.labels, self.name = parts, shape, rows, labels, name
        self.starts = np.cumsum([0] + [n for _, _, n in parts])
        self._maps: tuple[int, list[np.memmap]] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_maps": None}

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        if self._maps is None or self._maps[0] != os.getpid():
            row_bytes = int(np.prod(self.shape))
            self._maps = (os.getpid(), [np.memmap(p, dtype=np.uint8, mode="r", offset=off, shape=(n, row_bytes))
                                        for p, off, n in self.parts])
        g = int(self.rows[i])
        k = int(np.searchsorted(self.starts, g, side="right")) - 1
        row = np.array(self._maps[1][k][g - self.starts[k]])  # a copy off the mapping
        return torch.from_numpy(row.reshape(self.shape)), -1 if self.labels is None else int(self.labels[i])


# ---------------------------------------------------------------------------------------------- sources

class InMemorySource:
    """Rows of each batch indexed from a uint8 tensor in memory."""

    streaming = False

    def __init__(self, images: torch.Tensor):
        self.images = images

    def fetch(self, idx: torch.Tensor) -> torch.Tensor:
        """``uint8 [len(idx), C, H, W]`` for this process's indices of the batch."""
        return self.images[idx]

    def start(self, order: Order, lo: int, hi: int) -> None:
        """Nothing to prefetch."""

    def close(self) -> None:
        """Nothing to release."""


class _RankRows(torch.utils.data.Sampler):
    """This rank's rows ``[lo, hi)`` of every global batch of an order (a copy, running ahead)."""

    def __init__(self, order: Order, lo: int, hi: int):
        self.order, self.lo, self.hi = order, lo, hi

    def __iter__(self):
        while True:
            idx, _ = self.order.next()
            yield idx[self.lo:self.hi].tolist()


class _Indexed(torch.utils.data.Dataset):
    """``(index, item)`` so that each prefetched batch says which items it holds."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> tuple[int, Any]:
        return i, self.dataset[i]


def _collate_indexed(items: list[tuple[int, Any]]) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor([i for i, _ in items]), collate_images([it for _, it in items])


class StreamingSource:
    """Rows of each batch read lazily from a map-style dataset by ``DataLoader`` workers.

    ``start(order, lo, hi)`` begins prefetching from a copy of the order at its current state;
    each ``fetch(idx)`` returns the next prefetched batch and checks it holds ``idx`` (the trainer's
    own order advances in step, so the checkpointed state is that of the batches consumed).

    Args:
        dataset: any map-style dataset (items as in :func:`to_uint8_chw`).
        num_workers: decoding processes (0: in the training process).
        pin_memory: pinned host batches for non-blocking copies to a GPU.
    """

    streaming = True

    def __init__(self, dataset: Any, num_workers: int, pin_memory: bool = False):
        self.dataset, self.num_workers, self.pin_memory = dataset, num_workers, pin_memory
        self._it: Any = None
        self._loader: Any = None

    def start(self, order: Order, lo: int, hi: int) -> None:
        self.close()
        self._loader = torch.utils.data.DataLoader(
            _Indexed(self.dataset), batch_sampler=_RankRows(order.copy(), lo, hi), num_workers=self.num_workers,
            collate_fn=_collate_indexed, pin_memory=self.pin_memory,
            prefetch_factor=4 if self.num_workers else None, persistent_workers=False)
        self._it = iter(self._loader)

    def fetch(self, idx: torch.Tensor) -> torch.Tensor:
        try:
            got, images = next(self._it)
        except DataError as e:  # re-raised from a worker with its traceback as text: keep the message
            lines = [line for line in str(e).splitlines() if line.strip()]
            if len(lines) > 1 and "Traceback" in str(e):
                raise DataError(lines[-1].split(": ", 1)[-1]) from None
            raise
        if not torch.equal(got, idx.cpu()):  # a bug guard: the prefetching copy left the order
            raise RuntimeError("streaming batches out of step with the data order")
        return images

    def close(self) -> None:
        self._it = None  # the DataLoader's iterator shuts its workers down when collected
        self._loader = None


class _TensorItems(torch.utils.data.Dataset):
    """The images of a uint8 tensor ``[N, C, H, W]`` as dataset items."""

    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.images[i]


def default_workers() -> int:
    """DataLoader workers for data read on access: one per CPU this process may use, less one for
    the main process, at most 8 (more rarely help decode small images and each costs memory)."""
    n = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(0, min(8, n - 1))


def training_source(dataset: Any, in_memory: bool | None, num_workers: int | None, device: torch.device,
                    max_bytes: int = 2 * 1024**3) -> InMemorySource | StreamingSource:
    """The source for a training set: in memory for :class:`ImageData` (unless ``in_memory`` is
    ``False``) and for a dataset that fits in ``max_bytes`` when ``in_memory`` is ``None`` (decoded
    once, up front); else streamed. The choice is logged.

    Raises:
        DataError: unreadable items.
    """
    if isinstance(dataset, ImageData):
        if in_memory is not False:
            log.info("training data: %s, %d images in memory (%.2f GB)", dataset.name, len(dataset),
                     dataset.images.numel() / 1e9)
            return InMemorySource(dataset.images)
        dataset = _TensorItems(dataset.images)  # data.in_memory=false: the streaming path on any data
    c, h, w = dataset_image_shape(dataset)
    size = len(dataset) * c * h * w
    if in_memory is None:
        in_memory = size <= max_bytes
    if in_memory:
        log.info("training data: %d images decoded into memory (%.2f GB)", len(dataset), size / 1e9)
        return InMemorySource(head_images(dataset, None))
    workers = default_workers() if num_workers is None else num_workers
    log.info("training data: %d images (%.2f GB decoded) streamed by %d DataLoader workers", len(dataset),
             size / 1e9, workers)
    return StreamingSource(dataset, workers, pin_memory=device.type == "cuda")
