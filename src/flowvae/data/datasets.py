"""Compatibility module: the names ``flowvae.data.datasets`` exported before the loaders were
split into :mod:`flowvae.data.sources` (one module per data source) around
:mod:`flowvae.data.registry`. New code imports from :mod:`flowvae.data`.
"""

from flowvae.data import (
    CIFAR10_CLASSES,
    CIFAR10_MD5,
    CIFAR10_URL,
    DATASET_NAMES,
    ImageData,
    ImageTensorDataset,
    bins_to_uint8,
    cache_dir,
    celebahq_train_count,
    load_celebahq,
    load_cifar10,
    load_cifar10_jpeg_zip,
    load_dataset,
    load_digits,
    load_image_folder,
    load_imagenet64,
    load_lsun,
    load_mnist,
    quantize,
    shared_data_dir,
)
from flowvae.data.sources.celebahq import CELEBAHQ_HOWTO, CELEBAHQ_TRAIN
from flowvae.data.sources.cifar10 import CIFAR10_ARCHIVE, CIFAR10_FOLDER
from flowvae.data.sources.cifar10_jpeg import CIFAR10_JPEG_NAME
from flowvae.data.sources.imagenet64 import IMAGENET64_HOWTO, IMAGENET64_URL
from flowvae.data.sources.lsun import LSUN_HOWTO, LSUN_URL
from flowvae.data.sources.mnist import MNIST_URLS

__all__ = [
    "CELEBAHQ_HOWTO",
    "CELEBAHQ_TRAIN",
    "CIFAR10_ARCHIVE",
    "CIFAR10_CLASSES",
    "CIFAR10_FOLDER",
    "CIFAR10_JPEG_NAME",
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "DATASET_NAMES",
    "IMAGENET64_HOWTO",
    "IMAGENET64_URL",
    "ImageData",
    "ImageTensorDataset",
    "LSUN_HOWTO",
    "LSUN_URL",
    "MNIST_URLS",
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
