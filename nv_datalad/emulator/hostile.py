"""Hostile records: what anyone on the internet can type into NeuroVault, as named presets.

A client must refuse each of these at the edge (where records enter from the server), name the
record and the reason, and build everything else. Each preset is a list of record overrides that
``Corpus.inject_record`` applies to a fresh, otherwise default-selectable image, so the hostile
record is listed in its collection and in ``/api/images/`` like any other image, and its file is
served wherever its ``file`` URL still points into ``/media/images/``.

The kinds (``HOSTILE_KINDS`` holds the same text, for error messages and the control endpoint):

``traversal-name``
    Two records: file name and ``name`` with ``../`` segments, and with an absolute path.
``nul-name``
    A NUL byte in the file name and in ``name``.
``long-name``
    A file name and ``name`` of 5,000 characters.
``string-id``
    ``id`` is the string ``"12a"``.
``negative-id``
    ``id`` is ``-12``.
``string-collection-id``
    ``collection_id`` is the string ``"abc"``.
``foreign-collection-id``
    ``collection_id`` names another public collection than the one listing the image.
``file-url-scheme``
    Three records whose ``file`` is a ``file:``, an ``ftp:`` and a ``javascript:`` URL.
``credentials-url``
    ``file`` is ``http://user:secret@host/...`` (served: only the credentials are wrong).
``newline-url``
    ``file`` holds a line break.
``bad-file-size``
    ``file_size`` is ``"12 MB"``.
``huge-record``
    A 4 MiB ``description``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit


@dataclass(frozen=True)
class HostileContext:
    """What a preset may refer to: the server, the collection it lands in, another one, and a
    serial number that keeps the file URLs of repeated injections apart."""

    base_url: str
    collection_id: int
    foreign_collection_id: int
    serial: int

    def media(self, encoded_name: str) -> str:
        return f"{self.base_url}/media/images/{self.collection_id}/{encoded_name}"


Overrides = list[dict[str, Any]]


def _traversal(ctx: HostileContext) -> Overrides:
    s = ctx.serial
    return [
        {"name": f"../../../../tmp/nv-escape-{s}",
         "file": ctx.media(f"..%2F..%2F..%2F..%2Ftmp%2Fnv-escape-{s}.nii.gz")},
        {"name": f"/etc/nv-escape-{s}", "file": ctx.media(f"%2Fetc%2Fnv-escape-{s}.nii.gz")},
    ]  # fmt: skip


def _nul(ctx: HostileContext) -> Overrides:
    s = ctx.serial
    return [{"name": f"nul\x00name-{s}", "file": ctx.media(f"nul%00name-{s}.nii.gz")}]


def _long(ctx: HostileContext) -> Overrides:
    long = "L" * 5000
    return [{"name": long, "file": ctx.media(f"{long}-{ctx.serial}.nii.gz")}]


def _credentials(ctx: HostileContext) -> Overrides:
    split = urlsplit(ctx.media(f"credentials-{ctx.serial}.nii.gz"))
    netloc = f"user:secret@{split.netloc}"
    return [{"file": urlunsplit((split.scheme, netloc, split.path, "", ""))}]


HOSTILE_KINDS: dict[str, tuple[str, Callable[[HostileContext], Overrides]]] = {
    "traversal-name": ("file name and name with ../ segments, and absolute", _traversal),
    "nul-name": ("a NUL byte in the file name and the name", _nul),
    "long-name": ("a file name and name of 5,000 characters", _long),
    "string-id": ('id "12a"', lambda ctx: [{"id": "12a"}]),
    "negative-id": ("id -12", lambda ctx: [{"id": -12}]),
    "string-collection-id": ('collection_id "abc"', lambda ctx: [{"collection_id": "abc"}]),
    "foreign-collection-id": (
        "collection_id of another collection than the one listing it",
        lambda ctx: [{"collection_id": ctx.foreign_collection_id}],
    ),
    "file-url-scheme": (
        "file URLs with the file:, ftp: and javascript: schemes",
        lambda ctx: [
            {"file": "file:///etc/passwd"},
            {"file": f"ftp://127.0.0.1/pub/map-{ctx.serial}.nii.gz"},
            {"file": "javascript:alert(1)"},
        ],
    ),
    "credentials-url": ("a file URL with user:password@", _credentials),
    "newline-url": (
        "a line break inside the file URL",
        lambda ctx: [{"file": ctx.media(f"line\nbreak-{ctx.serial}.nii.gz")}],
    ),
    "bad-file-size": ('file_size "12 MB"', lambda ctx: [{"file_size": "12 MB"}]),
    "huge-record": ("a 4 MiB description", lambda ctx: [{"description": "x" * (4 << 20)}]),
}


def hostile_overrides(kind: str, ctx: HostileContext) -> Overrides:
    """The record overrides of preset ``kind``, one dict per hostile record."""
    try:
        _, build = HOSTILE_KINDS[kind]
    except KeyError:
        raise ValueError(
            f"unknown hostile record kind {kind!r}: expected one of {', '.join(HOSTILE_KINDS)}"
        ) from None
    return build(ctx)
