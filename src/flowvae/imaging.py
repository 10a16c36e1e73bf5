"""Writing image grids as PNG files."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .safe_io import atomic_write

__all__ = ["make_grid", "save_grid"]


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 1, pad_value: int = 255) -> np.ndarray:
    """Tile uint8 images ``[N, C, H, W]`` (C = 1 or 3) into one ``[rows*(H+p)+p, cols*(W+p)+p, C]`` array."""
    if images.dtype != torch.uint8 or images.dim() != 4:
        raise ValueError(f"expected uint8 images [N, C, H, W], got {images.dtype} {list(images.shape)}")
    n, c, h, w = images.shape
    ncol = nrow or max(1, math.ceil(math.sqrt(n)))
    nrows = math.ceil(n / ncol)
    grid = np.full((nrows * (h + padding) + padding, ncol * (w + padding) + padding, c), pad_value, np.uint8)
    arr = images.permute(0, 2, 3, 1).cpu().numpy()
    for i in range(n):
        r, q = divmod(i, ncol)
        y, x = padding + r * (h + padding), padding + q * (w + padding)
        grid[y:y + h, x:x + w] = arr[i]
    return grid


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None, scale: int = 1,
              root: str | Path | None = None) -> Path:
    """Save uint8 images ``[N, C, H, W]`` as one PNG grid (``nrow`` images per row), written atomically.

    With ``root`` (the run folder), a ``path`` whose folder leads outside ``root`` through a
    symbolic link is refused (:class:`~flowvae.errors.CheckpointError`)."""
    grid = make_grid(images, nrow)
    img = Image.fromarray(grid[:, :, 0] if grid.shape[2] == 1 else grid)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.Resampling.NEAREST)
    path = Path(path)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    atomic_write(path, buf.getvalue(), root)  # random O_EXCL temp name; a symlinked target is refused
    return path
