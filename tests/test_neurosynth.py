"""Neurosynth words: fetching through the emulator's decoder (with its failures) and the
vectorised matrix, checked against nilearn's own functions, recorded with ``datalad run``."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import datalad.api as dl
import numpy as np
import pytest
import requests
from helpers import git, head, write_spec
from helpers import nv as nv_cli
from nilearn.datasets import neurovault as nv
from scipy import sparse

from nv_datalad.dataset import layout
from nv_datalad.derivatives import misses
from nv_datalad.derivatives import neurosynth as ns
from nv_datalad.emulator.neurosynth import DecodeOutcome, decode
from nv_datalad.neurovault.client import NeuroVaultClient
from nv_datalad.records import IMAGE_COLUMNS, Status

PREFIX = [sys.executable, "-m", "nv_datalad.cli", "vectorize-words"]


def decode_url(emu) -> str:
    return f"{emu.url}/api/decode/"


def sample(emu, per_outcome: int = 3) -> list[tuple[int, int, DecodeOutcome]]:
    """(collection id, image id, expected outcome), with every outcome represented."""
    picked: dict[DecodeOutcome, list] = {o: [] for o in DecodeOutcome}
    for iid, record in sorted(emu.images.items()):
        outcome = decode(emu.seed, iid, True).outcome
        if len(picked[outcome]) < per_outcome:
            picked[outcome].append((int(record["collection_id"]), iid, outcome))
    assert all(picked.values()), "the demo corpus should exercise every decoder outcome"
    return sorted(item for items in picked.values() for item in items)


def test_fetch_words_accepts_only_non_empty_values(shared_emulator):
    emu = shared_emulator
    with requests.Session() as session:
        for _cid, iid, outcome in sample(emu):
            payload = ns.fetch_words(session, decode_url(emu), iid)
            if outcome is DecodeOutcome.WORDS:
                assert payload["data"]["values"] == decode(emu.seed, iid, True).values
            else:
                assert payload is None, outcome


def test_fetch_words_survives_network_trouble(emulator, tmp_path):
    iid = next(i for _c, i, o in sample(emulator) if o is DecodeOutcome.WORDS)
    with requests.Session() as session:
        emulator.set_faults(malformed_json_rate=1.0, paths="/api/decode/")
        assert ns.fetch_words(session, decode_url(emulator), iid) is None
        emulator.set_faults(stall_rate=1.0, stall_seconds=5, paths="/api/decode/")
        assert ns.fetch_words(session, decode_url(emulator), iid, timeout=0.3) is None
        emulator.set_faults()
        assert ns.fetch_words(session, decode_url(emulator), iid) is not None
        # nothing listens there
        closed = "http://127.0.0.1:9/api/decode/"
        assert ns.fetch_words(session, closed, iid, timeout=2) is None


def test_fetch_all_writes_nilearn_files_and_retries_failures(emulator, tmp_path):
    items = sample(emulator)
    with requests.Session() as session:
        results = ns.fetch_all(
            session, decode_url(emulator), [(c, i) for c, i, _ in items], tmp_path, jobs=3
        )
        assert [r.image_id for r in results] == [i for _c, i, _o in items]
        for result, (cid, iid, outcome) in zip(results, items, strict=True):
            path = tmp_path / layout.words_file(cid, iid)
            assert path.name == f"neurosynth_words_for_image_{iid}.json"  # nilearn's name
            if outcome is DecodeOutcome.WORDS:
                assert result.status == Status.OK and result.path == str(
                    layout.words_file(cid, iid)
                )
                stored = json.loads(path.read_text())
                server = requests.get(decode_url(emulator), params={"neurovault": iid}).json()
                assert stored == server
            else:
                assert result.status == Status.IMPOSSIBLE and result.message == "no words"
                assert not path.exists()
        # a second build asks again only for the images without words
        again = ns.fetch_all(session, decode_url(emulator), [(c, i) for c, i, _ in items], tmp_path)
    for result, (_cid, _iid, outcome) in zip(again, items, strict=True):
        expected = Status.NOTNEEDED if outcome is DecodeOutcome.WORDS else Status.IMPOSSIBLE
        assert result.status == expected


def test_a_failing_lookup_costs_one_retry_not_the_api_back_off(emulator, tmp_path):
    """Issue 12 finding 3: the API session retries a 5xx five times with back-off (~15 s);
    a Neurosynth lookup gets one immediate retry, whatever session the build hands over."""
    failing = next((c, i) for c, i, o in sample(emulator) if o is DecodeOutcome.ERROR)
    with NeuroVaultClient(emulator.url) as client:
        emulator.reset_counters()
        (result,) = ns.fetch_all(client.session, decode_url(emulator), [failing], tmp_path)
    assert result.status == Status.IMPOSSIBLE and result.message == "no words"
    assert emulator.counters["decode"] == 2  # the request and its one retry


def test_failed_lookups_are_remembered_with_a_back_off(emulator, tmp_path):
    ds = tmp_path / "ds"
    dl.create(str(ds), result_renderer="disabled")
    items = sample(emulator)
    failing = {i for _c, i, o in items if o is not DecodeOutcome.WORDS}
    pairs = [(c, i) for c, i, _ in items]
    start = datetime(2030, 1, 1, tzinfo=UTC)
    with requests.Session() as session:
        first = ns.fetch_all(session, decode_url(emulator), pairs, ds, now=start)
        assert {r.image_id for r in first if r.status == Status.IMPOSSIBLE} == failing
        state = json.loads((ds / misses.STATE_FILE).read_text())
        assert {int(i) for i in state} == failing
        assert all(e["attempts"] == 1 for e in state.values())
        # local state of this clone, inside .git: never part of the dataset
        assert (ds / ".git" / "nv-datalad" / "neurosynth-misses.json").is_file()

        # within the back-off: not one request, and the result says when the next try is
        emulator.reset_counters()
        soon = ns.fetch_all(
            session, decode_url(emulator), pairs, ds, now=start + timedelta(minutes=59)
        )
        assert emulator.counters["decode"] == 0
        for result in soon:
            if result.image_id in failing:
                assert result.status == Status.IMPOSSIBLE and result.extra["asked"] is False
                assert result.extra["next_try"] == (start + timedelta(hours=1)).isoformat()
            else:
                assert result.status == Status.NOTNEEDED

        # after it: asked again, and the back-off doubles
        later = start + timedelta(hours=1)
        ns.fetch_all(session, decode_url(emulator), pairs, ds, now=later)
        assert emulator.counters["decode"] >= len(failing)
        state = json.loads((ds / misses.STATE_FILE).read_text())
        assert {e["attempts"] for e in state.values()} == {2}
        emulator.reset_counters()
        ns.fetch_all(session, decode_url(emulator), pairs, ds, now=later + timedelta(hours=1))
        assert emulator.counters["decode"] == 0

        # retry_all (build --recheck) ignores the back-off
        ns.fetch_all(session, decode_url(emulator), pairs, ds, now=later, retry_all=True)
        assert emulator.counters["decode"] >= len(failing)


def test_an_image_that_gets_its_words_is_forgotten(emulator, tmp_path):
    ds = tmp_path / "ds"
    dl.create(str(ds), result_renderer="disabled")
    cid, iid = next((c, i) for c, i, o in sample(emulator) if o is DecodeOutcome.WORDS)
    start = datetime(2030, 1, 1, tzinfo=UTC)
    with requests.Session() as session:
        emulator.set_faults(error_rate=1.0, paths="/api/decode/")
        (down,) = ns.fetch_all(session, decode_url(emulator), [(cid, iid)], ds, now=start)
        assert down.status == Status.IMPOSSIBLE
        assert str(iid) in json.loads((ds / misses.STATE_FILE).read_text())
        emulator.set_faults()
        week = start + misses.MAX_BACKOFF
        (back,) = ns.fetch_all(session, decode_url(emulator), [(cid, iid)], ds, now=week)
    assert back.status == Status.OK and (ds / layout.words_file(cid, iid)).is_file()
    assert json.loads((ds / misses.STATE_FILE).read_text()) == {}


def test_back_off_doubles_up_to_a_week():
    hours = [misses.backoff(n) / timedelta(hours=1) for n in range(1, 11)]
    assert hours == [1, 2, 4, 8, 16, 32, 64, 128, 168, 168]


def test_no_op_rebuild_with_failing_lookups_asks_nothing_and_commits_nothing(emulator, tmp_path):
    """Issue 12 finding 3, as a user runs it: words on, Neurosynth failing for some images."""
    public = {c for c, rec in emulator.collections.items() if not rec.get("private")}
    by_outcome: dict[DecodeOutcome, int] = {}
    for iid, record in sorted(emulator.images.items()):
        if record["collection_id"] in public:
            by_outcome.setdefault(decode(emulator.seed, iid, True).outcome, iid)
    ids = sorted(by_outcome.values())
    spec = write_spec(tmp_path, emulator.url, images={"ids": ids}, neurosynth={"words": True})
    ds = tmp_path / "ds"
    assert nv_cli("build", spec, "-d", ds) == 0
    assert (ds / layout.WORD_FREQUENCIES).exists()
    remembered = json.loads((ds / misses.STATE_FILE).read_text())
    without_words = {str(i) for o, i in by_outcome.items() if o is not DecodeOutcome.WORDS}
    assert set(remembered) == without_words
    before, vocabulary = head(ds), (ds / layout.VOCABULARY).stat().st_ino
    emulator.reset_counters()
    assert nv_cli("build", spec, "-d", ds) == 0
    assert emulator.counters["decode"] == 0
    assert head(ds) == before
    assert (ds / layout.VOCABULARY).stat().st_ino == vocabulary  # no vectorize-words run
    assert git(ds, "status", "--porcelain") == ""


def _words_tree(emu, root: Path) -> list[tuple[int, int, DecodeOutcome]]:
    items = sample(emu)
    with requests.Session() as session:
        ns.fetch_all(session, decode_url(emu), [(c, i) for c, i, _ in items], root)
    return items


def test_vectorize_is_nilearns_vectorization(shared_emulator, tmp_path):
    items = _words_tree(shared_emulator, tmp_path)
    files: list[Path | None] = [tmp_path / layout.words_file(c, i) for c, i, _ in items]
    files.insert(2, None)  # an image without a words file at all
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    files.append(broken)

    frequencies, vocabulary = ns.vectorize(files)
    expected, expected_vocabulary = nv.neurosynth_words_vectorized(
        [str(f) if f is not None else None for f in files], verbose=0
    )
    assert sparse.issparse(frequencies)
    assert vocabulary == list(expected_vocabulary) == sorted(vocabulary)
    np.testing.assert_array_equal(frequencies.toarray(), expected)
    assert frequencies.shape[0] == len(files)
    assert not frequencies[2].toarray().any()  # missing file: an all-zero row


def test_vectorize_without_any_words_keeps_one_row_per_image(tmp_path):
    frequencies, vocabulary = ns.vectorize([None, tmp_path / "absent.json"])
    assert frequencies.shape == (2, 0) and vocabulary == []


def write_images_tsv(root: Path, items, words: set[int]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=IMAGE_COLUMNS, delimiter="\t", lineterminator="\n")
    writer.writeheader()
    for cid, iid, _ in items:
        writer.writerow(
            {
                "image_id": iid,
                "collection_id": cid,
                "path": str(layout.image_file(cid, iid)),
                "words_path": str(layout.words_file(cid, iid)) if iid in words else "",
            }
        )
    (root / layout.IMAGES_TSV).write_text(buffer.getvalue())


def test_vectorize_with_provenance_is_rerunnable(shared_emulator, tmp_path):
    ds = tmp_path / "ds"
    dl.create(str(ds), cfg_proc="text2git", result_renderer="disabled")
    items = _words_tree(shared_emulator, ds)
    with_words = {i for _c, i, o in items if o is DecodeOutcome.WORDS}
    items.reverse()  # rows follow images.tsv, whatever its order
    write_images_tsv(ds, items, with_words)
    dl.save(dataset=str(ds), message="table and words", result_renderer="disabled")

    result = ns.vectorize_with_provenance(ds, command_prefix=PREFIX)
    assert result.status == Status.OK, result.message
    log = git(ds, "log", "-1", "--format=%B")
    assert log.startswith("[DATALAD RUNCMD]")
    record = json.loads(log.split("=== Do not change lines below ===")[1].split("^^^")[0])
    assert "--images-tsv images.tsv --out-dir derivatives/neurosynth" in record["cmd"]
    assert "images.tsv" in record["inputs"]
    assert record["outputs"] == [layout.VOCABULARY, layout.WORD_FREQUENCIES]

    vocabulary = (ds / layout.VOCABULARY).read_text().splitlines()
    frequencies = sparse.load_npz(ds / layout.WORD_FREQUENCIES)
    word_paths = [
        str(ds / layout.words_file(c, i)) if i in with_words else None for c, i, _ in items
    ]
    expected, expected_vocabulary = nv.neurosynth_words_vectorized(word_paths, verbose=0)
    assert vocabulary == list(expected_vocabulary) == sorted(vocabulary)
    np.testing.assert_array_equal(frequencies.toarray(), expected)
    assert frequencies.shape[0] == len(items)

    with zipfile.ZipFile(ds / layout.WORD_FREQUENCIES) as npz:
        assert {info.date_time for info in npz.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    before = {p: (ds / p).read_bytes() for p in (layout.VOCABULARY, layout.WORD_FREQUENCIES)}
    commit = head(ds)
    dl.rerun(revision=commit, dataset=str(ds), result_renderer="disabled")
    assert head(ds) == commit
    assert {p: (ds / p).read_bytes() for p in before} == before
    untouched = (ds / layout.VOCABULARY).stat().st_ino  # a datalad run rewrites its outputs
    again = ns.vectorize_with_provenance(ds, command_prefix=PREFIX)
    assert again.status == Status.NOTNEEDED
    assert head(ds) == commit and (ds / layout.VOCABULARY).stat().st_ino == untouched

    # a changed word file is a new matrix, recorded by a new run
    cid, iid = next((c, i) for c, i, _ in items if i in with_words)
    words = ds / layout.words_file(cid, iid)
    payload = json.loads(words.read_text())
    payload["data"]["values"]["zz new term"] = 0.5
    words.write_text(json.dumps(payload))
    dl.save(dataset=str(ds), message="words changed", result_renderer="disabled")
    changed = ns.vectorize_with_provenance(ds, command_prefix=PREFIX)
    assert changed.status == Status.OK, changed.message
    assert (ds / layout.VOCABULARY).read_text().splitlines()[-1] == "zz new term"
    assert git(ds, "log", "-1", "--format=%s").startswith("[DATALAD RUNCMD]")


def test_vectorize_command_rejects_a_table_it_cannot_read(tmp_path):
    (tmp_path / "images.tsv").write_text("image_id\tcollection_id\twords_path\nx\t1\tfoo\n")
    proc = subprocess.run(
        [*PREFIX, "--images-tsv", "images.tsv", "--out-dir", "out"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "images.tsv:2" in proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("missing", ["images.tsv"])
def test_vectorize_with_provenance_without_table_is_impossible(tmp_path, missing):
    dl.create(str(tmp_path / "ds"), result_renderer="disabled")
    result = ns.vectorize_with_provenance(tmp_path / "ds", command_prefix=PREFIX)
    assert result.status == Status.IMPOSSIBLE and missing in result.message


def test_same_words_matrix_as_fetch_neurovault(monkeypatch, shared_emulator, tmp_path):
    emu = shared_emulator
    api = f"{emu.url}/api/"
    monkeypatch.setattr(nv, "_NEUROVAULT_BASE_URL", api)
    monkeypatch.setattr(nv, "_NEUROVAULT_COLLECTIONS_URL", api + "collections/")
    monkeypatch.setattr(nv, "_NEUROVAULT_IMAGES_URL", api + "images/")
    monkeypatch.setattr(nv, "_NEUROSYNTH_FETCH_WORDS_URL", decode_url(emu))
    fetched = nv.fetch_neurovault(
        max_images=12, data_dir=str(tmp_path / "nilearn"), fetch_neurosynth_words=True, verbose=0
    )
    items = [(int(m["collection_id"]), int(m["id"])) for m in fetched.images_meta]
    with requests.Session() as session:
        results = ns.fetch_all(session, decode_url(emu), items, tmp_path / "ours", jobs=4)
    assert any(r.status == Status.IMPOSSIBLE for r in results), "sample has no failing id"
    files = [tmp_path / "ours" / layout.words_file(c, i) for c, i in items]
    frequencies, vocabulary = ns.vectorize(files)
    assert vocabulary == list(fetched.vocabulary)
    np.testing.assert_array_equal(frequencies.toarray(), fetched.word_frequencies)
