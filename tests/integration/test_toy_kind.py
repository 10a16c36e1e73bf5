"""Adding a model kind takes its module, its preset and its test recipe, and nothing in ``src/``: a toy
kind defined in this file alone is registered, trained for 2 steps on the digits through
``flowvae.train``, and run through every command of the contract test (``tests/integration/test_contract.py``),
then unregistered.

The toy is a linear Gaussian VAE over 8-bit pixels: ``q(z|x) = N(W x, diag exp(s))``,
``p(z) = N(0, I)``, and independent discretised logistics ``p(x|z)`` whose means and log-scales are
linear in z. It declares what a kind declares (its description, the meaning of its latent, its
capabilities, how earlier files spelled its fields) and implements the methods every kind has.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest
import torch
from torch import Tensor, nn

import flowvae
from flowvae.config import config_from_dict, load_config, migrate
from flowvae.errors import ConfigError
from flowvae.maths import discretized_logistic_logprob, gaussian_kl, gaussian_logprob, sharded_noise, to_unit_range
from flowvae.models import MODEL_KINDS, Capabilities, GenerativeModel, ModelSettings
from flowvae.models.base import check_count, check_temperature, legacy_shape, register
from flowvae.presets import resolve
from flowvae.settings import setting
from helpers.contract import COMMANDS, check_command, check_resume
from helpers.tiny import TRAIN, one_thread

pytestmark = pytest.mark.usefixtures("single_thread")

KIND = "toy"
CAPABILITIES = Capabilities(code_prior=True)  # a vector latent with its own prior, nothing else


@dataclass
class ToyConfig(ModelSettings):
    """The toy's ``model:`` section."""

    kind: Literal["toy"] = "toy"
    in_channels: int = setting(1, ge=1, le=4)
    image_size: int = setting(8, ge=2, le=64)
    d_z: int = setting(2, ge=1, le=64, help="dimension of the latent z")

    renamed = {"width": "d_z"}          # an earlier release called it so ...
    legacy_sections = ("toy",)          # ... and kept it in a section of its own

    @classmethod
    def migrate(cls, model: Mapping[str, Any], sections: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        old = sections.get("toy", {})
        return {"kind": "toy", **legacy_shape(model), **({"d_z": old["width"]} if "width" in old else {})}


class Toy(GenerativeModel):
    """A linear Gaussian VAE with a discretised logistic likelihood (module docstring)."""

    config_class: ClassVar[type[ModelSettings]] = ToyConfig
    kinds: ClassVar[dict[str, str]] = {KIND: "a toy linear VAE defined in the tests"}
    cfg: ToyConfig

    def __init__(self, cfg: ToyConfig, n_bits: int = 8):
        super().__init__(cfg, n_bits)
        if n_bits != 8:
            raise ConfigError(f"the toy models 8-bit pixels; got data.n_bits={n_bits}")
        self.encoder = nn.Linear(self.dim, 2 * cfg.d_z)
        self.decoder = nn.Linear(cfg.d_z, 2 * self.dim)

    @property
    def capabilities(self) -> Capabilities:
        return CAPABILITIES

    @property
    def latent_meanings(self) -> dict[str, str]:
        return {"z": "latent z: q(z|x) of a linear encoder"}

    @property
    def kl_term(self) -> bool:
        return True

    def _q(self, x: Tensor) -> tuple[Tensor, Tensor]:
        self.check_input(x)
        mu, logvar = self.encoder(to_unit_range(x.to(self.dtype)).flatten(1)).chunk(2, -1)
        return mu, logvar.clamp(-10, 10)

    def _log_px(self, x: Tensor, z: Tensor) -> Tensor:
        mean, log_scale = self.decoder(z).view(-1, 2, *x.shape[1:]).unbind(1)
        return discretized_logistic_logprob(x.to(z.dtype), mean, log_scale.clamp(min=-7)).flatten(1).sum(1)

    def loss(self, x: Tensor, generator: torch.Generator | None = None, shard: tuple[int, int] | None = None, *,
             kl_weight: float | Tensor = 1.0, **batch: Any) -> tuple[Tensor, dict[str, Tensor]]:
        mu, logvar = self._q(x)
        z = mu + torch.exp(0.5 * logvar) * sharded_noise(torch.randn, tuple(mu.shape), mu, generator, shard)
        recon, kl = -self._log_px(x, z).mean(), gaussian_kl(mu, logvar).mean()
        loss = (recon + kl_weight * kl) / (self.dim * math.log(2))
        return loss, {"bpd": loss.detach(), "kl": kl.detach()}

    @torch.no_grad()
    def bits_per_dim(self, x: Tensor, k: int = 1, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        check_count("k", k)
        mu, logvar = self._q(x)
        log_w, kls = [], []
        for _ in range(k):
            z = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=generator, device=mu.device)
            zeros = torch.zeros_like(z)
            log_w.append(self._log_px(x, z) + gaussian_logprob(z, zeros, zeros) - gaussian_logprob(z, mu, logvar))
            kls.append(gaussian_kl(mu, logvar))
        w, scale = torch.stack(log_w), self.dim * math.log(2)
        return {"elbo_bpd": -w.mean(0) / scale, "iw_bpd": -(torch.logsumexp(w, 0) - math.log(k)) / scale,
                "kl": torch.stack(kls).mean(0)}

    @torch.no_grad()
    def sample(self, n: int, temperature: float = 1.0, *, global_temperature: float = 1.0,
               generator: torch.Generator | None = None) -> Tensor:
        check_count("n", n)
        check_temperature(temperature)
        check_temperature(global_temperature, "global_temperature")
        if global_temperature != 1.0:
            raise ConfigError("a 'toy' model has no global code; leave the global temperature at 1")
        z = torch.randn(n, self.cfg.d_z, generator=generator, device=self.device) * temperature
        mean = self.decoder(z).view(n, 2, self.cfg.in_channels, self.cfg.image_size, self.cfg.image_size)[:, 0]
        return ((mean + 1) * 127.5).round().clamp(0, 255).to(torch.uint8)

    @torch.no_grad()
    def representations(self, x: Tensor) -> dict[str, Tensor]:
        return {"z": self._q(x)[0]}

    @torch.no_grad()
    def posterior_moments(self, x: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        return {"z": self._q(x)}


@pytest.fixture(scope="module")
def toy_kind() -> Iterator[type[Toy]]:
    """The toy registered for this module's tests, and unregistered after them."""
    assert KIND not in MODEL_KINDS
    register(Toy)
    try:
        yield Toy
    finally:
        del MODEL_KINDS[KIND]


@pytest.fixture(scope="module")
def toy_run(toy_kind, tmp_path_factory) -> Path:
    """A toy run trained 2 steps on the digits, with the settings of every tiny run (conftest.TRAIN)."""
    cfg = resolve("digits", [*TRAIN, f"model.kind={KIND}", "data.test_limit=64"])
    assert isinstance(cfg.model, ToyConfig) and (cfg.model.in_channels, cfg.model.image_size) == (1, 8)
    run = tmp_path_factory.mktemp("toy") / "run"
    with one_thread():
        flowvae.train(cfg, run, progress=False)
    return run


def test_the_toy_is_a_kind_while_registered(toy_kind):
    model = flowvae.create_model(ToyConfig())
    assert isinstance(model, Toy) and model.kind == KIND
    assert model.description == "a toy linear VAE defined in the tests"
    assert model.card_tags == ["toy", "vae"]  # no exact codes, a KL term
    assert model.parameter_count() == 64 * 4 + 4 + 2 * 64 * 2 + 2 * 64


def test_the_config_layer_asks_the_kind_for_its_earlier_spelling(toy_kind):
    old = {"model": {"kind": KIND, "in_channels": 1, "image_size": 8, "d_z": 99}, "toy": {"width": 3}}
    assert migrate(old) == {"model": {"kind": KIND, "in_channels": 1, "image_size": 8, "d_z": 3}}
    assert config_from_dict(old).model == ToyConfig(d_z=3)
    with pytest.raises(ConfigError, match="it is model.d_z now"):
        config_from_dict({"model": {"kind": KIND, "width": 3}})


def test_the_toy_trains_through_flowvae_train(toy_run):
    assert load_config(toy_run / "config.yaml").model == ToyConfig()
    model = flowvae.load_run(toy_run)
    assert isinstance(model, Toy) and (toy_run / "model.safetensors").is_file()


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_applies_to_the_toy_or_refuses_it(command, toy_run, tmp_path, capsys):
    check_command(KIND, command, toy_run, CAPABILITIES, "digits", tmp_path, capsys)


def test_the_toy_resumes(toy_run, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(toy_run, run)
    check_resume(run, capsys)
