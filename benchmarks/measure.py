"""Timing one contender: its own subprocess, wall time around it, peak memory from ``os.wait4``.

Every contender runs in a subprocess so that interpreter start-up and imports count (that is
what a user waits for) and so that ``ru_maxrss`` is the contender's own: the largest resident set
reached by the process or any descendant it waited for (git, git-annex), i.e. the biggest single
process of the tree, not their sum. It is started through ``launch.py``, a small process that
times it and reads its ``ru_maxrss``: read from this process, the figure included this process's
own size (see ``launch.py``), so every earlier "peak RSS" was the benchmark's, not the
contender's. A watchdog kills a contender that hangs (its process group only), so one stuck run
cannot stall the whole benchmark.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("nv-bench")

BENCH_DIR = Path(__file__).resolve().parent
PY = sys.executable
NV_CLI = [PY, "-m", "nv_datalad.cli", "-q"]
LAUNCHER = [PY, "-I", "-S", str(BENCH_DIR / "launch.py")]
WATCHDOG_SECONDS = 3600.0


@dataclass
class Measurement:
    """One contender's run: wall time, peak RSS of its process tree, what the server saw."""

    name: str
    n_images: int
    seconds: float
    peak_rss_mb: float
    files: int | None = None  # image files the emulator sent in full
    ok: bool = True
    info: dict[str, Any] = field(default_factory=dict)
    requests: dict[str, int] = field(default_factory=dict)  # the emulator's counters
    load: float | None = None  # 1-minute load average when it started (others share the cores)
    cpu_seconds: float | None = None  # user + system, the contender and its waited-for children

    @property
    def ms_per_image(self) -> float:
        return 1000.0 * self.seconds / max(1, self.n_images)

    @property
    def file_requests(self) -> int:
        """GET and HEAD requests for image files (whether or not a body was sent)."""
        return self.requests.get("file_get", 0) + self.requests.get("file_head", 0)

    @property
    def api_requests(self) -> int:
        return sum(v for k, v in self.requests.items()
                   if not k.startswith("file_") and k != "control")


def bench_env(home: Path) -> dict[str, str]:
    """A subprocess environment with an isolated git identity and config, the venv's tools
    (git-annex) on PATH, nilearn's data dir inside the scratch area and no proxy for
    loopback: no contender may read the user's configuration or reach the internet."""
    gitconfig = home / ".gitconfig"
    gitconfig.write_text(
        "[user]\n\tname = nv-datalad bench\n\temail = bench@nv-datalad.invalid\n"
        "[init]\n\tdefaultBranch = main\n"
    )
    env = dict(os.environ)
    env.update(
        HOME=str(home),
        GIT_CONFIG_GLOBAL=str(gitconfig),
        GIT_AUTHOR_NAME="nv-datalad bench",
        GIT_AUTHOR_EMAIL="bench@nv-datalad.invalid",
        GIT_COMMITTER_NAME="nv-datalad bench",
        GIT_COMMITTER_EMAIL="bench@nv-datalad.invalid",
        DATALAD_LOG_LEVEL="WARNING",
        NILEARN_DATA=str(home / "nilearn_data"),
        NO_PROXY="127.0.0.1,localhost",
        no_proxy="127.0.0.1,localhost",
        PATH=str(Path(PY).parent) + os.pathsep + env.get("PATH", ""),
    )
    return env


def measure(
    name: str,
    n_images: int,
    argv: Sequence[str],
    env: dict[str, str],
    logs: Path,
    *,
    cwd: Path | None = None,
    emulator: Any = None,
) -> Measurement:
    """Run ``argv`` to completion through ``launch.py``: its wall time and peak RSS.

    The process's last stdout line, if a JSON object, becomes ``info``. With an emulator, its
    counters are reset first, so the requests recorded are this contender's only.
    """
    if emulator is not None:
        emulator.reset_counters()
    slug = "".join(c if c.isalnum() else "-" for c in name)
    out, err, result = (logs / f"{slug}.{ext}" for ext in ("out", "err", "launch.json"))
    log.info("running %s%s", name, f" (N={n_images})" if n_images else "")
    load = os.getloadavg()[0]
    with out.open("wb") as fo, err.open("wb") as fe:
        start = time.perf_counter()
        proc = subprocess.Popen([*LAUNCHER, str(result), *argv], env=env, cwd=cwd, stdout=fo,
                                stderr=fe, start_new_session=True)
        timer = threading.Timer(WATCHDOG_SECONDS, _kill_group, (proc.pid,))
        timer.start()
        try:
            code = proc.wait()
        finally:
            timer.cancel()
        seconds = time.perf_counter() - start
    files = sum(emulator.downloads.values()) if emulator is not None else None
    requests = dict(emulator.counters) if emulator is not None else {}
    launched = _read_json(result)  # missing if the watchdog killed the launcher too
    ok = code == 0 and launched.get("exit") == 0
    if not ok:
        log.warning("%s exited with %s; see %s\n%s", name, code, err,
                    err.read_text(errors="replace")[-2000:])
    m = Measurement(name, n_images, float(launched.get("seconds", seconds)),
                    launched.get("maxrss_kb", 0) / 1024.0, files, ok, _last_json(out), requests,
                    load, launched.get("cpu"))
    log.info("  %.2f s, peak RSS %.0f MB, files served %s", m.seconds, m.peak_rss_mb, files)
    return m


def launcher_floor_mb(env: dict[str, str], logs: Path) -> float:
    """The smallest peak RSS a contender can show: the launcher's own size (``/bin/true``)."""
    return measure("launcher floor (/bin/true)", 0, ["true"], env, logs).peak_rss_mb


def _read_json(path: Path) -> dict[str, Any]:
    with contextlib.suppress(OSError, ValueError):
        parsed = json.loads(path.read_text())
        return parsed if isinstance(parsed, dict) else {}
    return {}


def _last_json(path: Path) -> dict[str, Any]:
    lines = path.read_text(errors="replace").strip().splitlines()
    if lines:
        with contextlib.suppress(ValueError):
            parsed = json.loads(lines[-1])
            return parsed if isinstance(parsed, dict) else {}
    return {}


def _kill_group(pid: int) -> None:
    """Watchdog: a contender that hangs is killed (its own process group only)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)


def worker_argv(kind: str, **params: Any) -> list[str]:
    """The command line that runs one of ``workers.py``'s Python contenders in a subprocess."""
    return [PY, str(BENCH_DIR / "workers.py"), kind, json.dumps(params)]


def rmtree(path: Path) -> None:
    """git-annex makes its object directories read-only: restore write bits, then delete."""
    for root, dirs, _files in os.walk(path):
        for d in dirs:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(root, d), 0o755)
    shutil.rmtree(path, ignore_errors=True)
