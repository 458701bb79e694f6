"""Recovery after a killed build (``nv_datalad.dataset.recover``), leftover by leftover.

Each test copies a tiny committed dataset, leaves in it exactly what a build killed at one
point leaves (written here with git and git-annex by hand), runs ``recover`` and checks what
the next build would find: the files, the index, HEAD. These tests also serve
``tools/mutation.py recover`` (each mutant runs only this file).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from helpers import annex, git

from nv_datalad.dataset import layout, nesting
from nv_datalad.dataset.files import dump_json
from nv_datalad.dataset.recover import Recovery, recover
from nv_datalad.dataset.repo import create
from nv_datalad.derivatives.manifest import manifest_relpath
from nv_datalad.errors import DatasetError

C1 = "neurovault/collection_1"
IMG, SIDECAR = f"{C1}/image_10.nii.gz", f"{C1}/image_10_metadata.json"
NEW, NEW_SIDECAR = f"{C1}/image_11.nii.gz", f"{C1}/image_11_metadata.json"
RECORD = {"id": 10, "collection_id": 1, "name": "map", "nv_datalad": {"key": "K"}}


def _put(root: Path, rel: str, text: str | bytes) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """A committed dataset: one annexed image and its sidecar, the generated files."""
    root = tmp_path_factory.mktemp("template") / "ds"
    create(root)
    _put(root, IMG, b"\x1f\x8bten")
    _put(root, SIDECAR, dump_json(RECORD))
    _put(root, f"{C1}/collection_metadata.json", dump_json({"id": 1, "name": "one"}))
    for rel in (layout.IMAGES_TSV, layout.COLLECTIONS_TSV, layout.SPEC_FILE, layout.README,
                layout.CITATION, layout.CHANGES):
        _put(root, rel, f"{rel} as built\n")
    annex(root, "add", "-q", IMG)
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "v1")
    return root


@pytest.fixture
def ds(template, tmp_path) -> Path:
    root = tmp_path / "ds"
    shutil.copytree(template, root, symlinks=True)
    return root


def _head(root: Path) -> str:
    return git(root, "rev-parse", "HEAD").strip()


def _clean(root: Path) -> bool:
    return git(root, "status", "--porcelain", "--untracked-files=all") == ""


def _committed_subdataset(ds: Path, cid: int) -> tuple[str, Path]:
    """Collection ``cid`` as a subdataset registered and committed in ``ds``."""
    rel = nesting.subdataset_dir(cid)
    create(ds / rel)
    nesting.register(ds, [rel])
    git(ds, *nesting.QUIET_ADD, "add", "--", nesting.GITMODULES, rel)
    git(ds, "commit", "-q", "-m", "subdataset")
    return rel, ds / rel


def _new_image(root: Path, *, sidecar: str | None, stage_sidecar: bool = False) -> None:
    """image_11 annexed (``git annex add``: staged), and its sidecar as given."""
    _put(root, NEW, b"\x1f\x8beleven")
    annex(root, "add", "-q", NEW)
    if sidecar is not None:
        _put(root, NEW_SIDECAR, sidecar)
        if stage_sidecar:
            git(root, "add", NEW_SIDECAR)


def test_a_clean_dataset_needs_nothing_but_partial_downloads_go(ds):
    head = _head(ds)
    _put(ds, f"{layout.DOWNLOAD_TMP}/image_12.part", b"half")
    done = recover(ds)
    assert done == Recovery() and not done
    assert _head(ds) == head and _clean(ds)
    assert not (ds / layout.DOWNLOAD_TMP).exists()


@pytest.mark.parametrize("staged", [False, True])
def test_a_finished_import_is_committed_not_downloaded_again(ds, staged):
    head = _head(ds)
    sidecar = dump_json({**RECORD, "id": 11})
    _new_image(ds, sidecar=sidecar, stage_sidecar=staged)
    done = recover(ds)
    assert sorted(done.committed) == [NEW, NEW_SIDECAR]
    assert done.restored == [] and done.removed == []
    assert git(ds, "rev-parse", "HEAD~1").strip() == head
    assert git(ds, "log", "-1", "--format=%s").strip() == (
        "nv-datalad: keep 2 files an interrupted build had finished")
    assert _clean(ds) and (ds / NEW).read_bytes() == b"\x1f\x8beleven"
    assert (ds / NEW_SIDECAR).read_text() == sidecar


def test_an_image_whose_committed_sidecar_exists_is_a_finished_import(ds):
    """The sidecar was committed by an earlier checkpoint, the image is new in the index."""
    _put(ds, NEW_SIDECAR, dump_json({**RECORD, "id": 11}))
    git(ds, "add", NEW_SIDECAR)
    git(ds, "commit", "-q", "-m", "sidecar first")
    _new_image(ds, sidecar=None)
    assert recover(ds).committed == [NEW]
    assert _clean(ds)


@pytest.mark.parametrize("how", ["annexed", "untracked"])
def test_an_image_without_its_sidecar_is_removed(ds, how):
    head = _head(ds)
    if how == "annexed":
        _new_image(ds, sidecar=None)
    else:
        _put(ds, NEW, b"\x1f\x8bmoved in, never added")
    done = recover(ds)
    assert done == Recovery(removed=[NEW])
    assert not os.path.lexists(ds / NEW)
    assert git(ds, "ls-files", "--", NEW) == ""
    assert _head(ds) == head and _clean(ds)


@pytest.mark.parametrize("how", ["worktree", "index"])
def test_an_image_removed_for_replacement_comes_back(ds, how):
    key = annex(ds, "lookupkey", IMG).strip()
    if how == "index":
        git(ds, "rm", "-q", "--cached", "--", IMG)
    (ds / IMG).unlink()
    done = recover(ds)
    assert done.restored == [IMG] and not done.committed and not done.removed
    assert annex(ds, "lookupkey", IMG).strip() == key
    assert (ds / IMG).read_bytes() == b"\x1f\x8bten" and _clean(ds)


def test_a_refreshed_sidecar_not_committed_is_restored(ds):
    _put(ds, SIDECAR, dump_json({**RECORD, "name": "refreshed"}))
    assert recover(ds) == Recovery(restored=[SIDECAR])
    assert json.loads((ds / SIDECAR).read_text()) == RECORD and _clean(ds)


def test_nilearns_rewrite_of_a_sidecar_is_restored(ds):
    rewritten = {**RECORD, "relative_path": "neurovault/x", "absolute_path": "/home/u/x"}
    _put(ds, SIDECAR, json.dumps(rewritten))  # compact: not our format
    assert recover(ds) == Recovery(restored=[SIDECAR])
    assert (ds / SIDECAR).read_text() == dump_json(RECORD)


@pytest.mark.parametrize("text", [
    json.dumps({**RECORD, "name": "edited"}),  # another format and other values
    json.dumps({**RECORD, "relative_path": "x", "name": "edited"}),  # nilearn's keys, edited
    "not json at all",
    dump_json([1, 2]),  # our format, but no object
])
def test_a_sidecar_edited_by_a_person_stops_the_build(ds, text):
    head = _head(ds)
    _put(ds, SIDECAR, text)
    _put(ds, f"{layout.DOWNLOAD_TMP}/image_12.part", b"half")
    with pytest.raises(DatasetError) as err:
        recover(ds)
    assert str(err.value) == (
        f"{ds} has uncommitted changes nv-datalad did not make: {SIDECAR}; keep them with "
        f"`datalad save -d {ds}` or drop them with `git -C {ds} checkout -- PATH` / "
        "`git clean`, then build again")
    assert (ds / SIDECAR).read_text() == text and _head(ds) == head
    assert (ds / layout.DOWNLOAD_TMP / "image_12.part").is_file()  # nothing touched


def test_a_new_file_that_is_not_ours_stops_the_build_and_nothing_is_touched(ds):
    _new_image(ds, sidecar=None)  # would be removed
    for n in range(7):
        _put(ds, f"notes/{n}.txt", "mine")
    _put(ds, f"{C1}/image_12_metadata.json", '{"id": 12}')  # not our format
    with pytest.raises(DatasetError) as err:
        recover(ds)
    assert "did not make: " in str(err.value) and " and 3 more; keep them" in str(err.value)
    assert (ds / NEW).exists() and git(ds, "ls-files", "--", NEW).strip() == NEW


@pytest.mark.parametrize("n", [5, 6, 11])
def test_the_refusal_names_five_paths_and_counts_the_rest(ds, n):
    names = [f"notes/{i:02d}.txt" for i in range(n)]
    for rel in names:
        _put(ds, rel, "mine")
    with pytest.raises(DatasetError) as err:
        recover(ds)
    rest = f" and {n - 5} more" if n > 5 else ""
    assert f"did not make: {', '.join(names[:5])}{rest}; keep them" in str(err.value)


@pytest.mark.parametrize(("rel", "text"), [
    ("x", "a one-letter name"),
    ("todo.txt", "sorts after report.html"),
    (".env", "SECRET=1"),  # sorts before .gitattributes
    ("stats.json", dump_json({"a": 1})),  # our format, but not in a collection
    (f"{C1}/notes.txt", dump_json({"id": 1})),  # our format, but not a .json file
    (f"{C1}/image_12_metadata.json", '{\t"id": 12}'),  # a person's JSON
])
def test_a_persons_new_file_is_refused_by_name_and_kept(ds, rel, text):
    head = _head(ds)
    _put(ds, rel, text)
    with pytest.raises(DatasetError, match=f"did not make: {rel};"):
        recover(ds)
    assert (ds / rel).read_text() == text and _head(ds) == head


def test_a_new_collections_metadata_is_committed(ds):
    rel = "neurovault/collection_7/collection_metadata.json"
    _put(ds, rel, dump_json({"id": 7, "name": "seven"}))
    assert recover(ds) == Recovery(committed=[rel])
    assert _clean(ds)


def test_a_staged_image_given_up_after_a_full_disk_is_removed(ds):
    head = _head(ds)
    _new_image(ds, sidecar=None)
    (ds / NEW).unlink()  # `git annex add` staged it, then the build gave it up
    assert recover(ds) == Recovery(removed=[NEW])
    assert git(ds, "ls-files", "--", NEW) == "" and _head(ds) == head and _clean(ds)


def test_a_replacement_put_back_only_in_the_worktree_leaves_head_as_it_was(ds):
    """A full disk: the new version was staged, the old file put back, and no room was left
    to write the index. Recovery must not fail on having nothing to commit."""
    head, key = _head(ds), annex(ds, "lookupkey", IMG).strip()
    old = os.readlink(ds / IMG)
    (ds / IMG).unlink()
    _put(ds, IMG, b"\x1f\x8bnew ten")
    annex(ds, "add", "-q", IMG)
    (ds / IMG).unlink()
    os.symlink(old, ds / IMG)
    assert git(ds, "status", "--porcelain", "--", IMG).startswith("MM")
    recover(ds)
    assert _head(ds) == head and annex(ds, "lookupkey", IMG).strip() == key and _clean(ds)


@pytest.mark.parametrize("rel", [SIDECAR, layout.IMAGES_TSV])
def test_a_staged_refresh_is_restored_not_committed_or_deleted(ds, rel):
    head = _head(ds)
    before = (ds / rel).read_text()
    _put(ds, rel, dump_json({**RECORD, "name": "refreshed"}))
    git(ds, "add", "--", rel)  # a checkpoint's `git add`, killed before its commit
    assert recover(ds) == Recovery(restored=[rel])
    assert (ds / rel).read_text() == before and _head(ds) == head and _clean(ds)


def test_a_sidecar_a_person_reformatted_stops_the_build(ds):
    """Compact JSON with the same values and without nilearn's keys: not nilearn's rewrite,
    not our format, so a person's (kept, and the build refuses to start)."""
    _put(ds, SIDECAR, json.dumps(RECORD))
    with pytest.raises(DatasetError, match=f"did not make: {SIDECAR};"):
        recover(ds)
    assert (ds / SIDECAR).read_text() == json.dumps(RECORD)


@pytest.mark.parametrize("staged", [False, True])
def test_a_persons_edit_of_readme_is_refused_even_beside_a_finished_import(ds, staged):
    """Only an *uncommitted* build record shows a release was cut short: an edited old one
    (restored: records are ours) and a new finished import do not make README ours."""
    record = f"{layout.BUILDS_DIR}/old.json"
    _put(ds, record, "{}\n")
    git(ds, "add", record)
    git(ds, "commit", "-q", "-m", "record")
    _put(ds, record, '{"edited": 1}\n')
    if staged:
        git(ds, "add", record)
    _put(ds, f"{C1}/neurosynth_words_for_image_10.json", dump_json({"motor": 0.5}))
    _put(ds, layout.README, "my own words\n")
    with pytest.raises(DatasetError, match=f"did not make: {layout.README};"):
        recover(ds)
    assert (ds / layout.README).read_text() == "my own words\n"


@pytest.mark.parametrize("kind", ["committed", "restored", "removed"])
def test_recovery_of_one_kind_is_logged(ds, kind, caplog):
    if kind == "committed":
        _put(ds, f"{C1}/neurosynth_words_for_image_10.json", dump_json({"motor": 0.5}))
    elif kind == "restored":
        _put(ds, layout.IMAGES_TSV, "half written\n")
    else:
        _put(ds, NEW, b"\x1f\x8bno sidecar")
    with caplog.at_level("INFO", logger="nv_datalad.dataset.recover"):
        recover(ds)
    counts = {"committed": 0, "restored": 0, "removed": 0, kind: 1}
    assert caplog.messages == [
        "recovered from an interrupted build: {committed} files committed, {restored} "
        "restored, {removed} removed".format(**counts)]


def test_a_dataset_killed_before_its_first_commit_is_committed(tmp_path):
    root = tmp_path / "new"
    root.mkdir()
    git(root, "init", "-q")
    _put(root, ".gitattributes", "* annex.backend=SHA256E\n")
    _put(root, ".datalad/config", '[datalad "dataset"]\n\tid = x\n')
    done = recover(root)
    assert sorted(done.committed) == [".datalad/config", ".gitattributes"]
    assert _clean(root) and git(root, "ls-files").split() == [".datalad/config",
                                                              ".gitattributes"]


def test_a_git_annex_init_killed_after_the_uuid_is_finished_by_the_next_creation(tmp_path):
    """A killed ``git annex init`` can leave ``annex.uuid`` without ``annex.version``."""
    root = tmp_path / "new"
    create(root, description="first")
    git(root, "config", "--unset", "annex.version")
    create(root, description="first")
    assert git(root, "config", "annex.version").strip()
    assert "first" in git(root, "cat-file", "-p", "git-annex:uuid.log")


def test_generated_files_are_restored_and_derivatives_outside_a_run_removed(ds):
    for rel in (layout.IMAGES_TSV, layout.COLLECTIONS_TSV, layout.SPEC_FILE):
        _put(ds, rel, "half written\n")
    derived = [layout.REPORT, f"{layout.NEUROSYNTH_DIR}/word_frequencies.npz",
               f"{C1}/image_10_resampled.nii.gz", f"{C1}/image_10_resampled.json",
               manifest_relpath("rows\n"), ".datalad/runinfo/x.json"]
    for rel in derived:
        _put(ds, rel, "derived\n")
    git(ds, "add", "--", layout.REPORT)  # staged, never committed: removed too
    done = recover(ds)
    assert sorted(done.restored) == sorted([layout.IMAGES_TSV, layout.COLLECTIONS_TSV,
                                            layout.SPEC_FILE])
    assert sorted(done.removed) == sorted(derived) and done.committed == []
    assert (ds / layout.IMAGES_TSV).read_text() == f"{layout.IMAGES_TSV} as built\n"
    assert not any(os.path.lexists(ds / rel) for rel in derived) and _clean(ds)


def test_a_committed_derivative_changed_outside_a_run_is_restored(ds):
    _put(ds, layout.REPORT, "report as built\n")
    git(ds, "add", layout.REPORT)
    git(ds, "commit", "-q", "-m", "report")
    _put(ds, layout.REPORT, "half rewritten\n")
    assert recover(ds) == Recovery(restored=[layout.REPORT])
    assert (ds / layout.REPORT).read_text() == "report as built\n"


@pytest.mark.parametrize("rel", [layout.README, layout.CITATION, layout.CHANGES])
def test_release_files_are_ours_only_when_a_release_was_cut_short(ds, rel):
    _put(ds, rel, "edited\n")
    with pytest.raises(DatasetError, match=f"did not make: {rel};"):
        recover(ds)
    record = f"{layout.BUILDS_DIR}/2024-01-01T000000.json"
    _put(ds, record, dump_json({"version": "v1.1.0"}))
    done = recover(ds)
    assert done.restored == [rel] and done.removed == [record]
    assert (ds / rel).read_text() == f"{rel} as built\n" and _clean(ds)


def test_a_build_record_alone_is_removed_and_a_tracked_one_restored(ds):
    record = f"{layout.BUILDS_DIR}/old.json"
    _put(ds, record, "{}\n")
    git(ds, "add", record)
    git(ds, "commit", "-q", "-m", "record")
    _put(ds, record, '{"half": 1}\n')
    assert recover(ds) == Recovery(restored=[record])


def test_a_dataset_whose_creation_was_cut_short_is_committed(ds):
    _put(ds, ".datalad/extra", "x\n")
    _put(ds, ".datalad/staged", "y\n")
    git(ds, "add", ".datalad/staged")
    done = recover(ds)
    assert sorted(done.committed) == [".datalad/extra", ".datalad/staged"] and _clean(ds)


def test_a_modified_datalad_config_is_a_persons(ds):
    with open(ds / ".datalad/config", "a") as fh:
        fh.write("[x]\n\ty = 1\n")
    with pytest.raises(DatasetError, match=r"did not make: \.datalad/config;"):
        recover(ds)


def test_a_deleted_sidecar_or_new_words_file_is_judged_by_its_kind(ds):
    words = f"{C1}/neurosynth_words_for_image_10.json"
    _put(ds, words, dump_json({"motor": 0.5}))
    assert recover(ds) == Recovery(committed=[words])
    (ds / SIDECAR).unlink()
    with pytest.raises(DatasetError, match=f"did not make: {SIDECAR};"):
        recover(ds)


def test_a_finished_import_inside_a_journaled_subdataset_is_committed_there(ds):
    sub_rel, sub = _committed_subdataset(ds, 2)
    _put(ds, nesting.JOURNAL, "2\n")
    _put(sub, "image_21.nii.gz", b"\x1f\x8bsub")
    annex(sub, "add", "-q", "image_21.nii.gz")
    _put(sub, "image_21_metadata.json", dump_json({"id": 21, "collection_id": 2}))
    sub_head = _head(sub)
    done = recover(ds)
    assert sorted(done.committed) == [f"{sub_rel}/image_21.nii.gz",
                                      f"{sub_rel}/image_21_metadata.json"]
    assert git(sub, "rev-parse", "HEAD~1").strip() == sub_head and _clean(sub)
    assert git(ds, "ls-tree", "HEAD", sub_rel).split()[2] == _head(sub)  # pointer moved
    assert _clean(ds)


def test_a_subdataset_not_journaled_is_not_looked_into(ds):
    sub_rel, _ = _committed_subdataset(ds, 3)
    _put(ds / sub_rel, "notes.txt", "a person's, in a subdataset no build opened")
    assert recover(ds) == Recovery()
    assert (ds / sub_rel / "notes.txt").is_file()


@pytest.mark.parametrize("registered", [False, True])
def test_a_new_subdataset_a_build_made_is_registered_and_committed(ds, registered):
    sub_rel = nesting.subdataset_dir(4)
    create(ds / sub_rel)  # made, journaled, never committed in the dataset
    _put(ds, nesting.JOURNAL, "4\n")
    if registered:  # killed after .gitmodules was written, before its commit
        nesting.register(ds, [sub_rel])
    done = recover(ds)
    assert sorted(done.committed) == sorted([sub_rel, *[nesting.GITMODULES] * registered])
    assert nesting.registered(ds) == {sub_rel: git(ds / sub_rel, "config", "--file",
                                                   ".datalad/config", "datalad.dataset.id"
                                                   ).strip()}
    assert git(ds, "ls-tree", "HEAD", sub_rel).split()[1] == "commit" and _clean(ds)


def test_a_journaled_subdataset_with_a_stale_lock_or_none_at_all_is_recovered(ds):
    sub_rel, sub = _committed_subdataset(ds, 5)
    # 3 and 6: journaled, killed before their folders were made (3 sorts before 5)
    _put(ds, nesting.JOURNAL, "3\n5\n6\n")
    _put(sub, ".git/index.lock", "")  # the killed build's git held it
    _put(sub, "image_51.nii.gz", b"\x1f\x8bsub")  # downloaded, no sidecar yet
    done = recover(ds)
    assert done.removed == [f"{sub_rel}/image_51.nii.gz"]
    assert not (sub / ".git/index.lock").exists()
    assert not os.path.lexists(sub / "image_51.nii.gz")
