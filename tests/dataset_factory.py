"""A small but real nv-datalad dataset, made without the builder, for the consumer tests.

It follows the dataset contract (DESIGN.md, ``layout``, ``records``) with real parts: a DataLad
dataset, NIfTI files from nibabel in the annex, JSON sidecars carrying their annex keys, TSV
tables, git-annex metadata on every image key, Neurosynth words, and two annotated version tags:

- ``v1.0.0``: images 101..105 in collections 11, 12, 13;
- ``v1.1.0``: image 102 re-labelled from "T map" to "Z map" (metadata-only update).

Null placeholders ("", "None / Other") appear where NeuroVault puts them, so the consumers'
null handling is exercised. Nothing here contacts a server: URLs point at a closed loopback
port and are only recorded.
"""

from __future__ import annotations

import copy
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import scipy.sparse
import yaml
from helpers import git

from nv_datalad.consumers.cite import cff_for
from nv_datalad.dataset import layout
from nv_datalad.pipeline.readme import render_readme
from nv_datalad.records import (
    ANNEX_METADATA_FIELDS,
    COLLECTION_COLUMNS,
    IMAGE_COLUMNS,
    PROVENANCE_KEY,
)

SERVER = "http://127.0.0.1:9"  # discard port: recorded, never contacted
SPEC = {
    "name": "factory-maps",
    "description": "Small synthetic maps for the consumer tests",
    "server": SERVER,
    "max_images": None,
    "mode": "download_new",
    "collections": {"ids": [11, 12, 13]},
    "images": {"terms": {"map_type": {"not_in": ["ROI/mask", "anatomical"]}}},
    "resample": {"voxel_size": 3},
    "neurosynth": {"words": True},
}

COLLECTIONS: dict[int, dict[str, Any]] = {
    11: {"name": "Motor mapping", "DOI": "10.1234/nv.col11", "paper_url": "",
         "authors": "Ada Lovelace, Alan Turing", "journal_name": "J. Tests"},
    12: {"name": "Language | reading", "DOI": None,
         "paper_url": "https://example.org/papers/12", "authors": "", "journal_name": None},
    13: {"name": "PET baseline", "DOI": "", "paper_url": "None / Other", "authors": None,
         "journal_name": ""},
}

#: image id -> (collection id, extension, fields) as of v1.0.0.
IMAGES: dict[int, tuple[int, str, dict[str, Any]]] = {
    101: (11, ".nii.gz", {"map_type": "Z map", "modality": "fMRI-BOLD",
                          "analysis_level": "group", "number_of_subjects": 25,
                          "cognitive_paradigm_cogatlas": "motor fMRI task paradigm"}),
    102: (11, ".nii.gz", {"map_type": "T map", "modality": "fMRI-BOLD",
                          "analysis_level": "group", "number_of_subjects": 12,
                          "cognitive_paradigm_cogatlas": "motor fMRI task paradigm"}),
    103: (12, ".nii", {"map_type": "Z map", "modality": "fMRI-BOLD",
                       "analysis_level": "single-subject", "number_of_subjects": None,
                       "cognitive_paradigm_cogatlas": "reading"}),
    104: (13, ".nii.gz", {"map_type": "P map (given null hypothesis)", "modality": "PET FDG",
                          "analysis_level": "", "number_of_subjects": 30,
                          "cognitive_paradigm_cogatlas": "None / Other"}),
    105: (12, ".nii.gz", {"map_type": "T map", "modality": "fMRI-BOLD",
                          "analysis_level": "group", "number_of_subjects": 40,
                          "cognitive_paradigm_cogatlas": "reading"}),
}
RESAMPLED = (101, 103)
WORDS: dict[int, dict[str, float]] = {
    101: {"motor": 0.5, "hand": 0.3},
    102: {"motor": 0.2},
    103: {"reading": 0.7, "words": 0.1},
    104: {},
    105: {"reading": 0.4, "hand": 0.05},
}
V1_DATE = "2016-01-27T21:47:42.236081Z"
V2_DATE = "2016-03-01T10:00:00+01:00"


@dataclass
class FactoryDataset:
    """What the tests need to know about the made dataset."""

    path: Path
    dataset_id: str
    v1_commit: str
    v2_commit: str

    def image_path(self, image_id: int) -> str:
        cid, ext, _ = IMAGES[image_id]
        return str(layout.image_file(cid, image_id, ext))


def _nifti(image_id: int, ext: str, path: Path) -> None:
    rng = np.random.default_rng(image_id)
    data = rng.normal(size=(4, 5, 4)).astype("float32")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, np.diag([3.0, 3.0, 3.0, 1.0])), str(path))
    assert path.name.endswith(ext)


def image_record(image_id: int, fields: dict[str, Any], modify_date: str) -> dict[str, Any]:
    cid, ext, _ = IMAGES[image_id]
    return {
        "id": image_id,
        "url": f"{SERVER}/images/{image_id}/",
        "file": f"{SERVER}/media/images/{cid}/map_{image_id}{ext}",
        "file_size": 1000 + image_id,
        "collection": f"{SERVER}/collections/{cid}/",
        "collection_id": cid,
        "name": f"map {image_id}",
        "description": "",
        "image_type": "statistic_map",
        "is_thresholded": False,
        "not_mni": False,
        "add_date": "2016-01-21T17:23:16.733390Z",
        "modify_date": modify_date,
        **fields,
    }


def collection_record(cid: int) -> dict[str, Any]:
    return {"id": cid, "url": f"{SERVER}/collections/{cid}/", "number_of_images": 2,
            "modify_date": V1_DATE, **COLLECTIONS[cid],
            PROVENANCE_KEY: {"server": SERVER, "retrieved_at": "2024-01-01T00:00:00Z",
                             "tool_version": "0.1.0"}}


def _cell(value: Any) -> str:
    if value is None or value == "":
        return ""
    return str(value)


def _images_tsv(sidecars: dict[int, dict]) -> str:
    lines = ["\t".join(IMAGE_COLUMNS)]
    for iid in sorted(sidecars):
        rec = sidecars[iid]
        cid = rec["collection_id"]
        prov = rec[PROVENANCE_KEY]
        row = {**rec, "image_id": iid, "path": prov["path"], "key": prov["key"],
               "url": rec["file"],
               "resampled_path": str(layout.resampled_file(cid, iid)) if iid in RESAMPLED else "",
               "words_path": str(layout.words_file(cid, iid))}
        lines.append("\t".join(_cell(row.get(c)) for c in IMAGE_COLUMNS))
    return "\n".join(lines) + "\n"


def _collections_tsv(counts: dict[int, int]) -> str:
    lines = ["\t".join(COLLECTION_COLUMNS)]
    for cid in sorted(COLLECTIONS):
        rec = {**collection_record(cid), "collection_id": cid, "n_images": counts.get(cid, 0)}
        lines.append("\t".join(_cell(rec.get(c)) for c in COLLECTION_COLUMNS))
    return "\n".join(lines) + "\n"


def _words_npz(path: Path) -> list[str]:
    vocabulary = sorted({w for values in WORDS.values() for w in values})
    rows = [[WORDS[iid].get(w, 0.0) for w in vocabulary] for iid in sorted(WORDS)]
    buf = io.BytesIO()
    scipy.sparse.save_npz(buf, scipy.sparse.csr_matrix(np.asarray(rows)))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buf.getvalue())
    return vocabulary


def _write_json(path: Path, value: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")


def _set_annex_metadata(root: Path, sidecars: dict[int, dict]) -> None:
    lines = []
    for iid, rec in sorted(sidecars.items()):
        fields = {"image_id": iid, **rec}
        clean = {k: [str(fields[k])] for k in ANNEX_METADATA_FIELDS
                 if fields.get(k) not in (None, "")}
        lines.append(json.dumps({"file": rec[PROVENANCE_KEY]["path"], "fields": clean}))
    out = git(root, "annex", "metadata", "--batch", "--json", input="\n".join(lines) + "\n")
    assert all(json.loads(line)["success"] for line in out.splitlines()), out


def _write_tables_and_docs(root: Path, sidecars: dict[int, dict], version: str,
                           dataset_id: str, changes: str) -> None:
    (root / layout.IMAGES_TSV).write_text(_images_tsv(sidecars))
    counts: dict[int, int] = {}
    for rec in sidecars.values():
        counts[rec["collection_id"]] = counts.get(rec["collection_id"], 0) + 1
    (root / layout.COLLECTIONS_TSV).write_text(_collections_tsv(counts))
    records = [collection_record(cid) for cid in sorted(COLLECTIONS)]
    (root / layout.README).write_text(render_readme(
        SPEC, version, dataset_id, list(sidecars.values()), records, SERVER))
    (root / layout.CITATION).write_text(cff_for(
        SPEC["name"], SPEC["description"], dataset_id, version, "2024-01-01", records, counts,
        server=SERVER))
    (root / layout.CHANGES).write_text(changes)


def make_dataset(root: Path) -> FactoryDataset:
    """Create the dataset at ``root`` (must not exist) and return its facts."""
    import datalad.api as dl

    dl.create(path=str(root), cfg_proc="text2git", result_renderer="disabled")
    for iid, (cid, ext, _) in IMAGES.items():
        _nifti(iid, ext, root / layout.image_file(cid, iid, ext))
        if iid in RESAMPLED:
            _nifti(iid + 1000, ".nii.gz", root / layout.resampled_file(cid, iid))
    (root / layout.SPEC_FILE).parent.mkdir(parents=True, exist_ok=True)
    (root / layout.SPEC_FILE).write_text(yaml.safe_dump(SPEC, sort_keys=False))
    dl.save(dataset=str(root), message="Add images", result_renderer="disabled")

    dataset_id = git(root, "config", "-f", ".datalad/config", "datalad.dataset.id").strip()
    sidecars: dict[int, dict] = {}
    for iid, (cid, ext, fields) in IMAGES.items():
        rel = str(layout.image_file(cid, iid, ext))
        key = git(root, "annex", "lookupkey", rel).strip()
        rec = image_record(iid, fields, V1_DATE)
        rec[PROVENANCE_KEY] = {"server": SERVER, "source_url": rec["file"],
                               "retrieved_at": "2024-01-01T00:00:00Z", "tool_version": "0.1.0",
                               "path": rel, "key": key}
        sidecars[iid] = rec
        _write_json(root / layout.image_sidecar(cid, iid), rec)
        _write_json(root / layout.words_file(cid, iid),
                    {"data": {"values": WORDS[iid]}})
    for cid in COLLECTIONS:
        _write_json(root / layout.collection_sidecar(cid), collection_record(cid))
    vocabulary = _words_npz(root / layout.WORD_FREQUENCIES)
    (root / layout.VOCABULARY).write_text("\n".join(vocabulary) + "\n")
    _write_tables_and_docs(root, sidecars, "v1.0.0", dataset_id,
                           "# Changes\n\n## v1.0.0\n\n- 5 images added\n")
    dl.save(dataset=str(root), message="Metadata and tables", result_renderer="disabled")
    _set_annex_metadata(root, sidecars)
    git(root, "tag", "-a", "v1.0.0", "-m", "v1.0.0")
    v1 = git(root, "rev-parse", "HEAD").strip()

    updated = copy.deepcopy(sidecars)
    updated[102]["map_type"] = "Z map"
    updated[102]["modify_date"] = V2_DATE
    _write_json(root / layout.image_sidecar(11, 102), updated[102])
    _write_tables_and_docs(root, updated, "v1.1.0", dataset_id,
                           "# Changes\n\n## v1.1.0\n\n- image 102 updated\n\n"
                           "## v1.0.0\n\n- 5 images added\n")
    dl.save(dataset=str(root), message="Update image 102", result_renderer="disabled")
    _set_annex_metadata(root, {102: updated[102]})
    git(root, "tag", "-a", "v1.1.0", "-m", "v1.1.0")
    v2 = git(root, "rev-parse", "HEAD").strip()
    return FactoryDataset(path=root, dataset_id=dataset_id, v1_commit=v1, v2_commit=v2)
