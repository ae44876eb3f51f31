"""The download page: what a browser gets at ``/api/v1/archive/{path}`` (it asks for
``text/html``), a small self-contained HTML page, with the archive behind a Download button.

Pure rendering: every text that came from the catalog or the request is escaped here, and the
page loads nothing (no script, no font, no stylesheet, no image from anywhere: a beamline's
network may have no internet), which its Content-Security-Policy also tells the browser.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from html import escape
from typing import Any

from ..rules.problems import clip

#: No script, no request of any kind from the page; inline styles only.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
#: A metadata summary shows this many keys, each value cut to this many characters.
SUMMARY_KEYS = 20
SUMMARY_CHARS = 120

_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:52rem;padding:0 1rem;
color:#1d2433}
nav{font-size:1.05rem;margin-bottom:1rem}nav a{color:#2456a6}
h1{font-size:1.4rem;margin:.2rem 0 1rem;word-break:break-all}
table{border-collapse:collapse;margin:.5rem 0 1rem}
td,th{border-bottom:1px solid #dde2ea;padding:.3rem .8rem .3rem 0;text-align:left;
vertical-align:top}th{font-weight:600;white-space:nowrap}
td code{word-break:break-all}
.download{display:inline-block;background:#2456a6;color:#fff;padding:.6rem 1.4rem;
border-radius:.3rem;text-decoration:none;font-weight:600;font-size:1.05rem}
.error{background:#fdecea;border-left:4px solid #c62828;padding:.6rem 1rem}
.muted{color:#5b6577}
"""


@dataclass(frozen=True)
class PageLink:
    """A link's text and its URL (already built from quoted parts)."""

    text: str
    url: str


@dataclass(frozen=True)
class DownloadPage:
    """What the page shows of a node and of the archive of it."""

    #: The node's path segments (empty: the server's root).
    segments: list[str]
    #: The node itself and each parent up to the root, root first: links to their pages.
    breadcrumbs: list[PageLink]
    metadata: dict[str, Any]
    #: The request's search, (name, field, value) of ``filter[name][condition][field]=value``.
    filters: list[tuple[str, str, str]]
    #: The node in Tiled's own web UI.
    ui_url: str
    #: The ZIP: the same request with ``format=zip``.
    download_url: str
    file_name: str
    #: Nodes (the node, its parents and the readable subtree), data files and the ZIP's
    #: exact length; None when the node cannot be archived (``error`` says why).
    nodes: int | None = None
    files: int | None = None
    size: int | None = None
    error: str | None = None
    notes: list[str] = field(default_factory=list)


def render(page: DownloadPage) -> str:
    """The page's HTML."""
    title = "/".join(page.segments) or "(root)"
    crumbs = " / ".join(_link(link) for link in page.breadcrumbs)
    rows = [
        ("Node", f"<code>/{_text('/'.join(page.segments))}</code>"),
        ("In Tiled", _link(PageLink("open in Tiled's browser", page.ui_url))),
    ]
    if page.filters:
        shown = "<br>".join(
            f"<code>{_text(name)}</code> ({_text(field)}): <code>{_text(value)}</code>"
            for name, field, value in page.filters
        )
        rows.append(("Search", shown))
    if page.error is None:
        rows += [
            ("Nodes", f"{page.nodes:,}"),
            ("Data files", f"{page.files:,}"),
            ("Size", f"{_human(page.size or 0)} ({page.size:,} bytes, exact)"),
            ("File", f"<code>{_text(page.file_name)}</code> (a tiled-archive ZIP)"),
        ]
    table = "".join(f"<tr><th>{name}</th><td>{value}</td></tr>" for name, value in rows)
    if page.error is None:
        action = (
            f'<p><a class="download" href="{escape(page.download_url)}" download>Download</a></p>'
        )
    else:
        action = f'<p class="error">This node cannot be archived: {_text(page.error, 2000)}</p>'
    notes = "".join(f'<p class="muted">{_text(note)}</p>' for note in page.notes)
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width,initial-scale=1">'
        f"<title>Archive of {_text(title)}</title><style>{_STYLE}</style></head><body>"
        f"<nav>{crumbs}</nav><h1>Archive of {_text(title)}</h1>"
        f"<table>{table}</table>{action}"
        f"<h2>Metadata</h2>{_metadata(page.metadata)}{notes}"
        '<p class="muted">The archive holds the node, its parents and what you may read below '
        "it: open it with <code>tiled_archive.open()</code>, check it with "
        "<code>tiled-archive validate</code>, or serve it with <code>tiled serve catalog</code> "
        "once extracted.</p></body></html>\n"
    )


def _text(text: str, limit: int = 300) -> str:
    """Text from the catalog or the request as HTML text: escaped, its control and
    bidirectional-override characters shown as escapes (a name must read as what it is), at
    most ``limit`` characters, the middle elided."""
    return escape(clip(text, limit))


def _link(link: PageLink) -> str:
    return f'<a href="{escape(link.url)}">{_text(link.text)}</a>'


def _metadata(metadata: dict[str, Any]) -> str:
    if not metadata:
        return '<p class="muted">none</p>'
    rows = []
    for key, value in list(metadata.items())[:SUMMARY_KEYS]:
        text = json.dumps(value, default=str, ensure_ascii=False)
        shown_key, shown_value = _text(str(key), SUMMARY_CHARS), _text(text, SUMMARY_CHARS)
        rows.append(f"<tr><th>{shown_key}</th><td><code>{shown_value}</code></td></tr>")
    more = len(metadata) - SUMMARY_KEYS
    tail = f'<p class="muted">and {more:,} more keys</p>' if more > 0 else ""
    return f"<table>{''.join(rows)}</table>{tail}"


def _human(size: int) -> str:
    value = float(size)
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def wants_page(accept: str | None, params: Any) -> bool:
    """Whether a request is a browser's navigation to the page: it accepts ``text/html`` and
    does not ask for ``format=zip`` (the Download button's link)."""
    if params.get("format") is not None:
        return params.get("format") in ("html", "text/html")
    return "text/html" in (accept or "")


__all__ = ["CONTENT_SECURITY_POLICY", "DownloadPage", "PageLink", "render", "wants_page"]
