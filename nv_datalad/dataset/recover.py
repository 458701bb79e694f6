"""Start every build from a committed, valid state: finish or undo what a killed one left.

A kill can land anywhere: between a download and its ``git annex add``, between writing a
sidecar and committing it, inside ``datalad run``, between removing an old image and adding its
new version. The build keeps invariants that make each leftover recognisable, and each has one
safe treatment:

- complete new images (annexed file + our sidecar, not yet committed): committed, so a rebuild
  never downloads them again; the next version lists them (it diffs against the last tag);
- partial downloads, an annexed file without its sidecar: removed, fetched again;
- an image removed for replacement and not yet re-added, a refreshed sidecar not committed:
  the committed version comes back (the server's newer date redoes the update);
- derivatives written outside a finished ``datalad run``: removed, so every derivative in the
  history stays inside a run record;
- generated files (tables; README, CHANGES and citation of a release cut short, which its
  uncommitted build record shows): restored, they are regenerated anyway;
- nilearn's offline mode rewriting our sidecars (compact JSON plus its path keys): restored.

Anything else uncommitted was made by a person: the build refuses to start (exit 2) rather than
commit it, and says how to keep or drop it.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from nv_datalad.dataset import layout, nesting
from nv_datalad.dataset.annex import discard
from nv_datalad.dataset.files import dump_json, ensure_room
from nv_datalad.dataset.nesting import git_paths, owner
from nv_datalad.dataset.runner import git
from nv_datalad.errors import AnnexError, DatasetError

log = logging.getLogger(__name__)

#: Files every build regenerates from the sidecars (nobody edits these by hand).
GENERATED = frozenset({layout.IMAGES_TSV, layout.COLLECTIONS_TSV, layout.SPEC_FILE})
#: Written by the release after its build record, so they are ours only when an uncommitted
#: build record shows a release was cut short; otherwise an edit is a person's.
RELEASE_FILES = frozenset({layout.README, layout.CITATION, layout.CHANGES})


@dataclass
class Recovery:
    """What recovery did, for the log and for tests."""

    committed: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.committed or self.restored or self.removed)


def _status(root: Path, prefix: str = "") -> list[tuple[str, str]]:
    """(XY status, path) for every uncommitted path, untracked files listed one by one; a
    subdataset appears once, as its folder, when its commit moved or it is new."""
    out = git(root, "status", "--porcelain=v1", "-z", "--untracked-files=all",
              "--no-renames", "--ignore-submodules=dirty")
    entries = []
    for item in out.split("\0"):
        if len(item) > 3:
            entries.append((item[:2], prefix + item[3:].rstrip("/")))
    return entries


def _open_subdatasets(root: Path) -> list[tuple[str, str]]:
    """The status of the subdatasets a killed build was writing into (journaled), after
    finishing any creation it cut short. Nothing of ours runs now (the build lock is ours),
    so git's lock files in them are stale."""
    from nv_datalad.dataset.repo import create

    entries = []
    for cid in nesting.journaled(root):
        sub = root / nesting.subdataset_dir(cid)
        if not nesting.is_repository(sub):
            continue
        for stale in (sub / ".git").glob("*.lock"):
            stale.unlink(missing_ok=True)
        create(sub, description=f"collection {cid}")
        entries += _status(sub, nesting.subdataset_dir(cid) + "/")
    return entries


def _without_nilearn_keys(data: object) -> object:
    if not isinstance(data, dict):
        return data
    return {k: v for k, v in data.items() if "relative_path" not in k and "absolute_path" not in k}


def _is_nilearn_rewrite(root: Path, rel: str) -> bool:
    """nilearn's offline reader writes a sidecar back as compact JSON with ``relative_path``
    keys (the paths of that machine). Same content otherwise: not a change of ours."""
    try:
        now = json.loads((root / rel).read_text(encoding="utf-8"))
        repo, inner = owner(root, rel)
        before = json.loads(git(repo, "show", f"HEAD:{inner}"))
    except (OSError, ValueError, AnnexError):  # unreadable or not in HEAD: not nilearn's
        return False
    return now != before and _without_nilearn_keys(now) == _without_nilearn_keys(before)


def _written_by_us(root: Path, rel: str) -> bool:
    """A JSON file in our exact format (sorted keys, indent 2) with our provenance key."""
    try:
        text = (root / rel).read_text(encoding="utf-8")
        data = json.loads(text)
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and dump_json(data) == text


def _is_derivative(rel: str) -> bool:
    name = PurePosixPath(rel).name
    return rel == layout.REPORT or rel.startswith(layout.NEUROSYNTH_DIR + "/") \
        or "_resampled" in name \
        or rel.startswith(layout.RESAMPLE_MANIFEST.rsplit(".", 1)[0]) \
        or rel.startswith(".datalad/runinfo")


def recover(root: Path) -> Recovery:
    """Bring ``root`` back to a state a build may start from; see the module docstring."""
    ensure_room(root)
    done = Recovery()
    foreign: list[str] = []
    to_commit: list[str] = []
    restore: list[str] = []
    remove: list[str] = []
    entries = [*_open_subdatasets(root), *_status(root)]
    present = {rel for _, rel in entries}
    release_cut_short = any(xy == "??" and rel.startswith(layout.BUILDS_DIR + "/")
                            for xy, rel in entries)
    generated = GENERATED | RELEASE_FILES if release_cut_short else GENERATED
    for xy, rel in entries:
        path = PurePosixPath(rel)
        untracked = xy == "??"
        deleted = "D" in xy
        image = layout.parse_image_file(path.name)
        cid = layout.ids_of(rel)[0]
        if rel == nesting.GITMODULES or nesting.is_repository(root / rel):
            to_commit.append(rel)  # a subdataset's new commits, or a new subdataset
        elif image is not None and cid is not None:
            sidecar = str(path.parent / f"image_{image[0]}_metadata.json")
            if deleted and xy[0] == "A":
                remove.append(rel)  # staged, then given up (a full disk): not in HEAD
            elif deleted:
                restore.append(rel)  # removed for replacement: the old version comes back
            elif (root / sidecar).is_file() and (sidecar in present or
                                                  _tracked(root, sidecar)):
                to_commit.append(rel)  # annexed and described: a finished import
            else:
                remove.append(rel)
        elif _is_derivative(rel) or rel in generated or rel.startswith(layout.BUILDS_DIR + "/"):
            # made by datalad run or regenerated: never committed outside a run or a release
            if untracked or "A" in xy:
                remove.append(rel)
            else:
                restore.append(rel)
        elif (rel.startswith(".datalad/") or rel == ".gitattributes") and (untracked or
                                                                           "A" in xy):
            to_commit.append(rel)  # a dataset whose creation was cut short
        elif cid is not None and rel.endswith(".json") and not deleted:
            new = untracked or xy[0] == "A"  # staged by a checkpoint's `git add`, not in HEAD
            if new and _written_by_us(root, rel):
                to_commit.append(rel)  # a new sidecar or word file of a finished import
            elif not new and _is_nilearn_rewrite(root, rel):
                restore.append(rel)
            elif not new and _written_by_us(root, rel):
                restore.append(rel)  # a refresh not committed: the next build redoes it
            else:
                foreign.append(rel)
        else:
            foreign.append(rel)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5
                                          else "")
        raise DatasetError(
            f"{root} has uncommitted changes nv-datalad did not make: {shown}; keep them with "
            f"`datalad save -d {root}` or drop them with `git -C {root} checkout -- PATH` / "
            "`git clean`, then build again"
        )
    shutil.rmtree(root / layout.DOWNLOAD_TMP, ignore_errors=True)  # partial downloads
    for rel in remove:  # nothing is touched before the check above has passed
        discard(root, rel)
        done.removed.append(rel)
    if restore:
        git_paths(root, ["checkout", "HEAD"], restore)
        done.restored += restore
    if to_commit:
        _commit(root, to_commit)
        done.committed += to_commit
    if done:
        log.info("recovered from an interrupted build: %d files committed, %d restored, "
                 "%d removed", len(done.committed), len(done.restored), len(done.removed))
    return done


def _commit(root: Path, rels: list[str]) -> None:
    """Commit finished work where it lies: subdatasets first, then the superdataset with
    their new commits (and any subdataset not registered yet)."""
    message = f"nv-datalad: keep {len(rels)} files an interrupted build had finished"
    groups = nesting.by_owner(root, rels)
    subs = sorted(str(repo.relative_to(root)) for repo in groups if repo != root)
    for repo, pairs in groups.items():
        if repo != root:
            git(repo, "add", "--", *(inner for _, inner in pairs))
            _commit_staged(repo, message)
    pointers = sorted({*subs, *(r for r, _ in groups.get(root, [])
                                if nesting.is_repository(root / r))})
    if pointers:
        nesting.register(root, pointers)
    own = sorted({*(r for r, _ in groups.get(root, [])), *pointers,
                  *([nesting.GITMODULES] if pointers else [])})
    git(root, *nesting.QUIET_ADD, "add", "--", *own)
    _commit_staged(root, message)


def _commit_staged(repo: Path, message: str) -> None:
    """Staging may leave nothing to commit: a replacement given up on a full disk whose old
    file was put back in the worktree but not in the index (no room to write it) shows as
    changed until ``git add`` stages the old file again."""
    if git(repo, "diff", "--cached", "--name-only").strip():
        git(repo, "commit", "-q", "--no-verify", "-m", message)


def _tracked(root: Path, rel: str) -> bool:
    repo, inner = owner(root, rel)
    return bool(git(repo, "ls-files", "--", inner).strip())
