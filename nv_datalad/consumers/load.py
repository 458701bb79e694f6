"""``nv_datalad.load``: a built dataset as the Bunch ``nilearn.datasets.fetch_neurovault`` returns.

Query is separate from download (as in TemplateFlow's ``ls``/``get``): :func:`entries` answers
from the sidecars alone, without touching annexed content; :func:`load` turns the answer into a
Bunch and, with ``get=True``, fetches exactly the selected files with ``datalad get``.

``version`` reads the metadata of a tag or commit straight from git, so the user's checkout
never moves. The paths in the result are working-tree locations: their *content* is the
checked-out version's. To analyse the files of an old version, check it out first
(``git -C DATASET checkout v1.0.0``; then ``load(DATASET, get=True)`` or ``datalad get``);
``load(version=..., get=True)`` at a version other than HEAD is refused for that reason.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from nv_datalad.consumers.fetch import fetch, raise_on_failures
from nv_datalad.dataset import layout
from nv_datalad.dataset import revision as versions
from nv_datalad.errors import DatasetError
from nv_datalad.neurovault.records import normalise_nulls
from nv_datalad.records import IMAGE_COLUMNS, PROVENANCE_KEY
from nv_datalad.spec.where import Where, compile_filter

if TYPE_CHECKING:  # heavy imports stay out of ``nv-datalad --help``
    import pandas as pd
    from sklearn.utils import Bunch

log = logging.getLogger(__name__)

_INT_COLUMNS = ("image_id", "collection_id")
_NULLABLE_INT_COLUMNS = ("number_of_subjects", "file_size")
_BOOL_COLUMNS = ("is_thresholded", "not_mni")
_DATE_COLUMNS = ("add_date", "modify_date")
_TRUE = frozenset({"true", "1", "yes"})
_FALSE = frozenset({"false", "0", "no"})


@dataclass
class ImageEntry:
    """One image of the dataset at a version: where its files are and what it says."""

    image_id: int
    collection_id: int
    relpath: str
    meta: dict[str, Any]
    collection: dict[str, Any]
    resampled_relpath: str | None = None
    words_relpath: str | None = None
    table_row: int | None = None  # row in images.tsv (and in word_frequencies.npz)
    extra: dict[str, Any] = field(default_factory=dict)


def _rev(dataset: Path, version: str | None) -> str | None:
    return None if version is None else versions.resolve(dataset, version)


def _table_ids(dataset: Path, rev: str | None) -> list[int] | None:
    """Image ids in images.tsv order (None when the table is missing)."""
    text = versions.read_text(dataset, rev, layout.IMAGES_TSV)
    if text is None:
        return None
    lines = text.splitlines()
    if not lines:
        return []
    header = lines[0].split("\t")
    if "image_id" not in header:
        raise DatasetError(f"{layout.IMAGES_TSV} has no image_id column")
    col = header.index("image_id")
    ids = []
    for n, line in enumerate(lines[1:], start=2):
        cells = line.split("\t")
        try:
            ids.append(int(cells[col]))
        except (IndexError, ValueError) as err:
            raise DatasetError(f"{layout.IMAGES_TSV}:{n}: bad image_id") from err
    return ids


def _image_relpath(files: set[str], cid: int, iid: int) -> str:
    """The image file tracked for ``iid`` (``.nii.gz`` or ``.nii``), derived from ids only."""
    for ext in layout.NIFTI_EXTENSIONS:
        rel = str(layout.image_file(cid, iid, ext))
        if rel in files:
            return rel
    return str(layout.image_file(cid, iid))


def _collection_of_sidecar(sidecar_path: str) -> int:
    cid = layout.ids_of(sidecar_path)[0]
    assert cid is not None  # image_sidecar_paths only yields collection_<id> dirs
    return cid


def entries(
    dataset: Path | str, version: str | None = None, where: Where = None
) -> list[ImageEntry]:
    """The images of ``dataset`` at ``version`` (None = working tree) matching ``where``,
    in images.tsv order (ascending ids). Reads only git-tracked JSON: no content needed.

    Filters see null-normalised records (``""``, ``"None / Other"`` ... are null), as the
    builder's did.
    """
    root = versions.ensure_repository(Path(dataset))
    rev = _rev(root, version)
    keep = compile_filter(where)
    files = versions.list_files(root, rev, layout.NEUROVAULT_DIR)
    file_set = set(files)
    sidecar_paths = versions.image_sidecar_paths(files)
    coll_paths = versions.collection_sidecar_paths(files)
    parsed = versions.read_json_many(
        root, rev, [*sidecar_paths.values(), *coll_paths.values()])
    collections = {cid: normalise_nulls(parsed[p]) for cid, p in coll_paths.items() if p in parsed}

    table = _table_ids(root, rev)
    order: list[tuple[int, int | None]]
    if table is None:
        log.warning("%s missing: images in id order, no word frequencies", layout.IMAGES_TSV)
        order = [(iid, None) for iid in sorted(sidecar_paths)]
    else:
        order = [(iid, row) for row, iid in enumerate(table)]
        extra = sorted(set(sidecar_paths) - set(table))
        if extra:
            log.warning("%d image sidecar(s) not listed in %s (ids %s): appended",
                        len(extra), layout.IMAGES_TSV, ", ".join(map(str, extra[:10])))
            order += [(iid, None) for iid in extra]

    out = []
    for iid, row in order:
        spath = sidecar_paths.get(iid)
        if spath is None or spath not in parsed:
            log.warning("image %d is listed in %s but has no readable sidecar", iid,
                        layout.IMAGES_TSV)
            continue
        meta = normalise_nulls(parsed[spath])
        if not keep(meta):
            continue
        cid = _collection_of_sidecar(spath)
        collection = collections.get(cid)
        if collection is None:
            log.warning("collection %d has no collection_metadata.json", cid)
            collection = {"id": cid}
        resampled = str(layout.resampled_file(cid, iid))
        words = str(layout.words_file(cid, iid))
        out.append(ImageEntry(
            image_id=iid, collection_id=cid, relpath=_image_relpath(file_set, cid, iid),
            meta=meta, collection=collection,
            resampled_relpath=resampled if resampled in file_set else None,
            words_relpath=words if words in file_set else None, table_row=row,
        ))
    return out


def _nilearn_meta(root: Path, entry: ImageEntry) -> tuple[dict, dict]:
    """Image and collection dicts with nilearn's path keys (str, as fetch_neurovault gives).

    ``relative_path`` is relative to ``<dataset>/neurovault`` as in nilearn's cache.
    """
    nv_root = root / layout.NEUROVAULT_DIR
    meta = dict(entry.meta)
    meta["absolute_path"] = str(root / entry.relpath)
    meta["relative_path"] = str(PurePosixPath(entry.relpath).relative_to(layout.NEUROVAULT_DIR))
    if entry.resampled_relpath:
        meta["resampled_absolute_path"] = str(root / entry.resampled_relpath)
        meta["resampled_relative_path"] = str(
            PurePosixPath(entry.resampled_relpath).relative_to(layout.NEUROVAULT_DIR))
    if entry.words_relpath:
        meta["ns_words_absolute_path"] = str(root / entry.words_relpath)
        meta["ns_words_relative_path"] = str(
            PurePosixPath(entry.words_relpath).relative_to(layout.NEUROVAULT_DIR))
    coll = dict(entry.collection)
    coll_dir = layout.collection_dir(entry.collection_id)
    coll["absolute_path"] = str(nv_root / coll_dir.name)
    coll["relative_path"] = coll_dir.name
    return meta, coll


def _description(root: Path, rev: str | None) -> str:
    readme = versions.read_text(root, rev, layout.README)
    if readme:
        return readme
    spec = versions.read_spec(root, rev)
    return str(spec.get("description") or "")


def _annexed_bytes(root: Path, rev: str | None, relpath: str, get: bool) -> bytes | None:
    """Content of a file that may be annexed (``word_frequencies.npz``) at ``rev``."""
    if rev is None:
        path = root / relpath
        if path.is_symlink():
            key = versions.annex_key(root, None, relpath)
            if key is None:  # an ordinary symlink
                return path.read_bytes() if path.exists() else None
        elif path.is_file():
            data = path.read_bytes()
            key = versions.key_from_link(data) if data.startswith(b"/annex/objects/") else None
            if key is None:
                return data
        else:
            return None
    else:
        raw = versions.read_many(root, rev, [relpath])[relpath]
        if raw is None:
            return None
        key = versions.key_from_link(raw)
        if key is None:
            return raw
    location = versions.content_path(root, key, relpath)
    if location is None and get and rev is None:
        raise_on_failures(fetch(root, [relpath]))
        location = versions.content_path(root, key, relpath)
    if location is None:
        log.warning("%s is not present locally (datalad get %s): no word frequencies",
                    relpath, relpath)
        return None
    return location.read_bytes()


def _words(
    root: Path, rev: str | None, chosen: list[ImageEntry], get: bool
) -> tuple[Any, Any] | None:
    """(word_frequencies rows of ``chosen``, vocabulary) as nilearn returns them, or None."""
    vocab_text = versions.read_text(root, rev, layout.VOCABULARY)
    if vocab_text is None:
        return None
    blob = _annexed_bytes(root, rev, layout.WORD_FREQUENCIES, get)
    if blob is None:
        return None
    import numpy as np
    import scipy.sparse

    matrix = scipy.sparse.load_npz(io.BytesIO(blob)).tocsr()
    vocabulary = np.asarray([w for w in vocab_text.splitlines() if w])
    rows = [e.table_row for e in chosen]
    if matrix.shape[1] != vocabulary.size or any(r is None or r >= matrix.shape[0] for r in rows):
        log.warning("%s does not match images.tsv / vocabulary (shape %s, %d words): skipped",
                    layout.WORD_FREQUENCIES, matrix.shape, vocabulary.size)
        return None
    return matrix[rows].toarray(), vocabulary


def warn_changed_content(root: Path, rev: str, chosen: list[ImageEntry], version: str) -> None:
    """Paths point at the working tree: say when its content is not the version's."""
    current = versions.image_sidecars(root, None)
    changed = [
        e.image_id for e in chosen
        if (e.meta.get(PROVENANCE_KEY) or {}).get("key")
        != ((current.get(e.image_id) or {}).get(PROVENANCE_KEY) or {}).get("key")
    ]
    if changed:
        log.warning(
            "%d image(s) have other content in the working tree than at %s (ids %s); to "
            "analyse that version's files: git -C %s checkout %s, then datalad get",
            len(changed), version, ", ".join(map(str, changed[:10])), root, version)


def load(
    dataset: Path | str,
    version: str | None = None,
    get: bool = False,
    resampled: bool = False,
    where: Where = None,
    jobs: int | None = None,
) -> Bunch:
    """The dataset as ``fetch_neurovault``'s Bunch: ``images``, ``images_meta``,
    ``collections_meta`` (one per image), ``description``, and ``vocabulary`` /
    ``word_frequencies`` when Neurosynth words were built (rows follow ``images``).

    ``where``: spec terms (``{"map_type": "Z map", "number_of_subjects": {"ge": 20}}``) or
    ``["map_type=Z map", "number_of_subjects>=20"]``. ``get=True`` fetches the content of
    ``images`` with ``datalad get`` (``jobs`` in parallel) and raises if any file fails.
    """
    from sklearn.utils import Bunch

    root = versions.ensure_repository(Path(dataset)).resolve()
    rev = _rev(root, version)
    if get and rev is not None and rev != versions.resolve(root, "HEAD"):
        raise DatasetError(
            f"load(version={version!r}, get=True): the working tree holds another version. "
            f"Check it out first (git -C {root} checkout {version}), then load(get=True)")
    chosen = entries(root, version=version, where=where)
    if resampled:
        missing = [e.image_id for e in chosen if e.resampled_relpath is None]
        if missing:
            raise DatasetError(
                f"{len(missing)} selected image(s) have no resampled derivative (ids "
                f"{', '.join(map(str, missing[:10]))}); the spec needs a 'resample:' section")
    if rev is not None and version is not None:
        warn_changed_content(root, rev, chosen, version)

    images_meta, collections_meta = [], []
    for entry in chosen:
        meta, coll = _nilearn_meta(root, entry)
        images_meta.append(meta)
        collections_meta.append(coll)
    key = "resampled_absolute_path" if resampled else "absolute_path"
    images = [m[key] for m in images_meta]

    if get:
        paths = [e.resampled_relpath if resampled else e.relpath for e in chosen]
        raise_on_failures(fetch(root, [p for p in paths if p], jobs=jobs))

    result = Bunch(
        images=images, images_meta=images_meta, collections_meta=collections_meta,
        description=_description(root, rev),
    )
    words = _words(root, rev, chosen, get)
    if words is not None:
        result["word_frequencies"], result["vocabulary"] = words
    return result


def _to_bool(value: str) -> bool | None:
    low = value.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    return None


def images_table(dataset: Path | str, version: str | None = None) -> pd.DataFrame:
    """``images.tsv`` at ``version`` as a DataFrame: ids as int, counts as nullable Int64,
    flags as nullable boolean, dates as UTC datetimes, missing cells as NA."""
    import pandas as pd

    root = versions.ensure_repository(Path(dataset))
    text = versions.read_text(root, _rev(root, version), layout.IMAGES_TSV)
    if text is None:
        raise versions.not_a_dataset(root, f"no {layout.IMAGES_TSV}")
    frame = pd.read_csv(io.StringIO(text), sep="\t", dtype=str, keep_default_na=False,
                        na_values=[""], quoting=csv.QUOTE_NONE)
    for col in IMAGE_COLUMNS:
        if col not in frame.columns:
            frame[col] = pd.NA
    for col in _INT_COLUMNS:
        frame[col] = frame[col].astype("int64")
    for col in _NULLABLE_INT_COLUMNS:
        frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("Int64")
    for col in _BOOL_COLUMNS:
        frame[col] = frame[col].map(
            lambda v: pd.NA if pd.isna(v) else _to_bool(v)).astype("boolean")
    for col in _DATE_COLUMNS:
        frame[col] = pd.to_datetime(frame[col], utc=True, format="ISO8601", errors="coerce")
    return frame
