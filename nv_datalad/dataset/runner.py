"""The one place that starts git and git-annex processes.

Every call goes through here so that every call has the same guarantees: an argument list (no
shell: server strings never meet one), a stall watchdog (git-annex has no timeout of its own
for ``addurl`` and friends; a process that prints nothing for ``stall`` seconds is killed and
reported), children that die with the build (a killed build must not leave transfers holding
locks), and one error type that names the command.

Three shapes cover every use:
- :func:`run` — one command, its whole output (``git commit``, ``git annex fsck``);
- :class:`BatchProcess` — one long-lived ``--batch --json`` process, a line in, a reply out, for
  work fed as it arrives (each download handed to ``git annex add`` the moment it lands);
- :func:`batch` — a list of lines through one ``--batch --json`` process whose replies may come
  out of order (``addurl -J``), matched by the caller.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nv_datalad.errors import AnnexError, EnvironmentProblem

log = logging.getLogger(__name__)

#: Seconds without any output before a process counts as stalled.
DEFAULT_STALL = 300.0


@functools.cache
def _death_signal_prefix() -> tuple[str, ...]:
    """Linux: start children through util-linux's ``setpriv --pdeathsig KILL``, so they are
    killed when the build that started them dies.

    Not a ``preexec_fn``: that makes Python ``fork()`` instead of ``vfork()``, copying the
    build's page tables for every child, 12 ms per spawn at 0 MB and 88 ms at 1.3 GB
    (a 100,000-image build starts ~100,000 git processes); ``setpriv`` costs one ``exec``.
    """
    if not sys.platform.startswith("linux"):
        return ()
    found = shutil.which("setpriv")
    return (found, "--pdeathsig", "KILL", "--") if found else ()


def _spawn(args: Sequence[str], **popen: Any) -> subprocess.Popen:
    """Start ``args`` (no shell) as a child that dies with the build."""
    program = shutil.which(args[0])
    if program is None:
        hint = ("run this on a SLURM submit host (or use --local-array)"
                if args[0] in ("sbatch", "squeue") else
                "install git, and git-annex with `pip install git-annex` (then put that "
                "environment's bin/ on PATH)")
        raise EnvironmentProblem(f"{args[0]} is not on PATH; {hint}")
    return subprocess.Popen([*_death_signal_prefix(), program, *args[1:]], **popen)


@dataclass(frozen=True)
class Completed:
    """What a finished command printed, and how it ended."""

    args: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def ok(self) -> bool:
        return self.returncode == 0

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", errors="replace")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", errors="replace").strip()


def _popen(args: Sequence[str], cwd: Path | None, *, stdin: int | None) -> subprocess.Popen:
    log.debug("running %s in %s", " ".join(args), cwd or Path.cwd())
    return _spawn(args, cwd=cwd, stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


#: How git ("write error. Out of diskspace") and the OS say the disk is full.
NO_SPACE = ("No space left on device", "Out of diskspace")


def says_no_space(message: str) -> bool:
    """Whether a command's error is a full disk: a build-wide condition, never one file's."""
    return any(marker in message for marker in NO_SPACE)


def run(args: Sequence[str], cwd: Path | str | None = None, *, input: bytes | str | None = None,
        check: bool = True, stall: float = DEFAULT_STALL) -> Completed:
    """Run one command to its end; kill it when it prints nothing for ``stall`` seconds.

    ``check`` raises :class:`AnnexError` naming the command and its stderr when it fails.
    """
    proc = _popen(args, Path(cwd) if cwd is not None else None,
                  stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL)
    chunks: dict[str, list[bytes]] = {"out": [], "err": []}
    last = [time.monotonic()]

    def pump(stream, name: str) -> None:
        for block in iter(lambda: stream.read1(65536), b""):
            chunks[name].append(block)
            last[0] = time.monotonic()

    readers = [threading.Thread(target=pump, args=(proc.stdout, "out"), daemon=True),
               threading.Thread(target=pump, args=(proc.stderr, "err"), daemon=True)]
    for t in readers:
        t.start()
    if input is not None:
        data = input.encode("utf-8") if isinstance(input, str) else input
        with contextlib.suppress(BrokenPipeError, OSError):
            proc.stdin.write(data)  # type: ignore[union-attr]
        with contextlib.suppress(BrokenPipeError, OSError):
            proc.stdin.close()  # type: ignore[union-attr]
    # Wait on the readers (they end when the process closes its output, i.e. exits): joining
    # a thread returns the moment it ends, where Popen.wait(timeout) polls with sleeps and
    # adds up to 50 ms to every git call.
    stalled = False
    for t in readers:
        while t.is_alive() and not stalled:
            t.join(timeout=min(1.0, stall))
            if not t.is_alive():
                break
            if proc.poll() is not None:  # exited; a child of its own may hold the pipe open
                t.join(timeout=5)
                break
            if time.monotonic() - last[0] > stall:
                proc.kill()
                stalled = True
    try:
        proc.wait(timeout=stall)
    except subprocess.TimeoutExpired:  # output closed but still running: treat as a stall
        proc.kill()
        proc.wait()
        stalled = True
    for t in readers:
        t.join(timeout=5)
    done = Completed(tuple(args), proc.returncode, b"".join(chunks["out"]),
                     b"".join(chunks["err"]))
    name = " ".join(args[:3])
    if stalled:
        raise AnnexError(f"{name} stalled: no output for {stall:.0f} s (killed)")
    if check and not done.ok:
        if says_no_space(done.err):
            # the same condition as a download that fills the disk: the CLI says "disk full",
            # exits 1, and the next build (with space) recovers
            raise OSError(errno.ENOSPC, f"{name} ran out of space", str(cwd or args[2]))
        raise AnnexError(f"{name} failed: {done.err[:500] or f'exit {done.returncode}'}")
    return done


def git(root: Path | str, *args: str, check: bool = True, input: str | None = None,
        stall: float = DEFAULT_STALL) -> str:
    """``git -C root ARGS``; its stdout as text."""
    return run(["git", "-C", str(root), *args], input=input, check=check, stall=stall).out


def annex(root: Path | str, *args: str, check: bool = True, input: str | None = None,
          stall: float = DEFAULT_STALL) -> Completed:
    """``git annex ARGS`` in ``root``."""
    return run(["git", "annex", *args], cwd=root, input=input, check=check, stall=stall)


def json_lines(text: str) -> Iterator[dict]:
    """The JSON objects of a ``--json`` output, skipping anything else git-annex printed."""
    for raw in text.splitlines():
        with contextlib.suppress(json.JSONDecodeError):
            value = json.loads(raw)
            if isinstance(value, dict):
                yield value


class BatchProcess:
    """One long-lived ``git annex <cmd> --batch --json`` process: a line in, a reply out.

    For commands that answer every input line in order (``add``, ``registerurl``,
    ``metadata``), so the build can feed each file the moment its download completes and the
    annex work overlaps the network instead of following it.
    """

    def __init__(self, root: Path, args: Sequence[str], *, timeout: float = DEFAULT_STALL):
        self.args = list(args)
        self.timeout = timeout
        log.debug("running git annex %s --batch in %s", " ".join(self.args), root)
        self.proc = _spawn(
            ["git", "annex", *self.args, "--batch", "--json", "--json-error-messages"],
            cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL, text=True, bufsize=1,
        )
        self.replies: queue.Queue[str | None] = queue.Queue()
        self.sent: list[str] = []  # lines sent without waiting for their replies
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.replies.put(raw)
        self.replies.put(None)

    def _write(self, line: str) -> None:
        if "\n" in line or "\r" in line:
            raise AnnexError(f"refusing a line break in git annex {self.args[0]} input")
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise AnnexError(f"git annex {self.args[0]} exited early ({exc})") from exc

    def _reply(self) -> dict:
        try:
            raw = self.replies.get(timeout=self.timeout)
        except queue.Empty:
            self.proc.kill()
            raise AnnexError(f"git annex {self.args[0]} stalled: no reply for "
                             f"{self.timeout:.0f} s") from None
        if raw is None:
            self.replies.put(None)  # every later read sees the end too
            raise AnnexError(f"git annex {self.args[0]} exited early")
        try:
            reply = json.loads(raw) if raw.strip() else {}
        except json.JSONDecodeError:
            reply = {}
        return reply or {"success": False, "error-messages": ["no reply from git-annex"]}

    def ask(self, line: str) -> dict:
        """Send one line, return its JSON reply (``success`` false with a reason on trouble)."""
        if self.sent:
            raise AnnexError("ask() after send(): collect() the sent lines' replies first")
        self._write(line)
        return self._reply()

    def send(self, line: str) -> None:
        """Send one line and go on; :meth:`collect` gives its reply later, so the caller
        never waits for git-annex on work whose answer it needs only at the end."""
        self._write(line)
        self.sent.append(line)

    def collect(self) -> list[tuple[str, dict]]:
        """End the input; ``(line, reply)`` for every line sent, in order."""
        self.end_input()
        out = []
        for line in self.sent:
            try:
                out.append((line, self._reply()))
            except AnnexError as exc:
                out.append((line, {"success": False, "error-messages": [str(exc)]}))
        self.sent = []
        return out

    def end_input(self) -> None:
        """No more lines: git-annex flushes what it queued (index, journal) and exits."""
        with contextlib.suppress(OSError, ValueError):
            self.proc.stdin.close()  # type: ignore[union-attr]

    def close(self) -> None:
        self.end_input()
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def __enter__(self) -> BatchProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def batch(root: Path, args: Sequence[str], lines: Sequence[str], *,
          stall: float = DEFAULT_STALL,
          on_reply: Callable[[int], None] | None = None) -> tuple[list[dict], str]:
    """Feed ``lines`` to one ``git annex ARGS`` batch process; return (replies, problem).

    A writer thread feeds stdin while this thread drains stdout, so large batches never
    deadlock on full pipes. Replies may arrive out of order (``-J``): callers match them by
    the fields git-annex echoes (``file``, ``key``, ``input``). ``problem`` is empty unless the
    process died or stalled; ``on_reply(n)`` reports progress.
    """
    if not lines:
        return [], ""
    log.debug("running git annex %s in %s", " ".join(args), root)
    proc = _spawn(
        ["git", "annex", *args], cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, bufsize=1,
    )
    replies: queue.Queue[str | None] = queue.Queue()
    stderr_lines: list[str] = []

    def feed() -> None:
        try:
            for line in lines:
                proc.stdin.write(line + "\n")  # type: ignore[union-attr]
                proc.stdin.flush()  # type: ignore[union-attr]
            proc.stdin.close()  # type: ignore[union-attr]
        except (BrokenPipeError, OSError, ValueError):
            pass

    def drain() -> None:
        for raw in proc.stdout:  # type: ignore[union-attr]
            replies.put(raw)
        replies.put(None)

    def drain_err() -> None:
        stderr_lines.extend(raw.rstrip() for raw in proc.stderr)  # type: ignore[union-attr]

    for target in (feed, drain, drain_err):
        threading.Thread(target=target, daemon=True).start()
    results: list[dict] = []
    problem = ""
    while len(results) < len(lines):
        try:
            raw = replies.get(timeout=stall)
        except queue.Empty:
            problem = f"git annex {args[0]} stalled: no progress for {stall:.0f} s"
            proc.kill()
            break
        if raw is None:
            tail = "; ".join(stderr_lines[-3:])
            problem = f"git annex {args[0]} exited early ({tail or 'no message'})"
            break
        parsed = list(json_lines(raw))
        if not parsed:
            continue
        results.extend(parsed)
        if on_reply is not None:
            on_reply(len(results))
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    return results, problem


def reply_error(reply: Mapping) -> str:
    """The reason a batch reply gives for failing ('' when it succeeded)."""
    if reply.get("success"):
        return ""
    msgs = reply.get("error-messages") or []
    note = reply.get("note") or ""
    return "; ".join(str(m).strip() for m in msgs if m) or str(note) or "failed"


@dataclass(frozen=True)
class AnnexInfo:
    version: str
    #: repository versions this git-annex works with (``annex.version`` of a repository)
    supported: frozenset[str]


@functools.cache
def annex_info() -> AnnexInfo:
    """The git-annex on PATH (asked once per process), or a clear error saying how to get it."""
    try:
        out = run(["git", "annex", "version"], stall=60).out
    except (EnvironmentProblem, AnnexError) as exc:
        raise EnvironmentProblem(
            "git-annex not found on PATH; install it with `pip install git-annex` "
            "and put that environment's bin/ on PATH"
        ) from exc
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return AnnexInfo(fields.get("git-annex version", "?").strip(),
                     frozenset(fields.get("supported repository versions", "").split()))


def annex_version() -> str:
    return annex_info().version


def git_version() -> str:
    return run(["git", "--version"], stall=60).out.split()[-1]


def ensure_tools_on_path() -> None:
    """Put this interpreter's bin/ on PATH: the git-annex wheel installs its binary there, and
    DataLad finds git-annex through PATH even when the venv is not activated."""
    bindir = str(Path(sys.executable).parent)
    if bindir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bindir + os.pathsep + os.environ.get("PATH", "")
