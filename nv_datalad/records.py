"""Records that cross layers: per-image results, table columns, annex metadata fields.

Sidecar format (``image_<id>_metadata.json``): the API record exactly as the server sent it,
plus one key ``nv_datalad`` holding provenance::

    {"server": "https://neurovault.org", "source_url": "<file URL registered in the annex>",
     "retrieved_at": "<ISO-8601 UTC>", "tool_version": "0.1.0",
     "path": "neurovault/collection_1/image_2.nii.gz", "key": "MD5E-s..--...nii.gz"}

``collection_metadata.json`` is the collection record plus the same ``nv_datalad`` key
(without path/key).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

PROVENANCE_KEY = "nv_datalad"

#: Columns of images.tsv, in order. Values are written as text; missing as empty.
IMAGE_COLUMNS = (
    "image_id",
    "collection_id",
    "path",
    "name",
    "map_type",
    "image_type",
    "modality",
    "analysis_level",
    "cognitive_paradigm_cogatlas",
    "number_of_subjects",
    "is_thresholded",
    "not_mni",
    "file_size",
    "add_date",
    "modify_date",
    "url",
    "key",
    "resampled_path",
    "words_path",
)

#: Columns of collections.tsv, in order.
COLLECTION_COLUMNS = (
    "collection_id",
    "name",
    "DOI",
    "paper_url",
    "url",
    "authors",
    "journal_name",
    "n_images",
    "modify_date",
)

#: Fields copied from the image record to git-annex metadata of its key, so that
#: ``git annex find --metadata map_type='Z map'`` works without reading JSON.
ANNEX_METADATA_FIELDS = (
    "collection_id",
    "image_id",
    "name",
    "map_type",
    "image_type",
    "modality",
    "analysis_level",
    "cognitive_paradigm_cogatlas",
    "number_of_subjects",
    "is_thresholded",
    "not_mni",
    "add_date",
    "modify_date",
)


class Status(StrEnum):
    """Outcome of one unit of work, as in DataLad result records."""

    OK = "ok"
    NOTNEEDED = "notneeded"
    IMPOSSIBLE = "impossible"
    ERROR = "error"


@dataclass
class Result:
    """One record per image (or per step) so a batch never raises on one bad item."""

    action: str
    status: Status
    image_id: int | None = None
    collection_id: int | None = None
    path: str | None = None
    message: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.status in (Status.ERROR, Status.IMPOSSIBLE)


_INT = re.compile(r"^\d+$")


def parse_id(value: object) -> int | None:
    """The one id parser: a non-negative integer (or its decimal text), else None.

    Ids become path components and git-annex metadata, so anything else the server sends
    (``"12a"``, ``-3``, ``True``, ``1.5``) is refused here, at the edge.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str) and _INT.match(value):
        return int(value)
    return None
