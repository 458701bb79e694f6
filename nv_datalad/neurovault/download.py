"""Parallel file downloads: one GET per image, verified before git-annex sees it.

``git annex addurl`` sends a HEAD before every GET; at NeuroVault's ~100 ms per request that
doubles the cost of a fresh build (benchmarks/results.md). Here each file is streamed once to
a temporary file inside ``.git`` (same filesystem as the worktree), checked (length against
``Content-Length``, gzip magic bytes decide the extension), then moved to its place. The
builder hands each file, as it lands, to long-lived ``git annex add`` / ``registerurl`` batch
processes, so the result is the same as addurl's: a checksum key whose web URL is recorded.

Bodies are read raw: NeuroVault sends a bogus ``Content-Encoding: utf-8`` that no client must
"decode". A read timeout bounds a stalled transfer; a body cut off is retried here, since
urllib3 only retries before the body.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import requests
import urllib3

from nv_datalad.dataset import layout
from nv_datalad.neurovault.client import ClientConfig

log = logging.getLogger(__name__)

#: Partial downloads live here (inside .git, never committed, removed by ``recover``).
CHUNK = 1 << 16


@dataclass(frozen=True)
class Wanted:
    url: str
    collection_id: int
    image_id: int


@dataclass(frozen=True)
class Fetched:
    """Where a download landed (relpath, extension decided by its bytes), or why it failed."""

    wanted: Wanted
    path: str | None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.path is not None


class DiskFull(OSError):
    """No space left for a download: every other download would fail the same way."""


def _fetch(session: requests.Session, root: Path, want: Wanted, timeout: tuple[float, float],
           attempts: int, stop: threading.Event) -> Fetched:
    tmp = root / layout.DOWNLOAD_TMP / f"image_{int(want.image_id)}.part"
    last = ""
    for _ in range(attempts):
        if stop.is_set():
            break
        try:
            with session.get(want.url, stream=True, timeout=timeout,
                             headers={"Accept": "*/*", "Accept-Encoding": "identity"}) as resp:
                if resp.status_code >= 400:
                    return Fetched(want, None, f"HTTP {resp.status_code}")
                received, head = 0, b""
                with tmp.open("wb") as fh:
                    while chunk := resp.raw.read(CHUNK, decode_content=False):
                        if stop.is_set():
                            raise InterruptedError("interrupted")
                        head = head or chunk[:2]
                        fh.write(chunk)
                        received += len(chunk)
            # A body shorter than its Content-Length is raised by urllib3 itself (2.x enforces
            # the length on raw reads: IncompleteRead, retried below like any broken transfer).
            if received == 0:
                raise OSError("empty body")
        except OSError as exc:
            if exc.errno == errno.ENOSPC:
                tmp.unlink(missing_ok=True)
                raise DiskFull(errno.ENOSPC, f"disk full while downloading {want.url} into "
                                             f"{root}") from exc
            last = str(exc)
            if isinstance(exc, InterruptedError):
                break
            log.debug("download of %s failed (%s), retrying", want.url, exc)
            continue
        except (requests.RequestException, urllib3.exceptions.HTTPError) as exc:
            last = str(exc)
            log.debug("download of %s failed (%s), retrying", want.url, exc)
            continue
        rel = layout.image_file(want.collection_id, want.image_id,
                                layout.extension_for_bytes(head))
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)  # replaces a leftover file or symlink, never writes through it
        return Fetched(want, str(rel))
    tmp.unlink(missing_ok=True)
    if stop.is_set():
        return Fetched(want, None, "not fetched: the build was interrupted")
    return Fetched(want, None, f"download failed after {attempts} attempts: {last}")


class _Breaker:
    """Stop trying after ``limit`` failures in a row: the server is down, and the next build
    retries everything that was not fetched (nilearn's 'consecutive failures' rule)."""

    def __init__(self, limit: int):
        self.limit = limit
        self.in_a_row = 0
        self.lock = threading.Lock()

    @property
    def open(self) -> bool:
        return self.in_a_row >= self.limit

    def record(self, ok: bool) -> None:
        with self.lock:
            self.in_a_row = 0 if ok else self.in_a_row + 1


def fetch_all(
    session: requests.Session,
    root: Path,
    wanted: Sequence[Wanted],
    *,
    workers: int = 4,
    timeout: tuple[float, float] | None = None,
    attempts: int = 3,
    max_consecutive_fails: int = 20,
    on_result: Callable[[int, Fetched], None] | None = None,
) -> list[Fetched]:
    """Download ``wanted`` on ``workers`` threads; one result per item, in input order.

    ``on_result(index, fetched)`` runs in the calling thread as each download completes, so the
    caller can hand finished files to git-annex while the others are still in flight.
    Ctrl-C (or any exception in the caller's callback) stops every download at its next chunk
    and cancels the queued ones, so the caller can commit what landed within seconds. A full
    disk stops everything too: it raises :class:`DiskFull` after the running downloads end.
    """
    if timeout is None:  # the client's defaults, so one place says how long to wait
        timeout = ClientConfig().file_timeout
    (root / layout.DOWNLOAD_TMP).mkdir(parents=True, exist_ok=True)
    breaker = _Breaker(max_consecutive_fails)
    stop = threading.Event()
    full: list[DiskFull] = []

    def task(want: Wanted) -> Fetched:
        if stop.is_set():
            return Fetched(want, None, "not fetched: the build was interrupted")
        if breaker.open:
            return Fetched(want, None, f"not tried: {breaker.limit} downloads failed in a row "
                                       "(server down?); the next build retries")
        try:
            got = _fetch(session, root, want, timeout, attempts, stop)
        except DiskFull as exc:
            full.append(exc)
            stop.set()
            return Fetched(want, None, str(exc))
        breaker.record(got.ok)
        return got

    results: dict[int, Fetched] = {}
    pool = ThreadPoolExecutor(max_workers=max(1, workers))
    try:
        futures = {pool.submit(task, w): i for i, w in enumerate(wanted)}
        for future in as_completed(futures):
            index = futures[future]
            results[index] = future.result()
            if on_result is not None:
                on_result(index, results[index])
    except BaseException:
        stop.set()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    if full:
        raise full[0]
    return [results[i] for i in range(len(wanted))]
