"""Datasets as uint8 image tensors, and the bit-depth quantisation used by flows."""

from flowvae.data.datasets import (
    CIFAR10_CLASSES,
    CIFAR10_MD5,
    CIFAR10_URL,
    DATASET_NAMES,
    ImageData,
    ImageTensorDataset,
    bins_to_uint8,
    cache_dir,
    load_cifar10,
    load_cifar10_jpeg_zip,
    load_dataset,
    load_digits,
    load_image_folder,
    load_mnist,
    quantize,
    shared_data_dir,
)

__all__ = [
    "CIFAR10_CLASSES",
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "DATASET_NAMES",
    "ImageData",
    "ImageTensorDataset",
    "bins_to_uint8",
    "cache_dir",
    "load_cifar10",
    "load_cifar10_jpeg_zip",
    "load_dataset",
    "load_digits",
    "load_image_folder",
    "load_mnist",
    "quantize",
    "shared_data_dir",
]
