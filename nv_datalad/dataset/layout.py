"""Where things live inside a nv-datalad dataset.

Every path in the dataset is derived here from integer ids and fixed names, never from a server
string, so a hostile record cannot steer a write outside the dataset. The names match nilearn's
NeuroVault cache so ``fetch_neurovault(mode="offline", data_dir=<dataset>)`` reads a dataset.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from nv_datalad.records import parse_id

NEUROVAULT_DIR = "neurovault"
STATE_DIR = ".nv-datalad"
SPEC_FILE = f"{STATE_DIR}/spec.yaml"
BUILDS_DIR = f"{STATE_DIR}/builds"
IMAGES_TSV = "images.tsv"
COLLECTIONS_TSV = "collections.tsv"
README = "README.md"
CITATION = "CITATION.cff"
CHANGES = "CHANGES.md"
NEUROSYNTH_DIR = "derivatives/neurosynth"
VOCABULARY = f"{NEUROSYNTH_DIR}/vocabulary.txt"
WORD_FREQUENCIES = f"{NEUROSYNTH_DIR}/word_frequencies.npz"
RESAMPLE_MANIFEST = f"{STATE_DIR}/resample_manifest.tsv"
#: The visual report (``nv-datalad report``; refreshed by builds with ``report: true``).
REPORT = "report.html"
#: Glass-brain thumbnails by annex key, inside .git so they are never committed.
THUMBNAILS = ".git/nv-datalad/thumbnails"
#: Downloads in flight, inside .git so they are never committed; emptied by recovery.
DOWNLOAD_TMP = ".git/nv-datalad-tmp"

# Extensions an image may have; anything else on the server is stored under ".nii.gz" only if
# the bytes really are gzip (decided by ``image_extension``).
NIFTI_EXTENSIONS = (".nii.gz", ".nii")

_IMAGE_FILE = re.compile(r"^image_(\d+)(\.nii\.gz|\.nii)$")
_SIDECAR = re.compile(r"^image_(\d+)_metadata\.json$")
_COLLECTION_DIR = re.compile(r"^collection_(\d+)$")


def _int_id(value: object, what: str) -> int:
    """Refuse anything but a non-negative integer: ids become path components."""
    parsed = parse_id(value)
    if parsed is None:
        raise ValueError(f"{what} must be a non-negative integer, got {value!r}")
    return parsed


def collection_dir(collection_id: object) -> PurePosixPath:
    return PurePosixPath(NEUROVAULT_DIR, f"collection_{_int_id(collection_id, 'collection id')}")


def collection_sidecar(collection_id: object) -> PurePosixPath:
    return collection_dir(collection_id) / "collection_metadata.json"


def image_file(collection_id: object, image_id: object, ext: str = ".nii.gz") -> PurePosixPath:
    if ext not in NIFTI_EXTENSIONS:
        raise ValueError(f"unsupported image extension {ext!r}")
    return collection_dir(collection_id) / f"image_{_int_id(image_id, 'image id')}{ext}"


def image_sidecar(collection_id: object, image_id: object) -> PurePosixPath:
    iid = _int_id(image_id, "image id")
    return collection_dir(collection_id) / f"image_{iid}_metadata.json"


def resampled_file(collection_id: object, image_id: object) -> PurePosixPath:
    iid = _int_id(image_id, "image id")
    return collection_dir(collection_id) / f"image_{iid}_resampled.nii.gz"


def resampled_sidecar(collection_id: object, image_id: object) -> PurePosixPath:
    iid = _int_id(image_id, "image id")
    return collection_dir(collection_id) / f"image_{iid}_resampled.json"


def words_file(collection_id: object, image_id: object) -> PurePosixPath:
    iid = _int_id(image_id, "image id")
    return collection_dir(collection_id) / f"neurosynth_words_for_image_{iid}.json"


def image_extension(url: str) -> str:
    """The extension a file served at ``url`` is saved under (before its bytes are seen).

    After download the magic bytes decide (``extension_for_bytes``); this is the first guess.
    """
    path = url.split("?", 1)[0].lower()
    return ".nii" if path.endswith(".nii") else ".nii.gz"


def extension_for_bytes(head: bytes) -> str:
    """gzip magic decides: NeuroVault serves uncompressed ``.nii`` uploads too."""
    return ".nii.gz" if head[:2] == b"\x1f\x8b" else ".nii"


def parse_image_file(name: str) -> tuple[int, str] | None:
    """``image_12.nii.gz`` -> (12, ".nii.gz"); anything else -> None."""
    m = _IMAGE_FILE.match(name)
    return (int(m.group(1)), m.group(2)) if m else None


def parse_sidecar(name: str) -> int | None:
    m = _SIDECAR.match(name)
    return int(m.group(1)) if m else None


def parse_collection_dir(name: str) -> int | None:
    m = _COLLECTION_DIR.match(name)
    return int(m.group(1)) if m else None


_IN_COLLECTION = re.compile(r"^(?:image|neurosynth_words_for_image)_(\d+)(?:[._]|$)")


def ids_of(relpath: str) -> tuple[int | None, int | None]:
    """(collection id, image id) of any path of the layout
    (``neurovault/collection_<c>/image_<i>...``); None for what the path does not name."""
    parts = PurePosixPath(relpath).parts
    if len(parts) < 2 or parts[0] != NEUROVAULT_DIR:
        return None, None
    cid = parse_collection_dir(parts[1])
    m = _IN_COLLECTION.match(parts[2]) if len(parts) == 3 else None
    return cid, (int(m.group(1)) if m else None)


def iter_collection_dirs(root: Path):
    """Yield (collection_id, path) for every ``neurovault/collection_<id>`` under ``root``."""
    base = root / NEUROVAULT_DIR
    if not base.is_dir():
        return
    for child in sorted(base.iterdir()):
        cid = parse_collection_dir(child.name)
        if cid is not None and child.is_dir():
            yield cid, child
