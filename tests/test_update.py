"""Versioned updates (issue 5): the pure planner, then overwrite builds against a mutating
emulator, ``diff``, ``verify`` and the archive remote."""

from __future__ import annotations

import json
import subprocess

import pytest
from helpers import (
    annex,
    build,
    clone,
    git,
    head,
    image_file,
    image_ids,
    key_of,
    nv,
    sidecar,
    tags,
    write_spec,
)

from nv_datalad.dataset.annex import WEB_UUID
from nv_datalad.pipeline.plan import Change, make_plan, next_version, settle
from nv_datalad.pipeline.select import Selected

# -- the planner, without git --------------------------------------------------------------


def _sel(iid, date, size=10, url=None):
    image = {"id": iid, "collection_id": 1, "modify_date": date, "file_size": size,
             "file": url or f"https://nv/media/images/1/{iid}.nii.gz"}
    return Selected(image, {"id": 1})


def _local(iid, date, size=10, url=None):
    url = url or f"https://nv/media/images/1/{iid}.nii.gz"
    return {"id": iid, "collection_id": 1, "modify_date": date, "file_size": size, "file": url,
            "nv_datalad": {"source_url": url}}


def test_planner_classifies_every_kind_of_change():
    local = {
        1: _local(1, "2020-01-01T00:00:00Z"),
        2: _local(2, "2020-01-01T00:00:00Z"),
        3: _local(3, "2020-01-01T00:00:00Z", size=10),
        4: _local(4, "2020-01-01T00:00:00Z"),
        5: _local(5, "2020-01-01T00:00:00Z"),
        6: _local(6, "2020-01-01T00:00:00Z"),
    }
    selection = [
        _sel(1, "2020-01-01T01:00:00+01:00"),  # same instant, other style: unchanged
        _sel(2, "2021-01-01T00:00:00Z"),  # newer, same file: ask the server
        _sel(3, "2021-01-01T00:00:00Z", size=11),  # newer and another size: content
        _sel(4, "2019-01-01T00:00:00Z"),  # older (clock trouble): unchanged
        _sel(7, "2021-01-01T00:00:00Z"),  # new
    ]
    plan = make_plan(selection, local, mode="overwrite", still_on_server={5: False, 6: True})
    got = {p.image_id: p.change for p in plan.items}
    assert got == {1: Change.UNCHANGED, 2: Change.CHECK, 3: Change.CONTENT,
                   4: Change.UNCHANGED, 5: Change.VANISHED, 6: Change.UNSELECTED, 7: Change.NEW}
    (check,) = plan.of(Change.CHECK)
    assert settle(check, False).change is Change.METADATA
    assert settle(check, True).change is Change.CONTENT
    assert settle(check, None).change is Change.CONTENT  # unknown: download and compare keys


def test_download_new_leaves_existing_images_alone():
    """Newer on the server: download_new leaves the image alone, but says it is outdated
    (not "unchanged"); an image whose date did not move is unchanged."""
    local = {2: _local(2, "2020-01-01T00:00:00Z"), 3: _local(3, "2020-01-01T00:00:00Z")}
    plan = make_plan([_sel(2, "2024-01-01T00:00:00Z", size=99), _sel(3, "2020-01-01T00:00:00Z")],
                     local, mode="download_new")
    assert [p.change for p in plan.items] == [Change.OUTDATED, Change.UNCHANGED]


def test_recheck_forces_a_content_check():
    local = {2: _local(2, "2020-01-01T00:00:00Z")}
    plan = make_plan([_sel(2, "2020-01-01T00:00:00Z")], local, mode="overwrite", recheck=True)
    assert [p.change for p in plan.items] == [Change.CHECK]


@pytest.mark.parametrize(("previous", "spec", "content", "expected"), [
    (None, False, True, "v1.0.0"),
    ("v1.2.3", True, True, "v2.0.0"),
    ("v1.2.3", False, True, "v1.3.0"),
    ("v1.2.3", False, False, "v1.2.4"),
])
def test_semantic_versions(previous, spec, content, expected):
    assert next_version(previous, spec_changed=spec, content_changed=content) == expected


# -- overwrite against the emulator ----------------------------------------------------------


@pytest.fixture(scope="module")
def updated(tmp_path_factory):
    """Build; change 3 files, edit 2 records, delete 1 image, add a collection; rebuild."""
    from nv_datalad.emulator import Emulator

    tmp = tmp_path_factory.mktemp("updated")
    with Emulator(corpus="demo", port=0) as emu:
        archive = tmp / "archive"
        spec = write_spec(tmp, emu.url, mode="overwrite", archive=str(archive))
        ds = tmp / "ds"
        assert nv("build", spec, "-d", ds) == 0
        ids = sorted(image_ids(ds))
        content, meta, deleted = ids[0:3], ids[3:5], ids[5]
        old = {i: (key_of(ds, i), emu.image_bytes(i)) for i in content}
        old_dates = {i: sidecar(ds, i)["modify_date"] for i in meta}
        for i in content:
            emu.mutate_content(i)
        for i in meta:
            emu.mutate_metadata(i)
        emu.delete_image(deleted)
        new_collection = emu.add_collection(n_images=3)
        v1 = head(ds)
        assert nv("verify", "-d", ds, "--no-fsck") == 1  # drift before the update
        emu.reset_counters()
        assert nv("build", spec, "-d", ds) == 0
        yield {
            "emu": emu, "ds": ds, "spec": spec, "content": content, "meta": meta,
            "deleted": deleted, "new_collection": new_collection, "old": old,
            "old_dates": old_dates, "v1": v1, "archive": archive,
            "downloads": dict(emu.downloads),
        }


def test_only_changed_and_new_files_are_downloaded(updated):
    emu = updated["emu"]
    new_ids = {i for i, r in emu.images.items()
               if r.get("collection_id") == updated["new_collection"]}
    assert len(new_ids) == 3  # add_collection(n_images=3): default-selectable Z maps
    assert new_ids <= image_ids(updated["ds"])
    assert set(updated["downloads"]) == set(updated["content"]) | new_ids
    assert all(n == 1 for n in updated["downloads"].values())


def test_changed_files_have_new_keys_and_bytes(updated):
    ds, emu = updated["ds"], updated["emu"]
    for iid in updated["content"]:
        old_key, old_bytes = updated["old"][iid]
        assert key_of(ds, iid) != old_key
        assert image_file(ds, iid).read_bytes() == emu.image_bytes(iid) != old_bytes
        meta = json.loads(annex(ds, "metadata", "--json", str(image_file(ds, iid).relative_to(ds))))
        assert meta["fields"]["modify_date"] == [emu.images[iid]["modify_date"]]
        # the old key no longer claims the web has it
        where = json.loads(annex(ds, "whereis", "--json", "--key", old_key))
        assert not any(w["uuid"] == WEB_UUID for w in where["whereis"])


def test_metadata_edits_refresh_sidecars_without_downloads(updated):
    ds, emu = updated["ds"], updated["emu"]
    for iid in updated["meta"]:
        sc = sidecar(ds, iid)
        assert sc["modify_date"] == emu.images[iid]["modify_date"] != updated["old_dates"][iid]
        assert iid not in updated["downloads"]


def test_deleted_image_is_kept_and_reported(updated):
    ds = updated["ds"]
    assert updated["deleted"] in image_ids(ds)
    changes = (ds / "CHANGES.md").read_text()
    assert f"image {updated['deleted']} " in changes.split("## v1.0.0")[0]
    assert "Vanished" in changes


def test_one_new_tag_and_changes_entry(updated):
    ds = updated["ds"]
    assert tags(ds) == ["v1.0.0", "v1.1.0"]
    entry = (ds / "CHANGES.md").read_text().split("## v1.0.0")[0]
    for iid in [*updated["content"], *updated["meta"]]:
        assert f"image {iid} " in entry
    assert "→" in entry  # old → new dates
    assert git(ds, "status", "--porcelain") == ""


def test_diff_reports_the_mutations(updated, capsys):
    ds = updated["ds"]
    capsys.readouterr()
    assert nv("diff", "-d", ds, "--json") == 0
    d = json.loads(capsys.readouterr().out)
    assert (d["old"], d["new"]) == ("v1.0.0", "HEAD")
    assert d["content_changed"] == sorted(updated["content"])
    assert d["metadata_only"] == sorted(updated["meta"])
    assert d["removed"] == []
    assert d["added"] == sorted(i for i, r in updated["emu"].images.items()
                                if r["collection_id"] == updated["new_collection"])
    assert len(d["added"]) == 3


def test_verify_is_clean_after_the_update_except_the_deleted_image(updated, capsys):
    capsys.readouterr()
    assert nv("verify", "-d", updated["ds"]) == 1
    out = capsys.readouterr().out
    assert f"image {updated['deleted']} is gone" in out
    assert "modify_date" not in out


def test_no_change_rebuild_makes_no_commit(updated):
    ds, emu = updated["ds"], updated["emu"]
    before = (head(ds), tags(ds))
    emu.reset_counters()
    assert nv("build", updated["spec"], "-d", ds) == 0
    assert (head(ds), tags(ds)) == before
    assert sum(emu.downloads.values()) == 0


def _clone_at(ds, path, tag):
    clone(ds, path)
    git(path, "config", "annex.security.allowed-ip-addresses", "127.0.0.1")
    git(path, "checkout", "-q", tag)


def test_old_version_is_retrievable_from_the_archive(updated, tmp_path):
    ds = updated["ds"]
    repo = tmp_path / "clone"
    _clone_at(ds, repo, "v1.0.0")
    iid = updated["content"][0]
    rel = str(image_file(repo, iid).relative_to(repo))
    annex(ds, "drop", "--force", "--key", updated["old"][iid][0])  # origin lost it too
    # a directory remote's path is local: a clone enables it once (the README says how)
    out = annex(repo, "enableremote", "nv-archive", f"directory={updated['archive']}")
    safe_id = out.split("--safe", 1)[1].split()[0]  # git-annex asks to confirm the location
    annex(repo, "verifyremote", "nv-archive", "--safe", safe_id)
    annex(repo, "get", rel)
    assert (repo / rel).read_bytes() == updated["old"][iid][1]


def test_load_reads_old_metadata_at_an_old_tag(updated):
    import nv_datalad

    ds = updated["ds"]
    now = nv_datalad.load(ds)
    old = nv_datalad.load(ds, version="v1.0.0")
    assert len(now.images) == len(image_ids(ds)) == len(now.collections_meta)
    dates_now = {m["id"]: m["modify_date"] for m in now.images_meta}
    dates_old = {m["id"]: m["modify_date"] for m in old.images_meta}
    for iid in updated["meta"]:
        assert dates_old[iid] == updated["old_dates"][iid] != dates_now[iid]
    assert updated["new_collection"] not in {m["collection_id"] for m in old.images_meta}


def test_changed_source_gets_a_new_derivative_and_a_ria_archive_serves_the_old_bytes(
        emulator, tmp_path):
    """In the build that fetches a changed source, its derivative is made again; with
    ``archive: ria+file://...`` a plain `datalad clone` finds the old bytes itself."""
    import datalad.api as dl

    spec, ds = build(tmp_path, emulator.url, mode="overwrite", max_images=2,
                     resample={"voxel_size": 3}, archive=f"ria+file://{tmp_path / 'store'}")
    iid = min(image_ids(ds))
    (derived,) = (ds / "neurovault").glob(f"*/image_{iid}_resampled.json")
    assert json.loads(derived.read_text())["source_key"] == key_of(ds, iid)
    before = derived.with_suffix(".nii.gz").read_bytes()
    old_key, old_bytes = key_of(ds, iid), emulator.image_bytes(iid)
    emulator.mutate_content(iid)
    assert nv("build", spec, "-d", ds) == 0
    assert json.loads(derived.read_text())["source_key"] == key_of(ds, iid)
    assert derived.with_suffix(".nii.gz").read_bytes() != before
    assert tags(ds) == ["v1.0.0", "v1.1.0"]
    assert git(ds, "status", "--porcelain") == ""
    annex(ds, "drop", "--force", "--key", old_key)  # only the store has it now
    repo = clone(ds, tmp_path / "clone")
    git(repo, "checkout", "-q", "v1.0.0")
    rel = str(image_file(repo, iid).relative_to(repo))
    dl.get(path=str(repo / rel), dataset=str(repo), result_renderer="disabled")
    assert (repo / rel).read_bytes() == old_bytes


def test_an_interrupted_update_converges_and_without_archive_its_old_version_is_gone(
        emulator, tmp_path):
    """A build killed after removing a changed image's old file but before adding the new
    one leaves the image missing from the tree; the next build restores and updates it.
    Without an archive, the old version's file then says it is gone (not a checksum error)."""
    spec, ds = build(tmp_path, emulator.url, mode="overwrite", max_images=2)
    iid = min(image_ids(ds))
    rel = str(image_file(ds, iid).relative_to(ds))
    old_key = key_of(ds, iid)
    emulator.mutate_content(iid)
    git(ds, "rm", "-q", "--cached", rel)  # the state the killed build left behind
    (ds / rel).unlink()
    assert nv("build", spec, "-d", ds) == 0
    assert image_file(ds, iid).read_bytes() == emulator.image_bytes(iid)
    assert git(ds, "status", "--porcelain") == ""
    assert tags(ds) == ["v1.0.0", "v1.1.0"]
    annex(ds, "drop", "--force", "--key", old_key)
    repo = tmp_path / "clone"
    _clone_at(ds, repo, "v1.0.0")
    with pytest.raises(subprocess.CalledProcessError) as refused:
        annex(repo, "get", rel)
    assert refused.value.returncode != 0
    text = refused.value.stdout + refused.value.stderr
    assert "verification" not in text.lower() and "checksum" not in text.lower()
    assert "no known copies" in text.lower() or "not available" in text.lower() \
        or "no other repository" in text.lower()


def test_recheck_downloads_everything_and_changes_nothing_when_nothing_changed(
        emulator, tmp_path):
    spec, ds = build(tmp_path, emulator.url, mode="overwrite", max_images=3)
    before = (head(ds), tags(ds))
    emulator.reset_counters()
    assert nv("build", spec, "-d", ds, "--recheck") == 0
    assert set(emulator.downloads) == image_ids(ds)  # every file was fetched and hashed
    assert (head(ds), tags(ds)) == before  # same keys: no commit, no tag
    assert git(ds, "status", "--porcelain") == ""
    annex(ds, "fsck", "--fast", "--quiet")
    for iid in image_ids(ds):  # the web still vouches for every key
        rel = str(image_file(ds, iid).relative_to(ds))
        where = json.loads(annex(ds, "whereis", "--json", rel))
        assert any(w["uuid"] == WEB_UUID for w in where["whereis"])
