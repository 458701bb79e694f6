"""The runner's guarantees for every process a build starts: it dies with the build, what it
started in turn is stopped by the next build, and a missing program is named with what to
install."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from nv_datalad.dataset import repo
from nv_datalad.dataset.runner import run
from nv_datalad.errors import EnvironmentProblem

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="the parent-death signal is Linux's")


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def test_a_child_of_a_killed_build_dies_with_it(tmp_path):
    pidfile = tmp_path / "child.pid"
    build = subprocess.Popen([sys.executable, "-c", (
        "from nv_datalad.dataset.runner import run\n"
        f"run(['sh', '-c', 'echo $$ > {pidfile}; exec sleep 60'])\n")])
    try:
        deadline = time.monotonic() + 30
        while not pidfile.is_file() or not pidfile.read_text().strip():
            assert build.poll() is None and time.monotonic() < deadline, "child never started"
            time.sleep(0.05)
        child = int(pidfile.read_text())
        assert _alive(child)
        build.send_signal(signal.SIGKILL)
        build.wait()
        deadline = time.monotonic() + 10
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child), "the child outlived the build that started it"
    finally:
        build.kill()
        build.wait()
        if pidfile.is_file() and _alive(int(pidfile.read_text())):
            os.kill(int(pidfile.read_text()), signal.SIGKILL)


def _wait_for_pid(pidfile: Path, build: subprocess.Popen) -> int:
    deadline = time.monotonic() + 30
    while not pidfile.is_file() or not pidfile.read_text().strip():
        assert build.poll() is None and time.monotonic() < deadline, "child never started"
        time.sleep(0.05)
    return int(pidfile.read_text())


def test_the_next_build_stops_what_a_killed_builds_children_started(tmp_path):
    """git-annex's own children (``git config`` of ``init``, ``transferrer`` of ``addurl -J``)
    outlive a killed build; the build that takes its lock over stops them before it goes on."""
    root, pidfile = tmp_path / "ds", tmp_path / "grandchild.pid"
    build = subprocess.Popen([sys.executable, "-c", (
        "from pathlib import Path\n"
        "from nv_datalad.dataset import repo\n"
        "from nv_datalad.dataset.runner import run\n"
        f"with repo.locked(Path({str(root)!r})):\n"
        f"    run(['sh', '-c', 'sleep 60 & echo $! > {pidfile}; wait'])\n")])
    grandchild = 0
    try:
        grandchild = _wait_for_pid(pidfile, build)
        build.send_signal(signal.SIGKILL)
        build.wait()
        time.sleep(0.2)
        assert _alive(grandchild), "nothing outlived the build: this test tests nothing"
        with repo.locked(root):
            assert not _alive(grandchild)
            assert os.environ[repo.BUILD_TOKEN_ENV] in (root / ".git" / repo.LOCK_NAME).read_text()
        assert repo.BUILD_TOKEN_ENV not in os.environ
    finally:
        build.kill()
        build.wait()
        if grandchild and _alive(grandchild):
            os.kill(grandchild, signal.SIGKILL)


def test_a_missing_program_is_named_with_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EnvironmentProblem, match=r"^git is not on PATH; install git"):
        run(["git", "--version"])
