"""One module per data source; importing this package registers them all.

:data:`SOURCE_MODULES` is the registration order: the order of :data:`flowvae.data.DATASET_NAMES`
and the order in which sources are asked to recognise a path given instead of a dataset name
(:func:`flowvae.data.registry.source_for_path`). Imported by name in a loop rather than by import
statements, which tools may re-sort.
"""

from __future__ import annotations

import importlib

__all__ = ["SOURCE_MODULES"]

SOURCE_MODULES: tuple[str, ...] = (
    "digits", "mnist", "idx", "cifar10", "cifar10_jpeg", "folder", "imagenet64", "lsun", "celebahq", "dsprites",
)

for _module in SOURCE_MODULES:
    importlib.import_module(f"{__name__}.{_module}")
