"""``nv_datalad.load``: a dataset as fetch_neurovault's Bunch, at any version, filtered."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dataset_factory import IMAGES, RESAMPLED, WORDS
from helpers import annex, git

from nv_datalad.consumers.load import entries, images_table, load
from nv_datalad.dataset import layout
from nv_datalad.errors import DatasetError, SpecError

FETCH_NEUROVAULT_KEYS = {"images", "images_meta", "collections_meta", "description"}


def ids(bunch) -> list[int]:
    return [m["id"] for m in bunch.images_meta]


def test_one_path_and_one_collection_record_per_image(ds):
    data = load(ds.path)
    assert set(data) >= FETCH_NEUROVAULT_KEYS
    assert ids(data) == sorted(IMAGES)
    assert len(data.images) == len(data.images_meta) == len(data.collections_meta) == len(IMAGES)
    for path, meta, coll in zip(data.images, data.images_meta, data.collections_meta,
                                strict=True):
        assert path == meta["absolute_path"] == str(ds.path / ds.image_path(meta["id"]))
        assert meta["relative_path"] == ds.image_path(meta["id"]).removeprefix("neurovault/")
        assert coll["id"] == meta["collection_id"] == IMAGES[meta["id"]][0]
        assert coll["absolute_path"] == str(ds.path / "neurovault" / f"collection_{coll['id']}")
        assert nib.load(path).shape == (4, 5, 4)  # the origin has content: real files


def test_null_placeholders_are_none_in_the_metadata(ds):
    data = load(ds.path)
    by_id = {m["id"]: m for m in data.images_meta}
    assert by_id[104]["analysis_level"] is None  # "" in the sidecar
    assert by_id[104]["cognitive_paradigm_cogatlas"] is None  # "None / Other"
    colls = {c["id"]: c for c in data.collections_meta}
    assert colls[13]["DOI"] is None and colls[13]["paper_url"] is None


def test_optional_paths_only_when_the_files_exist(ds):
    data = load(ds.path)
    for meta in data.images_meta:
        assert ("resampled_absolute_path" in meta) == (meta["id"] in RESAMPLED)
        words = json.loads(Path(meta["ns_words_absolute_path"]).read_text())
        assert words["data"]["values"] == WORDS[meta["id"]]


def test_version_reads_old_metadata_without_moving_the_checkout(ds):
    head_before = git(ds.path, "rev-parse", "HEAD")
    old = load(ds.path, version="v1.0.0")
    new = load(ds.path)
    assert {m["id"]: m["map_type"] for m in old.images_meta}[102] == "T map"
    assert {m["id"]: m["map_type"] for m in new.images_meta}[102] == "Z map"
    assert old.images == new.images  # working-tree locations either way
    assert git(ds.path, "rev-parse", "HEAD") == head_before
    assert git(ds.path, "status", "--porcelain") == ""
    assert "v1.0.0" in old.description and "v1.1.0" in new.description


def test_where_selects_like_the_spec_filters(ds):
    assert ids(load(ds.path, where={"map_type": "Z map"})) == [101, 102, 103]
    assert ids(load(ds.path, version="v1.0.0", where={"map_type": "Z map"})) == [101, 103]
    assert ids(load(ds.path, where=["map_type=Z map"])) == [101, 102, 103]
    assert ids(load(ds.path, where={"number_of_subjects": {"ge": 20}})) == [101, 104, 105]
    # a placeholder "" counts as null, like a real null
    assert ids(load(ds.path, where=["analysis_level=null"])) == [104]
    assert ids(load(ds.path, where=["number_of_subjects>=20", "number_of_subjects<=30"])) == \
        [101, 104]
    assert ids(load(ds.path, where=["cognitive_paradigm_cogatlas~=(?i).*read"])) == [103, 105]
    assert ids(load(ds.path, where={"any": [{"modality": "PET FDG"}, {"id": 105}]})) == \
        [104, 105]
    assert ids(load(ds.path, where={"map_type": "no such map"})) == []


def test_bad_where_is_a_spec_error(ds):
    with pytest.raises(SpecError, match="unknown operator"):
        load(ds.path, where={"map_type": {"equals": "Z map"}})
    with pytest.raises(SpecError):
        load(ds.path, where=["map_type"])


def test_word_frequencies_follow_the_selected_images(ds):
    data = load(ds.path, where=["map_type=T map"])
    assert ids(data) == [105]
    assert data.word_frequencies.shape == (1, len(data.vocabulary))
    words = json.loads(Path(data.images_meta[0]["ns_words_absolute_path"]).read_text())
    expected = words["data"]["values"]
    got = {w: v for w, v in zip(data.vocabulary, data.word_frequencies[0], strict=True) if v}
    assert got == pytest.approx(expected)
    assert list(data.vocabulary) == sorted(data.vocabulary)


def test_resampled_images(ds):
    data = load(ds.path, resampled=True, where={"id": {"in": list(RESAMPLED)}})
    assert data.images == [str(ds.path / layout.resampled_file(IMAGES[i][0], i))
                           for i in RESAMPLED]
    with pytest.raises(DatasetError, match="no resampled derivative"):
        load(ds.path, resampled=True)


def test_get_at_an_old_version_is_refused(ds):
    with pytest.raises(DatasetError, match="checkout"):
        load(ds.path, version="v1.0.0", get=True)


def test_get_fetches_the_selected_content_in_a_clone(ds, ds_clone, caplog):
    repo = ds_clone()
    with caplog.at_level(logging.WARNING, logger="nv_datalad.consumers.load"):
        lazy = load(repo, where=["map_type=Z map"])
    assert "word_frequencies" not in lazy  # the npz is annexed and not here yet
    assert "datalad get" in caplog.text
    assert not any((repo / p).exists() for p in
                   [ds.image_path(i) for i in (101, 102, 103)])  # dangling symlinks

    data = load(repo, where=["map_type=Z map"], get=True)
    assert ids(data) == [101, 102, 103]
    for path in data.images:
        assert nib.load(path).get_fdata().shape == (4, 5, 4)
    assert data.word_frequencies.shape[0] == 3
    present = set(annex(repo, "find").split())
    assert {ds.image_path(i) for i in (101, 102, 103)} <= present
    assert ds.image_path(104) not in present and ds.image_path(105) not in present


def test_entries_need_no_content(ds_clone):
    repo = ds_clone()
    chosen = entries(repo, where={"map_type": "Z map"})
    assert [e.image_id for e in chosen] == [101, 102, 103]
    assert chosen[2].relpath.endswith("image_103.nii")  # uncompressed upload keeps .nii
    assert [e.table_row for e in chosen] == [0, 1, 2]


def test_images_table(ds):
    frame = images_table(ds.path)
    assert list(frame["image_id"]) == sorted(IMAGES)
    assert frame["image_id"].dtype == np.int64 and frame["collection_id"].dtype == np.int64
    row = frame.set_index("image_id")
    assert row.loc[102, "map_type"] == "Z map"
    assert row.loc[101, "number_of_subjects"] == 25
    assert row.loc[103, "number_of_subjects"] is __import__("pandas").NA
    assert not row.loc[101, "is_thresholded"]
    assert row.loc[102, "modify_date"].year == 2016
    old = images_table(ds.path, version="v1.0.0").set_index("image_id")
    assert old.loc[102, "map_type"] == "T map"


def test_not_a_dataset(tmp_path):
    with pytest.raises(DatasetError):
        load(tmp_path)
    with pytest.raises(DatasetError):
        images_table(tmp_path)


def test_package_level_load_survives_importing_the_module(tmp_path):
    """``nv_datalad.load`` stays the function even after its module was imported."""
    import importlib

    import nv_datalad

    importlib.import_module("nv_datalad.consumers.load")
    assert callable(nv_datalad.load) and callable(nv_datalad.build)
    from nv_datalad import load as again

    assert again is nv_datalad.load
