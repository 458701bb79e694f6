"""The git-annex operations a build needs, each one batch process per batch.

``datalad addurls`` runs one ``git annex metadata`` per file (1000 files: ~60 s); one batch
process does the same in ~2.5 s. Every process is started by :mod:`nv_datalad.dataset.runner`,
so every batch runs under its stall watchdog: when no result arrives for ``stall_timeout``
seconds the process is killed and every pending item is reported as failed (and retried by the
next build).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from nv_datalad.dataset.runner import BatchProcess, annex, batch, git, reply_error
from nv_datalad.errors import AnnexError

log = logging.getLogger(__name__)

WEB_UUID = "00000000-0000-0000-0000-000000000001"


@dataclass(frozen=True)
class AddResult:
    """Outcome of registering one URL at one path."""

    path: str
    url: str
    key: str | None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.key is not None and not self.error


def discard(root: Path, relpath: str) -> None:
    """Take a half-added file out of the index and the worktree (its download, if any, is
    redone by the next build)."""
    git(root, "rm", "-q", "--cached", "--ignore-unmatch", "--", relpath, check=False)
    (root / relpath).unlink(missing_ok=True)


def metadata_line(fields: Mapping[str, object], *, file: str | None = None,
                  key: str | None = None) -> str:
    """``metadata --batch --json`` input: set (replace) every field; empty values unset it.

    Address the key when the file was just added by another batch process: a running
    ``metadata`` process does not see files staged after it started.
    """
    clean = {k: [str(v)] if v is not None and str(v) != "" else [] for k, v in fields.items()}
    target = {"key": key} if key is not None else {"file": file}
    return json.dumps({**target, "fields": clean}, ensure_ascii=False)


class Annex:
    """The git-annex operations a build needs, each one process per batch."""

    def __init__(self, root: Path, *, jobs: int = 4, stall_timeout: float = 300.0):
        self.root = Path(root)
        self.jobs = max(1, jobs)
        self.stall_timeout = stall_timeout

    def addurls(
        self, pairs: Sequence[tuple[str, str]],
        on_reply: Callable[[int], None] | None = None,
    ) -> list[AddResult]:
        """Register ``(url, relpath)`` pairs without downloading (``addurl --fast``: a HEAD for
        the size, a VURL key). Builds that download use :mod:`nv_datalad.download` instead:
        one request per file where addurl sends a HEAD before every GET."""
        if not pairs:
            return []
        for url, path in pairs:
            if any(c in url + path for c in "\n\r"):
                raise AnnexError(f"refusing a URL or path with a line break: {url!r}")
        args = ["addurl", "--batch", "--with-files", "--json", "--json-error-messages",
                "--fast", "-J", str(self.jobs)]
        results = self._addurls_once(pairs, args, on_reply)
        retry = [(r.url, r.path) for r in results if not r.ok]
        if not retry:
            return results
        # One more try for what failed: transfer locks or tmp files left by a killed run, a
        # passing network fault. What fails twice is reported (and retried next build).
        for _, path in retry:
            discard(self.root, path)
        time.sleep(1.0)
        again = {r.path: r for r in self._addurls_once(retry, args)}
        return [again.get(r.path, r) for r in results]

    def _addurls_once(self, pairs: Sequence[tuple[str, str]], args: list[str],
                      on_reply: Callable[[int], None] | None = None) -> list[AddResult]:
        replies, problem = batch(self.root, args, [f"{url} {path}" for url, path in pairs],
                                 stall=self.stall_timeout, on_reply=on_reply)
        by_path: dict[str, dict] = {}
        for reply in replies:
            path = reply.get("file")
            if path is None and reply.get("input"):
                path = str(reply["input"][0]).split(" ", 1)[-1]
            if path is not None:
                by_path[str(path)] = reply
        out = []
        for url, path in pairs:
            reply = by_path.get(path)
            if reply is None:
                out.append(AddResult(path, url, None, problem or "no reply from git-annex"))
            elif reply.get("success") and reply.get("key"):
                out.append(AddResult(path, url, str(reply["key"])))
            else:
                out.append(AddResult(path, url, None, reply_error(reply)))
        return out

    def batch(self, *args: str) -> BatchProcess:
        return BatchProcess(self.root, args, timeout=self.stall_timeout)

    def set_metadata(self, items: Sequence[tuple[str, Mapping[str, object]]]) -> dict[str, str]:
        """Set annex metadata fields per file (replacing old values); returns path → error."""
        lines = [metadata_line(fields, file=path) for path, fields in items]
        replies, problem = batch(self.root, ["metadata", "--batch", "--json",
                                             "--json-error-messages"], lines,
                                 stall=self.stall_timeout)
        done = {str(r.get("file")): r for r in replies}
        errors = {}
        for path, _ in items:
            reply = done.get(path)
            if reply is None:
                errors[path] = problem or "no reply from git-annex"
            elif not reply.get("success"):
                errors[path] = reply_error(reply)
        return errors

    def _batch_errors(self, args: list[str], items: Sequence[str], field: str) -> dict[str, str]:
        """Run one batch command over ``items``; item → error for those that did not succeed
        (``field`` is the reply key that echoes the item: ``file`` or ``key``)."""
        if not items:
            return {}
        replies, problem = batch(self.root, [*args, "--json", "--json-error-messages"],
                                 list(items), stall=self.stall_timeout)
        done = {str(r.get(field)): r for r in replies}
        return {
            item: reply_error(done[item]) if item in done else (problem or "no reply")
            for item in items
            if item not in done or not done[item].get("success")
        }

    def drop(self, paths: Sequence[str]) -> dict[str, str]:
        """Drop local copies (git-annex checks the web still has them); path → error."""
        return self._batch_errors(["drop", "--batch"], paths, "file")

    def lookup_keys(self, paths: Sequence[str]) -> dict[str, str]:
        """Key of each annexed path (one ``lookupkey --batch`` process)."""
        if not paths:
            return {}
        proc = annex(self.root, "lookupkey", "--batch", input="".join(p + "\n" for p in paths),
                     check=False, stall=self.stall_timeout)
        keys = proc.out.splitlines()
        if not proc.ok or len(keys) != len(paths):
            log.info("git annex lookupkey failed: %s", proc.err)
            return {}
        return {p: k.strip() for p, k in zip(paths, keys, strict=True) if k.strip()}

    def unregister_urls(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Stop ``key`` from claiming the web has it at ``url`` (NeuroVault URLs are not
        versioned: after an update the URL serves other bytes)."""
        lines = [f"{key} {url}" for key, url in pairs]
        if not lines:
            return
        annex(self.root, "unregisterurl", "--batch", input="".join(f"{line}\n" for line in lines),
              stall=self.stall_timeout)

    def copy_keys_to(self, remote: str, keys: Sequence[str]) -> dict[str, str]:
        """Copy content of ``keys`` to ``remote`` before it is superseded; key → error."""
        return self._batch_errors(["copy", "--to", remote, "--batch-keys"], keys, "key")


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
