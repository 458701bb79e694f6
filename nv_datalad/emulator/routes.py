"""Routing: every GET or HEAD request becomes a ``Reply``, as NeuroVault would answer it.

Pure functions of the corpus and the request, called with the server's lock held (replies are
serialised at once, so live records are read without copies). What the API answers is here in
one place: the list and detail endpoints, the 301 for a missing slash, 403 for private
collections, media files with their headers, and the Neurosynth decoder.
"""

from __future__ import annotations

from collections.abc import Mapping
from email.utils import format_datetime, parsedate_to_datetime
from urllib.parse import unquote

from nv_datalad.emulator.corpus import Corpus
from nv_datalad.emulator.neurosynth import HTML_ERROR_PAGE, DecodeOutcome, decode
from nv_datalad.emulator.replies import (
    FORBIDDEN,
    HTML_404,
    NOT_FOUND,
    Reply,
    html_reply,
    json_reply,
    paginate,
    parse_range,
)

_MEDIA = "/media/images/"


def route(
    corpus: Corpus,
    method: str,
    path: str,
    raw_query: str,
    query: dict[str, str],
    headers: Mapping[str, str],
) -> Reply:
    if path.startswith(_MEDIA):
        return media(corpus, method, path, headers)
    if not path.startswith("/api/"):
        return html_reply(404, HTML_404)
    base = corpus.base_url
    if not path.endswith("/"):
        location = f"{base}{path}/" + (f"?{raw_query}" if raw_query else "")
        reply = html_reply(301, b"", kind="redirect")
        reply.headers["Location"] = location
        return reply
    parts = path.strip("/").split("/")[1:]  # without "api"
    page_url = f"{base}{path}"
    match parts:
        case ["collections"]:
            collections = corpus.collections
            payload = paginate(
                corpus.collection_order, lambda cid: collections[cid].record, query, page_url
            )
            return json_reply(200, payload, "collections_list")
        case ["collections", cid] if cid.isdigit():
            col = corpus.collections.get(int(cid))
            if col is None:
                return json_reply(404, NOT_FOUND, "collection")
            if col.private:
                return json_reply(403, FORBIDDEN, "collection")
            return json_reply(200, col.record, "collection")
        case ["collections", cid, "images"] if cid.isdigit():
            col = corpus.collections.get(int(cid))
            if col is None:
                return json_reply(404, NOT_FOUND, "collection_images")
            if col.private:
                return json_reply(403, FORBIDDEN, "collection_images")
            payload = paginate(sorted(col.image_ids), corpus.record, query, page_url)
            return json_reply(200, payload, "collection_images")
        case ["images"]:
            payload = paginate(corpus.image_order, corpus.record, query, page_url)
            return json_reply(200, payload, "images_list")
        case ["images", iid] if iid.isdigit():
            im = corpus.image(int(iid))
            if im is None:
                return json_reply(404, NOT_FOUND, "image")
            if corpus.is_private_image(im.id):
                return json_reply(403, FORBIDDEN, "image")
            return json_reply(200, im.record, "image")
        case ["decode"]:
            return neurosynth(corpus, query)
    return html_reply(404, HTML_404)


def neurosynth(corpus: Corpus, query: dict[str, str]) -> Reply:
    text = query.get("neurovault", "")
    if not text.isdigit():
        return html_reply(400, HTML_ERROR_PAGE, "decode")
    image_id = int(text)
    known = corpus.image(image_id) is not None and not corpus.is_private_image(image_id)
    answer = decode(corpus.seed, image_id, known)
    if answer.outcome is DecodeOutcome.ERROR:
        return html_reply(500, "<h1>Internal Server Error</h1>", "decode")
    if answer.outcome is DecodeOutcome.HTML:
        return html_reply(200, HTML_ERROR_PAGE, "decode")
    payload = {"data": {"id": image_id, "type": "neurovault", "values": answer.values}}
    return json_reply(200, payload, "decode")


def media(corpus: Corpus, method: str, path: str, headers: Mapping[str, str]) -> Reply:
    """A file as nginx serves NeuroVault's media: Last-Modified, If-Modified-Since, ranges."""
    kind = "file_head" if method == "HEAD" else "file_get"
    found = corpus.find_file(unquote(path[len(_MEDIA) :]))
    if found is None:
        return html_reply(404, HTML_404, kind)
    image_id, is_label = found
    if corpus.is_private_image(image_id):
        return html_reply(403, "<h1>403 Forbidden</h1>", kind)
    data = corpus.label_file_bytes(image_id) if is_label else corpus.file_bytes(image_id)
    im = corpus.image(image_id)
    assert im is not None
    modified = im.content_date.replace(microsecond=0)
    octets = "application/octet-stream"
    reply_headers = {
        "Last-Modified": format_datetime(modified, usegmt=True),
        "Content-Encoding": "utf-8",
        "Accept-Ranges": "bytes",
    }
    since = headers.get("If-Modified-Since")
    if since:
        try:
            if modified <= parsedate_to_datetime(since):
                return Reply(304, b"", octets, reply_headers, kind)
        except (TypeError, ValueError):
            pass  # unparseable: ignore the header, as servers do
    wanted = parse_range(headers.get("Range"), len(data))
    if wanted == "bad":
        reply_headers["Content-Range"] = f"bytes */{len(data)}"
        return Reply(416, b"", octets, reply_headers, kind)
    if isinstance(wanted, tuple):
        first, last = wanted
        reply_headers["Content-Range"] = f"bytes {first}-{last}/{len(data)}"
        return Reply(206, data[first : last + 1], octets, reply_headers, kind)
    full_image = image_id if (not is_label and method == "GET") else None
    return Reply(200, data, octets, reply_headers, kind, full_image)
