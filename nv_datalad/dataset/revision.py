"""Read a dataset at any revision straight from git, without touching the working tree.

``load(version=...)``, ``cite --version`` and ``diff`` must answer questions about an old tag
while the user's checkout stays where it is, so everything here reads git objects
(``git cat-file``, ``git ls-tree``) rather than files. ``rev=None`` means "the working tree as it
is now", which is what a user who just edited or fetched content expects.

A dataset can hold thousands of sidecars: reading them is one ``git cat-file --batch`` process
per call, never one git process per file.
"""

from __future__ import annotations

import functools
import json
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path, PurePosixPath

from nv_datalad.dataset import layout, nesting
from nv_datalad.dataset.files import parse_json_objects
from nv_datalad.dataset.runner import Completed, run
from nv_datalad.errors import DatasetError

_TAG = re.compile(r"^v(\d+)\.(\d+)\.(\d+)$")
# A git-annex key as it appears at the end of a symlink target or pointer file.
_KEY = re.compile(r"^[A-Z0-9]+(?:-[^/\s]*)?--[^/\s]*$")
_POINTER_PREFIX = b"/annex/objects/"


def _git(dataset: Path, *args: str, check: bool = True, input: bytes | None = None) -> Completed:
    """git in ``dataset``; a failure is a :class:`DatasetError` naming the command."""
    proc = run(["git", "-C", str(dataset), *args], input=input, check=False)
    if check and not proc.ok:
        raise DatasetError(f"git {' '.join(args[:2])} failed in {dataset}: {proc.err}")
    return proc


def _check_rev_text(rev: str) -> None:
    """A revision starting with '-' would be read by git as an option."""
    if not rev or rev.startswith("-") or "\n" in rev or "\0" in rev:
        raise DatasetError(f"invalid version {rev!r}: expected a tag (v1.2.0) or a commit")


def not_a_dataset(path: Path, reason: str) -> DatasetError:
    """The one wording of "this is not a dataset", with the next step that works."""
    return DatasetError(f"{path} is not a nv-datalad dataset ({reason}); pass -d PATH of a "
                        f"dataset, or build one with `nv-datalad build SPEC -d {path}`")


def ensure_repository(dataset: Path) -> Path:
    """The absolute top of the git repository at ``dataset``, or a DatasetError saying why."""
    dataset = Path(dataset)
    if not dataset.is_dir():
        raise not_a_dataset(dataset, "it does not exist or is not a directory")
    proc = _git(dataset, "rev-parse", "--show-toplevel", check=False)
    if proc.returncode != 0:
        raise not_a_dataset(dataset, "not a git repository")
    return Path(proc.stdout.decode().strip())


def resolve(dataset: Path, rev: str) -> str:
    """Full commit sha of ``rev`` (tag, branch, sha prefix), or a DatasetError naming the tags."""
    _check_rev_text(rev)
    proc = _git(dataset, "rev-parse", "--verify", "--quiet", "--end-of-options",
                f"{rev}^{{commit}}", check=False)
    if proc.returncode != 0:
        known = version_tags(dataset)
        hint = f"known versions: {', '.join(known)}" if known else "the dataset has no version tag"
        raise DatasetError(f"unknown version {rev!r} in {dataset}: not a tag or commit ({hint})")
    return proc.stdout.decode().strip()


def _tag_sort_key(tag: str) -> tuple[int, int, int]:
    m = _TAG.match(tag)
    assert m is not None
    return (int(m.group(1)), int(m.group(2)), int(m.group(3)))


def _v_tags(lines: Iterable[str]) -> list[str]:
    return sorted((t for t in (s.strip() for s in lines) if _TAG.match(t)), key=_tag_sort_key)


def version_tags(dataset: Path) -> list[str]:
    """``v<major>.<minor>.<patch>`` tags, oldest (lowest version) first."""
    proc = _git(dataset, "tag", "--list", "v*", check=False)
    return _v_tags(proc.stdout.decode().splitlines()) if proc.returncode == 0 else []


def latest_tag(dataset: Path, rev: str = "HEAD") -> str | None:
    """Highest version tag reachable from ``rev`` (the version a commit belongs to), or None."""
    commit = resolve(dataset, rev)
    proc = _git(dataset, "tag", "--list", "v*", "--merged", commit, check=False)
    tags = _v_tags(proc.stdout.decode().splitlines()) if proc.returncode == 0 else []
    return tags[-1] if tags else None


def tag_date(dataset: Path, tag: str) -> str:
    """ISO date (YYYY-MM-DD) the tag was made (tagger date; commit date for lightweight tags)."""
    _check_rev_text(tag)
    proc = _git(dataset, "for-each-ref", "--format=%(creatordate:short)", f"refs/tags/{tag}")
    date = proc.stdout.decode().strip()
    if not date:
        raise DatasetError(f"unknown tag {tag!r} in {dataset}")
    return date


def commit_date(dataset: Path, rev: str) -> str:
    """ISO date (YYYY-MM-DD) of the commit ``rev``."""
    commit = resolve(dataset, rev)
    return _git(dataset, "show", "-s", "--format=%cs", commit).stdout.decode().strip()


def read_many(dataset: Path, rev: str | None, relpaths: Sequence[str]) -> dict[str, bytes | None]:
    """Raw bytes of many files at ``rev`` with ONE ``git cat-file --batch`` (None = missing).

    For an annexed file at a revision the bytes are the symlink target / pointer text, not the
    content: callers that need content go through :func:`annex_key`.
    """
    if rev is None:
        root = Path(dataset)
        out: dict[str, bytes | None] = {}
        for rel in relpaths:
            try:
                out[rel] = (root / rel).read_bytes()
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                out[rel] = None
        return out
    if not relpaths:
        return {}
    commit = resolve(dataset, rev)
    for rel in relpaths:
        if "\n" in rel:
            raise ValueError(f"path with a newline cannot be read in batch: {rel!r}")
    links = _gitlinks(str(dataset), commit)
    groups: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for rel in relpaths:
        top = "/".join(PurePosixPath(rel).parts[:2])
        if top in links and rel != top:
            groups.setdefault((top, links[top]), []).append((rel, rel[len(top) + 1:]))
        else:
            groups.setdefault(("", commit), []).append((rel, rel))
    out: dict[str, bytes | None] = {}
    for (top, sha), pairs in groups.items():
        repo = _subdataset_at(Path(dataset), top, sha) if top else Path(dataset)
        stdin = "".join(f"{sha}:{inner}\n" for _, inner in pairs).encode()
        raw = _git(repo, "cat-file", "--batch", input=stdin).stdout
        got = _parse_cat_file_batch(raw, [inner for _, inner in pairs])
        out.update((rel, got[inner]) for rel, inner in pairs)
    return {rel: out[rel] for rel in relpaths}


@functools.lru_cache(maxsize=64)
def _gitlinks(dataset: str, commit: str) -> dict[str, str]:
    """Subdataset path → its commit, for the collection subdatasets recorded in ``commit``
    (a commit never changes, so the answer is cached)."""
    raw = _git(Path(dataset), "ls-tree", "-z", commit, "--", layout.NEUROVAULT_DIR + "/").stdout
    entries = [(e.partition(b"\t")[0].split(), e.partition(b"\t")[2]) for e in raw.split(b"\0")]
    return {path.decode(): meta[2].decode() for meta, path in entries
            if len(meta) == 3 and meta[1] == b"commit"}


def _subdataset_at(dataset: Path, rel: str, sha: str) -> Path:
    """The installed subdataset ``rel`` holding commit ``sha``, or a DatasetError saying how
    to get it."""
    repo = dataset / rel
    if not nesting.is_repository(repo):
        raise nesting.not_installed_error(dataset, [rel])
    if _git(repo, "cat-file", "-e", f"{sha}^{{commit}}", check=False).returncode != 0:
        raise DatasetError(f"subdataset {rel} of {dataset} does not have commit {sha[:12]}; "
                           f"update it with `datalad update --how merge -r -d {dataset}`")
    return repo



def _parse_cat_file_batch(raw: bytes, relpaths: Sequence[str]) -> dict[str, bytes | None]:
    """Split ``git cat-file --batch`` output: ``<sha> <type> <size>\\n<bytes>\\n`` or
    ``<name> missing\\n`` per request, in request order."""
    out: dict[str, bytes | None] = {}
    pos = 0
    for rel in relpaths:
        end = raw.index(b"\n", pos)
        header = raw[pos:end].split()
        pos = end + 1
        if len(header) == 3 and header[1] in (b"blob", b"tree", b"commit", b"tag"):
            size = int(header[2])
            body = raw[pos:pos + size]
            pos += size + 1
            out[rel] = body if header[1] == b"blob" else None
        else:  # "<name> missing" or "ambiguous"
            out[rel] = None
    return out


def read_text(dataset: Path, rev: str | None, relpath: str) -> str | None:
    """Text of ``relpath`` at ``rev`` (None = working tree); None when the file is missing."""
    data = read_many(dataset, rev, [relpath])[relpath]
    return data.decode("utf-8") if data is not None else None


def read_spec(dataset: Path, rev: str | None = None) -> dict:
    """The spec a build recorded (``.nv-datalad/spec.yaml``) at ``rev``; {} when absent."""
    import yaml

    text = read_text(dataset, rev, layout.SPEC_FILE)
    if text is None:
        return {}
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        where = f"{layout.SPEC_FILE} at {rev[:12]}" if rev else layout.SPEC_FILE
        raise DatasetError(f"{where} is not valid YAML: {err}") from err
    return value if isinstance(value, dict) else {}


def read_json(dataset: Path, rev: str | None, relpath: str) -> dict | None:
    """Parsed JSON object of ``relpath`` at ``rev``; None when missing."""
    text = read_text(dataset, rev, relpath)
    if text is None:
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        where = f"{rev}:{relpath}" if rev else relpath
        raise DatasetError(f"{where} is not valid JSON: {err}") from err
    if not isinstance(value, dict):
        raise DatasetError(f"{relpath} does not hold a JSON object")
    return value


def list_files(dataset: Path, rev: str | None, prefix: str = "neurovault") -> list[str]:
    """Sorted POSIX paths under ``prefix``: tracked at ``rev``, or present in the working tree.

    Working-tree listing includes annexed files whose content is absent (dangling symlinks).
    """
    prefix = prefix.strip("/")
    if rev is not None:
        commit = resolve(dataset, rev)
        files = _ls_tree(Path(dataset), commit, prefix)
        for top, sha in _gitlinks(str(dataset), commit).items():
            if top in files and (not prefix or top.startswith(prefix + "/") or top == prefix):
                files.remove(top)
                sub = _subdataset_at(Path(dataset), top, sha)
                files += [f"{top}/{rel}" for rel in _ls_tree(sub, sha, "")]
        return sorted(files)
    root = Path(dataset)
    if prefix.split("/")[0] in ("", layout.NEUROVAULT_DIR):
        missing = nesting.not_installed(root)
        if missing:
            raise nesting.not_installed_error(root, missing)
    base = root / prefix if prefix else root
    if not base.is_dir():
        return [prefix] if prefix and (base.is_file() or base.is_symlink()) else []
    found = []
    for dirpath, dirnames, filenames in os.walk(base):
        dirnames[:] = sorted(d for d in dirnames if d not in (".git", ".datalad"))
        rel_dir = PurePosixPath(Path(dirpath).relative_to(root).as_posix())
        found.extend(str(rel_dir / name) for name in filenames)
    return sorted(found)


def _ls_tree(repo: Path, commit: str, prefix: str) -> list[str]:
    args = ["ls-tree", "-r", "--name-only", "-z", commit]
    if prefix:
        args += ["--", prefix]
    return [p.decode() for p in _git(repo, *args).stdout.split(b"\0") if p]


def image_sidecar_paths(files: Iterable[str]) -> dict[int, str]:
    """image id -> sidecar path, from a file listing (only ``neurovault/collection_<c>/``)."""
    out: dict[int, str] = {}
    for rel in files:
        parts = PurePosixPath(rel).parts
        if len(parts) != 3 or parts[0] != layout.NEUROVAULT_DIR:
            continue
        if layout.parse_collection_dir(parts[1]) is None:
            continue
        iid = layout.parse_sidecar(parts[2])
        if iid is not None:
            out[iid] = rel
    return out


def collection_sidecar_paths(files: Iterable[str]) -> dict[int, str]:
    """collection id -> ``collection_metadata.json`` path, from a file listing."""
    out: dict[int, str] = {}
    for rel in files:
        parts = PurePosixPath(rel).parts
        if len(parts) == 3 and parts[0] == layout.NEUROVAULT_DIR and \
                parts[2] == "collection_metadata.json":
            cid = layout.parse_collection_dir(parts[1])
            if cid is not None:
                out[cid] = rel
    return out


def read_json_many(dataset: Path, rev: str | None, paths: Sequence[str]) -> dict[str, dict]:
    """Parse many JSON objects at once; unreadable ones are logged and left out (one bad
    sidecar must not hide a whole dataset)."""
    return parse_json_objects({rel: data for rel, data in
                               read_many(dataset, rev, paths).items() if data is not None})


def image_sidecars(dataset: Path, rev: str | None = None) -> dict[int, dict]:
    """image id -> sidecar JSON (API record + ``nv_datalad`` provenance) at ``rev``."""
    paths = image_sidecar_paths(list_files(dataset, rev))
    parsed = read_json_many(dataset, rev, list(paths.values()))
    return {iid: parsed[rel] for iid, rel in sorted(paths.items()) if rel in parsed}


def collection_sidecars(dataset: Path, rev: str | None = None) -> dict[int, dict]:
    """collection id -> ``collection_metadata.json`` at ``rev``."""
    paths = collection_sidecar_paths(list_files(dataset, rev))
    parsed = read_json_many(dataset, rev, list(paths.values()))
    return {cid: parsed[rel] for cid, rel in sorted(paths.items()) if rel in parsed}


def key_from_link(target: str | bytes) -> str | None:
    """The annex key at the end of a symlink target or in a pointer file, else None."""
    if isinstance(target, bytes):
        if len(target) > 4096:
            return None
        try:
            target = target.decode("utf-8")
        except UnicodeDecodeError:
            return None
    text = target.strip()
    if "/annex/objects/" not in text:
        return None
    name = PurePosixPath(text).name
    return name if _KEY.match(name) else None


def annex_key(dataset: Path, rev: str | None, relpath: str) -> str | None:
    """git-annex key of ``relpath`` at ``rev`` (None = working tree); None if not annexed.

    At a revision, both a symlink blob (locked file) and a pointer file (unlocked) hold the key
    as text. In the working tree an unlocked file with content is its content, so git-annex is
    asked.
    """
    if rev is not None:
        return key_from_link(read_many(dataset, rev, [relpath])[relpath] or b"")
    path = Path(dataset) / relpath
    if path.is_symlink():
        return key_from_link(os.readlink(path))
    if not path.is_file():
        return None
    with path.open("rb") as fh:
        head = fh.read(4097)
    if head.startswith(_POINTER_PREFIX):
        return key_from_link(head)
    repo, inner = nesting.owner(Path(dataset), relpath)
    proc = _git(repo, "annex", "lookupkey", "--", inner, check=False)
    key = proc.stdout.decode().strip()
    return key if proc.returncode == 0 and _KEY.match(key) else None


def content_path(dataset: Path, key: str, relpath: str = "") -> Path | None:
    """Where the local content of ``key`` lives, if present (works for any version's key);
    ``relpath``, a path the key was at, names the (sub)dataset to look in."""
    if not _KEY.match(key):
        return None
    repo = nesting.owner(Path(dataset), relpath)[0] if relpath else Path(dataset)
    proc = _git(repo, "annex", "contentlocation", key, check=False)
    loc = proc.stdout.decode().strip()
    if proc.returncode != 0 or not loc:
        return None
    path = Path(loc)
    return path if path.is_absolute() else repo / path


def dataset_id(dataset: Path) -> str:
    """The DataLad dataset id (``datalad.dataset.id`` in ``.datalad/config``)."""
    config = Path(dataset) / ".datalad" / "config"
    if not config.is_file():
        raise not_a_dataset(Path(dataset), "not a DataLad dataset: no .datalad/config")
    proc = _git(dataset, "config", "--file", str(config), "--get", "datalad.dataset.id",
                check=False)
    value = proc.stdout.decode().strip()
    if proc.returncode != 0 or not value:
        raise DatasetError(f"{config} has no datalad.dataset.id")
    return value
