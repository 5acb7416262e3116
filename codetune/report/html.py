"""A small self-contained HTML page made of sections. Every value is escaped here; a section's `html`
is built only with these helpers, so a config string or a generated program cannot inject markup."""

from __future__ import annotations

import html
from dataclasses import dataclass, field

STYLE = """
body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em} h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}
th{background:#f5f5f5} pre{background:#f7f7f7;padding:.8em;overflow:auto;font-size:.85em}
img{max-width:100%;margin:.4em 0} .muted{color:#777}
"""


@dataclass
class Section:
    title: str
    html: str = ""
    images: list[str] = field(default_factory=list)  # file names inside the report directory
    order: int = 50  # lower comes first


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table(rows: list[tuple], header: tuple | None = None) -> str:
    head = "<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>" if header else ""
    body = "".join("<tr>" + "".join(f"<td>{esc(fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table>{head}{body}</table>"


def pre(text: str) -> str:
    return f"<pre>{esc(text)}</pre>"


def paragraph(text: str, muted: bool = False) -> str:
    attrs = ' class="muted"' if muted else ""
    return f"<p{attrs}>{esc(text)}</p>"


def render_page(title: str, sections: list[Section]) -> str:
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
        f"<style>{STYLE}</style></head><body><h1>{esc(title)}</h1>",
    ]
    for section in sorted(sections, key=lambda s: s.order):
        parts.append(f"<h2>{esc(section.title)}</h2>{section.html}")
        parts.extend(f"<img src='{esc(name)}' alt='{esc(name)}'>" for name in section.images)
    parts.append("</body></html>")
    return "\n".join(parts)
