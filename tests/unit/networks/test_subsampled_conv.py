"""The encoder's strided 1x1 shortcut (:class:`SubsampledPointwiseConv`): the function and the
parameters of ``nn.Conv2d(C_in, C_out, 1, stride=s, bias=False)``, and a channels-last backward pass
that does not run torch's strided pointwise kernel, whose backward corrupts the heap on CPUs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch
from torch import nn

from flowvae.networks.encoder import SubsampledPointwiseConv


@pytest.mark.parametrize(("cin", "cout", "stride", "size"), [(3, 8, 2, 7), (8, 8, 2, 8), (4, 6, 1, 5), (2, 4, 3, 10)])
def test_it_is_a_strided_pointwise_convolution(cin, cout, stride, size):
    torch.manual_seed(0)
    ours = SubsampledPointwiseConv(cin, cout, stride).double()
    ref = nn.Conv2d(cin, cout, 1, stride=stride, bias=False).double()
    ref.load_state_dict(ours.state_dict())  # the same parameter, under the same name
    x = torch.randn(2, cin, size, size, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    y, y_ref = ours(x), ref(x_ref)
    assert y.shape == y_ref.shape and torch.allclose(y, y_ref, atol=1e-12)
    g = torch.randn_like(y)
    y.backward(g)
    y_ref.backward(g)
    assert x.grad is not None and x_ref.grad is not None and ours.weight.grad is not None
    assert torch.allclose(x.grad, x_ref.grad, atol=1e-12)
    assert torch.allclose(ours.weight.grad, ref.weight.grad, atol=1e-12)


_CHANNELS_LAST_BACKWARD = """
import torch
from flowvae.networks.encoder import SubsampledPointwiseConv
conv = SubsampledPointwiseConv(8, 8, 2).to(memory_format=torch.channels_last)
x = torch.rand(8, 8, 64, 64).contiguous(memory_format=torch.channels_last).requires_grad_()
conv(x).sum().backward()
print(float(x.grad.abs().sum()))
"""


def test_a_channels_last_backward_at_64_pixels_completes():
    # In a process of its own: torch's strided kernel aborts the process there (torch 2.4 to 2.13).
    out = subprocess.run([sys.executable, "-c", _CHANNELS_LAST_BACKWARD], capture_output=True, text=True,
                         timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    assert float(out.stdout) > 0
