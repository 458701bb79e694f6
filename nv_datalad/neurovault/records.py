"""What a NeuroVault record means: nulls, dates, URLs and ids, normalised once.

The server spells null four ways, mixes two date styles, writes ``http://`` inside records
served over https and was typed by anyone on the internet. Every layer reads records through
these functions, so each quirk is handled in one place.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from nv_datalad.records import parse_id

# NeuroVault spells null as "", "None", "None / Other", "N/A", "null" depending on record age.
# nilearn's regex also swallows any text *starting* with "none" ("None of the subjects...");
# we only treat the whole value as a placeholder.
_NULL_PLACEHOLDERS = frozenset({"", "none", "none / other", "n/a", "na", "null"})


def is_null_placeholder(value: object) -> bool:
    return isinstance(value, str) and value.strip().lower() in _NULL_PLACEHOLDERS


def normalise_nulls(record: Mapping[str, Any]) -> dict[str, Any]:
    """Top-level placeholder strings become None so filters see one kind of null."""
    return {k: (None if is_null_placeholder(v) else v) for k, v in record.items()}


def parse_date(value: object) -> datetime | None:
    """ISO-8601 (``...Z``, ``+01:00``, with or without microseconds) to an aware datetime.

    Naive values are taken as UTC. Unparsable values give None rather than an exception: a
    record with a broken date is still a record, it just cannot be compared for updates.
    """
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str) or not value.strip():
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def is_web_url(url: object) -> bool:
    """Only http(s) URLs with a host are ever requested or registered in the annex."""
    if not isinstance(url, str):
        return False
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.netloc) and not any(
        c in url for c in "\r\n\t "
    )


def is_public_server(base_url: str) -> bool:
    return urlsplit(base_url).netloc.lower() in ("neurovault.org", "www.neurovault.org")


def normalise_url(url: str, *, https: bool) -> str:
    """``http://`` → ``https://`` for the public server, whose records still say http."""
    if https and url.startswith("http://"):
        return "https://" + url[len("http://") :]
    return url




def record_id(record: Mapping[str, Any]) -> int | None:
    """A record's integer id, or None when the server sent something else."""
    return parse_id(record.get("id"))


def image_collection_id(record: Mapping[str, Any]) -> int | None:
    """``collection_id``, or parsed from the ``collection`` URL in older records."""
    cid = parse_id(record.get("collection_id"))
    if cid is not None:
        return cid
    url = record.get("collection")
    if isinstance(url, str):
        m = re.search(r"/collections/(\d+)/?$", url)
        if m:
            return int(m.group(1))
    return None


#: Refuse records larger than this (serialised): a record is metadata, never megabytes.
MAX_RECORD_BYTES = 1_000_000
#: Refuse file URLs longer than this (git-annex logs them; browsers stop near 2 kB).
MAX_URL_LENGTH = 2048


def file_url_problem(url: object) -> str | None:
    """Why a record's ``file`` URL must not be fetched or registered (None: it may).

    Only http(s) with a host, no credentials, no whitespace or control characters (a line
    break would split a git-annex batch line), no ``..`` path segments, a sane length.
    """
    if not isinstance(url, str) or not url:
        return "has no file URL"
    if len(url) > MAX_URL_LENGTH:
        return f"file URL is {len(url)} characters long (limit {MAX_URL_LENGTH})"
    if any(ord(c) < 33 or ord(c) == 127 for c in url):
        return "file URL contains whitespace or control characters"
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"file URL is not http(s): {url[:80]!r}"
    if parts.username or parts.password:
        return "file URL carries credentials"
    if any(seg in ("..", ".") for seg in parts.path.split("/")):
        return "file URL has '.' or '..' path segments"
    return None


def image_problem(record: Mapping[str, Any], collection_id: int | None) -> str | None:
    """Why an image record is refused at the edge (None: it is usable).

    ``collection_id`` is the collection being walked (None: the record's own, e.g. for an
    explicit image id). Everything a record supplies that reaches a path, a git-annex batch
    line, metadata or a URL to fetch is checked here once, so later layers can trust it.
    """
    if record_id(record) is None:
        return f"id {record.get('id')!r} is not a non-negative integer"
    raw_cid = record.get("collection_id")
    if raw_cid is not None:
        cid = parse_id(raw_cid)
        if cid is None:
            return f"collection_id {raw_cid!r} is not a non-negative integer"
        if collection_id is not None and cid != collection_id:
            return f"collection_id {cid} disagrees with collection {collection_id} listing it"
    elif image_collection_id(record) is None and collection_id is None:
        return "names no collection"
    size = record.get("file_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        return f"file_size {str(size)[:40]!r} is not a number of bytes"
    problem = file_url_problem(record.get("file"))
    if problem:
        return problem
    try:
        length = len(json.dumps(record, default=str))
    except (TypeError, ValueError):
        return "cannot be serialised as JSON"
    if length > MAX_RECORD_BYTES:
        return f"record is {length / 1e6:.1f} MB (limit {MAX_RECORD_BYTES / 1e6:.0f} MB)"
    return None
