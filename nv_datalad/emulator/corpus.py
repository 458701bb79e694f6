"""A deterministic synthetic NeuroVault: collections, images, their records, and how they change.

Two corpora:

* ``demo``: a dozen hand-planned collections (~80 images) covering every quirk a client meets on
  the real server (old and new date styles, ``""`` versus null, ``"None / Other"``, atlases,
  masks, non-MNI and thresholded maps, uncompressed ``.nii`` uploads, duplicate and spaced file
  names, a private and an empty collection, image counts that disagree with the list) plus
  nilearn's real sample map as image 10426.
* ``bench``: ``n_images`` images spread over collections of varied sizes, drawn from the seed, on a
  tiny voxel grid, for scale tests.

Records are plain dicts shaped like the API's JSON, with absolute ``http://`` URLs under the
emulator's base URL. This module knows nothing about HTTP; it is not thread-safe on its own (the
server holds a lock around every call).
"""

from __future__ import annotations

import copy
import hashlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote

import numpy as np

from .dates import DateStyle, LogicalClock, format_date
from .nifti import VolumeKind, VolumeSpec, image_bytes

logger = logging.getLogger(__name__)

CORPORA = ("demo", "bench")
DEFAULT_BENCH_IMAGES = 1000
SAMPLE_IMAGE_ID = 10426
# "Now" for the synthetic corpus: every generated date is earlier, every mutation later.
SNAPSHOT = datetime(2024, 9, 2, 9, 0, 0, tzinfo=UTC)

Record = dict[str, Any]


# --------------------------------------------------------------------------------------------
# What kinds of images exist


@dataclass(frozen=True)
class ImageKind:
    """One family of uploads: how the record describes it and how its voxels look."""

    image_type: str
    map_type: str | None  # None: the field is absent (atlases have no map_type)
    volume: VolumeKind
    is_thresholded: bool | None
    not_mni: bool | None
    grid: str = "mni3mm"
    upload_stem: str = "zstat{n}"
    modality: str | None = None  # overrides the collection's modality


KINDS: dict[str, ImageKind] = {
    "Z": ImageKind("statistic_map", "Z map", VolumeKind.STAT, False, False),
    "T": ImageKind("statistic_map", "T map", VolumeKind.STAT, False, False, upload_stem="tstat{n}"),
    "F": ImageKind("statistic_map", "F map", VolumeKind.POSITIVE, False, False,
                   upload_stem="zfstat{n}"),
    "beta": ImageKind("statistic_map", "univariate-beta map", VolumeKind.STAT, False, False,
                      upload_stem="con_{n:04d}"),
    "P": ImageKind("statistic_map", "P map (given null hypothesis)", VolumeKind.PVALUE, False,
                   False, upload_stem="p_map_{n}"),
    "var": ImageKind("statistic_map", "variance", VolumeKind.POSITIVE, False, False,
                     upload_stem="varcope{n}"),
    "other": ImageKind("statistic_map", "other", VolumeKind.STAT, False, False,
                       upload_stem="map_{n}"),
    "Zthr": ImageKind("statistic_map", "Z map", VolumeKind.THRESHOLDED, True, False,
                      upload_stem="thresh_zstat{n}"),
    "Tthr": ImageKind("statistic_map", "T map", VolumeKind.THRESHOLDED, True, False,
                      upload_stem="spmT_{n:04d}_thr"),
    "Znull": ImageKind("statistic_map", "Z map", VolumeKind.STAT, False, None,
                       upload_stem="zmap_{n}"),
    "Tnull": ImageKind("statistic_map", "T map", VolumeKind.STAT, None, False,
                       upload_stem="spmT_{n:04d}"),
    "Tnative": ImageKind("statistic_map", "T map", VolumeKind.STAT, False, True, grid="native",
                         upload_stem="native_tstat{n}"),
    "roi": ImageKind("statistic_map", "ROI/mask", VolumeKind.MASK, False, False,
                     upload_stem="roi_{n}_mask"),
    "parc": ImageKind("statistic_map", "parcellation", VolumeKind.LABELS, False, False,
                      upload_stem="parcellation_{n}"),
    "anat": ImageKind("statistic_map", "anatomical", VolumeKind.ANATOMICAL, False, False,
                      upload_stem="mean_T1w_{n}", modality="Structural MRI"),
    "atlas": ImageKind("atlas", None, VolumeKind.LABELS, None, None, upload_stem="atlas_{n}"),
    "nidm": ImageKind("NIDM results statistic map", "T map", VolumeKind.STAT, False, False,
                      upload_stem="TStatistic_{n:04d}"),
    "sample": ImageKind("statistic_map", "T map", VolumeKind.SAMPLE, False, False,
                        upload_stem="image_10426"),
}  # fmt: skip

PARADIGMS: tuple[tuple[str, str], ...] = (
    # (task name, contrast)
    ("motor fMRI task paradigm", "left hand vs right hand"),
    ("finger tapping task", "tapping vs rest"),
    ("working memory fMRI task paradigm", "2-back vs 0-back"),
    ("emotion processing fMRI task paradigm", "faces vs shapes"),
    ("language processing fMRI task paradigm", "story vs math"),
    ("gambling fMRI task paradigm", "reward vs punishment"),
    ("stop signal task", "failed stop vs go"),
    ("n-back task", "load effect"),
    ("rest eyes open", "seed connectivity"),
    ("Sternberg item recognition task", "probe vs fixation"),
)
MODALITIES = ("fMRI-BOLD", "fMRI-CBF", "PET FDG", "Diffusion MRI", "MEG", "Other")
ANALYSIS_LEVELS = ("group", "single-subject", "meta-analysis", None)


def _fake_cogatlas_id(prefix: str, text: str) -> str:
    return prefix + hashlib.sha256(text.encode()).hexdigest()[:13]


# --------------------------------------------------------------------------------------------
# Plans: what a corpus contains, before records are written


@dataclass(frozen=True)
class ImagePlan:
    kind: str
    grid: str | None = None  # None: the kind's default grid
    nii: bool = False  # uncompressed upload
    upload: str | None = None  # original upload name (before de-duplication), without extension
    name: str | None = None
    extra: tuple[tuple[str, Any], ...] = ()  # free-form uploader keys / field overrides


@dataclass(frozen=True)
class CollectionPlan:
    id: int
    name: str
    style: DateStyle
    added: datetime
    first_image_id: int
    images: tuple[ImagePlan, ...]
    analysis_level: str | None = "group"
    modality: str = "fMRI-BOLD"
    paradigm: int | None = 0  # index in PARADIGMS; None: "None / Other"
    subjects: int | None = 20
    doi: bool = True
    private: bool = False
    count_offset: int = 0  # number_of_images = live images + offset
    count_null: bool = False
    fields: tuple[tuple[str, Any], ...] = ()


def _many(kind: str, n: int, **kw: Any) -> tuple[ImagePlan, ...]:
    return tuple(ImagePlan(kind, **kw) for _ in range(n))


def _utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def demo_plans() -> tuple[CollectionPlan, ...]:
    """The hand-planned demo corpus. 57 of its 83 public images pass nilearn's default
    image terms, so nilearn and nv-datalad have something substantial to agree on."""
    old, new = DateStyle.UTC_Z, DateStyle.BERLIN
    return (
        CollectionPlan(
            35, "Motor lateralisation in healthy adults", old, _utc(2015, 3, 11, 14, 2, 7),
            112,
            (
                ImagePlan("Z", upload="zstat1", extra=(("Contrast", "left > right"),)),
                ImagePlan("Z", upload="zstat1"),
                ImagePlan("Z", upload="Fig 3B_zstat1"),
                ImagePlan("Z", upload="zstat1"),
                *_many("Z", 3),
                ImagePlan("Z", grid="mni2mm", upload="Fig 4A zstat2"),
                *_many("Zthr", 2),
                *_many("T", 2),
            ),
            paradigm=0, subjects=21, analysis_level=None,
        ),
        CollectionPlan(
            63, "Probabilistic atlas of motor regions", old, _utc(2015, 6, 2, 9, 30, 0),
            262,
            (
                ImagePlan("atlas", upload="motor_atlas"),
                ImagePlan("atlas", grid="mni2mm", upload="motor_atlas"),
                ImagePlan("parc"),
                *_many("roi", 2),
            ),
            analysis_level=None, paradigm=None, subjects=None, count_offset=1,
        ),
        CollectionPlan(
            457, "Single-subject finger tapping", old, _utc(2016, 1, 21, 17, 23, 16),
            1031,
            (
                *_many("T", 4),
                *_many("T", 3, nii=True),
                ImagePlan("Tthr", nii=True),
                *_many("T", 2, extra=(("subject", "sub-07"),)),
            ),
            analysis_level="single-subject", paradigm=1, subjects=1, count_offset=2,
        ),
        CollectionPlan(
            1952, "Button press localizer (nilearn sample)", new, _utc(2016, 12, 9, 10, 11, 12),
            SAMPLE_IMAGE_ID,
            (
                ImagePlan(
                    "sample",
                    name="left vs right button press",
                    extra=(("description", "Real upload: nilearn's sample motor map."),),
                ),
            ),
            paradigm=0, subjects=None,
        ),
        CollectionPlan(
            2138, "Meta-analysis of working memory", new, _utc(2017, 4, 3, 8, 0, 0),
            12101,
            (*_many("Z", 6), *_many("Zthr", 2), ImagePlan("P")),
            analysis_level="meta-analysis", paradigm=2, subjects=None, doi=False,
        ),
        CollectionPlan(
            3324, "Native-space emotion maps", new, _utc(2017, 11, 20, 16, 45, 1),
            18312,
            (*_many("Tnative", 4), ImagePlan("anat"), *_many("Z", 2)),
            paradigm=3, subjects=16,
        ),
        CollectionPlan(
            4343, "Unpublished pilot (private)", new, _utc(2018, 2, 14, 12, 0, 0),
            20405,
            _many("Z", 4),
            private=True, paradigm=0, subjects=12, doi=False,
        ),
        CollectionPlan(
            5012, "Placeholder collection", new, _utc(2018, 7, 1, 7, 7, 7),
            0, (), analysis_level=None, paradigm=None, subjects=None, doi=False,
        ),
        CollectionPlan(
            6618, "Language and reward F-tests", new, _utc(2019, 5, 27, 13, 14, 15),
            27520,
            (*_many("F", 4), *_many("beta", 4), *_many("Znull", 2), *_many("Tnull", 2)),
            paradigm=4, subjects=48, modality="fMRI-BOLD",
        ),
        CollectionPlan(
            8076, "HCP-style motor and gambling group maps", new, _utc(2020, 10, 5, 10, 0, 0),
            41044,
            (
                *_many("Z", 2, grid="mni2mm"),
                *_many("Z", 4, grid="mni4mm"),
                *_many("Zthr", 2, grid="mni4mm"),
                *_many("T", 2),
                ImagePlan("Tthr"),
                ImagePlan("other"),
                ImagePlan("var"),
                ImagePlan("nidm"),
                ImagePlan("roi"),
            ),
            paradigm=5, subjects=100, count_offset=-1,
            fields=(("journal_name", "NeuroImage"),),
        ),
        CollectionPlan(
            9820, "Motor imagery without DOI", old, _utc(2018, 3, 30, 23, 59, 58),
            30077,
            (
                *_many("Z", 3),
                *_many("Z", 2, nii=True),
                ImagePlan("anat"),
            ),
            paradigm=0, subjects=None, doi=False,
            fields=(("description", "None"),),
        ),
        CollectionPlan(
            12093, "PET and CBF group maps", new, _utc(2022, 3, 27, 0, 30, 0),
            60211,
            (
                *_many("Z", 2, grid="mni4mm"),
                ImagePlan("Znull", grid="mni4mm"),
                *_many("T", 2, grid="mni4mm"),
                ImagePlan("Zthr"),
            ),
            paradigm=6, subjects=34, modality="PET FDG",
        ),
    )  # fmt: skip


_BENCH_KIND_WEIGHTS: tuple[tuple[str, float], ...] = (
    ("Z", 30), ("T", 25), ("F", 5), ("beta", 8), ("P", 3), ("Zthr", 6), ("Tnull", 3),
    ("Znull", 3), ("Tnative", 3), ("roi", 4), ("parc", 2), ("anat", 2), ("atlas", 2),
    ("other", 2), ("var", 2),
)  # fmt: skip


def bench_plans(seed: int, n_images: int) -> tuple[CollectionPlan, ...]:
    """``n_images`` images over collections of varied sizes (one holds a quarter of them, so
    per-collection paging is exercised), with a private and an empty collection, all from the
    seed. Every image uses the tiny "bench" grid: scale tests are about records, not voxels."""
    rng = np.random.default_rng([seed, 0xBE7C4])
    kinds = [k for k, _ in _BENCH_KIND_WEIGHTS]
    weights = np.array([w for _, w in _BENCH_KIND_WEIGHTS], dtype=float)
    weights /= weights.sum()
    plans: list[CollectionPlan] = []
    remaining = n_images
    cid, iid = 20, 100
    start, span = _utc(2014, 6, 1), (_utc(2024, 6, 1) - _utc(2014, 6, 1))
    index = 0
    while remaining > 0 or index < 3:
        if index == 0:
            size = min(remaining, max(1, n_images // 4))
        elif index == 2:
            size = 0  # the empty collection
        else:
            size = min(remaining, max(1, int(rng.lognormal(2.0, 1.2))))
        images = tuple(
            ImagePlan(str(rng.choice(kinds, p=weights)), grid="bench", nii=bool(rng.random() < 0.1))
            for _ in range(size)
        )
        private = index % 25 == 7
        plans.append(
            CollectionPlan(
                id=cid,
                name=f"Bench collection {cid}",
                style=DateStyle.UTC_Z if index % 5 < 2 else DateStyle.BERLIN,
                added=start + span * float(rng.uniform(0, 1)),
                first_image_id=iid,
                images=images,
                analysis_level=ANALYSIS_LEVELS[int(rng.choice(4, p=[0.6, 0.15, 0.1, 0.15]))],
                modality=str(rng.choice(MODALITIES, p=[0.8, 0.05, 0.05, 0.04, 0.03, 0.03])),
                paradigm=int(rng.integers(len(PARADIGMS))) if rng.random() < 0.9 else None,
                subjects=int(rng.integers(8, 120)) if rng.random() < 0.8 else None,
                doi=bool(rng.random() < 0.6),
                private=private,
                count_offset=int(rng.choice([0, 0, 0, 0, 1, -1])) if size else 0,
                count_null=size == 0,
            )
        )
        if not private:
            remaining -= size
        cid += int(rng.integers(1, 40))
        iid += size * 16 + int(rng.integers(1, 500))
        index += 1
    return tuple(plans)


# --------------------------------------------------------------------------------------------
# Live state


@dataclass
class ImageState:
    id: int
    collection_id: int
    spec: VolumeSpec
    file_name: str  # decoded, unique within its collection
    content_date: datetime  # the file's mtime: Last-Modified
    record: Record
    revision: int = 0
    edits: int = 0


@dataclass
class CollectionState:
    id: int
    style: DateStyle
    private: bool
    record: Record
    image_ids: list[int] = field(default_factory=list)
    count_offset: int = 0
    count_null: bool = False


def _split_ext(file_name: str) -> tuple[str, str]:
    for ext in (".nii.gz", ".nii", ".xml"):
        if file_name.endswith(ext):
            return file_name[: -len(ext)], ext
    return file_name, ""


def unique_file_name(wanted: str, taken: set[str]) -> str:
    """NeuroVault's storage answer to a duplicate upload name: ``name_1.nii.gz``, ``name_2``..."""
    if wanted not in taken:
        return wanted
    stem, ext = _split_ext(wanted)
    n = 1
    while f"{stem}_{n}{ext}" in taken:
        n += 1
    return f"{stem}_{n}{ext}"


class Corpus:
    """The emulated server's data: records, files, list orders, and the mutations."""

    def __init__(self, name: str, base_url: str, seed: int = 0, n_images: int | None = None):
        if name not in CORPORA:
            raise ValueError(f"unknown corpus {name!r}: expected one of {', '.join(CORPORA)}")
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.seed = seed
        self.clock = LogicalClock(SNAPSHOT)
        self.collections: dict[int, CollectionState] = {}
        self.images: dict[int, ImageState] = {}
        self.collection_order: list[int] = []  # /api/collections/ order (public only)
        self.image_order: list[int] = []  # /api/images/ order (public only)
        self.media: dict[tuple[int, str], int] = {}  # (collection id, file name) -> image id
        self.label_files: dict[tuple[int, str], int] = {}  # atlas label XML -> image id
        self._rng = np.random.default_rng([seed, 0x5EED])
        if name == "demo":
            plans = demo_plans()
        else:
            plans = bench_plans(seed, DEFAULT_BENCH_IMAGES if n_images is None else n_images)
        for plan in plans:
            self._add_plan(plan)
        self.collection_order = self._shuffled(
            cid for cid, c in self.collections.items() if not c.private
        )
        self.image_order = self._shuffled(
            iid for iid, im in self.images.items() if not self.collections[im.collection_id].private
        )
        logger.debug(
            "corpus %s (seed %d): %d collections, %d images",
            name, seed, len(self.collections), len(self.images),
        )  # fmt: skip

    # ---- reading

    def public_collections(self) -> list[Record]:
        return [self.collections[cid].record for cid in self.collection_order]

    def collection_images(self, collection_id: int) -> list[Record]:
        col = self.collections[collection_id]
        return [self.images[iid].record for iid in sorted(col.image_ids)]

    def public_images(self) -> list[Record]:
        return [self.images[iid].record for iid in self.image_order]

    def file_bytes(self, image_id: int) -> bytes:
        im = self.images[image_id]
        return image_bytes(im.spec, self.seed, im.id, im.revision)

    def label_file_bytes(self, image_id: int) -> bytes:
        return _label_xml(self.images[image_id])

    def is_private_image(self, image_id: int) -> bool:
        return self.collections[self.images[image_id].collection_id].private

    # ---- mutations

    def mutate_content(self, image_id: int) -> None:
        """A re-upload: new bytes under the same URL, newer dates on image and collection."""
        im = self._image(image_id)
        im.revision += 1
        data = self.file_bytes(image_id)
        im.record["file_size"] = len(data)
        now = self.clock.tick()
        im.content_date = now
        self._touch(im, now)

    def mutate_metadata(self, image_id: int, **fields: Any) -> None:
        """An edit of the record only: same bytes, newer dates (NeuroVault bumps both)."""
        im = self._image(image_id)
        forbidden = {"id", "collection_id", "file", "file_size", "url", "collection"} & set(fields)
        if forbidden:
            raise ValueError(f"cannot change {', '.join(sorted(forbidden))} of an image")
        if not fields:
            im.edits += 1
            old = im.record.get("description") or ""
            fields = {"description": f"{old} (edit {im.edits})".strip()}
        im.record.update(fields)
        self._touch(im, self.clock.tick())

    def delete_image(self, image_id: int) -> None:
        """The image disappears from lists, its record and file answer 404. Like Django, the
        deletion does not save the collection, so its modify_date stays put."""
        im = self._image(image_id)
        col = self.collections[im.collection_id]
        col.image_ids.remove(image_id)
        self._refresh_count(col)
        del self.images[image_id]
        self.media.pop((col.id, im.file_name), None)
        self.label_files = {k: v for k, v in self.label_files.items() if v != image_id}
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
        first = (max(self.images) if self.images else 100) + 1 + int(self._rng.integers(0, 50))
        now = self.clock.tick()
        plan = CollectionPlan(
            id=cid,
            name=name or f"New collection {cid}",
            style=DateStyle.BERLIN,
            added=now,
            first_image_id=first,
            images=_many("Z", n_images, grid="mni4mm" if self.name == "demo" else "bench"),
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
            self.image_order.insert(int(self._rng.integers(0, len(self.image_order) + 1)), iid)
        return cid

    # ---- internals

    def _image(self, image_id: int) -> ImageState:
        try:
            return self.images[image_id]
        except KeyError:
            raise KeyError(f"no image {image_id} in the emulator's corpus") from None

    def _touch(self, im: ImageState, now: datetime) -> None:
        col = self.collections[im.collection_id]
        im.record["modify_date"] = format_date(now, col.style)
        col.record["modify_date"] = format_date(now, col.style)

    def _refresh_count(self, col: CollectionState) -> None:
        if col.count_null:
            col.record["number_of_images"] = None
        else:
            col.record["number_of_images"] = max(0, len(col.image_ids) + col.count_offset)

    def _shuffled(self, ids: Iterable[int]) -> list[int]:
        order = sorted(ids)
        self._rng.shuffle(order)
        return [int(i) for i in order]

    def _add_plan(self, plan: CollectionPlan, now: datetime | None = None) -> CollectionState:
        rng = np.random.default_rng([self.seed, plan.id, 0xC011])
        null = "" if plan.style is DateStyle.UTC_Z else None
        record = _collection_record(plan, self.base_url, rng, null)
        col = CollectionState(
            plan.id, plan.style, plan.private, record,
            count_offset=plan.count_offset, count_null=plan.count_null,
        )  # fmt: skip
        self.collections[plan.id] = col
        added = plan.added if now is not None else plan.added + _jitter(rng)
        latest = added
        taken: set[str] = set()
        image_id = plan.first_image_id
        names: set[str] = set()
        for n, image_plan in enumerate(plan.images, start=1):
            if n > 1:
                image_id += int(rng.integers(1, 12))
            if now is None:
                img_added = added + timedelta(minutes=7 * n, seconds=n) + _jitter(rng)
            else:
                img_added = now
            img_modified = img_added
            if now is None and rng.random() < 0.5:
                later = img_added + timedelta(days=float(rng.uniform(0, 300)))
                img_modified = min(later, SNAPSHOT - timedelta(hours=1))
            latest = max(latest, img_modified)
            im = self._make_image(plan, image_plan, image_id, n, rng, null, taken, names)
            im.record["add_date"] = format_date(img_added, plan.style)
            im.record["modify_date"] = format_date(img_modified, plan.style)
            im.content_date = img_added
            self.images[image_id] = im
            col.image_ids.append(image_id)
        col.record["add_date"] = format_date(added, plan.style)
        if now is None:
            latest = min(latest + timedelta(seconds=float(rng.uniform(1, 90))), SNAPSHOT)
        col.record["modify_date"] = format_date(latest, plan.style)
        if plan.doi:
            col.record["doi_add_date"] = format_date(latest, plan.style)
        self._refresh_count(col)
        return col

    def _make_image(
        self,
        plan: CollectionPlan,
        image_plan: ImagePlan,
        image_id: int,
        n: int,
        rng: np.random.Generator,
        null: str | None,
        taken: set[str],
        names: set[str],
    ) -> ImageState:
        kind = KINDS[image_plan.kind]
        compressed = not image_plan.nii
        spec = VolumeSpec(kind.volume, image_plan.grid or kind.grid, compressed)
        stem = image_plan.upload or kind.upload_stem.format(n=n)
        file_name = unique_file_name(stem + (".nii.gz" if compressed else ".nii"), taken)
        if kind.volume is VolumeKind.SAMPLE:
            file_name = "image_10426.nii.gz"
        taken.add(file_name)
        self.media[(plan.id, file_name)] = image_id
        name = image_plan.name or _image_name(kind, plan, n, rng)
        while name in names:
            name += " (copy)"
        names.add(name)
        data = image_bytes(spec, self.seed, image_id, 0)
        record = _image_record(
            kind, plan, self.base_url, image_id, file_name, len(data), name, rng, null
        )
        if kind.image_type == "atlas":
            label_name = unique_file_name(_split_ext(file_name)[0] + ".xml", taken)
            taken.add(label_name)
            self.label_files[(plan.id, label_name)] = image_id
            record["label_description_file"] = media_url(self.base_url, plan.id, label_name)
        for key, value in image_plan.extra:
            record[key] = value
        return ImageState(image_id, plan.id, spec, file_name, plan.added, record)


# --------------------------------------------------------------------------------------------
# Record builders (pure)


def _jitter(rng: np.random.Generator) -> timedelta:
    """Sub-second noise on generated dates; whole seconds 30% of the time (the Berlin style then
    drops the fraction)."""
    return timedelta(microseconds=0 if rng.random() < 0.3 else int(rng.integers(1, 1_000_000)))


def media_url(base_url: str, collection_id: int, file_name: str) -> str:
    return f"{base_url}/media/images/{collection_id}/{quote(file_name)}"


def _image_name(kind: ImageKind, plan: CollectionPlan, n: int, rng: np.random.Generator) -> str:
    if kind.image_type == "atlas":
        return f"Motor atlas {n}"
    if kind.map_type in ("ROI/mask", "parcellation", "anatomical"):
        return f"{kind.map_type} {n}"
    contrast = PARADIGMS[plan.paradigm][1] if plan.paradigm is not None else "effect"
    return f"{contrast} {kind.map_type} {n}"


def _collection_record(
    plan: CollectionPlan, base: str, rng: np.random.Generator, null: str | None
) -> Record:
    doi = f"10.5555/nvemu.{plan.id}" if plan.doi else None
    owner = 100 + plan.id % 97

    def pick(*options: Any) -> Any:
        return options[int(rng.integers(len(options)))]

    record: Record = {
        "url": f"{base}/collections/{plan.id}/",
        "id": plan.id,
        "download_url": f"{base}/collections/{plan.id}/download",
        "owner": owner,
        "contributors": null if rng.random() < 0.6 else f"user{owner + 1},user{owner + 2}",
        "owner_name": f"user{owner}",
        "number_of_images": 0,
        "name": plan.name,
        "DOI": doi,
        "preprint_DOI": null,
        "publication_status": "published" if plan.doi else pick("preprint", "in_preparation"),
        "authors": pick("Ada Lovelace, Alan Turing", "Santiago Ramón y Cajal", "K. Brodmann")
        if plan.doi
        else null,
        "paper_url": f"https://doi.org/{doi}" if doi else null,
        "journal_name": pick("NeuroImage", "Human Brain Mapping", "eLife") if plan.doi else null,
        "description": f"Synthetic collection {plan.id} served by the nv-datalad emulator.",
        "full_dataset_url": null,
        "private": plan.private,
        "add_date": None,
        "modify_date": None,
        "doi_add_date": None,
        "communities": [2] if plan.id % 3 == 0 else [],
        "type_of_design": pick("blocked", "eventrelated", "hybridblockevent", null),
        "number_of_imaging_runs": pick(1, 2, 4, None),
        "subject_age_mean": round(float(rng.uniform(19, 45)), 1) if rng.random() < 0.6 else None,
        "handedness": pick("right", "both", "None / Other", null),
        "proportion_male_subjects": round(float(rng.uniform(0.2, 0.8)), 2)
        if rng.random() < 0.5
        else None,
        "scanner_make": pick("Siemens", "GE", "Philips", null),
        "scanner_model": pick("TrioTim", "Prisma", "Discovery MR750", null),
        "field_strength": pick(1.5, 3.0, 7.0, None),
        "pulse_sequence": pick("EPI", "multiband EPI", null),
        "repetition_time": pick(720.0, 2000.0, 2500.0, None),
        "echo_time": pick(30.0, 33.1, None),
        "flip_angle": pick(52.0, 90.0, None),
        "software_package": pick("FSL", "SPM", "AFNI", "nilearn", "None / Other", null),
        "software_version": pick("6.0.5", "12", "N/A", null),
        "used_motion_correction": pick(True, False, None),
        "used_smoothing": pick(True, None),
        "smoothing_type": pick("Gaussian", null),
        "smoothing_fwhm": pick(4.0, 6.0, 8.0, None),
        "coordinate_space": pick("MNI", "MNI", "Talairach", null),
        "target_template_image": pick("GenericMNI", "MNI152NLin2009cAsym", null),
        "resampled_voxel_size": pick(2.0, 3.0, None),
        "hemodynamic_response_function": pick("canonical double gamma HRF", null),
        "used_temporal_derivatives": pick(True, False, None),
        "used_high_pass_filter": pick(True, None),
        "group_model_type": pick("regression", "mixed effects", null),
        "group_inference_type": pick("voxelwise", "clusterwise", null),
        "group_comparison": pick(False, None),
    }
    record.update(dict(plan.fields))
    return record


def _image_record(
    kind: ImageKind,
    plan: CollectionPlan,
    base: str,
    image_id: int,
    file_name: str,
    file_size: int,
    name: str,
    rng: np.random.Generator,
    null: str | None,
) -> Record:
    record: Record = {
        "url": f"{base}/images/{image_id}/",
        "id": image_id,
        "file": media_url(base, plan.id, file_name),
        "collection": f"{base}/collections/{plan.id}/",
        "collection_id": plan.id,
        "file_size": file_size,
        "name": name,
        "description": null if rng.random() < 0.5 else f"Synthetic {kind.map_type or 'atlas'}.",
        "add_date": None,
        "modify_date": None,
        "is_valid": True,
        "figure": null if rng.random() < 0.7 else f"Figure {int(rng.integers(1, 6))}",
        "data_origin": "volume",
        "surface_left_file": None,
        "surface_right_file": None,
        "target_template_image": "GenericMNI",
        "subject_species": "homo sapiens",
        "thumbnail": f"{base}/media/images/{plan.id}/glass_brain_{image_id}.jpg",
        "image_type": kind.image_type,
    }
    if kind.image_type == "atlas":
        return record  # atlases carry no statistic-map fields at all
    if plan.paradigm is None:
        task, contrast, task_id = "None / Other", null, null
    else:
        task, contrast = PARADIGMS[plan.paradigm]
        task_id = _fake_cogatlas_id("trm_", task)
    subjects = plan.subjects
    if subjects is not None and plan.analysis_level != "single-subject":
        subjects = max(2, subjects + int(rng.integers(-3, 4)))
    record.update(
        {
            "map_type": kind.map_type,
            "analysis_level": plan.analysis_level,
            "is_thresholded": kind.is_thresholded,
            "not_mni": kind.not_mni,
            "number_of_subjects": subjects,
            "modality": kind.modality or plan.modality,
            "cognitive_paradigm_cogatlas": task,
            "cognitive_paradigm_cogatlas_id": task_id,
            "cognitive_contrast_cogatlas": contrast,
            "cognitive_contrast_cogatlas_id": _fake_cogatlas_id("cnt_", contrast)
            if contrast
            else null,
            "contrast_definition": contrast if rng.random() < 0.6 else "N/A",
            "contrast_definition_cogatlas": null,
            "cognitive_paradigm_description_url": null,
            "statistic_parameters": round(float(rng.uniform(10, 120)), 1)
            if kind.map_type in ("T map", "F map")
            else None,
            "smoothness_fwhm": round(float(rng.uniform(5, 12)), 2) if rng.random() < 0.5 else None,
            "perc_bad_voxels": round(float(rng.uniform(0, 30)), 4),
            "brain_coverage": round(float(rng.uniform(70, 100)), 4),
            "perc_voxels_outside": round(float(rng.uniform(0, 10)), 4),
            "reduced_representation": f"{base}/media/images/{plan.id}/transform_4mm_{image_id}.npy",
        }
    )
    if kind.image_type == "NIDM results statistic map":
        record["nidm_results"] = f"{base}/collections/{plan.id}/spm_{image_id}.nidm/"
        record["nidm_results_ttl"] = f"{base}/media/images/{plan.id}/spm_{image_id}.nidm.ttl"
    return record


def _label_xml(im: ImageState) -> bytes:
    """An FSL-style label description for an atlas (region names for each integer label)."""
    labels = "\n".join(
        f'    <label index="{i}" x="0" y="0" z="0">Region {i}</label>' for i in range(1, 9)
    )
    text = (
        '<?xml version="1.0" encoding="ISO-8859-1"?>\n<atlas version="1.0">\n'
        f"  <header>\n    <name>{im.record['name']}</name>\n    <type>Label</type>\n"
        f"  </header>\n  <data>\n{labels}\n  </data>\n</atlas>\n"
    )
    return text.encode("iso-8859-1")


def public_record(record: Record) -> Record:
    """A copy safe to hand out (callers may not edit the live state through it)."""
    return copy.deepcopy({k: v for k, v in record.items() if not k.startswith("_")})
