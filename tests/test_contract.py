"""The model contract at the command line: every command that takes a run works on every model kind
where the kind's declared capabilities say it applies, and is refused in one line elsewhere.

For each kind in ``MODEL_KINDS`` x each command: exit 0 when the command applies; otherwise exit 1
with exactly one line on standard error, containing "does not apply"; never a traceback. Also:
``train`` + ``--resume`` of every kind, ``compare`` over every run, and ``flowvae presets``.
The runs come from ``tiny_runs`` (tests/conftest.py); every command runs on a handful of images.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from flowvae.cli.main import main
from flowvae.config import load_config, save_config
from flowvae.models import MODEL_KINDS
from flowvae.presets import PRESETS

pytestmark = pytest.mark.usefixtures("single_thread")

KINDS = sorted(MODEL_KINDS)

# The capability each command needs; commands not listed apply to every kind.
NEEDS = {"switch": "global_local", "interpolate": "global_local", "traverse": "vector_latent",
         "disentangle": "vector_latent", "eval-recon-fid": "reconstruction", "sample-bf16": "bf16"}


def _argv(command: str, run: Path, out: Path) -> list[str]:
    """A fast invocation of ``command`` on ``run`` (a few images), files under ``out``."""
    r, cpu = str(run), ["--device", "cpu", "--json", "-q"]
    return {
        "eval": ["eval", r, "-k", "2", "--limit", "8", *cpu],
        "eval-recon-fid": ["eval", r, "-k", "1", "--limit", "4", "--recon-fid", *cpu],
        "sample": ["sample", r, "-n", "4", "-t", "0.5", "1.0", "--out", str(out / "samples"), *cpu],
        "sample-bf16": ["sample", r, "-n", "4", "-t", "0.7", "--precision", "bf16", "--out", str(out / "samples"), *cpu],
        "check": ["check", r, "--limit", "8", *cpu],
        "report": ["report", r, "--out", str(out / "report.html"), "--json", "-q"],
        # the switch metric (a pixel classifier) is tested per kind in test_switch_metric.py; here it
        # would train a classifier of 64x64 dSprites pixels for minutes
        "switch": ["switch", r, "--pairs", "2", "--no-metric", "--out", str(out / "switch.png"), *cpu],
        "interpolate": ["interpolate", r, "--rows", "2", "--cols", "3", "--out", str(out / "interp.png"), *cpu],
        "traverse": ["traverse", r, "--steps", "3", "--dims", "0", "1", "--out", str(out / "traverse.png"), *cpu],
        "probe": ["probe", r, "--train-limit", "40", "--test-limit", "20", "--C", "0.01", *cpu],
        "fid": ["fid", r, "-n", "3", *cpu],
        "disentangle": ["disentangle", r, "--metrics", "mig", "sap", "--num-train", "300", "--num-test", "100", *cpu],
        "encode": ["encode", r, "--split", "test", "--limit", "8", "--out", str(out / "codes.npz"), *cpu],
    }[command]


def _no_traceback(err: str) -> None:
    assert "Traceback" not in err, err


def test_every_registered_kind_has_a_tiny_recipe(tiny_runs):
    missing = sorted(set(MODEL_KINDS) - set(tiny_runs.recipes))
    assert not missing, f"model kinds without a tiny recipe in tests/conftest.py RECIPES: {missing}"


@pytest.mark.parametrize("command", ["eval", "eval-recon-fid", "sample", "sample-bf16", "check", "report", "switch",
                                     "interpolate", "traverse", "probe", "fid", "disentangle", "encode"])
@pytest.mark.parametrize("kind", KINDS)
def test_command_applies_or_is_refused_in_one_line(kind, command, tiny_runs, tmp_path, capsys):
    need = NEEDS.get(command)
    applies = need is None or getattr(tiny_runs.capabilities(kind), need)
    if command in ("fid", "eval-recon-fid") and applies:
        from flowvae.errors import FlowVAEError
        from flowvae.evaluation.fid import find_inception

        try:
            find_inception()
        except FlowVAEError as e:
            pytest.skip(f"no Inception network for FID: {e}")
    run = tiny_runs[kind]
    capsys.readouterr()
    code = main(_argv(command, run, tmp_path))
    out, err = capsys.readouterr()
    _no_traceback(err)
    if command == "disentangle" and applies and tiny_runs.dataset(kind) != "dsprites":
        # A vector latent of another image shape: refused in one line, not by the contract.
        assert code == 1 and len(err.strip().splitlines()) == 1 and "dSprites images are" in err, err
        return
    if applies:
        assert code == 0, f"{command} on a {kind!r} run exited {code}: {err}"
        assert isinstance(json.loads(out), dict)
    else:
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1 and "does not apply" in lines[0] and repr(kind) in lines[0], err


@pytest.mark.parametrize("kind", KINDS)
def test_train_then_resume_one_more_step(kind, tiny_runs, tmp_path, capsys):
    """The tiny run trained 2 steps; a copy of it with train.steps raised by 1 resumes from its checkpoint."""
    run = tmp_path / kind
    shutil.copytree(tiny_runs[kind], run)
    cfg = load_config(run / "config.yaml")
    steps = cfg.train.steps
    cfg.train.steps = steps + 1
    save_config(cfg, run / "config.yaml")
    capsys.readouterr()
    assert main(["train", "--run", str(run), "--resume", "--device", "cpu", "--json", "-q"]) == 0
    out, err = capsys.readouterr()
    _no_traceback(err)
    assert json.loads(out)["step"] == steps + 1
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records][-2:] == [steps, steps + 1]
    assert (run / "model.safetensors").is_file()


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
