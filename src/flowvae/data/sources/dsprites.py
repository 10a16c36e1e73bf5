"""dSprites registered as a data source; the loader and its factors live in :mod:`flowvae.data.dsprites`."""

from __future__ import annotations

from pathlib import Path

from flowvae.data.base import FolderInfo, ImageData
from flowvae.data.dsprites import DSPRITES_FILES, load_dsprites
from flowvae.data.images import has_split_folders
from flowvae.data.registry import DataSource, register

__all__: list[str] = []


def _probe(root: Path) -> FolderInfo | None:
    present = [root / f for f in DSPRITES_FILES.values() if (root / f).is_file()]
    if not present:
        return None
    # Every dSprites file holds 64x64 binary images; the loader gives them one channel.
    return FolderInfo(channels=1, height=64, width=64, n_files=len(present), has_split=has_split_folders(root),
                      format="npz", source="dsprites", first=present[0])


def _load(root: str | Path | None, split: str, variant: str = "grid", limit: int | None = None) -> ImageData:
    # uint8 0/255 images [N, 1, 64, 64], labels = shape class (square, ellipse, heart).
    return load_dsprites(root, split, variant=variant, limit=limit).to_image_data()


register(DataSource(
    name="dsprites",
    load=_load,
    options=frozenset({"limit"}),
    description="dSprites 64x64 binary sprites with ground-truth factors; labels are the shape",
    extra_options=frozenset({"variant"}),
    probe=_probe,
))
