"""The command line: train -> eval -> sample on real digits, JSON output, exit codes, one-line errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flowvae.cli.main import main

FAST = ["--set", "train.eval_every=1000", "train.batch_size=32", "train.init_batch_size=128",
        "train.sample_temperatures=[1.0]", "train.num_threads=2"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "digits", "--run", str(run), "--steps", "30", "--seed", "3", "--device", "cpu",
                 "-q", *FAST]) == 0
    return run


def test_train_writes_run_and_seed_override(run):
    cfg = (run / "config.yaml").read_text()
    assert "seed: 3" in cfg and "steps: 30" in cfg


def test_eval_json_reports_both_bounds_and_exact_round_trip(run, capsys):
    assert main(["eval", str(run), "-k", "3", "--limit", "40", "--json", "--device", "cpu", "-q"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["k"] == 3 and res["n"] == 40
    assert res["iw_bpd"] <= res["elbo_bpd"] + 1e-9
    assert res["roundtrip_mismatched_pixels"] == 0 and res["roundtrip_images"] == 40
    assert json.loads((run / "eval.json").read_text())["elbo_bpd"] == res["elbo_bpd"]


def test_sample_writes_one_grid_per_temperature(run, tmp_path, capsys):
    out = tmp_path / "s"
    assert main(["sample", str(run), "--temperature", "0.5", "1.0", "-n", "16", "--out", str(out),
                 "--json", "--device", "cpu", "-q"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [Path(p).name for p in res["files"]] == ["samples_t0.50.png", "samples_t1.00.png"]
    assert all(Path(p).stat().st_size > 100 for p in res["files"])


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


def test_train_on_a_folder_without_a_preset_picks_one_by_image_size(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from flowvae.config import load_config, preset_for_images

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


def test_api_reference_is_up_to_date():
    """docs/api.md is generated from the docstrings; regenerate with `python docs/gen_api.py`."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, str(root / "docs" / "gen_api.py"), "--check"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
