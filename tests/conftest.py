"""Shared fixtures: an isolated git environment, the NeuroVault emulator, throwaway datasets.

Everything runs for real: git, git-annex, DataLad and an HTTP server on 127.0.0.1.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# git-annex comes from the PyPI wheel inside this interpreter's environment; DataLad finds it
# through PATH, so the venv's bin/ must be on PATH even when the venv is not activated.
_BIN = str(Path(sys.executable).parent)
if _BIN not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _BIN + os.pathsep + os.environ.get("PATH", "")


@pytest.fixture(autouse=True, scope="session")
def git_identity(tmp_path_factory):
    """A git identity and an empty global config, so tests never read or write the user's."""
    home = tmp_path_factory.mktemp("home")
    gitconfig = home / ".gitconfig"
    gitconfig.write_text(
        "[user]\n\tname = nv-datalad tests\n\temail = tests@nv-datalad.invalid\n"
        "[init]\n\tdefaultBranch = main\n"
    )
    env = {
        "GIT_CONFIG_GLOBAL": str(gitconfig),
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
    """A fresh demo-corpus emulator on a free loopback port (state is per test)."""
    from nv_datalad.emulator import Emulator

    with Emulator(corpus="demo", port=0) as emu:
        yield emu


@pytest.fixture(scope="session")
def shared_emulator():
    """A demo emulator shared by read-only tests; never mutate it."""
    from nv_datalad.emulator import Emulator

    with Emulator(corpus="demo", port=0) as emu:
        yield emu
