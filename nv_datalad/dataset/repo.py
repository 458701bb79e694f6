"""The repository: creation, the build lock, identity, commits and version tags.

Commits are plain git on top of what the annex layer staged (text goes to git by
``.gitattributes``); a new dataset is what ``datalad create`` makes, made without DataLad.
Reading (tags, dataset id, files at a revision) is :mod:`nv_datalad.dataset.revision`'s job.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from nv_datalad.dataset import layout
from nv_datalad.dataset.files import ensure_room, write_text
from nv_datalad.dataset.runner import annex, annex_info, git
from nv_datalad.errors import DatasetError

log = logging.getLogger(__name__)

GITATTRIBUTES_MARKER = "# nv-datalad: text in git, NIfTI in the annex"
GITATTRIBUTES = f"""{GITATTRIBUTES_MARKER}
* annex.largefiles=nothing
*.nii.gz annex.largefiles=anything
*.nii annex.largefiles=anything
"""
#: The paths ``GITATTRIBUTES`` annexes.
ANNEXED = ("*.nii.gz", "*.nii")
#: ``git add`` / ``git commit`` with git-annex's filter off (see :func:`commit`).
NO_FILTER = ("-c", "filter.annex.process=", "-c", "filter.annex.clean=",
             "-c", "filter.annex.smudge=", "-c", "advice.addEmbeddedRepo=false")
LOCK_NAME = "nv-datalad.lock"
#: Every process a build starts inherits ``NV_DATALAD_BUILD=<its lock's token>``, and so do
#: their children: how the next build finds what a killed one left running.
BUILD_TOKEN_ENV = "NV_DATALAD_BUILD"
#: What ``datalad create`` writes: MD5E keys, git's own dotfiles never annexed.
DATALAD_GITATTRIBUTES = "* annex.backend=MD5E\n**/.git* annex.largefiles=nothing\n"
DATALAD_FILES = (".datalad/.gitattributes", ".datalad/config")


def is_dataset(root: Path) -> bool:
    return (root / ".datalad" / "config").is_file() and (root / ".git").exists()


def create(root: Path, *, description: str = "") -> None:
    """A new DataLad dataset whose ``.gitattributes`` keep text in git and NIfTI annexed."""
    if not is_dataset(root):
        _init_dataset(root)
        fresh = True
    else:
        fresh = False  # made before, or a creation cut short: finish it
        attrs = root / ".gitattributes"
        text = attrs.read_text() if attrs.exists() else ""
        if GITATTRIBUTES_MARKER not in text:
            attrs.write_text(text.rstrip("\n") + "\n" + GITATTRIBUTES)
        if GITATTRIBUTES_MARKER not in text or head(root) is None:
            # .datalad too: a creation killed before its commit left those uncommitted
            git(root, "add", "--", ".gitattributes",
                *(f for f in DATALAD_FILES if (root / f).is_file()))
            if git(root, "diff", "--cached", "--name-only").strip():
                git(root, "commit", "-q", "-m",
                    "nv-datalad: keep text in git, NIfTI in the annex")
    if fresh or not _annex_initialised(root):
        # last, also when a creation was killed before it: the commits above are plain git
        # until git-annex's filter is installed (each annexed-repo `git add` starts git-annex)
        # git-annex's default description is user@host:/path: a machine-local path in the
        # git-annex branch of a dataset meant for others. Name the dataset's copy instead.
        annex(root, "init", "-q", " ".join((description or "nv-datalad build").split())[:200])


def _annex_initialised(root: Path) -> bool:
    """``git annex init`` ran to its end: a killed one can leave ``annex.uuid`` set without
    ``annex.version`` (seen 3 times in 120 kills), and running it again completes it."""
    names = git(root, "config", "--name-only", "--get-regexp", r"^annex\.(uuid|version)$",
                check=False).split()
    return {"annex.uuid", "annex.version"} <= set(names)


@contextlib.contextmanager
def creating(root: Path, *, description: str = "", made_dir: bool,
             stop_writers: Callable[[], None] | None = None) -> Iterator[None]:
    """Create a new dataset while the body runs (the crawl: ~0.3 s of git and git-annex
    start-up that would otherwise come after it); if the body or the creation fails, remove
    what was made, so a build that stops before its first import leaves nothing behind.

    ``made_dir``: the build made ``root`` (remove it), else it was an empty directory or what
    a creation of ours cut short left (remove only that). ``stop_writers`` runs before the
    removal: downloads the body started must not write into a directory being removed.
    """
    with ThreadPoolExecutor(1, thread_name_prefix="create") as pool:
        made = pool.submit(create, root, description=description)
        try:
            yield
            made.result()
        except BaseException:
            with contextlib.suppress(Exception):
                made.result()
            if stop_writers is not None:
                stop_writers()
            if made_dir:
                shutil.rmtree(root, ignore_errors=True)
            else:
                for name in (".git", ".datalad"):
                    shutil.rmtree(root / name, ignore_errors=True)
                (root / ".gitattributes").unlink(missing_ok=True)
            raise


def _init_dataset(root: Path) -> None:
    """What ``datalad create`` commits, file for file, without importing DataLad (0.5 s).

    ``datalad create`` is ``git init``, ``git annex init [DESCRIPTION]`` (done by
    :func:`create`), a dataset id in ``.datalad/config``, the two ``.gitattributes`` below
    and one commit.
    """
    root.mkdir(parents=True, exist_ok=True)
    git(root, "init", "-q")
    # ours too, so a new dataset (thousands of subdatasets) costs one commit, not two
    write_text(root, ".gitattributes", DATALAD_GITATTRIBUTES + GITATTRIBUTES)
    write_text(root, ".datalad/.gitattributes", "config annex.largefiles=nothing\n")
    write_text(root, ".datalad/config", f'[datalad "dataset"]\n\tid = {uuid.uuid4()}\n')
    git(root, "add", "--", ".gitattributes", *DATALAD_FILES)
    git(root, "commit", "-q", "--no-verify", "-m", "[DATALAD] new dataset")


@contextlib.contextmanager
def locked(root: Path) -> Iterator[None]:
    """One build per dataset at a time; a lock left by a dead process is taken over.

    Taken before the dataset is created (``.git`` is made for it), so a build killed while
    creating is recognised like any other killed build.
    """
    (root / ".git").mkdir(parents=True, exist_ok=True)
    lock = root / ".git" / LOCK_NAME
    for _ in range(2):
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid_text, _, token = lock.read_text().strip().partition(" ")
                pid = int(pid_text or 0)
            except (OSError, ValueError):
                pid, token = 0, ""
            if pid and _alive(pid):
                raise DatasetError(
                    f"another nv-datalad build (pid {pid}) is running on {root}; wait for it, "
                    f"or delete {lock} if that process is gone"
                ) from None
            log.warning("removing stale lock %s (pid %s is gone)", lock, pid)
            if token and stop_orphans(token):
                log.info("stopped git and git-annex processes left running by the "
                         "interrupted build")
            # git's own locks, left by a git command killed with the build (nothing of that
            # build runs now: its children died with it and their children were stopped)
            for stale in (root / ".git").glob("*.lock"):
                if stale.name != LOCK_NAME:
                    stale.unlink(missing_ok=True)
            for stale in (root / ".git" / "refs").rglob("*.lock"):
                stale.unlink(missing_ok=True)
            lock.unlink(missing_ok=True)
            continue
        token = uuid.uuid4().hex
        with os.fdopen(fd, "w") as fh:
            fh.write(f"{os.getpid()} {token}")
        break
    previous = os.environ.get(BUILD_TOKEN_ENV)
    os.environ[BUILD_TOKEN_ENV] = token
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(BUILD_TOKEN_ENV, None)
        else:
            os.environ[BUILD_TOKEN_ENV] = previous
        lock.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- commits and tags --------------------------------------------------------------------


def head(root: Path) -> str | None:
    out = git(root, "rev-parse", "--verify", "-q", "HEAD", check=False).strip()
    return out or None


def is_dirty(root: Path) -> bool:
    """Uncommitted changes in this repository; a subdataset counts only when its commit
    moved (looking into thousands of them would cost a process each)."""
    return bool(git(root, "status", "--porcelain", "--untracked-files=all",
                    "--ignore-submodules=dirty").strip())


def commit(root: Path, message: str, paths: Sequence[str] = (".",)) -> bool:
    """Stage ``paths`` (text goes to git by .gitattributes) and commit; False if nothing to do.

    Annexed images are staged by git-annex (``add``/``addurl``/``fromkey``) and removed with
    ``git rm`` already; ``git add`` here only picks up text, which ``.gitattributes`` keeps in
    git. So it runs without git-annex's filter, which would only pass that text through, at
    the cost of one git-annex process per commit: per subdataset and checkpoint, that was a
    sixth of what a new collection subdataset costs. ``git commit`` too: it commits the index
    as staged, but first re-checks every file written within the index's second ("racily
    clean") through the filter, which was 1.1 of a 100-image build's 5.8 s.
    """
    ensure_room(root)
    if paths:  # none: commit what is staged (a pathspec of excludes alone means everything)
        git(root, *NO_FILTER, "add", "-A", "--", *paths,
            *(f":(exclude){pattern}" for pattern in ANNEXED))
    if not git(root, "diff", "--cached", "--name-only").strip():
        return False
    git(root, *NO_FILTER, "commit", "-q", "--no-verify", "-m", message)
    return True


def tag(root: Path, version: str, message: str) -> None:
    """Annotated, so ``git describe`` works and the tag carries who/when/why."""
    git(root, "tag", "-a", version, "-m", message)


def prepend_changes(root: Path, entry: str) -> None:
    path = root / layout.CHANGES
    old = path.read_text(encoding="utf-8") if path.is_file() else "# Changes\n"
    header, _, rest = old.partition("\n")
    write_text(root, layout.CHANGES, f"{header}\n\n{entry.strip()}\n{rest}")


def ensure_identity() -> None:
    """Commits need an identity. Without one, commit as the tool (and say how to change it)
    rather than failing on a fresh machine."""
    for var, key, fallback in (("GIT_AUTHOR_NAME", "user.name", "nv-datalad"),
                               ("GIT_AUTHOR_EMAIL", "user.email", "nv-datalad@localhost")):
        if os.environ.get(var) or git(".", "config", "--get", key, check=False).strip():
            continue
        log.warning("git has no %s; committing as %r (set it with `git config --global "
                    "%s ...`)", key, fallback, key)
        os.environ[var] = fallback
        os.environ[var.replace("AUTHOR", "COMMITTER")] = fallback


def default_target(name: str, cwd: Path | None = None) -> Path:
    """Where ``build`` works without ``-d``: the dataset it stands in, else ``./<name>``.

    Every other command defaults to ``.``; a build run inside its dataset must not nest a
    second copy in it and download everything again.
    """
    here = (cwd or Path.cwd()).absolute()
    return here if (here / layout.SPEC_FILE).is_file() and is_dataset(here) else here / name


def check_target(root: Path, spec_name: str) -> None:
    """Refuse a target a build cannot use, before anything is fetched or written."""
    if root.exists() and not root.is_dir():
        raise DatasetError(f"-d {root} is a file, not a directory; pass the dataset's directory")
    if not is_dataset(root):
        # a creation of ours cut short leaves only these; anything else is somebody's
        ours = {".git", ".datalad", ".gitattributes"}
        if root.is_dir() and any(p.name not in ours for p in root.iterdir()):
            raise DatasetError(f"{root} exists, is not empty and is not a DataLad dataset; "
                               "choose another -d PATH")
        return
    recorded = _recorded_name(root)
    if recorded is not None and recorded != spec_name:
        raise DatasetError(
            f"{root} was built from the spec named {recorded!r}, this spec is named "
            f"{spec_name!r}; build it into another -d PATH, or name the spec {recorded!r} "
            "to update this dataset"
        )
    _check_annex_version(root)


def _recorded_name(root: Path) -> str | None:
    import yaml

    spec = root / layout.SPEC_FILE
    try:
        data = yaml.safe_load(spec.read_text(encoding="utf-8")) if spec.is_file() else None
    except (OSError, yaml.YAMLError):
        return None
    return str(data["name"]) if isinstance(data, dict) and data.get("name") else None


def _check_annex_version(root: Path) -> None:
    """A repository made by a much newer (or older) git-annex than the one on PATH would be
    refused mid-build, or silently upgraded: say so before starting."""
    have = git(root, "config", "--get", "annex.version", check=False).strip()
    if not have.isdigit():
        return
    info = annex_info()
    supported, version = info.supported, info.version
    if supported and have not in supported:
        newer = int(have) > max(int(v) for v in supported)
        raise DatasetError(
            f"{root} uses git-annex repository version {have}, made by a "
            f"{'newer' if newer else 'older'} git-annex than the one on PATH ({version}, "
            f"supports {', '.join(sorted(supported, key=int))}): "
            + ("upgrade git-annex (`pip install -U git-annex`)" if newer else
               f"run `git -C {root} annex upgrade` first")
        )


def stop_orphans(token: str, *, grace: float = 10.0) -> list[int]:
    """Stop what a dead build left running and wait until it is gone (Linux).

    The build's own children died with it (``pdeathsig``), but not theirs: ``addurl -J``'s
    ``transferrer`` processes keep their transfer locks, and ``git annex init``'s ``git config``
    calls still write ``.git/config`` while the next build starts (seen as "could not lock
    config file" and "Not initialized" when a rebuild follows a kill at once). They are found
    by the token in their environment, so nothing else in the dataset is touched (a user's
    own ``datalad get``). SIGTERM first (git-annex cleans up), SIGKILL after ``grace`` s.
    """
    marker = f"{BUILD_TOKEN_ENV}={token}".encode()
    found = [pid for pid in _pids() if marker in _environ(pid)]
    left = found
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
        deadline = time.monotonic() + grace
        while left and time.monotonic() < deadline:
            time.sleep(0.02)
            left = [pid for pid in left if _running(pid)]
        if not left:
            break
    return found


def _pids() -> list[int]:
    with contextlib.suppress(OSError):
        return [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()]
    return []


def _environ(pid: int) -> list[bytes]:
    try:
        return (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:
        return []


def _running(pid: int) -> bool:
    """Alive and not a zombie (a stopped process whose parent has not reaped it yet)."""
    try:
        stat = (Path("/proc") / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] not in (["Z"], ["X"])
