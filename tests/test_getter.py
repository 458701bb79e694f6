"""``nv-datalad get --where``: parse conditions, select, and fetch exactly the matching files."""

from __future__ import annotations

import shlex

from dataset_factory import IMAGES
from helpers import annex, git

from nv_datalad.consumers import get as getter
from nv_datalad.consumers.fetch import summarise
from nv_datalad.dataset import layout
from nv_datalad.records import Status
from nv_datalad.spec.where import annex_equivalent, where_tree


def present(repo) -> set[str]:
    """What git-annex says has content here."""
    return set(annex(repo, "find").split())


def run_as_typed(repo, line: str) -> None:
    """Run a printed ``git annex ...`` command line in ``repo`` as a shell user would."""
    program, *args = shlex.split(line)
    assert program == "git", line
    git(repo, *args)


def test_same_field_twice_means_both(ds):
    tree = where_tree(["number_of_subjects>=20", "number_of_subjects<=30"])
    assert tree == {"all": [{"number_of_subjects": {"ge": 20}},
                            {"number_of_subjects": {"le": 30}}]}
    assert [p.split("/")[-1] for p in getter.select(ds.path, tree)] == \
        ["image_101.nii.gz", "image_104.nii.gz"]


def test_select_follows_the_version(ds):
    assert getter.select(ds.path, ["map_type=Z map"]) == \
        [ds.image_path(i) for i in (101, 102, 103)]
    assert getter.select(ds.path, ["map_type=Z map"], version="v1.0.0") == \
        [ds.image_path(i) for i in (101, 103)]
    assert getter.select(ds.path, ["map_type=Z map"], resampled=True) == \
        [str(layout.resampled_file(11, 101)), str(layout.resampled_file(12, 103))]


def test_get_where_fetches_exactly_the_z_maps(ds, ds_clone):
    repo = ds_clone()
    assert present(repo) == set()
    results = getter.get(repo, ["map_type=Z map"])
    z_maps = {ds.image_path(i) for i in (101, 102, 103)}
    assert present(repo) == z_maps  # not the T/P maps, not the resampled files, not the npz
    assert {r.path for r in results} == z_maps
    assert all(r.status is Status.OK for r in results)
    assert {r.image_id for r in results} == {101, 102, 103}
    again = getter.get(repo, ["map_type=Z map"])
    assert [r.status for r in again] == [Status.NOTNEEDED] * 3
    assert summarise(again) == "0 fetched, 3 already present, 0 failed"


def test_get_resampled_fetches_only_derivatives(ds_clone):
    repo = ds_clone()
    getter.get(repo, {"map_type": "Z map"}, resampled=True)
    assert present(repo) == {str(layout.resampled_file(11, 101)),
                             str(layout.resampled_file(12, 103))}


def test_get_with_no_match_fetches_nothing(ds_clone):
    repo = ds_clone()
    assert getter.get(repo, ["map_type=F map"]) == []
    assert present(repo) == set()


def test_annex_equivalent_selects_the_same_files(ds, ds_clone):
    where = ["map_type=Z map", "number_of_subjects>=20"]
    line = annex_equivalent(where)
    assert line == "git annex get --metadata 'map_type=Z map' --metadata 'number_of_subjects>=20'"
    ours = ds_clone("ours")
    theirs = ds_clone("theirs")
    getter.get(ours, where)
    run_as_typed(theirs, line)
    assert present(theirs) == present(ours) == {ds.image_path(101)}


def test_annex_equivalent_of_not_and_in(ds, ds_clone):
    where = {"map_type": {"in": ["T map", "P map (given null hypothesis)"]},
             "collection_id": {"not_equal": 11}}
    line = annex_equivalent(where)
    assert line is not None and "--or" in line and "--not" in line
    repo = ds_clone()
    run_as_typed(repo, line)
    assert present(repo) == set(getter.select(ds.path, where)) == \
        {ds.image_path(104), ds.image_path(105)}


def test_all_images_are_known(ds):
    assert len(getter.select(ds.path, None)) == len(IMAGES)
