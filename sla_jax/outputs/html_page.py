"""Pieces of a self-contained HTML page: embedded PNGs, tables, percentages, the page with its style."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 1.6em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.92em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; } th { background: #f2f2f2; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top; }
figcaption { font-size: 0.85em; color: #555; max-width: 640px; }
img { max-width: 100%; border: 1px solid #ddd; } .meta { color: #555; font-size: 0.9em; }
table.facts td { text-align: left; }
"""


def image_tag(path: str, *, alt: str, width: int | None = None) -> str:
    """``<img>`` with the PNG at ``path`` embedded as a data URI."""
    with open(path, "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
    size = f' width="{width}"' if width else ""
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}"{size}>'


def figure(path: str, *, caption: str, width: int | None = None) -> str:
    return (
        f"<figure>{image_tag(path, alt=caption, width=width)}<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def html_table(header: Sequence[str], rows: Sequence[Sequence[object]], *, facts: bool = False) -> str:
    """A table of already-escaped cells; ``facts``: a left-aligned two-column key/value table, no header."""
    head = "" if facts else "<thead><tr>" + "".join(f"<th>{html.escape(str(h))}</th>" for h in header) + "</tr></thead>"
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    opening = '<table class="facts">' if facts else "<table>"
    return f"{opening}{head}<tbody>{body}</tbody></table>"


def page(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>\n{body}\n</body></html>\n"
    )


def percent(value) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def mean_std(cell: dict | None) -> str:
    """A table cell {"mean", "std", "n"} in percent: "mean ± std" when it has several values, "–" when absent."""
    if not cell:
        return "–"
    return percent(cell["mean"]) + (
        f" ± {100 * cell['std']:.1f}" if cell.get("n", 1) > 1 and cell.get("std") is not None else ""
    )


def mean_only(cell: dict | None) -> dict | None:
    """A mean-over-categories cell shown without its spread (which is over categories, not seeds)."""
    return None if cell is None else {"mean": cell["mean"]}
