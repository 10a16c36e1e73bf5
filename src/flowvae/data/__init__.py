"""Datasets as uint8 image tensors, and the bit-depth quantisation used by flows.

Layout: :mod:`flowvae.data.base` (the :class:`ImageData` container, checks, seeded subsets,
quantisation, the torch Dataset), :mod:`flowvae.data.images` (image file listing and decoding),
:mod:`flowvae.data.registry` (the :class:`DataSource` registry and the functions that dispatch
through it) and :mod:`flowvae.data.sources`, one module per data source.
"""

import flowvae.data.sources  # noqa: F401  (registers every data source)
from flowvae.data.base import (
    FolderInfo,
    HeldOut,
    ImageData,
    ImageTensorDataset,
    bins_to_uint8,
    cache_dir,
    holdout_indices,
    quantize,
    shared_data_dir,
    subset_indices,
)
from flowvae.data.dsprites import DSpritesData, load_dsprites
from flowvae.data.registry import (
    DATA_SOURCES,
    DataSource,
    describe_image_folder,
    get_source,
    load_dataset,
    load_split,
)
from flowvae.data.sources.celebahq import celebahq_train_count, load_celebahq
from flowvae.data.sources.cifar10 import CIFAR10_CLASSES, CIFAR10_MD5, CIFAR10_URL, load_cifar10
from flowvae.data.sources.cifar10_jpeg import load_cifar10_jpeg_zip
from flowvae.data.sources.digits import load_digits
from flowvae.data.sources.folder import ImageSplit, image_split, load_image_folder
from flowvae.data.sources.imagenet64 import load_imagenet64
from flowvae.data.sources.lsun import load_lsun
from flowvae.data.sources.mnist import load_mnist

DATASET_NAMES: tuple[str, ...] = tuple(DATA_SOURCES)
"""Names of the registered data sources, in registration order."""

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "DATASET_NAMES",
    "DATA_SOURCES",
    "DSpritesData",
    "DataSource",
    "FolderInfo",
    "HeldOut",
    "ImageData",
    "ImageSplit",
    "ImageTensorDataset",
    "bins_to_uint8",
    "cache_dir",
    "celebahq_train_count",
    "describe_image_folder",
    "get_source",
    "holdout_indices",
    "image_split",
    "load_celebahq",
    "load_cifar10",
    "load_cifar10_jpeg_zip",
    "load_dataset",
    "load_digits",
    "load_dsprites",
    "load_image_folder",
    "load_imagenet64",
    "load_lsun",
    "load_mnist",
    "load_split",
    "quantize",
    "shared_data_dir",
    "subset_indices",
]
