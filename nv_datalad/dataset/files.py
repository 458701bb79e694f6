"""Atomic writes of the text files a build owns (sidecars, tables, README, CHANGES), the
check that there is room to write at all, and the parse of its JSON sidecars read back.

Write beside the target, then rename: no half-written file survives an interruption, and a
symlink into the annex is replaced, never written through. A write whose content is unchanged
touches nothing, so an unchanged rebuild leaves ``git status`` clean.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

#: Free space a build wants before it runs git (git-annex's own ``annex.diskreserve`` default).
RESERVE = 1 << 20


def ensure_room(root: Path) -> None:
    """Say "disk full" while that can still be said: on a full disk git-annex's keys
    database retries its write forever, so ``git status`` or ``git commit`` (through
    ``git-annex filter-process``) would hang instead of failing."""
    free = shutil.disk_usage(root).free
    if free < RESERVE:
        raise OSError(errno.ENOSPC, f"{free // 1024} KiB free, a build needs "
                                    f"{RESERVE >> 20} MiB", str(root))


def write_atomic(path: Path, data: bytes) -> None:
    """Write beside the target, then rename: no half-written file survives an interruption,
    and a symlink into the annex is replaced, never written through."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text(root: Path, relpath: str | os.PathLike, text: str) -> bool:
    """Write atomically; return False (and touch nothing) when the content is unchanged."""
    path = root / relpath
    if path.is_file() and not path.is_symlink() and path.read_text(encoding="utf-8") == text:
        return False
    write_atomic(path, text.encode("utf-8"))
    return True


def dump_json(data: Any) -> str:
    """Stable JSON (sorted keys, indented) so diffs between versions show real changes."""
    return json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, default=str) + "\n"


def write_json(root: Path, relpath: str | os.PathLike, data: Any) -> bool:
    return write_text(root, relpath, dump_json(data))


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_json_objects(blobs: Mapping[str, bytes]) -> dict[str, dict]:
    """name -> parsed JSON object; a blob that is not one is logged and left out."""
    together = _parse_together(list(blobs.values()))
    if together is not None:
        return dict(zip(blobs, together, strict=True))
    out: dict[str, dict] = {}
    for name, data in blobs.items():
        try:
            value = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            log.warning("skipping %s: not valid JSON (%s)", name, err)
            continue
        if isinstance(value, dict):
            out[name] = value
        else:
            log.warning("skipping %s: not a JSON object", name)
    return out


def _parse_together(blobs: list[bytes]) -> list[dict] | None:
    """Every blob parsed as one JSON array, or None when that is not one object per blob.

    One parse shares each key string between all the objects (the decoder memoises keys per
    call): a sidecar parsed alone holds ~6 KB, parsed together ~3 KB, and tables are built
    from every sidecar of the dataset. A blob that is not exactly one object changes the
    count or the types, and the caller parses blob by blob to say which. (Two files would
    have to be written as halves of one object to pass, which gives nobody more than writing
    a false sidecar would.)
    """
    try:
        values = json.loads(b"[" + b",".join(blobs) + b"]")
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if len(values) != len(blobs) or not all(isinstance(v, dict) for v in values):
        return None
    return values
