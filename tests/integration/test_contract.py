"""The model contract at the command line: every command that takes a run works on every model kind
where the kind's declared capabilities say it applies, and is refused in one line elsewhere.

For each kind in ``MODEL_KINDS`` x each command: exit 0 when the command applies; otherwise exit 1
with exactly one line on standard error, containing "does not apply"; never a traceback. Also:
``train`` + ``--resume`` of every kind, ``compare`` over every run, and ``flowvae presets``.
The runs come from ``tiny_runs`` (tests/conftest.py); every command runs on a handful of images.
What each kind declares about itself (its description, card tags, latent meanings, the spelling of
its fields in earlier releases) is checked here too. ``tests/integration/test_toy_kind.py`` runs the same
commands (:func:`helpers.contract.check_command`) on a kind defined in the test alone.
"""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from flowvae.cli.main import main
from flowvae.models import MODEL_KINDS
from flowvae.presets import PRESETS
from helpers.contract import COMMANDS, check_command, check_resume

pytestmark = pytest.mark.usefixtures("single_thread")

KINDS = sorted(MODEL_KINDS)

def test_every_registered_kind_has_a_tiny_recipe(tiny_runs):
    missing = sorted(set(MODEL_KINDS) - set(tiny_runs.recipes))
    assert not missing, f"model kinds without a tiny recipe in tests/helpers/tiny.py RECIPES: {missing}"


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("kind", KINDS)
def test_command_applies_or_is_refused_in_one_line(kind, command, tiny_runs, tmp_path, capsys):
    check_command(kind, command, tiny_runs[kind], tiny_runs.capabilities(kind), tiny_runs.dataset(kind), tmp_path,
                  capsys)


@pytest.mark.parametrize("kind", KINDS)
def test_train_then_resume_one_more_step(kind, tiny_runs, tmp_path, capsys):
    """The tiny run trained 2 steps; a copy of it with train.steps raised by 1 resumes from its checkpoint."""
    run = tmp_path / kind
    shutil.copytree(tiny_runs[kind], run)
    check_resume(run, capsys)


@pytest.mark.parametrize("kind", KINDS)
def test_polyak_averaging_reaches_the_saved_weights_of_every_kind(kind, tiny_runs, tmp_path, capsys):
    """train.ema_decay turned on at a resume (--allow-changes) for two more steps: the run saves,
    and loads from its checkpoint, the averaged state of every kind (BatchNorm statistics, frozen
    stage-1 weights and integer buffers included)."""
    from flowvae.api import load_run
    from flowvae.runs.checkpoints import load_latest_checkpoint

    run = tmp_path / kind
    shutil.copytree(tiny_runs[kind], run)
    (run / "model.safetensors").unlink()
    steps = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["step"]
    capsys.readouterr()
    assert main(["train", "--run", str(run), "--resume", "--allow-changes", "--device", "cpu", "-q", "--set",
                 f"train.steps={steps + 2}", "train.ema_decay=0.5"]) == 0
    _, state = load_latest_checkpoint(run / "checkpoints")
    assert state["ema"]["updates"] == 2
    saved, latest = load_run(run).state_dict(), load_run(run, checkpoint="latest").state_dict()
    for k, v in saved.items():
        assert torch.equal(v, state["ema"]["weights"][k]) and torch.equal(latest[k], v), k
    assert any(not torch.equal(v, state["model"][k]) for k, v in saved.items())


# Kinds whose posterior has a code "z" with no prior of its own; a new one must be listed here on purpose.
Z_WITHOUT_OWN_PRIOR = {"ugvae": "p(z) is a mixture chosen by the group's global code beta",
                       "multistage": "z is stage 1's factors; stage 2 conditions on their mean (its KL is 0)"}


@pytest.mark.parametrize("kind", KINDS)
def test_the_kl_of_z_is_reported_for_every_kind_whose_z_has_a_prior(kind, tiny_runs):
    from flowvae.api import load_run
    from flowvae.errors import ConfigError
    from flowvae.evaluation.representations import code_kl

    model = load_run(tiny_runs[kind])
    c, s = model.cfg.in_channels, model.cfg.image_size
    x = torch.randint(0, 256, (3, c, s, s), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    try:
        has_z = "z" in model.posterior_moments(x)
    except ConfigError:
        has_z = False
    kl = code_kl(model, x)
    if model.capabilities.code_prior:
        assert has_z
        mu, _ = model.posterior_moments(x)["z"]
        log_p = model.code_log_prior(mu)
        assert log_p.shape == (3,) and bool(torch.isfinite(log_p).all())
        assert kl is not None and math.isfinite(kl)
    else:
        assert kl is None
        assert not has_z or kind in Z_WITHOUT_OWN_PRIOR, f"{kind}'s posterior has z: declare code_prior or list it"
        with pytest.raises(ConfigError, match="does not apply"):
            model.code_log_prior(torch.zeros(3, 2))


def test_compare_puts_every_kind_side_by_side(tiny_runs, tmp_path, capsys):
    runs = tiny_runs.available()
    out = tmp_path / "compare.html"
    capsys.readouterr()
    assert main(["compare", *map(str, runs.values()), "--out", str(out), "--json", "-q"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["file"] == str(out) and len(res["runs"]) == len(runs)
    html = out.read_text()
    assert all(kind in html for kind in runs)


def test_presets_lists_every_preset_with_its_parameter_count(capsys, monkeypatch):
    assert main(["presets", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert list(rows) == list(PRESETS)
    for name, row in rows.items():
        assert row["parameters"] > 0, name
        glow = row["refined_glow_parameters"]
        if row["kind"] == "flowvae":  # the paper's presets: the refined Glow (no z) is smaller
            assert 0 < glow < row["parameters"], name
        else:
            assert glow is None, name
    # The table prints the same rows; counting every preset's parameters again would double the time.
    monkeypatch.setattr("flowvae.cli.listing.preset_rows", lambda: rows)
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[:3] == ["preset", "kind", "parameters"] and len(lines) == len(PRESETS) + 1
    for line, (name, row) in zip(lines[1:], rows.items()):
        assert line.split()[:3] == [name, row["kind"], f"{row['parameters']:,d}"]


# ----------------------------------------------------------------------------------------------
# what each kind declares about itself

# What the model card and ``flowvae encode`` said of each kind while they kept their own tables
# (hub._KIND_TEXT, hub._FLOWS/_VAES, encoding._MEANINGS); the kinds now say it themselves.
EARLIER_TEXT = {
    "flowvae": "the model of Ma et al. (ICLR 2021): a VAE whose decoder is a refined-Glow flow conditioned "
               "on the global code z in every coupling, so that an image splits into a global code z and a "
               "local code v",
    "z_prior": "the paper's baseline with z in the prior of v only (Table 3): a refined Glow whose local code v "
               "has a Gaussian set by the global code z",
    "refined_glow": "the paper's refined Glow alone (§3.1), without a global code",
    "glow": "the original Glow (Kingma & Dhariwal, 2018)",
    "ugvae": "the UG-VAE (Peis et al., 2020): a local code per image and a global code per group of images",
    "vae": "a Gaussian VAE with a discretised logistic decoder",
    "btcvae": "a β-TCVAE (Chen et al., 2018), whose objective penalises the total correlation of its factors",
    "multistage": "a multi-stage model: a frozen β-TCVAE (stage 1) and a Glow conditioned on its factors",
}
EARLIER_FLOWS = {"flowvae", "z_prior", "refined_glow", "glow", "multistage"}
EARLIER_VAES = {"flowvae", "z_prior", "ugvae", "vae", "btcvae"}
EARLIER_MEANINGS = {
    "flowvae": {"z": "global code z: q(z|x) of the compression encoder (eq. 5)"},
    "z_prior": {"z": "global code z: q(z|x) of the compression encoder"},
    "multistage": {"z": "factors c: stage 1's (beta-TCVAE) q(c|x), the flow's condition"},
    "vae": {"z": "latent z: q(z|x)"},
    "btcvae": {"z": "factors z: q(z|x)"},
    "ugvae": {"z": "local code z_i: q(z_i|x_i)",
              "beta": "global code beta: q(beta|{x_i}), each image a group of its own"},
}


def _default_model(kind: str):
    """The model of ``kind``'s first preset (else the ``digits`` preset's with that kind), built on the
    meta device (no weights are allocated)."""
    from flowvae.models import create_model
    from flowvae.presets import get_preset

    models = [get_preset(name).model for name in PRESETS]
    cfg = next((m for m in models if m.kind == kind), None) or get_preset("digits").model.replace(kind=kind)
    with torch.device("meta"):
        return create_model(cfg)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_describes_itself(kind):
    from flowvae.models import model_class

    cls = model_class(kind)
    assert cls.kinds.get(kind), f"{cls.__name__} has no description of {kind!r} in its kinds"
    model = _default_model(kind)
    assert type(model) is cls and model.description == cls.kinds[kind]
    assert set(model.latent_meanings) <= {"z", "beta"}, "a latent meaning names no latent of posterior_moments"
    if kind in EARLIER_TEXT:  # the kinds of this release say what was said of them before
        assert model.description == EARLIER_TEXT[kind]
        expected = [kind.replace("_", "-")] + (["normalizing-flows"] if kind in EARLIER_FLOWS else []) + (
            ["vae"] if kind in EARLIER_VAES else [])
        assert model.card_tags == expected
        assert model.latent_meanings == EARLIER_MEANINGS.get(kind, {})


def test_the_flow_kinds_are_invertible_decoders_and_the_others_are_not():
    from flowvae.models import FlowDecoderModel, InvertibleDecoder

    for kind in KINDS:
        model = _default_model(kind)
        flow = model.capabilities.exact_codes
        assert isinstance(model, FlowDecoderModel) == flow == isinstance(model, InvertibleDecoder), kind


def test_the_kinds_name_their_fields_of_earlier_releases():
    """The unknown-field message and the legacy sections ask the kinds' config classes."""
    from flowvae.config import apply_overrides, config_from_dict
    from flowvae.errors import ConfigError
    from flowvae.models import config_classes
    from flowvae.presets import get_preset

    renamed = {kind: cls.renamed for kind, cls in config_classes().items() if cls.renamed}
    assert set(renamed) == {"ugvae", "btcvae", "multistage"}
    with pytest.raises(ConfigError, match="it is model.d_global now"):
        config_from_dict({"model": {"kind": "ugvae", "d_beta": 3}})
    with pytest.raises(ConfigError, match="it is model.stage1.n_factors now"):
        apply_overrides(get_preset("dsprites-multistage"), ["model.d_z=3"])
