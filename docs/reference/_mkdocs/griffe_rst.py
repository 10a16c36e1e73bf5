"""Griffe extension for the documentation site (``mkdocs.yml``: ``extensions``).

flowvae's docstrings use Google-style sections (``Args:``, ``Returns:``, ``Raises:``) with
reStructuredText markup inside; this extension turns that markup into Markdown before
mkdocstrings renders it, so that the sources need no change:

* cross-reference roles (``:class:`~flowvae.x.Y```, ``:func:`name```, ``:meth:``, ``:mod:``,
  ``:attr:``, ``:data:``) become links to the object's section where it is documented, resolved
  from the docstring's own scope as Python would (a name that does not resolve stays code);
* literal blocks (a paragraph ending in ``::`` and the indented block after it) become fenced
  code blocks;
* simple tables (``=====  =====`` borders) become Markdown tables;
* grouped entries of an ``Args:`` section (``x1, x2: ...``) become one entry per name, so that
  they match the signature;
* the first paragraph is joined into one line, so that the summary tables (which show a
  docstring's first line) show all of it.

It also documents attributes that have no docstring from what the source says beside them: the
``help=`` of a :func:`flowvae.settings.setting` field, a trailing ``# comment`` on the line of the
assignment, or ``#:`` comment lines just above it.
"""

from __future__ import annotations

import ast
import html
import io
import re
import textwrap
import tokenize
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj|const):`(?P<text>[^`]+)`")
_BORDER = re.compile(r"^ *=+( +=+)+ *$")
_IGNORED_COMMENTS = ("noqa", "type:", "pragma", "fmt:", "isort:")


# ---------------------------------------------------------------------------------------------- roles


def _resolve(target: str, obj: griffe.Object, collection: Any) -> str | None:
    """The canonical path of ``target`` seen from ``obj``'s scope, or None."""
    head, _, rest = target.partition(".")
    if target.startswith(obj.package.name + "."):
        path = target
    else:
        try:
            path = obj.resolve(head) + (f".{rest}" if rest else "")
        except (griffe.NameResolutionError, AttributeError):
            return None
    try:
        found = collection[path]
    except (KeyError, griffe.AliasResolutionError, griffe.CyclicAliasError):
        return None
    try:
        return found.canonical_path
    except (griffe.AliasResolutionError, griffe.CyclicAliasError):
        return found.path


def _roles(text: str, obj: griffe.Object, collection: Any) -> str:
    def sub(m: re.Match) -> str:
        content = m.group("text")
        title, target = None, content
        explicit = re.fullmatch(r"(?s)(.*?)\s*<([^<>]+)>", content)
        if explicit:
            title, target = explicit.group(1), explicit.group(2)
        target = re.sub(r"\s+", "", target)
        short = target.startswith("~")
        target = target.lstrip("~.").removesuffix("()")
        shown = title or (target.rsplit(".", 1)[-1] if short else target)
        path = _resolve(target, obj, collection)
        code = f"<code>{html.escape(shown)}</code>"
        if path is None:
            return code
        return f'<autoref identifier="{html.escape(path)}" optional>{code}</autoref>'

    return _ROLE.sub(sub, text)


# ---------------------------------------------------------------------------------------------- blocks


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip(" "))


def _table(lines: list[str], start: int) -> tuple[list[str], int] | None:
    """The simple table whose top border is ``lines[start]``, as Markdown lines, and the index after it.

    None when the lines do not make a simple table (the text is then left as it is).
    """
    indent = _indent(lines[start])
    cols = [m.start() for m in re.finditer(r"=+", lines[start])]

    def group(i: int) -> tuple[list[list[str]], int] | None:
        rows: list[list[str]] = []
        while i < len(lines) and not (_BORDER.match(lines[i]) and _indent(lines[i]) == indent):
            line = lines[i]
            if not line.strip():
                return None
            cells = [line[a:b].strip() for a, b in zip(cols, [*cols[1:], len(line)])]
            if rows and not cells[0]:
                rows[-1] = [f"{old} {new}".strip() for old, new in zip(rows[-1], cells)]
            else:
                rows.append(cells)
            i += 1
        return (rows, i + 1) if i < len(lines) else None

    first = group(start + 1)
    if first is None:
        return None
    header, (body, end) = [""] * len(cols), first
    if end < len(lines) and lines[end].strip():
        second = group(end)
        if second is None or len(first[0]) != 1:
            return None
        header, (body, end) = first[0][0], second
    pad = " " * indent

    def row(cells: list[str]) -> str:
        return pad + "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    out = ["", row(header), pad + "|" + "|".join(" --- " for _ in cols) + "|", *map(row, body), ""]
    return out, end


def _literal(lines: list[str], start: int) -> tuple[list[str], list[str], int] | None:
    """``lines[start]``, a paragraph line ending in ``::``, and the indented block after it: the
    paragraph line as Markdown, the block fenced, and the index after the block."""
    line = lines[start]
    base = _indent(line)
    j = start + 1
    while j < len(lines) and not lines[j].strip():
        j += 1
    if j == start + 1 or j >= len(lines) or _indent(lines[j]) <= base:
        return None
    end = j
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > base):
        end += 1
    while not lines[end - 1].strip():
        end -= 1
    text = line.rstrip()[:-2]  # RST: "Text::" -> "Text:", "Text ::" -> "Text", "::" -> nothing
    head = ([text.rstrip()] if text.endswith(" ") else [text + ":"]) if text.strip() else []
    pad = " " * base
    block = textwrap.dedent("\n".join(lines[j:end])).split("\n")
    fenced = [pad + "```text", *(pad + b if b else "" for b in block), pad + "```"]
    return ([*head, ""] if head else []), fenced, end


_ARGS_SECTION = re.compile(r"^ *(Args|Arguments|Parameters|Keyword Args|Keyword Arguments|Other Parameters):\s*$")
_GROUPED = re.compile(r"^(?P<pad> *)(?P<names>\*{0,2}\w+(?:, *\*{0,2}\w+)+)(?P<rest>( *\([^)]*\))?:.*)$")


def _split_grouped_args(lines: list[str]) -> list[str]:
    """``a, b: text`` entries of an ``Args:`` section as one entry per name (Google style has one name
    per entry; a grouped entry would not match the signature)."""
    out: list[str] = []
    i = 0
    section_indent: int | None = None
    while i < len(lines):
        line = lines[i]
        if _ARGS_SECTION.match(line):
            section_indent = _indent(line)
        elif line.strip() and section_indent is not None and _indent(line) <= section_indent:
            section_indent = None
        m = _GROUPED.match(line) if section_indent is not None else None
        if m and len(m.group("pad")) > section_indent:
            j = i + 1
            while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) > len(m.group("pad"))):
                j += 1
            while j > i + 1 and not lines[j - 1].strip():
                j -= 1
            for name in m.group("names").split(","):
                out += [m.group("pad") + name.strip() + m.group("rest"), *lines[i + 1:j]]
            i = j
            continue
        out.append(line)
        i += 1
    return out


def _unwrap_summary(lines: list[str]) -> list[str]:
    """The first paragraph on one line: the summary tables show a docstring's first line only, and
    a line break inside a paragraph renders as a space anyway."""
    end = 0
    while end < len(lines) and lines[end].strip():
        if lines[end].startswith((" ", "* ", "- ", "|", "==", "```", ">")) or lines[end].rstrip().endswith("::") \
                or _ARGS_SECTION.match(lines[end]) or re.match(r"^[A-Z][A-Za-z ]*:$", lines[end]):
            return lines
        end += 1
    return [" ".join(line.strip() for line in lines[:end]), *lines[end:]] if end > 1 else lines


def to_markdown(text: str, obj: griffe.Object, collection: Any) -> str:
    """``text`` (a docstring) with its reStructuredText markup turned into Markdown."""
    lines = _split_grouped_args(_unwrap_summary(text.split("\n")))
    segments: list[tuple[bool, list[str]]] = []  # (fenced code, lines)

    def add(code: bool, new: list[str]) -> None:
        if segments and segments[-1][0] == code:
            segments[-1][1].extend(new)
        else:
            segments.append((code, list(new)))

    i = 0
    while i < len(lines):
        line = lines[i]
        if _BORDER.match(line) and (table := _table(lines, i)):
            block, i = table
            add(False, block)
        elif line.rstrip().endswith("::") and not line.lstrip().startswith("..") and (lit := _literal(lines, i)):
            head, block, i = lit
            add(False, head)
            add(True, block)
        else:
            add(False, [line])
            i += 1
    return "\n".join("\n".join(ls) if code else _roles("\n".join(ls), obj, collection) for code, ls in segments)


# ---------------------------------------------------------------------------------------------- attributes


def _help_keyword(node: ast.AST) -> str | None:
    value = getattr(node, "value", None)
    if isinstance(value, ast.Call) and getattr(value.func, "id", getattr(value.func, "attr", None)) == "setting":
        for kw in value.keywords:
            if kw.arg == "help" and isinstance(kw.value, ast.Constant) and isinstance(kw.value.value, str):
                return kw.value.value or None
    return None


class RstMarkup(griffe.Extension):
    """Markdown from reStructuredText markup, and attribute docs from source comments."""

    def __init__(self) -> None:
        super().__init__()
        self._comments: dict[str, dict[int, str]] = {}

    def _file_comments(self, agent: Any) -> dict[int, str]:
        key = str(getattr(agent, "filepath", ""))
        if key not in self._comments:
            found: dict[int, str] = {}
            try:
                for tok in tokenize.generate_tokens(io.StringIO(agent.code).readline):
                    if tok.type == tokenize.COMMENT:
                        found[tok.start[0]] = tok.string
            except (tokenize.TokenError, SyntaxError, AttributeError):
                pass
            self._comments[key] = found
        return self._comments[key]

    def on_attribute_instance(self, *, node: ast.AST | griffe.ObjectNode, attr: griffe.Attribute,
                              agent: Any, **kwargs: Any) -> None:
        if attr.docstring is not None or not isinstance(node, ast.AST):
            return
        text = _help_keyword(node)
        if text is None:
            comments = self._file_comments(agent)
            first, last = node.lineno, getattr(node, "end_lineno", None) or node.lineno
            above = []
            n = first - 1
            while comments.get(n, "").startswith("#:"):
                above.insert(0, comments[n][2:].strip())
                n -= 1
            beside = [comments[k].lstrip("#").strip() for k in range(first, last + 1) if k in comments]
            beside = [c for c in beside if c and not c.startswith(_IGNORED_COMMENTS)]
            text = " ".join(above) or (beside[0] if beside else None)
        if text:
            attr.docstring = griffe.Docstring(text, lineno=node.lineno, parent=attr)

    def on_package(self, *, pkg: griffe.Module, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        seen: set[int] = set()

        def walk(obj: griffe.Object) -> None:
            if id(obj) in seen:
                return
            seen.add(id(obj))
            if obj.docstring is not None:
                obj.docstring.value = to_markdown(obj.docstring.value, obj, loader.modules_collection)
            for member in obj.members.values():
                if not member.is_alias:
                    walk(member)

        walk(pkg)
