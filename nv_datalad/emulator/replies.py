"""HTTP replies as values: what the router returns, before faults and throttling.

Also the two pieces of Django REST framework and static-file behaviour the router needs, kept
pure: limit/offset pagination and single ``Range`` headers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlencode

from nv_datalad.emulator.records import Record

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000

NOT_FOUND = {"detail": "Not found."}
FORBIDDEN = {"detail": "You do not have permission to perform this action."}
HTML_404 = b"<h1>Not Found</h1><p>The requested resource was not found on this server.</p>"

T = TypeVar("T")


@dataclass
class Reply:
    """One response, before faults and throttling."""

    status: int
    body: bytes = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)
    kind: str | None = None  # counter kind
    image_id: int | None = None  # set on a full image-file body, to count downloads

    @property
    def is_json(self) -> bool:
        return self.content_type == "application/json"


def json_reply(status: int, payload: Any, kind: str | None = None) -> Reply:
    return Reply(status, json.dumps(payload).encode(), kind=kind)


def html_reply(status: int, body: bytes | str, kind: str | None = None) -> Reply:
    data = body.encode() if isinstance(body, str) else body
    return Reply(status, data, "text/html; charset=utf-8", kind=kind)


def positive_int(text: str | None, *, strict: bool, cutoff: int | None = None) -> int | None:
    """Django REST framework's rule for limit/offset: None when absent or invalid."""
    if text is None:
        return None
    try:
        value = int(text)
    except ValueError:
        return None
    if value < 0 or (strict and value == 0):
        return None
    return min(value, cutoff) if cutoff is not None else value


def paginate(
    items: Sequence[T], render: Callable[[T], Record], query: dict[str, str], page_url: str
) -> dict[str, Any]:
    """A limit/offset page as DRF renders it: ``count``, absolute ``next``/``previous``,
    ``results``. Only the page's ``items`` are rendered, so a page of a 25,000-image list costs
    what a page costs.

    ``page_url`` is the absolute URL of the list without query string; other query parameters
    (ignored filters included) are kept in the links, sorted, like DRF's ``replace_query_param``.
    """
    limit = positive_int(query.get("limit"), strict=True, cutoff=MAX_LIMIT) or DEFAULT_LIMIT
    offset = positive_int(query.get("offset"), strict=False) or 0
    count = len(items)

    def link(new_offset: int | None) -> str:
        params = {k: v for k, v in query.items() if k not in ("limit", "offset")}
        params["limit"] = str(limit)
        if new_offset is not None:
            params["offset"] = str(new_offset)
        return f"{page_url}?{urlencode(sorted(params.items()))}"

    next_url = None if offset + limit >= count else link(offset + limit)
    if offset <= 0:
        previous_url = None
    else:
        previous_url = link(None) if offset - limit <= 0 else link(offset - limit)
    return {
        "count": count,
        "next": next_url,
        "previous": previous_url,
        "results": [render(item) for item in items[offset : offset + limit]],
    }


def parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """A single ``bytes=a-b`` range: (first, last), None without a usable header, "bad" if
    unsatisfiable. Resuming downloaders (git-annex, curl -C) send these."""
    if not header or not header.startswith("bytes=") or "," in header:
        return None
    first_text, _, last_text = header[6:].strip().partition("-")
    try:
        if first_text == "":
            length = int(last_text)
            first, last = max(0, size - length), size - 1
        else:
            first = int(first_text)
            last = int(last_text) if last_text else size - 1
    except ValueError:
        return None
    if first >= size or last < first:
        return "bad"
    return first, min(last, size - 1)
