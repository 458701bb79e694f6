"""Reading a dataset at any revision (``nv_datalad.dataset.revision``) on a tiny git repository.

The repository is made by hand with plain git (three commits, annotated and lightweight tags at
fixed dates), so every expected value is known without asking the code under test. These
tests also serve ``tools/mutation.py revision`` (each mutant runs only this file).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import git

from nv_datalad.dataset import revision
from nv_datalad.errors import DatasetError

DATASET_ID = "5e1f0000-aaaa-4bbb-8ccc-000000000001"
SPEC_TEXT = "name: tiny\ndescription: Tiny maps.\nserver: embedded\n"
C3 = "neurovault/collection_3"
C8 = "neurovault/collection_8"


@dataclass(frozen=True)
class Tiny:
    """The repository and the facts its tests expect, all written down at creation."""

    root: Path
    first: str  # tagged v1.0.0 (annotated, 2021-03-05) and v1.0.1 (lightweight)
    second: str  # tagged v1.1.0 (lightweight): its commit date, 2022-06-07
    third: str  # untagged HEAD, 2023-01-02


def _write(root: Path, rel: str, data: object) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=2))


def _commit(root: Path, day: str, message: str) -> str:
    stamp = f"{day}T12:00:00+00:00"
    env = dict(os.environ, GIT_AUTHOR_DATE=stamp, GIT_COMMITTER_DATE=stamp)
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", str(root), "commit", "-q", "-m", message], check=True, env=env)
    return git(root, "rev-parse", "HEAD").strip()


def _tag(root: Path, name: str, rev: str, day: str | None = None) -> None:
    """An annotated tag dated ``day``, or a lightweight one (dated by its commit)."""
    if day is None:
        git(root, "tag", name, rev)
        return
    env = dict(os.environ, GIT_COMMITTER_DATE=f"{day}T08:00:00+00:00")
    subprocess.run(["git", "-C", str(root), "tag", "-a", "-m", name, name, rev], check=True,
                   env=env)


def image(iid: int, cid: int | None, **prov: str) -> dict:
    return {"id": iid, "collection_id": cid, "name": f"map {iid}", "nv_datalad": prov}


def make_tiny(root: Path) -> Tiny:
    """Three versions of a two-collection dataset, as a build would leave them in git."""
    root.mkdir(parents=True)
    git(root, "init", "-q")
    _write(root, ".datalad/config", f'[datalad "dataset"]\n\tid = {DATASET_ID}\n')
    _write(root, ".nv-datalad/spec.yaml", SPEC_TEXT)
    _write(root, f"{C3}/collection_metadata.json",
           {"name": "Three", "DOI": "10.5555/three", "authors": "Ann Lee, Bo Kim"})
    _write(root, f"{C3}/image_31_metadata.json",
           image(31, 3, server="http://127.0.0.1:5000", path=f"{C3}/image_31.nii.gz"))
    _write(root, f"{C8}/collection_metadata.json",
           {"name": "Eight", "paper_url": "https://paper.example/8"})
    _write(root, f"{C8}/image_81_metadata.json", image(81, None, path=f"{C8}/image_81.nii.gz"))
    first = _commit(root, "2021-03-04", "first")
    _tag(root, "v1.0.0", first, "2021-03-05")
    _tag(root, "v1.0.1", first)
    _write(root, f"{C3}/image_32_metadata.json",  # fetched before the layout had this path
           image(32, 3, server="embedded", path="old/place/image_32.nii.gz"))
    second = _commit(root, "2022-06-07", "second")
    _tag(root, "v1.1.0", second)
    _write(root, f"{C3}/image_33_metadata.json", image(33, 3))
    third = _commit(root, "2023-01-02", "third")
    return Tiny(root, first, second, third)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Tiny:
    return make_tiny(tmp_path_factory.mktemp("tiny") / "ds")


# -- refusing what is not a dataset or not a revision -----------------------------------------

def test_a_missing_directory_or_a_plain_one_is_not_a_dataset(tmp_path):
    with pytest.raises(DatasetError) as gone:
        revision.ensure_repository(tmp_path / "nowhere")
    assert str(gone.value) == (
        f"{tmp_path / 'nowhere'} is not a nv-datalad dataset (it does not exist or is not a "
        f"directory); pass -d PATH of a dataset, or build one with `nv-datalad build SPEC -d "
        f"{tmp_path / 'nowhere'}`")
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatasetError, match="does not exist or is not a directory"):
        revision.ensure_repository(tmp_path / "file")
    with pytest.raises(DatasetError, match=r"is not a nv-datalad dataset \(not a git repo"):
        revision.ensure_repository(tmp_path)


def test_the_repository_top_is_found_from_inside(tiny):
    assert revision.ensure_repository(tiny.root / C3) == tiny.root.resolve()


@pytest.mark.parametrize("rev", ["", "-v", "--all", "v1\nv2", "v1\0"])
def test_a_revision_git_would_misread_is_refused(tiny, rev):
    with pytest.raises(DatasetError, match=r"invalid version .*: expected a tag"):
        revision.resolve(tiny.root, rev)
    with pytest.raises(DatasetError, match="invalid version"):
        revision.tag_date(tiny.root, rev)


def test_revisions_resolve_to_full_commits(tiny):
    assert revision.resolve(tiny.root, "v1.0.0") == tiny.first  # annotated: its commit
    assert revision.resolve(tiny.root, "v1.1.0") == tiny.second
    assert revision.resolve(tiny.root, tiny.second[:8]) == tiny.second
    assert revision.resolve(tiny.root, "HEAD") == tiny.third
    assert revision.resolve(tiny.root, "HEAD~2") == tiny.first


def test_an_unknown_revision_names_the_known_versions(tiny, tmp_path):
    with pytest.raises(DatasetError) as err:
        revision.resolve(tiny.root, "v9.9.9")
    assert str(err.value) == (f"unknown version 'v9.9.9' in {tiny.root}: not a tag or commit "
                              "(known versions: v1.0.0, v1.0.1, v1.1.0)")
    git(tmp_path, "init", "-q")
    with pytest.raises(DatasetError, match=r"\(the dataset has no version tag\)$"):
        revision.resolve(tmp_path, "v1.0.0")


def test_a_failing_git_command_is_named(tiny):
    with pytest.raises(DatasetError, match=r"^git show -s failed in .*: fatal"):
        revision._git(tiny.root, "show", "-s", "no-such-rev")
    assert not revision._git(tiny.root, "show", "-s", "no-such-rev", check=False).ok


# -- tags and dates ------------------------------------------------------------------------------

def test_version_tags_sort_by_number_and_ignore_other_tags(tmp_path):
    root = tmp_path / "tags"
    root.mkdir()
    git(root, "init", "-q")
    git(root, "commit", "-q", "--allow-empty", "-m", "one")
    for name in ("v1.10.0", "v1.9.0", "v10.0.0", "v2.0.0", "v1.9.10", "v1.9.2", "vnext",
                 "v1.2", "1.0.0", "v1.0.0-rc1", "xv1.0.0"):
        git(root, "tag", name)
    assert revision.version_tags(root) == [
        "v1.9.0", "v1.9.2", "v1.9.10", "v1.10.0", "v2.0.0", "v10.0.0"]
    assert revision.latest_tag(root) == "v10.0.0"
    assert revision.version_tags(tmp_path / "nowhere") == []


def test_the_version_of_a_commit_is_the_highest_tag_at_or_before_it(tiny, tmp_path):
    assert revision.latest_tag(tiny.root) == "v1.1.0"
    assert revision.latest_tag(tiny.root, tiny.second) == "v1.1.0"
    assert revision.latest_tag(tiny.root, "v1.0.0") == "v1.0.1"
    git(tmp_path, "init", "-q")
    git(tmp_path, "commit", "-q", "--allow-empty", "-m", "untagged")
    assert revision.latest_tag(tmp_path) is None


def test_tag_dates_are_the_taggers_and_commit_dates_the_committers(tiny):
    assert revision.tag_date(tiny.root, "v1.0.0") == "2021-03-05"
    assert revision.tag_date(tiny.root, "v1.0.1") == "2021-03-04"
    assert revision.tag_date(tiny.root, "v1.1.0") == "2022-06-07"
    with pytest.raises(DatasetError, match=f"^unknown tag 'v7.0.0' in {tiny.root}$"):
        revision.tag_date(tiny.root, "v7.0.0")
    assert revision.commit_date(tiny.root, "HEAD") == "2023-01-02"
    assert revision.commit_date(tiny.root, "v1.0.0") == "2021-03-04"


# -- reading files at a revision or in the working tree ---------------------------------------

def test_many_files_are_read_at_a_revision_in_request_order(tiny):
    wanted = [f"{C3}/image_32_metadata.json", ".nv-datalad/spec.yaml", "missing.txt", C3,
              f"{C3}/image_31_metadata.json", ".nv-datalad"]
    got = revision.read_many(tiny.root, "v1.0.0", wanted)
    assert list(got) == wanted
    assert got == {
        f"{C3}/image_32_metadata.json": None,  # added after v1.0.0
        ".nv-datalad/spec.yaml": SPEC_TEXT.encode(),
        "missing.txt": None,
        C3: None,  # a tree is no file
        f"{C3}/image_31_metadata.json": (tiny.root / C3 / "image_31_metadata.json").read_bytes(),
        ".nv-datalad": None,
    }
    later = revision.read_many(tiny.root, "HEAD", [f"{C3}/image_32_metadata.json"])
    assert json.loads(later[f"{C3}/image_32_metadata.json"] or b"")["id"] == 32
    assert revision.read_many(tiny.root, "HEAD", []) == {}
    with pytest.raises(ValueError, match="path with a newline"):
        revision.read_many(tiny.root, "HEAD", ["a\nb"])


def test_batch_output_is_split_by_its_sizes_even_when_bodies_hold_newlines():
    raw = (b"aaa blob 5\nx\ny\nz\nbbb missing\nccc tree 3\nt\nt\nddd blob 0\n\n"
           b"eee commit 2\nc\n\nfff tag 1\nT\nggg blob 2\nok\n")
    assert revision._parse_cat_file_batch(raw, ["a", "b", "c", "d", "e", "f", "g"]) == {
        "a": b"x\ny\nz", "b": None, "c": None, "d": b"", "e": None, "f": None, "g": b"ok"}
    assert revision._parse_cat_file_batch(b"x ambiguous\nyyy blob 1\n1\n", ["x", "y"]) == {
        "x": None, "y": b"1"}


def test_the_working_tree_is_read_as_it_is_now(tiny, tmp_path):
    root = tmp_path / "wt"
    root.mkdir()
    (root / "a.txt").write_text("now")
    (root / "dir").mkdir()
    assert revision.read_many(root, None, ["a.txt", "gone.txt", "dir", "a.txt/under"]) == {
        "a.txt": b"now", "gone.txt": None, "dir": None, "a.txt/under": None}
    assert revision.read_text(root, None, "a.txt") == "now"
    assert revision.read_text(tiny.root, "v1.0.0", ".nv-datalad/spec.yaml") == SPEC_TEXT
    assert revision.read_text(tiny.root, "v1.0.0", "nope") is None


def test_the_recorded_spec_at_a_revision(tiny, tmp_path):
    assert revision.read_spec(tiny.root, "v1.0.0") == {
        "name": "tiny", "description": "Tiny maps.", "server": "embedded"}
    assert revision.read_spec(tiny.root) == revision.read_spec(tiny.root, "HEAD")
    root = tmp_path / "specs"
    root.mkdir()
    assert revision.read_spec(root) == {}
    _write(root, ".nv-datalad/spec.yaml", "- a list\n- is no spec\n")
    assert revision.read_spec(root) == {}
    _write(root, ".nv-datalad/spec.yaml", "name: [unclosed\n")
    with pytest.raises(DatasetError, match=r"^\.nv-datalad/spec\.yaml is not valid YAML: "):
        revision.read_spec(root)
    git(root, "init", "-q")
    sha = _commit(root, "2020-01-01", "bad spec")
    with pytest.raises(DatasetError, match=rf"^\.nv-datalad/spec\.yaml at {sha[:12]} is not "):
        revision.read_spec(root, sha)


def test_json_objects_are_read_or_refused_by_name(tmp_path):
    _write(tmp_path, "ok.json", '{"a": 1}')
    _write(tmp_path, "bad.json", "{nope")
    _write(tmp_path, "list.json", "[1, 2]")
    assert revision.read_json(tmp_path, None, "ok.json") == {"a": 1}
    assert revision.read_json(tmp_path, None, "gone.json") is None
    with pytest.raises(DatasetError, match=r"^bad\.json is not valid JSON: "):
        revision.read_json(tmp_path, None, "bad.json")
    with pytest.raises(DatasetError, match=r"^list\.json does not hold a JSON object$"):
        revision.read_json(tmp_path, None, "list.json")
    git(tmp_path, "init", "-q")
    sha = _commit(tmp_path, "2020-01-01", "json")
    with pytest.raises(DatasetError, match=rf"^{sha}:bad\.json is not valid JSON: "):
        revision.read_json(tmp_path, sha, "bad.json")


def test_files_are_listed_at_a_revision_and_in_the_working_tree(tiny, tmp_path):
    at_first = [f"{C3}/collection_metadata.json", f"{C3}/image_31_metadata.json",
                f"{C8}/collection_metadata.json", f"{C8}/image_81_metadata.json"]
    assert revision.list_files(tiny.root, "v1.0.0") == at_first
    assert revision.list_files(tiny.root, "v1.0.0", "/neurovault/") == at_first
    assert revision.list_files(tiny.root, "v1.0.0", "") == [
        ".datalad/config", ".nv-datalad/spec.yaml", *at_first]
    assert revision.list_files(tiny.root, "HEAD", C8) == at_first[2:]
    assert revision.list_files(tiny.root, None, C8) == at_first[2:]
    root = tmp_path / "wt"
    _write(root, "neurovault/collection_1/a.json", "{}")
    _write(root, "neurovault/b.txt", "b")
    _write(root, "neurovault/.git/x", "x")
    _write(root, "neurovault/.datalad/y", "y")
    _write(root, "top.txt", "t")
    (root / "neurovault/collection_1/image_1.nii.gz").symlink_to("../../.git/annex/objects/K")
    assert revision.list_files(root, None) == [
        "neurovault/b.txt", "neurovault/collection_1/a.json",
        "neurovault/collection_1/image_1.nii.gz"]  # a dangling symlink: content not here
    assert revision.list_files(root, None, "") == [
        "neurovault/b.txt", "neurovault/collection_1/a.json",
        "neurovault/collection_1/image_1.nii.gz", "top.txt"]
    assert revision.list_files(root, None, "top.txt") == ["top.txt"]
    assert revision.list_files(root, None, "neurovault/collection_1/image_1.nii.gz") == [
        "neurovault/collection_1/image_1.nii.gz"]
    assert revision.list_files(root, None, "elsewhere") == []


def test_sidecar_paths_are_picked_from_a_listing_by_the_layout():
    files = ["neurovault/collection_3/image_31_metadata.json",
             "neurovault/collection_3/image_31.nii.gz",
             "neurovault/collection_3/collection_metadata.json",
             "neurovault/collection_x/image_5_metadata.json",
             "neurovault/image_6_metadata.json",
             "neurovault/collection_4/sub/image_7_metadata.json",
             "other/collection_4/image_8_metadata.json",
             "other/collection_4/collection_metadata.json",
             "derivatives/collection_4/image_9_metadata.json",  # sorts before neurovault
             "derivatives/collection_4/collection_metadata.json",
             "neurovault/collection_7/.gitattributes",  # sorts before collection_metadata
             "neurovault/collection_y/collection_metadata.json",
             "neurovault/collection_9/image_91_metadata.json"]
    assert revision.image_sidecar_paths(files) == {
        31: "neurovault/collection_3/image_31_metadata.json",
        91: "neurovault/collection_9/image_91_metadata.json"}
    assert revision.collection_sidecar_paths(files) == {
        3: "neurovault/collection_3/collection_metadata.json"}


def test_sidecars_at_each_version(tiny):
    assert sorted(revision.image_sidecars(tiny.root, "v1.0.0")) == [31, 81]
    assert sorted(revision.image_sidecars(tiny.root, tiny.second)) == [31, 32, 81]
    head = revision.image_sidecars(tiny.root)
    assert list(head) == [31, 32, 33, 81] and head[33] == image(33, 3)
    assert revision.collection_sidecars(tiny.root, "v1.0.0") == {
        3: {"name": "Three", "DOI": "10.5555/three", "authors": "Ann Lee, Bo Kim"},
        8: {"name": "Eight", "paper_url": "https://paper.example/8"}}


def test_one_unreadable_sidecar_is_logged_and_left_out(tmp_path, caplog):
    base = "neurovault/collection_1"
    _write(tmp_path, f"{base}/image_1_metadata.json", {"id": 1})
    _write(tmp_path, f"{base}/image_2_metadata.json", "{broken")
    _write(tmp_path, f"{base}/image_3_metadata.json", "[3]")
    (tmp_path / base / "image_4_metadata.json").write_bytes(b'{"name": "\xff"}')
    _write(tmp_path, f"{base}/image_5_metadata.json", '{"id": 5}, {"id": 6}')
    with caplog.at_level(logging.WARNING, logger="nv_datalad.dataset.revision"):
        assert revision.image_sidecars(tmp_path) == {1: {"id": 1}}
    assert [r.getMessage().split(":")[0] for r in caplog.records] == [
        f"skipping {base}/image_2_metadata.json", f"skipping {base}/image_3_metadata.json",
        f"skipping {base}/image_4_metadata.json", f"skipping {base}/image_5_metadata.json"]
    assert "not a JSON object" in caplog.records[1].getMessage()


def test_sidecars_read_together_share_their_key_strings(tmp_path):
    """Tables are built from every sidecar at once: at 100,000 images a private copy of each
    key per sidecar was ~3 KB per image of the build's peak memory."""
    base = "neurovault/collection_1"
    for iid in (1, 2, 3):
        _write(tmp_path, f"{base}/image_{iid}_metadata.json",
               {"id": iid, "modify_date": f"2026-0{iid}-01", "nv_datalad": {"key": f"K{iid}"}})
    sidecars = revision.image_sidecars(tmp_path)
    assert [s["id"] for s in sidecars.values()] == [1, 2, 3]
    keys = [[k for d in (s, s["nv_datalad"]) for k in d] for s in sidecars.values()]
    assert all(a is b for first, other in itertools.pairwise(keys)
               for a, b in zip(first, other, strict=True))


# -- annex keys and the dataset id -----------------------------------------------------------

KEY = "MD5E-s5--0123456789abcdef0123456789abcdef.nii.gz"


@pytest.mark.parametrize(("target", "key"), [
    (f"../../.git/annex/objects/Xy/Zw/{KEY}/{KEY}", KEY),
    (f"/annex/objects/{KEY}\n".encode(), KEY),
    (f"  /annex/objects/{KEY}  ", KEY),
    ("../../.git/annex/objects/Xy/Zw/VURL--http&c%%x/VURL--http&c%%x", "VURL--http&c%%x"),
    ("../somewhere/else/" + KEY, None),
    ("/annex/objects/not-a-key", None),
    ("/annex/objects/md5e-s5--lower", None),
    ("/annex/objects/" + KEY + " trailing", None),
    (b"/annex/objects/" + KEY.encode() + b"\xff", None),
    (b"/annex/objects/" + b"A" * 4090, None),
    (b"", None),
])
def test_the_annex_key_is_read_from_a_link_or_a_pointer(target, key):
    assert revision.key_from_link(target) == key


def test_a_key_just_under_the_size_limit_is_still_read():
    name = "SHA256E-s1--" + "a" * (4096 - len("/annex/objects/SHA256E-s1--"))
    assert revision.key_from_link(f"/annex/objects/{name}".encode()) == name


@pytest.fixture(scope="module")
def annexed(tmp_path_factory) -> Path:
    """A git-annex repository: one locked file, one unlocked with content, one unlocked
    pointer whose content is absent, one plain git file."""
    root = tmp_path_factory.mktemp("annexed")
    git(root, "init", "-q")
    git(root, "annex", "init", "-q", "tiny")
    (root / "locked.nii").write_bytes(b"locked")
    (root / "unlocked.nii").write_bytes(b"unlocked")
    (root / "plain.txt").write_text("plain")
    git(root, "annex", "add", "-q", "locked.nii", "unlocked.nii")
    git(root, "annex", "unlock", "-q", "unlocked.nii")
    git(root, "add", "plain.txt")
    git(root, "commit", "-q", "-m", "files")
    return root


def test_annex_keys_at_a_revision_and_in_the_working_tree(annexed):
    locked = revision.annex_key(annexed, "HEAD", "locked.nii")
    unlocked = revision.annex_key(annexed, "HEAD", "unlocked.nii")
    assert locked == git(annexed, "annex", "lookupkey", "locked.nii").strip()
    assert unlocked == git(annexed, "annex", "lookupkey", "unlocked.nii").strip()
    assert locked.startswith("SHA256E-s6--") and unlocked.startswith("SHA256E-s8--")
    assert revision.annex_key(annexed, None, "locked.nii") == locked  # symlink
    assert revision.annex_key(annexed, None, "unlocked.nii") == unlocked  # content: asked
    assert revision.annex_key(annexed, "HEAD", "plain.txt") is None
    assert revision.annex_key(annexed, None, "plain.txt") is None
    assert revision.annex_key(annexed, "HEAD", "gone.nii") is None
    assert revision.annex_key(annexed, None, "gone.nii") is None


def test_an_unlocked_pointer_without_content_gives_its_key(tmp_path):
    (tmp_path / "p.nii").write_bytes(f"/annex/objects/{KEY}\n".encode())
    assert revision.annex_key(tmp_path, None, "p.nii") == KEY


def test_content_is_found_by_key_when_present(annexed):
    locked = revision.annex_key(annexed, "HEAD", "locked.nii") or ""
    path = revision.content_path(annexed, locked)
    assert path is not None and path.is_absolute() and path.read_bytes() == b"locked"
    assert revision.content_path(annexed, KEY) is None  # a key never added
    assert revision.content_path(annexed, "--not-a-key") is None


def test_the_dataset_id_is_datalads(tiny, tmp_path):
    assert revision.dataset_id(tiny.root) == DATASET_ID
    with pytest.raises(DatasetError, match=r"not a DataLad dataset: no \.datalad/config"):
        revision.dataset_id(tmp_path)
    _write(tmp_path, ".datalad/config", '[datalad "dataset"]\n\tversion = 1\n')
    with pytest.raises(DatasetError, match=r"\.datalad/config has no datalad\.dataset\.id$"):
        revision.dataset_id(tmp_path)


# -- collection subdatasets --------------------------------------------------------------------

@pytest.fixture(scope="module")
def nested(tmp_path_factory) -> tuple[Path, str, str]:
    """A superdataset whose ``collection_5`` is a subdataset (a gitlink, as a build leaves it):
    (root, the superdataset's commit, the subdataset's commit in it)."""
    root = tmp_path_factory.mktemp("nested") / "super"
    root.mkdir()
    git(root, "init", "-q")
    sub = root / "neurovault/collection_5"
    sub.mkdir(parents=True)
    git(sub, "init", "-q")
    _write(sub, "collection_metadata.json", {"name": "Five"})
    _write(sub, "image_51_metadata.json", image(51, 5))
    sub_sha = _commit(sub, "2021-01-01", "sub")
    _write(root, "neurovault/collection_6/image_61_metadata.json", image(61, 6))
    _write(root, ".gitmodules", '[submodule "neurovault/collection_5"]\n\tpath = '
                                "neurovault/collection_5\n\turl = ./neurovault/collection_5\n")
    _write(root, ".nv-datalad/spec.yaml", SPEC_TEXT)
    git(root, "-c", "advice.addEmbeddedRepo=false", "add", "-A")
    sha = _commit(root, "2021-01-02", "super")
    return root, sha, sub_sha


def test_files_inside_a_subdataset_are_read_at_a_revision(nested):
    root, sha, _ = nested
    five = "neurovault/collection_5"
    got = revision.read_many(root, sha, [f"{five}/image_51_metadata.json", ".nv-datalad/spec.yaml",
                                         f"{five}/gone.json", "neurovault/collection_6/"
                                         "image_61_metadata.json"])
    assert json.loads(got[f"{five}/image_51_metadata.json"] or b"") == image(51, 5)
    assert got[".nv-datalad/spec.yaml"] == SPEC_TEXT.encode()
    assert got[f"{five}/gone.json"] is None
    assert next(iter(got)) == f"{five}/image_51_metadata.json"
    assert revision.list_files(root, sha) == [
        f"{five}/collection_metadata.json", f"{five}/image_51_metadata.json",
        "neurovault/collection_6/image_61_metadata.json"]
    assert revision.list_files(root, sha, "neurovault/collection_6") == [
        "neurovault/collection_6/image_61_metadata.json"]
    assert sorted(revision.image_sidecars(root, sha)) == [51, 61]
    assert revision.collection_sidecars(root, sha) == {5: {"name": "Five"}}


def test_a_subdataset_missing_or_behind_is_named_with_the_command_that_gets_it(nested,
                                                                             tmp_path):
    root, sha, sub_sha = nested
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(root), str(clone))  # subdatasets not installed
    with pytest.raises(DatasetError) as err:
        revision.list_files(clone, None)
    assert str(err.value) == (
        f"subdataset neurovault/collection_5 of {clone} is not installed here; install them "
        f"without content (`datalad get -n -r -d {clone}`), then run this again")
    with pytest.raises(DatasetError, match=r"subdataset neurovault/collection_5 of .* is not "
                                           r"installed here"):
        revision.read_many(clone, sha, ["neurovault/collection_5/image_51_metadata.json"])
    assert revision.list_files(clone, None, ".nv-datalad") == [".nv-datalad/spec.yaml"]
    (clone / "neurovault/collection_5").rmdir()
    git(clone / "neurovault", "init", "-q", "collection_5")  # installed, without the commit
    with pytest.raises(DatasetError) as behind:
        revision.list_files(clone, sha)
    assert str(behind.value) == (
        f"subdataset neurovault/collection_5 of {clone} does not have commit {sub_sha[:12]}; "
        f"update it with `datalad update --how merge -r -d {clone}`")


def test_a_listing_at_a_revision_descends_into_a_subdataset_its_prefix_covers(nested):
    root, sha, _ = nested
    five = "neurovault/collection_5"
    inside = [f"{five}/collection_metadata.json", f"{five}/image_51_metadata.json"]
    assert revision.list_files(root, sha, five) == inside
    assert revision.list_files(root, sha, "") == sorted([
        ".gitmodules", ".nv-datalad/spec.yaml", *inside,
        "neurovault/collection_6/image_61_metadata.json"])
    assert revision.list_files(root, sha, ".nv-datalad") == [".nv-datalad/spec.yaml"]


def test_a_listing_of_one_collection_names_its_subdataset_when_not_installed(nested, tmp_path):
    root, _, _ = nested
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", str(root), str(clone))
    with pytest.raises(DatasetError, match=r"subdataset neurovault/collection_5 of .* is not "
                                           r"installed here"):
        revision.list_files(clone, None, "neurovault/collection_5")


def test_reading_many_skips_what_is_missing_and_goes_on(tiny):
    good = "neurovault/collection_3/image_31_metadata.json"
    got = revision.read_json_many(tiny.root, "v1.0.0", ["neurovault/collection_3/gone.json",
                                                        good])
    assert list(got) == [good] and got[good]["id"] == 31


def test_content_inside_a_subdataset_is_found_by_the_path_it_was_at(tmp_path):
    root = tmp_path / "super"
    sub = root / "neurovault/collection_5"
    sub.mkdir(parents=True)
    for repo in (root, sub):
        git(repo, "init", "-q")
        git(repo, "annex", "init", "-q", "tiny")
    (sub / "image_51.nii.gz").write_bytes(b"fifty-one")
    git(sub, "annex", "add", "-q", "image_51.nii.gz")
    key = git(sub, "annex", "lookupkey", "image_51.nii.gz").strip()
    path = revision.content_path(root, key, "neurovault/collection_5/image_51.nii.gz")
    assert path is not None and path.is_absolute() and path.read_bytes() == b"fifty-one"
    assert revision.content_path(root, key) is None  # the superdataset does not hold it
