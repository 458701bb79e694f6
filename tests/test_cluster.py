"""Cluster builds (issue 15): units of collections built by array tasks through a RIA store.

Each task clones from the store, builds its unit on its own branch and pushes; the finalise
step merges and releases. The result must equal a single-machine build image for image, the
store must hold every key, and a fresh clone from the store must get an image. The SLURM
tests run on a real single-node SLURM (tests/slurm.py installs and starts it when missing).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import annexed_images, datalad, git, nv, tags, write_spec

from nv_datalad.cluster.job import STORAGE_REMOTE, Job
from nv_datalad.cluster.units import Work, collect, split
from nv_datalad.dataset import nesting

pytest_plugins = ["slurm"]

CLI = [sys.executable, "-m", "nv_datalad.cli"]


def _keys(ds: Path) -> dict[int, tuple[str, str]]:
    return {iid: (path, key) for iid, (path, key, _) in annexed_images(ds).items()}


def _store_check(ds: Path, store: Path, tmp_path: Path, emulator) -> None:
    """Every key of the dataset is in the store, and a clone from the store alone (the
    emulator's files made unreachable) gets an image with the right bytes."""
    for repo in [ds, *nesting.installed(ds)]:
        assert git(repo, "annex", "find", "--not", "--in", STORAGE_REMOTE, "--include=*") == ""
    clone = tmp_path / "from-store"
    dsid = git(ds, "config", "-f", ".datalad/config", "datalad.dataset.id").strip()
    datalad("clone", f"ria+file://{store}#{dsid}", str(clone))
    # with subdatasets, `datalad get` installs the image's one from the store too (the
    # superdataset names the store as a source candidate)
    iid, (rel, _) = sorted(_keys(ds).items())[0]
    emulator.set_faults(error_rate=1.0, paths="/media/")
    datalad("get", rel, cwd=clone)
    emulator.set_faults()
    assert (clone / rel).read_bytes() == emulator.image_bytes(iid)


def test_units_own_whole_collections_and_balance_the_work():
    work = collect([(1, 10, 5_000_000), (1, 11, 5_000_000), (2, 20, 100), (3, 30, 100),
                    (3, 31, 100), (4, 40, 9_000_000)])
    units = split(work, 3)
    assert sorted(c for u in units for c in u.collections) == [1, 2, 3, 4]
    assert sorted(i for u in units for i in u.image_ids) == [10, 11, 20, 30, 31, 40]
    assert [u.collections for u in units] == [[1], [4], [2, 3]]  # largest first, least loaded
    assert split(work, 3) == units  # a resubmitted unit is the same unit
    assert len(split(work, 10)) == 4 and len(split([Work(1, (1,))], 4)) == 1


@pytest.mark.parametrize("subdatasets", [
    "none", pytest.param("per-collection", marks=pytest.mark.slow)])
def test_a_local_array_build_equals_a_single_machine_build(emulator, tmp_path, subdatasets):
    store = tmp_path / "store"
    spec = write_spec(tmp_path, emulator.url, max_images=25, subdatasets=subdatasets,
                      ria={"store": f"ria+file://{store}"})
    reference = tmp_path / "ref"
    assert nv("build", spec, "-d", reference) == 0
    ds = tmp_path / "ds"
    assert nv("build", spec, "-d", ds, "--local-array", "--tasks", "3") == 0
    assert _keys(ds) == _keys(reference)
    assert tags(ds) == ["v1.0.0"]
    assert (ds / "images.tsv").read_text() == (reference / "images.tsv").read_text()
    assert git(ds, "status", "--porcelain") == ""
    merges = git(ds, "log", "--merges", "--format=%s")
    assert "3 units" in merges
    _store_check(ds, store, tmp_path, emulator)


@pytest.mark.slow  # 80 s: in .ci/run's second pass (and with -m slurm)
@pytest.mark.slurm
def test_a_slurm_array_of_four_tasks_equals_a_single_machine_build(slurm_cluster, emulator,
                                                                    tmp_path):
    store = tmp_path / "store"
    spec = write_spec(tmp_path, emulator.url, ria={"store": f"ria+file://{store}"})
    reference = tmp_path / "ref"
    assert nv("build", spec, "-d", reference) == 0
    ds = tmp_path / "ds"
    assert nv("build", spec, "-d", ds, "--slurm", "--tasks", "4", "--wait") == 0
    assert _keys(ds) == _keys(reference)
    job = Job.read(ds, next((ds / ".nv-datalad" / "jobs").glob("*.json")).stem)
    assert len(job.units) == 4
    assert tags(ds) == ["v1.0.0"]
    _store_check(ds, store, tmp_path, emulator)


@pytest.mark.slow  # runs in .ci/run's second pass (and with -m slurm)
@pytest.mark.slurm
def test_scancel_of_one_task_is_reported_and_its_resubmit_completes(slurm_cluster, emulator,
                                                                    tmp_path):
    store = tmp_path / "store"
    spec = write_spec(tmp_path, emulator.url, max_images=25, ria={"store": f"ria+file://{store}"})
    ds = tmp_path / "ds"
    emulator.set_network(latency=0.3, bandwidth=50_000)  # tasks slow enough to cancel one
    proc = subprocess.run([*CLI, "build", str(spec), "-d", str(ds), "--slurm", "--tasks", "3"],
                          capture_output=True, text=True, check=True)
    array = proc.stdout.split("SLURM array ")[1].split(",")[0]
    slurm_cluster.wait_until(lambda: "R" in subprocess.run(
        ["squeue", "-h", "-j", f"{array}_1", "-o", "%t"], capture_output=True,
        text=True).stdout, "task 1 running")
    slurm_cluster.scancel(f"{array}_1")
    job = next((ds / ".nv-datalad" / "jobs").glob("*.json")).stem
    status = ds / ".git" / "nv-datalad" / "jobs" / job / "finalised.json"
    deadline = time.time() + 600
    while not status.is_file() and time.time() < deadline:
        time.sleep(1)
    emulator.set_network()
    assert json.loads(status.read_text())["missing"] == [1]
    assert tags(ds) == []
    assert nv("job-resubmit", "-d", ds, job, "--wait") == 0
    assert tags(ds) == ["v1.0.0"]
    assert len(_keys(ds)) == 25
