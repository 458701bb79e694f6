"""The work list of a resampling run: a committed TSV (source, key, output, sidecar).

The manifest's file name carries a hash of its content: the recorded command stays short
however many images there are, and rerunning an old commit reads the manifest of that commit,
never a later one. Every path in a row is derived from the image's ids, so a hand-edited
manifest can never make the command read or write outside the dataset layout.

The ``key`` column says which content the run was planned for; the command records the key of
the content it actually finds (see :mod:`nv_datalad.derivatives.resample`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from nv_datalad.dataset import layout

MANIFEST_COLUMNS = ("source", "key", "output", "sidecar")


@dataclass(frozen=True)
class ManifestRow:
    """One image to resample; all paths relative to the dataset root (POSIX)."""

    source: str
    key: str
    output: str
    sidecar: str


def check_key(key: str) -> str:
    """A key must fit in one TSV cell and one path component."""
    if not key or any(ch in key for ch in "\t\r\n\0") or "/" in key:
        raise ValueError(f"not a git-annex key: {key!r}")
    return key


def manifest_row(collection_id: int, image_id: int, source: str, key: str) -> ManifestRow:
    """A row whose paths all come from ids, so the manifest can never point outside the tree.

    ``source`` must be the image's layout path (``.nii.gz`` or ``.nii``).
    """
    allowed = {
        str(layout.image_file(collection_id, image_id, ext)) for ext in layout.NIFTI_EXTENSIONS
    }
    source = str(PurePosixPath(source))
    if source not in allowed:
        raise ValueError(
            f"source {source!r} is not the layout path of image {image_id} "
            f"in collection {collection_id}"
        )
    return ManifestRow(
        source=source,
        key=check_key(key),
        output=str(layout.resampled_file(collection_id, image_id)),
        sidecar=str(layout.resampled_sidecar(collection_id, image_id)),
    )


def validate_row(row: ManifestRow) -> ManifestRow:
    """Re-derive a row read from a (possibly hand-edited) manifest from its source path."""
    src = PurePosixPath(row.source)
    parsed = layout.parse_image_file(src.name)
    cid = layout.parse_collection_dir(src.parent.name)
    if parsed is None or cid is None or src.parent.parent != PurePosixPath(layout.NEUROVAULT_DIR):
        raise ValueError(f"source {row.source!r} is not an image path of the dataset layout")
    expected = manifest_row(cid, parsed[0], row.source, row.key)
    if expected != row:
        raise ValueError(
            f"manifest row for {row.source!r} names outputs {row.output!r}, {row.sidecar!r}; "
            f"expected {expected.output!r}, {expected.sidecar!r}"
        )
    return row


def format_manifest(rows: Sequence[ManifestRow]) -> str:
    """TSV text, rows sorted by source path so the same work gives the same bytes."""
    lines = ["\t".join(MANIFEST_COLUMNS)]
    for row in sorted(rows, key=lambda r: r.source):
        lines.append("\t".join((row.source, row.key, row.output, row.sidecar)))
    return "\n".join(lines) + "\n"


def parse_manifest(text: str) -> list[ManifestRow]:
    """Rows of a manifest; raises ``ValueError`` naming the bad line."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or tuple(lines[0].split("\t")) != MANIFEST_COLUMNS:
        raise ValueError(f"manifest header must be {' '.join(MANIFEST_COLUMNS)} (tab-separated)")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(MANIFEST_COLUMNS):
            raise ValueError(f"manifest line {number}: expected 4 tab-separated fields")
        rows.append(ManifestRow(*fields))
    return rows


def manifest_relpath(text: str) -> str:
    """Content-addressed manifest name next to ``layout.RESAMPLE_MANIFEST``.

    A fixed name would be overwritten by the next build, and ``datalad rerun`` of an older
    resampling commit would then recompute the newer build's images instead of its own.
    """
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    base = PurePosixPath(layout.RESAMPLE_MANIFEST)
    return str(base.with_name(f"{base.stem}-{digest}{base.suffix}"))
