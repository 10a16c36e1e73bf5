"""Packaging: ``python -m flowvae`` is the ``flowvae`` command, one version everywhere, and the
license, notice and citation files are present and well formed."""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import flowvae
from flowvae.cli.main import main
from helpers import REPO

ROOT = REPO


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_python_m_flowvae_presets(tmp_path, capsys):
    out = _run([sys.executable, "-m", "flowvae", "presets"], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].split()[:2] == ["preset", "kind"]
    assert any(line.split()[:2] == ["digits", "flowvae"] for line in lines[1:])
    assert main(["presets"]) == 0  # the same listing as the command itself, in process
    assert out.stdout == capsys.readouterr().out


def test_a_closed_pipe_ends_the_command_quietly(tmp_path):
    """``flowvae presets | head`` with the reader gone before the listing is written: status 141 (128 +
    SIGPIPE, as the shell reports it) and nothing on standard error, not an error message."""
    import subprocess

    proc = subprocess.Popen([sys.executable, "-m", "flowvae", "presets"], cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()  # before the command has imported torch, so its first write finds no reader
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == "", err


@pytest.mark.parametrize("args, status", [([], 2), (["eval", "no-such-run"], 1)])
def test_python_m_flowvae_exit_status_matches_console_script(tmp_path, args, status):
    """Usage error (2) and error caused by input (1): the same status and message either way."""
    as_module = _run([sys.executable, "-m", "flowvae", *args], cwd=tmp_path)
    assert as_module.returncode == status, as_module.stderr
    exe = Path(sys.executable).with_name("flowvae")
    if not exe.exists():
        found = shutil.which("flowvae")
        if found is None:
            pytest.skip("flowvae console script not installed (run `make test`)")
        exe = Path(found)
    as_script = _run([str(exe), *args], cwd=tmp_path)
    assert as_script.returncode == status
    assert (as_module.stdout, as_module.stderr) == (as_script.stdout, as_script.stderr)


def test_version_has_one_source():
    assert importlib.metadata.version("flowvae") == flowvae.__version__
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert str(citation["version"]) == flowvae.__version__
    try:
        import tomllib
    except ImportError:  # Python 3.10
        return
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "flowvae.version.__version__"}


def test_py_typed_in_package():
    assert (importlib.resources.files("flowvae") / "py.typed").is_file()


def test_license_notice_and_citation():
    license_text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert license_text.startswith("MIT License") and "the flowvae authors" in license_text
    notice = (ROOT / "NOTICE").read_text(encoding="utf-8")
    assert "disentanglement_lib" in notice and "Apache License, Version 2.0" in notice
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in notice  # the full license text
    for ported in ("src/flowvae/evaluation/disentanglement.py", "src/flowvae/data/dsprites.py"):
        assert ported in notice and (ROOT / ported).is_file()

    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text(encoding="utf-8"))
    assert citation["cff-version"] == "1.2.0" and citation["type"] == "software"
    assert citation["license"] == "MIT"
    paper = citation["preferred-citation"]
    assert paper["type"] == "conference-paper" and paper["year"] == 2021
    assert paper["title"] == "Decoupling Global and Local Representations via Invertible Generative Flows"
    assert [(a["given-names"], a["family-names"]) for a in paper["authors"]] == [
        ("Xuezhe", "Ma"), ("Xiang", "Kong"), ("Shanghang", "Zhang"), ("Eduard", "Hovy")]
    assert "ICLR" in paper["conference"]["name"]


def test_readme_links_are_absolute_and_name_files_of_this_repository():
    """The README is the package's long description: on the package index a relative link or image
    breaks, so every link is absolute; each one into the repository (its `Repository` URL in
    pyproject.toml) must name a file that exists in this checkout."""
    import re

    repo = re.search(r'^Repository = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.M).group(1).rstrip("/")
    owner_name = repo.removeprefix("https://github.com/")
    prefixes = (f"{repo}/blob/main/", f"{repo}/tree/main/", f"https://raw.githubusercontent.com/{owner_name}/main/")
    targets = re.findall(r"\]\(([^)\s]+)\)", (ROOT / "README.md").read_text())
    relative = [t for t in targets if not t.startswith(("http://", "https://", "#", "mailto:"))]
    assert not relative, f"relative links in README.md (break on the package index): {relative}"
    ours = [t for t in targets if t.startswith(prefixes)]
    assert len(ours) >= 10  # the figures and pages; a regex that matched nothing would pass vacuously
    missing = [t for t in ours if not (ROOT / next(t.removeprefix(p) for p in prefixes if t.startswith(p))
                                       .split("#")[0]).exists()]
    assert not missing, f"README links to files this checkout does not have: {missing}"
