"""The dataset on disk: creation, lock, sidecars, tables, commits and version tags.

Everything here reaches files through :mod:`nv_datalad.layout` paths and commits with plain
git (text files) on top of what the annex layer staged; DataLad is used where its semantics
matter (``create``, ``run``). Writes are atomic (temporary file + rename), so an interrupted
build never leaves half a JSON file behind.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from nv_datalad.dataset import layout
from nv_datalad.dataset.annex import discard, git, stop_orphans
from nv_datalad.errors import DatasetError
from nv_datalad.records import COLLECTION_COLUMNS, IMAGE_COLUMNS, PROVENANCE_KEY

log = logging.getLogger(__name__)

GITATTRIBUTES_MARKER = "# nv-datalad: text in git, NIfTI in the annex"
GITATTRIBUTES = f"""{GITATTRIBUTES_MARKER}
* annex.largefiles=nothing
*.nii.gz annex.largefiles=anything
*.nii annex.largefiles=anything
"""
LOCK_NAME = "nv-datalad.lock"


def is_dataset(root: Path) -> bool:
    return (root / ".datalad" / "config").is_file() and (root / ".git").exists()


def create(root: Path, *, description: str = "") -> None:
    """A new DataLad dataset whose ``.gitattributes`` keep text in git and NIfTI annexed."""
    if root.exists() and any(root.iterdir()) and not is_dataset(root):
        raise DatasetError(
            f"{root} exists, is not empty and is not a DataLad dataset; choose another -d PATH"
        )
    if not is_dataset(root):
        import datalad.api as dl  # 0.5 s of imports: only when there is something to create

        dl.create(path=str(root), description=description or None, result_renderer="disabled")
    attrs = root / ".gitattributes"
    text = attrs.read_text() if attrs.exists() else ""
    if GITATTRIBUTES_MARKER not in text:
        attrs.write_text(text.rstrip("\n") + "\n" + GITATTRIBUTES)
        git(root, "add", ".gitattributes")
        git(root, "commit", "-q", "-m", "nv-datalad: keep text in git, NIfTI in the annex")


def dataset_id(root: Path) -> str:
    return git(root, "config", "-f", ".datalad/config", "--get", "datalad.dataset.id").strip()


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """One build per dataset at a time; a lock left by a dead process is taken over."""
    lock = root / ".git" / LOCK_NAME
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or 0)
            except (OSError, ValueError):
                pid = 0
            if pid and _alive(pid):
                raise DatasetError(
                    f"another nv-datalad build (pid {pid}) is running on {root}; wait for it, "
                    f"or delete {lock} if that process is gone"
                ) from None
            log.warning("removing stale lock %s (pid %s is gone)", lock, pid)
            if stop_orphans(root):
                log.info("stopped git-annex transfers left running by the interrupted build")
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as fh:
            fh.write(str(os.getpid()))
        break
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- files -------------------------------------------------------------------------------


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


def read_json(path: Path) -> dict | None:
    try:
        with path.open(encoding="utf-8") as fh:
            data = json.load(fh)
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def utcnow() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


# -- state -------------------------------------------------------------------------------


def image_path_of(root: Path, collection_id: int, image_id: int) -> str | None:
    """The image file present for an id (``.nii.gz`` or ``.nii``), as a relpath."""
    for ext in layout.NIFTI_EXTENSIONS:
        rel = layout.image_file(collection_id, image_id, ext)
        if os.path.lexists(root / rel):
            return str(rel)
    return None


def local_images(root: Path) -> dict[int, dict]:
    """Image id → sidecar, for every image that is fully in the dataset (sidecar + file)."""
    found: dict[int, dict] = {}
    for cid, cdir in layout.iter_collection_dirs(root):
        for entry in os.scandir(cdir):
            iid = layout.parse_sidecar(entry.name)
            if iid is None or image_path_of(root, cid, iid) is None:
                continue
            sidecar = read_json(Path(entry.path))
            if sidecar is not None:
                found[iid] = sidecar
    return found


def local_collections(root: Path) -> dict[int, dict]:
    out = {}
    for cid, cdir in layout.iter_collection_dirs(root):
        data = read_json(cdir / "collection_metadata.json")
        if data is not None:
            out[cid] = data
    return out


def recover(root: Path) -> list[str]:
    """Undo what an interrupted build left half done.

    A sidecar is written only after its image was registered, so an image file without one
    is a download in flight when the build stopped: it is removed and fetched again. An image
    file missing from the tree was being replaced: the committed version comes back.
    """
    from nv_datalad.neurovault.download import clear_partials

    clear_partials(root)
    removed = []
    for cid, cdir in layout.iter_collection_dirs(root):
        names = {e.name for e in os.scandir(cdir)}
        for name in names:
            parsed = layout.parse_image_file(name)
            if parsed and f"image_{parsed[0]}_metadata.json" not in names:
                rel = str(layout.image_file(cid, parsed[0], parsed[1]))
                discard(root, rel)
                removed.append(rel)
    # An update interrupted between removing the old file and adding the new one: put the
    # committed version back; the next overwrite build sees the newer date and redoes it.
    deleted = set(git(root, "ls-files", "--deleted", "--", layout.NEUROVAULT_DIR).split())
    deleted |= set(git(root, "diff", "--cached", "--name-only", "--diff-filter=D", "--",
                       layout.NEUROVAULT_DIR).split())
    restore = sorted(p for p in deleted if layout.parse_image_file(Path(p).name))
    if restore:
        git(root, "checkout", "HEAD", "--", *restore)
    if removed or restore:
        log.info("recovered from an interrupted build: %d partial images removed, %d restored",
                 len(removed), len(restore))
    return removed + restore


# -- tables ------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).replace("\t", " ").replace("\n", " ").replace("\r", " ")


def tsv(rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter="\t", lineterminator="\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(c)) for c in columns])
    return buf.getvalue()


def image_row(root: Path, sidecar: Mapping[str, Any]) -> dict[str, Any]:
    prov = sidecar.get(PROVENANCE_KEY) or {}
    iid, cid = sidecar.get("id"), sidecar.get("collection_id")
    row = {c: sidecar.get(c) for c in IMAGE_COLUMNS}
    row.update(
        image_id=iid,
        collection_id=cid,
        path=prov.get("path"),
        url=prov.get("source_url"),
        key=prov.get("key"),
    )
    resampled = layout.resampled_file(cid, iid)
    row["resampled_path"] = str(resampled) if os.path.lexists(root / resampled) else ""
    words = layout.words_file(cid, iid)
    row["words_path"] = str(words) if (root / words).is_file() else ""
    return row


def collection_row(collection: Mapping[str, Any], n_images: int) -> dict[str, Any]:
    row = {c: collection.get(c) for c in COLLECTION_COLUMNS}
    row.update(collection_id=collection.get("id"), n_images=n_images)
    return row


def write_tables(root: Path, images: Mapping[int, Mapping], collections: Mapping[int, Mapping]):
    """``images.tsv`` / ``collections.tsv``: one row per image / collection, ascending ids."""
    rows = [image_row(root, images[i]) for i in sorted(images)]
    counts: dict[int, int] = {}
    for r in rows:
        counts[int(r["collection_id"])] = counts.get(int(r["collection_id"]), 0) + 1
    write_text(root, layout.IMAGES_TSV, tsv(rows, IMAGE_COLUMNS))
    col_rows = [collection_row(collections[c], counts.get(c, 0)) for c in sorted(collections)]
    write_text(root, layout.COLLECTIONS_TSV, tsv(col_rows, COLLECTION_COLUMNS))


# -- commits and tags --------------------------------------------------------------------


def head(root: Path) -> str | None:
    out = git(root, "rev-parse", "--verify", "-q", "HEAD", check=False).strip()
    return out or None


def is_dirty(root: Path) -> bool:
    return bool(git(root, "status", "--porcelain", "--untracked-files=all").strip())


def commit(root: Path, message: str, paths: Sequence[str] = (".",)) -> bool:
    """Stage ``paths`` (text goes to git by .gitattributes) and commit; False if nothing to do.

    Annexed images are staged by git-annex (``add``/``addurl``) already; ``git add`` here only
    picks up sidecars, tables and deletions.
    """
    git(root, "add", "-A", "--", *paths)
    if not git(root, "diff", "--cached", "--name-only").strip():
        return False
    git(root, "commit", "-q", "--no-verify", "-m", message)
    return True


def tags(root: Path) -> list[str]:
    """Version tags, oldest first by semantic version."""
    out = git(root, "tag", "--list", "v*").split()

    def key(tag: str) -> tuple[int, ...]:
        try:
            return tuple(int(x) for x in tag.lstrip("v").split("."))
        except ValueError:
            return (-1,)

    return sorted((t for t in out if key(t) != (-1,)), key=key)


def tag(root: Path, version: str, message: str) -> None:
    """Annotated, so ``git describe`` works and the tag carries who/when/why."""
    git(root, "tag", "-a", version, "-m", message)


def prepend_changes(root: Path, entry: str) -> None:
    path = root / layout.CHANGES
    old = path.read_text(encoding="utf-8") if path.is_file() else "# Changes\n"
    header, _, rest = old.partition("\n")
    write_text(root, layout.CHANGES, f"{header}\n\n{entry.strip()}\n{rest}")
