"""Records as the API writes them: pure builders for collection and image JSON objects.

Records are plain dicts shaped like the API's JSON, with absolute ``http://`` URLs under the
emulator's base URL. Every random choice comes from the ``rng`` the caller passes, so a record is
a pure function of its plan and that generator's state.
"""

from __future__ import annotations

import copy
import hashlib
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import numpy as np

from nv_datalad.emulator.plans import PARADIGMS, CollectionPlan, ImageKind

Record = dict[str, Any]


def fake_cogatlas_id(prefix: str, text: str) -> str:
    return prefix + hashlib.sha256(text.encode()).hexdigest()[:13]


def split_ext(file_name: str) -> tuple[str, str]:
    for ext in (".nii.gz", ".nii", ".xml"):
        if file_name.endswith(ext):
            return file_name[: -len(ext)], ext
    return file_name, ""


def unique_file_name(wanted: str, taken: set[str]) -> str:
    """NeuroVault's storage answer to a duplicate upload name: ``name_1.nii.gz``, ``name_2``..."""
    if wanted not in taken:
        return wanted
    stem, ext = split_ext(wanted)
    n = 1
    while f"{stem}_{n}{ext}" in taken:
        n += 1
    return f"{stem}_{n}{ext}"


def jitter(rng: np.random.Generator) -> timedelta:
    """Sub-second noise on generated dates; whole seconds 30% of the time (the Berlin style then
    drops the fraction)."""
    return timedelta(microseconds=0 if rng.random() < 0.3 else int(rng.integers(1, 1_000_000)))


def media_path(collection_id: int, file_name: str) -> str:
    """Where a file lives under ``/media/images/`` (decoded): the key the server looks up."""
    return f"{collection_id}/{file_name}"


def media_url(base_url: str, path: str) -> str:
    return f"{base_url}/media/images/{quote(path)}"


def image_name(kind: ImageKind, plan: CollectionPlan, n: int) -> str:
    if kind.image_type == "atlas":
        return f"Motor atlas {n}"
    if kind.map_type in ("ROI/mask", "parcellation", "anatomical"):
        return f"{kind.map_type} {n}"
    contrast = PARADIGMS[plan.paradigm][1] if plan.paradigm is not None else "effect"
    return f"{contrast} {kind.map_type} {n}"


def collection_record(
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


def image_record(
    kind: ImageKind,
    plan: CollectionPlan,
    base: str,
    image_id: int,
    file_path: str,
    file_size: int,
    name: str,
    rng: np.random.Generator,
    null: str | None,
) -> Record:
    record: Record = {
        "url": f"{base}/images/{image_id}/",
        "id": image_id,
        "file": media_url(base, file_path),
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
        task_id = fake_cogatlas_id("trm_", task)
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
            "cognitive_contrast_cogatlas_id": fake_cogatlas_id("cnt_", contrast)
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


def label_xml(name: str) -> bytes:
    """An FSL-style label description for an atlas (region names for each integer label)."""
    labels = "\n".join(
        f'    <label index="{i}" x="0" y="0" z="0">Region {i}</label>' for i in range(1, 9)
    )
    text = (
        '<?xml version="1.0" encoding="ISO-8859-1"?>\n<atlas version="1.0">\n'
        f"  <header>\n    <name>{name}</name>\n    <type>Label</type>\n"
        f"  </header>\n  <data>\n{labels}\n  </data>\n</atlas>\n"
    )
    return text.encode("iso-8859-1")


def public_record(record: Record) -> Record:
    """A copy safe to hand out (callers may not edit the live state through it)."""
    return copy.deepcopy(record)
