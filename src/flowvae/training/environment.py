"""The environment record written into every run folder."""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
from pathlib import Path

import torch

from ..devices import resolve_device, tune_cpu_allocator

# resolve_device and tune_cpu_allocator live in flowvae.devices (below the model layer); named here too
__all__ = ["cpu_model", "environment_record", "resolve_device", "tune_cpu_allocator"]


def _package_dir() -> Path:
    """The folder of the imported ``flowvae`` package (``src/flowvae`` in a checkout)."""
    return Path(__file__).resolve().parent.parent


_PROJECT_TABLE = re.compile(r"^\[project\][ \t]*(?:#[^\n]*)?$(.*?)(?=^\[|\Z)", re.MULTILINE | re.DOTALL)
_FLOWVAE_NAME = re.compile(r"""^name[ \t]*=[ \t]*(["'])flowvae\1""", re.MULTILINE)
_COMMIT = re.compile(r"[0-9a-f]{40}(?:[0-9a-f]{24})?")  # SHA-1, or SHA-256 object names


def _is_flowvae_project(root: Path) -> bool:
    """Whether ``root/pyproject.toml`` declares the ``flowvae`` project (``name = "flowvae"`` in ``[project]``)."""
    try:
        text = (root / "pyproject.toml").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return False
    table = _PROJECT_TABLE.search(text)
    return bool(table and _FLOWVAE_NAME.search(table.group(1)))


def _git_commit() -> str | None:
    """flowvae's own commit when its package is part of a checkout of the flowvae repository, else None.

    git runs in the package's folder, never in the current directory, with the caller's ``GIT_*``
    variables (``GIT_DIR``, ``GIT_WORK_TREE``, ...) removed so that they cannot point it elsewhere. An
    installation inside some other repository (a virtual environment or a vendored copy in the user's
    project) is rejected: the work tree that holds the package must be flowvae's, i.e. its top level
    must hold a ``pyproject.toml`` naming the ``flowvae`` project.
    """
    pkg = _package_dir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    try:
        out = subprocess.run(["git", "rev-parse", "--show-toplevel", "HEAD"], cwd=pkg, env=env,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):  # no git, or the package folder is gone
        return None
    lines = out.stdout.split("\n")
    if out.returncode != 0 or len(lines) < 2:
        return None
    top, commit = Path(lines[0]).resolve(), lines[1].strip()
    if not (pkg.is_relative_to(top) and _is_flowvae_project(top) and _COMMIT.fullmatch(commit)):
        return None
    return commit


def cpu_model() -> str | None:
    """The CPU's model name (``/proc/cpuinfo`` on Linux), or None when unknown."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def environment_record(device: torch.device) -> dict:
    """Versions, git commit and hardware, as a JSON-ready dict.

    ``git_commit`` is flowvae's own commit when it runs from a checkout of its repository, and None
    otherwise (an installed package: ``flowvae`` then holds its version).
    """
    import numpy

    from ..version import __version__

    rec = {
        "flowvae": __version__,
        "git_commit": _git_commit(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),  # the vector ISA torch dispatches to, e.g. AVX512
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        rec["gpu"] = torch.cuda.get_device_name(device)
        rec["cuda"] = torch.version.cuda
    return rec
