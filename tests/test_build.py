"""``nv-datalad build`` against the emulator, with real git-annex and DataLad (issue 4)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import (
    annex,
    git,
    head,
    image_file,
    image_ids,
    key_of,
    nilearn_ids,
    nv,
    sidecar,
    tags,
    write_spec,
)

from nv_datalad.dataset.annex import WEB_UUID


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """One dataset built from the default terms, shared by read-only checks."""
    from nv_datalad.emulator import Emulator

    tmp = tmp_path_factory.mktemp("built")
    with Emulator(corpus="demo", port=0) as emu:
        spec = write_spec(tmp, emu.url)
        assert nv("build", spec, "-d", tmp / "ds") == 0
        yield emu, tmp / "ds"


def test_default_selection_equals_nilearn(built, tmp_path, monkeypatch):
    emu, ds = built
    assert image_ids(ds) == nilearn_ids(emu, tmp_path, monkeypatch, max_images=None)


FILTER_SPECS = [
    pytest.param({"images": {"terms": {"map_type": "Z map"}}}, {"map_type": "Z map"}, id="z"),
    pytest.param(
        {"images": {"terms": {"analysis_level": {"in": ["group", "meta-analysis"]}}}},
        "analysis_level_in", id="in"),
    pytest.param(
        {"images": {"terms": {"cognitive_paradigm_cogatlas": {"pattern": "(?i).*motor"}}}},
        "motor", id="pattern"),
    pytest.param({"collections": {"terms": {"DOI": {"not_null": True}}}},
                 "doi", id="collection-doi"),
    pytest.param({"images": {"use_default_terms": False, "terms": {}}},
                 "everything", id="no-default-terms"),
    pytest.param({"images": {"terms": {"number_of_subjects": {"ge": 20}}}},
                 "subjects", id="ge"),
]


def _nilearn_kwargs(case):
    from nilearn.datasets import neurovault as n

    basic = n.basic_image_terms()
    if case == {"map_type": "Z map"}:
        return {"image_terms": {**basic, "map_type": "Z map"}}
    if case == "analysis_level_in":
        return {"image_terms": {**basic, "analysis_level": n.IsIn("group", "meta-analysis")}}
    if case == "motor":
        return {"image_terms": {**basic,
                                "cognitive_paradigm_cogatlas": n.Pattern("(?i).*motor")}}
    if case == "doi":
        return {"collection_terms": {"DOI": n.NotNull()}}
    if case == "everything":
        return {"image_terms": {}}
    if case == "subjects":
        return {"image_terms": {**basic, "number_of_subjects": n.GreaterOrEqual(20)}}
    raise AssertionError(case)


@pytest.mark.parametrize(("fields", "case"), FILTER_SPECS)
def test_filtered_selection_equals_nilearn(shared_emulator, tmp_path, monkeypatch, fields, case):
    spec = write_spec(tmp_path, shared_emulator.url, content="register", **fields)
    assert nv("build", spec, "-d", tmp_path / "ds") == 0
    expected = nilearn_ids(shared_emulator, tmp_path / "nl", monkeypatch, max_images=None,
                           **_nilearn_kwargs(case))
    assert expected, "the oracle selected nothing: the case proves nothing"
    assert image_ids(tmp_path / "ds") == expected


def test_images_are_annexed_with_web_urls_and_metadata(built):
    emu, ds = built
    ids = image_ids(ds)
    for iid in sorted(ids)[:5]:
        path = image_file(ds, iid)
        assert path.is_symlink(), "images must be annexed (locked) files"
        url = emu.images[iid]["file"]
        whereis = json.loads(annex(ds, "whereis", "--json", str(path.relative_to(ds))))
        web = [w for w in whereis["whereis"] if w["uuid"] == WEB_UUID]
        assert web and url in web[0]["urls"]
        assert path.read_bytes() == emu.image_bytes(iid)
    z_maps = {int(Path(p).name.split("_")[1].split(".")[0])
              for p in annex(ds, "find", "--metadata", "map_type=Z map").split()}
    assert z_maps == {i for i in ids if emu.images[i]["map_type"] == "Z map"}
    assert z_maps  # the demo corpus has Z maps
    subprocess.run(["git", "annex", "fsck", "--fast", "--quiet"], cwd=ds, check=True)
    assert git(ds, "status", "--porcelain") == ""


def test_layout_tables_and_version(built):
    emu, ds = built
    ids = image_ids(ds)
    for name in ("README.md", "CITATION.cff", "CHANGES.md", "images.tsv", "collections.tsv",
                 ".nv-datalad/spec.yaml"):
        assert (ds / name).is_file(), name
    rows = (ds / "images.tsv").read_text().splitlines()
    assert len(rows) == len(ids) + 1
    assert [int(r.split("\t")[0]) for r in rows[1:]] == sorted(ids)
    (record,) = (ds / ".nv-datalad" / "builds").glob("*.json")
    data = json.loads(record.read_text())
    assert data["version"] == "v1.0.0" and data["counts"]["new"] == len(ids)
    assert "git-annex" in data["tools"]
    assert tags(ds) == ["v1.0.0"]
    assert git(ds, "cat-file", "-t", "v1.0.0").strip() == "tag"  # annotated
    some = sorted(ids)[0]
    sc = sidecar(ds, some)
    assert sc["modify_date"] == emu.images[some]["modify_date"]
    assert sc["nv_datalad"]["source_url"] == emu.images[some]["file"]
    assert sc["nv_datalad"]["key"] == key_of(ds, some)


def test_uncompressed_upload_keeps_its_extension(built):
    import nibabel

    emu, ds = built
    nii = [i for i in image_ids(ds) if emu.images[i]["file"].endswith(".nii")]
    assert nii, "the demo corpus must include an uncompressed .nii upload in the selection"
    for iid in nii:
        path = image_file(ds, iid)
        assert path.name == f"image_{iid}.nii"
        assert nibabel.load(path).shape


def test_rebuild_changes_nothing_and_downloads_nothing(built):
    emu, ds = built
    before = (head(ds), tags(ds))
    emu.reset_counters()
    spec = ds.parent / "test-ds.yaml"
    assert nv("build", spec, "-d", ds) == 0
    assert nv("build", spec, "-d", ds, "--mode", "overwrite") == 0
    assert (head(ds), tags(ds)) == before
    assert sum(emu.downloads.values()) == 0
    assert emu.counters["file_get"] == 0


def test_clone_and_get_from_the_web(built, tmp_path):
    import datalad.api as dl

    emu, ds = built
    clone = tmp_path / "clone"
    dl.clone(source=str(ds), path=str(clone), result_renderer="disabled")
    git(clone, "config", "annex.security.allowed-ip-addresses", "127.0.0.1")
    picked = sorted(image_ids(clone))[:3]
    rels = [str(image_file(clone, i).relative_to(clone)) for i in picked]
    subprocess.run(["git", "annex", "get", "--from", "web", *rels], cwd=clone, check=True,
                   capture_output=True)
    for iid, rel in zip(picked, rels, strict=True):
        assert (clone / rel).read_bytes() == emu.image_bytes(iid)


def test_nilearn_reads_the_dataset_offline(built, tmp_path):
    """After `datalad get`, nilearn's offline mode finds the images (in a clone, because
    nilearn rewrites the sidecars it reads)."""
    import datalad.api as dl
    from nilearn.datasets import fetch_neurovault

    _, ds = built
    clone = tmp_path / "clone"
    dl.clone(source=str(ds), path=str(clone), result_renderer="disabled")
    dl.get(path=str(clone / "neurovault"), dataset=str(clone), result_renderer="disabled")
    data = fetch_neurovault(mode="offline", data_dir=str(clone), max_images=None, verbose=0)
    gz = {i for i in image_ids(ds) if image_file(ds, i).name.endswith(".nii.gz")}
    # nilearn looks for image_<id>.nii.gz only: an uncompressed upload is kept as .nii here,
    # which nilearn's offline mode cannot see (documented difference).
    assert {m["id"] for m in data.images_meta} == gz


def test_bad_spec_exits_2_and_writes_nothing(tmp_path, capsys):
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: bad\nimages:\n  terms:\n    map_type: {equals: Z map}\n")
    assert nv("build", spec, "-d", tmp_path / "ds") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "bad.yaml:4" in err and "images.terms.map_type" in err and "equals" in err
    assert not (tmp_path / "ds").exists()


def test_failed_downloads_exit_1_and_are_retried(emulator, tmp_path, capsys):
    spec = write_spec(tmp_path, emulator.url)
    emulator.set_faults(error_rate=1.0, paths="/media/")
    assert nv("build", spec, "-d", tmp_path / "ds") == 1
    out = capsys.readouterr()
    assert "failed" in out.out
    assert image_ids(tmp_path / "ds") == set()
    (record,) = (tmp_path / "ds" / ".nv-datalad" / "builds").glob("*.json")
    assert json.loads(record.read_text())["failures"]
    emulator.set_faults()
    assert nv("build", spec, "-d", tmp_path / "ds") == 0
    assert image_ids(tmp_path / "ds")
    assert git(tmp_path / "ds", "status", "--porcelain") == ""
    assert tags(tmp_path / "ds") == ["v1.0.0", "v1.1.0"]


def test_max_images_takes_the_lowest_ids(shared_emulator, tmp_path):
    spec = write_spec(tmp_path, shared_emulator.url, max_images=5, content="register")
    assert nv("build", spec, "-d", tmp_path / "ds") == 0
    everything = write_spec(tmp_path, shared_emulator.url, name="all", content="register")
    assert nv("build", everything, "-d", tmp_path / "all", "--dry-run") == 0
    ids = sorted(image_ids(tmp_path / "ds"))
    assert len(ids) == 5
    assert nv("build", everything, "-d", tmp_path / "all") == 0
    assert ids == sorted(image_ids(tmp_path / "all"))[:5]


def test_dry_run_prints_the_plan_and_writes_nothing(shared_emulator, tmp_path, capsys):
    spec = write_spec(tmp_path, shared_emulator.url)
    assert nv("build", spec, "-d", tmp_path / "ds", "--dry-run") == 0
    out = capsys.readouterr().out
    assert out.startswith("plan: new ")
    assert not (tmp_path / "ds").exists()


def test_a_second_build_waits_for_the_lock(shared_emulator, tmp_path, capsys):
    spec = write_spec(tmp_path, shared_emulator.url, content="register", max_images=2)
    assert nv("build", spec, "-d", tmp_path / "ds") == 0
    lock = tmp_path / "ds" / ".git" / "nv-datalad.lock"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        lock.write_text(str(sleeper.pid))
        assert nv("build", spec, "-d", tmp_path / "ds") == 2
        assert "another nv-datalad build" in capsys.readouterr().err
    finally:
        sleeper.kill()
        sleeper.wait()
    assert nv("build", spec, "-d", tmp_path / "ds") == 0  # a dead owner's lock is taken over


def test_offline_mode_rebuilds_from_the_dataset(built, tmp_path):
    """No network at all: the selection, tables and README come from what the dataset holds."""
    import datalad.api as dl

    emu, ds = built
    clone = tmp_path / "clone"
    dl.clone(source=str(ds), path=str(clone), result_renderer="disabled")
    requests_before = sum(emu.counters.values())
    spec = write_spec(tmp_path, "http://127.0.0.1:9", mode="offline",
                      images={"terms": {"map_type": "Z map"}})
    assert nv("build", spec, "-d", clone, "--dry-run") == 0
    assert nv("build", spec, "-d", clone) == 0
    assert sum(emu.counters.values()) == requests_before  # the server was never asked
    assert image_ids(clone) == image_ids(ds)  # offline never adds or removes images
    assert tags(clone)[-1] == "v2.0.0"  # a different question: a major version
    assert "map_type: Z map" in (clone / ".nv-datalad" / "spec.yaml").read_text()
    assert git(clone, "status", "--porcelain") == ""


def test_interrupted_build_resumes_to_the_same_result(emulator, tmp_path):
    """Kill a slow build after its first checkpoint; the next build converges."""
    spec = write_spec(tmp_path, emulator.url)
    ds = tmp_path / "ds"
    emulator.set_network(latency=0.15)
    env = dict(os.environ)
    proc = subprocess.Popen(
        [sys.executable, "-m", "nv_datalad.cli", "build", str(spec), "-d", str(ds),
         "--checkpoint", "8", "-J", "2"], env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline:
        log = subprocess.run(["git", "-C", str(ds), "log", "--oneline"], capture_output=True,
                             text=True).stdout
        if "checkpoint" in log:
            break
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    assert "checkpoint" in log, "the build never reached a checkpoint"
    emulator.set_network()
    assert nv("build", spec, "-d", ds) == 0
    reference = tmp_path / "ref"
    assert nv("build", spec, "-d", reference) == 0
    assert image_ids(ds) == image_ids(reference)
    for iid in image_ids(ds):
        assert key_of(ds, iid) == key_of(reference, iid)
    assert git(ds, "status", "--porcelain") == ""
    subprocess.run(["git", "annex", "fsck", "--fast", "--quiet"], cwd=ds, check=True)
    assert tags(ds) == ["v1.0.0"]


def test_loopback_is_allowed_by_ip_only_for_this_dataset(shared_emulator, tmp_path):
    """`localhost` is allowed as its loopback IPs, never as `all`, and only in this dataset."""
    port = shared_emulator.url.rsplit(":", 1)[1]
    spec = write_spec(tmp_path, f"http://localhost:{port}", max_images=2)
    ds = tmp_path / "ds"
    assert nv("build", spec, "-d", ds) == 0
    assert len(image_ids(ds)) == 2
    allowed = git(ds, "config", "--get", "annex.security.allowed-ip-addresses").split()
    assert "127.0.0.1" in allowed and "all" not in allowed
    assert subprocess.run(["git", "config", "--global", "--get",
                           "annex.security.allowed-ip-addresses"],
                          capture_output=True, text=True).stdout == ""


def test_truncated_and_failing_file_bodies_never_become_content(emulator, tmp_path):
    """Bodies cut off mid-way are retried; what still fails is reported, never annexed."""
    spec = write_spec(tmp_path, emulator.url)
    emulator.set_faults(truncate_rate=0.3, error_rate=0.1, paths="/media/")
    ds = tmp_path / "ds"
    status = nv("build", spec, "-d", ds)
    emulator.set_faults()
    assert status in (0, 1)
    for iid in image_ids(ds):
        assert image_file(ds, iid).read_bytes() == emulator.image_bytes(iid)
    assert nv("build", spec, "-d", ds) == 0  # the next build completes the set
    assert image_ids(ds) == expected_default_selection(emulator, ds)
    subprocess.run(["git", "annex", "fsck", "--quiet"], cwd=ds, check=True)


def expected_default_selection(emulator, ds):
    """The default selection, computed from the emulator's records with our own filters."""
    from nv_datalad.neurovault.client import normalise_nulls
    from nv_datalad.spec.model import parse_spec

    spec = parse_spec(f"name: x\nserver: {emulator.url}\nmax_images: null\n")
    col_ok, img_ok = spec.collection_predicate(), spec.image_predicate()
    cols = {c: r for c, r in emulator.collections.items() if not r.get("private")}
    return {i for i, r in emulator.images.items()
            if r["collection_id"] in cols and col_ok(normalise_nulls(cols[r["collection_id"]]))
            and img_ok(normalise_nulls(r))}

