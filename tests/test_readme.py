"""The README's shell blocks, run as written in a fresh shell after the two set-up commands.

A fresh shell has no activated venv: only what the README itself tells the reader to do may put
nv-datalad, DataLad and git-annex on PATH. The demo build runs against the embedded emulator on
a free port (``NV_DATALAD_EMBEDDED_PORT``), so no other emulator on the default port is met.
The demo dataset it makes is then checked as the README describes it (built once: it is the
suite's longest build).
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

from helpers import DEMO_DEFAULT_IMAGES, annex, git, image_ids, tags

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```bash\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _blocks() -> list[str]:
    return BLOCK.findall((ROOT / "README.md").read_text(encoding="utf-8"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _fresh_env(home: Path, port: int) -> dict[str, str]:
    """What a new terminal has: system PATH, a home, a git identity; no venv."""
    keep = ("LANG", "LC_ALL", "TMPDIR", "GIT_CONFIG_GLOBAL", "GIT_CONFIG_NOSYSTEM",
            "GIT_AUTHOR_NAME", "GIT_AUTHOR_EMAIL", "GIT_COMMITTER_NAME", "GIT_COMMITTER_EMAIL")
    env = {k: os.environ[k] for k in keep if k in os.environ}
    venv_bin = str(Path(sys.executable).parent)
    path = [p for p in os.environ.get("PATH", "").split(os.pathsep) if p and p != venv_bin]
    env.update(HOME=str(home), PATH=os.pathsep.join(path),
               NV_DATALAD_EMBEDDED_PORT=str(port))
    return env


def test_every_readme_shell_block_runs_in_a_fresh_shell(tmp_path, default_selection):
    blocks = _blocks()
    setup = [b for b in blocks if "pip install" in b]
    assert len(setup) == 2, "the README shows the two set-up commands"
    assert "nv-datalad build specs/demo.yaml" in setup[0]
    assert "pytest" in setup[1]
    # The set-up is what this test run already did: the checkout with its .venv.
    work = tmp_path / "checkout"
    work.mkdir()
    (work / ".venv").symlink_to(Path(sys.executable).parent.parent)
    (work / "specs").symlink_to(ROOT / "specs")
    env = _fresh_env(tmp_path, _free_port())
    first = setup[0].split("&&")[-1].strip()  # the main job of the first set-up command
    proc = subprocess.run(["bash", "-c", first], cwd=work, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # issue 12 finding 12: DataLad's `[INFO] == Command start` lines of the resampling and
    # words runs do not leak into the build's output
    assert "[INFO]" not in proc.stderr + proc.stdout
    for block in (b for b in blocks if b not in setup):
        script = "set -e -o pipefail\n" + block
        proc = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, f"README block failed:\n{block}\n{proc.stderr[-3000:]}"
    _check_demo_dataset(work / "nv-datalad-demo", default_selection)


def _check_demo_dataset(ds: Path, default_selection: set[int]) -> None:
    """The demo dataset is what the README promises: nilearn's default selection, resampled
    and with Neurosynth words by recorded runs, a clean v1.0.0 that `datalad rerun` keeps."""
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
