"""Atomic writes of the text files a build owns (sidecars, tables, README, CHANGES).

Write beside the target, then rename: no half-written file survives an interruption, and a
symlink into the annex is replaced, never written through. A write whose content is unchanged
touches nothing, so an unchanged rebuild leaves ``git status`` clean.
"""

from __future__ import annotations

import json
import os
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


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
