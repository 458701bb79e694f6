"""Shared fixtures: an isolated git environment, the NeuroVault emulator, the datasets tests read.

Everything runs for real: git, git-annex, DataLad and an HTTP server on 127.0.0.1.
Session fixtures (``shared_emulator``, ``ds``, ``built``, ``default_selection``) are made once
and shared, so they are read-only: a test that changes a server or a dataset takes its own
(``emulator``, ``ds_clone()``, ``helpers.build``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

# git-annex comes from the PyPI wheel inside this interpreter's environment; DataLad finds it
# through PATH, so the venv's bin/ must be on PATH even when the venv is not activated.
_BIN = str(Path(sys.executable).parent)
if _BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _BIN + os.pathsep + os.environ.get("PATH", "")


@pytest.fixture(autouse=True, scope="session")
def git_identity(tmp_path_factory):
    """A git identity and an empty global config, and no system config (/etc/gitconfig), so
    tests never read or write the machine's or the user's settings."""
    home = tmp_path_factory.mktemp("home")
    gitconfig = home / ".gitconfig"
    gitconfig.write_text(
        "[user]\n\tname = nv-datalad tests\n\temail = tests@nv-datalad.invalid\n"
        "[init]\n\tdefaultBranch = main\n"
    )
    env = {
        "GIT_CONFIG_GLOBAL": str(gitconfig),
        "GIT_CONFIG_NOSYSTEM": "1",
        "GIT_AUTHOR_NAME": "nv-datalad tests",
        "GIT_AUTHOR_EMAIL": "tests@nv-datalad.invalid",
        "GIT_COMMITTER_NAME": "nv-datalad tests",
        "GIT_COMMITTER_EMAIL": "tests@nv-datalad.invalid",
        "DATALAD_LOG_LEVEL": "WARNING",
        "NILEARN_DATA": str(home / "nilearn_data"),
    }
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def emulator():
    """A fresh demo-corpus emulator on a free loopback port, for tests that set faults,
    network conditions or mutations, or that count requests from zero."""
    from nv_datalad.emulator import Emulator

    with Emulator(corpus="demo", port=0) as emu:
        yield emu


@pytest.fixture(scope="session")
def shared_emulator():
    """A demo emulator shared by the whole session; never mutate it or reset its counters
    (compare counters before and after instead)."""
    from nv_datalad.emulator import Emulator

    with Emulator(corpus="demo", port=0) as emu:
        yield emu


@pytest.fixture(scope="session")
def default_selection(shared_emulator, tmp_path_factory) -> set[int]:
    """The ids nilearn's ``fetch_neurovault`` selects from the demo corpus with its default
    terms: the oracle for every default build (the corpus is the same in every emulator)."""
    from helpers import nilearn_ids

    with pytest.MonkeyPatch.context() as mp:
        return nilearn_ids(shared_emulator, tmp_path_factory.mktemp("nilearn"), mp,
                           max_images=None)


@contextmanager
def _kept_unchanged(repo: Path) -> Iterator[None]:
    """Fail the session if a test changed a shared dataset (its HEAD, tags or work tree)."""
    from helpers import git

    def state() -> tuple[str, str, str]:
        return (git(repo, "rev-parse", "HEAD"), git(repo, "tag", "--list"),
                git(repo, "status", "--porcelain"))

    before = state()
    yield
    assert state() == before, f"a test changed the shared dataset {repo}"


@pytest.fixture(scope="session")
def built(shared_emulator, tmp_path_factory) -> Iterator[Path]:
    """The demo corpus's default selection built by ``nv-datalad build``, once per session
    (its spec is ``built.parent / "test-ds.yaml"``); read-only: clone it."""
    from helpers import build

    _, ds = build(tmp_path_factory.mktemp("built"), shared_emulator.url)
    with _kept_unchanged(ds):
        yield ds


@pytest.fixture(scope="session")
def ds(tmp_path_factory):
    """The consumer tests' small dataset (tests/dataset_factory.py), made once per session;
    read-only: a test that gets content or commits works on ``ds_clone()``."""
    from dataset_factory import make_dataset

    made = make_dataset(tmp_path_factory.mktemp("factory") / "ds")
    with _kept_unchanged(made.path):
        yield made


@pytest.fixture
def ds_clone(ds, tmp_path) -> Callable[..., Path]:
    """Make fresh clones of ``ds`` under this test's tmp_path (content absent)."""
    from helpers import clone

    def make(name: str = "clone") -> Path:
        return clone(ds.path, tmp_path / name)

    return make
