"""The report page itself: one self-contained HTML file, charts as inline SVG, thumbnails as PNG.

Everything is inlined (``data:`` URIs, one ``<style>``) so the page opens from an e-mail
attachment or a CI artifact with no dataset and no network beside it. The page is a pure
function of its inputs: the same dataset state gives the same bytes, so a build can tell a
refreshed report changed nothing and skip the commit.
"""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from html import escape

from nv_datalad.citation import plural

#: (field of the image record, chart title), in page order.
CHARTS = (("map_type", "Map type"), ("modality", "Modality"),
          ("analysis_level", "Analysis level"), ("collection_id", "Collection"))
NOT_GIVEN = "(not given)"
_BAR_HEIGHT = 18
_LABEL_WIDTH = 220
_BAR_WIDTH = 240


@dataclass(frozen=True)
class Card:
    """One image on the page: its thumbnail (None: no content) and where to read more."""

    image_id: int
    collection_id: int
    name: str
    map_type: str
    page_url: str | None  # the image's NeuroVault page
    sidecar_href: str  # the sidecar, relative to the report's folder
    png: bytes | None
    note: str  # why there is no thumbnail ("" when there is one)


@dataclass(frozen=True)
class Page:
    """Everything the page shows, gathered by :mod:`nv_datalad.consumers.report`."""

    title: str
    version: str
    commit: str
    date: str
    counts: Mapping[str, Counter[str]]  # chart field -> label -> number of images
    collections: Mapping[int, tuple[str, str | None]]  # id -> (name, NeuroVault page)
    cards: Sequence[Card]
    changes: str  # CHANGES.md at the version
    citation: str
    bibtex: str


def label_of(field: str, value: object, collections: Mapping[int, tuple[str, str | None]]) -> str:
    """The chart label of one record value (collections by id and name)."""
    if value is None or value == "":
        return NOT_GIVEN
    if field == "collection_id":
        name = collections.get(int(str(value)), ("", None))[0]
        return f"{value} {name}".strip()
    return str(value)


def bar_chart(title: str, counts: Counter[str]) -> str:
    """A horizontal bar chart as an SVG document (largest first, ties by label)."""
    rows = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    top = max(counts.values(), default=1)
    height = _BAR_HEIGHT * len(rows) + 30
    width = _LABEL_WIDTH + _BAR_WIDTH + 50
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
             f'<text x="0" y="16" font-weight="bold">{escape(title)}</text>']
    for n, (label, count) in enumerate(rows):
        y = 26 + n * _BAR_HEIGHT
        bar = max(1, round(_BAR_WIDTH * count / top))
        shown = label if len(label) <= 34 else label[:33] + "\u2026"
        parts += [
            f'<text x="{_LABEL_WIDTH - 6}" y="{y + 12}" text-anchor="end">'
            f'<title>{escape(label)}</title>{escape(shown)}</text>',
            f'<rect x="{_LABEL_WIDTH}" y="{y + 2}" width="{bar}" height="{_BAR_HEIGHT - 5}" '
            'fill="#3b6ea5"/>',
            f'<text x="{_LABEL_WIDTH + bar + 4}" y="{y + 12}">{count}</text>',
        ]
    parts.append("</svg>")
    return "".join(parts)


def _data_uri(mime: str, data: bytes) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def _card(card: Card) -> str:
    alt = escape(f"glass brain of image {card.image_id}", quote=True)
    if card.png is not None:
        thumb = (f'<img class="thumb" alt="{alt}" '
                 f'src="{_data_uri("image/png", card.png)}">')
    else:
        thumb = f'<div class="thumb missing">{escape(card.note)}</div>'
    page = (f'<a class="page" href="{escape(card.page_url, quote=True)}">NeuroVault</a>'
            if card.page_url else "")
    return (f'<figure class="card" id="image-{card.image_id}" data-image-id="{card.image_id}">'
            f'{thumb}<figcaption><b>{card.image_id}</b> {escape(card.name)}<br>'
            f'<span class="type">{escape(card.map_type)}</span><br>{page} '
            f'<a class="sidecar" href="{escape(card.sidecar_href, quote=True)}">sidecar</a>'
            "</figcaption></figure>")


def _collections(page: Page) -> str:
    out = []
    by_collection: dict[int, list[Card]] = {}
    for card in page.cards:
        by_collection.setdefault(card.collection_id, []).append(card)
    for cid, cards in sorted(by_collection.items()):
        name, url = page.collections.get(cid, (f"collection {cid}", None))
        head = escape(f"{cid} {name}")
        link = f' <a href="{escape(url, quote=True)}">NeuroVault</a>' if url else ""
        out.append(f'<section class="collection" id="collection-{cid}"><h3>{head}{link} '
                   f'<small>({plural(len(cards), "image")})</small></h3><div class="cards">'
                   + "".join(_card(c) for c in cards) + "</div></section>")
    return "".join(out)


def _history(changes: str) -> str:
    """CHANGES.md, one collapsible block per version (newest first, as the file is)."""
    blocks, current = [], None
    for line in changes.splitlines():
        if line.startswith("## "):
            current = [line[3:].strip(), []]
            blocks.append(current)
        elif current is not None:
            current[1].append(line)
    if not blocks:
        return "<p>No CHANGES.md at this version.</p>"
    return "".join(
        f'<details class="version"{" open" if n == 0 else ""}><summary>{escape(head)}</summary>'
        f'<pre>{escape(chr(10).join(body).strip())}</pre></details>'
        for n, (head, body) in enumerate(blocks))


_STYLE = """
body{font-family:sans-serif;margin:1.5em;color:#222;max-width:1400px}
h1{margin-bottom:.2em} .meta{color:#555}
.charts{display:flex;flex-wrap:wrap;gap:1.5em;align-items:flex-start}
.chart{border:1px solid #ddd;padding:.5em;background:#fafafa}
.cards{display:flex;flex-wrap:wrap;gap:.6em}
.card{margin:0;border:1px solid #ddd;padding:.3em;width:230px;font-size:12px}
.thumb{width:230px;height:84px;display:block;object-fit:contain}
.missing{background:#eee;color:#666;display:flex;align-items:center;justify-content:center;
text-align:center;font-size:11px}
.type{color:#3b6ea5} pre{white-space:pre-wrap;background:#f6f6f6;padding:.6em}
"""


def render(page: Page) -> str:
    """The whole HTML document."""
    total = sum(page.counts[CHARTS[0][0]].values()) if page.counts else 0
    charts = "".join(
        f'<img class="chart" alt="{escape(title, quote=True)} chart" '
        f'src="{_data_uri("image/svg+xml", bar_chart(title, page.counts[field]).encode())}">'
        for field, title in CHARTS if field in page.counts)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(page.title)} {escape(page.version)}</title><style>{_STYLE}</style>"
        f"</head><body><h1>{escape(page.title)}</h1>"
        f'<p class="meta">Version <b id="version">{escape(page.version)}</b> '
        f"({escape(page.date)}), commit <code>{escape(page.commit)}</code>: "
        f'<b id="n-images">{total}</b> images from '
        f'<b id="n-collections">{len(page.collections)}</b> collections.</p>'
        f'<h2>Counts</h2><div class="charts">{charts}</div>'
        f"<h2>Images</h2>{_collections(page)}"
        f"<h2>Version history</h2>{_history(page.changes)}"
        f"<h2>How to cite</h2><pre>{escape(page.citation)}</pre>"
        f"<details><summary>BibTeX</summary><pre>{escape(page.bibtex)}</pre></details>"
        "</body></html>\n"
    )
