"""Neurosynth words: fetching through the emulator's decoder (with its failures) and the
vectorised matrix, checked against nilearn's own functions, recorded with ``datalad run``."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import datalad.api as dl
import numpy as np
import pytest
import requests
from nilearn.datasets import neurovault as nv
from scipy import sparse

from nv_datalad.dataset import layout
from nv_datalad.derivatives import neurosynth as ns
from nv_datalad.emulator.neurosynth import DecodeOutcome, decode
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
    log = subprocess.run(
        ["git", "log", "-1", "--format=%B"], cwd=ds, check=True, capture_output=True, text=True
    ).stdout
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
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ds, check=True, capture_output=True, text=True
    ).stdout.strip()
    dl.rerun(revision=commit, dataset=str(ds), result_renderer="disabled")
    after_head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ds, check=True, capture_output=True, text=True
    ).stdout.strip()
    assert after_head == commit
    assert {p: (ds / p).read_bytes() for p in before} == before
    again = ns.vectorize_with_provenance(ds, command_prefix=PREFIX)
    assert again.status == Status.NOTNEEDED


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
