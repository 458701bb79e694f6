"""The git-annex operations a build needs, each one batch process per batch.

``datalad addurls`` runs one ``git annex metadata`` per file (1000 files: ~60 s); one batch
process does the same in ~2.5 s. Every process is started by :mod:`nv_datalad.dataset.runner`,
so every batch runs under its stall watchdog: when no result arrives for ``stall_timeout``
seconds the process is killed and every pending item is reported as failed (and retried by the
next build).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import string
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from nv_datalad.dataset.nesting import by_owner, each_repository, owner
from nv_datalad.dataset.runner import BatchProcess, annex, batch, git, reply_error
from nv_datalad.errors import AnnexError

log = logging.getLogger(__name__)

WEB_UUID = "00000000-0000-0000-0000-000000000001"
_KEY_SAFE = frozenset(string.ascii_letters + string.digits + ".-_/%:")
_KEY_NAME_MAX = 64  # bytes: a SHA256 checksum's length
#: a batch whose changes the next command in the repository commits to the git-annex branch
NO_COMMIT = ("-c", "annex.alwayscommit=false")


@dataclass(frozen=True)
class AddResult:
    """Outcome of registering one URL at one path."""

    path: str
    url: str
    key: str | None
    error: str = ""
    #: registered, but its annex metadata was not set (a warning, not a failure)
    metadata_error: str = ""

    @property
    def ok(self) -> bool:
        return self.key is not None and not self.error


def discard(root: Path, relpath: str) -> None:
    """Take a half-added file out of the index and the worktree (its download, if any, is
    redone by the next build)."""
    repo, inner = owner(root, relpath)
    git(repo, "rm", "-q", "--cached", "--ignore-unmatch", "--", inner, check=False)
    path = root / relpath
    with contextlib.suppress(FileNotFoundError, NotADirectoryError):  # a file in the way
        if path.is_symlink() or path.is_file():  # never a folder of somebody's
            path.unlink()


def metadata_line(fields: Mapping[str, object], *, file: str | None = None,
                  key: str | None = None) -> str:
    """``metadata --batch --json`` input: set (replace) every field; empty values unset it.

    Address the key when the file was just added by another batch process: a running
    ``metadata`` process does not see files staged after it started.
    """
    clean = {k: [str(v)] if v is not None and str(v) != "" else [] for k, v in fields.items()}
    target = {"key": key} if key is not None else {"file": file}
    return json.dumps({**target, "fields": clean}, ensure_ascii=False)


def url_key(url: str, size: int | None) -> str:
    """The key ``git annex addurl --fast`` gives ``url``, without its HEAD: ``VURL-s<size>--``
    with the size the API reports (``VURL--`` without one, as ``--relaxed`` makes).

    The name is git-annex's own (``genKeyName``): the URL with characters other than letters,
    digits and ``.-_/%:`` escaped as ``,<code point>`` (``,`` as ``,,``); a URL over 64 bytes
    keeps 31 characters of that plus ``-`` and the URL's MD5, so keys stay short file names.
    """
    name = "".join(c if c in _KEY_SAFE else ",," if c == "," else f",{ord(c)}" for c in url)
    raw = url.encode("utf-8")
    if len(raw) > _KEY_NAME_MAX:
        name = f"{name[:31]}-{hashlib.md5(raw, usedforsecurity=False).hexdigest()}"
    return f"VURL-s{size}--{name}" if size else f"VURL--{name}"


class Annex:
    """The git-annex operations a build needs, each one process per batch."""

    def __init__(self, root: Path, *, stall_timeout: float = 300.0, workers: int = 4):
        self.root = Path(root)
        self.stall_timeout = stall_timeout
        self.workers = workers  # repositories worked on at once (per-collection subdatasets)

    def addurls(
        self, items: Sequence[tuple[str, str, int | None]],
        on_reply: Callable[[int], None] | None = None,
        metadata: Mapping[str, Mapping[str, object]] | None = None,
    ) -> list[AddResult]:
        """Register ``(url, relpath, size)`` triples without sending a request, and set the
        annex ``metadata`` given per relpath.

        ``addurl --fast`` sends a HEAD and a GET per file to learn what the API already says;
        here the key is made from the URL and the API's size (:func:`url_key`, the key addurl
        would make), its URL recorded with ``registerurl``, its metadata set by key, and the
        file pointed at it with ``fromkey``: one batch process each, and one commit to the
        git-annex branch (fromkey's, last). Builds that download use
        :mod:`nv_datalad.neurovault.download` instead.
        """
        if not items:
            return []
        for url, path, _ in items:
            if any(c in url + path for c in "\n\r"):
                raise AnnexError(f"refusing a URL or path with a line break: {url!r}")
        sizes = {path: (url, size) for url, path, size in items}
        groups = by_owner(self.root, sizes)
        lone = len(groups) == 1  # one repository: progress per file, else per repository
        finished = [0]
        lock = threading.Lock()

        def one(repo: Path, paths: list[tuple[str, str]]) -> list[AddResult]:
            keyed = [(sizes[rel][0], rel, inner, url_key(*sizes[rel])) for rel, inner in paths]
            results = self._register_once(repo, keyed, metadata or {},
                                          on_reply if lone else None)
            failed = {r.path for r in results if not r.ok}
            if failed:
                # One more try for what failed: a file or index entry left by a killed run is
                # in the way of fromkey. What fails twice is reported (and retried later).
                for path in failed:
                    discard(self.root, path)
                again = {r.path: r for r in self._register_once(
                    repo, [k for k in keyed if k[1] in failed], metadata or {})}
                results = [again.get(r.path, r) for r in results]
            with lock:
                finished[0] += len(keyed)
                if on_reply is not None and not lone:
                    on_reply(finished[0])
            return results

        done = {r.path: r for results in each_repository(groups, one, self.workers)
                for r in results}
        return [done[path] for _, path, _ in items]

    def _register_once(self, repo: Path, keyed: Sequence[tuple[str, str, str, str]],
                       metadata: Mapping[str, Mapping[str, object]],
                       on_reply: Callable[[int], None] | None = None) -> list[AddResult]:
        # registerurl and metadata leave their logs in git-annex's journal; fromkey, which
        # always follows in the same repository, commits the journal to the git-annex branch
        # with its own changes: one branch commit for all three (on a small collection each
        # commit costs more than the batch itself)
        registered = self._errors_by_input(repo, ["registerurl", "--batch", *NO_COMMIT],
                                           [f"{key} {url}" for url, _, _, key in keyed])
        ok = [k for k in keyed if not registered[f"{k[3]} {k[0]}"]]
        described = {path: metadata_line(metadata[path], key=key)
                     for _, path, _, key in ok if path in metadata}
        unset = self._errors_by_input(repo, ["metadata", "--batch", *NO_COMMIT],
                                      list(described.values()))
        linked = self._errors_by_input(
            repo, ["fromkey", "--batch"], [f"{key} {inner}" for _, _, inner, key in ok],
            on_reply)
        out = []
        for url, path, inner, key in keyed:
            error = registered[f"{key} {url}"] or linked[f"{key} {inner}"]
            out.append(AddResult(path, url, None if error else key, error,
                                 unset.get(described.get(path, ""), "")))
        return out

    def _errors_by_input(self, repo: Path, args: list[str], lines: Sequence[str],
                         on_reply: Callable[[int], None] | None = None) -> dict[str, str]:
        """Feed ``lines`` to one batch command; line → error ('' when it succeeded), matched
        by the ``input`` git-annex echoes."""
        replies, problem = batch(repo, [*args, "--json", "--json-error-messages"], lines,
                                 stall=self.stall_timeout, on_reply=on_reply)
        done = {str(r["input"][0]): r for r in replies if r.get("input")}
        return {line: reply_error(done[line]) if line in done
                else problem or "no reply from git-annex" for line in lines}

    def batches(self) -> Batches:
        return Batches(self.root, self.stall_timeout)

    def set_metadata(self, items: Sequence[tuple[str, Mapping[str, object]]]) -> dict[str, str]:
        """Set annex metadata fields per file (replacing old values); returns path → error."""
        fields = dict(items)

        def one(repo: Path, paths: list[tuple[str, str]]) -> dict[str, str]:
            lines = [metadata_line(fields[rel], file=inner) for rel, inner in paths]
            replies, problem = batch(repo, ["metadata", "--batch", "--json",
                                            "--json-error-messages"], lines,
                                     stall=self.stall_timeout)
            done = {str(r.get("file")): r for r in replies}
            errors = {}
            for rel, inner in paths:
                reply = done.get(inner)
                if reply is None:
                    errors[rel] = problem or "no reply from git-annex"
                elif not reply.get("success"):
                    errors[rel] = reply_error(reply)
            return errors

        return {rel: err for errors in each_repository(by_owner(self.root, fields), one,
                                                       self.workers)
                for rel, err in errors.items()}

    def _batch_errors(self, repo: Path, args: list[str], items: Sequence[str],
                      field: str) -> dict[str, str]:
        """Run one batch command over ``items`` in ``repo``; item → error for those that did
        not succeed (``field`` is the reply key that echoes the item: ``file`` or ``key``)."""
        if not items:
            return {}
        replies, problem = batch(repo, [*args, "--json", "--json-error-messages"],
                                 list(items), stall=self.stall_timeout)
        done = {str(r.get(field)): r for r in replies}
        return {
            item: reply_error(done[item]) if item in done else (problem or "no reply")
            for item in items
            if item not in done or not done[item].get("success")
        }

    def drop(self, paths: Sequence[str]) -> dict[str, str]:
        """Drop local copies (git-annex checks the web still has them); path → error."""
        errors = {}
        for repo, pairs in by_owner(self.root, paths).items():
            outer = {inner: rel for rel, inner in pairs}
            failed = self._batch_errors(repo, ["drop", "--batch"], list(outer), "file")
            errors.update((outer[inner], err) for inner, err in failed.items())
        return errors

    def lookup_keys(self, paths: Sequence[str]) -> dict[str, str]:
        """Key of each annexed path (one ``lookupkey --batch`` process per repository)."""
        found = {}
        for repo, pairs in by_owner(self.root, paths).items():
            proc = annex(repo, "lookupkey", "--batch",
                         input="".join(inner + "\n" for _, inner in pairs),
                         check=False, stall=self.stall_timeout)
            keys = proc.out.splitlines()
            if not proc.ok or len(keys) != len(pairs):
                log.info("git annex lookupkey failed in %s: %s", repo, proc.err)
                continue
            found.update((rel, k.strip()) for (rel, _), k in zip(pairs, keys, strict=True)
                         if k.strip())
        return found

    def unregister_urls(self, items: Iterable[tuple[str, str, str]]) -> None:
        """Stop the key at each ``(path, key, url)`` from claiming the web has it at ``url``
        (NeuroVault URLs are not versioned: after an update the URL serves other bytes)."""
        lines = {path: f"{key} {url}" for path, key, url in items}
        for repo, pairs in by_owner(self.root, lines).items():
            annex(repo, "unregisterurl", "--batch",
                  input="".join(f"{lines[rel]}\n" for rel, _ in pairs), stall=self.stall_timeout)

    def copy_keys_to(self, repo: Path, remote: str, keys: Sequence[str]) -> dict[str, str]:
        """Copy content of ``keys`` (of ``repo``) to ``remote`` before it is superseded;
        key → error."""
        return self._batch_errors(repo, ["copy", "--to", remote, "--batch-keys"], keys, "key")


class Batches:
    """Long-lived batch processes, one per (repository, command), each started when first
    asked: a build that writes into many subdatasets keeps at most ``limit`` of them open.

    Only ``committer`` (``add``, which every file goes through first) commits git-annex's
    journal to the git-annex branch when it exits; the others leave their logs in the journal
    (a branch commit per process was most of what a small collection cost). So a
    repository's committer always exits last, after the others have written everything; a
    repository left with logs and no committer to exit after them gets ``git annex merge``,
    which commits the journal, when the batches close.
    """

    committer = "add"

    def __init__(self, root: Path, timeout: float, limit: int = 24):
        self.root = root
        self.timeout = timeout
        self.limit = limit
        self._open: dict[tuple[Path, str], BatchProcess] = {}
        self._tags: dict[tuple[Path, str], list[str]] = {}
        self._uncommitted: set[Path] = set()
        #: (command, tag, error) of every sent line that failed, once its process closed
        self.failed: list[tuple[str, str, str]] = []

    def _process(self, command: str, path: str) -> tuple[BatchProcess, str, tuple[Path, str]]:
        repo, inner = owner(self.root, path)
        proc = self._open.pop((repo, command), None)
        if proc is None:
            while len(self._open) >= self.limit:
                self._retire_repository(next(iter(self._open))[0])
            args = [command] if command == self.committer else [command, *NO_COMMIT]
            proc = BatchProcess(repo, args, timeout=self.timeout)
        self._open[(repo, command)] = proc  # most recently used last
        return proc, inner, (repo, command)

    def _retire_repository(self, repo: Path) -> None:
        slots = [slot for slot in self._open if slot[0] == repo]
        for slot in sorted(slots, key=lambda slot: slot[1] == self.committer):
            self._retire(slot)

    def ask(self, command: str, path: str, line: str | None = None) -> dict:
        """Ask the ``command --batch`` of the repository holding ``path``; the input line is
        that path inside its repository unless ``line`` is given."""
        proc, inner, _ = self._process(command, path)
        return proc.ask(inner if line is None else line)

    def send(self, command: str, path: str, line: str, tag: str) -> None:
        """Like :meth:`ask` without waiting: a failure lands in :attr:`failed` under
        ``tag`` when the process is closed."""
        proc, _, slot = self._process(command, path)
        proc.send(line)
        self._tags.setdefault(slot, []).append(tag)

    def _retire(self, slot: tuple[Path, str]) -> None:
        proc = self._open.pop(slot)
        tags = self._tags.pop(slot, [])
        for tag, (_, reply) in zip(tags, proc.collect(), strict=True):
            if not reply.get("success"):
                self.failed.append((slot[1], tag, reply_error(reply)))
        proc.close()
        repo, command = slot
        if command == self.committer:
            self._uncommitted.discard(repo)  # its exit committed what the others wrote
        elif (repo, self.committer) not in self._open:
            self._uncommitted.add(repo)

    def close(self) -> None:
        """Each process flushes on exit (up to a second for ``add``): let them all at once,
        the committers once the others are gone."""
        for last in (False, True):
            slots = [slot for slot in self._open if (slot[1] == self.committer) is last]
            for slot in slots:
                self._open[slot].end_input()
            for slot in slots:
                self._retire(slot)
        for repo in sorted(self._uncommitted):
            annex(repo, "merge", "-q")
        self._uncommitted.clear()

    def __enter__(self) -> Batches:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def loopback_ips(host: str) -> list[str]:
    """The loopback IPs a host name stands for (``localhost`` may be either family)."""
    import ipaddress

    if host == "localhost":
        return ["127.0.0.1", "::1"]
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return []
    return [str(ip)] if ip.is_loopback else []


def configure_loopback(root: Path, hosts: Iterable[str]) -> list[str]:
    """Allow git-annex to download from loopback servers, for this dataset only.

    git-annex refuses private addresses by default. We allow exactly those IPs (never
    ``all``, which would also enable curl and yt-dlp), in the dataset's own ``.git/config``;
    clones do not inherit it. Returns the IPs newly allowed.
    """
    current = git(root, "config", "--get", "annex.security.allowed-ip-addresses", check=False)
    allowed = current.split()
    new = [ip for host in hosts for ip in loopback_ips(host) if ip not in allowed]
    new = list(dict.fromkeys(new))
    if new:
        git(root, "config", "annex.security.allowed-ip-addresses", " ".join([*allowed, *new]))
    return new
