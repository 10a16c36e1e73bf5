"""The documentation site (mkdocs.yml): it builds with ``mkdocs build --strict`` (no warning: every
link, nav entry and docstring resolves), its API reference documents every public name, and every
command has a page in the nav. Skipped without the ``[docs]`` extra (``pip install -e ".[docs]"``).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import REPO

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocstrings_handlers.python")

import flowvae  # noqa: E402

ROOT = REPO
DOCS = ROOT / "docs"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1", "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(ROOT / "mkdocs.yml"),
                          "--site-dir", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    warnings = [line for line in res.stderr.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert res.returncode == 0 and not warnings, "mkdocs build --strict failed:\n" + "\n".join(warnings or
                                                                                                 [res.stderr[-3000:]])
    return out


def _public_modules() -> list[str]:
    """``flowvae`` and every module under it without a private part (``_name``) in its dotted name."""
    names = ["flowvae"]
    for info in pkgutil.walk_packages(flowvae.__path__, "flowvae."):
        if not any(part.startswith("_") for part in info.name.split(".")[1:]):
            names.append(info.name)
    return names


def _reference_ids(site: Path) -> set[str]:
    ids: set[str] = set()
    for page in (site / "reference").rglob("*.html"):
        ids.update(re.findall(r'\bid="([^"]+)"', page.read_text(encoding="utf-8")))
    return ids


def _nav_pages() -> list[str]:
    from mkdocs.config import load_config

    pages: list[str] = []

    def walk(entry: object) -> None:
        if isinstance(entry, str):
            pages.append(entry)
        elif isinstance(entry, dict):
            for value in entry.values():
                walk(value)
        elif isinstance(entry, list):
            for value in entry:
                walk(value)

    walk(load_config(str(ROOT / "mkdocs.yml"))["nav"])
    return pages


def test_strict_build_writes_the_site(site: Path) -> None:
    for page in ("index.html", "reference/index.html", "tutorials/own-folder/index.html", "commands/train/index.html"):
        assert (site / page).is_file(), page


def test_every_public_module_has_a_section(site: Path) -> None:
    """A new module must be added to a page of docs/reference/ (a ``::: flowvae.x.y`` line)."""
    ids = _reference_ids(site)
    missing = [name for name in _public_modules() if name not in ids]
    assert not missing, f"modules without a ::: directive in docs/reference/*.md: {missing}"


def test_every_public_name_is_documented(site: Path) -> None:
    """Each name in ``__all__`` of ``flowvae``, of each subpackage and of each public module has a
    section on the API pages: under its own dotted name or under the module that defines it."""
    ids = _reference_ids(site)
    modules = {name: importlib.import_module(name) for name in _public_modules()}
    loaded = [m for name, m in sorted(sys.modules.items()) if name == "flowvae" or name.startswith("flowvae.")]
    missing = []
    for name, module in modules.items():
        for public in getattr(module, "__all__", ()):
            obj = getattr(module, public)
            where = {f"{name}.{public}"}
            if getattr(obj, "__module__", "").startswith("flowvae") and hasattr(obj, "__qualname__"):
                where.add(f"{obj.__module__}.{obj.__qualname__}")
            where.update(f"{m.__name__}.{public}" for m in loaded if vars(m).get(public, where) is obj)
            if not where & ids:
                missing.append(f"{name}.{public}")
    assert not missing, f"public names not on the API pages (docs/reference/): {missing}"
    for package in ("flowvae", "flowvae.data", "flowvae.evaluation", "flowvae.flows", "flowvae.models",
                    "flowvae.training"):
        assert modules[package].__all__, package


def test_every_command_page_is_in_the_nav() -> None:
    nav = set(_nav_pages())
    pages = sorted(p.relative_to(DOCS).as_posix() for p in (DOCS / "commands").glob("*.md"))
    assert pages and not [p for p in pages if p not in nav], f"not in the nav of mkdocs.yml: {set(pages) - nav}"
    missing = [p for p in nav if not p.startswith(("http://", "https://")) and not (DOCS / p).is_file()]
    assert not missing, missing


def test_every_command_has_a_page() -> None:
    from flowvae.cli.main import COMMANDS

    missing = [name for name in COMMANDS if not (DOCS / "commands" / f"{name}.md").is_file()]
    assert not missing, f"commands without docs/commands/NAME.md: {missing}"


def test_no_reference_to_the_removed_generator() -> None:
    """docs/api.md and its generator docs/gen_api.py were replaced by the site (docs/reference/);
    no page may point at them (docs/README.md is not part of the site, so the build does not check it)."""
    pages = [p for p in sorted(DOCS.rglob("*.md")) if p.parent != DOCS / "reference"]  # reference/api.md is new
    stale = [page.relative_to(DOCS).as_posix() for page in pages
             if re.search(r"gen_api\.py|\]\((?:\.\./)?api\.md", page.read_text(encoding="utf-8"))]
    assert not stale, f"pages that still refer to docs/api.md or docs/gen_api.py: {stale}"
