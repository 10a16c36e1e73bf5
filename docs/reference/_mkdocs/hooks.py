"""MkDocs hook: links that leave ``docs/`` for another file of the repository (``../src/...``,
``../README.md``) work when the Markdown is read on GitHub; on the site they become links to the
file in the repository (``repo_url``/blob/main/...). Only targets that exist are rewritten, so a
broken link still fails ``mkdocs build --strict``.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path

_LINK = re.compile(r"\]\((?P<target>[^)\s#]+)(?P<anchor>#[^)\s]*)?\)")
_BRANCH = "main"


def on_page_markdown(markdown, page, config, files):  # noqa: ANN001, ANN201 - the MkDocs hook signature
    docs = Path(config["docs_dir"]).resolve()
    root = docs.parent
    base = (config.get("repo_url") or "").rstrip("/")
    if not base:
        return markdown
    page_dir = posixpath.dirname(page.file.src_uri)

    def rewrite(m: re.Match) -> str:
        target = m.group("target")
        if "://" in target or target.startswith(("/", "mailto:")):
            return m.group(0)
        path = (docs / page_dir / target).resolve()
        try:
            path.relative_to(docs)
            return m.group(0)  # inside docs/: MkDocs resolves and checks it
        except ValueError:
            pass
        try:
            rel = path.relative_to(root).as_posix()
        except ValueError:
            return m.group(0)
        if not path.exists():
            return m.group(0)
        kind = "tree" if path.is_dir() else "blob"
        return f"]({base}/{kind}/{_BRANCH}/{rel}{m.group('anchor') or ''})"

    return _LINK.sub(rewrite, markdown)
