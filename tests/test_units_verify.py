"""``nv-datalad verify`` (``nv_datalad.consumers.verify``) on a tiny dataset against the emulator.

The dataset is written by hand from the emulator's own records, bytes and URLs (one collection
in the dataset, one in a subdataset), so it matches the server until a test changes one thing:
a sidecar's date or size, an image the server never had, a corrupted or dropped file. These
tests also serve ``tools/mutation.py verify`` (each mutant runs only this file).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import annex, git

from nv_datalad.consumers.verify import VerifyReport, _compare, recorded_server, verify
from nv_datalad.dataset import layout, nesting
from nv_datalad.dataset.files import dump_json
from nv_datalad.dataset.repo import create
from nv_datalad.errors import DatasetError

TOP, SUB = (406, 416), 965  # two images of collection 57 in the dataset, one of 80 in a sub


@dataclass(frozen=True)
class Tiny:
    root: Path
    paths: dict[int, str]  # image id -> its file in the dataset


@pytest.fixture(scope="module")
def emu():
    from nv_datalad.emulator import Emulator

    with Emulator(corpus="bench", port=0, n_images=6, tiny=True) as e:
        yield e


def _write_image(repo: Path, inner: str, record: dict, data: bytes) -> None:
    path = repo / inner
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    sidecar = str(Path(inner).parent / f"image_{record['id']}_metadata.json")
    (repo / sidecar).write_text(dump_json({**record, "nv_datalad": {"server": "x"}}))
    annex(repo, "add", "-q", inner)
    annex(repo, "registerurl", annex(repo, "lookupkey", inner).strip(), record["file"])


@pytest.fixture(scope="module")
def template(emu, tmp_path_factory) -> Tiny:
    root = tmp_path_factory.mktemp("verify") / "ds"
    create(root)
    (root / layout.SPEC_FILE).parent.mkdir()
    (root / layout.SPEC_FILE).write_text(f"name: tiny\nserver: {emu.url}\n")
    paths = {}
    for iid in TOP:
        rel = str(layout.image_file(emu.images[iid]["collection_id"], iid))
        _write_image(root, rel, emu.images[iid], emu.image_bytes(iid))
        paths[iid] = rel
    sub_rel = nesting.subdataset_dir(emu.images[SUB]["collection_id"])
    create(root / sub_rel)
    _write_image(root / sub_rel, f"image_{SUB}.nii.gz", emu.images[SUB], emu.image_bytes(SUB))
    git(root / sub_rel, "add", "-A")
    git(root / sub_rel, "commit", "-q", "-m", "images")
    paths[SUB] = f"{sub_rel}/image_{SUB}.nii.gz"
    nesting.register(root, [sub_rel])
    git(root, *nesting.QUIET_ADD, "add", "-A")
    git(root, "commit", "-q", "-m", "v1")
    return Tiny(root, paths)


@pytest.fixture
def ds(template, tmp_path) -> Tiny:
    root = tmp_path / "ds"
    shutil.copytree(template.root, root, symlinks=True)
    return Tiny(root, template.paths)


def _sidecar(ds: Tiny, iid: int) -> Path:
    return ds.root / Path(ds.paths[iid]).parent / f"image_{iid}_metadata.json"


def _edit(ds: Tiny, iid: int, **fields) -> None:
    path = _sidecar(ds, iid)
    path.write_text(dump_json({**json.loads(path.read_text()), **fields}))


def _corrupt(repo: Path, inner: str) -> None:
    obj = repo / annex(repo, "contentlocation", annex(repo, "lookupkey", inner).strip()).strip()
    obj.chmod(0o644)
    obj.write_bytes(b"7 bytes")


# -- the report itself ---------------------------------------------------------------------

def test_a_report_with_nothing_found_is_ok_and_exits_0():
    report = VerifyReport(checked=4)
    assert (report.drift, report.ok, report.exit_status) == (False, True, 0)
    assert report.lines() == ["checked 4 images against the server",
                              "ok: the dataset matches the server and its content is intact"]


@pytest.mark.parametrize(("field", "value"), [
    ("updated", [(1, "a", "b")]), ("size_changed", [(1, 2, 3)]), ("vanished", [1]),
    ("unreachable", ["x"]), ("corrupted", ["p: bad"]), ("missing", ["p"])])
def test_any_one_problem_exits_1(field, value):
    report = VerifyReport(**{field: value})
    assert not report.ok and report.exit_status == 1
    assert report.drift is (field in ("updated", "size_changed", "vanished", "unreachable"))
    assert not report.lines()[-1].startswith("ok:")


def test_a_server_that_cannot_be_asked_exits_2_even_with_problems():
    report = VerifyReport(server_error="down", corrupted=["p: bad"])
    assert report.exit_status == 2 and not report.drift
    assert report.lines() == [
        "server: down; only the content was checked", "corrupted: p: bad",
        "to repair content: `datalad get PATH ...` fetches it again from the web and checks "
        "it against its key"]
    assert VerifyReport(server_error="down").exit_status == 2


def test_every_problem_is_listed_with_what_clears_it():
    report = VerifyReport(checked=9, updated=[(1, "2020", "2021")], size_changed=[(2, 10, 11)],
                          vanished=[3, 4], unreachable=["collection 5: timeout"],
                          corrupted=["a.nii: size"], missing=["b.nii"])
    assert report.lines() == [
        "checked 9 images against the server",
        "drift: image 1 modify_date 2020 → 2021 on the server",
        "drift: image 2 file_size 10 → 11 on the server",
        "drift: image 3 is gone from the server", "drift: image 4 is gone from the server",
        "unreachable: collection 5: timeout",
        "corrupted: a.nii: size", "missing: b.nii has no local content",
        "to update changed images: `nv-datalad build SPEC --mode overwrite`",
        "vanished images are kept on purpose; `nv-datalad build SPEC --prune` removes them",
        "to repair content: `datalad get PATH ...` fetches it again from the web and checks "
        "it against its key"]
    assert VerifyReport(size_changed=[(2, 1, 3)]).lines()[-1].startswith("to update changed")
    assert VerifyReport(missing=["b"]).lines()[-1].startswith("to repair content")


@pytest.mark.parametrize(("local", "remote", "updated", "sized"), [
    ({"modify_date": "2020-01-01T00:00:00Z", "file_size": 5},
     {"modify_date": "2021-01-01T00:00:00Z", "file_size": 5}, True, False),
    ({"modify_date": "2021-01-01T00:00:00Z", "file_size": 5},
     {"modify_date": "2021-01-01T00:00:00Z", "file_size": 6}, False, True),
    ({"modify_date": "2022-01-01T00:00:00Z"}, {"modify_date": "2021-01-01T00:00:00Z"},
     False, False),
    ({"modify_date": "garbage"}, {"modify_date": "2021-01-01T00:00:00Z"}, False, False),
    ({"modify_date": "2020-01-01T00:00:00Z"}, {"modify_date": None}, False, False),
])
def test_an_image_drifts_when_the_server_is_newer_or_its_size_differs(local, remote, updated,
                                                                      sized):
    report = VerifyReport()
    _compare(report, 7, local, remote)
    assert report.updated == ([(7, local["modify_date"], remote["modify_date"])]
                              if updated else [])
    assert report.size_changed == ([(7, local.get("file_size"), remote.get("file_size"))]
                                   if sized else [])
    _compare(report, 8, local, None)
    assert report.vanished == [8]


# -- against the server and the disk --------------------------------------------------------

def test_a_dataset_that_matches_the_server_passes(ds):
    report = verify(ds.root)
    assert report == VerifyReport(checked=3) and report.exit_status == 0


def test_drift_is_named_per_image(ds, emu):
    newer_here = TOP[1]
    _edit(ds, TOP[0], modify_date="2000-01-01T00:00:00Z")
    _edit(ds, SUB, file_size=1)
    _edit(ds, newer_here, modify_date="2999-01-01T00:00:00Z")  # not older: no drift
    for cid, iid in ((emu.images[TOP[0]]["collection_id"], 999), (999999, 998)):
        rel = layout.image_file(cid, iid)
        (ds.root / rel).parent.mkdir(parents=True, exist_ok=True)
        (ds.root / rel).write_bytes(b"x")
        (ds.root / layout.image_sidecar(cid, iid)).write_text(dump_json(
            {"id": iid, "collection_id": cid}))
    (ds.root / layout.image_sidecar(57, 997)).write_text(dump_json({"id": 997}))  # no file
    report = verify(ds.root, fsck=False)
    assert report.checked == 5
    assert report.updated == [(TOP[0], "2000-01-01T00:00:00Z", emu.images[TOP[0]]["modify_date"])]
    assert report.size_changed == [(SUB, 1, emu.images[SUB]["file_size"])]
    assert report.vanished == [999, 998]  # the collection order: 57, then 999999
    assert report.unreachable == [] and report.exit_status == 1


def test_corrupted_and_missing_content_is_named_in_the_dataset_and_its_subdatasets(ds):
    sub = ds.root / Path(ds.paths[SUB]).parent
    _corrupt(ds.root, ds.paths[TOP[0]])
    annex(sub, "drop", "-q", "--force", Path(ds.paths[SUB]).name)
    report = verify(ds.root)
    assert [c.split(": ", 1)[0] for c in report.corrupted] == [ds.paths[TOP[0]]]
    path = ds.paths[TOP[0]]  # then git-annex's own words, which name the file again
    assert report.corrupted[0].startswith(f"{path}: {path}: Bad file size (")
    assert report.missing == [ds.paths[SUB]]  # the corrupted one is not also "missing"
    assert report.exit_status == 1 and not report.drift
    assert verify(ds.root, fsck=False) == VerifyReport(checked=3)


def test_a_corrupted_file_inside_a_subdataset_is_named_by_its_dataset_path(ds):
    sub = ds.root / Path(ds.paths[SUB]).parent
    _corrupt(sub, Path(ds.paths[SUB]).name)
    assert [c.split(": ", 1)[0] for c in verify(ds.root).corrupted] == [ds.paths[SUB]]


@pytest.mark.parametrize("setting", ["keep_content: false", "content: register"])
def test_absent_content_is_expected_when_the_spec_does_not_keep_it(ds, emu, setting):
    (ds.root / layout.SPEC_FILE).write_text(f"name: tiny\nserver: {emu.url}\n{setting}\n")
    annex(ds.root, "drop", "-q", "--force", ds.paths[TOP[1]])
    assert verify(ds.root).missing == []


def test_a_server_that_answers_with_errors_leaves_only_the_content_checked(ds, emu):
    _corrupt(ds.root, ds.paths[TOP[0]])
    report = verify(ds.root, server=f"{emu.url}/nothing-here")
    assert report.server_error.startswith("the server answers with an error")
    assert report.exit_status == 2 and len(report.corrupted) == 1 and report.checked == 3


def test_what_is_not_a_dataset_is_refused_and_the_recorded_server_read(ds, tmp_path):
    with pytest.raises(DatasetError, match="is not a nv-datalad dataset"):
        verify(tmp_path)
    (ds.root / layout.SPEC_FILE).write_text("name: tiny\n")
    assert recorded_server(ds.root) == "https://neurovault.org"
    (ds.root / layout.SPEC_FILE).unlink()
    with pytest.raises(DatasetError, match=r"has no \.nv-datalad/spec\.yaml; is it a nv-datalad"):
        recorded_server(ds.root)


def test_a_collection_the_server_refuses_is_unreachable_and_the_rest_still_compared(ds, emu):
    private = emu.add_collection(n_images=1, private=True)
    public = emu.add_collection(n_images=1)  # listed after the private one
    assert public > private
    (later,) = [i for i, r in emu.images.items() if r["collection_id"] == public]
    for cid, iid, record in ((private, 990, {"id": 990, "collection_id": private}),
                             (public, later, {**emu.images[later],
                                              "modify_date": "2000-01-01T00:00:00Z"})):
        (ds.root / layout.image_file(cid, iid)).parent.mkdir(parents=True)
        (ds.root / layout.image_file(cid, iid)).write_bytes(b"x")
        (ds.root / layout.image_sidecar(cid, iid)).write_text(dump_json(record))
    report = verify(ds.root, fsck=False)
    assert len(report.unreachable) == 1 and f"/collections/{private}/" in report.unreachable[0]
    assert [u for u, _, _ in report.updated] == [later] and report.vanished == []
    assert report.exit_status == 1


def test_only_absent_images_count_as_missing(ds):
    other = "neurovault/collection_57/notes.bin"
    (ds.root / other).write_bytes(b"not an image")
    annex(ds.root, "add", "-q", "--force-large", other)  # annexed, though not an image
    annex(ds.root, "drop", "-q", "--force", other)
    assert verify(ds.root).missing == []


def test_content_download_written_out_in_the_spec_keeps_content(ds, emu):
    (ds.root / layout.SPEC_FILE).write_text(
        f"name: tiny\nserver: {emu.url}\ncontent: download\nkeep_content: true\n")
    annex(ds.root, "drop", "-q", "--force", ds.paths[TOP[1]])
    assert verify(ds.root).missing == [ds.paths[TOP[1]]]
