"""The command line as a user meets it: exit statuses, one-line errors, the README's commands."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from helpers import (
    DEMO_DEFAULT_IMAGES,
    annex,
    clone,
    git,
    image_file,
    image_ids,
    nv,
    tags,
    write_spec,
)

ROOT = Path(__file__).resolve().parents[1]

BAD_SPECS = [
    # (spec text, line, key fragment)
    ("description: no name\n", 1, "name"),
    ("name: x\nmode: sometimes\n", 2, "mode"),
    ("name: x\nmax_images: -3\n", 2, "max_images"),
    ("name: x\nserver: ftp://neurovault.org\n", 2, "server"),
    ("name: x\nimages:\n  terms:\n    map_type: {equals: Z map}\n", 4, "images.terms.map_type"),
    ("name: x\nimages:\n  terms:\n    name: {pattern: '(unclosed'}\n", 4, "images.terms.name"),
    ("name: x\ncollections:\n  ids: [12, abc]\n", 3, "collections.ids"),
    ("name: x\nresample:\n  interpolation: cubic\n", 3, "resample.interpolation"),
    ("name: x\nresample:\n  voxel_size: 0\n", 3, "resample.voxel_size"),
    ("name: x\ncontent: stream\n", 2, "content"),
    ("name: x\nimagez: {}\n", 2, "imagez"),
    ("name: x\nimages:\n  terms:\n    number_of_subjects: {in: 5}\n", 4,
     "images.terms.number_of_subjects"),
    ("name: x\nneurosynth:\n  words: maybe\n", 3, "neurosynth.words"),
    ("name: [unclosed\n", 2, "not valid YAML"),
]


@pytest.mark.parametrize(("text", "line", "key"), BAD_SPECS)
def test_bad_specs_exit_2_with_one_line_and_write_nothing(tmp_path, text, line, key):
    spec = tmp_path / "spec.yaml"
    spec.write_text(text)
    target = tmp_path / "out"
    proc = subprocess.run(
        [sys.executable, "-m", "nv_datalad.cli", "build", str(spec), "-d", str(target)],
        capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    err = proc.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    assert f"spec.yaml:{line}" in err and key in err
    assert not target.exists()


def test_unknown_dataset_version_is_a_clear_error(tmp_path, capsys):
    assert nv("diff", "-d", tmp_path) == 2
    assert "error:" in capsys.readouterr().err


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_emulator_command_serves_until_interrupted():
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "nv_datalad.cli", "emulator", "--port",
                             str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        for _ in range(100):
            try:
                reply = requests.get(f"http://127.0.0.1:{port}/api/collections/", timeout=2)
                break
            except requests.ConnectionError:
                time.sleep(0.1)
        assert reply.status_code == 200 and reply.json()["count"] > 5
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert f"127.0.0.1:{port}" in err


def test_get_and_cite_on_a_built_dataset(shared_emulator, built, tmp_path, capsys):
    ds = built
    repo = clone(ds, tmp_path / "clone")
    capsys.readouterr()
    assert nv("get", "-d", repo, "--where", "map_type=Z map") == 0
    out = capsys.readouterr().out
    assert "git annex get --metadata" in out
    present = set(annex(repo, "find").split())
    z = set(annex(repo, "find", "--include=*", "--metadata", "map_type=Z map").split())
    assert present == z == {str(image_file(ds, i).relative_to(ds)) for i in image_ids(ds)
                            if shared_emulator.images[i]["map_type"] == "Z map"}
    assert z, "the demo selection has Z maps"
    assert nv("cite", "-d", repo, "--format", "text") == 0
    text = capsys.readouterr().out
    dsid = git(ds, "config", "-f", ".datalad/config", "datalad.dataset.id").strip()
    assert dsid in text and "v1.0.0" in text and git(ds, "rev-parse", "HEAD").strip() in text
    for sc in (ds / "neurovault").glob("collection_*/collection_metadata.json"):
        doi = json.loads(sc.read_text()).get("DOI")
        if doi:
            assert doi in text
    assert nv("cite", "-d", repo, "--format", "bibtex") == 0
    bib = capsys.readouterr().out
    assert bib.startswith("@misc{") and dsid in bib and "v1.0.0" in bib


def test_readme_demo_command(default_selection, tmp_path):
    """`nv-datalad build specs/demo.yaml` with the embedded emulator: no internet needed."""
    env = dict(os.environ)
    proc = subprocess.run(
        [sys.executable, "-m", "nv_datalad.cli", "build", str(ROOT / "specs" / "demo.yaml")],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    ds = tmp_path / "nv-datalad-demo"
    assert tags(ds) == ["v1.0.0"]
    assert image_ids(ds) == default_selection  # nilearn's default terms on the same corpus
    assert len(image_ids(ds)) == DEMO_DEFAULT_IMAGES
    log = git(ds, "log", "--format=%s")
    assert "[DATALAD RUNCMD]" in log  # resampling and words are recorded runs
    assert (ds / "derivatives" / "neurosynth" / "vocabulary.txt").is_file()
    assert len(list((ds / "neurovault").glob("*/image_*_resampled.nii.gz"))) == len(
        image_ids(ds))
    assert git(ds, "status", "--porcelain") == ""
    annex(ds, "fsck", "--fast", "--quiet")
    # Neurosynth words: the decoder fails for some ids, the build does not; one matrix row per
    # image and the vocabulary nilearn computes from the same files
    import numpy as np
    from nilearn.datasets.neurovault import neurosynth_words_vectorized

    import nv_datalad

    data = nv_datalad.load(ds)
    words = [m.get("ns_words_absolute_path") for m in data.images_meta]
    assert 0 < sum(w is not None for w in words) < len(words)
    frequencies, vocabulary = neurosynth_words_vectorized(words, verbose=0)
    assert data.word_frequencies.shape == (len(data.images), len(vocabulary))
    assert list(data.vocabulary) == sorted(vocabulary) == list(vocabulary)
    assert np.allclose(data.word_frequencies, frequencies)
    # datalad rerun of the resampling run reproduces the same bytes: no new commit
    run_commit = git(ds, "log", "--format=%H", "--grep", "resample", "-n", "1").strip()
    head = git(ds, "rev-parse", "HEAD").strip()
    import datalad.api as dl

    dl.rerun(revision=run_commit, dataset=str(ds), result_renderer="disabled")
    assert git(ds, "rev-parse", "HEAD").strip() == head


def test_unreachable_server_exits_2_and_writes_nothing(tmp_path, capsys):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spec = write_spec(tmp_path, f"http://127.0.0.1:{port}")
    assert nv("build", spec, "-d", tmp_path / "ds") == 2
    err = capsys.readouterr().err.strip()
    assert "cannot reach the server" in err and f"127.0.0.1:{port}" in err
    assert not (tmp_path / "ds").exists()
