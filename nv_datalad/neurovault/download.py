"""Parallel file downloads: one GET per image, verified before git-annex sees it.

``git annex addurl`` sends a HEAD before every GET; at NeuroVault's ~100 ms per request that
doubles the cost of a fresh build (benchmarks/results.md). Here each file is streamed once to
a temporary file inside ``.git`` (same filesystem as the worktree), checked (length against
``Content-Length``, gzip magic bytes decide the extension), then moved to its place. The
builder hands each file, as it lands, to long-lived ``git annex add`` / ``registerurl`` batch
processes, so the result is the same as addurl's: a checksum key whose web URL is recorded.
One pool serves a whole build, so the crawl can start the first batch's files while it still
walks (a small build's downloads then overlap its crawl instead of waiting for it).

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
from concurrent.futures import Future, ThreadPoolExecutor, as_completed, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
import urllib3

from nv_datalad.dataset import layout
from nv_datalad.neurovault.client import ClientConfig

log = logging.getLogger(__name__)

CHUNK = 1 << 16
INTERRUPTED = "not fetched: the build was interrupted"
#: seconds a stopped build waits for running downloads to notice (a chunk, not a stall)
GRACE = 2.0


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
    #: where the file waits until its batch collects it (None: collected, or failed)
    tmp: Path | None = field(default=None, repr=False, compare=False)

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
        return Fetched(want, str(rel), tmp=tmp)
    tmp.unlink(missing_ok=True)
    if stop.is_set():
        return Fetched(want, None, INTERRUPTED)
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

    def reset(self) -> None:
        self.record(True)


class Downloads:
    """One build's download pool: files may be asked for early (while the crawl still walks,
    :meth:`start`) and are collected batch by batch (:meth:`fetch`).

    A file lands complete in ``.git/nv-datalad-tmp`` and is moved to its layout path only
    when :meth:`fetch` collects it in the calling thread, so nothing the crawl started ever
    appears in the worktree before its batch imports it; :meth:`close` stops what is running
    and deletes what was never collected. One :class:`Wanted` per image id per build.
    """

    def __init__(self, session: requests.Session, root: Path, *, workers: int = 4,
                 timeout: tuple[float, float] | None = None, attempts: int = 3,
                 max_consecutive_fails: int = 20):
        self.session, self.root, self.attempts = session, root, attempts
        # the client's defaults, so one place says how long to wait
        self.timeout = timeout if timeout is not None else ClientConfig().file_timeout
        self.breaker = _Breaker(max_consecutive_fails)
        self.stop = threading.Event()
        self.full: list[DiskFull] = []
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="download")
        self.futures: dict[Wanted, Future[Fetched]] = {}
        self.lock = threading.Lock()
        self.closed = False

    def __enter__(self) -> Downloads:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        self.close(grace=GRACE if exc_type is not None else None)

    def start(self, want: Wanted) -> None:
        """Begin downloading ``want`` now; :meth:`fetch` collects it with its batch."""
        self._future(want)

    def fetch(self, wanted: Sequence[Wanted],
              on_result: Callable[[int, Fetched], None] | None = None) -> list[Fetched]:
        """Download ``wanted`` (those started early are not asked again); one result per
        item, in input order.

        ``on_result(index, fetched)`` runs in the calling thread as each download completes,
        so the caller can hand finished files to git-annex while the others are in flight.
        Ctrl-C (or any exception in the callback) stops every download at its next chunk and
        cancels the queued ones, so the caller can commit what landed within seconds. A full
        disk stops everything too: :class:`DiskFull` is raised after the running downloads
        end. Failures in a row are counted per call: each batch gets its own breaker.
        """
        self.breaker.reset()
        futures = {self._future(w): i for i, w in enumerate(wanted)}
        results: dict[int, Fetched] = {}
        try:
            for future in as_completed(futures):
                index = futures[future]
                results[index] = self._land(future)
                if on_result is not None:
                    on_result(index, results[index])
        except BaseException:
            self.close(grace=GRACE)
            raise
        if self.full:
            raise self.full[0]
        return [results[i] for i in range(len(wanted))]

    def close(self, *, grace: float | None = None) -> None:
        """Stop every download and delete the files no batch collected. Waits for running
        downloads to notice (at their next chunk), at most ``grace`` seconds: after Ctrl-C a
        stalled connection is not waited for, and removes its own file when it ends."""
        self.stop.set()
        with self.lock:
            if self.closed:
                return
            self.closed = True
            pending = list(self.futures.values())
        self.pool.shutdown(wait=False, cancel_futures=True)
        wait(pending, timeout=grace)
        for future in pending:
            if future.done():
                self._orphan(future)

    def _future(self, want: Wanted) -> Future[Fetched]:
        with self.lock:
            future = self.futures.get(want)
            if future is not None:
                return future
            if self.closed:
                future = Future()
                future.set_result(Fetched(want, None, INTERRUPTED))
                return future
            # the first download makes the directory: recovery empties it before
            (self.root / layout.DOWNLOAD_TMP).mkdir(parents=True, exist_ok=True)
            future = self.futures[want] = self.pool.submit(self._task, want)
        # outside the lock: a download done already runs the callback here, at once
        future.add_done_callback(self._orphan)
        return future

    def _task(self, want: Wanted) -> Fetched:
        if self.stop.is_set():
            return Fetched(want, None, INTERRUPTED)
        if self.breaker.open:
            return Fetched(want, None, f"not tried: {self.breaker.limit} downloads failed in a "
                                       "row (server down?); the next build retries")
        try:
            got = _fetch(self.session, self.root, want, self.timeout, self.attempts, self.stop)
        except DiskFull as exc:
            self.full.append(exc)
            self.stop.set()
            return Fetched(want, None, str(exc))
        self.breaker.record(got.ok)
        return got

    def _land(self, future: Future[Fetched]) -> Fetched:
        """Move a collected file from the download directory to its layout path."""
        with self.lock:
            got = future.result()
            if self.closed or got.tmp is None:
                return Fetched(got.wanted, None, got.error or INTERRUPTED)
            tmp, got = got.tmp, Fetched(got.wanted, got.path)
            del self.futures[got.wanted]  # collected: no orphan now
        target = self.root / str(got.path)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, target)  # replaces a leftover file or symlink, never writes through it
        return got

    def _orphan(self, future: Future[Fetched]) -> None:
        """A file finished after the build stopped (or never collected): delete it."""
        if future.cancelled():
            return
        got = future.result()
        with self.lock:
            closed = self.closed
        if closed and got.tmp is not None:
            got.tmp.unlink(missing_ok=True)


def fetch_all(session: requests.Session, root: Path, wanted: Sequence[Wanted], *,
              workers: int = 4, on_result: Callable[[int, Fetched], None] | None = None,
              **options: Any) -> list[Fetched]:
    """One batch on a pool of its own (see :meth:`Downloads.fetch`)."""
    with Downloads(session, root, workers=workers, **options) as downloads:
        return downloads.fetch(wanted, on_result)
