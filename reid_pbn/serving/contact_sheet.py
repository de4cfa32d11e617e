"""A self-contained HTML contact sheet of ranked search results (thumbnails inlined)."""

from __future__ import annotations

import base64
import html
import os

__all__ = ["render_contact_sheet"]

_STYLE = """
body { font-family: system-ui, sans-serif; background: #f4f5f7; margin: 16px; }
.row { display: flex; gap: 8px; align-items: flex-start; margin-bottom: 14px;
       background: #fff; padding: 8px; border-radius: 6px; }
.cell { width: 72px; font-size: 11px; text-align: center; border: 3px solid #cfd8dc;
        border-radius: 4px; padding: 2px; }
.cell.query { border-color: #1e88e5; width: 90px; }
.cell.match { border-color: #2e7d32; background: #e8f5e9; }
.cell.miss { border-color: #c62828; }
.cell img, .cell .none { width: 64px; height: 128px; object-fit: contain; background: #eceff1; }
.cell.query img { width: 80px; }
"""


def _data_uri(jpeg: bytes | None) -> str | None:
    return None if not jpeg else "data:image/jpeg;base64," + base64.b64encode(jpeg).decode()


def _cell(classes: str, jpeg: bytes | None, lines: list[str], title: str) -> str:
    uri = _data_uri(jpeg)
    img = f'<img src="{uri}" alt="">' if uri else '<div class="none"></div>'
    text = "<br>".join(html.escape(line) for line in lines)
    return f'<div class="cell {classes}" title="{html.escape(title)}">{img}<br>{text}</div>'


def render_contact_sheet(queries: list[dict], query_thumbs: list[bytes | None],
                         result_thumbs: dict[str, bytes | None], title: str) -> str:
    """The HTML page: one row per query, its thumbnail then its ranked results.

    A result of the query's person (both ids known) has a green frame, one of another known
    person a red frame.

    Args:
        queries: ``{"query", "pid", "camid", "results": [{"rank", "id", "name", "distance",
            "pid", "camid", "true_match"}]}`` per query (as ``tools/search.py`` writes them).
        query_thumbs: JPEG bytes of each query, or None.
        result_thumbs: JPEG bytes by gallery item id, or None.
        title: the page title.

    Returns:
        The page's text (no external file is referenced).
    """
    rows = []
    for q, thumb in zip(queries, query_thumbs):
        who = f"pid {q['pid']}" if q.get("pid", -1) >= 0 else "pid ?"
        cells = [_cell("query", thumb, ["query", who], str(q["query"]))]
        for r in q["results"]:
            mark = {True: "match", False: "miss", None: ""}[r.get("true_match")]
            cells.append(_cell(mark, result_thumbs.get(r["id"]),
                               [f"#{r['rank']}  {r['distance']:.3f}",
                                f"pid {r['pid']}" if r["pid"] >= 0 else "pid ?",
                                f"cam {r['camid'] + 1}" if r["camid"] >= 0 else ""],
                               r["name"] or r["id"]))
        rows.append(f'<div class="row">{"".join(cells)}</div>')
    name = html.escape(os.path.basename(title) or title)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{name}</title>"
            f"<style>{_STYLE}</style></head><body><h2>{html.escape(title)}</h2>"
            + "\n".join(rows) + "</body></html>\n")
