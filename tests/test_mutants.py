"""Tests that fail when the code breaks (issue 17): each kills a named mutant that survived.

Interrupted builds are real builds in a subprocess, held at a known stage by the emulator (a
stalled or throttled file) or by a git hook, then SIGKILLed; what the next build does with the
leftovers is what a user sees. ``tools/mutation.py`` measures the rest (tools/README.md).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import jsonschema
import pytest
import yaml
from dataset_factory import COLLECTIONS, SERVER, SPEC
from helpers import (
    annex,
    build,
    git,
    image_file,
    image_ids,
    key_of,
    nv,
    sidecar,
    sigint_as_usual,
    tags,
    write_spec,
)
from test_cite import parse_bibtex, validate_cff
from test_update import _local, _sel

from nv_datalad.dataset import layout
from nv_datalad.dataset.annex import WEB_UUID
from nv_datalad.pipeline.plan import (
    Change,
    Plan,
    PlannedImage,
    format_plan,
    make_plan,
    next_version,
)
from nv_datalad.spec.filters import FilterError, compile_condition, compile_terms

CLI = [sys.executable, "-m", "nv_datalad.cli"]
ROOT = Path(__file__).resolve().parents[1]


# -- holding a build at a known stage, then killing it ---------------------------------------

def _killed_build(spec: Path, ds: Path, reached: Callable[[], bool], *args: str,
                  env: dict[str, str] | None = None, on_poll: Callable[[], None] = lambda: None,
                  ) -> None:
    """Run ``nv-datalad build`` until ``reached()``, then SIGKILL it and everything it
    started (its session), as a crash or an OOM kill would."""
    errors = ds.parent / "killed-build.stderr"
    with errors.open("w") as stderr:
        proc = subprocess.Popen([*CLI, "build", str(spec), "-d", str(ds), *args],
                                env=env or dict(os.environ), stdout=subprocess.DEVNULL,
                                stderr=stderr, start_new_session=True)
        deadline, ok = time.monotonic() + 120, False
        while proc.poll() is None and time.monotonic() < deadline:
            on_poll()
            if ok := reached():
                break
            time.sleep(0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert ok, f"the build never reached the kill point:\n{errors.read_text()}"


def _media_path(emulator, iid: int) -> str:
    return urlsplit(emulator.images[iid]["file"]).path


def _annexed(ds: Path, iid: int) -> bool:
    return any(p.is_symlink() for p in (ds / layout.NEUROVAULT_DIR).glob(
        f"collection_*/image_{iid}.nii*"))


def _part(ds: Path, iid: int) -> Path:
    return ds / layout.DOWNLOAD_TMP / f"image_{iid}.part"


def _tracked_images_without_sidecar(ds: Path) -> list[str]:
    tracked = set(git(ds, "ls-files", "--", layout.NEUROVAULT_DIR).split())
    return [p for p in tracked if layout.parse_image_file(Path(p).name)
            and str(Path(p).parent / f"image_{layout.parse_image_file(Path(p).name)[0]}"
                    "_metadata.json") not in tracked]


def test_kill_mid_batch_leaves_no_half_registered_file_and_no_part(emulator, default_selection,
                                                                  tmp_path):
    """Killed while image A is annexed without its sidecar and B is half downloaded (a .part
    under .git). Both vanish from the server before the next build: nothing of them may stay
    in the dataset or under .git, and the rest is downloaded exactly once."""
    a, b, _ = sorted(default_selection)[:3]
    spec = write_spec(tmp_path, emulator.url, max_images=3)
    ds = tmp_path / "ds"
    emulator.set_faults(stall_rate=1.0, stall_seconds=3, paths=_media_path(emulator, a))
    throttled = []

    def throttle_after_the_first_request() -> None:  # A's request already holds its network
        if not throttled and emulator.counters["file_get"] >= 1:
            emulator.set_network(bandwidth=4000)
            throttled.append(True)

    _killed_build(spec, ds, lambda: _annexed(ds, a) and _part(ds, b).is_file()
                  and _part(ds, b).stat().st_size > 0, "-J", "1",
                  on_poll=throttle_after_the_first_request)
    emulator.set_network()
    emulator.set_faults()
    emulator.delete_image(a)
    emulator.delete_image(b)
    emulator.reset_counters()
    assert nv("build", spec, "-d", ds) == 0
    expected = set(sorted(default_selection - {a, b})[:3])
    assert image_ids(ds) == expected
    assert _tracked_images_without_sidecar(ds) == []
    assert not list((ds / layout.DOWNLOAD_TMP).glob("*.part"))
    assert dict(emulator.downloads) == dict.fromkeys(expected, 1)
    assert git(ds, "status", "--porcelain") == ""
    annex(ds, "fsck", "--fast", "--quiet")
    assert tags(ds) == ["v1.0.0"]


def test_kill_during_a_replacement_never_loses_the_old_version(emulator, tmp_path):
    """Killed after the old file of a changed image was removed, while its new file is in
    flight. If the next build cannot download either, the old version is still there."""
    spec, ds = build(tmp_path, emulator.url, mode="overwrite", max_images=2)
    iid = min(image_ids(ds))
    rel = str(image_file(ds, iid).relative_to(ds))
    old_key, old_bytes = key_of(ds, iid), emulator.image_bytes(iid)
    emulator.mutate_content(iid)
    emulator.set_faults(stall_rate=1.0, stall_seconds=60, paths=_media_path(emulator, iid))
    gets = emulator.counters["file_get"]
    _killed_build(spec, ds, lambda: not os.path.lexists(ds / rel)
                  and emulator.counters["file_get"] > gets)
    emulator.set_faults(error_rate=1.0, paths="/media/")
    assert nv("build", spec, "-d", ds) == 1
    assert (ds / rel).read_bytes() == old_bytes and key_of(ds, iid) == old_key
    assert git(ds, "status", "--porcelain") == ""
    emulator.set_faults()
    assert nv("build", spec, "-d", ds) == 0
    assert image_file(ds, iid).read_bytes() == emulator.image_bytes(iid)
    assert tags(ds)[-1] == "v1.1.0"  # the failed build's record was a patch version


def test_kill_between_staging_and_committing_a_checkpoint_keeps_the_imports(emulator,
                                                                          tmp_path):
    """Held by a post-index-change hook (``--no-verify`` does not skip it) once the batch's
    sidecars are staged, i.e. between ``git add -A`` and ``git commit``: the imports are
    finished, so the next build commits them and downloads nothing."""
    hooks, held = tmp_path / "hooks", tmp_path / "held"
    hooks.mkdir()
    hook = hooks / "post-index-change"
    hook.write_text("#!/bin/sh\nif git diff --cached --name-only -- neurovault | "
                    f"grep -q '/image_.*_metadata.json$'; then touch {held}; exec sleep 600; fi\n")
    hook.chmod(0o755)
    env = dict(os.environ, GIT_CONFIG_COUNT="1", GIT_CONFIG_KEY_0="core.hooksPath",
               GIT_CONFIG_VALUE_0=str(hooks))
    spec = write_spec(tmp_path, emulator.url, max_images=3)
    ds = tmp_path / "ds"
    _killed_build(spec, ds, held.exists, env=env)
    fetched = set(emulator.downloads)
    emulator.reset_counters()
    assert nv("build", spec, "-d", ds) == 0
    assert image_ids(ds) == fetched and dict(emulator.downloads) == {}
    assert git(ds, "status", "--porcelain") == ""
    assert tags(ds) == ["v1.0.0"]


# -- downloads: retried, and counted ------------------------------------------------------------

def test_every_cut_off_body_is_retried_three_times_then_reported(emulator, default_selection,
                                                                 tmp_path, capsys):
    spec = write_spec(tmp_path, emulator.url, max_images=2)
    emulator.set_faults(truncate_rate=1.0, paths="/media/")
    assert nv("build", spec, "-d", tmp_path / "ds", "-J", "1") == 1
    assert emulator.counters["file_get"] == 2 * 3  # attempts per file
    # urllib3 2 already refuses a body shorter than its Content-Length (IncompleteRead)
    assert capsys.readouterr().err.count("download failed after 3 attempts") == 2
    assert image_ids(tmp_path / "ds") == set()
    assert not list((tmp_path / "ds").glob("neurovault/collection_*/image_*.nii*"))


# -- verify: clean, corrupted, missing ----------------------------------------------------------

def test_verify_passes_a_clean_dataset(shared_emulator, built, capsys):
    assert nv("verify", "-d", built) == 0
    out = capsys.readouterr().out
    assert f"checked {len(image_ids(built))} images against the server" in out
    assert "drift" not in out and "ok: the dataset matches" in out


def test_verify_names_corrupted_and_missing_content_and_get_repairs_it(emulator, tmp_path,
                                                                      capsys):
    import datalad.api as dl

    _, ds = build(tmp_path, emulator.url, max_images=3)
    bad, gone, _ = (str(image_file(ds, i).relative_to(ds)) for i in sorted(image_ids(ds)))
    obj = ds / annex(ds, "contentlocation", annex(ds, "lookupkey", bad).strip()).strip()
    obj.chmod(0o644)
    obj.write_bytes(b"7 bytes")
    annex(ds, "drop", gone)
    capsys.readouterr()
    assert nv("verify", "-d", ds) == 1
    out = capsys.readouterr().out
    assert f"corrupted: {bad}" in out and f"missing: {gone} has no local content" in out
    assert "`datalad get PATH ...`" in out and "drift" not in out
    dl.get(path=[str(ds / bad), str(ds / gone)], dataset=str(ds), result_renderer="disabled")
    assert nv("verify", "-d", ds) == 0


def test_keep_content_false_drops_after_hashing_and_get_brings_it_back(emulator, tmp_path,
                                                                       capsys):
    import datalad.api as dl

    _, ds = build(tmp_path, emulator.url, max_images=2, keep_content=False)
    ids = sorted(image_ids(ds))
    assert len(ids) == 2 and annex(ds, "find", "--in=here", "--include=*") == ""
    for iid in ids:  # a checksum key of the served bytes: hashed before the drop
        key = key_of(ds, iid)
        assert f"-s{len(emulator.image_bytes(iid))}--" in key and not key.startswith("URL")
    capsys.readouterr()
    assert nv("verify", "-d", ds) == 0  # absent content is what this spec asks for
    dl.get(path=str(ds / layout.NEUROVAULT_DIR), dataset=str(ds), result_renderer="disabled")
    for iid in ids:
        assert image_file(ds, iid).read_bytes() == emulator.image_bytes(iid)


# -- a file that moves to a new URL (same bytes) ------------------------------------------------

def test_a_moved_file_gets_its_new_url_and_keeps_its_key(emulator, tmp_path, capsys):
    spec, ds = build(tmp_path, emulator.url, mode="overwrite", max_images=2)
    iid = min(image_ids(ds))
    rel = str(image_file(ds, iid).relative_to(ds))
    key, old_url = key_of(ds, iid), emulator.images[iid]["file"]
    new_url = emulator.move_file(iid)
    assert nv("build", spec, "-d", ds) == 0
    assert key_of(ds, iid) == key and sidecar(ds, iid)["file"] == new_url
    (web,) = [w for w in json.loads(annex(ds, "whereis", "--json", rel))["whereis"]
              if w["uuid"] == WEB_UUID]
    assert web["urls"] == [new_url] and old_url not in web["urls"]
    capsys.readouterr()
    assert nv("diff", "-d", ds, "--json") == 0
    changed = json.loads(capsys.readouterr().out)
    assert changed["content_changed"] == [] and changed["metadata_only"] == [iid]
    annex(ds, "drop", rel)  # the web copy is where the new URL says
    annex(ds, "get", rel)
    assert (ds / rel).read_bytes() == emulator.image_bytes(iid)


def test_after_a_move_the_provenance_names_the_new_url(emulator, tmp_path):
    spec, ds = build(tmp_path, emulator.url, mode="overwrite", max_images=2)
    iid = min(image_ids(ds))
    new_url = emulator.move_file(iid)
    assert nv("build", spec, "-d", ds) == 0
    emulator.mutate_metadata(iid, name="renamed")
    emulator.reset_counters()
    assert nv("build", spec, "-d", ds) == 0
    assert sidecar(ds, iid)["nv_datalad"]["source_url"] == new_url
    assert dict(emulator.downloads) == {}  # a metadata edit costs no download


# -- citation fields, compared with the dataset's own values -----------------------------------

def _tag_date(ds: Path, tag: str) -> str:
    return git(ds, "for-each-ref", "--format=%(taggerdate:short)", f"refs/tags/{tag}").strip()


def _collection_url(cid: int) -> str:
    rec = COLLECTIONS[cid]
    if rec.get("DOI"):
        return f"https://doi.org/{rec['DOI']}"
    paper = rec.get("paper_url") or ""
    return paper if paper.startswith("http") else f"{SERVER}/collections/{cid}/"


def test_bibtex_fields_are_the_datasets(ds, capsys):
    assert nv("cite", "-d", ds.path, "--format", "bibtex") == 0
    entries = parse_bibtex(capsys.readouterr().out)
    dataset = entries[0][2]
    assert dataset["year"] == _tag_date(ds.path, "v1.1.0")[:4]
    assert dataset["title"] == "{" + f"{SPEC['name']}: {SPEC['description']}" + "}"
    assert dataset["version"] == "v1.1.0"
    urls = {key: f["url"] for _, key, f in entries if key.startswith("neurovault-collection")}
    assert urls == {f"neurovault-collection:{c}": _collection_url(c) for c in COLLECTIONS}


def test_cff_at_an_old_version_from_the_cli(ds, capsys):
    assert nv("cite", "-d", ds.path, "--version", "v1.0.0", "--format", "cff") == 0
    doc = validate_cff(capsys.readouterr().out)
    assert (doc["version"], doc["commit"]) == ("v1.0.0", ds.v1_commit)
    assert doc["date-released"] == _tag_date(ds.path, "v1.0.0")
    assert doc["title"] == SPEC["name"] and doc["abstract"] == SPEC["description"]
    refs = {r["title"]: r.get("url") for r in doc["references"][1:]}

    def cff_url(cid: int) -> str:  # CFF: paper URL, else the NeuroVault page (DOI apart)
        paper = COLLECTIONS[cid].get("paper_url") or ""
        return paper if paper.startswith("http") else f"{SERVER}/collections/{cid}/"

    assert refs == {rec["name"]: cff_url(cid) for cid, rec in COLLECTIONS.items()}


# -- the rest of the command line and the Python API -------------------------------------------

def test_diff_between_two_named_versions_as_text(ds, capsys):
    assert nv("diff", "-d", ds.path, "v1.0.0", "v1.1.0") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "v1.0.0 → v1.1.0"
    assert lines[1:4] == ["added: 0", "content changed: 0", "metadata only: 1"]
    assert lines[4].startswith("  image 102  (modify_date ") and lines[5] == "removed: 0"


def test_schema_command_prints_a_schema_every_shipped_spec_passes(capsys):
    assert nv("schema") == 0
    document = json.loads(capsys.readouterr().out)
    jsonschema.Draft202012Validator.check_schema(document)
    validator = jsonschema.Draft202012Validator(document)
    specs = sorted((ROOT / "specs").glob("*.yaml"))
    assert len(specs) == 6
    for path in specs:
        assert list(validator.iter_errors(yaml.safe_load(path.read_text()))) == [], path
    assert not validator.is_valid({"name": "x", "mode": "sometimes"})


def test_build_from_python_and_server_override(shared_emulator, default_selection, tmp_path):
    import nv_datalad

    spec = write_spec(tmp_path, "http://127.0.0.1:9", max_images=2, content="register")
    report = nv_datalad.build(spec, tmp_path / "ds", server=shared_emulator.url)
    assert report.version == "v1.0.0"
    assert image_ids(tmp_path / "ds") == set(sorted(default_selection)[:2])
    assert nv("build", spec, "-d", tmp_path / "cli", "--server", shared_emulator.url) == 0
    assert image_ids(tmp_path / "cli") == image_ids(tmp_path / "ds")
    assert nv("build", spec, "-d", tmp_path / "dead") == 2  # the spec's own server is down


def test_emulator_command_serves_the_bench_corpus():
    proc = subprocess.Popen([*CLI, "emulator", "--corpus", "bench", "--images", "40", "--tiny",
                             "--port", "0"], stderr=subprocess.PIPE, text=True,
                            preexec_fn=sigint_as_usual)
    try:
        assert proc.stderr is not None
        url = next(ln for ln in proc.stderr if "serving at" in ln).rsplit(" ", 1)[1].strip()
        import requests

        assert requests.get(f"{url}/api/images/?limit=1", timeout=10).json()["count"] == 40
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=20)
    assert proc.returncode == 0


def test_a_taken_over_lock_stops_the_dead_builds_git_annex(shared_emulator, tmp_path):
    """What a killed build left running (found by its lock's token) is stopped before the
    rebuild goes on; a git-annex of the user's in the same dataset is left alone."""
    spec, ds = build(tmp_path, shared_emulator.url, content="register", max_images=1)
    token = "0123abcd"

    def addurl(**env: str) -> subprocess.Popen:
        return subprocess.Popen([str(Path(sys.executable).parent / "git-annex"), "addurl",
                                 "--batch"], cwd=ds, env={**os.environ, **env},
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)

    orphan, users = addurl(NV_DATALAD_BUILD=token), addurl()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        (ds / ".git" / "nv-datalad.lock").write_text(f"{dead.pid} {token}")
        assert nv("build", spec, "-d", ds) == 0
        assert orphan.poll() == -signal.SIGTERM  # gone before the rebuild went on
        assert users.poll() is None
    finally:
        for proc in (orphan, users):
            proc.kill()
            proc.wait()
    assert not (ds / ".git" / "nv-datalad.lock").exists()


# -- the planner: what the mutation run of pipeline/plan.py left alive --------------------------

OLD, NEW = "2020-01-01T00:00:00Z", "2021-01-01T00:00:00Z"


def _changes(plan) -> dict[int, Change]:
    return {p.image_id: p.change for p in plan.items}


def test_planner_compares_urls_sizes_and_dates_exactly():
    served = json.loads('{"size": 161361}')["size"]  # equal, but not the same int object
    moved_up, moved_down = "https://nv/media/z/2.nii.gz", "https://nv/media/0/3.nii.gz"
    local = {1: _local(1, OLD, size=161361), 2: _local(2, OLD), 3: _local(3, OLD),
             4: _local(4, OLD, size=10), 5: {**_local(5, None)}, 6: _local(6, OLD),
             7: {**_local(7, OLD), "file": "https://old/7.nii.gz"}}
    selection = [_sel(1, NEW, size=served), _sel(2, NEW, url=moved_up),
                 _sel(3, NEW, url=moved_down), _sel(4, NEW, size=9), _sel(5, NEW),
                 _sel(6, None), _sel(7, NEW)]
    assert _changes(make_plan(selection, local, mode="overwrite")) == {
        1: Change.CHECK, 2: Change.CONTENT, 3: Change.CONTENT, 4: Change.CONTENT,
        5: Change.UNCHANGED, 6: Change.UNCHANGED,
        7: Change.CHECK}  # compared with where it was fetched from, not the record's "file"


def test_planner_covers_local_images_outside_the_selection_but_offline():
    local = {1: _local(1, OLD), 2: _local(2, OLD), 3: _local(3, OLD)}
    seen = {3: {"id": 3, "collection_id": 1, "map_type": "T map"}}
    for mode in ("download_new", "overwrite"):
        plan = make_plan([_sel(1, OLD)], local, mode=mode, still_on_server={2: False},
                         seen_records=seen)
        assert _changes(plan) == {1: Change.UNCHANGED, 2: Change.VANISHED,
                                  3: Change.UNSELECTED}  # unknown to the probe: unselected
        assert [p.collection_id for p in plan.items] == [1, 1, 1]
        assert [p.record for p in plan.items[1:]] == [None, seen[3]]
    offline = "".join(["off", "line"])  # as read from a spec file, not an interned literal
    assert _changes(make_plan([_sel(1, OLD)], local, mode=offline)) == {1: Change.UNCHANGED}


def test_planner_settles_only_checks_and_rechecks_only_unchanged_images():
    local = {2: _local(2, OLD), 3: _local(3, OLD)}
    selection = [_sel(1, NEW), _sel(2, NEW), _sel(3, OLD)]
    assert _changes(make_plan(selection, local, mode="overwrite", file_changed={})) == {
        1: Change.NEW, 2: Change.CONTENT, 3: Change.UNCHANGED}
    assert _changes(make_plan(selection, local, mode="download_new", recheck=True)) == {
        1: Change.NEW, 2: Change.OUTDATED, 3: Change.CHECK}


def test_planner_versions_count_up_from_any_number():
    assert next_version("v2.0.0", spec_changed=True, content_changed=False) == "v3.0.0"
    assert next_version("v1.1.0", spec_changed=False, content_changed=True) == "v1.2.0"
    assert next_version("v1.3.5", spec_changed=False, content_changed=True) == "v1.4.0"


def test_planner_prints_each_kind_once_and_cuts_long_lists():
    kinds = [*[Change.NEW] * 21, *[Change.CONTENT] * 20, Change.UNCHANGED, Change.OUTDATED,
             Change.VANISHED, Change.UNSELECTED]
    plan = Plan("download_new", [PlannedImage(i, 1, c) for i, c in enumerate(kinds, 1)])
    ids = list(range(1, 47))
    assert format_plan(plan) == [
        "plan: new 21, content 20, metadata 0, check 0, unchanged 1, vanished 1, "
        "unselected 1 (outdated 1: newer on the server, updated only by --mode overwrite)",
        "  new: " + ", ".join(map(str, ids[:20])) + " ...",
        "  content: " + ", ".join(map(str, ids[21:41])),
        "  outdated: 43", "  vanished: 44", "  unselected: 45"]


# -- filters: what the mutation run of spec/filters.py left alive ------------------------------

def test_filters_read_from_a_spec_file_keep_their_meaning():
    """Keys parsed from YAML are not interned: an identity test on them would misread them."""
    predicate = compile_terms(yaml.safe_load("tags: {contains: motor}\n"
                                             "name: {not_contains: rest}\n"))
    assert predicate({"tags": ["motor", "hand"], "name": "task"})
    assert not predicate({"tags": ["hand"], "name": "task"})
    assert not predicate({"tags": ["motor"], "name": "rest state"})


@pytest.mark.parametrize(("name", "other"), [("not_null", "is_null"), ("is_null", "not_null")])
def test_filters_null_operator_given_false_names_its_opposite(name, other):
    with pytest.raises(FilterError, match=re.escape(f"for the opposite use {{{other}: true}}")):
        compile_condition(yaml.safe_load(f"{{{name}: false}}"))


def test_filters_bad_pattern_flags_are_pointed_at_by_line_and_key(tmp_path, capsys):
    spec = tmp_path / "bad.yaml"
    spec.write_text("name: bad\nimages:\n  terms:\n    name:\n      pattern: motor\n"
                    "      flags: Q\n")
    assert nv("build", spec, "-d", tmp_path / "ds") == 2
    err = capsys.readouterr().err
    assert "bad.yaml:6" in err and "images.terms.name.flags" in err and "'Q'" in err
