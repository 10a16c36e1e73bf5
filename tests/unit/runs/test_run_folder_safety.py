"""Run folders someone else prepared must not make flowvae touch files outside them: planted
symlinks at the names flowvae writes are never written through, planted symlinks, FIFOs and
devices at the names it reads are refused, and report pages escape every value from the folder."""

from __future__ import annotations

import json
import os
import shutil
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from flowvae import safe_io
from flowvae.cli.main import main
from flowvae.errors import CheckpointError

pytestmark = pytest.mark.usefixtures("single_thread")

CPU = ["--device", "cpu", "-q"]
VICTIM = b"precious bytes outside the run folder\n"


@contextmanager
def deadline(seconds: int = 60) -> Iterator[None]:
    """Fail instead of hanging (a FIFO read blocks forever)."""
    def boom(*_):
        raise TimeoutError(f"took more than {seconds} s (blocked on a FIFO?)")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture
def copy(tiny_runs, tmp_path) -> Path:
    """A private copy of the tiny flowvae run."""
    return Path(shutil.copytree(tiny_runs["flowvae"], tmp_path / "run", symlinks=True))


@pytest.fixture
def victim(tmp_path) -> Path:
    path = tmp_path / "outside" / "victim"
    path.parent.mkdir()
    path.write_bytes(VICTIM)
    return path


def _plant(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if os.path.lexists(link):
        link.unlink()
    link.symlink_to(target)


def _one_line_or_ok(rc: int, capsys) -> None:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if rc != 0:
        assert rc == 1 and len(err.strip().splitlines()) == 1, err


# ----------------------------------------------------------------------------------------------
# safe_io itself


def test_atomic_write_refuses_a_symlinked_target_and_leaves_no_temp(tmp_path, victim):
    link = tmp_path / "f.txt"
    _plant(link, victim)
    with pytest.raises(CheckpointError, match="symbolic link"):
        safe_io.atomic_write(link, b"x")
    assert victim.read_bytes() == VICTIM
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt", "outside"]
    safe_io.atomic_write(tmp_path / "g.txt", b"hello")
    assert (tmp_path / "g.txt").read_bytes() == b"hello"


def test_append_and_read_refuse_links_fifos_devices_and_oversize(tmp_path, victim):
    link = tmp_path / "log"
    _plant(link, victim)
    with pytest.raises(CheckpointError):
        safe_io.append_line(link, "x")
    with pytest.raises(CheckpointError):
        safe_io.open_for_log(link)
    with pytest.raises(CheckpointError):
        safe_io.read_bytes(link, 1000)
    assert victim.read_bytes() == VICTIM
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with deadline(10):
        with pytest.raises(CheckpointError, match="not a regular file"):
            safe_io.read_bytes(fifo, 1000)
    with pytest.raises(CheckpointError):
        safe_io.read_bytes(victim, 4)
    sub = tmp_path / "run" / "inner"
    sub.parent.mkdir()
    _plant(sub, victim.parent)
    with pytest.raises(CheckpointError, match="outside"):
        safe_io.read_bytes(sub / "victim", 1000, root=tmp_path / "run")
    assert safe_io.read_bytes(victim, 1000) == VICTIM


# ----------------------------------------------------------------------------------------------
# Writes of the commands


@pytest.mark.parametrize("name", ["samples/samples_t0.70.png", "samples/samples_t0.70.png.tmp"])
def test_sample_never_writes_through_a_planted_symlink(copy, victim, name, capsys):
    _plant(copy / name, victim)
    rc = main(["sample", str(copy), "-t", "0.7", "-n", "4", *CPU])
    _one_line_or_ok(rc, capsys)
    assert victim.read_bytes() == VICTIM


@pytest.mark.parametrize("cmd,name", [("switch", "switch.png"), ("switch", "switch.png.tmp"),
                                      ("interpolate", "interpolation.png"),
                                      ("interpolate", "interpolation.png.tmp")])
def test_switch_and_interpolate_never_write_through_a_planted_symlink(copy, victim, cmd, name, capsys):
    _plant(copy / name, victim)
    extra = ["--pairs", "2"] if cmd == "switch" else ["--rows", "2", "--cols", "2"]
    rc = main([cmd, str(copy), *extra, *CPU])
    _one_line_or_ok(rc, capsys)
    assert victim.read_bytes() == VICTIM


def test_probe_md_is_not_written_through_a_symlink(copy, victim, capsys):
    _plant(copy / "probe.md", victim)
    rc = main(["probe", str(copy), "--train-limit", "64", "--test-limit", "32", *CPU])
    _one_line_or_ok(rc, capsys)
    assert victim.read_bytes() == VICTIM


@pytest.mark.parametrize("name", [".config.yaml.tmp", "config.yaml", "train.log", "metrics.jsonl",
                                  ".model.safetensors.tmp", "environment.json", "checkpoints/ckpt-00000003.pt",
                                  "checkpoints/.ckpt-00000003.pt.tmp"])
def test_resumed_training_never_writes_through_a_planted_symlink(copy, victim, name, capsys):
    if name == "config.yaml":  # the config itself must stay readable: plant a copy outside
        victim.write_bytes((copy / "config.yaml").read_bytes())
        before = victim.read_bytes()
    else:
        before = VICTIM
    _plant(copy / name, victim)
    (copy / "model.safetensors").unlink()
    rc = main(["train", "--run", str(copy), "--resume", "--steps", "3", *CPU])
    _one_line_or_ok(rc, capsys)
    assert victim.read_bytes() == before


def test_final_weights_are_not_written_through_a_symlink(copy, victim):
    from flowvae.api import load_run
    from flowvae.training.trainer import _save_final

    model = load_run(copy)
    _plant(copy / "model.safetensors", victim)
    with pytest.raises(CheckpointError, match="symbolic link"):
        _save_final(model, copy)
    assert victim.read_bytes() == VICTIM
    (copy / "model.safetensors").unlink()
    _save_final(model, copy)
    assert load_run(copy) is not None


# ----------------------------------------------------------------------------------------------
# Reads


def test_symlinked_weights_are_refused(copy, tmp_path, capsys):
    outside = tmp_path / "outside.safetensors"
    shutil.copy(copy / "model.safetensors", outside)
    _plant(copy / "model.safetensors", outside)
    assert main(["eval", str(copy), "-k", "1", "--limit", "8", *CPU]) == 1
    assert "symbolic link" in capsys.readouterr().err


def test_a_fifo_named_like_a_checkpoint_does_not_hang(copy, capsys):
    (copy / "model.safetensors").unlink()
    os.mkfifo(copy / "checkpoints" / "ckpt-99999999.pt")
    with deadline(120):
        rc = main(["check", str(copy), "--limit", "8", *CPU])
    _one_line_or_ok(rc, capsys)


def test_a_checkpoint_linked_to_dev_zero_is_refused_without_reading(copy, capsys):
    from flowvae.runs.checkpoints import load_latest_checkpoint

    if not os.path.exists("/dev/zero"):
        pytest.skip("no /dev/zero")
    (copy / "model.safetensors").unlink()
    link = copy / "checkpoints" / "ckpt-99999999.pt"
    _plant(link, Path("/dev/zero"))
    (copy / "checkpoints" / "ckpt-99999999.pt.sha256").write_text("0" * 64)
    with deadline(60):
        found = load_latest_checkpoint(copy / "checkpoints")
        assert found is not None and found[0].name != link.name
        rc = main(["eval", str(copy), "-k", "1", "--limit", "8", *CPU])
    _one_line_or_ok(rc, capsys)


# ----------------------------------------------------------------------------------------------
# The HTML report


def test_report_does_not_show_an_outside_file_behind_a_symlink(copy, tmp_path, capsys):
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"password": "hunter2-SECRET"}))
    (copy / "environment.json").unlink()
    _plant(copy / "environment.json", secret)
    _plant(copy / "eval.json", secret)
    assert main(["report", str(copy)]) == 0
    page = (copy / "report.html").read_text()
    assert "hunter2-SECRET" not in page
    assert "environment.json" in page  # listed under Notes as refused


def test_report_and_compare_escape_values_from_the_folder(copy, tmp_path, capsys):
    evil = "<script>alert(1)</script>"
    (copy / "eval.json").write_text(json.dumps({"n": evil, evil: evil, "elbo_bpd": evil}))
    (copy / "probe.json").write_text(json.dumps({"dataset": evil, "protocol": evil, "results": {
        evil: {"dim": evil, "C": evil, "accuracy": evil, "n_train": evil, "n_test": evil}}}))
    (copy / "fid_t1.00.json").write_text(json.dumps({"fid": evil, "kid_mean": evil, "n_fake": evil,
                                                     "temperature": evil, "dataset": evil}))
    env = json.loads((copy / "environment.json").read_text())
    env[evil] = evil
    env["cpu_count"] = evil
    (copy / "environment.json").write_text(json.dumps(env))
    with open(copy / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 5, "test_k": evil, "test_n": evil, "test_elbo_bpd": evil,
                            "test_kl": evil, "train_bpd": evil, "skipped_steps": evil}) + "\n")
    assert main(["report", str(copy)]) == 0
    page = (copy / "report.html").read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page
    out = tmp_path / "compare.html"
    assert main(["compare", str(copy), str(copy), "--out", str(out)]) == 0
    page = out.read_text()
    assert "<script>" not in page and "&lt;script&gt;" in page


def test_report_is_not_written_through_a_symlink(copy, victim, capsys):
    _plant(copy / "report.html", victim)
    rc = main(["report", str(copy)])
    _one_line_or_ok(rc, capsys)
    assert victim.read_bytes() == VICTIM


@pytest.mark.parametrize("cmd", [["sample", "-t", "0.7", "-n", "4"], ["switch", "--pairs", "2"]])
def test_a_symlinked_output_folder_is_refused(copy, tmp_path, cmd, capsys):
    outside = tmp_path / "outside-folder"
    outside.mkdir()
    if cmd[0] == "sample":
        shutil.rmtree(copy / "samples")
        (copy / "samples").symlink_to(outside)
    else:  # switch writes RUN/switch.png; a link at the run folder's own name is the user's choice,
        (copy / "sub").symlink_to(outside)  # so send it through --out into a linked sub-folder instead
        cmd = [*cmd, "--out", str(copy / "sub" / "switch.png")]
    rc = main([cmd[0], str(copy), *cmd[1:], *CPU])
    err = capsys.readouterr().err
    if cmd[0] == "sample":
        assert rc == 1 and "leads outside" in err and len(err.strip().splitlines()) == 1
        assert list(outside.iterdir()) == []
    else:  # a path the user names with --out is written as given
        assert rc == 0 and (outside / "switch.png").exists()


def test_resume_refuses_a_checkpoints_folder_that_links_outside(copy, tmp_path, capsys):
    outside = tmp_path / "outside-ckpts"
    shutil.copytree(copy / "checkpoints", outside)
    shutil.rmtree(copy / "checkpoints")
    (copy / "checkpoints").symlink_to(outside)
    (copy / "model.safetensors").unlink()
    before = sorted(p.name for p in outside.iterdir())
    rc = main(["train", "--run", str(copy), "--resume", "--steps", "4", *CPU])
    err = capsys.readouterr().err
    assert rc == 1 and "leads outside" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in outside.iterdir()) == before


def test_a_full_disk_names_the_file_and_keeps_the_old_one(tmp_path, monkeypatch):
    import errno

    target = tmp_path / "eval.json"
    target.write_bytes(b"old")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(safe_io.os, "fsync", full)
    with pytest.raises(CheckpointError, match=rf"cannot write {target}: No space left on device; the previous"):
        safe_io.atomic_write(target, b"new")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["eval.json"]  # no temporary file left
