"""The ``bench`` corpus: NeuroVault's shape at any size, planned as columns so that it scales.

``n_images`` public images (plus a few private ones) over collections whose sizes are skewed as
on the real server: one holds a quarter of the images (over 10,000 from 100,000 images on), five
hold 2 % each (thousands at whole-NeuroVault scale), the rest are small (log-normal, median 7),
with an empty and, every 25th, a private collection. At 100,000 images that is about 4,500
collections.

Nothing per image is built here: each image is a row of a few numpy columns (id, kind, ``.nii``
or not, dates), and its record is written only when somebody asks for it, from a generator seeded
on the image itself (``Corpus`` does that). So 100,000 images cost a few megabytes and a second
to plan. Every image uses one small grid (``bench``, or ``tiny`` 4x4x4 volumes of a few hundred
bytes): scale tests measure records and repositories, not voxels.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from nv_datalad.emulator.dates import DateStyle
from nv_datalad.emulator.plans import (
    ANALYSIS_LEVELS,
    KINDS,
    MODALITIES,
    PARADIGMS,
    SNAPSHOT,
    CollectionPlan,
    ImagePlan,
    utc,
)
from nv_datalad.emulator.records import split_ext

_KIND_WEIGHTS: tuple[tuple[str, float], ...] = (
    ("Z", 30), ("T", 25), ("F", 5), ("beta", 8), ("P", 3), ("Zthr", 6), ("Tnull", 3),
    ("Znull", 3), ("Tnative", 3), ("roi", 4), ("parc", 2), ("anat", 2), ("atlas", 2),
    ("other", 2), ("var", 2),
)  # fmt: skip
BENCH_KINDS = tuple(k for k, _ in _KIND_WEIGHTS)
LARGE_COLLECTIONS = 5  # collections of n_images // 50 each
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_LAST_EDIT = SNAPSHOT - timedelta(hours=1)


def _micros(instant: datetime) -> int:
    return (instant - _EPOCH) // timedelta(microseconds=1)


def _instant(micros: int) -> datetime:
    return _EPOCH + timedelta(microseconds=int(micros))


@dataclass(frozen=True)
class BenchCollection:
    """One collection's plan and its rows ``start:stop`` in the image columns."""

    plan: CollectionPlan
    start: int
    stop: int
    latest: datetime  # its modify_date: a little after its last image edit


@dataclass(frozen=True)
class BenchImage:
    """What ``Corpus`` needs to write one bench image's record."""

    plan: CollectionPlan
    image_plan: ImagePlan
    image_id: int
    n: int  # 1-based position in its collection: names its upload
    added: datetime
    modified: datetime


class BenchLayout:
    """The bench corpus as columns; pure function of (seed, n_images, grid)."""

    def __init__(self, seed: int, n_images: int, grid: str) -> None:
        self.grid = grid
        rng = np.random.default_rng([seed, 0xBE7C4])
        weights = np.array([w for _, w in _KIND_WEIGHTS], dtype=float)
        weights /= weights.sum()
        columns: dict[str, list[np.ndarray]] = {k: [] for k in ("id", "kind", "nii", "add", "mod")}
        collections: list[BenchCollection] = []
        remaining, rows = n_images, 0
        cid, iid = 20, 100
        start, span = _micros(utc(2014, 6, 1)), _micros(utc(2024, 6, 1)) - _micros(utc(2014, 6, 1))
        index = 0
        while remaining > 0 or index < 3:
            if index == 0:
                size = min(remaining, max(1, n_images // 4))
            elif index == 2:
                size = 0  # the empty collection
            elif index % 25 == 3 and index // 25 < LARGE_COLLECTIONS:
                size = min(remaining, max(1, n_images // 50))
            else:
                size = min(remaining, max(1, int(rng.lognormal(2.0, 1.2))))
            private = index % 25 == 7
            # Late enough to be plausible, early enough that its last upload precedes SNAPSHOT.
            added = start + int(max(0, span - size * 421_000_000) * rng.uniform(0, 1))
            plan = CollectionPlan(
                id=cid,
                name=f"Bench collection {cid}",
                style=DateStyle.UTC_Z if index % 5 < 2 else DateStyle.BERLIN,
                added=_instant(added),
                first_image_id=iid,
                images=(),
                analysis_level=ANALYSIS_LEVELS[int(rng.choice(4, p=[0.6, 0.15, 0.1, 0.15]))],
                modality=str(rng.choice(MODALITIES, p=[0.8, 0.05, 0.05, 0.04, 0.03, 0.03])),
                paradigm=int(rng.integers(len(PARADIGMS))) if rng.random() < 0.9 else None,
                subjects=int(rng.integers(8, 120)) if rng.random() < 0.8 else None,
                doi=bool(rng.random() < 0.6),
                private=private,
                count_offset=int(rng.choice([0, 0, 0, 0, 1, -1])) if size else 0,
                count_null=size == 0,
            )
            steps = rng.integers(1, 12, size)
            steps[:1] = 0
            columns["id"].append(iid + np.cumsum(steps))
            columns["kind"].append(rng.choice(len(BENCH_KINDS), size=size, p=weights))
            columns["nii"].append(rng.random(size) < 0.1)
            n = np.arange(1, size + 1)
            img_added = added + (n * 421 + rng.integers(0, 1_000_000, size) / 1e6) * 1_000_000
            later = img_added + rng.uniform(0, 300 * 86400e6, size)
            edited = np.where(rng.random(size) < 0.5, np.minimum(later, _micros(_LAST_EDIT)),
                              img_added)  # fmt: skip
            columns["add"].append(img_added.astype(np.int64))
            columns["mod"].append(edited.astype(np.int64))
            last = int(edited.max()) if size else added
            latest = min(_instant(last + int(rng.uniform(1, 90) * 1e6)), SNAPSHOT)
            collections.append(BenchCollection(plan, rows, rows + size, latest))
            rows += size
            if not private:
                remaining -= size
            cid += int(rng.integers(1, 40))
            iid += size * 16 + int(rng.integers(1, 500))
            index += 1
        self.collections = tuple(collections)
        self.ids = np.concatenate(columns["id"]).astype(np.int64)
        self.kinds = np.concatenate(columns["kind"]).astype(np.uint8)
        self.nii = np.concatenate(columns["nii"]).astype(bool)
        self.added = np.concatenate(columns["add"])
        self.modified = np.concatenate(columns["mod"])
        self.owner = np.repeat(
            np.arange(len(collections), dtype=np.int32), [c.stop - c.start for c in collections]
        )
        self.file_sizes = np.zeros(len(self.ids), dtype=np.int64)  # 0: not computed yet
        self._by_cid = {c.plan.id: k for k, c in enumerate(collections)}

    def __len__(self) -> int:
        return len(self.ids)

    def image_ids(self, col: BenchCollection) -> list[int]:
        return [int(i) for i in self.ids[col.start : col.stop]]

    def locate(self, image_id: int) -> int | None:
        """The row of ``image_id`` (ids ascend with the rows), or None."""
        row = int(np.searchsorted(self.ids, image_id))
        return row if row < len(self.ids) and self.ids[row] == image_id else None

    def image(self, row: int) -> BenchImage:
        col = self.collections[int(self.owner[row])]
        kind = BENCH_KINDS[int(self.kinds[row])]
        return BenchImage(
            plan=col.plan,
            image_plan=ImagePlan(kind, grid=self.grid, nii=bool(self.nii[row])),
            image_id=int(self.ids[row]),
            n=row - col.start + 1,
            added=_instant(self.added[row]),
            modified=_instant(self.modified[row]),
        )

    def file_name(self, row: int) -> str:
        n = row - self.collections[int(self.owner[row])].start + 1
        stem = KINDS[BENCH_KINDS[int(self.kinds[row])]].upload_stem.format(n=n)
        return stem + (".nii" if self.nii[row] else ".nii.gz")

    def find_file(self, path: str) -> tuple[int, bool] | None:
        """(image id, is the atlas label file) served at ``path`` ("<cid>/<name>"), or None.

        Every bench upload name carries its position in the collection, so the candidates are
        the numbers in the name, each checked by rebuilding the name: no per-file index needed.
        """
        cid_text, _, name = path.partition("/")
        if not cid_text.isdigit() or int(cid_text) not in self._by_cid:
            return None
        col = self.collections[self._by_cid[int(cid_text)]]
        stem, ext = split_ext(name)
        for match in re.finditer(r"\d+", stem):
            row = col.start + int(match.group()) - 1
            if not col.start <= row < col.stop:
                continue
            if self.file_name(row) == name:
                return int(self.ids[row]), False
            label = split_ext(self.file_name(row))[0] + ".xml"
            is_atlas = KINDS[BENCH_KINDS[int(self.kinds[row])]].image_type == "atlas"
            if ext == ".xml" and is_atlas and label == name:
                return int(self.ids[row]), True
        return None
