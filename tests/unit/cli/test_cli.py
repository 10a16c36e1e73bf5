"""The command line: train -> eval -> sample on real digits, JSON output, exit codes, one-line errors,
range checks of every numeric option, and the fixed bugs (sampling the VAE kinds, eval's
reconstruction lines, grey+alpha folders, one-class probes, traverse without --seed, switch on
fewer-bit data). The trained runs are the session's tiny runs (tests/conftest.py)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from flowvae.cli.main import main
from flowvae.config import load_config, save_config

pytestmark = pytest.mark.usefixtures("single_thread")

CPU = ["--device", "cpu", "-q"]


@pytest.fixture(scope="module")
def run(tiny_runs) -> Path:
    """The tiny run of the paper's model (digits, 8x8)."""
    return tiny_runs["flowvae"]


def _one_line(err: str) -> str:
    """The only line of ``err``; fails on a traceback or several lines."""
    lines = err.strip().splitlines()
    assert "Traceback" not in err and len(lines) == 1, err
    return lines[0]


def _copy_run(src: Path, dest: Path, **data: object) -> Path:
    """A copy of the run folder ``src`` with ``data.<field>`` of its config replaced."""
    shutil.copytree(src, dest)
    cfg = load_config(dest / "config.yaml")
    cfg.data = cfg.data.replace(**data)
    save_config(cfg, dest / "config.yaml")
    return dest


def test_train_writes_run_and_seed_override(tiny_runs, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "digits", "--run", str(run), "--steps", "3", "--seed", "3", *CPU, "--json",
                 "--set", *tiny_runs.overrides("flowvae")]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 3
    cfg = (run / "config.yaml").read_text()
    assert "seed: 3" in cfg and "steps: 3" in cfg


def test_eval_json_reports_both_bounds_and_exact_round_trip(run, capsys):
    assert main(["eval", str(run), "-k", "3", "--limit", "40", "--json", *CPU]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["k"] == 3 and res["n"] == 40
    assert res["iw_bpd"] <= res["elbo_bpd"] + 1e-9
    assert res["roundtrip_mismatched_pixels"] == 0 and res["roundtrip_images"] == 40
    assert "reconstruction" not in res  # the flow has no reconstruction capability
    assert json.loads((run / "eval.json").read_text())["elbo_bpd"] == res["elbo_bpd"]


def test_sample_writes_one_grid_per_temperature(run, tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["sample", str(run), "--temperature", "0.5", "1.0", "-n", "16", "--out", str(out),
                 "--json", *CPU]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [Path(p).name for p in res["files"]] == ["samples_t0.50.png", "samples_t1.00.png"]
    assert all(Path(p).stat().st_size > 100 for p in res["files"])


def test_global_temperature_is_an_alias_of_z_temperature(run, tmp_path, capsys):
    for flag in ("--z-temperature", "--global-temperature"):
        assert main(["sample", str(run), "-t", "0.8", "-n", "8", flag, "0.5", "--out", str(tmp_path / flag),
                     "--json", *CPU]) == 0
        assert json.loads(capsys.readouterr().out)["z_temperature"] == 0.5
    a, b = ((tmp_path / flag / "samples_t0.80.png").read_bytes() for flag in ("--z-temperature", "--global-temperature"))
    assert a == b


def test_sample_works_on_the_vae_kinds(tiny_runs, tmp_path, capsys):
    """Bug: `flowvae sample` on a UG-VAE or beta-TCVAE run. The temperature acts on the local (or only)
    latent; a global temperature is accepted where the kind has a global code (the UG-VAE's beta) and
    refused in one line where it has none (VAE, beta-TCVAE)."""
    ug = tiny_runs["ugvae"]
    assert main(["sample", str(ug), "-n", "4", "-t", "0.5", "1.0", "--global-temperature", "0.5",
                 "--out", str(tmp_path / "ug"), "--json", *CPU]) == 0
    res = json.loads(capsys.readouterr().out)
    assert len(res["files"]) == 2 and res["z_temperature"] == 0.5
    kinds = ["vae"] + (["btcvae"] if not tiny_runs.recipe("btcvae").missing() else [])
    for kind in kinds:
        r = tiny_runs[kind]
        assert main(["sample", str(r), "-n", "4", "-t", "0.5", "--out", str(tmp_path / kind), "--json", *CPU]) == 0
        assert Path(json.loads(capsys.readouterr().out)["files"][0]).is_file()
        assert main(["sample", str(r), "-n", "4", "--global-temperature", "0.5", *CPU]) == 1
        assert "no global code" in _one_line(capsys.readouterr().err)


def test_eval_prints_the_reconstruction_line(tiny_runs, capsys):
    """Bug: eval built the reconstruction line of the kinds that reconstruct but did not print it."""
    kinds = ["vae"] + (["btcvae"] if not tiny_runs.recipe("btcvae").missing() else [])
    for kind in kinds:
        assert main(["eval", str(tiny_runs[kind]), "-k", "1", "--limit", "16", *CPU]) == 0
        out = capsys.readouterr().out
        line = next(x for x in out.splitlines() if x.startswith("reconstruction from the factors"))
        assert "bits/dim" in line and "MSE" in line and "round trip" not in out


def test_traverse_runs_without_a_seed_option(run, tmp_path, capsys):
    """Bug: traverse has no --seed, and loading the run read args.seed (AttributeError traceback)."""
    out = tmp_path / "t.png"
    assert main(["traverse", str(run), "--index", "0", "3", "--steps", "3", "--out", str(out), "--json", *CPU]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [Path(f).name for f in res["files"]] == ["t_0.png", "t_3.png"] and res["local"] == "keep"
    assert all(Path(f).is_file() for f in res["files"])


def test_switch_and_interpolate_are_exact_on_fewer_bit_data(run, tmp_path, capsys):
    """Bug: with data.n_bits < 8 the real images come back as their quantised values, which the
    diagonal and corner checks compared with the raw 8-bit images (exit 1 on an exact model)."""
    five = _copy_run(run, tmp_path / "five", n_bits=5)
    assert main(["switch", str(five), "--pairs", "3", "--json", *CPU]) == 0
    assert json.loads(capsys.readouterr().out)["diagonal_exact"]
    assert main(["interpolate", str(five), "--rows", "2", "--cols", "2", "--json", *CPU]) == 0
    assert json.loads(capsys.readouterr().out)["corners_exact"]


def test_same_class_pairs_skip_images_without_a_partner():
    from flowvae.data import ImageData
    from flowvae.errors import ConfigError
    from flowvae.evaluation.switching import pick_pairs

    data = ImageData(torch.zeros(5, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 1, 1, 2, 2]), "toy", None)
    first, second = pick_pairs(data, 4, same_class=True, seed=0)
    assert 0 not in first.tolist() and all(int(data.labels[a]) == int(data.labels[b]) and a != b
                                           for a, b in zip(first.tolist(), second.tolist()))
    with pytest.raises(ConfigError, match="with a partner of the same class, but toy has 4"):
        pick_pairs(data, 5, same_class=True)
    with pytest.raises(ConfigError, match="at most 2 pairs"):
        pick_pairs(data, 3)


@pytest.mark.parametrize("argv, flag", [
    (["eval", "RUN", "-k", "0"], "-k/--k must be an integer >= 1, got 0"),
    (["eval", "RUN", "--limit", "-5"], "--limit must be an integer >= 1, got -5"),
    (["eval", "RUN", "--batch-size", "0"], "--batch-size"),
    (["sample", "RUN", "-n", "-3"], "-n/--num must be an integer >= 1, got -3"),
    (["sample", "RUN", "-t", "1", "nan"], "-t/--temperature must be a finite number >= 0, got nan"),
    (["sample", "RUN", "--global-temperature", "-1"], "--z-temperature/--global-temperature"),
    (["switch", "RUN", "--pairs", "10000"], "pairs=10000 needs 20000 test images"),
    (["switch", "RUN", "--pairs", "0"], "--pairs must be an integer >= 1"),
    (["interpolate", "RUN", "--index", "0", "99999"], "index 99999 is outside the test set"),
    (["interpolate", "RUN", "--rows", "0"], "--rows"),
    (["probe", "RUN", "--C", "-1"], "--C must be a finite number > 0, got -1"),
    (["probe", "RUN", "--train-limit", "0"], "--train-limit"),
    (["traverse", "RUN", "--steps", "1"], "--steps must be an integer >= 2, got 1"),
    (["traverse", "RUN", "--index", "99999"], "index 99999 is outside the test set"),
    (["traverse", "RUN", "--range", "inf"], "--range must be a finite number > 0"),
    (["fid", "RUN", "-n", "1"], "-n/--num must be an integer >= 2, got 1"),
    (["check", "RUN", "--limit", "0"], "--limit must be an integer >= 1, got 0"),
    (["disentangle", "RUN", "--num-train", "0"], "--num-train"),
    (["train", "digits", "--run", "RUN", "--steps", "-1"], "--steps must be an integer >= 0"),
    (["eval", "RUN", "--seed", "-1"], "--seed must be an integer >= 0"),
])
def test_numeric_options_out_of_range_are_one_line_errors(run, argv, flag, capsys):
    argv = [str(run) if a == "RUN" else a for a in argv]
    assert main([*argv, *CPU]) == 1
    line = _one_line(capsys.readouterr().err)
    assert line.startswith(f"flowvae {argv[0]}: error: ") and flag in line


def test_text_where_a_number_belongs_is_a_usage_error(run):
    with pytest.raises(SystemExit) as e:
        main(["eval", str(run), "-k", "five"])
    assert e.value.code == 2


def test_user_errors_are_one_line_with_exit_1(tmp_path, capsys):
    assert main(["train", "digitz", "--run", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err.strip()
    assert "did you mean 'digits'" in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert main(["eval", str(tmp_path / "nowhere")]) == 1
    assert "not a flowvae run folder" in capsys.readouterr().err
    assert main(["train", "digits", "--run", str(tmp_path / "y"), "--set", "model.dz=3"]) == 1
    assert "did you mean 'model.d_z'" in capsys.readouterr().err


def test_usage_errors_exit_2():
    with pytest.raises(SystemExit) as e:
        main(["train"])
    assert e.value.code == 2
    assert main([]) == 2


def test_console_script_is_installed_and_lists_commands():
    exe = Path(sys.executable).with_name("flowvae")
    if not exe.exists():
        exe = shutil.which("flowvae")
    if not exe:
        pytest.skip("flowvae console script not installed (run `make test`)")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
    for cmd in ("train", "eval", "sample"):
        assert cmd in out


TINY_FOLDER_MODEL = ["model.hidden=[4,8,8]", "model.steps=[0,[1,1],1]", "model.encoder_widths=[8]",
                     "model.prior_steps=1", "model.prior_hidden=8", "model.d_z=4", "train.batch_size=4",
                     "train.init_batch_size=8", "train.sample_temperatures=[1.0]", "train.eval_images=8"]


def test_train_on_a_folder_without_a_preset_picks_one_by_image_size(tmp_path, capsys):
    from flowvae.presets import preset_for_images

    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (50, 40, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    run = tmp_path / "run"
    code = main(["train", "--data", str(folder), "--run", str(run), "--steps", "2", "-q", "--set",
                 "model.hidden=[4,8,8]", "model.steps=[1,[1,1],1]", "model.encoder_widths=[8,8,8]",
                 "train.batch_size=4", "train.init_batch_size=8", "train.sample_temperatures=[1.0]"])
    assert code == 0
    cfg = load_config(run / "config.yaml")
    assert (cfg.data.dataset, cfg.data.image_size, cfg.model.image_size, cfg.model.in_channels) == ("folder", 32, 32, 3)
    assert preset_for_images(3, 300, 400)[:2] == ("celebahq256", 256)
    assert preset_for_images(1, 28, 28)[:2] == ("mnist", 28)
    assert preset_for_images(3, 130, 128, n_bits=5)[2].model.coupling == "additive"
    assert main(["train", "--run", str(tmp_path / "x")]) == 1
    assert "--data FOLDER" in capsys.readouterr().err


def test_train_on_grey_alpha_pngs_picks_a_one_channel_preset(tmp_path):
    """Bug: the folder inspection had its own grey-mode list, without 'LA', so grey+alpha PNGs got a
    3-channel model while the loader reads them as 1 channel (the loader's own inspection now)."""
    folder = tmp_path / "la"
    folder.mkdir()
    rng = np.random.default_rng(1)
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).convert("LA").save(folder / f"{i:02d}.png")
    run = tmp_path / "run"
    assert main(["train", "--data", str(folder), "--run", str(run), "--steps", "1", *CPU, "--set",
                 *TINY_FOLDER_MODEL]) == 0
    cfg = load_config(run / "config.yaml")
    assert (cfg.model.in_channels, cfg.model.image_size, cfg.data.dataset) == (1, 8, "folder")


def test_probe_on_a_one_class_training_subset_is_a_one_line_error(run, tmp_path, capsys):
    """Bug: a class-subfolder dataset whose --train-limit subset held one class ended in sklearn's
    ValueError traceback; now one line, exit 1 (and a stratified subset of 2 per class works)."""
    folder = tmp_path / "classes"
    rng = np.random.default_rng(2)
    for cls in ("a", "b"):
        (folder / cls).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / cls / f"{i}.png")
    assert main(["probe", str(run), "--data", str(folder), "--train-limit", "1", *CPU]) == 1
    line = _one_line(capsys.readouterr().err)
    assert "one class" in line and "--train-limit" in line
    assert main(["probe", str(run), "--data", str(folder), "--train-limit", "4", "--C", "0.01", "--json", *CPU]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["results"]["pixels"]["n_train"] == 4 and set(res["results"]) == {"z", "v", "pixels"}


# ---------------------------------------------------------------------------------------------- layout


HELP_ORDER = ["train", "eval", "sample", "switch", "interpolate", "probe", "fid", "check", "report", "compare",
              "traverse", "manipulate", "disentangle", "presets", "encode", "export", "push", "import-wolf"]


def test_one_module_per_command_in_the_order_of_help():
    from flowvae.cli.commands import COMMAND_MODULES
    from flowvae.cli.main import COMMANDS, build_parser

    assert [m.NAME for m in COMMAND_MODULES] == HELP_ORDER == list(COMMANDS)
    for m in COMMAND_MODULES:
        assert m.__name__ == f"flowvae.cli.commands.{m.NAME.replace('-', '_')}"
        assert COMMANDS[m.NAME] is m.execute and m.add_parser.__doc__ and m.execute.__doc__
    text = build_parser().format_help()
    listed = re.findall(r"^    (\S+)", text.split("COMMAND\n", 1)[1].split("\n\n", 1)[0], re.MULTILINE)
    assert listed == HELP_ORDER


def test_names_of_earlier_releases_are_deprecated_aliases():
    import importlib
    import sys

    import flowvae.cli.main as cli_main
    import flowvae.cli.parser as cli_parser
    from flowvae.cli import common
    from flowvae.cli.commands import eval as eval_command
    from flowvae.cli.commands import import_wolf

    with pytest.warns(DeprecationWarning, match="flowvae.cli.commands.eval.execute"):
        assert cli_main.cmd_eval is eval_command.execute
    with pytest.warns(DeprecationWarning):
        assert cli_main.cmd_import_wolf is import_wolf.execute
    with pytest.warns(DeprecationWarning, match="flowvae.cli.common.emit"):
        assert cli_main.emit is common.emit
    with pytest.warns(DeprecationWarning, match="flowvae.cli.main.build_parser"):
        assert cli_parser.build_parser is cli_main.build_parser
    for name, command in (("cmd_encode", "encode"), ("cmd_hub", "export"), ("cmd_import_wolf", "import-wolf")):
        sys.modules.pop(f"flowvae.cli.{name}", None)
        with pytest.warns(DeprecationWarning, match=f"flowvae.cli.{name} is"):
            module = importlib.import_module(f"flowvae.cli.{name}")
        assert module.COMMANDS[command] is cli_main.COMMANDS[command]
    with pytest.raises(AttributeError):
        cli_main.cmd_nothing  # noqa: B018


def test_result_files_read_back_as_their_records(run, tmp_path, capsys):
    from flowvae.evaluation.metrics import get_metric

    run = shutil.copytree(run, tmp_path / "run")
    assert main(["eval", str(run), "-k", "1", "--limit", "16", *CPU]) == 0
    capsys.readouterr()
    assert main(["check", str(run), "--limit", "8", "--json", *CPU]) == 0
    printed = json.loads(capsys.readouterr().out)
    check = get_metric("check").read(run)["check.json"]
    assert check.ok and check.to_dict() == printed == json.loads((run / "check.json").read_text())
    ev = get_metric("eval").read(run)["eval.json"]
    assert ev.n == 16 and ev.exact is True and ev.dataset == "digits/test"


# ---------------------------------------------------------------------------------------------- typed flags


class _Trained(Exception):
    """Raised by the stand-in for training with the config it was given."""


def _train_config(monkeypatch, argv: list[str]):
    """The config ``flowvae train ARGV`` would train, without training."""
    def fake_train(cfg, run, **kw):
        raise _Trained(cfg)

    monkeypatch.setattr("flowvae.training.train", fake_train)
    with pytest.raises(_Trained) as e:
        main(argv)
    return e.value.args[0]


def test_train_flags_set_typed_fields_after_the_overrides(tmp_path, monkeypatch):
    """--data, --steps, --seed and --device set their fields as values, not as text parsed again as YAML:
    a data folder named "on" or "123" stays that name (YAML would read True and 123), and each flag wins
    over a --set of its field."""
    for name in ("on", "123", "null"):
        cfg = _train_config(monkeypatch, ["train", "digits", "--run", str(tmp_path / "r"), "--data", name,
                                          "--steps", "7", "--seed", "3", "--device", "cpu", "-q",
                                          "--set", "train.steps=5", "train.seed=9", "data.root=elsewhere"])
        assert (cfg.data.root, cfg.train.steps, cfg.train.seed, cfg.train.device) == (name, 7, 3, "cpu")
    cfg = _train_config(monkeypatch, ["train", "digits", "--run", str(tmp_path / "r"), "-q", "--set", "train.seed=9"])
    assert (cfg.train.seed, cfg.train.device, cfg.data.root) == (9, "auto", None)  # --device's default is auto
    assert main(["train", "digits", "--run", str(tmp_path / "r"), "--device", "tpu", "-q"]) == 1


def test_train_folder_reads_the_parsed_overrides(tmp_path, monkeypatch, caplog):
    """The preset chosen for --data FOLDER reads data.n_bits, data.train_limit and train.device from the
    overrides parsed once (config.parse_overrides), the flags last."""
    import logging

    from flowvae.config import parse_overrides

    assert parse_overrides(["data.n_bits=5", "train.device=cuda:1", "data.root="]) == [
        ("data.n_bits", 5), ("train.device", "cuda:1"), ("data.root", None)]
    folder = tmp_path / "imgs"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(40):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    with caplog.at_level(logging.INFO, logger="flowvae"):
        cfg = _train_config(monkeypatch, ["train", "--data", str(folder), "--run", str(tmp_path / "r"), "--device",
                                          "cpu", "--set", "data.n_bits=5", "data.train_limit=10",
                                          "train.device=cuda"])
    assert (cfg.data.n_bits, cfg.data.train_limit, cfg.train.device, cfg.data.root) == (5, 10, "cpu", str(folder))
    # 5 bits; chosen for the CPU of --device, which wins over the --set of its field here too
    assert "5 bits" in caplog.text and "on a CPU" in caplog.text
    assert main(["train", "--data", str(folder), "--run", str(tmp_path / "r"), "-q", "--set", "data.n_bits"]) == 1
