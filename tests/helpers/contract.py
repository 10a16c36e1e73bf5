"""The command contract, shared by ``test_contract.py`` (every registered kind) and
``test_toy_kind.py`` (a kind defined in a test file): :func:`check_command` runs one command on a
run folder and checks that it applies (exit 0, one JSON object) where the kind's capabilities say
so and is refused in one line elsewhere; :func:`check_resume` resumes a run for one more step."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flowvae.cli.main import main
from flowvae.config import load_config, save_config

# The capability each command needs; commands not listed apply to every kind.
NEEDS = {"switch": "global_local", "interpolate": "global_local", "traverse": "vector_latent",
         "manipulate": "vector_latent",
         "disentangle": "vector_latent", "eval-recon-fid": "reconstruction", "sample-bf16": "bf16"}


def command_argv(command: str, run: Path, out: Path) -> list[str]:
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
        "manipulate": ["manipulate", r, "--attribute", "1", "--alpha", "0", "1", "--images", "0", "1",
                       "--direction-images", "60", "--out", str(out / "manipulate.png"), *cpu],
        "probe": ["probe", r, "--train-limit", "40", "--test-limit", "20", "--C", "0.01", *cpu],
        "fid": ["fid", r, "-n", "3", *cpu],
        "disentangle": ["disentangle", r, "--metrics", "mig", "sap", "--num-train", "300", "--num-test", "100", *cpu],
        "encode": ["encode", r, "--split", "test", "--limit", "8", "--out", str(out / "codes.npz"), *cpu],
    }[command]


def no_traceback(err: str) -> None:
    assert "Traceback" not in err, err


COMMANDS = ["eval", "eval-recon-fid", "sample", "sample-bf16", "check", "report", "switch", "interpolate", "traverse",
            "manipulate", "probe", "fid", "disentangle", "encode"]


def check_command(kind: str, command: str, run: Path, capabilities, dataset: str, out_dir: Path, capsys) -> None:
    """Run ``command`` on the ``kind`` run folder ``run`` and check the contract: exit 0 and one JSON
    object when ``capabilities`` say it applies, else exit 1 with one line "does not apply" naming
    the kind; never a traceback. ``dataset`` is the run's ``data.dataset``."""
    need = NEEDS.get(command)
    applies = need is None or getattr(capabilities, need)
    if command in ("fid", "eval-recon-fid") and applies:
        from flowvae.errors import FlowVAEError
        from flowvae.evaluation.fid import find_inception

        try:
            find_inception()
        except FlowVAEError as e:
            pytest.skip(f"no Inception network for FID: {e}")
    capsys.readouterr()
    code = main(command_argv(command, run, out_dir))
    out, err = capsys.readouterr()
    no_traceback(err)
    if command == "disentangle" and applies and dataset != "dsprites":
        # A vector latent of another image shape: refused in one line, not by the contract.
        assert code == 1 and len(err.strip().splitlines()) == 1 and "dSprites images are" in err, err
        return
    if applies:
        assert code == 0, f"{command} on a {kind!r} run exited {code}: {err}"
        assert isinstance(json.loads(out), dict)
    else:
        lines = err.strip().splitlines()
        assert code == 1 and len(lines) == 1 and "does not apply" in lines[0] and repr(kind) in lines[0], err


def check_resume(run: Path, capsys) -> None:
    """The trained run folder ``run`` (a copy) resumes from its checkpoint for one more step."""
    cfg = load_config(run / "config.yaml")
    steps = cfg.train.steps
    cfg.train.steps = steps + 1
    save_config(cfg, run / "config.yaml")
    capsys.readouterr()
    assert main(["train", "--run", str(run), "--resume", "--device", "cpu", "--json", "-q"]) == 0
    out, err = capsys.readouterr()
    no_traceback(err)
    assert json.loads(out)["step"] == steps + 1
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records][-2:] == [steps, steps + 1]
    assert (run / "model.safetensors").is_file()
