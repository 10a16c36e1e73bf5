"""Tiny model recipes and trained run folders shared by the tests (:class:`TinyRuns`, the
``tiny_runs`` fixture of ``tests/conftest.py``), and helpers for tiny models: :func:`one_thread`,
:func:`tiny_config`, :func:`run_processes`.

The recipes keep every architecture minimal and train 2 steps: all kinds together train in well
under a minute on 2 CPU cores. They are recipes for the command contract (every command runs on
every kind), not for good models.

Data: the 8x8 scikit-learn digits (always available) for the flow kinds, the UG-VAE and the VAE;
dSprites from ``shared_data_dir() / "dsprites"`` for the beta-TCVAE (which needs 28, 32 or 64 px
images) and the multi-stage model (whose stage 1 is the beta-TCVAE run), so both can also be
scored by ``flowvae disentangle``. A kind whose data is absent is skipped with the reason.

A kind registered in :data:`flowvae.models.MODEL_KINDS` without a recipe here fails the tests
that ask for it, loudly: add its recipe to :data:`RECIPES`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

from flowvae.data import shared_data_dir
from flowvae.data.dsprites import DSPRITES_FILES
from flowvae.models import MODEL_KINDS, Capabilities

# Every run: 2 steps of batch 16, no periodic evaluation or checkpoint (one at the end), one
# sample grid at the end, 16 test images in the final evaluation.
TRAIN = ("train.steps=2", "train.batch_size=16", "train.init_batch_size=32", "train.eval_images=16",
         "train.eval_every=1000", "train.checkpoint_every=1000", "train.sample_temperatures=[1.0]",
         "train.warmup_steps=0")

# The refined-Glow family at its smallest: one coupling step per level, 4-8 channels, d_z = 4.
FLOW = ("model.steps=[0,[1,1],1]", "model.hidden=[4,8,8]", "model.encoder_widths=[8]", "model.d_z=4",
        "model.prior_steps=1", "model.prior_hidden=8", "data.test_limit=64")

DSPRITES = "dsprites"


@dataclass(frozen=True)
class Recipe:
    """How to train the tiny run of one kind.

    Attributes:
        preset: the preset the run starts from.
        overrides: ``section.field=value`` strings applied after :data:`TRAIN`.
        shared: the folder under ``shared_data_dir()`` the data comes from (``data.root``), or ``None``.
        stage1: the kind whose run becomes ``model.stage1_run`` (the multi-stage model's stage 1).
    """

    preset: str
    overrides: tuple[str, ...] = ()
    shared: str | None = None
    stage1: str | None = None

    def missing(self) -> str | None:
        """Why this recipe cannot run here (its shared data is absent), else ``None``."""
        if self.shared == DSPRITES:
            path = shared_data_dir() / DSPRITES / DSPRITES_FILES["grid"]
            if not path.is_file():
                return f"dSprites grid file not found at {path} (the shared data folder is absent)"
        return None

    def all_overrides(self) -> list[str]:
        """:data:`TRAIN`, the data root (absolute) and the recipe's own overrides."""
        root = [f"data.root={(shared_data_dir() / self.shared).resolve()}"] if self.shared else []
        return [*TRAIN, *root, *self.overrides]


RECIPES: dict[str, Recipe] = {
    "flowvae": Recipe("digits", FLOW),
    "z_prior": Recipe("digits", (*FLOW, "model.kind=z_prior")),
    "refined_glow": Recipe("digits", (*FLOW, "model.kind=refined_glow")),
    "glow": Recipe("digits", (*FLOW, "model.kind=glow")),
    "ugvae": Recipe("digits", ("model.kind=ugvae", "model.d_local=3", "model.d_global=2", "model.n_components=3",
                               "model.hidden=[16]", "model.encoder=mlp", "model.decoder=mlp", "model.group_by=label",
                               "model.groups_per_batch=4", "data.test_limit=64")),
    "vae": Recipe("digits-vae", ("model.d_z=3", "model.conv_channels=[4]", "model.hidden=16", "data.test_limit=64")),
    "btcvae": Recipe("dsprites-btcvae", ("model.n_factors=3", "model.conv_channels=[4,4,4,4]", "model.hidden=16",
                                         "data.train_limit=256", "data.test_limit=64"), shared=DSPRITES),
    "multistage": Recipe("dsprites-multistage", ("model.steps=[0,[1,1],1]", "model.hidden=[4,8,8]",
                                                 "model.dequantization=uniform", "data.train_limit=256",
                                                 "data.test_limit=64"), shared=DSPRITES, stage1="btcvae"),
}


@contextmanager
def one_thread() -> Iterator[None]:
    """Run tiny models on one torch thread, restoring the thread count afterwards: they gain
    nothing from more, and on a busy 2-core machine every parallel op then waits for a second
    thread to be scheduled (3-10x slower here)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


class TinyRuns:
    """Tiny trained run folders by model kind, trained on first use (module docstring)."""

    def __init__(self, root: Path):
        self.root = root
        self._runs: dict[str, Path] = {}
        self._failed: dict[str, str] = {}
        self._caps: dict[str, Capabilities] = {}

    @property
    def recipes(self) -> dict[str, Recipe]:
        """The recipes by kind (:data:`RECIPES`)."""
        return RECIPES

    @property
    def kinds(self) -> list[str]:
        """Every registered model kind, sorted."""
        return sorted(MODEL_KINDS)

    def recipe(self, kind: str) -> Recipe:
        """The recipe of ``kind``; fails the test when a registered kind has none."""
        if kind not in RECIPES:
            pytest.fail(f"model kind {kind!r} is registered in MODEL_KINDS but tests/helpers/tiny.py has no "
                        f"tiny recipe for it; add one to RECIPES", pytrace=False)
        return RECIPES[kind]

    def overrides(self, kind: str) -> list[str]:
        """Every override of ``kind``'s run (to train a variant of it through the command line)."""
        r = self.recipe(kind)
        return [*r.all_overrides(), *([f"model.stage1_run={self[r.stage1]}"] if r.stage1 else [])]

    def __getitem__(self, kind: str) -> Path:
        """The run folder of ``kind``, trained now if it is not yet; skips when its data is absent."""
        if kind in self._runs:
            return self._runs[kind]
        if kind in self._failed:  # do not pay for a failing training once per test
            pytest.fail(self._failed[kind], pytrace=False)
        recipe = self.recipe(kind)
        why = recipe.missing()
        if why:
            pytest.skip(f"no tiny {kind!r} run: {why}")
        from flowvae.presets import resolve
        from flowvae.training import train

        run = self.root / kind
        try:
            cfg = resolve(recipe.preset, self.overrides(kind))
            assert cfg.model.kind == kind, f"the recipe of {kind!r} builds a {cfg.model.kind!r} model"
            with one_thread():
                train(cfg, run, progress=False)
        except Exception as e:
            self._failed[kind] = f"training the tiny {kind!r} run failed: {type(e).__name__}: {e}"
            raise
        self._runs[kind] = run
        return run

    def capabilities(self, kind: str) -> Capabilities:
        """The capabilities of ``kind``'s trained model."""
        if kind not in self._caps:
            from flowvae.api import load_run

            self._caps[kind] = load_run(self[kind]).capabilities
        return self._caps[kind]

    def dataset(self, kind: str) -> str:
        """``data.dataset`` of ``kind``'s run."""
        from flowvae.config import load_config

        return load_config(self[kind] / "config.yaml").data.dataset

    def available(self) -> dict[str, Path]:
        """The runs of every kind whose data is present (training those not trained yet)."""
        return {k: self[k] for k in self.kinds if k in RECIPES and not RECIPES[k].missing()}


def run_processes(argv: list[str], timeout: float) -> str:
    """Run ``argv`` (e.g. ``torchrun`` and its workers) in a session of its own with one torch thread
    and no inherited ``WORLD_SIZE``; return its standard output. On a non-zero exit, or at
    ``timeout`` seconds (a rank left waiting), the test fails with the end of the output. Every
    process of the session is killed then, so no orphaned worker outlives the test."""
    import os
    import signal
    import subprocess

    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        pytest.fail(f"{' '.join(argv[:6])} ... did not finish in {timeout:.0f} s; its output ended:\n{out[-4000:]}")
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(argv[:6])} ... exited with {proc.returncode}; its output ended:\n{out[-4000:]}")
    return out


def tiny_config(kind: str, *extra: str) -> Any:
    """The :class:`~flowvae.config.Config` of ``kind``'s tiny recipe (:data:`RECIPES`: its preset,
    :data:`TRAIN`, its data root and its overrides) with ``extra`` overrides after them. Not for the
    multi-stage kind, whose stage 1 is a trained run (use ``tiny_runs.overrides``)."""
    from flowvae.presets import resolve

    recipe = RECIPES[kind]
    if recipe.stage1:
        raise ValueError(f"the {kind!r} recipe needs a trained stage 1: use tiny_runs.overrides({kind!r})")
    return resolve(recipe.preset, [*recipe.all_overrides(), *extra])
