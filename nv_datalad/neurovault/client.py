"""HTTP client for NeuroVault's REST API (and anything that speaks it, like our emulator).

Survives the live server's quirks (NEUROVAULT_API.md): unordered lists, absolute ``next`` links,
301s for missing slashes, ``http://`` URLs inside records, null spelled four ways, two date
styles. Transport retries (5xx, connection errors) are urllib3's ``Retry``; a body that arrives
truncated or is not JSON is retried here, because urllib3 only retries before the body is read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from nv_datalad.errors import Forbidden, NeuroVaultError, NotFound
from nv_datalad.neurovault.records import (
    is_public_server,
    is_web_url,
    normalise_url,
)

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class ClientConfig:
    """Knobs with defaults that suit the public server (nilearn uses a 10 s timeout)."""

    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    #: between two reads of an image's body (a large file from a busy server pauses longer
    #: than a JSON page does)
    file_read_timeout: float = 60.0
    retries: int = 5
    backoff: float = 0.5
    page_size: int = 1000  # the server's max_limit; fewer round trips than nilearn's 100
    workers: int = 8
    user_agent: str = "nv-datalad"

    @property
    def file_timeout(self) -> tuple[float, float]:
        """(connect, read) for an image file's download."""
        return self.connect_timeout, self.file_read_timeout

    @property
    def crawl_workers(self) -> int:
        """Requests in flight while crawling: list pages are tiny JSON replies, so four times
        the file workers (at most 16, a polite load on a small server) hide the latency."""
        return max(1, min(16, 4 * self.workers))


def _with_query(url: str, **params: Any) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update({k: str(v) for k, v in params.items()})
    return urlunsplit(parts._replace(query=urlencode(query)))


class NeuroVaultClient:
    """One pooled ``requests.Session`` shared by worker threads (requests sessions are safe for
    concurrent GETs through one adapter pool)."""

    def __init__(self, base_url: str, config: ClientConfig | None = None):
        if not is_web_url(base_url):
            raise NeuroVaultError(f"server must be an http(s) URL, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.api_url = self.base_url + "/api/"
        self.config = config or ClientConfig()
        self.https = is_public_server(self.base_url) and self.base_url.startswith("https://")
        self.session = self._make_session(self.config.retries)
        # Files: fewer transport retries. A file that keeps failing is reported and retried
        # by the next build; waiting the API's full backoff per file would stall a build.
        self.file_session = self._make_session(min(2, self.config.retries))
        self._lock = threading.Lock()
        self.requests_made = 0

    def _make_session(self, retries: int) -> requests.Session:
        cfg = self.config
        retry = Retry(
            total=retries,
            connect=retries,
            read=retries,
            status=retries,
            backoff_factor=cfg.backoff,
            backoff_max=30,
            status_forcelist=(429, 500, 502, 503, 504),
            allowed_methods=frozenset({"GET", "HEAD"}),
            respect_retry_after_header=True,
            raise_on_status=False,
        )
        session = requests.Session()
        # Keep-alive: every thread of the crawl (or of the downloads) keeps its connection,
        # so the pool must hold as many as run at once, or urllib3 discards the extras.
        adapter = HTTPAdapter(max_retries=retry, pool_connections=cfg.workers,
                              pool_maxsize=max(cfg.workers, cfg.crawl_workers))
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        session.headers.update({"User-Agent": cfg.user_agent, "Accept": "application/json"})
        return session

    def close(self) -> None:
        self.session.close()
        self.file_session.close()

    def __enter__(self) -> NeuroVaultClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport -------------------------------------------------------------------------

    def url_for(self, path: str) -> str:
        return urljoin(self.api_url, path.lstrip("/"))

    def get_json(self, url: str) -> Any:
        """GET ``url`` and decode JSON, retrying bodies that arrive broken.

        404 and 403 raise at once (:class:`NotFound`, :class:`Forbidden`); other failures raise
        :class:`NeuroVaultError` naming the URL after ``retries`` attempts.
        """
        cfg = self.config
        last: Exception | None = None
        for attempt in range(cfg.retries + 1):
            if attempt:
                time.sleep(min(cfg.backoff * 2 ** (attempt - 1), 10))
            try:
                with self._lock:
                    self.requests_made += 1
                resp = self.session.get(url, timeout=(cfg.connect_timeout, cfg.read_timeout))
            except requests.RequestException as exc:
                if _retries_exhausted(exc):  # urllib3 already tried `retries` times
                    raise NeuroVaultError(f"cannot reach the server ({_reason(exc)})",
                                          url=url) from exc
                last = exc  # the body broke off mid-way: urllib3 does not retry that
                log.debug("request failed (%s), retrying: %s", exc, url)
                continue
            if resp.status_code == 404:
                raise NotFound("not found on the server", url=url, status_code=404)
            if resp.status_code == 403:
                raise Forbidden("access denied (private?)", url=url, status_code=403)
            if resp.status_code >= 400:  # 5xx after urllib3's retries, or another 4xx
                raise NeuroVaultError("server error", url=url, status_code=resp.status_code)
            try:
                return resp.json()
            except ValueError as exc:  # truncated or malformed body
                last = exc
                log.debug("malformed JSON (%s), retrying: %s", exc, url)
        raise NeuroVaultError(f"giving up after {cfg.retries + 1} attempts ({last})", url=url)

    def probe(self, attempts: int = 3) -> None:
        """One small request, so a wrong URL or a server that is down is reported at once.

        A refused connection fails at once; an error answer or a broken body (a server under
        load, a page cut off) is asked again a couple of times before it counts.
        """
        url = _with_query(self.url_for("collections/"), limit=1)
        problem: NeuroVaultError | None = None
        for attempt in range(attempts):
            if attempt:
                time.sleep(0.3 * attempt)
            try:
                resp = self.file_session.get(url, timeout=(self.config.connect_timeout,
                                                           self.config.read_timeout))
            except requests.RequestException as exc:
                raise NeuroVaultError(f"cannot reach the server ({_reason(exc)})",
                                      url=url) from exc
            if resp.status_code >= 400:
                problem = NeuroVaultError("the server answers with an error", url=url,
                                          status_code=resp.status_code)
                if resp.status_code < 500:
                    break
                continue
            try:
                data = resp.json()
            except ValueError:
                data = None
            if isinstance(data, dict) and "results" in data:
                return
            problem = NeuroVaultError("this does not look like NeuroVault's API",
                                      url=self.url_for("collections/"))
        assert problem is not None
        raise problem

    # -- paging ----------------------------------------------------------------------------

    def list_all(self, path: str, *, limit: int | None = None) -> list[dict]:
        """Every result of a paginated list, returned in page order (see :meth:`list_pages`)."""
        with ThreadPoolExecutor(max_workers=self.config.workers) as pool:
            return self.list_pages(pool, path, limit=limit).result()

    def list_pages(self, pool: Executor, path: str, *,
                   limit: int | None = None) -> Future[list[dict]]:
        """Every result of a paginated list, as a future; its pages are requested on ``pool``.

        The first page tells ``count``; the remaining offsets are then requested concurrently
        on the same pool, from a callback, so a crawl can keep many lists in flight on one
        bounded pool without a worker ever waiting for another. ``next`` links are followed
        afterwards only if the parallel pages came up short (the list grew meanwhile), with a
        guard against a server that loops. A pool shut down meanwhile fails the future.
        """
        page = self.config.page_size if limit is None else limit
        done: Future[list[dict]] = Future()

        def url_at(offset: int) -> str:
            return _with_query(self.url_for(path), limit=page, offset=offset)

        def finish(pages: list[Future[dict]]) -> None:
            try:
                results = [r for f in pages for r in f.result()["results"]]
                count = pages[0].result().get("count")
                done.set_result(self._follow_next(results, pages[-1].result().get("next"),
                                                  count))
            except BaseException as exc:  # handed to whoever reads the future
                done.set_exception(exc)

        def on_first(first: Future[dict]) -> None:
            try:
                head = first.result()
                count, got = head.get("count"), len(head["results"])
                step = got or page
                offsets = range(step, count, step) if head.get("next") and \
                    isinstance(count, int) and count > got else range(0)
                rest = [pool.submit(self._page, url_at(o)) for o in offsets]
            except BaseException as exc:  # incl. a pool shut down meanwhile
                done.set_exception(exc)
                return
            pages = [first, *rest]
            left = [len(rest)]
            lock = threading.Lock()

            def one_done(_: Future) -> None:
                with lock:
                    left[0] -= 1
                    last = left[0] == 0
                if last:
                    finish(pages)

            if not rest:
                finish(pages)
            for f in rest:
                f.add_done_callback(one_done)

        pool.submit(self._page, url_at(0)).add_done_callback(on_first)
        return done

    def _follow_next(self, results: list[dict], nxt: str | None, count: Any) -> list[dict]:
        seen: set[str] = set()
        while nxt and len(results) < (count or 0):
            if nxt in seen or len(seen) > 100_000:
                raise NeuroVaultError("paging loops (a 'next' link repeats)", url=nxt)
            seen.add(nxt)
            batch = self._page(nxt)
            if not batch["results"]:
                break
            results.extend(batch["results"])
            nxt = batch.get("next")
        return _dedupe_by_id(results)

    def _page(self, url: str) -> dict:
        data = self.get_json(url)
        if isinstance(data, dict) and "id" in data and "results" not in data:
            data = {"count": 1, "next": None, "results": [data]}
        if not isinstance(data, dict) or not isinstance(data.get("results"), list):
            raise NeuroVaultError("reply is not a result page", url=url)
        data["results"] = [r for r in data["results"] if isinstance(r, dict)]
        return data

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[Any]:
        """Run ``fn`` over ``items`` on the worker pool, yielding results in input order."""
        items = list(items)
        if len(items) <= 1:
            yield from (fn(i) for i in items)
            return
        with ThreadPoolExecutor(max_workers=self.config.workers) as pool:
            yield from pool.map(fn, items)

    # -- resources -------------------------------------------------------------------------

    def collections(self) -> list[dict]:
        return self.list_all("collections/")

    def collection(self, collection_id: int) -> dict:
        return self._record(f"collections/{int(collection_id)}/")

    def collection_images(self, collection_id: int) -> list[dict]:
        return self.list_all(f"collections/{int(collection_id)}/images/")

    def collection_images_on(self, pool: Executor, collection_id: int) -> Future[list[dict]]:
        """:meth:`collection_images` with every page requested on ``pool`` (a crawl's)."""
        return self.list_pages(pool, f"collections/{int(collection_id)}/images/")

    def image(self, image_id: int) -> dict:
        return self._record(f"images/{int(image_id)}/")

    def _record(self, path: str) -> dict:
        url = self.url_for(path)
        data = self.get_json(url)
        if not isinstance(data, dict) or "id" not in data:
            raise NeuroVaultError("reply is not a record", url=url)
        return data

    def file_url(self, record: Mapping[str, Any]) -> str | None:
        """The record's download URL, normalised, or None when it is not a web URL."""
        url = record.get("file")
        if not is_web_url(url):
            return None
        return normalise_url(str(url), https=self.https)

    def file_changed_since(self, url: str, since: datetime) -> bool | None:
        """Conditional HEAD: has the file behind ``url`` changed after ``since``?

        NeuroVault's ``Last-Modified`` is the file's mtime and it honours If-Modified-Since, so
        asked with the image's previous ``modify_date``, a metadata-only edit answers 304 and
        costs no download. A 200 whose Last-Modified is not newer counts as unchanged too
        (servers that ignore If-Modified-Since).
        Returns None when the server cannot tell (no Last-Modified).
        """
        header = since.astimezone(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
        cfg = self.config
        try:
            with self._lock:
                self.requests_made += 1
            resp = self.session.head(
                url,
                headers={"If-Modified-Since": header, "Accept": "*/*"},
                timeout=(cfg.connect_timeout, cfg.read_timeout),
                allow_redirects=True,
            )
        except requests.RequestException as exc:
            raise NeuroVaultError(f"HEAD failed ({exc})", url=url) from exc
        if resp.status_code == 304:
            return False
        if resp.status_code == 404:
            raise NotFound("file not found on the server", url=url, status_code=404)
        if resp.status_code >= 400:
            raise NeuroVaultError("HEAD failed", url=url, status_code=resp.status_code)
        last_modified = resp.headers.get("Last-Modified")
        if not last_modified:
            return None
        try:
            from email.utils import parsedate_to_datetime

            return parsedate_to_datetime(last_modified) > since.replace(microsecond=0)
        except (TypeError, ValueError):
            return None


def _retries_exhausted(exc: requests.RequestException) -> bool:
    """Did urllib3's ``Retry`` already give up (as opposed to a body cut off after headers)?"""
    from urllib3.exceptions import MaxRetryError

    return isinstance(exc, requests.exceptions.RetryError) or any(
        isinstance(a, MaxRetryError) for a in exc.args)


def _reason(exc: requests.RequestException) -> str:
    from urllib3.exceptions import MaxRetryError

    for arg in exc.args:
        if isinstance(arg, MaxRetryError) and arg.reason is not None:
            return str(arg.reason).split(": ", 1)[-1]
    return str(exc)


def _dedupe_by_id(results: list[dict]) -> list[dict]:
    """Offset paging over a list that changes can repeat a record; keep the first."""
    seen: set[object] = set()
    out = []
    for r in results:
        rid = r.get("id")
        if rid in seen:
            continue
        seen.add(rid)
        out.append(r)
    return out
