"""``flowvae import-wolf``: a model of the authors' implementation becomes a run folder that computes
their function.

A fake authors' model folder is built from the golden reduced CIFAR-10 model
(``../shared/golden/wolf-cifar-reduced``: their state dict and config.json, their outputs on 8 test
images with the noise they used): as ``config.json`` + ``model.pt`` (``{"core": state}``, what
``WolfModel.save`` writes) and as a training checkpoint ``checkpoint*.tar`` (``{"model": ...}`` with
DistributedDataParallel's ``core.module.`` prefix and a numpy scalar, as their train.py writes).
Checked: the structural tensor map equals the golden table; bits/dim with their noise equal theirs
to 1e-5; the uint8 round trip is exact; ``eval`` and ``check`` run; the encoder-input option reaches
every place the encoder sees pixels; bad inputs are refused in one line naming what is wrong.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from flowvae.cli.main import main
from helpers import REPO

GOLDEN = REPO.parent / "shared" / "golden" / "wolf-cifar-reduced"
CIFAR_JPEG = GOLDEN.parents[1] / "data" / "cifar10-jpeg"
pytestmark = [pytest.mark.skipif(not (GOLDEN / "name_map.json").is_file(),
                                 reason=f"golden outputs not found at {GOLDEN} (../shared is absent)"),
              pytest.mark.usefixtures("single_thread")]


class NotWeights:
    """An object a weights-only load must refuse (its unpickling could run code)."""


def _one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def golden() -> dict:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(GOLDEN / "wolf_state_dict.safetensors"), "pt") as f:
        config = json.loads(f.metadata()["config"])
    return {"state": load_file(str(GOLDEN / "wolf_state_dict.safetensors")), "config": config,
            "io": load_file(str(GOLDEN / "inputs_outputs.safetensors")),
            "meta": json.loads((GOLDEN / "name_map.json").read_text())}


def _model_dir(folder: Path, config: dict, state: dict | None = None, *, checkpoint: dict | None = None,
               name: str = "checkpoint1000.tar") -> Path:
    """An authors' model folder: config.json and model.pt ({"core": state}) or a checkpoint file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    if state is not None:
        torch.save({"core": state}, folder / "model.pt")
    if checkpoint is not None:
        torch.save(checkpoint, folder / name)
    return folder


def _ddp_checkpoint(state: dict, **extra: object) -> dict:
    """What their train.py saves every 1,000 steps under DistributedDataParallel."""
    return {"epoch": 3, "step": 1000, "model": {f"core.module.{k}": v for k, v in state.items()},
            "optimizer": {"state": {}, "param_groups": []}, "best_bpd": np.float64(3.25), **extra}


def _import(src: Path, run: Path, *flags: str) -> int:
    return main(["import-wolf", str(src), "--run", str(run), "--dataset", "cifar10-jpeg", "--data", str(CIFAR_JPEG),
                 "-q", *flags])


@pytest.fixture(scope="module")
def runs(golden, tmp_path_factory) -> dict[str, Path]:
    """Imports of the golden model: from model.pt (default and --encoder-input centre) and from a checkpoint."""
    base = tmp_path_factory.mktemp("wolf")
    pt = _model_dir(base / "pt", golden["config"], golden["state"])
    tar = _model_dir(base / "tar", golden["config"], checkpoint=_ddp_checkpoint(golden["state"]))
    out = {"pt": base / "run_pt", "centre": base / "run_centre", "tar": base / "run_tar"}
    assert _import(pt, out["pt"]) == 0
    assert _import(pt, out["centre"], "--encoder-input", "centre") == 0
    assert _import(tar, out["tar"]) == 0
    return out


def _bpd_with_their_noise(model, io: dict) -> dict:
    """Bits/dim of the golden images with their noise u (dequantisation) and eps (posterior) fed
    through flowvae's own bound (FlowVAE.bits_per_dim -> log_weights)."""
    import flowvae.models.flow_decoder as fd
    import flowvae.models.flowvae as fm

    # u is drawn in flow_decoder (dequantisation), eps in flowvae (posterior): each module's own name
    saved = fd.noise_like, fm.noise_like
    fd.noise_like = fm.noise_like = lambda draw, like, gen, shard: (io["u"] if draw is torch.rand
                                                                    else io["eps"]).to(like)
    try:
        return model.bits_per_dim(io["images_uint8"])
    finally:
        fd.noise_like, fm.noise_like = saved


# ---------------------------------------------------------------------------------------------- mapping

def test_structural_tensor_map_reproduces_the_golden_table(golden):
    from flowvae.interop.wolf import tensor_map, translate_config
    from flowvae.models import FlowVAE

    cfg = translate_config(golden["config"])
    # fields added since the golden table was made, at their paper values
    assert cfg.to_dict() == {**golden["meta"]["flowvae_config"], "encoder_input": "lower-edge", "free_bits": 0.0,
                             "coupling_kernel": 3, "aux_decoder_weight": 0.0, "aux_decoder_hidden": 256,
                             "aux_low_pass": 0, "low_pass_shift": 0}
    rows = tensor_map(golden["config"], FlowVAE(cfg))
    ours = [(r.flowvae, r.wolf, r.op) for r in rows]
    table = [(r["flowvae"], r["wolf"], r["op"]) for r in golden["meta"]["table"]]
    assert len(set(ours)) == len(ours) == len(table)
    assert set(ours) == set(table)
    assert {r.wolf for r in rows if r.wolf} == set(golden["state"])  # every tensor of theirs has a row


def test_additive_couplings_are_copied_not_swapped(golden):
    """Their additive couplings emit the bias alone: nothing to swap (the prior stays affine)."""
    from flowvae.interop.wolf import tensor_map, translate_config
    from flowvae.models import FlowVAE

    wolf = json.loads(json.dumps(golden["config"]))
    wolf["generator"]["flow"].update(transform="additive", prior_transform="additive")
    cfg = translate_config(wolf)
    assert cfg.coupling == "additive"
    ops = {r.flowvae: r.op for r in tensor_map(wolf, FlowVAE(cfg)) if r.flowvae}
    assert ops["decoder.flows.0.flows.2.net.conv3.weight_v"] == "copy"
    assert ops["prior.steps.flows.0.flows.2.net.fc3.weight_v"] == "swap_halves"


# ---------------------------------------------------------------------------------------------- function

def test_imported_model_gives_the_authors_bits_per_dim(golden, runs):
    import flowvae

    io = golden["io"]
    model = flowvae.load_run(runs["pt"])
    assert model.cfg.encoder_input == "lower-edge"
    assert sum(p.numel() for p in model.parameters()) == 529_941
    res = _bpd_with_their_noise(model, io)
    torch.testing.assert_close(res["elbo_bpd"], io["wolf_bpd"], rtol=0, atol=1e-5)
    torch.testing.assert_close(res["kl"], io["wolf_kl"], rtol=0, atol=1e-4)
    with torch.no_grad():
        mu, logvar = model.posterior(model.to_bins(io["images_uint8"]))
    torch.testing.assert_close(mu, io["wolf_mu"], rtol=0, atol=1e-5)
    torch.testing.assert_close(logvar, io["wolf_logvar"], rtol=0, atol=1e-5)


def test_encoder_input_centre_is_flowvaes_convention_not_theirs(golden, runs):
    import flowvae

    io = golden["io"]
    model = flowvae.load_run(runs["centre"])
    assert model.cfg.encoder_input == "centre"
    with torch.no_grad():
        mu, _ = model.posterior(model.to_bins(io["images_uint8"]))
    assert float((mu - io["wolf_mu"]).abs().max()) > 1e-4  # half a bin higher than what their encoder saw
    # the flow itself is the same function: with the posterior of theirs, the bound would agree
    pt = flowvae.load_run(runs["pt"])
    for name, t in pt.decoder.state_dict().items():
        assert torch.equal(t, model.decoder.state_dict()[name])


def test_uint8_round_trip_is_exact(golden, runs):
    import flowvae

    x = golden["io"]["images_uint8"]
    model = flowvae.load_run(runs["pt"])
    z, v = model.encode(x)
    assert torch.equal(model.decode(z, v), x)


def test_checkpoint_with_ddp_prefix_imports_the_same_weights(runs):
    from safetensors.torch import load_file

    a, b = load_file(str(runs["pt"] / "model.safetensors")), load_file(str(runs["tar"] / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    record = json.loads((runs["tar"] / "import.json").read_text())
    assert record["weights_layout"] == "checkpoint" and record["key_prefix"] == "core.module."
    assert record["checkpoint"] == {"epoch": 3, "step": 1000, "best_bpd": 3.25}
    pt = json.loads((runs["pt"] / "import.json").read_text())
    assert pt["weights_layout"] == "model.pt" and pt["wolf_config"]["discriminator"]["dim"] == 16
    assert Path(pt["model_dir"]).name == "pt" and len(pt["weights_sha256"]) == 64


def test_newest_checkpoint_is_the_default_and_checkpoint_chooses(golden, tmp_path):
    old = {k: v + 1 if v.is_floating_point() else v for k, v in golden["state"].items()}
    src = _model_dir(tmp_path / "m", golden["config"], checkpoint=_ddp_checkpoint(old), name="checkpoint5000.tar")
    torch.save(_ddp_checkpoint(golden["state"]), src / "checkpoint0.tar")
    os.utime(src / "checkpoint5000.tar", (1_000_000, 1_000_000))  # written before checkpoint0.tar
    assert _import(src, tmp_path / "newest") == 0
    assert json.loads((tmp_path / "newest" / "import.json").read_text())["weights"].endswith("checkpoint0.tar")
    assert _import(src, tmp_path / "chosen", "--checkpoint", "checkpoint5000.tar") == 0
    assert json.loads((tmp_path / "chosen" / "import.json").read_text())["weights"].endswith("checkpoint5000.tar")


def test_refined_glow_without_discriminator(golden, tmp_path, capsys):
    """discriminator.type = "base": no z; flowvae's refined_glow kind, the same flow without FC(z)."""
    import flowvae

    wolf = json.loads(json.dumps(golden["config"]))
    wolf["discriminator"] = {"type": "base"}
    for key in ("h_type", "h_channels"):
        del wolf["generator"]["flow"][key]
    state = {k: v for k, v in golden["state"].items() if k.startswith("generator.") and ".h_net." not in k}
    src = _model_dir(tmp_path / "m", wolf, state)
    assert _import(src, tmp_path / "run") == 1  # no encoder to read the image size from
    assert "image size" in _one_line(capsys.readouterr().err)
    assert _import(src, tmp_path / "run", "--image-size", "32") == 0
    model = flowvae.load_run(tmp_path / "run")
    assert model.kind == "refined_glow"
    x = golden["io"]["images_uint8"]
    z, v = model.encode(x)
    assert z is None and torch.equal(model.decode(None, v), x)


# ---------------------------------------------------------------------------------------------- commands

@pytest.mark.skipif(not (CIFAR_JPEG / "cifar10-jpeg-images.zip").is_file(), reason=f"no CIFAR-10 JPEG at {CIFAR_JPEG}")
def test_eval_and_check_run_on_the_imported_folder(runs, capsys):
    capsys.readouterr()
    assert main(["eval", str(runs["pt"]), "--limit", "8", "-k", "1", "--device", "cpu", "--json", "-q"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 8 and res["roundtrip_mismatched_pixels"] == 0 and np.isfinite(res["elbo_bpd"])
    assert main(["check", str(runs["pt"]), "--limit", "8", "--device", "cpu", "--json", "-q"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_json_output_and_parameter_count(golden, tmp_path, capsys):
    src = _model_dir(tmp_path / "m", golden["config"], golden["state"])
    assert _import(src, tmp_path / "run", "--json") == 0
    res = json.loads(capsys.readouterr().out)
    assert res["parameters"] == 529_941 and res["kind"] == "flowvae" and res["run"] == str(tmp_path / "run")
    assert _import(src, tmp_path / "text") == 0
    assert "529,941 parameters" in capsys.readouterr().out


# ---------------------------------------------------------------------------------------------- encoder input

def test_encoder_input_reaches_every_use_of_the_encoder():
    """Training loss, bounds, encode, latent mean, switch: the encoder sees lower edges (or centres)."""
    from flowvae.models import FlowVAE, FlowVAEConfig

    torch.manual_seed(0)
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    for option, offset in (("lower-edge", 0.0), ("centre", 0.5)):
        model = FlowVAE(FlowVAEConfig(image_size=8, steps=[1, 1], hidden=[4, 4], d_z=4, encoder_widths=[4],
                                      prior_steps=1, prior_hidden=8, encoder_input=option), n_bits=5).eval()
        want = (model.to_bins(x) + offset) / 32 - 0.5
        seen: list[torch.Tensor] = []

        def spy(module, inputs, output, seen=seen):
            seen.append(inputs[0].detach().clone())

        model.encoder.register_forward_hook(spy)
        model.loss(x)
        model.bits_per_dim(x, k=2)
        model.encode(x)
        model.latent_mean(x)
        model.switch(x, x)
        assert len(seen) == 6  # loss, bound, encode, latent mean, switch's two sides
        for t in seen:
            torch.testing.assert_close(t, want, rtol=0, atol=0)


def test_encoder_input_default_is_bin_centre():
    from flowvae.models import FlowVAEConfig

    assert FlowVAEConfig().encoder_input == "centre"
    from flowvae.errors import ConfigError

    with pytest.raises(ConfigError, match="encoder_input"):
        FlowVAEConfig(encoder_input="edge")


# ---------------------------------------------------------------------------------------------- refusals

def _perturbed(golden: dict, how: str):
    config = json.loads(json.dumps(golden["config"]))
    state = dict(golden["state"])
    if how == "unsupported key":
        config["generator"]["flow"]["kernel_size"] = [2, 3]
    elif how == "unsupported value":
        config["dequantizer"] = {"type": "flow"}
    elif how == "missing tensor":
        del state["discriminator.fc.linear.bias"]
    elif how == "extra tensor":
        state["generator.flow.blocks.0.steps.0.extra"] = torch.zeros(3)
    elif how == "wrong shape":
        state["discriminator.encoder.net.top.bias"] = torch.zeros(9)
    return config, state


@pytest.mark.parametrize("how, expected", [
    ("unsupported key", "generator.flow.kernel_size = [2, 3]"),
    ("unsupported value", 'dequantizer.type = "flow"'),
    ("missing tensor", "discriminator.fc.linear.bias"),
    ("extra tensor", "generator.flow.blocks.0.steps.0.extra"),
    ("wrong shape", "discriminator.encoder.net.top.bias"),
])
def test_bad_models_are_refused_in_one_line(golden, tmp_path, capsys, how, expected):
    config, state = _perturbed(golden, how)
    src = _model_dir(tmp_path / "m", config, state)
    assert _import(src, tmp_path / "run") == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith("flowvae import-wolf: error:") and expected in line, line
    assert not (tmp_path / "run").exists()  # nothing written


def test_bad_files_are_refused_in_one_line(golden, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _import(empty, tmp_path / "run") == 1
    assert "no config.json" in _one_line(capsys.readouterr().err)

    src = _model_dir(tmp_path / "link", golden["config"])
    torch.save({"core": golden["state"]}, tmp_path / "elsewhere.pt")
    (src / "model.pt").symlink_to(tmp_path / "elsewhere.pt")
    assert _import(src, tmp_path / "run") == 1
    assert "symbolic link" in _one_line(capsys.readouterr().err)

    bad = _model_dir(tmp_path / "pickle", golden["config"])
    torch.save({"core": golden["state"], "extra": NotWeights()}, bad / "model.pt")
    assert _import(bad, tmp_path / "run") == 1
    line = _one_line(capsys.readouterr().err)
    assert "weights only" in line and "NotWeights" in line

    nothing = _model_dir(tmp_path / "noweights", golden["config"])
    assert _import(nothing, tmp_path / "run") == 1
    assert "neither model.pt nor a checkpoint" in _one_line(capsys.readouterr().err)

    prefix = _model_dir(tmp_path / "prefix", golden["config"],
                        checkpoint={"model": {f"other.{k}": v for k, v in golden["state"].items()}})
    assert _import(prefix, tmp_path / "run") == 1
    assert "core." in _one_line(capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


def test_existing_run_folder_needs_force(golden, tmp_path, capsys):
    src = _model_dir(tmp_path / "m", golden["config"], golden["state"])
    run = tmp_path / "run"
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    assert _import(src, run) == 1
    assert "--force" in _one_line(capsys.readouterr().err)
    assert _import(src, run, "--force") == 0 and (run / "model.safetensors").is_file()
    assert (run / "notes.txt").read_text() == "mine"
    (run / "checkpoints").mkdir()
    assert _import(src, run, "--force") == 1  # a trained run's history is never replaced
    assert "training history" in _one_line(capsys.readouterr().err)
    shutil.rmtree(run)


@pytest.mark.parametrize("module", ["numpy.core.multiarray", "numpy._core.multiarray"])
def test_numpy_scalars_of_either_numpy_load_and_the_allow_list_is_restored(tmp_path, module):
    """Their checkpoints keep numpy scalars; numpy 1 and numpy 2 name ``scalar`` differently in the
    pickle, and every supported torch (2.4 has no ``safe_globals`` context) must read both, leaving
    torch's process-wide allow list as it found it."""
    from flowvae.interop.wolf.files import load_torch_file

    path = tmp_path / "checkpoint.tar"
    # the legacy (non-zip) format is one plain pickle stream, so the module name can be rewritten
    torch.save({"best_bpd": np.float64(3.25), "step": np.int64(7)}, path, _use_new_zipfile_serialization=False)
    raw = path.read_bytes()
    spelled = [m for m in (b"numpy._core.multiarray", b"numpy.core.multiarray") if m in raw]
    assert spelled, "the pickle names numpy's scalar"
    path.write_bytes(raw.replace(spelled[0], module.encode()))
    assert module.encode() in path.read_bytes()
    before = set(torch.serialization.get_safe_globals())  # a set in torch >= 2.5: order is arbitrary
    obj, digest = load_torch_file(path)
    assert float(obj["best_bpd"]) == 3.25 and int(obj["step"]) == 7 and len(digest) == 64
    assert set(torch.serialization.get_safe_globals()) == before
