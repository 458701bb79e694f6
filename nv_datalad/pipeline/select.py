"""Which images the server has that match a spec: a deterministic walk in ascending id order.

The server lists collections in database order, so nilearn's selection with ``max_images``
depends on the day you ask. Here collections and images are always visited by ascending id:
the same spec against the same server state selects the same images. Image lists (every page
of each) are fetched ahead of the walk on one bounded pool, many small collections at once, and
consumed in id order: the crawl costs a few round trips, not one per collection.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

from nv_datalad.errors import NeuroVaultError, NotFound
from nv_datalad.neurovault.client import NeuroVaultClient
from nv_datalad.neurovault.records import (
    image_collection_id,
    image_problem,
    normalise_nulls,
    record_id,
)
from nv_datalad.records import Result, Status

log = logging.getLogger(__name__)

# nilearn's limit: stop after this many failures in a row (the server is down).
MAX_CONSECUTIVE_FAILS = 100
#: The action of a result for a record refused at the edge.
REFUSED = "refuse"
#: Image lists requested ahead of the walk: enough to keep the crawl's pool busy across many
#: small collections, few enough that lists fetched but not yet walked stay a bounded window.
CRAWL_WINDOW = 256


@dataclass(frozen=True)
class Selected:
    """One image chosen for the dataset, with its collection (raw server records)."""

    image: dict
    collection: dict

    @property
    def image_id(self) -> int:
        return int(self.image["id"])

    @property
    def collection_id(self) -> int:
        return int(self.collection["id"])


@dataclass
class Selection:
    items: list[Selected] = field(default_factory=list)
    failures: list[Result] = field(default_factory=list)
    #: image ids seen on the server in the collections that were walked (matching or not)
    seen_image_ids: set[int] = field(default_factory=set)
    #: collection ids whose image list was read completely
    walked_collections: set[int] = field(default_factory=set)
    #: current records of ``keep`` images (those in the dataset) that did not match
    unmatched: dict[int, dict] = field(default_factory=dict)
    #: records refused at the edge (bad ids, URLs, sizes), one result each
    refused: list[Result] = field(default_factory=list)
    #: False when the walk stopped early for failures (so absence proves nothing)
    complete: bool = True

    @property
    def ids(self) -> list[int]:
        return [s.image_id for s in self.items]


class _Walk:
    """Mutable state of one walk: failure counters and the results gathered so far."""

    def __init__(self, max_images: int | None, max_consecutive_fails: int,
                 keep: frozenset[int] = frozenset(),
                 on_take: Callable[[Selected], None] | None = None):
        self.sel = Selection()
        self.keep = keep
        self.on_take = on_take
        self.max_images = max_images
        self.max_consecutive_fails = max_consecutive_fails
        self.consecutive_fails = 0

    @property
    def full(self) -> bool:
        return self.max_images is not None and len(self.sel.items) >= self.max_images

    def fail(self, action: str, message: str, **ids: int | None) -> None:
        log.warning("%s", message)
        self.sel.failures.append(Result(action, Status.ERROR, message=message, **ids))
        self.consecutive_fails += 1
        if self.consecutive_fails >= self.max_consecutive_fails:
            self.sel.complete = False
            raise NeuroVaultError(
                f"stopped after {self.consecutive_fails} failures in a row; "
                "is the server reachable? Re-run the build later to finish"
            )

    def refuse(self, record: Mapping[str, Any], problem: str, collection_id: int | None,
               kind: str = "image") -> None:
        """A record the server should not have sent: refused once, here, with the reason.

        Not a failure of the build (retrying cannot fix a bad record) and not a sign of an
        outage, so it neither counts towards ``max_consecutive_fails`` nor sets exit 1.
        """
        rid = record.get("id")
        what = f"{kind} {str(rid)[:40]!r}" + (
            f" of collection {collection_id}" if collection_id is not None else "")
        message = f"refused {what}: {problem}"
        log.warning("%s", message)
        self.sel.refused.append(Result(REFUSED, Status.IMPOSSIBLE, record_id(record),
                                       collection_id, message=message))

    def screen(self, images: Iterable[dict], cid: int) -> Iterator[tuple[int, dict]]:
        """The usable records of a collection's complete image list: every id is noted as
        seen, bad records are refused. The collection counts as walked (absence from it
        proves an image vanished) only once the whole list was read, not when ``max_images``
        stopped the walk half way."""
        for image in images:
            iid = record_id(image)
            if iid is not None:
                self.sel.seen_image_ids.add(iid)
            problem = image_problem(image, cid)
            if problem:
                self.refuse(image, problem, cid)
            elif iid is not None:
                yield iid, image
        self.sel.walked_collections.add(cid)

    def take(self, image: dict, collection: dict) -> None:
        self.consecutive_fails = 0
        if image.get("collection_id") is None:
            # older records name their collection only by URL; every later layer (tables,
            # annex metadata, load) reads collection_id, so record the one we walked
            image = {**image, "collection_id": collection["id"]}
        self.sel.items.append(Selected(image, collection))
        if self.on_take is not None:
            self.on_take(self.sel.items[-1])


def select(
    client: NeuroVaultClient,
    spec: Any,
    *,
    keep: frozenset[int] = frozenset(),
    max_consecutive_fails: int = MAX_CONSECUTIVE_FAILS,
    on_take: Callable[[Selected], None] | None = None,
) -> Selection:
    """Walk the server as ``spec`` says. Failures become result records, never exceptions,
    until ``max_consecutive_fails`` in a row suggest the server is down. ``keep``: ids of
    images the dataset holds, whose records are kept even when they no longer match.
    ``on_take`` sees each image as it is selected, while the walk goes on (downloads start
    there)."""
    walk = _Walk(None if spec.explicit else spec.max_images, max_consecutive_fails, keep,
                 on_take)
    if walk.full:  # max_images: 0 asks for nothing
        return walk.sel
    try:
        if spec.explicit:
            _walk_explicit(client, spec, walk)
        else:
            _walk_filtered(client, spec, walk)
    except NeuroVaultError as exc:
        walk.sel.complete = False
        walk.sel.failures.append(Result("select", Status.ERROR, message=str(exc)))
    return walk.sel


def select_local(spec: Any, local: Mapping[int, dict], cols: Mapping[int, dict]) -> Selection:
    """Offline selection: the spec's filters over what the dataset holds, ascending ids."""
    col_ok, img_ok = spec.collection_predicate(), spec.image_predicate()
    sel = Selection()
    wanted_ids = set(spec.image_ids)
    wanted_cols = set(spec.collection_ids)
    if not spec.explicit and spec.max_images == 0:
        return sel
    for iid in sorted(local):
        sc = local[iid]
        col = cols.get(sc.get("collection_id"))  # type: ignore[arg-type]
        if col is None:
            continue
        if spec.explicit and iid not in wanted_ids and col.get("id") not in wanted_cols:
            continue
        if col_ok(normalise_nulls(col)) and img_ok(normalise_nulls(sc)):
            sel.items.append(Selected(sc, col))
            if not spec.explicit and spec.max_images is not None \
                    and len(sel.items) >= spec.max_images:
                break
    return sel


def _wanted_collection_ids(terms: Mapping[str, Any]) -> list[int] | None:
    """Ids the collection terms pin down (``collection_id: 35`` moved to ``id``), so the
    server is asked for those collections only instead of listing every collection."""
    cond = terms.get("id")
    if isinstance(cond, int) and not isinstance(cond, bool):
        return [cond]
    if isinstance(cond, Mapping) and set(cond) == {"in"}:
        values = cond["in"]
        if isinstance(values, list | tuple) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in values
        ):
            return sorted(set(values))
    return None


def _walk_filtered(
    client: NeuroVaultClient, spec: Any, walk: _Walk
) -> None:
    col_ok = spec.collection_predicate()
    img_ok = spec.image_predicate()
    pinned = _wanted_collection_ids(spec.collection_terms)
    if pinned is not None:
        collections = []
        for cid, got in _fetch_collections(client, pinned).items():
            if isinstance(got, NeuroVaultError):
                walk.fail("select", f"collection {cid}: {got}", collection_id=cid)
            else:
                collections.append(got)
    else:
        collections = client.collections()
    usable = []
    for c in collections:
        if record_id(c) is None:
            walk.refuse(c, f"collection id {str(c.get('id'))[:40]!r} is not a non-negative "
                           "integer", None, kind="collection")
        else:
            usable.append(c)
    chosen = sorted((c for c in usable if col_ok(normalise_nulls(c))),
                    key=lambda c: record_id(c) or 0)
    log.info("%d collections match the collection terms", len(chosen))
    with closing(_prefetch(client, chosen)) as lists:  # closing: stop requesting when full
        for collection, images in lists:
            cid = int(collection["id"])
            if isinstance(images, Exception):
                walk.fail("select", f"collection {cid}: {images}", collection_id=cid)
                continue
            for iid, image in walk.screen(sorted(images, key=lambda r: record_id(r) or -1), cid):
                if img_ok(normalise_nulls(image)):
                    walk.take(image, collection)
                    if walk.full:
                        return
                elif iid in walk.keep:
                    walk.sel.unmatched[iid] = {**image, "collection_id": cid}


def _prefetch(
    client: NeuroVaultClient, collections: Sequence[dict], window: int = CRAWL_WINDOW
) -> Iterator[tuple[dict, list[dict] | Exception]]:
    """Image lists of ``collections``, every page of each, yielded in input order.

    All requests share one pool of ``crawl_workers`` threads, so many small collections are
    in flight at once. At most ``window`` lists are requested ahead of the consumer (memory
    stays flat); closing the generator (``max_images`` met) cancels what is queued, so no new
    request is sent.
    """
    pool = ThreadPoolExecutor(max_workers=client.config.crawl_workers)
    pending: deque[tuple[dict, Future[list[dict]]]] = deque()
    upcoming = iter(collections)

    def top_up() -> None:
        while len(pending) < window and (col := next(upcoming, None)) is not None:
            pending.append((col, client.collection_images_on(pool, int(col["id"]))))

    try:
        top_up()
        while pending:
            col, fut = pending.popleft()
            top_up()
            try:
                images: list[dict] | Exception = fut.result()
            except NeuroVaultError as exc:
                images = exc
            yield col, images
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _fetch_collections(client: NeuroVaultClient,
                       cids: Sequence[int]) -> dict[int, dict | NeuroVaultError]:
    """Collection records by id (in ``cids`` order), requested in parallel."""

    def fetch(cid: int) -> dict | NeuroVaultError:
        try:
            return client.collection(cid)
        except NeuroVaultError as exc:
            return exc

    return dict(zip(cids, client.map(fetch, cids), strict=True))


def _walk_explicit(client: NeuroVaultClient, spec: Any, walk: _Walk) -> None:
    """``fetch_neurovault_ids``: every image of the listed collections plus the listed images;
    filters the user wrote still apply, nilearn's defaults do not."""
    col_ok: Callable[[Mapping], bool] = spec.collection_predicate()
    img_ok: Callable[[Mapping], bool] = spec.image_predicate()
    picked: dict[int, tuple[dict, int]] = {}
    listed = sorted(set(spec.collection_ids))
    records = _fetch_collections(client, listed)

    def get_collection(cid: int) -> dict | None:
        got = records[cid]
        if isinstance(got, NeuroVaultError):
            walk.fail("select", f"collection {cid}: {got}", collection_id=cid)
            return None
        return got

    chosen = [r for r in records.values()
              if not isinstance(r, NeuroVaultError) and col_ok(normalise_nulls(r))]
    with closing(_prefetch(client, chosen)) as lists:
        for cid in listed:  # failures reported in id order, as the walk meets them
            col = get_collection(cid)
            if col is None or not col_ok(normalise_nulls(col)):
                continue
            _, images = next(lists)
            if isinstance(images, Exception):
                walk.fail("select", f"collection {cid}: {images}", collection_id=cid)
                continue
            for iid, image in walk.screen(images, cid):
                picked[iid] = (image, cid)

    wanted = sorted(set(spec.image_ids) - set(picked))

    def fetch_image(iid: int) -> dict | Exception:
        try:
            return client.image(iid)
        except NeuroVaultError as exc:
            return exc

    for iid, image in zip(wanted, client.map(fetch_image, wanted), strict=True):
        if isinstance(image, Exception):
            reason = "not found on the server" if isinstance(image, NotFound) else str(image)
            walk.fail("select", f"image {iid}: {reason}", image_id=iid)
            continue
        problem = image_problem(image, None)
        cid = image_collection_id(image)
        if problem or cid is None or record_id(image) != iid:
            walk.refuse(image, problem or f"answers for image {iid} with another id", None)
            continue
        walk.sel.seen_image_ids.add(iid)
        picked[iid] = (image, cid)

    # the collections of listed images, asked at once; one that failed above is asked again
    again = sorted({cid for _, cid in picked.values()
                    if not isinstance(records.get(cid), dict)})
    records.update(_fetch_collections(client, again))
    for iid in sorted(picked):
        image, cid = picked[iid]
        col = get_collection(cid)
        if col is None:
            continue
        if col_ok(normalise_nulls(col)) and img_ok(normalise_nulls(image)):
            walk.take(image, col)
