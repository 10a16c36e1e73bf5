"""An import-linter contract type that import-linter lacks: no module imports another module's private
names (``from flowvae.report import _finite``). Private *modules* are checked by import-linter's own
``private_modules`` contract; this one reads the names of ``from X import name`` statements, which
its import graph does not keep.

Used by ``[tool.importlinter]`` in pyproject.toml (``contract_types``); ``make lint`` runs
``lint-imports`` with this folder on ``PYTHONPATH``.
"""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import grimp
from importlinter.application import output
from importlinter.domain import fields
from importlinter.domain.contract import Contract, ContractCheck


def _source(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    return Path(spec.origin) if spec is not None and spec.origin and spec.origin.endswith(".py") else None


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _absolute(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[: len(base) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


class PrivateNamesContract(Contract):
    """No module of ``containers`` imports a private name (``_x``, not ``__x__``) from another module.

    A name imported from a package (``from flowvae.cli import _x``) counts too, unless the importer
    is inside that package and the name is one of its own submodules (``from . import _layout``).
    """

    type_name = "private_names"

    containers = fields.SetField(subfield=fields.StringField())

    def check(self, graph: grimp.ImportGraph, verbose: bool) -> ContractCheck:
        found: list[tuple[str, str, str, int]] = []
        for container in sorted(self.containers):  # type: ignore[attr-defined]
            for module in sorted({container, *graph.find_descendants(container)}):
                path = _source(module)
                if path is None:
                    continue
                is_package = path.name == "__init__.py"
                for node in ast.walk(ast.parse(path.read_text(), str(path))):
                    if not isinstance(node, ast.ImportFrom):
                        continue
                    target = _absolute(module, is_package, node)
                    if not target.startswith(container) or target == module:
                        continue
                    for alias in node.names:
                        if not _private(alias.name):
                            continue
                        submodule = f"{target}.{alias.name}"
                        if submodule in graph.modules and module.startswith(target + "."):
                            continue  # a private submodule of the importer's own package
                        found.append((module, target, alias.name, node.lineno))
        return ContractCheck(kept=not found, warnings=[], metadata={"found": found})

    def render_broken_contract(self, check: ContractCheck) -> None:
        output.print_error("Modules may not import other modules' private names:", bold=False)
        output.new_line()
        for module, target, name, line in check.metadata["found"]:
            output.print_error(f"- {module} imports {name} from {target} (l.{line})", bold=False)
        output.new_line()
