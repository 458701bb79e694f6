"""Thin layer over git-annex: long-lived ``--batch --json`` processes with a watchdog.

``datalad addurls`` runs one ``git annex metadata`` per file (1000 files: ~60 s); one batch
process does the same in ~2.5 s. git-annex has no timeout for ``addurl``, so every batch here
runs under a stall watchdog: when no result arrives for ``stall_timeout`` seconds the process is
killed and every pending item is reported as failed (and retried by the next build).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from nv_datalad.errors import AnnexError, EnvironmentProblem

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


def git(root: Path, *args: str, check: bool = True, input: str | None = None) -> str:
    """Run git in ``root``; return stdout. Arguments are a list: nothing goes through a shell."""
    proc = subprocess.run(
        ["git", "-C", str(root), *args],
        capture_output=True,
        text=True,
        input=input,
        check=False,
    )
    if check and proc.returncode != 0:
        raise AnnexError(f"git {' '.join(args[:3])} failed: {proc.stderr.strip()[:500]}")
    return proc.stdout


def discard(root: Path, relpath: str) -> None:
    """Take a half-added file out of the index and the worktree (its download, if any, is
    redone by the next build)."""
    git(root, "rm", "-q", "--cached", "--ignore-unmatch", "--", relpath, check=False)
    (root / relpath).unlink(missing_ok=True)


def annex_available() -> str:
    """The git-annex version, or a clear error saying how to get it."""
    try:
        out = subprocess.run(
            ["git", "annex", "version", "--raw"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError) as exc:
        raise EnvironmentProblem(
            "git-annex not found on PATH; install it with `pip install git-annex` "
            "and put that environment's bin/ on PATH"
        ) from exc
    return out


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    """Linux: SIGKILL this child when the build that started it dies.

    Otherwise a killed build leaves an orphaned ``addurl`` downloading and holding transfer
    locks while the next build runs, which then fails on exactly those files.
    """
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL
    except (OSError, AttributeError):
        pass


_PREEXEC = _die_with_parent if sys.platform.startswith("linux") else None


class BatchRunner:
    """Feed lines to one ``git annex <cmd> --batch --json`` process; collect JSON replies.

    A writer thread feeds stdin while the caller drains stdout, so large batches never
    deadlock on full pipes. Replies may arrive out of order (``-J``), so callers match them
    by the fields git-annex echoes (``file``, ``input``).
    """

    def __init__(self, root: Path, args: Sequence[str], *, stall_timeout: float = 300.0):
        self.root = root
        self.args = list(args)
        self.stall_timeout = stall_timeout

    def run(self, lines: Sequence[str], expected: int | None = None,
            on_reply: Callable[[int], None] | None = None) -> tuple[list[dict], str]:
        """Return (replies, problem). ``problem`` is empty unless the process died or stalled.
        ``on_reply(n)`` is called with the number of replies so far (for progress bars)."""
        expected = len(lines) if expected is None else expected
        if not lines:
            return [], ""
        proc = subprocess.Popen(
            ["git", "annex", *self.args],
            cwd=self.root,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
            preexec_fn=_PREEXEC,
        )
        replies: queue.Queue[str | None] = queue.Queue()
        stderr_lines: list[str] = []

        def feed() -> None:
            try:
                for line in lines:
                    assert proc.stdin is not None
                    proc.stdin.write(line + "\n")
                    proc.stdin.flush()
                proc.stdin.close()  # type: ignore[union-attr]
            except (BrokenPipeError, OSError, ValueError):
                pass

        def drain() -> None:
            assert proc.stdout is not None
            for raw in proc.stdout:
                replies.put(raw)
            replies.put(None)

        def drain_err() -> None:
            assert proc.stderr is not None
            for raw in proc.stderr:
                stderr_lines.append(raw.rstrip())

        threads = [threading.Thread(target=t, daemon=True) for t in (feed, drain, drain_err)]
        for t in threads:
            t.start()
        results: list[dict] = []
        problem = ""
        while len(results) < expected:
            try:
                raw = replies.get(timeout=self.stall_timeout)
            except queue.Empty:
                problem = (
                    f"git annex {self.args[0]} stalled: no progress for {self.stall_timeout:.0f} s"
                )
                proc.kill()
                break
            if raw is None:
                if len(results) < expected:
                    tail = "; ".join(stderr_lines[-3:])
                    problem = f"git annex {self.args[0]} exited early ({tail or 'no message'})"
                break
            raw = raw.strip()
            if not raw:
                continue
            try:
                results.append(json.loads(raw))
            except json.JSONDecodeError:
                log.debug("non-JSON line from git annex %s: %s", self.args[0], raw)
                continue
            if on_reply is not None:
                on_reply(len(results))
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return results, problem


class BatchProcess:
    """One long-lived ``git annex <cmd> --batch --json`` process: a line in, a reply out.

    For commands that answer every input line in order (``add``, ``registerurl``,
    ``metadata``), so the build can feed each file the moment its download completes and the
    annex work overlaps the network instead of following it.
    """

    def __init__(self, root: Path, args: Sequence[str], *, timeout: float = 300.0):
        self.args = list(args)
        self.timeout = timeout
        self.proc = subprocess.Popen(
            ["git", "annex", *self.args, "--batch", "--json", "--json-error-messages"],
            cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, bufsize=1, preexec_fn=_PREEXEC,
        )
        self.replies: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.replies.put(raw)
        self.replies.put(None)

    def ask(self, line: str) -> dict:
        """Send one line, return its JSON reply (``success`` false with a reason on trouble)."""
        if "\n" in line or "\r" in line:
            return {"success": False, "error-messages": ["refusing a line break in input"]}
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
            raw = self.replies.get(timeout=self.timeout)
        except queue.Empty:
            self.proc.kill()
            raise AnnexError(f"git annex {self.args[0]} stalled: no reply for "
                             f"{self.timeout:.0f} s") from None
        except (BrokenPipeError, OSError) as exc:
            raise AnnexError(f"git annex {self.args[0]} exited early ({exc})") from exc
        if raw is None:
            raise AnnexError(f"git annex {self.args[0]} exited early")
        try:
            reply = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError:
            reply = {}
        return reply or {"success": False, "error-messages": ["no reply from git-annex"]}

    def close(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.proc.stdin.close()  # type: ignore[union-attr]
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> BatchProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def reply_error(reply: Mapping) -> str:
    """The reason a batch reply gives for failing ('' when it succeeded)."""
    return "" if reply.get("success") else _errors(reply)


def metadata_line(fields: Mapping[str, object], *, file: str | None = None,
                  key: str | None = None) -> str:
    """``metadata --batch --json`` input: set (replace) every field; empty values unset it.

    Address the key when the file was just added by another batch process: a running
    ``metadata`` process does not see files staged after it started.
    """
    clean = {k: [str(v)] if v is not None and str(v) != "" else [] for k, v in fields.items()}
    target = {"key": key} if key is not None else {"file": file}
    return json.dumps({**target, "fields": clean}, ensure_ascii=False)


def _errors(reply: Mapping) -> str:
    msgs = reply.get("error-messages") or []
    note = reply.get("note") or ""
    return "; ".join(str(m).strip() for m in msgs if m) or str(note) or "failed"


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
        runner = BatchRunner(self.root, args, stall_timeout=self.stall_timeout)
        replies, problem = runner.run([f"{url} {path}" for url, path in pairs],
                                      on_reply=on_reply)
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
                out.append(AddResult(path, url, None, _errors(reply)))
        return out

    def batch(self, *args: str) -> BatchProcess:
        return BatchProcess(self.root, args, timeout=self.stall_timeout)

    def set_metadata(self, items: Sequence[tuple[str, Mapping[str, object]]]) -> dict[str, str]:
        """Set annex metadata fields per file (replacing old values); returns path → error."""
        lines = [metadata_line(fields, file=path) for path, fields in items]
        runner = BatchRunner(
            self.root, ["metadata", "--batch", "--json", "--json-error-messages"],
            stall_timeout=self.stall_timeout,
        )
        replies, problem = runner.run(lines)
        done = {str(r.get("file")): r for r in replies}
        errors = {}
        for path, _ in items:
            reply = done.get(path)
            if reply is None:
                errors[path] = problem or "no reply from git-annex"
            elif not reply.get("success"):
                errors[path] = _errors(reply)
        return errors

    def _batch_errors(self, args: list[str], items: Sequence[str], field: str) -> dict[str, str]:
        """Run one batch command over ``items``; item → error for those that did not succeed
        (``field`` is the reply key that echoes the item: ``file`` or ``key``)."""
        if not items:
            return {}
        runner = BatchRunner(self.root, [*args, "--json", "--json-error-messages"],
                             stall_timeout=self.stall_timeout)
        replies, problem = runner.run(list(items))
        done = {str(r.get(field)): r for r in replies}
        return {
            item: _errors(done[item]) if item in done else (problem or "no reply")
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
        proc = subprocess.run(
            ["git", "annex", "lookupkey", "--batch"],
            cwd=self.root, input="".join(p + "\n" for p in paths),
            capture_output=True, text=True, check=False,
        )
        keys = proc.stdout.splitlines()
        if proc.returncode != 0 or len(keys) != len(paths):
            log.info("git annex lookupkey failed: %s", proc.stderr.strip())
            return {}
        return {p: k.strip() for p, k in zip(paths, keys, strict=True) if k.strip()}

    def unregister_urls(self, pairs: Iterable[tuple[str, str]]) -> None:
        """Stop ``key`` from claiming the web has it at ``url`` (NeuroVault URLs are not
        versioned: after an update the URL serves other bytes)."""
        lines = [f"{key} {url}" for key, url in pairs]
        if not lines:
            return
        proc = subprocess.run(
            ["git", "annex", "unregisterurl", "--batch"],
            cwd=self.root, input="".join(line + "\n" for line in lines),
            capture_output=True, text=True, check=False,
        )
        if proc.returncode != 0:
            raise AnnexError(f"git annex unregisterurl failed: {proc.stderr.strip()[:300]}")

    def copy_keys_to(self, remote: str, keys: Sequence[str]) -> dict[str, str]:
        """Copy content of ``keys`` to ``remote`` before it is superseded; key → error."""
        return self._batch_errors(["copy", "--to", remote, "--batch-keys"], keys, "key")


def stop_orphans(root: Path) -> list[int]:
    """Stop git-annex processes a dead build left running in ``root`` (Linux).

    With ``-J``, git-annex downloads in ``transferrer`` child processes that outlive a killed
    ``addurl`` and keep their transfer locks. Called only when the build lock shows the
    previous build is gone, so nothing of a live build is touched.
    """
    import signal

    proc_dir = Path("/proc")
    stopped: list[int] = []
    if not proc_dir.is_dir():
        return stopped
    target = str(Path(root).resolve())
    for entry in proc_dir.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cwd = os.readlink(entry / "cwd")
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv if a]
        if cwd != target or not words or not words[0].endswith("git-annex"):
            continue
        if any(w in ("transferrer", "addurl") for w in words[1:3]):
            with contextlib.suppress(OSError):
                os.kill(int(entry.name), signal.SIGTERM)
                stopped.append(int(entry.name))
    return stopped


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


def ensure_tools_on_path() -> None:
    """Put this interpreter's bin/ on PATH: the git-annex wheel installs its binary there, and
    DataLad finds git-annex through PATH even when the venv is not activated."""
    import sys

    bindir = str(Path(sys.executable).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
