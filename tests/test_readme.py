"""The README's shell blocks, run as written in a fresh shell after the two set-up commands.

A fresh shell has no activated venv: only what the README itself tells the reader to do may put
nv-datalad, DataLad and git-annex on PATH. The demo build runs against the embedded emulator on
a free port (``NV_DATALAD_EMBEDDED_PORT``), so no other emulator on the default port is met.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

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


def test_every_readme_shell_block_runs_in_a_fresh_shell(tmp_path):
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
    for block in (b for b in blocks if b not in setup):
        script = "set -e -o pipefail\n" + block
        proc = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, f"README block failed:\n{block}\n{proc.stderr[-3000:]}"
