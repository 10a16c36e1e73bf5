#!/usr/bin/env python
"""Generate docs/api.md, the API reference of flowvae, from the docstrings of its public objects.

Documented: every name in ``__all__`` of ``flowvae``, ``flowvae.config``, ``flowvae.data``,
``flowvae.evaluation``, ``flowvae.flows``, ``flowvae.models`` and ``flowvae.training``. For each
object the page gives its signature (``inspect.signature``) and its own docstring; classes also
list their bases, the fields of a dataclass (type, default, and the comment written beside the
field in the source) and the public methods and properties defined in the class itself. A name
exported by several of these modules is documented once, in the most specific module that
exports it (for example ``FlowVAE`` under ``flowvae.models``), and linked from the others.

The output is deterministic: modules, names and methods are sorted, memory addresses are removed
from value representations, and nothing depends on the time or the machine. Running the script
twice gives the same file.

Usage (from the repository root)::

    OMP_NUM_THREADS=1 .venv/bin/python docs/gen_api.py            # writes docs/api.md
    OMP_NUM_THREADS=1 .venv/bin/python docs/gen_api.py --check    # exit 1 if docs/api.md is stale
    OMP_NUM_THREADS=1 .venv/bin/python docs/gen_api.py -o -       # print to standard output

Imports only; nothing is trained or computed. The package is imported from ``src/`` of the
checkout this script belongs to, so the page describes that checkout.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import inspect
import os
import re
import sys
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "src"))

MODULES = ("flowvae", "flowvae.config", "flowvae.data", "flowvae.evaluation", "flowvae.flows",
           "flowvae.models", "flowvae.training")
DEFAULT_OUT = HERE / "api.md"

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|exc|obj):`(~?)([^`]+)`")
_SECTION = re.compile(r"^(Args|Arguments|Parameters|Returns|Return|Yields|Raises|Attributes|Example|Examples|"
                      r"Note|Notes|Warning|Warnings):\s*$")
_ENTRY_SECTIONS = {"Args", "Arguments", "Parameters", "Raises", "Attributes"}
_SKIP_MEMBERS = frozenset({"extra_repr"})  # torch.nn.Module's printing hook, not API
_FIELD_COMMENT = re.compile(r"^\s+(\w+)\s*:[^#]*#\s*(.*\S)\s*$")


# ----------------------------------------------------------------------------------------------
# Text helpers


def anchor(qualname: str) -> str:
    """A stable HTML id for ``qualname`` (dots become dashes)."""
    return qualname.replace(".", "-").replace("_", "-").lower()


def clean(text: str) -> str:
    """Remove memory addresses from a ``repr`` or signature, so the output is reproducible."""
    return _ADDRESS.sub("", text)


def _roles(text: str) -> str:
    """Sphinx roles to Markdown code: :class:`~a.b.C` -> `C`, :func:`a.f` -> `a.f`."""
    def sub(m: re.Match) -> str:
        target = m.group(2)
        if m.group(1):
            target = target.rsplit(".", 1)[-1]
        return f"`{target}`"
    return re.sub(r"``([^`]+)``", r"`\1`", _ROLE.sub(sub, text))


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def docstring_to_markdown(doc: str) -> str:
    """Render a Google-style docstring as Markdown.

    Section headers (``Args:``, ``Returns:``, ``Raises:`` ...) become bold lines; the entries of
    ``Args``/``Raises``/``Attributes`` become bullet items; a paragraph ending in ``::`` is followed
    by its indented block as a fenced code block. Other lines are kept, with their indentation
    removed where Markdown would otherwise read them as code.
    """
    lines = _roles(doc).splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        m = _SECTION.match(line)
        if m and _indent(line) == 0:
            name = m.group(1)
            body: list[str] = []
            i += 1
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > 0):
                body.append(lines[i])
                i += 1
            while body and not body[-1].strip():
                body.pop()
            out.append(f"**{name}:**")
            out.append("")
            if name in _ENTRY_SECTIONS:
                base = min((_indent(b) for b in body if b.strip()), default=0)
                items: list[str] = []
                for b in body:
                    if not b.strip():
                        continue
                    if _indent(b) == base:
                        key, sep, rest = b.strip().partition(":")
                        items.append(f"- `{key}`:{rest}" if sep and " " not in key.replace(", ", ",") else f"- {b.strip()}")
                    elif items:
                        items[-1] += " " + b.strip()
                out.extend(items)
            elif name.startswith("Example"):
                out.append("```python")
                base = min((_indent(b) for b in body if b.strip()), default=0)
                out.extend(b[base:] for b in body)
                out.append("```")
            else:
                out.append(" ".join(b.strip() for b in body if b.strip()))
            out.append("")
            continue
        if line.rstrip().endswith("::"):
            text = line.rstrip()[:-2].rstrip()
            if text:
                out.append(text + ":")
            i += 1
            block: list[str] = []
            while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > _indent(line)):
                block.append(lines[i])
                i += 1
            while block and not block[-1].strip():
                block.pop()
            while block and not block[0].strip():
                block.pop(0)
            base = min((_indent(b) for b in block if b.strip()), default=0)
            out.append("")
            out.append("```")
            out.extend(b[base:] for b in block)
            out.append("```")
            out.append("")
            continue
        # Deeply indented prose would become a Markdown code block; keep list nesting (2 spaces) only.
        out.append(line if _indent(line) < 4 else "  " + line.lstrip())
        i += 1
    text = "\n".join(out)
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def value_repr(value: object, limit: int = 400) -> str:
    """A short, reproducible representation of a module-level constant."""
    if isinstance(value, dict):
        parts = []
        for k, v in value.items():
            shown = f"<{type(v).__name__} {getattr(v, '__name__', '')}>".replace(" >", ">") if callable(v) else repr(v)
            parts.append(f"{k!r}: {shown}")
        text = "{" + ", ".join(parts) + "}"
    else:
        text = repr(value)
    text = clean(text)
    return text if len(text) <= limit else text[: limit - 5] + " ...)"


def _param_strings(sig: inspect.Signature) -> list[str]:
    """The parameters of ``sig`` as ``str(Signature)`` writes them, ``/`` and ``*`` markers included."""
    text = str(sig.replace(return_annotation=inspect.Signature.empty))[1:-1]
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if cur.strip():
        out.append(cur.strip())
    return out


class _Ann:
    """An annotation shown without quotes (``from __future__ import annotations`` stores strings)."""

    def __init__(self, text: str):
        self.text = text

    def __repr__(self) -> str:
        return self.text


def _ann(annotation: object) -> object:
    if annotation is inspect.Parameter.empty:
        return annotation
    return _Ann(annotation if isinstance(annotation, str) else inspect.formatannotation(annotation))


def signature(obj: object, name: str, drop_self: bool = False, returns: bool = True) -> str:
    """``name(params) -> return`` with one parameter per line when it is long.

    ``drop_self`` leaves out the first parameter of a method (``self``/``cls``); ``returns=False``
    leaves out the return annotation (a class's ``__init__`` returns ``None``).
    """
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return f"{name}(...)"
    plist = list(sig.parameters.values())
    if drop_self and plist and plist[0].name in ("self", "cls"):
        plist = plist[1:]
    sig = sig.replace(parameters=[p.replace(annotation=_ann(p.annotation)) for p in plist])
    params = [clean(s) for s in _param_strings(sig)]
    ret = ""
    if returns and sig.return_annotation is not inspect.Signature.empty:
        ret = f" -> {clean(repr(_ann(sig.return_annotation)))}"
    one_line = f"{name}({', '.join(params)}){ret}"
    if len(one_line) <= 96:
        return one_line
    return f"{name}(\n" + "".join(f"    {p},\n" for p in params) + f"){ret}"


def own_doc(obj: object) -> str | None:
    """The object's own docstring (never one inherited from a base class such as ``nn.Module``)."""
    doc = obj.__dict__.get("__doc__") if isinstance(obj, type) else getattr(obj, "__doc__", None)
    if not doc or not doc.strip():
        return None
    return inspect.cleandoc(doc)


# ----------------------------------------------------------------------------------------------
# Rendering of objects


def _field_comments(cls: type) -> dict[str, str]:
    """Comments written after dataclass fields in the source (``kind: str = "x"  # what it is``)."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out = {}
    for line in source.splitlines():
        m = _FIELD_COMMENT.match(line)
        if m and "(" not in line.split(":")[0]:
            out.setdefault(m.group(1), m.group(2))
    return out


def _field_default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return value_repr(f.default, 120)
    if f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        try:
            made = f.default_factory()  # type: ignore[misc]
        except Exception:  # noqa: BLE001 - a factory that needs arguments: show its name
            return f"{getattr(f.default_factory, '__name__', 'factory')}()"
        if dataclasses.is_dataclass(made):
            return f"{type(made).__name__}()"
        return value_repr(made, 120)
    return "(required)"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_dataclass_fields(cls: type) -> list[str]:
    comments = _field_comments(cls)
    rows = ["| field | type | default | note |", "| --- | --- | --- | --- |"]
    for f in dataclasses.fields(cls):
        ftype = f.type if isinstance(f.type, str) else inspect.formatannotation(f.type)
        rows.append(f"| `{f.name}` | `{_md_cell(str(ftype))}` | `{_md_cell(_field_default(f))}` | "
                    f"{_md_cell(_roles(comments.get(f.name, '')))} |")
    return ["**Fields:**", "", *rows, ""]


def _members(cls: type) -> list[tuple[str, str, object]]:
    """Public methods and properties defined in ``cls`` itself: ``(name, kind, function)``, sorted."""
    found = []
    dc_fields = {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set()
    for name, raw in sorted(cls.__dict__.items()):
        if name.startswith("_") or name in dc_fields or name in _SKIP_MEMBERS:
            continue
        if isinstance(raw, property):
            found.append((name, "property", raw))
        elif isinstance(raw, staticmethod):
            found.append((name, "staticmethod", raw.__func__))
        elif isinstance(raw, classmethod):
            found.append((name, "classmethod", raw.__func__))
        elif inspect.isfunction(raw):
            found.append((name, "method", raw))
    return found


def _inherited_doc(cls: type, name: str) -> tuple[str, str] | None:
    """The first docstring of ``name`` found on a flowvae base class of ``cls``."""
    for base in cls.__mro__[1:]:
        if not base.__module__.startswith("flowvae"):
            continue
        raw = base.__dict__.get(name)
        doc = getattr(raw.fget if isinstance(raw, property) else raw, "__doc__", None) if raw is not None else None
        if doc and doc.strip():
            return f"{base.__module__}.{base.__qualname__}", inspect.cleandoc(doc)
    return None


def render_class(qual: str, cls: type) -> list[str]:
    out = ["```python", f"class {signature(cls, cls.__name__, returns=False)}", "```", ""]
    bases = [b for b in cls.__bases__ if b is not object]
    if bases:
        names = ", ".join(f"`{b.__module__}.{b.__qualname__}`" for b in bases)
        out += [f"Bases: {names}", ""]
    doc = own_doc(cls)
    if doc:
        out += [docstring_to_markdown(doc), ""]
    if dataclasses.is_dataclass(cls):
        out += render_dataclass_fields(cls)
    members = _members(cls)
    if members:
        out += ["**Members:**", ""]
        for name, kind, fn in members:
            if kind == "property":
                out += [f"- **`{name}`** (property)"]
                doc = (fn.fget.__doc__ or "") if fn.fget else ""
                doc = inspect.cleandoc(doc) if doc.strip() else ""
            else:
                prefix = "" if kind == "method" else f"@{kind} "
                sig = signature(fn, name, drop_self=kind != "staticmethod")
                if "\n" in sig:
                    out += [f"- {prefix}**`{name}`**", "", "  ```python",
                            *("  " + s for s in sig.splitlines()), "  ```"]
                else:
                    out += [f"- {prefix}`{sig}`"]
                doc = own_doc(fn) or ""
            source = ""
            if not doc:
                inherited = _inherited_doc(cls, name)
                if inherited:
                    source, doc = inherited
            if doc:
                body = docstring_to_markdown(doc)
                if source:
                    body = f"(Documented on `{source}`.) " + body
                out += [""] + ["  " + line if line else "" for line in body.splitlines()]
            out += [""]
    return out


def render_function(qual: str, fn: object) -> list[str]:
    out = ["```python", signature(fn, fn.__name__), "```", ""]
    doc = own_doc(fn)
    if doc:
        out += [docstring_to_markdown(doc), ""]
    return out


def render_constant(qual: str, value: object) -> list[str]:
    return ["```python", f"{qual.rsplit('.', 1)[-1]}: {type(value).__name__} = {value_repr(value)}", "```", ""]


# ----------------------------------------------------------------------------------------------
# The page


def _kind(obj: object) -> str:
    if inspect.isclass(obj):
        return "dataclass" if dataclasses.is_dataclass(obj) else "class"
    if inspect.isfunction(obj) or inspect.isbuiltin(obj):
        return "function"
    return "constant"


def home_module(name: str, obj: object, exporters: list[str]) -> str:
    """The most specific documented module that exports ``name`` and contains its definition."""
    defined = getattr(obj, "__module__", None) if (inspect.isclass(obj) or inspect.isfunction(obj)) else None
    if isinstance(defined, str):
        fits = [m for m in exporters if defined == m or defined.startswith(m + ".")]
        if fits:
            return max(fits, key=len)
    return exporters[0]


def build() -> str:
    import flowvae

    mods = {m: importlib.import_module(m) for m in MODULES}
    exports: dict[str, list[str]] = {m: sorted(set(mod.__all__), key=lambda n: (n.lower(), n)) for m, mod in mods.items()}
    # Where each object is documented (by identity for classes/functions, by module otherwise).
    exporters: dict[int, list[str]] = {}
    for m in MODULES:
        for n in exports[m]:
            obj = getattr(mods[m], n)
            if inspect.isclass(obj) or inspect.isfunction(obj):
                exporters.setdefault(id(obj), []).append(m)
    lines = [
        "# API reference",
        "",
        f"<!-- Generated by docs/gen_api.py from the docstrings of flowvae {flowvae.__version__}; "
        "do not edit by hand: rerun `OMP_NUM_THREADS=1 .venv/bin/python docs/gen_api.py`. -->",
        "",
        "Generated from the docstrings by `docs/gen_api.py`. Every public name (`__all__`) of the "
        "modules below, with its signature and docstring; classes with their bases, dataclass fields "
        "and the public methods defined in the class itself (methods inherited from `torch.nn.Module` "
        "are not listed). A name exported by several modules is documented once, in the most specific "
        "one, and linked from the others. Conventions shared by all flows (the `forward`/`inverse` "
        "contract and the sign of `logdet`) are in the docstring of `flowvae.flows.base`, reproduced "
        "under [flowvae.flows](#module-flowvae-flows).",
        "",
        "## Modules",
        "",
    ]
    for m in MODULES:
        lines.append(f"- [`{m}`](#{anchor('module.' + m)}): {len(exports[m])} public names")
    lines.append("")
    for m in MODULES:
        mod = mods[m]
        lines += [f'<a id="{anchor("module." + m)}"></a>', "", f"## `{m}`", ""]
        doc = own_doc(mod)
        if doc:
            lines += [docstring_to_markdown(doc), ""]
        if m == "flowvae.flows":
            base_doc = own_doc(importlib.import_module("flowvae.flows.base"))
            if base_doc:
                lines += ["The layer contract (docstring of `flowvae.flows.base`):", "",
                          *("> " + line if line else ">" for line in docstring_to_markdown(base_doc).splitlines()), ""]
        lines += ["| name | kind | summary |", "| --- | --- | --- |"]
        entries = []
        for n in exports[m]:
            obj = getattr(mod, n)
            home = m
            if inspect.isclass(obj) or inspect.isfunction(obj):
                home = home_module(n, obj, exporters[id(obj)])
            summary = (own_doc(obj) or "").split("\n\n")[0].replace("\n", " ") if _kind(obj) != "constant" else ""
            summary = _md_cell(_roles(summary))
            if len(summary) > 160:
                summary = summary[:157].rsplit(" ", 1)[0] + " ..."
            link = f"[`{n}`](#{anchor(home + '.' + n)})"
            note = "" if home == m else f" (documented under `{home}`)"
            lines.append(f"| {link} | {_kind(obj)} | {summary}{note} |")
            entries.append((n, obj, home))
        lines.append("")
        for n, obj, home in entries:
            if home != m:
                continue
            qual = f"{m}.{n}"
            lines += [f'<a id="{anchor(qual)}"></a>', "", f"### `{qual}`", ""]
            kind = _kind(obj)
            if kind in ("class", "dataclass"):
                lines += render_class(qual, obj)
            elif kind == "function":
                lines += render_function(qual, obj)
            else:
                lines += render_constant(qual, obj)
    text = "\n".join(lines)
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Generate docs/api.md from flowvae's docstrings.")
    p.add_argument("-o", "--output", default=str(DEFAULT_OUT), help="file to write, or - for stdout [default: docs/api.md]")
    p.add_argument("--check", action="store_true", help="do not write; exit 1 if the file differs from what would be generated")
    args = p.parse_args(argv)
    text = build()
    if args.output == "-":
        sys.stdout.write(text)
        return 0
    out = Path(args.output)
    if args.check:
        current = out.read_text(encoding="utf-8") if out.is_file() else None
        if current != text:
            print(f"{out} is out of date; run docs/gen_api.py", file=sys.stderr)
            return 1
        print(f"{out} is up to date")
        return 0
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out} ({text.count(chr(10))} lines)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
