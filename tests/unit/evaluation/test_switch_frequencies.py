"""The label-free switch score (:mod:`flowvae.evaluation.frequencies`): the low-pass and high-pass
parts of images, known answers for decoders that do and do not use the global code, and the
score of ``flowvae switch`` on a trained run."""

from __future__ import annotations

import json

import pytest
import torch
from torch.nn import functional as F

from flowvae.cli.main import main
from flowvae.data import ImageData
from flowvae.errors import ConfigError
from flowvae.evaluation.frequencies import LOW_PASS_SIZE, frequency_parts, switch_frequencies
from flowvae.models import Capabilities, Samples
from flowvae.runs.records import SwitchFrequencies

pytestmark = pytest.mark.usefixtures("single_thread")


def _images(n: int = 40, seed: int = 0) -> torch.Tensor:
    """uint8 ``[n, 3, 16, 16]``: a random colour per image (low frequencies) plus random texture
    (high frequencies), so the two parts of two images differ independently."""
    g = torch.Generator().manual_seed(seed)
    colour = torch.randint(40, 200, (n, 3, 1, 1), generator=g).float()
    texture = torch.randint(-40, 41, (n, 3, 16, 16), generator=g).float()
    return (colour + texture).clamp(0, 255).to(torch.uint8)


def test_the_low_and_high_parts_add_up_to_the_image():
    x = _images(6)
    low, colour, high = frequency_parts(x)
    assert low.shape == (6, 3 * LOW_PASS_SIZE**2) and colour.shape == (6, 3) and high.shape == (6, 3 * 16 * 16)
    back = F.interpolate(low.view(6, 3, 4, 4), size=(16, 16), mode="nearest") + high.view(6, 3, 16, 16)
    assert torch.allclose(back, x.double())
    assert torch.allclose(colour, x.double().mean(dim=(2, 3)))
    flat = torch.full((2, 1, 8, 8), 7, dtype=torch.uint8)  # a flat image has no high frequencies
    assert frequency_parts(flat)[2].abs().max() == 0


class _Switcher:
    """A stand-in for a ``global_local`` model whose switched decode of (v_a, z_b) is ``rule(a, b)``."""

    def __init__(self, rule, kind: str = "stub", capabilities: Capabilities | None = None):
        self.rule, self.kind, self.device = rule, kind, torch.device("cpu")
        self.capabilities = capabilities or Capabilities(global_local=True)

    def require(self, capability: str, what: str) -> None:
        if not getattr(self.capabilities, capability):
            raise ConfigError(f"{what} does not apply to a {self.kind!r} model")

    def quantised(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def switch_samples(self, x1: torch.Tensor, x2: torch.Tensor) -> Samples:
        cells = [x1, self.rule(x1, x2), x2, self.rule(x2, x1)]
        return Samples(torch.stack(cells, 1), saturated=torch.zeros(len(x1), 4, dtype=torch.bool))


def _style_of(v_image: torch.Tensor, z_image: torch.Tensor) -> torch.Tensor:
    """The decode a perfect global/local split gives: z's low frequencies, v's high ones."""
    n, c, h, w = v_image.shape
    lz, _, _ = frequency_parts(z_image)
    _, _, hv = frequency_parts(v_image)
    up = F.interpolate(lz.view(n, c, 4, 4), size=(h, w), mode="nearest")
    return (up + hv.view(n, c, h, w)).round().clamp(0, 255).to(torch.uint8)


def test_a_decoder_that_ignores_z_scores_zero_for_z_and_one_for_v():
    data = ImageData(_images(), None, "stub")
    out = switch_frequencies(_Switcher(lambda v_image, z_image: v_image), data, pairs=20)  # type: ignore[arg-type]
    assert (out["low_follows_z"], out["colour_follows_z"], out["high_follows_v"]) == (0.0, 0.0, 1.0)
    assert out["pairs"] == 20 and out["saturated"] == 0.0
    SwitchFrequencies.from_dict(out, "test")  # the record of switch_frequencies.json


def test_a_decoder_that_moves_style_with_z_scores_one_for_both():
    data = ImageData(_images(), None, "stub")
    out = switch_frequencies(_Switcher(_style_of), data, pairs=20)  # type: ignore[arg-type]
    assert out["low_follows_z"] == 1.0 and out["colour_follows_z"] == 1.0 and out["high_follows_v"] == 1.0


def test_the_score_refuses_kinds_without_a_global_and_a_local_code_and_too_many_pairs():
    data = ImageData(_images(10), None, "stub")
    with pytest.raises(ConfigError, match="does not apply"):
        switch_frequencies(_Switcher(_style_of, capabilities=Capabilities()), data)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="at most 5 pairs"):
        switch_frequencies(_Switcher(_style_of), data, pairs=6)  # type: ignore[arg-type]
    assert switch_frequencies(_Switcher(_style_of), data)["pairs"] == 5  # type: ignore[arg-type]


def test_flowvae_switch_writes_the_score_without_labels(tiny_runs, tmp_path, capsys):
    run = tiny_runs["flowvae"]
    capsys.readouterr()
    code = main(["switch", str(run), "--pairs", "2", "--metric-pairs", "16", "--out", str(tmp_path / "s.png"),
                 "--device", "cpu", "--json", "-q"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    freq = out["frequencies"]
    assert freq["pairs"] == 16 and all(0.0 <= freq[k] <= 1.0 for k in ("low_follows_z", "colour_follows_z",
                                                                       "high_follows_v"))
    saved = json.loads((run / "switch_frequencies.json").read_text())
    assert saved == freq
    # the report shows it, escaped and in percent
    assert main(["report", str(run), "--out", str(tmp_path / "r.html"), "-q"]) == 0
    html = (tmp_path / "r.html").read_text()
    assert 'id="switch-frequencies"' in html and f"{100 * freq['high_follows_v']:.2f}%" in html


def test_training_refuses_a_switch_score_for_a_kind_without_a_global_code(tmp_path):
    from flowvae.training import train
    from helpers.tiny import tiny_config

    with pytest.raises(ConfigError, match=r"^train.switch_pairs applies to the kinds with a global and a local code; "
                                          r"a 'refined_glow' model has none"):
        train(tiny_config("refined_glow", "train.switch_pairs=4"), tmp_path / "r", progress=False)
    assert not (tmp_path / "r" / "metrics.jsonl").exists()
