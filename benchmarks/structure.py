"""The package's structure in figures, for the closing report of issue 30 ("One house"): modules in
import cycles, imports of another module's private names, the largest modules and the longest
functions, and the README's length. Reads source files only (no import of flowvae), so it measures
any checkout:

    python benchmarks/structure.py                 # this checkout
    python benchmarks/structure.py --root /tmp/old  # another checkout (e.g. a git worktree)

Cycles are the strongly connected components of the graph of module-level and function-level
``import`` statements between modules of ``src/flowvae``, the package's own ``__init__`` (the public
facade, which imports the layers it offers) left out; a package counts as the module of its
``__init__.py``.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path


def modules(src: Path) -> dict[str, Path]:
    out = {}
    for p in sorted(src.rglob("*.py")):
        name = ".".join(p.relative_to(src.parent).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def _target(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    parts = parts[: len(parts) - node.level + 1]
    return ".".join(parts + ([node.module] if node.module else []))


def graph(mods: dict[str, Path]) -> tuple[dict[str, set[str]], list[tuple[str, str, str]]]:
    """Imports between modules, and the private names imported across modules."""
    edges: dict[str, set[str]] = {m: set() for m in mods}
    private = []
    for m, p in mods.items():
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            if isinstance(node, ast.ImportFrom):
                target = _target(m, p.name == "__init__.py", node)
                for alias in node.names:
                    full = f"{target}.{alias.name}"
                    if full in mods:
                        edges[m].add(full)
                    elif target in mods:
                        edges[m].add(target)
                        dunder = alias.name.startswith("__") and alias.name.endswith("__")
                        if alias.name.startswith("_") and not dunder and target != m:
                            private.append((m, target, alias.name))
            elif isinstance(node, ast.Import):
                edges[m].update(a.name for a in node.names if a.name in mods)
    return edges, private


def cycles(edges: dict[str, set[str]], facade: str) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), without ``facade``."""
    sys.setrecursionlimit(10000)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w == facade:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in edges:
        if v != facade and v not in index:
            visit(v)
    return out


def functions(mods: dict[str, Path]) -> list[tuple[int, str]]:
    """``(lines, module.function)`` of every function and method, longest first."""
    out = []
    for m, p in mods.items():
        for node in ast.walk(ast.parse(p.read_text(), str(p))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno:
                out.append((node.end_lineno - node.lineno + 1, f"{m}.{node.name}"))
    return sorted(out, reverse=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1], help="the checkout")
    parser.add_argument("--top", type=int, default=5, help="largest modules and longest functions to list")
    args = parser.parse_args(argv)
    src = args.root / "src" / "flowvae"
    mods = modules(src)
    edges, private = graph(mods)
    comps = cycles(edges, "flowvae")
    lines = {m: len(p.read_text().splitlines()) for m, p in mods.items()}
    print(f"checkout: {args.root}")
    print(f"modules: {len(mods)}, lines in src/: {sum(lines.values()):,}")
    print(f"modules in import cycles: {sum(len(c) for c in comps)} in {len(comps)} cycle(s)")
    for c in comps:
        print(f"  {', '.join(c)}")
    print(f"imports of another module's private names: {len(private)}")
    for importer, target, name in private:
        print(f"  {importer} <- {target}.{name}")
    print("largest modules:")
    for m, n in sorted(lines.items(), key=lambda t: -t[1])[: args.top]:
        print(f"  {n:5d}  {m}")
    print("longest functions:")
    for n, f in functions(mods)[: args.top]:
        print(f"  {n:5d}  {f}")
    readme = args.root / "README.md"
    if readme.is_file():
        print(f"README.md: {len(readme.read_text().splitlines())} lines")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
