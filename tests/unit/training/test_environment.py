"""The git commit in ``environment.json``: flowvae's own, never the repository it is installed in."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from flowvae.training import environment

needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")

FLOWVAE_PYPROJECT = '[build-system]\nrequires = ["setuptools"]\n\n[project]\nname = "flowvae"\nversion = "0.1.0"\n'
OTHER_PYPROJECT = '[project]\nname = "my-experiments"\ndependencies = ["flowvae"]\n\n[tool.other]\nname = "flowvae"\n'


def _git(cwd: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1")
    cmd = ["git", "-c", "user.name=test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false", *args]
    return subprocess.run(cmd, cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout.strip()


def _repo(root: Path, pyproject: str, package: str) -> tuple[Path, str]:
    """A git repository at ``root`` holding ``pyproject`` and a package folder ``package``: (package dir, HEAD)."""
    root.mkdir(parents=True)
    (root / "pyproject.toml").write_text(pyproject)
    pkg = root / package
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text('__version__ = "0.1.0"\n')
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "init")
    return pkg, _git(root, "rev-parse", "HEAD")


@needs_git
def test_installed_inside_another_repository_records_no_commit(tmp_path, monkeypatch):
    # The user's own project, with flowvae installed into a virtual environment inside it.
    user = tmp_path / "user-project"
    pkg, user_head = _repo(user, OTHER_PYPROJECT, ".venv/lib/python3.11/site-packages/flowvae")
    monkeypatch.setattr(environment, "_package_dir", lambda: pkg)
    monkeypatch.chdir(user)
    assert environment._git_commit() is None
    # GIT_DIR pointing at the user's repository changes nothing either.
    monkeypatch.setenv("GIT_DIR", str(user / ".git"))
    assert environment._git_commit() is None
    record = environment.environment_record(torch.device("cpu"))
    assert record["git_commit"] is None and record["git_commit"] != user_head
    assert record["flowvae"]  # the installed version is still recorded


@needs_git
def test_vendored_copy_inside_another_repository_records_no_commit(tmp_path, monkeypatch):
    user = tmp_path / "user-project"
    pkg, _ = _repo(user, OTHER_PYPROJECT, "third_party/flowvae/src/flowvae")
    # The vendored copy even brings flowvae's pyproject.toml, but the work tree is the user's.
    (user / "third_party/flowvae/pyproject.toml").write_text(FLOWVAE_PYPROJECT)
    monkeypatch.setattr(environment, "_package_dir", lambda: pkg)
    assert environment._git_commit() is None


@needs_git
def test_package_outside_any_repository_records_no_commit(tmp_path, monkeypatch):
    pkg = tmp_path / "site-packages" / "flowvae"
    pkg.mkdir(parents=True)
    _repo(tmp_path / "cwd-repo", FLOWVAE_PYPROJECT, "src/flowvae")  # git must not look at the current directory
    monkeypatch.chdir(tmp_path / "cwd-repo")
    monkeypatch.setattr(environment, "_package_dir", lambda: pkg)
    if subprocess.run(["git", "rev-parse"], cwd=pkg, capture_output=True).returncode == 0:
        pytest.skip("tmp_path is itself inside a git work tree")
    assert environment._git_commit() is None


@needs_git
def test_checkout_of_flowvae_records_its_commit(tmp_path, monkeypatch):
    pkg, head = _repo(tmp_path / "flowvae", FLOWVAE_PYPROJECT, "src/flowvae")
    monkeypatch.setattr(environment, "_package_dir", lambda: pkg)
    monkeypatch.chdir(tmp_path)
    assert environment._git_commit() == head


def test_real_package_records_a_commit_or_none():
    commit = environment._git_commit()
    assert commit is None or re.fullmatch(r"[0-9a-f]{40}", commit), commit
    if shutil.which("git") is None:
        assert commit is None
    assert environment.environment_record(torch.device("cpu"))["git_commit"] == commit


def test_project_name_is_read_from_the_project_table(tmp_path):
    cases = {
        FLOWVAE_PYPROJECT: True,
        "[project]  # the package\nversion = '1'\nname = 'flowvae'\n": True,
        OTHER_PYPROJECT: False,
        '[project]\nname = "flowvae-extras"\n': False,
        '[project.urls]\nname = "flowvae"\n': False,
    }
    for i, (text, expected) in enumerate(cases.items()):
        root = tmp_path / str(i)
        root.mkdir()
        (root / "pyproject.toml").write_text(text)
        assert environment._is_flowvae_project(root) is expected, text
    assert environment._is_flowvae_project(tmp_path / "missing") is False
