"""Evaluation runs convolutions in channels-last on the CPU (``flowvae.evaluation._layout``): the
figures must be those of the default layout, for every kind, and the model must come back as it was."""

from __future__ import annotations

import pytest
import torch

from flowvae.api import load_run
from flowvae.evaluation._layout import inference_layout, to_layout
from flowvae.evaluation.bpd import evaluate_bpd
from flowvae.models import MODEL_KINDS
from flowvae.runs.data import load_data

pytestmark = pytest.mark.usefixtures("single_thread")


def _layouts(model: torch.nn.Module) -> list[bool]:
    return [p.is_contiguous() for p in model.parameters() if p.dim() == 4]


@pytest.mark.parametrize("kind", sorted(MODEL_KINDS))
def test_channels_last_evaluation_gives_the_same_figures(kind, tiny_runs):
    model = load_run(tiny_runs[kind], "cpu")
    images = load_data(model.config, "test").images[:12]
    before = _layouts(model)
    plain = evaluate_bpd(model, images, k=2, batch_size=8, seed=3, channels_last=False)
    fast = evaluate_bpd(model, images, k=2, batch_size=8, seed=3)
    assert _layouts(model) == before
    for key in ("elbo_bpd", "iw_bpd", "kl"):
        assert fast[key] == pytest.approx(plain[key], rel=1e-6, abs=1e-7), key


def test_layout_is_restored_after_an_exception_and_kept_when_already_channels_last():
    conv = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
    with pytest.raises(RuntimeError, match="boom"):
        with inference_layout(conv) as fmt:
            assert fmt is torch.channels_last
            assert conv[0].weight.is_contiguous(memory_format=torch.channels_last) and not conv[0].weight.is_contiguous()
            raise RuntimeError("boom")
    assert conv[0].weight.is_contiguous()
    conv.to(memory_format=torch.channels_last)
    with inference_layout(conv):
        pass
    assert not conv[0].weight.is_contiguous()  # a model trained channels-last stays so
    with inference_layout(torch.nn.Linear(2, 2)) as fmt:  # nothing to convert
        assert fmt is torch.contiguous_format
    x = torch.zeros(2, 3, 5, 5)
    assert to_layout(x, torch.channels_last).is_contiguous(memory_format=torch.channels_last)
    assert to_layout(torch.zeros(2, 3), torch.channels_last).is_contiguous()
