"""Reliability: bad records, faults, interruption, concurrency and bad local state (issue 18).

Each scenario runs a real build against the emulator and asserts what a user would see: exit
status, the ids and keys in the dataset, files on disk, ``git status`` and ``git annex fsck``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import (
    annex,
    build,
    git,
    head,
    image_ids,
    key_of,
    nv,
    sigint_as_usual,
    tags,
    write_spec,
)

from nv_datalad.dataset.files import RESERVE
from nv_datalad.emulator.hostile import HOSTILE_KINDS

#: Kinds whose record must be refused (the rest are imported safely under id-derived paths).
CLI = [sys.executable, "-m", "nv_datalad.cli"]

REFUSED_KINDS = {
    "string-id": 1, "negative-id": 1, "string-collection-id": 1, "foreign-collection-id": 1,
    "file-url-scheme": 3, "credentials-url": 1, "newline-url": 1, "bad-file-size": 1,
    "huge-record": 1, "long-name": 1,
}


def _files_outside_layout(ds: Path) -> list[str]:
    tracked = git(ds, "ls-files", "-z").split("\0")
    allowed = ("neurovault/collection_", ".nv-datalad/", "derivatives/", ".datalad/")
    top = {"README.md", "CITATION.cff", "CHANGES.md", "images.tsv", "collections.tsv",
           ".gitattributes"}
    return [p for p in tracked if p and p not in top and not p.startswith(allowed)]


def test_hostile_records_are_refused_once_and_the_rest_is_built(emulator, built, tmp_path,
                                                               capsys):
    """Every hostile kind at once: refused records are named with their reason, nothing is
    written outside the layout or registered from a refused URL, and every other image is
    built exactly as in a clean build (``built``: the same spec on the same corpus)."""
    clean = built
    spec = write_spec(tmp_path, emulator.url)
    for kind in HOSTILE_KINDS:
        emulator.add_hostile_images(kind)
    ds = tmp_path / "ds"
    capsys.readouterr()
    assert nv("build", spec, "-d", ds) == 0
    refusals = [line.split("warning: ", 1)[1] for line in capsys.readouterr().err.splitlines()
                if line.startswith("warning: refused")]
    assert len(refusals) == sum(REFUSED_KINDS.values()), refusals
    for needle in ("'12a'", "'-12'", "'abc'", "disagrees with collection", "not http(s)",
                   "credentials", "whitespace or control", "file_size", "MB (limit",
                   "characters long"):
        assert any(needle in msg for msg in refusals), needle
    # what was not refused is there, each under a path made of its integer ids only
    assert image_ids(clean) <= image_ids(ds)
    for iid in image_ids(clean):
        assert key_of(ds, iid) == key_of(clean, iid)
    assert _files_outside_layout(ds) == []
    assert not any(p.name.startswith("..") for p in ds.rglob("*") if ".git" not in p.parts)
    # no refused URL is registered with the web remote
    web_urls = annex(ds, "find", "--include=*", "--format=${key}\n").split()
    registered = " ".join(annex(ds, "whereis", "--json", "--key", k) for k in web_urls)
    for scheme in ("file:", "ftp:", "javascript:", "user:secret@"):
        assert scheme not in registered
    record = json.loads(next((ds / ".nv-datalad" / "builds").glob("*.json")).read_text())
    assert len(record["refused"]) == len(refusals)
    assert "Refused records" in (ds / "CHANGES.md").read_text()
    assert git(ds, "status", "--porcelain") == ""
    annex(ds, "fsck", "--fast", "--quiet")
    # the refusals are not failures: a rebuild makes no version and still exits 0
    assert nv("build", spec, "-d", ds) == 0
    assert tags(ds) == ["v1.0.0"]


def test_max_images_zero_selects_nothing(emulator, tmp_path):
    spec = write_spec(tmp_path, emulator.url, max_images=0)
    assert nv("build", spec, "-d", tmp_path / "ds", "--dry-run") == 0
    emulator.reset_counters()
    assert nv("build", spec, "-d", tmp_path / "ds") == 2
    assert not (tmp_path / "ds").exists()
    assert emulator.counters["file_get"] + emulator.counters["file_head"] == 0


# ----------------------------------------------------------------------- nothing changes silently


def test_a_nilearn_offline_read_never_becomes_a_version(emulator, tmp_path, monkeypatch):
    """The dataset README recommends reading it with nilearn's offline mode, which rewrites
    sidecars; the next build restores them and makes no version (no local path committed)."""
    from nilearn.datasets import fetch_neurovault

    spec, ds = build(tmp_path, emulator.url, max_images=4)
    head = git(ds, "rev-parse", "HEAD")
    data = fetch_neurovault(mode="offline", data_dir=str(ds), max_images=None, verbose=0)
    assert len(data.images) == 4
    assert nv("build", spec, "-d", ds) == 0
    assert git(ds, "rev-parse", "HEAD") == head and tags(ds) == ["v1.0.0"]
    assert git(ds, "status", "--porcelain") == ""
    assert str(tmp_path) not in git(ds, "log", "-p", "HEAD")  # no machine-local path
    assert str(tmp_path) not in git(ds, "log", "-p", "git-annex")  # nor in the annex branch


def test_a_persons_uncommitted_edit_stops_the_build_and_is_kept(emulator, tmp_path):
    spec, ds = build(tmp_path, emulator.url, max_images=2)
    target = next((ds / "neurovault").glob("collection_*/image_*_metadata.json"))
    target.write_text(target.read_text().replace('"name"', '"name_edited_by_hand"', 1))
    note = ds / "neurovault" / "my-notes.txt"
    note.write_text("mine")
    head = git(ds, "rev-parse", "HEAD")
    proc = _build_process(spec, ds)
    assert proc.returncode == 2
    assert "did not make" in proc.stderr and "my-notes.txt" in proc.stderr
    assert "datalad save" in proc.stderr
    assert note.read_text() == "mine" and "name_edited_by_hand" in target.read_text()
    assert git(ds, "rev-parse", "HEAD") == head


def test_bad_local_state_is_refused_before_anything_changes(emulator, tmp_path):
    spec, ds = build(tmp_path, emulator.url, max_images=2)
    other = write_spec(tmp_path, emulator.url, name="other-name", max_images=2)
    proc = _build_process(other, ds)
    assert proc.returncode == 2 and "'test-ds'" in proc.stderr and "'other-name'" in proc.stderr
    git(ds, "config", "annex.version", "99")
    proc = _build_process(spec, ds)
    assert proc.returncode == 2 and "repository version 99" in proc.stderr
    assert "newer git-annex" in proc.stderr
    git(ds, "config", "annex.version", "10")
    full = tmp_path / "full"
    full.mkdir()
    (full / "somebody-elses.txt").write_text("x")
    proc = _build_process(spec, full)
    assert proc.returncode == 2 and "not empty" in proc.stderr
    assert sorted(p.name for p in full.iterdir()) == ["somebody-elses.txt"]


def test_missing_git_annex_is_one_line_exit_2(emulator, tmp_path):
    """The package run by an interpreter whose bin/ has no git-annex, with a PATH without it
    either (the system git is there): exit 2, one line saying how to get git-annex."""
    import site

    spec = write_spec(tmp_path, emulator.url, max_images=1)
    env = {**os.environ, "PATH": "/usr/bin:/bin",
           "PYTHONPATH": os.pathsep.join(site.getsitepackages())}
    base = Path(sys.base_prefix) / "bin" / "python3"
    proc = subprocess.run([str(base), "-m", "nv_datalad.cli", "build", str(spec), "-d",
                           str(tmp_path / "ds")], capture_output=True, text=True, env=env)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1 and "git-annex" in proc.stderr
    assert "pip install git-annex" in proc.stderr
    assert not (tmp_path / "ds").exists()


def test_no_git_identity_commits_as_the_tool_and_says_so(emulator, tmp_path):
    empty = tmp_path / "empty.gitconfig"
    empty.write_text("")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GIT_AUTHOR", "GIT_COMMITTER"))}
    env.update(GIT_CONFIG_GLOBAL=str(empty), GIT_CONFIG_NOSYSTEM="1", HOME=str(tmp_path))
    spec = write_spec(tmp_path, emulator.url, max_images=1)
    proc = subprocess.run([*CLI, "build", str(spec), "-d", str(tmp_path / "ds")],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "git has no user.name; committing as 'nv-datalad'" in proc.stderr
    assert git(tmp_path / "ds", "log", "-1", "--format=%an").strip() == "nv-datalad"


# ------------------------------------------------------------------------------ concurrency


def test_a_second_build_on_the_same_dataset_exits_2_naming_the_first(emulator, tmp_path):
    spec, ds = build(tmp_path, emulator.url, max_images=2)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (ds / ".git" / "nv-datalad.lock").write_text(str(sleeper.pid))
        proc = _build_process(spec, ds)
        assert proc.returncode == 2 and f"pid {sleeper.pid}" in proc.stderr
        assert "another nv-datalad build" in proc.stderr
    finally:
        sleeper.kill()
        sleeper.wait()
    proc = _build_process(spec, ds)  # the lock of a dead process is taken over
    assert proc.returncode == 0 and "stale lock" in proc.stderr
    assert not (ds / ".git" / "nv-datalad.lock").exists()


def test_builds_of_different_datasets_run_side_by_side(emulator, tmp_path):
    spec = write_spec(tmp_path, emulator.url, max_images=3)
    emulator.set_network(latency=0.05)
    procs = [subprocess.Popen([*CLI, "build", str(spec), "-d", str(tmp_path / f"ds{i}")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    for p in procs:
        assert p.wait(timeout=300) == 0, p.stderr.read()
    assert image_ids(tmp_path / "ds0") == image_ids(tmp_path / "ds1")


# ------------------------------------------------------------------------------ server faults


@pytest.mark.parametrize("max_images", [
    pytest.param(20, id="20-images"), pytest.param(None, id="all", marks=pytest.mark.slow)])
def test_server_faults_end_in_0_or_1_and_a_rebuild_completes(emulator, built, default_selection,
                                                           tmp_path, max_images):
    """The rebuild holds what an uninterrupted build of the same corpus holds (``built``)."""
    spec = write_spec(tmp_path, emulator.url, max_images=max_images)
    emulator.set_faults(error_rate=0.15, truncate_rate=0.10, stall_rate=0.02, stall_seconds=2)
    emulator.break_page("/api/collections/", "truncated-json", times=1)
    ds = tmp_path / "ds"
    proc = _build_process(spec, ds)
    assert proc.returncode in (0, 1), proc.stderr
    assert "Traceback" not in proc.stderr
    if _commits(ds):
        annex(ds, "fsck", "--fast", "--quiet")
        assert git(ds, "status", "--porcelain") == ""
    if proc.returncode == 1:
        assert "failed" in proc.stdout
    emulator.set_faults()
    assert nv("build", spec, "-d", ds) == 0
    assert image_ids(ds) == set(sorted(default_selection)[:max_images])
    for iid in image_ids(ds):
        assert key_of(ds, iid) == key_of(built, iid)


@pytest.mark.parametrize("max_images", [
    pytest.param(20, id="20-images"), pytest.param(None, id="all", marks=pytest.mark.slow)])
def test_an_outage_mid_build_exits_1_and_keeps_what_was_imported(emulator, tmp_path,
                                                                 max_images):
    """Collection 457's files never come; collection 35's, whose ids come first, do."""
    spec = write_spec(tmp_path, emulator.url, max_images=max_images)
    ds = tmp_path / "ds"
    emulator.set_faults(error_rate=1.0, paths="/media/images/4")  # some files never come
    proc = _build_process(spec, ds, "--checkpoint", "5")
    assert proc.returncode == 1, proc.stderr
    assert "failed" in proc.stdout and "retried by the next build" in \
        (ds / "CHANGES.md").read_text()
    kept = image_ids(ds)
    assert kept, "what was imported before the outage is committed"
    emulator.set_faults()
    assert nv("build", spec, "-d", ds) == 0
    assert kept < image_ids(ds)


# ------------------------------------------------------------------------------ interruption


def _started(spec: Path, ds: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "build", str(spec), "-d", str(ds), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_as_usual)


def _commits(ds: Path) -> str:
    try:
        return git(ds, "log", "--format=%s")
    except (subprocess.CalledProcessError, NotADirectoryError, FileNotFoundError):
        return ""  # no repository or no commit yet


def _kill_when(proc: subprocess.Popen, ready, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, f"the build ended before the kill point: {proc.stderr.read()}"
    proc.kill()
    proc.wait()


KILL_POINTS = {
    # the build is at ... when ... holds
    "creation": lambda ds: (ds / ".datalad" / "config").is_file() and "checkpoint" not in
    _commits(ds) and not any((ds / ".git").glob("nv-datalad-tmp/*.part")),
    "download": lambda ds: any((ds / ".git").glob("nv-datalad-tmp/*.part")),
    "checkpoint": lambda ds: "checkpoint" in _commits(ds),
    "resampling": lambda ds: "resampling manifest" in _commits(ds).lower(),
}


def _resampled_keys(ds: Path) -> dict[str, str]:
    out = annex(ds, "find", "--include=*_resampled.nii.gz", "--format=${file} ${key}\n")
    return dict(line.split(" ", 1) for line in out.splitlines() if line)


KILLED_SPEC = {"max_images": 10, "resample": {"voxel_size": 3}}


@pytest.fixture(scope="module")
def uninterrupted(shared_emulator, tmp_path_factory) -> Path:
    """The killed builds' spec built without interruption, once for every kill point (the
    corpus is the same in every emulator, so are its ids and keys); read-only."""
    _, ds = build(tmp_path_factory.mktemp("uninterrupted"), shared_emulator.url, **KILLED_SPEC)
    return ds


@pytest.mark.parametrize("point", [
    # inside `datalad run` by default (a kill during the downloads after a checkpoint is
    # test_build's interrupted build); all four in the slow run
    p if p == "resampling" else pytest.param(p, marks=pytest.mark.slow)
    for p in KILL_POINTS])
def test_sigkill_at_any_point_then_a_rebuild_converges(emulator, uninterrupted, tmp_path,
                                                       point):
    """SIGKILL while the dataset is created, during the downloads, after a checkpoint, inside
    `datalad run`:
    the rebuild gives exactly an uninterrupted build (ids, keys, derivative keys), with every
    derivative inside a run record, a clean status and a clean fsck."""
    spec = write_spec(tmp_path, emulator.url, **KILLED_SPEC)
    reference = uninterrupted
    ds = tmp_path / "ds"
    emulator.set_network(latency=0.2 if point == "creation" else 0.02, bandwidth=400_000)
    proc = _started(spec, ds, "--checkpoint", "3", "-J", "2")
    _kill_when(proc, lambda: KILL_POINTS[point](ds))
    emulator.set_network()
    assert nv("build", spec, "-d", ds) == 0
    assert image_ids(ds) == image_ids(reference)
    for iid in image_ids(ds):
        assert key_of(ds, iid) == key_of(reference, iid)
    assert _resampled_keys(ds) == _resampled_keys(reference)
    assert git(ds, "status", "--porcelain") == ""
    annex(ds, "fsck", "--fast", "--quiet")
    assert tags(ds) == ["v1.0.0"]
    for path in _resampled_keys(ds):  # every derivative was added by a datalad run commit
        added = git(ds, "log", "--diff-filter=A", "--format=%s", "--", path)
        assert "[DATALAD RUNCMD]" in added, (path, added)
    changes = (ds / "CHANGES.md").read_text()
    assert f"Added ({len(image_ids(ds))})" in changes


def test_ctrl_c_stops_within_seconds_and_keeps_what_landed(emulator, tmp_path):
    """SIGINT during the downloads: exit 130 within 5 s, what landed is committed (the
    rebuild does not download it again) and the message says how to resume."""
    spec = write_spec(tmp_path, emulator.url, max_images=20)
    ds = tmp_path / "ds"
    emulator.set_network(latency=0.05, bandwidth=150_000)
    proc = _started(spec, ds, "-J", "2", "--checkpoint", "100")
    deadline = time.time() + 240
    while "image_" not in "".join(p.name for p in (ds / "neurovault").glob("*/image_*")) \
            and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    time.sleep(1.0)
    sent = time.time()
    proc.send_signal(signal.SIGINT)
    code = proc.wait(timeout=30)
    took = time.time() - sent
    err = proc.stderr.read()
    assert code == 130, err
    assert took <= 5, f"Ctrl-C took {took:.1f} s"
    assert "run the same command again" in err
    landed = image_ids(ds)
    assert landed and "checkpoint" in _commits(ds)
    assert git(ds, "status", "--porcelain") == ""
    emulator.set_network()
    before = emulator.downloads
    assert nv("build", spec, "-d", ds) == 0
    again = emulator.downloads - before
    assert not set(again) & landed, "images that had landed were downloaded again"
    assert len(image_ids(ds)) == 20


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs (root only, as CI runs): a dataset there runs out of space."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_disk_full_while_downloading_exits_1_and_the_next_build_completes(emulator, small_disk):
    spec = write_spec(small_disk.parent, emulator.url, max_images=12)
    ds = small_disk / "ds"
    proc = _build_process(spec, ds)
    assert proc.returncode == 1, proc.stderr
    assert "disk full" in proc.stderr
    assert not list((ds / ".git").glob("nv-datalad-tmp/*.part"))
    subprocess.run(["mount", "-o", "remount,size=200m", str(small_disk)], check=True)
    assert nv("build", spec, "-d", ds) == 0
    assert len(image_ids(ds)) == 12
    annex(ds, "fsck", "--fast", "--quiet")
    assert git(ds, "status", "--porcelain") == ""


def test_a_nearly_full_disk_stops_the_build_before_git_hangs(emulator, small_disk):
    """16 KiB free: git-annex's keys database would retry its write forever inside
    ``git status``. The build says "disk full" with what is free (exit 1), changes nothing,
    and the next build with room finishes."""
    subprocess.run(["mount", "-o", "remount,size=200m", str(small_disk)], check=True)
    spec = write_spec(small_disk.parent, emulator.url, max_images=2, content="register")
    ds = small_disk / "ds"
    assert nv("build", spec, "-d", ds) == 0
    before = head(ds)
    spec = write_spec(small_disk.parent, emulator.url, max_images=30, content="register")
    _fill(small_disk, leave=16 * 1024)
    proc = _build_process(spec, ds)
    assert proc.returncode == 1, proc.stderr
    assert "disk full" in proc.stderr.splitlines()[-1]
    assert "KiB free" in proc.stderr.splitlines()[-1]
    assert head(ds) == before
    (small_disk / "filler").unlink()
    assert nv("build", spec, "-d", ds) == 0
    assert len(image_ids(ds)) == 30
    assert git(ds, "status", "--porcelain") == ""
    annex(ds, "fsck", "--fast", "--quiet")


def test_disk_full_during_an_update_keeps_the_old_versions(emulator, small_disk):
    """New bytes for every image and room for a few: the download that fills the disk stops
    the update with nothing committed (the old versions are put back when there is room for
    that, by the next build's recovery otherwise), and the next build with room makes the
    whole update."""
    subprocess.run(["mount", "-o", "remount,size=200m", str(small_disk)], check=True)
    spec = write_spec(small_disk.parent, emulator.url, max_images=12, mode="overwrite")
    ds = small_disk / "ds"
    assert nv("build", spec, "-d", ds) == 0
    before = {iid: key_of(ds, iid) for iid in image_ids(ds)}
    committed = head(ds)
    for iid in before:
        emulator.mutate_content(iid)
    _fill(small_disk, leave=RESERVE + 512 * 1024)  # past the start's check, not the downloads
    proc = _build_process(spec, ds)
    assert proc.returncode == 1, proc.stderr
    assert "disk full" in proc.stderr.splitlines()[-1]
    assert "while downloading" in proc.stderr
    assert head(ds) == committed and tags(ds) == ["v1.0.0"]
    (small_disk / "filler").unlink()
    assert nv("build", spec, "-d", ds) == 0
    after = {iid: key_of(ds, iid) for iid in image_ids(ds)}
    assert all(after[iid] != before[iid] for iid in before)
    assert tags(ds) == ["v1.0.0", "v1.1.0"]
    assert git(ds, "status", "--porcelain") == ""
    annex(ds, "fsck", "--fast", "--quiet")


# ------------------------------------------------------------------------------ helpers


def _fill(disk: Path, leave: int) -> None:
    """Fill ``disk`` with ``disk/filler``, then give ``leave`` bytes back."""
    filler = disk / "filler"
    subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)
    os.truncate(filler, max(0, filler.stat().st_size - leave))


def _build_process(spec: Path, ds: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, "build", str(spec), "-d", str(ds), *extra],
                          capture_output=True, text=True, timeout=600)
