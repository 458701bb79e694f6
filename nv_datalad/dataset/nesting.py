"""One dataset, one or many repositories: per-collection subdatasets under a superdataset.

With ``subdatasets: per-collection`` each ``neurovault/collection_<cid>/`` is a DataLad dataset
of its own, at the same path as in a single repository, so every reader of the work tree is
unchanged. What changes is who runs git: :func:`owner` says which repository holds a path, from
the disk alone (a collection folder with a ``.git`` is a subdataset), and the annex and commit
layers group their work by it.

A build opens only the subdatasets of collections it changes (:class:`Tree`): it notes them in a
journal inside the superdataset's ``.git`` before writing into them, so recovery after a kill
looks into exactly those, and a no-op rebuild runs no git process in any subdataset.
Subdatasets are made without DataLad (the files ``datalad create`` makes, in parallel) and
registered in one ``.gitmodules`` write, so thousands cost no ``datalad create -d .`` each.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import TypeVar

from nv_datalad.dataset import layout
from nv_datalad.dataset.runner import git
from nv_datalad.errors import DatasetError

log = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")

GITMODULES = ".gitmodules"
#: Collections a build may have written into since their last commit (one id per line).
JOURNAL = ".git/nv-datalad/open-subdatasets"
#: git adds a nested repository as a gitlink; its "embedded repository" hint is for people.
QUIET_ADD = ("-c", "advice.addEmbeddedRepo=false")


def is_repository(path: Path) -> bool:
    return (path / ".git").exists()


def owner(root: Path, rel: str) -> tuple[Path, str]:
    """The repository holding ``rel`` and the path inside it."""
    parts = PurePosixPath(rel).parts
    if len(parts) >= 3 and parts[0] == layout.NEUROVAULT_DIR and \
            layout.parse_collection_dir(parts[1]) is not None:
        sub = root / parts[0] / parts[1]
        if is_repository(sub):
            return sub, "/".join(parts[2:])
    return root, rel


def by_owner(root: Path, rels: Iterable[str]) -> dict[Path, list[tuple[str, str]]]:
    """repository → [(path in the dataset, path in that repository)], in input order."""
    groups: dict[Path, list[tuple[str, str]]] = {}
    for rel in rels:
        repo, inner = owner(root, rel)
        groups.setdefault(repo, []).append((rel, inner))
    return groups


def each_repository(groups: Mapping[Path, T], work: Callable[[Path, T], R],
                    workers: int) -> list[R]:
    """``work(repository, its items)`` for every group, several repositories at once (each
    git-annex process is mostly start-up, so subdatasets overlap well)."""
    if len(groups) <= 1 or workers <= 1:
        return [work(repo, items) for repo, items in groups.items()]
    with ThreadPoolExecutor(min(workers, len(groups))) as pool:
        return list(pool.map(lambda pair: work(*pair), groups.items()))


def subdataset_dir(cid: int) -> str:
    return str(layout.collection_dir(cid))


def registered(root: Path) -> dict[str, str]:
    """Subdataset path → DataLad id, from ``.gitmodules`` (read as text: no git process)."""
    path = root / GITMODULES
    if not path.is_file():
        return {}
    out: dict[str, str] = {}
    current: dict[str, str] = {}
    for line in [*path.read_text(encoding="utf-8").splitlines(), "[end]"]:
        line = line.strip()
        if line.startswith("["):
            if "path" in current:
                out[current["path"]] = current.get("datalad-id", "")
            current = {}
        elif "=" in line:
            name, _, value = line.partition("=")
            current[name.strip()] = value.strip()
    return out


def is_nested(root: Path) -> bool:
    """Does the dataset keep its collections in subdatasets?"""
    return any(p.startswith(layout.NEUROVAULT_DIR + "/") for p in registered(root)) or any(
        is_repository(d) for _, d in layout.iter_collection_dirs(root))


def not_installed(root: Path) -> list[str]:
    """Registered collection subdatasets whose repository is not here (a fresh clone)."""
    return [p for p in registered(root)
            if p.startswith(layout.NEUROVAULT_DIR + "/") and not is_repository(root / p)]


def not_installed_error(dataset: Path, missing: Sequence[str]) -> DatasetError:
    more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
    return DatasetError(f"subdataset {missing[0]}{more} of {dataset} is not installed here; "
                        f"install them without content (`datalad get -n -r -d {dataset}`), "
                        "then run this again")


def register(root: Path, paths: Sequence[str]) -> None:
    """Add subdatasets to ``.gitmodules`` in one write (what ``datalad create -d .`` records:
    path, a URL relative to the superdataset, the DataLad id)."""
    known = registered(root)
    entries = []
    for rel in paths:
        if rel in known:
            continue
        entries.append(f'[submodule "{rel}"]\n\tpath = {rel}\n\turl = ./{rel}\n'
                       f"\tdatalad-id = {dataset_id(root / rel)}\n")
    if entries:
        gm = root / GITMODULES
        old = gm.read_text(encoding="utf-8") if gm.is_file() else ""
        gm.write_text(old + "".join(entries), encoding="utf-8")


def dataset_id(sub: Path) -> str:
    """The id in the ``.datalad/config`` a subdataset was made with (read as text: one
    registration of thousands must not cost a process each)."""
    for line in (sub / ".datalad" / "config").read_text(encoding="utf-8").splitlines():
        name, _, value = line.strip().partition("=")
        if name.strip() == "id":
            return value.strip()
    raise DatasetError(f"{sub}/.datalad/config has no dataset id")


def _journal(root: Path) -> Path:
    return root / JOURNAL


def journaled(root: Path) -> list[int]:
    """Collections a build was writing into when it stopped (recovery looks into these)."""
    path = _journal(root)
    if not path.is_file():
        return []
    return sorted({int(x) for x in path.read_text().split() if x.isdigit()})


class Tree:
    """The repositories one build writes to, and which of them have uncommitted work.

    ``nested``: new collections become subdatasets. Routing never depends on it (a path is in
    a subdataset when the subdataset is on disk), so readers need no ``Tree``.
    """

    def __init__(self, root: Path, *, nested: bool, jobs: int = 4, description: str = ""):
        self.root = root
        self.nested = nested
        self.jobs = max(1, jobs)
        self.description = description
        self._dirty: set[int] = set()
        self._journaled: set[int] = set(journaled(root))

    def touch(self, cids: Iterable[int]) -> None:
        """About to write into these collections: subdatasets made for new ones, and all of
        them journaled before the first byte lands."""
        if not self.nested:
            return
        want = sorted(set(cids) - self._dirty)
        if not want:
            return
        new = [c for c in want if not is_repository(self.root / subdataset_dir(c))]
        fresh = set(want) - self._journaled
        if fresh:
            self._journaled |= fresh
            path = _journal(self.root)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("".join(f"{c}\n" for c in sorted(self._journaled)))
        if new:
            self._create(new)
        self._dirty.update(want)

    def _create(self, cids: Sequence[int]) -> None:
        from nv_datalad.dataset.repo import create

        allowed = self._allowed()

        def one(cid: int) -> None:
            sub = self.root / subdataset_dir(cid)
            create(sub, description=f"{self.description} collection {cid}".strip())
            if allowed:
                git(sub, "config", "annex.security.allowed-ip-addresses", allowed)

        with ThreadPoolExecutor(self.jobs) as pool:
            list(pool.map(one, cids))
        log.info("created %d collection subdatasets", len(cids))

    def _allowed(self) -> str:
        return git(self.root, "config", "--get", "annex.security.allowed-ip-addresses",
                   check=False).strip()

    def allow(self) -> None:
        """The loopback servers the superdataset may download from, allowed in every
        subdataset the build opened (git-annex reads each repository's own config)."""
        setting = self._allowed()
        for cid in sorted(self._dirty):
            git(self.root / subdataset_dir(cid), "config",
                "annex.security.allowed-ip-addresses", setting)

    def has_changes(self) -> bool:
        """Does any subdataset written to since the last commit hold uncommitted work?"""
        from nv_datalad.dataset.repo import is_dirty

        return any(is_dirty(self.root / subdataset_dir(c)) for c in sorted(self._dirty))

    def commit(self, message: str, paths: Sequence[str] = (".",)) -> bool:
        """Commit every subdataset written to since the last commit, then the superdataset
        (their new commits, ``.gitmodules`` and ``paths``)."""
        from nv_datalad.dataset.repo import commit

        subs = [subdataset_dir(c) for c in sorted(self._dirty)]
        changed = any(each_repository({self.root / rel: message for rel in subs}, commit,
                                      self.jobs))
        if subs:
            register(self.root, subs)
            git(self.root, *QUIET_ADD, "add", "--", GITMODULES, *subs)
        self._dirty.clear()
        if self.nested:
            # In the superdataset neurovault/ holds only gitlinks, and those written to are
            # staged above. `git add` of the folder would look into every subdataset (~4 ms
            # each): per checkpoint, that made a build quadratic in its collections.
            paths = [p for p in paths
                     if PurePosixPath(p).parts[:1] != (layout.NEUROVAULT_DIR,)]
        return commit(self.root, message, paths) or changed

    def close(self) -> None:
        """The build ended with everything committed: nothing left for recovery to look at."""
        _journal(self.root).unlink(missing_ok=True)
        self._journaled.clear()


def subdatasets_of_plan(root: Path, cids: Iterable[int]) -> tuple[int, int]:
    """(to create, to update) among the collections a plan writes into."""
    wanted = set(cids)
    exist = sum(1 for c in wanted if is_repository(root / subdataset_dir(c)))
    return len(wanted) - exist, exist


def installed(root: Path) -> list[Path]:
    """Every collection subdataset present here."""
    return [d for _, d in layout.iter_collection_dirs(root) if is_repository(d)]


def git_paths(root: Path, args: Sequence[str], rels: Iterable[str], *, check: bool = True) -> None:
    """``git ARGS -- PATHS`` in each repository holding some of ``rels``."""
    for repo, pairs in by_owner(root, rels).items():
        git(repo, *args, "--", *(inner for _, inner in pairs), check=check)
