"""HTML and Markdown rendering of a report: tables, embedded figures, one Jinja2 template.

The HTML is self-contained: figures are PNGs inlined as base64 data URIs, the style sheet is inline,
and a few lines of script set `data-figures="loaded/total"` on <body> once the page has loaded,
which is what the browser test reads.
"""
from __future__ import annotations

import base64
import html
import math
from pathlib import Path

import jinja2
import pandas as pd

TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1500px; color: #222; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ccc; margin-top: 2em; } h3 { margin-top: 1.4em; }
table.t { border-collapse: collapse; font-size: 0.8em; margin: 0.6em 0; }
table.t th, table.t td { border: 1px solid #ddd; padding: 2px 6px; text-align: right; }
table.t th { background: #f3f3f3; } table.t td:first-child { text-align: left; }
.pair { display: grid; grid-template-columns: 1fr 1fr; gap: 1em; align-items: start; }
.pair > div { border: 1px solid #eee; padding: 0.4em; } img.fig { max-width: 100%; }
.missing { color: #8a4b00; } .note { color: #555; font-size: 0.9em; } details { margin: 0.5em 0; }
</style></head>
<body data-figures="pending">
<h1>{{ title }}</h1>
<p class="note">Inputs: {{ sources|join(', ') }}. Published values: Ibrahim, Hafner &amp; Rocher, Nature 652:1159-1165
(2026), doi:10.1038/s41586-026-10410-0; summary_data of lujainibrahim/warm_ai_2025 at fbf1a50, shipped with warmfast.</p>
{% if header %}<ul class="settings">{% for line in header %}<li{% if line.startswith("WARNING") %} class="missing"{% endif %}>{{ line }}</li>{% endfor %}</ul>{% endif %}
{% for section in sections %}
<h2 id="{{ section.id }}">{{ section.title }}</h2>
{% for block in section.blocks %}
{% if block.kind == "text" %}<p class="{{ block.cls }}">{{ block.text }}</p>
{% elif block.kind == "heading" %}<h3>{{ block.text }}</h3>
{% elif block.kind == "table" %}{% if block.details %}<details><summary>{{ block.details }}</summary>{% endif %}{{ block.html|safe }}{% if block.details %}</details>{% endif %}
{% elif block.kind == "list" %}<ul class="{{ block.cls }}">{% for item in block.entries %}<li>{{ item }}</li>{% endfor %}</ul>
{% elif block.kind == "figures" %}<div class="pair">{% for f in block.figures %}<div><b>{{ f.caption }}</b><br>
{% if f.src %}<img class="fig" src="{{ f.src }}" alt="{{ f.caption }}">{% else %}<p class="missing">Not drawn: {{ f.reason }}</p>{% endif %}
</div>{% endfor %}</div>
{% endif %}
{% endfor %}
{% endfor %}
<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute("data-figures", ok + "/" + imgs.length);
});
</script>
</body></html>
"""


def png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def _fmt(v) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "—"
        if math.isinf(v):
            return "∞" if v > 0 else "-∞"
        if v != 0 and abs(v) < 1e-3:
            return f"{v:.3g}"                       # small p-values keep their digits
        return f"{v:.4f}".rstrip("0").rstrip(".") if abs(v) < 10 else f"{v:.2f}"
    return str(v)


def table_html(df: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row) + "</tr>"
                   for row in df.itertuples(index=False))
    return f'<table class="t"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def table_md(df: pd.DataFrame) -> str:
    if df.empty:
        return "_(empty)_\n"
    cells = [[_fmt(v).replace("|", "\\|") for v in row] for row in df.itertuples(index=False)]
    head = "| " + " | ".join(str(c) for c in df.columns) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    return "\n".join([head, sep] + ["| " + " | ".join(r) + " |" for r in cells]) + "\n"


def render_html(title: str, sources: list[str], sections: list[dict], header: list[str] | None = None) -> str:
    """header: lines under the title (the report's settings, warnings)."""
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(TEMPLATE).render(title=title, sources=sources, sections=sections, header=header or [])


def text(t: str, cls: str = "") -> dict:
    return {"kind": "text", "text": t, "cls": cls}


def heading(t: str) -> dict:
    return {"kind": "heading", "text": t}


def table(df: pd.DataFrame, details: str = "") -> dict:
    return {"kind": "table", "html": table_html(df), "details": details}


def bullet_list(items: list[str], cls: str = "") -> dict:
    return {"kind": "list", "entries": items, "cls": cls}


def figures(items: list[dict]) -> dict:
    """items: {caption, src (data URI) or reason}."""
    return {"kind": "figures", "figures": [{"caption": i["caption"], "src": i.get("src", ""),
                                            "reason": i.get("reason", "")} for i in items]}
