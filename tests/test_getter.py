"""``nv-datalad get --where``: parse conditions, select, and fetch exactly the matching files."""

from __future__ import annotations

import shlex
import subprocess

import pytest
from dataset_factory import IMAGES, FactoryDataset, clone, git, shared_dataset

from nv_datalad.consumers import get as getter
from nv_datalad.dataset import layout
from nv_datalad.errors import SpecError
from nv_datalad.records import Status


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> FactoryDataset:
    return shared_dataset(tmp_path_factory)


def present(repo) -> set[str]:
    """What git-annex says has content here."""
    return set(git(repo, "annex", "find").split())


@pytest.mark.parametrize(("expr", "expected"), [
    ("map_type='Z map'", ("map_type", "Z map")),
    ('map_type="Z map"', ("map_type", "Z map")),
    ("map_type=Z map", ("map_type", "Z map")),
    (" map_type = Z map ", ("map_type", "Z map")),
    ("number_of_subjects>=20", ("number_of_subjects", {"ge": 20})),
    ("number_of_subjects>20", ("number_of_subjects", {"gt": 20})),
    ("number_of_subjects<2.5", ("number_of_subjects", {"lt": 2.5})),
    ("number_of_subjects<=20", ("number_of_subjects", {"le": 20})),
    ("number_of_subjects=20", ("number_of_subjects", 20)),
    ("number_of_subjects='20'", ("number_of_subjects", "20")),
    ("map_type!=T map", ("map_type", {"not_equal": "T map"})),
    ("is_thresholded=false", ("is_thresholded", False)),
    ("DOI=null", ("DOI", {"is_null": True})),
    ("DOI!=null", ("DOI", {"not_null": True})),
    ("DOI='null'", ("DOI", "null")),
    ("name~=(?i).*motor", ("name", {"pattern": "(?i).*motor"})),
    ("name~='a b'", ("name", {"pattern": "a b"})),
    ("analysis_level:{in: [group, meta-analysis]}",
     ("analysis_level", {"in": ["group", "meta-analysis"]})),
    ('map_type:{"not_in": ["ROI/mask"]}', ("map_type", {"not_in": ["ROI/mask"]})),
    ("name:{pattern: motor, flags: i}", ("name", {"pattern": "motor", "flags": "i"})),
    ("map_type=no", ("map_type", "no")),  # not YAML 1.1's boolean
    ("add_date=2016-01-21", ("add_date", "2016-01-21")),  # not a date object
])
def test_parse_where(expr, expected):
    assert getter.parse_where(expr) == expected


@pytest.mark.parametrize(("expr", "message"), [
    ("map_type", "expected FIELD=VALUE"),
    ("=Z map", "expected FIELD=VALUE"),
    ("map_type=", "empty value"),
    ("number_of_subjects>=null", "null can only be compared"),
    ("name~=(unclosed", "invalid regular expression"),
    ("map_type:{equals: x}", "unknown operator equals"),
    ("map_type:[a, b]", "needs an operator"),
    ("map_type:{in: [a, b}", "cannot parse"),
    ("map_type:", "missing condition"),
])
def test_parse_where_errors_name_the_problem(expr, message):
    with pytest.raises(SpecError, match=message):
        getter.parse_where(expr)


def test_parse_error_names_the_field():
    with pytest.raises(SpecError) as err:
        getter.parse_where("number_of_subjects>=null")
    assert err.value.key == "number_of_subjects"
    assert str(err.value).startswith("number_of_subjects: ")


def test_same_field_twice_means_both(ds):
    tree = getter.where_tree(["number_of_subjects>=20", "number_of_subjects<=30"])
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


def test_get_where_fetches_exactly_the_z_maps(ds, tmp_path):
    repo = clone(ds, tmp_path / "clone")
    assert present(repo) == set()
    results = getter.get(repo, ["map_type=Z map"])
    z_maps = {ds.image_path(i) for i in (101, 102, 103)}
    assert present(repo) == z_maps  # not the T/P maps, not the resampled files, not the npz
    assert {r.path for r in results} == z_maps
    assert all(r.status is Status.OK for r in results)
    assert {r.image_id for r in results} == {101, 102, 103}
    again = getter.get(repo, ["map_type=Z map"])
    assert [r.status for r in again] == [Status.NOTNEEDED] * 3
    assert getter.summarise(again) == "0 fetched, 3 already present, 0 failed"


def test_get_resampled_fetches_only_derivatives(ds, tmp_path):
    repo = clone(ds, tmp_path / "clone")
    getter.get(repo, {"map_type": "Z map"}, resampled=True)
    assert present(repo) == {str(layout.resampled_file(11, 101)),
                             str(layout.resampled_file(12, 103))}


def test_get_with_no_match_fetches_nothing(ds, tmp_path):
    repo = clone(ds, tmp_path / "clone")
    assert getter.get(repo, ["map_type=F map"]) == []
    assert present(repo) == set()


def test_annex_equivalent_selects_the_same_files(ds, tmp_path):
    where = ["map_type=Z map", "number_of_subjects>=20"]
    line = getter.annex_equivalent(where)
    assert line == "git annex get --metadata 'map_type=Z map' --metadata 'number_of_subjects>=20'"
    ours = clone(ds, tmp_path / "ours")
    theirs = clone(ds, tmp_path / "theirs")
    getter.get(ours, where)
    subprocess.run(shlex.split(line), cwd=theirs, check=True, capture_output=True)
    assert present(theirs) == present(ours) == {ds.image_path(101)}


def test_annex_equivalent_of_not_and_in(ds, tmp_path):
    where = {"map_type": {"in": ["T map", "P map (given null hypothesis)"]},
             "collection_id": {"not_equal": 11}}
    line = getter.annex_equivalent(where)
    assert line is not None and "--or" in line and "--not" in line
    repo = clone(ds, tmp_path / "clone")
    subprocess.run(shlex.split(line), cwd=repo, check=True, capture_output=True)
    assert present(repo) == set(getter.select(ds.path, where)) == \
        {ds.image_path(104), ds.image_path(105)}


@pytest.mark.parametrize(("where", "reason"), [
    (["name~=map"], "no git-annex equivalent"),
    (["description=x"], "not recorded in the git-annex metadata"),
    (["map_type=Z*"], "glob characters"),
    ({"any": [{"map_type": "Z map"}, {"modality": "MEG"}]}, "any/not"),
    (["number_of_subjects>=many"], "compares numbers only"),
])
def test_no_annex_equivalent_says_why(where, reason):
    line, note = getter.explain_annex_equivalent(where)
    assert line is None
    assert reason in note
    assert getter.annex_equivalent(where) is None


def test_all_images_are_known(ds):
    assert len(getter.select(ds.path, None)) == len(IMAGES)
