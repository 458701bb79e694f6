"""Reading a dataset at any version from git: tags, files, sidecars, annex keys, dataset id."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest
from dataset_factory import IMAGES
from helpers import git

from nv_datalad.dataset import layout
from nv_datalad.dataset import revision as versions
from nv_datalad.errors import DatasetError


def _repo_with_tags(path: Path, tags: list[str]) -> list[str]:
    """A plain git repo with one commit per tag; returns the commits."""
    path.mkdir()
    git(path, "init", "-q")
    commits = []
    for n, tag in enumerate(tags):
        (path / "f.txt").write_text(str(n))
        git(path, "add", "f.txt")
        git(path, "commit", "-q", "-m", f"c{n}")
        git(path, "tag", "-a", tag, "-m", tag)
        commits.append(git(path, "rev-parse", "HEAD").strip())
    return commits


def test_resolve_tags_and_commits(ds):
    assert versions.resolve(ds.path, "v1.0.0") == ds.v1_commit
    assert versions.resolve(ds.path, "HEAD") == ds.v2_commit
    assert versions.resolve(ds.path, ds.v1_commit[:10]) == ds.v1_commit


@pytest.mark.parametrize("rev", ["v9.9.9", "deadbeef", "-v", "--all"])
def test_unknown_version_is_a_clear_error(ds, rev):
    with pytest.raises(DatasetError) as err:
        versions.resolve(ds.path, rev)
    assert rev in str(err.value)


def test_unknown_version_lists_known_tags(ds):
    with pytest.raises(DatasetError, match=r"known versions: v1\.0\.0, v1\.1\.0"):
        versions.resolve(ds.path, "v2.0.0")


def test_tags_sort_by_semantic_version_not_text(tmp_path):
    commits = _repo_with_tags(tmp_path / "r", ["v1.2.0", "v1.10.0", "v1.9.3", "vnext", "1.0.0"])
    assert versions.version_tags(tmp_path / "r") == ["v1.2.0", "v1.9.3", "v1.10.0"]
    assert versions.latest_tag(tmp_path / "r") == "v1.10.0"
    # the version a commit belongs to is the newest tag reachable from it
    assert versions.latest_tag(tmp_path / "r", commits[0]) == "v1.2.0"


def test_latest_tag_none_before_first_tag(tmp_path):
    repo = tmp_path / "r"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "f").write_text("x")
    git(repo, "add", "f")
    git(repo, "commit", "-q", "-m", "c")
    assert versions.latest_tag(repo) is None
    assert versions.version_tags(repo) == []


def test_read_text_at_version_and_in_working_tree(ds):
    old = versions.read_text(ds.path, "v1.0.0", layout.IMAGES_TSV)
    new = versions.read_text(ds.path, None, layout.IMAGES_TSV)
    assert old is not None and new is not None
    row = {line.split("\t")[0]: line for line in old.splitlines()}["102"]
    assert "T map" in row
    assert "Z map" in {line.split("\t")[0]: line for line in new.splitlines()}["102"]
    assert versions.read_text(ds.path, "v1.0.0", "no/such/file") is None
    assert versions.read_json(ds.path, None, "no/such.json") is None


def test_read_json_at_version(ds):
    sidecar = str(layout.image_sidecar(11, 102))
    assert versions.read_json(ds.path, "v1.0.0", sidecar)["map_type"] == "T map"
    assert versions.read_json(ds.path, "v1.1.0", sidecar)["map_type"] == "Z map"


def test_list_files_at_version_matches_working_tree(ds):
    tracked = versions.list_files(ds.path, "HEAD")
    on_disk = versions.list_files(ds.path, None)
    assert tracked == on_disk
    for iid in IMAGES:
        assert ds.image_path(iid) in tracked
    assert all(p.startswith("neurovault/") for p in tracked)
    assert layout.SPEC_FILE in versions.list_files(ds.path, "v1.0.0", ".nv-datalad")


def test_sidecars_at_each_version(ds):
    old = versions.image_sidecars(ds.path, "v1.0.0")
    new = versions.image_sidecars(ds.path)
    assert sorted(old) == sorted(new) == sorted(IMAGES)
    assert old[102]["map_type"] == "T map"
    assert new[102]["map_type"] == "Z map"
    assert old[101] == new[101]
    colls = versions.collection_sidecars(ds.path, "v1.0.0")
    assert sorted(colls) == [11, 12, 13]
    assert colls[11]["DOI"] == "10.1234/nv.col11"


def test_sidecars_read_with_a_constant_number_of_git_processes(ds, tmp_path):
    """Thousands of sidecars must not mean thousands of git processes: count real calls."""
    real_git = shutil.which("git")
    log = tmp_path / "calls.log"
    wrapper = tmp_path / "bin" / "git"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\necho "$@" >> "{log}"\nexec "{real_git}" "$@"\n')
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IEXEC)
    old_path = os.environ["PATH"]
    os.environ["PATH"] = f"{wrapper.parent}{os.pathsep}{old_path}"
    try:
        sidecars = versions.image_sidecars(ds.path, "v1.0.0")
    finally:
        os.environ["PATH"] = old_path
    calls = log.read_text().splitlines()
    assert len(sidecars) == len(IMAGES)
    assert sum("cat-file" in c for c in calls) == 1
    assert len(calls) <= 4, calls


def test_annex_key_from_git_and_working_tree(ds):
    sidecars = versions.image_sidecars(ds.path, "v1.0.0")
    for iid, record in sidecars.items():
        key = record["nv_datalad"]["key"]
        assert versions.annex_key(ds.path, "v1.0.0", ds.image_path(iid)) == key
        assert versions.annex_key(ds.path, None, ds.image_path(iid)) == key
    assert versions.annex_key(ds.path, "HEAD", str(layout.image_sidecar(11, 101))) is None
    assert versions.annex_key(ds.path, None, "missing.nii.gz") is None
    key = versions.annex_key(ds.path, None, ds.image_path(101))
    location = versions.content_path(ds.path, key)
    assert location is not None and location.read_bytes() == \
        (ds.path / ds.image_path(101)).read_bytes()


def test_dataset_id(ds, tmp_path):
    assert versions.dataset_id(ds.path) == ds.dataset_id
    (tmp_path / "plain").mkdir()
    with pytest.raises(DatasetError, match="not a DataLad dataset"):
        versions.dataset_id(tmp_path / "plain")


def test_not_a_repository(tmp_path):
    with pytest.raises(DatasetError, match="not a git repository"):
        versions.ensure_repository(tmp_path)
    with pytest.raises(DatasetError, match="does not exist"):
        versions.ensure_repository(tmp_path / "nope")
