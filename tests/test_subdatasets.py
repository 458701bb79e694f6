"""``subdatasets: per-collection``: one DataLad subdataset per collection under a superdataset.

Everything a user does with a one-repository dataset must work the same (same paths, same
images, same keys), through real DataLad clients: ``datalad subdatasets``, ``clone``, ``get``,
nilearn's offline mode. The build opens only the subdatasets of collections that changed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import annexed_images, build, datalad, git, head, nv, tags, write_spec

import nv_datalad
from nv_datalad.dataset import nesting

CLI = [sys.executable, "-m", "nv_datalad.cli"]


def _subdataset_heads(ds: Path) -> dict[str, str]:
    return {str(sub.relative_to(ds)): head(sub) for sub in nesting.installed(ds)}


@pytest.fixture(scope="module")
def nested(shared_emulator, tmp_path_factory) -> Path:
    """The demo corpus's default selection built per collection (read-only)."""
    _, ds = build(tmp_path_factory.mktemp("nested"), shared_emulator.url,
                  subdatasets="per-collection")
    return ds


def test_a_per_collection_build_equals_a_single_repository_build(nested, built):
    """Same images at the same paths with the same keys and sidecars; each collection is a
    DataLad dataset of its own, listed by `datalad subdatasets`, and nothing is uncommitted."""
    mine, theirs = annexed_images(nested), annexed_images(built)
    assert mine.keys() == theirs.keys()
    for iid, (path, key, sidecar) in mine.items():
        assert (path, key) == theirs[iid][:2]
        assert sidecar == theirs[iid][2]
    listed = json.loads("[" + ",".join(datalad(
        "-f", "json", "subdatasets", "-d", str(nested)).split("\n")[:-1]) + "]")
    collections = {str(Path(p).parent) for p, _, _ in mine.values()}
    assert {str(Path(r["path"]).relative_to(nested)) for r in listed} == collections
    ids = {r["gitmodule_datalad-id"] for r in listed}
    assert len(ids) == len(collections)  # each its own dataset id
    for rel in collections:
        assert git(nested / rel, "status", "--porcelain") == ""
        assert not list((nested / rel).glob("*.tsv")), "tables live in the superdataset"
    assert git(nested, "status", "--porcelain") == ""
    assert tags(nested) == ["v1.0.0"]
    assert (nested / "images.tsv").read_text() == (built / "images.tsv").read_text()


def test_a_clone_gets_one_image_by_installing_only_its_subdataset(nested, tmp_path):
    clone = tmp_path / "clone"
    datalad("clone", str(nested), str(clone))
    some = sorted(annexed_images(nested).values())[0][0]
    assert nesting.not_installed(clone), "a fresh clone installs no subdataset"
    code = subprocess.run([*CLI, "get", "-d", str(clone), "--where", "id>0"],
                          capture_output=True, text=True)
    assert code.returncode == 2
    assert "datalad get -n -r" in code.stderr and len(code.stderr.strip().splitlines()) == 1
    datalad("get", some, cwd=clone)
    assert (clone / some).is_file()
    installed = {str(p.relative_to(clone)) for p in nesting.installed(clone)}
    assert installed == {str(Path(some).parent)}


@pytest.mark.slow  # in .ci/run's second pass
def test_nilearn_offline_reads_the_dataset_after_get_r(nested, tmp_path):
    """As for one repository: nilearn sees every image but the uncompressed uploads (it
    looks for image_<id>.nii.gz only; a documented difference)."""
    from nilearn.datasets import fetch_neurovault

    clone = tmp_path / "clone"
    datalad("clone", str(nested), str(clone))
    datalad("get", "-r", ".", cwd=clone)
    data = fetch_neurovault(mode="offline", data_dir=str(clone), max_images=None, verbose=0)
    gz = {iid for iid, (path, _, _) in annexed_images(nested).items() if path.endswith(".nii.gz")}
    assert {m["id"] for m in data.images_meta} == gz
    assert all(Path(p).is_file() for p in data.images)


@pytest.mark.slow  # 50 s: in .ci/run's second pass
def test_an_update_touches_only_the_subdataset_that_changed(emulator, tmp_path):
    """Three images of one collection change: that subdataset gets new commits, every other
    subdataset keeps its HEAD, the superdataset gets one new tag; a rebuild with nothing
    new opens no subdataset and makes no commit."""
    spec, ds = build(tmp_path, emulator.url, subdatasets="per-collection")
    before = _subdataset_heads(ds)
    cid = max(before, key=lambda rel: len(list((ds / rel).glob("image_*_metadata.json"))))
    ids = sorted(json.loads(p.read_text())["id"]
                 for p in (ds / cid).glob("image_*_metadata.json"))[:3]
    emulator.mutate_content(ids[0])
    emulator.mutate_metadata(ids[1], name="renamed")
    emulator.mutate_content(ids[2])
    keys = {iid: annexed_images(ds)[iid][1] for iid in ids}
    assert nv("build", spec, "-d", ds, "--mode", "overwrite") == 0
    after = _subdataset_heads(ds)
    assert {rel for rel in before if after[rel] != before[rel]} == {cid}
    assert tags(ds) == ["v1.0.0", "v1.1.0"]
    now = annexed_images(ds)
    assert now[ids[0]][1] != keys[ids[0]] and now[ids[2]][1] != keys[ids[2]]
    assert now[ids[1]][1] == keys[ids[1]] and now[ids[1]][2]["name"] == "renamed"
    assert git(ds, "status", "--porcelain") == "" == git(ds / cid, "status", "--porcelain")
    # the readers descend into the subdataset commit each tag pins
    changed = nv_datalad.diff(ds, "v1.0.0", "v1.1.0")
    assert (changed.content_changed, changed.metadata_only) == ([ids[0], ids[2]], [ids[1]])
    old = nv_datalad.load(ds, version="v1.0.0")
    assert {m["id"]: m["name"] for m in old.images_meta}[ids[1]] != "renamed"
    assert len(old.images_meta) == len(now)
    top = head(ds)
    assert nv("build", spec, "-d", ds, "--mode", "overwrite") == 0
    assert head(ds) == top and _subdataset_heads(ds) == after


def test_dry_run_counts_subdatasets_to_create_update_and_leave(emulator, tmp_path, capsys):
    spec = write_spec(tmp_path, emulator.url, subdatasets="per-collection", max_images=5)
    ds = tmp_path / "ds"
    assert nv("build", spec, "-d", ds) == 0
    existing = len(nesting.installed(ds))
    spec.write_text(spec.read_text().replace("max_images: 5", "max_images: null"))
    capsys.readouterr()
    assert nv("build", spec, "-d", ds, "--dry-run") == 0
    out = capsys.readouterr().out
    new_collections = {p.collection_id for p in _plan_of(ds, spec) if p.change == "new"}
    created = len([c for c in new_collections if not (ds / f"neurovault/collection_{c}").exists()])
    line = next(line for line in out.splitlines() if line.startswith("subdatasets:"))
    assert line == (f"subdatasets: would create {created}, update "
                    f"{len(new_collections) - created}, leave "
                    f"{existing - (len(new_collections) - created)} untouched")
    assert created > 0


def _plan_of(ds: Path, spec: Path):
    from nv_datalad import build as nv_build

    return nv_build(spec, ds, dry_run=True).plan.items


def test_the_shape_of_an_existing_dataset_cannot_change(emulator, tmp_path):
    _, ds = build(tmp_path, emulator.url, max_images=3)
    nested_spec = write_spec(tmp_path, emulator.url, subdatasets="per-collection")
    proc = subprocess.run([*CLI, "build", str(nested_spec), "-d", str(ds)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "one repository" in proc.stderr and "another -d PATH" in proc.stderr
    assert not nesting.installed(ds)


@pytest.mark.slow  # in .ci/run's second pass
def test_a_killed_per_collection_build_converges(emulator, tmp_path):
    """SIGKILL after the first checkpoint, while subdatasets hold uncommitted imports: the
    rebuild finishes with the images, keys and clean status of an uninterrupted build."""
    import time

    spec = write_spec(tmp_path, emulator.url, subdatasets="per-collection", max_images=12)
    reference = tmp_path / "ref"
    assert nv("build", spec, "-d", reference) == 0
    ds = tmp_path / "ds"
    emulator.set_network(latency=0.02, bandwidth=300_000)
    proc = subprocess.Popen([*CLI, "build", str(spec), "-d", str(ds), "--checkpoint", "4",
                             "-J", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline and not (
            (ds / ".git").is_dir() and "checkpoint" in subprocess.run(
                ["git", "-C", str(ds), "log", "--format=%s"], capture_output=True,
                text=True).stdout):
        time.sleep(0.05)
    assert proc.poll() is None, "the build ended before the kill point"
    proc.kill()
    proc.wait()
    emulator.set_network()
    assert (ds / nesting.JOURNAL).is_file(), "the killed build left its journal"
    assert nv("build", spec, "-d", ds) == 0
    assert {i: v[:2] for i, v in annexed_images(ds).items()} == \
        {i: v[:2] for i, v in annexed_images(reference).items()}
    assert git(ds, "status", "--porcelain") == ""
    for sub in nesting.installed(ds):
        assert git(sub, "status", "--porcelain") == ""
        git(sub, "annex", "fsck", "--fast", "--quiet")
    assert not (ds / nesting.JOURNAL).exists()
    assert tags(ds) == ["v1.0.0"]


def test_verify_looks_into_every_subdataset(emulator, tmp_path, capsys):
    _, ds = build(tmp_path, emulator.url, subdatasets="per-collection", max_images=6)
    assert nv("verify", "-d", ds) == 0
    path, _, _ = sorted(annexed_images(ds).values())[-1]
    target = (ds / path).resolve()
    target.chmod(0o644)
    target.write_bytes(b"corrupted")
    capsys.readouterr()
    assert nv("verify", "-d", ds) == 1
    assert path in capsys.readouterr().out


@pytest.mark.slow  # in .ci/run's second pass
def test_an_old_version_of_a_subdataset_comes_from_a_ria_archive(emulator, tmp_path):
    """With ``archive: ria+file://...`` each subdataset archives what a change supersedes: a
    clone checked out at the old tag gets the old bytes through `datalad get` alone."""
    spec, ds = build(tmp_path, emulator.url, mode="overwrite", max_images=3,
                     subdatasets="per-collection",
                     archive=f"ria+file://{tmp_path / 'store'}")
    iid = min(annexed_images(ds))
    rel, old_key, _ = annexed_images(ds)[iid]
    old_bytes = emulator.image_bytes(iid)
    emulator.mutate_content(iid)
    assert nv("build", spec, "-d", ds) == 0
    sub = nesting.owner(ds, rel)[0]
    git(sub, "annex", "drop", "--force", "--key", old_key)  # only the store has it now
    clone = tmp_path / "clone"
    datalad("clone", str(ds), str(clone))
    git(clone, "checkout", "-q", "v1.0.0")
    datalad("get", rel, cwd=clone)
    assert (clone / rel).read_bytes() == old_bytes


def test_a_no_op_rebuild_runs_no_git_process_in_any_subdataset(shared_emulator, tmp_path,
                                                                 capsys):
    """`--debug` lists every git and git-annex process a build starts: a rebuild with
    nothing new starts none in any subdataset (their count does not matter)."""
    spec, ds = build(tmp_path, shared_emulator.url, subdatasets="per-collection",
                     max_images=25, neurosynth={"words": True})
    subs = [str(sub) for sub in nesting.installed(ds)]
    assert len(subs) > 1
    top = head(ds)
    capsys.readouterr()
    assert nv("build", spec, "-d", ds, "--debug") == 0
    ran = [line for line in capsys.readouterr().err.splitlines() if "running git" in line]
    assert ran, "--debug lists the processes a build starts"
    assert not [m for m in ran for sub in subs if sub in m], "a subdataset was opened"
    assert head(ds) == top
