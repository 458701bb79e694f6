"""One image or collection as the server holds it, and how a plan becomes one.

``Corpus`` owns the collection of these and their changes; the functions here turn a plan into
state (record, file path, dates) without touching the corpus, so demo, bench, added and injected
images are all built the same way.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from nv_datalad.emulator.dates import DateStyle, format_date
from nv_datalad.emulator.nifti import VolumeKind, VolumeSpec
from nv_datalad.emulator.plans import KINDS, CollectionPlan, ImagePlan
from nv_datalad.emulator.records import (
    Record,
    collection_record,
    image_name,
    image_record,
    media_path,
    media_url,
    split_ext,
    unique_file_name,
)


@dataclass
class ImageState:
    id: int  # internal key; the record's "id" differs only for hostile records
    collection_id: int
    spec: VolumeSpec
    file_path: str  # decoded path under /media/images/: "<cid>/<name>"
    content_date: datetime  # the file's mtime: Last-Modified
    record: Record
    label_path: str | None = None  # an atlas's label description file
    revision: int = 0
    edits: int = 0
    moves: int = 0


@dataclass
class CollectionState:
    id: int
    style: DateStyle
    private: bool
    record: Record
    image_ids: list[int] = field(default_factory=list)  # ascending
    count_offset: int = 0
    count_null: bool = False


def null_for(style: DateStyle) -> str | None:
    """How a record spells "no value": old (UTC "Z") records say "", newer ones null."""
    return "" if style is DateStyle.UTC_Z else None


def new_collection(
    plan: CollectionPlan, base_url: str, seed: int
) -> tuple[CollectionState, np.random.Generator]:
    """The collection's state and the generator its images continue to draw from."""
    rng = np.random.default_rng([seed, plan.id, 0xC011])
    record = collection_record(plan, base_url, rng, null_for(plan.style))
    col = CollectionState(
        plan.id, plan.style, plan.private, record,
        count_offset=plan.count_offset, count_null=plan.count_null,
    )  # fmt: skip
    return col, rng


def refresh_count(col: CollectionState) -> None:
    """``number_of_images`` as the server caches it: off by the plan's offset, or null."""
    if col.count_null:
        col.record["number_of_images"] = None
    else:
        col.record["number_of_images"] = max(0, len(col.image_ids) + col.count_offset)


def close_collection(col: CollectionState, added: datetime, latest: datetime, doi: bool) -> None:
    col.record["add_date"] = format_date(added, col.style)
    col.record["modify_date"] = format_date(latest, col.style)
    if doi:
        col.record["doi_add_date"] = format_date(latest, col.style)
    refresh_count(col)


def date_image(im: ImageState, style: DateStyle, added: datetime, edited: datetime) -> None:
    im.record["add_date"] = format_date(added, style)
    im.record["modify_date"] = format_date(edited, style)
    im.content_date = added


def build_image(
    plan: CollectionPlan,
    image_plan: ImagePlan,
    image_id: int,
    n: int,
    *,
    base_url: str,
    rng: np.random.Generator,
    file_size: Callable[[VolumeSpec, int], int],
    taken: set[str] | None = None,
    names: set[str] | None = None,
) -> ImageState:
    """Image ``n`` of ``plan``'s collection, undated. ``taken``/``names``: the file and image
    names already in the collection (updated), for NeuroVault's de-duplication."""
    taken = set() if taken is None else taken
    names = set() if names is None else names
    kind = KINDS[image_plan.kind]
    compressed = not image_plan.nii
    spec = VolumeSpec(kind.volume, image_plan.grid or kind.grid, compressed)
    stem = image_plan.upload or kind.upload_stem.format(n=n)
    file_name = unique_file_name(stem + (".nii.gz" if compressed else ".nii"), taken)
    if kind.volume is VolumeKind.SAMPLE:
        file_name = "image_10426.nii.gz"
    taken.add(file_name)
    name = image_plan.name or image_name(kind, plan, n)
    while name in names:
        name += " (copy)"
    names.add(name)
    path = media_path(plan.id, file_name)
    record = image_record(
        kind, plan, base_url, image_id, path, file_size(spec, image_id), name, rng,
        null_for(plan.style),
    )  # fmt: skip
    label_path = None
    if kind.image_type == "atlas":
        label_name = unique_file_name(split_ext(file_name)[0] + ".xml", taken)
        taken.add(label_name)
        label_path = media_path(plan.id, label_name)
        record["label_description_file"] = media_url(base_url, label_path)
    for key, value in image_plan.extra:
        record[key] = value
    return ImageState(image_id, plan.id, spec, path, plan.added, record, label_path)
