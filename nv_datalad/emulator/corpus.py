"""The emulated server's live state: which collections and images exist now, their records and
files, the list orders, and how they change.

Demo images are built once, in plan order, from one generator per collection (so the demo is
the same byte for byte across releases). Bench images are rows of ``BenchLayout`` until touched:
their records are written on demand from a generator seeded on the image, and kept only once a
mutation makes them differ. This module knows nothing about HTTP; it is not thread-safe on its
own (the server holds a lock around every call).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np

from nv_datalad.emulator.bench import BenchCollection, BenchLayout
from nv_datalad.emulator.constants import CORPORA, DEFAULT_BENCH_IMAGES
from nv_datalad.emulator.dates import DateStyle, LogicalClock, format_date
from nv_datalad.emulator.hostile import HostileContext, hostile_overrides
from nv_datalad.emulator.nifti import VolumeSpec, image_bytes
from nv_datalad.emulator.plans import SNAPSHOT, CollectionPlan, ImagePlan, demo_plans, many
from nv_datalad.emulator.records import Record, jitter, label_xml, media_url, public_record
from nv_datalad.emulator.state import (
    CollectionState,
    ImageState,
    build_image,
    close_collection,
    date_image,
    new_collection,
    refresh_count,
)

logger = logging.getLogger(__name__)
_MEDIA = "/media/images/"


def _served_path(url: Any) -> str | None:
    """The media path an http(s) ``file`` URL points to, if it points under /media/images/."""
    if not isinstance(url, str):
        return None
    split = urlsplit(url)
    if split.scheme not in ("http", "https") or not split.path.startswith(_MEDIA):
        return None
    return unquote(split.path[len(_MEDIA) :])


class Corpus:
    """The emulated server's data: records, files, list orders, and the mutations."""

    def __init__(
        self,
        name: str,
        base_url: str,
        seed: int = 0,
        n_images: int | None = None,
        tiny: bool = False,
    ) -> None:
        if name not in CORPORA:
            raise ValueError(f"unknown corpus {name!r}: expected one of {', '.join(CORPORA)}")
        if tiny and name != "bench":
            raise ValueError("tiny volumes are a bench corpus option (corpus='bench')")
        if n_images is not None and n_images < 0:
            raise ValueError(f"n_images must be >= 0, got {n_images!r}")
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.seed = seed
        self.grid = "tiny" if tiny else "bench"  # bench images and collections added to them
        self.clock = LogicalClock(SNAPSHOT)
        self.collections: dict[int, CollectionState] = {}
        self.images: dict[int, ImageState] = {}  # built: demo, added, mutated bench images
        self.deleted: set[int] = set()
        self.media: dict[str, int] = {}  # media path -> image id, for built images
        self.label_files: dict[str, int] = {}  # atlas label XML path -> image id
        self.bench: BenchLayout | None = None
        self._hostile = 0
        self._rng = np.random.default_rng([seed, 0x5EED])
        if name == "demo":
            for plan in demo_plans():
                self._add_plan(plan)
        else:
            size = DEFAULT_BENCH_IMAGES if n_images is None else n_images
            self.bench = BenchLayout(seed, size, self.grid)
            for bench_collection in self.bench.collections:
                self._add_bench_collection(bench_collection)
        public = [c for c in self.collections.values() if not c.private]
        self.collection_order = self._shuffled(c.id for c in public)  # /api/collections/
        self.image_order = self._shuffled(i for c in public for i in c.image_ids)  # /api/images/
        n_live = sum(len(c.image_ids) for c in self.collections.values())
        logger.debug(
            "corpus %s (seed %d): %d collections, %d images",
            name, seed, len(self.collections), n_live,
        )  # fmt: skip

    # ---- reading

    def image(self, image_id: int) -> ImageState | None:
        """The live image (built on demand for an untouched bench image), or None."""
        im = self.images.get(image_id)
        if im is not None or image_id in self.deleted or self.bench is None:
            return im
        row = self.bench.locate(image_id)
        return None if row is None else self._bench_image(row)

    def record(self, image_id: int) -> Record:
        im = self.image(image_id)
        if im is None:
            raise KeyError(f"no image {image_id} in the emulator's corpus")
        return im.record

    def public_record(self, image_id: int) -> Record:
        """A record safe to hand out: a copy of a built image's, or an unbuilt bench row's
        record as written just now (nobody else holds it, so no copy is needed)."""
        im = self.images.get(image_id)
        return public_record(im.record) if im is not None else self.record(image_id)

    def image_ids(self) -> Iterable[int]:
        """Every live image id, private collections included, collection by collection."""
        for col in self.collections.values():
            yield from col.image_ids

    def find_file(self, path: str) -> tuple[int, bool] | None:
        """(image id, is an atlas label file) for a decoded media path, or None."""
        if path in self.media:
            return self.media[path], False
        if path in self.label_files:
            return self.label_files[path], True
        found = self.bench.find_file(path) if self.bench is not None else None
        if found is None or found[0] in self.images or found[0] in self.deleted:
            return None  # a built image answers at its own (possibly moved) path only
        return found

    def file_bytes(self, image_id: int) -> bytes:
        im = self.image(image_id)
        if im is None:
            raise KeyError(f"no image {image_id} in the emulator's corpus")
        return image_bytes(im.spec, self.seed, im.id, im.revision)

    def label_file_bytes(self, image_id: int) -> bytes:
        return label_xml(self.record(image_id)["name"])

    def is_private_image(self, image_id: int) -> bool:
        im = self.image(image_id)
        return im is not None and self.collections[im.collection_id].private

    # ---- mutations

    def mutate_content(self, image_id: int) -> None:
        """A re-upload: new bytes under the same URL, newer dates on image and collection."""
        im = self._live(image_id)
        im.revision += 1
        im.record["file_size"] = len(self.file_bytes(image_id))
        now = self.clock.tick()
        im.content_date = now
        self._touch(im, now)

    def mutate_metadata(self, image_id: int, **fields: Any) -> None:
        """An edit of the record only: same bytes, newer dates (NeuroVault bumps both)."""
        im = self._live(image_id)
        forbidden = {"id", "collection_id", "file", "file_size", "url", "collection"} & set(fields)
        if forbidden:
            raise ValueError(f"cannot change {', '.join(sorted(forbidden))} of an image")
        if not fields:
            im.edits += 1
            old = im.record.get("description") or ""
            fields = {"description": f"{old} (edit {im.edits})".strip()}
        im.record.update(fields)
        self._touch(im, self.clock.tick())

    def move_file(self, image_id: int) -> str:
        """The file moves to a new URL with the same bytes, as when a private collection goes
        public (its URLs held the private token): the old URL answers 404, the record's ``file``
        and ``modify_date`` change. Returns the new URL."""
        im = self._live(image_id)
        im.moves += 1
        digest = hashlib.sha256(f"move:{self.seed}:{image_id}:{im.moves}".encode()).digest()
        token = "".join(chr(ord("A") + b % 26) for b in digest[:8])
        new_path = f"{im.collection_id}/{token}/{im.file_path.rsplit('/', 1)[-1]}"
        self.media.pop(im.file_path, None)
        self.media[new_path] = image_id
        im.file_path = new_path
        im.record["file"] = media_url(self.base_url, new_path)
        self._touch(im, self.clock.tick())
        return str(im.record["file"])

    def delete_image(self, image_id: int) -> None:
        """The image disappears from lists, its record and file answer 404. Like Django, the
        deletion does not save the collection, so its modify_date stays put."""
        im = self._live(image_id)
        col = self.collections[im.collection_id]
        col.image_ids.remove(image_id)
        refresh_count(col)
        del self.images[image_id]
        self.deleted.add(image_id)
        self.media.pop(im.file_path, None)
        if im.label_path is not None:
            self.label_files.pop(im.label_path, None)
        if image_id in self.image_order:
            self.image_order.remove(image_id)

    def add_collection(self, n_images: int = 3, **fields: Any) -> int:
        """A new collection of default-selectable group Z maps, ids above all others; public
        unless ``private=True``. Other ``fields`` override the collection record's."""
        if n_images < 0:
            raise ValueError(f"n_images must be >= 0, got {n_images!r}")
        private = bool(fields.pop("private", False))
        name = fields.pop("name", None)
        if name is not None and any(c.record["name"] == name for c in self.collections.values()):
            raise ValueError(f"a collection named {name!r} exists already; names are unique")
        cid = max(self.collections) + 1 + int(self._rng.integers(0, 7))
        first = self._max_image_id() + 1 + int(self._rng.integers(0, 50))
        now = self.clock.tick()
        plan = CollectionPlan(
            id=cid,
            name=name or f"New collection {cid}",
            style=DateStyle.BERLIN,
            added=now,
            first_image_id=first,
            images=many("Z", n_images, grid="mni4mm" if self.name == "demo" else self.grid),
            paradigm=0,
            subjects=24,
            private=private,
            fields=tuple(fields.items()),
        )
        col = self._add_plan(plan, now=now)
        if private:
            return cid
        self.collection_order.insert(
            int(self._rng.integers(0, len(self.collection_order) + 1)), cid
        )
        for iid in col.image_ids:
            self._list(iid)
        return cid

    def inject_record(self, collection_id: int, overrides: dict[str, Any]) -> int:
        """A new default-selectable group Z map in ``collection_id``, its record then overridden
        key by key (any key, ``id``, ``collection_id`` and ``file`` included). Listed like any
        other image; served at its ``file`` URL if that is an http(s) URL under /media/images/.
        Returns the image's internal id (the key of ``Emulator.images``)."""
        col = self.collections.get(int(collection_id))
        if col is None:
            raise KeyError(f"no collection {collection_id} in the emulator's corpus")
        iid = self._max_image_id() + 1 + int(self._rng.integers(0, 50))
        now = self.clock.tick()
        plan = CollectionPlan(col.id, col.record["name"], col.style, now, iid, ())
        grid = "mni4mm" if self.name == "demo" else self.grid
        image_plan = ImagePlan("Z", grid=grid, upload=f"injected_{iid}", name=f"Injected {iid}")
        rng = np.random.default_rng([self.seed, col.id, iid, 0x4057])
        im = self._build(plan, image_plan, iid, len(col.image_ids) + 1, rng)
        date_image(im, col.style, now, now)
        self._register(col, im)
        refresh_count(col)
        self._touch(im, now)
        if not col.private:
            self._list(iid)
        im.record.update(overrides)
        if "file" in overrides:
            self.media.pop(im.file_path, None)
            served = _served_path(overrides["file"])
            if served is not None:
                im.file_path = served
                self.media[served] = iid
        return iid

    def add_hostile_images(self, kind: str, collection_id: int | None = None) -> list[int]:
        """Records a client must refuse (see ``hostile.HOSTILE_KINDS``), injected into
        ``collection_id`` (default: the lowest-numbered public collection with images).
        Returns their internal ids."""
        public = sorted(cid for cid, c in self.collections.items() if not c.private)
        if collection_id is None:
            collection_id = min(cid for cid in public if self.collections[cid].image_ids)
        target = collection_id
        foreign = next(cid for cid in public if cid != target)
        self._hostile += 1
        context = HostileContext(self.base_url, target, foreign, self._hostile)
        return [self.inject_record(target, o) for o in hostile_overrides(kind, context)]

    # ---- internals

    def _live(self, image_id: int) -> ImageState:
        """The image, kept from now on (a mutation makes a bench image differ from its row)."""
        im = self.image(image_id)
        if im is None:
            raise KeyError(f"no image {image_id} in the emulator's corpus")
        if image_id not in self.images:
            self.images[image_id] = im
            self.media[im.file_path] = image_id
            if im.label_path is not None:
                self.label_files[im.label_path] = image_id
        return im

    def _max_image_id(self) -> int:
        built = max(self.images) if self.images else 100
        return max(built, int(self.bench.ids[-1])) if self.bench and len(self.bench) else built

    def _list(self, image_id: int) -> None:
        """Insert a new public image at a random place of /api/images/."""
        self.image_order.insert(int(self._rng.integers(0, len(self.image_order) + 1)), image_id)

    def _touch(self, im: ImageState, now: datetime) -> None:
        col = self.collections[im.collection_id]
        im.record["modify_date"] = format_date(now, col.style)
        col.record["modify_date"] = format_date(now, col.style)

    def _shuffled(self, ids: Iterable[int]) -> list[int]:
        order = sorted(ids)
        self._rng.shuffle(order)
        return [int(i) for i in order]

    def _build(self, plan: CollectionPlan, image_plan: ImagePlan, image_id: int, n: int,
               rng: np.random.Generator, **names: set[str]) -> ImageState:  # fmt: skip
        return build_image(
            plan, image_plan, image_id, n, base_url=self.base_url, rng=rng,
            file_size=self._file_size, **names,
        )  # fmt: skip

    def _add_plan(self, plan: CollectionPlan, now: datetime | None = None) -> CollectionState:
        col, rng = new_collection(plan, self.base_url, self.seed)
        self.collections[plan.id] = col
        added = plan.added if now is not None else plan.added + jitter(rng)
        latest = added
        taken: set[str] = set()
        names: set[str] = set()
        image_id = plan.first_image_id
        for n, image_plan in enumerate(plan.images, start=1):
            if n > 1:
                image_id += int(rng.integers(1, 12))
            if now is None:
                img_added = added + timedelta(minutes=7 * n, seconds=n) + jitter(rng)
            else:
                img_added = now
            img_modified = img_added
            if now is None and rng.random() < 0.5:
                later = img_added + timedelta(days=float(rng.uniform(0, 300)))
                img_modified = min(later, SNAPSHOT - timedelta(hours=1))
            latest = max(latest, img_modified)
            im = self._build(plan, image_plan, image_id, n, rng, taken=taken, names=names)
            date_image(im, plan.style, img_added, img_modified)
            self._register(col, im)
        if now is None:
            latest = min(latest + timedelta(seconds=float(rng.uniform(1, 90))), SNAPSHOT)
        close_collection(col, added, latest, plan.doi)
        return col

    def _add_bench_collection(self, bench_collection: BenchCollection) -> None:
        assert self.bench is not None
        plan = bench_collection.plan
        col, _ = new_collection(plan, self.base_url, self.seed)
        self.collections[plan.id] = col
        col.image_ids = self.bench.image_ids(bench_collection)
        close_collection(col, plan.added, bench_collection.latest, plan.doi)

    def _bench_image(self, row: int) -> ImageState:
        assert self.bench is not None
        b = self.bench.image(row)
        rng = np.random.default_rng([self.seed, b.plan.id, b.image_id, 0x1A5E])
        im = self._build(b.plan, b.image_plan, b.image_id, b.n, rng)
        date_image(im, b.plan.style, b.added, b.modified)
        return im

    def _register(self, col: CollectionState, im: ImageState) -> None:
        self.images[im.id] = im
        self.deleted.discard(im.id)
        self.media[im.file_path] = im.id
        if im.label_path is not None:
            self.label_files[im.label_path] = im.id
        col.image_ids.append(im.id)

    def _file_size(self, spec: VolumeSpec, image_id: int) -> int:
        """The first revision's size; remembered per bench row so that listing a page does not
        regenerate every volume on it."""
        row = self.bench.locate(image_id) if self.bench is not None else None
        if row is not None and self.bench is not None and self.bench.file_sizes[row]:
            return int(self.bench.file_sizes[row])
        size = len(image_bytes(spec, self.seed, image_id, 0))
        if row is not None and self.bench is not None:
            self.bench.file_sizes[row] = size
        return size
