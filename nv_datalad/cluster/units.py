"""Split a plan into balanced work units, each owning whole collections (pure).

A unit never shares a collection with another, so no two jobs write the same folder (or, with
per-collection subdatasets, the same repository). Units are balanced by planned images and
bytes with the longest-processing-time rule: collections, largest first, each to the unit
that has the least work so far. The result depends only on the plan, so a resubmitted unit
is the same unit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

#: What one image costs next to its bytes (requests, annex and commit work), in bytes.
IMAGE_OVERHEAD = 2_000_000


@dataclass(frozen=True)
class Work:
    """One collection's share of a plan."""

    collection_id: int
    image_ids: tuple[int, ...]
    bytes: int = 0

    @property
    def cost(self) -> int:
        return self.bytes + IMAGE_OVERHEAD * len(self.image_ids)


@dataclass
class Unit:
    index: int
    collections: list[int] = field(default_factory=list)
    image_ids: list[int] = field(default_factory=list)
    bytes: int = 0
    cost: int = 0


def collect(items: Iterable[tuple[int, int, int]]) -> list[Work]:
    """``(collection id, image id, file size)`` triples → one ``Work`` per collection."""
    by_collection: dict[int, tuple[list[int], int]] = {}
    for cid, iid, size in items:
        ids, total = by_collection.get(cid, ([], 0))
        ids.append(iid)
        by_collection[cid] = (ids, total + max(0, size))
    return [Work(cid, tuple(sorted(ids)), total)
            for cid, (ids, total) in sorted(by_collection.items())]


def split(work: Sequence[Work], n_units: int) -> list[Unit]:
    """At most ``n_units`` units (never an empty one), ascending ids inside each."""
    units = [Unit(i) for i in range(max(1, min(n_units, len(work))))]
    for w in sorted(work, key=lambda w: (-w.cost, w.collection_id)):
        unit = min(units, key=lambda u: (u.cost, u.index))
        unit.collections.append(w.collection_id)
        unit.image_ids.extend(w.image_ids)
        unit.bytes += w.bytes
        unit.cost += w.cost
    for unit in units:
        unit.collections.sort()
        unit.image_ids.sort()
    return [u for u in units if u.collections]
