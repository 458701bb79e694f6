"""What a new user hits (issue 12): each test is one finding of that trial, corrected.

Every test drives the real CLI (in-process or as a subprocess when the shell's view matters)
against the emulator and asserts what the user sees: exit status, stdout/stderr, the dataset.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from helpers import annex, build, git, image_ids, nv, sidecar, tags, write_spec

CLI = [sys.executable, "-m", "nv_datalad.cli"]


def _run(*args: object, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True, cwd=cwd)


def test_build_inside_its_dataset_updates_it_instead_of_nesting_a_copy(emulator, tmp_path,
                                                                        monkeypatch):
    """Finding 2: `nv-datalad build SPEC` run in the dataset works on that dataset."""
    spec, ds = build(tmp_path, emulator.url, max_images=3)
    emulator.reset_counters()
    monkeypatch.chdir(ds)
    assert nv("build", spec) == 0
    assert not (ds / "test-ds").exists()
    assert emulator.counters["file_get"] == 0
    assert tags(ds) == ["v1.0.0"]


def test_verify_says_what_clears_each_problem(emulator, tmp_path, capsys):
    """Finding 4: a vanished image's hint is --prune, which then makes verify pass; an
    unreachable server is exit 2 with one line, not a drift report."""
    spec, ds = build(tmp_path, emulator.url, max_images=3)
    gone = min(image_ids(ds))
    emulator.delete_image(gone)
    capsys.readouterr()
    assert nv("verify", "-d", ds) == 1
    out = capsys.readouterr().out
    assert f"image {gone} is gone" in out and "--prune" in out and "--mode overwrite" not in out
    assert nv("build", spec, "-d", ds, "--prune") == 0
    assert "removed 1" in capsys.readouterr().out
    assert nv("verify", "-d", ds) == 0
    assert "ok: the dataset matches" in capsys.readouterr().out
    emulator.stop()
    proc = _run("verify", "-d", ds)
    assert proc.returncode == 2
    assert "only the content was checked" in proc.stdout
    assert "checked 3 images against the server" not in proc.stdout


def test_dataset_path_that_is_a_file_is_a_usage_error(emulator, tmp_path):
    """Finding 5: -d pointing at a regular file: exit 2, one line, no traceback."""
    target = tmp_path / "plain-file"
    target.write_text("not a dataset")
    proc = _run("build", write_spec(tmp_path, emulator.url), "-d", target)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "is a file" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert target.read_text() == "not a dataset"


def test_get_prints_each_result_once_and_survives_a_closed_pipe(built, tmp_path):
    """Finding 8: one line per result on stdout, none of it repeated on stderr; `| head`
    ends quietly; a collection field in --where is refused, not matched by every image."""
    from helpers import clone

    repo = clone(built, tmp_path / "clone")
    git(repo, "config", "annex.security.allowed-ip-addresses", "127.0.0.1")
    proc = _run("get", "-d", repo, "--where", "map_type=Z map")
    assert proc.returncode == 0, proc.stderr
    ok_lines = [line for line in proc.stdout.splitlines() if line.startswith("ok: ")]
    zmaps = {line.split("ok: ", 1)[1] for line in ok_lines}
    assert len(ok_lines) == len(zmaps) > 0
    assert not any(path in proc.stderr for path in zmaps)
    head = subprocess.run(f"{' '.join(CLI)} get -d {repo} --where 'map_type=T map' | head -n 1",
                          shell=True, capture_output=True, text=True)
    assert "Traceback" not in head.stderr and "BrokenPipe" not in head.stderr
    doi = _run("get", "-d", repo, "--where", "DOI=null")
    assert doi.returncode == 2 and "DOI is a collection field" in doi.stderr


def test_an_image_that_stops_matching_keeps_current_metadata(emulator, tmp_path):
    """Finding 9: an image that became a T map is kept, but no longer described as a Z map."""
    spec, ds = build(tmp_path, emulator.url, mode="overwrite", max_images=3,
                     images={"terms": {"map_type": "Z map"}})
    changed = min(image_ids(ds))
    emulator.mutate_metadata(changed, map_type="T map")
    assert nv("build", spec, "-d", ds) == 0
    assert changed in image_ids(ds)
    assert sidecar(ds, changed)["map_type"] == "T map"
    zmaps = annex(ds, "find", "--metadata", "map_type=Z map", "--format=${file}\n").split()
    assert not any(f"image_{changed}." in p for p in zmaps)
    rows = (ds / "images.tsv").read_text().splitlines()
    row = next(r for r in rows if r.startswith(f"{changed}\t"))
    assert "\tT map\t" in row


@pytest.mark.parametrize("target", ["missing", "empty directory"])
def test_an_empty_selection_writes_nothing(emulator, tmp_path, target):
    """Finding 10: a spec that selects nothing is an error (exit 2), not an empty v1.0.0.
    The dataset is made while the crawl runs; what was made goes again, and a directory the
    user made stays, empty."""
    spec = write_spec(tmp_path, emulator.url, images={"terms": {"map_type": "no such type"}})
    if target == "empty directory":
        (tmp_path / "ds").mkdir()
    proc = _run("build", spec, "-d", tmp_path / "ds")
    assert proc.returncode == 2
    assert "selects no image" in proc.stderr and "--dry-run" in proc.stderr
    if target == "missing":
        assert not (tmp_path / "ds").exists()
    else:
        assert list((tmp_path / "ds").iterdir()) == []


@pytest.mark.parametrize("args", [["-J", "0"], ["-J", "-3"], ["-J", "10000"],
                                  ["--checkpoint", "0"]])
def test_out_of_range_numbers_are_refused(tmp_path, args):
    """Finding 11: -J and --checkpoint outside their range: exit 2 naming the bounds."""
    proc = _run("build", tmp_path / "spec.yaml", *args)
    assert proc.returncode == 2
    assert "out of range" in proc.stderr


def test_logging_flags_work_after_the_command_and_every_option_has_help(emulator, tmp_path):
    """Finding 11: --debug / -q after the subcommand; help text for every option."""
    spec = write_spec(tmp_path, emulator.url, max_images=1)
    quiet = _run("build", spec, "-d", tmp_path / "ds", "-q")
    assert quiet.returncode == 0 and quiet.stderr == ""
    for command in ("build", "get", "cite", "verify", "diff", "emulator"):
        text = _run(command, "--help").stdout
        for option in ("-J", "--format", "--host", "--corpus", "--seed", "--images"):
            for line in text.splitlines():
                if line.strip().startswith(option) and line.strip() in (option,
                                                                         f"{option} N"):
                    pytest.fail(f"{command} {option} has no help text")


def test_not_a_dataset_is_worded_once(tmp_path):
    """Finding 11: every command says the same thing about a directory that is no dataset."""
    plain = tmp_path / "plain"
    plain.mkdir()
    messages = set()
    for args in (["cite"], ["diff"], ["verify"], ["get", "--where", "map_type=Z map"]):
        proc = _run(*args, "-d", plain)
        assert proc.returncode == 2, proc.stderr
        messages.add(proc.stderr.split("error: ", 1)[1].split(" (")[0])
    assert messages == {f"{plain} is not a nv-datalad dataset"}


def test_prune_says_removed_and_leaves_no_empty_collection(emulator, tmp_path, capsys):
    """Finding 12: after --prune the summary says "removed N" and a collection with no image
    left loses its folder; a vanished image is listed in CHANGES once, not every version,
    and is kept (in either mode) until --prune removes it explicitly.
    Two whole collections (explicit ids: no max_images cut), 1952 with one image."""
    spec, ds = build(tmp_path, emulator.url, collections={"ids": [1952, 2138]})
    by_collection: dict[int, list[int]] = {}
    for iid in image_ids(ds):
        by_collection.setdefault(sidecar(ds, iid)["collection_id"], []).append(iid)
    cid, ids = min(by_collection.items(), key=lambda kv: len(kv[1]))
    for iid in ids:
        emulator.delete_image(iid)
    assert nv("build", spec, "-d", ds) == 0  # kept: listed once
    assert set(ids) <= image_ids(ds)
    other = max(image_ids(ds) - set(ids))
    emulator.mutate_content(other)
    assert nv("build", spec, "-d", ds, "--mode", "overwrite") == 0
    assert set(ids) <= image_ids(ds)  # overwrite keeps them too
    changes = (ds / "CHANGES.md").read_text()
    assert changes.count("Vanished from NeuroVault (kept)") == 1
    capsys.readouterr()
    assert nv("build", spec, "-d", ds, "--prune") == 0
    assert f"removed {len(ids)}" in capsys.readouterr().out
    assert not set(ids) & image_ids(ds)
    newest = (ds / "CHANGES.md").read_text().split("\n## ")[1]  # the prune's own entry
    assert all(f"image {iid} " in newest for iid in ids), newest
    assert not (ds / "neurovault" / f"collection_{cid}").exists()
    assert git(ds, "status", "--porcelain") == ""


def test_download_new_reports_outdated_images_and_dry_run_names_the_version(emulator,
                                                                             tmp_path):
    """Finding 12: download_new does not call a newer server image "unchanged", and a dry run
    says which version a build would tag (a major one for a different spec)."""
    spec, ds = build(tmp_path, emulator.url, max_images=3)
    emulator.mutate_content(min(image_ids(ds)))
    proc = _run("build", spec, "-d", ds, "--dry-run")
    assert "outdated 1" in proc.stdout and "--mode overwrite" in proc.stdout
    assert "would make no new version" in proc.stdout
    other = write_spec(tmp_path, emulator.url, max_images=3,
                       images={"terms": {"map_type": "Z map"}})
    proc = _run("build", other, "-d", ds, "--dry-run")
    assert "would tag v2.0.0" in proc.stdout and "major" in proc.stdout
