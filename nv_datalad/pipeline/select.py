"""Which images the server has that match a spec: a deterministic walk in ascending id order.

The server lists collections in database order, so nilearn's selection with ``max_images``
depends on the day you ask. Here collections and images are always visited by ascending id:
the same spec against the same server state selects the same images. Image lists are fetched
in parallel ahead of the walk and consumed in id order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from nv_datalad.errors import NeuroVaultError, NotFound
from nv_datalad.neurovault.client import NeuroVaultClient
from nv_datalad.neurovault.records import image_collection_id, normalise_nulls, record_id
from nv_datalad.records import Result, Status

log = logging.getLogger(__name__)

# nilearn's limits: stop after this many failures in a row (server down), skip a collection
# after this many failures inside it.
MAX_CONSECUTIVE_FAILS = 100
MAX_FAILS_IN_COLLECTION = 30


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
    #: False when the walk stopped early for failures (so absence proves nothing)
    complete: bool = True

    @property
    def ids(self) -> list[int]:
        return [s.image_id for s in self.items]


class _Walk:
    """Mutable state of one walk: failure counters and the results gathered so far."""

    def __init__(self, max_images: int | None, max_consecutive_fails: int):
        self.sel = Selection()
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

    def take(self, image: dict, collection: dict) -> None:
        self.consecutive_fails = 0
        if image.get("collection_id") is None:
            # older records name their collection only by URL; every later layer (tables,
            # annex metadata, load) reads collection_id, so record the one we walked
            image = {**image, "collection_id": collection["id"]}
        self.sel.items.append(Selected(image, collection))


def select(
    client: NeuroVaultClient,
    spec: Any,
    *,
    max_consecutive_fails: int = MAX_CONSECUTIVE_FAILS,
    max_fails_in_collection: int = MAX_FAILS_IN_COLLECTION,
) -> Selection:
    """Walk the server as ``spec`` says. Failures become result records, never exceptions,
    until ``max_consecutive_fails`` in a row suggest the server is down."""
    walk = _Walk(None if spec.explicit else spec.max_images, max_consecutive_fails)
    try:
        if spec.explicit:
            _walk_explicit(client, spec, walk)
        else:
            _walk_filtered(client, spec, walk, max_fails_in_collection)
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
    client: NeuroVaultClient, spec: Any, walk: _Walk, max_fails_in_collection: int
) -> None:
    col_ok = spec.collection_predicate()
    img_ok = spec.image_predicate()
    pinned = _wanted_collection_ids(spec.collection_terms)
    if pinned is not None:
        collections = []
        for cid in pinned:
            try:
                collections.append(client.collection(cid))
            except NeuroVaultError as exc:
                walk.fail("select", f"collection {cid}: {exc}", collection_id=cid)
    else:
        collections = client.collections()
    chosen = sorted(
        (c for c in collections if record_id(c) is not None and col_ok(normalise_nulls(c))),
        key=lambda c: record_id(c) or 0,
    )
    log.info("%d collections match the collection terms", len(chosen))
    for collection, images in _prefetch(client, chosen):
        cid = int(collection["id"])
        if isinstance(images, Exception):
            walk.fail("select", f"collection {cid}: {images}", collection_id=cid)
            continue
        walk.sel.walked_collections.add(cid)
        fails = 0
        for image in sorted(images, key=lambda r: record_id(r) or -1):
            iid = record_id(image)
            if iid is None or image_collection_id(image) not in (cid, None):
                fails += 1
                walk.fail("select", f"collection {cid}: malformed image record", collection_id=cid)
                if fails >= max_fails_in_collection:
                    break
                continue
            walk.sel.seen_image_ids.add(iid)
            if img_ok(normalise_nulls(image)):
                walk.take(image, collection)
                if walk.full:
                    return


def _prefetch(
    client: NeuroVaultClient, collections: list[dict], window: int | None = None
) -> Iterator[tuple[dict, list[dict] | Exception]]:
    """Fetch image lists a few collections ahead of the consumer, yield in input order.

    A bounded window keeps memory flat and stops wasting requests once ``max_images`` is met.
    """
    window = window or max(2, client.config.workers)

    def fetch(cid: int) -> list[dict] | Exception:
        try:
            return client.collection_images(cid)
        except NeuroVaultError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=client.config.workers) as pool:
        pending: list[tuple[dict, Future]] = []
        it = iter(collections)
        for col in it:
            pending.append((col, pool.submit(fetch, int(col["id"]))))
            if len(pending) >= window:
                break
        while pending:
            col, fut = pending.pop(0)
            nxt = next(it, None)
            if nxt is not None:
                pending.append((nxt, pool.submit(fetch, int(nxt["id"]))))
            try:
                yield col, fut.result()
            except GeneratorExit:
                for _, f in pending:
                    f.cancel()
                raise


def _walk_explicit(client: NeuroVaultClient, spec: Any, walk: _Walk) -> None:
    """``fetch_neurovault_ids``: every image of the listed collections plus the listed images;
    filters the user wrote still apply, nilearn's defaults do not."""
    col_ok: Callable[[Mapping], bool] = spec.collection_predicate()
    img_ok: Callable[[Mapping], bool] = spec.image_predicate()
    collections: dict[int, dict] = {}
    picked: dict[int, tuple[dict, int]] = {}

    def get_collection(cid: int) -> dict | None:
        if cid not in collections:
            try:
                collections[cid] = client.collection(cid)
            except NeuroVaultError as exc:
                walk.fail("select", f"collection {cid}: {exc}", collection_id=cid)
                return None
        return collections[cid]

    for cid in sorted(set(spec.collection_ids)):
        col = get_collection(cid)
        if col is None or not col_ok(normalise_nulls(col)):
            continue
        try:
            images = client.collection_images(cid)
        except NeuroVaultError as exc:
            walk.fail("select", f"collection {cid}: {exc}", collection_id=cid)
            continue
        walk.sel.walked_collections.add(cid)
        for image in images:
            iid = record_id(image)
            if iid is not None:
                walk.sel.seen_image_ids.add(iid)
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
        cid = image_collection_id(image)
        if cid is None:
            walk.fail("select", f"image {iid}: record has no collection id", image_id=iid)
            continue
        walk.sel.seen_image_ids.add(iid)
        picked[iid] = (image, cid)

    for iid in sorted(picked):
        image, cid = picked[iid]
        col = get_collection(cid)
        if col is None:
            continue
        if col_ok(normalise_nulls(col)) and img_ok(normalise_nulls(image)):
            walk.take(image, col)
