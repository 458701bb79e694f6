"""A real single-node SLURM on localhost for the cluster tests (issue 15), made on demand.

Issue 15 asks for a test on a real SLURM, installed and configured by the test when missing, that
fails (never skips) when SLURM cannot be had. ``ensure_cluster`` does that on Debian 12 as root
without systemd: apt-get installs ``slurm-wlm`` and ``munge``, then munged, slurmctld and slurmd
are started directly with a slurm.conf of our own; a cluster that already answers is reused.
The conf goes to /etc/slurm/slurm.conf (the path Debian's binaries read) unless a conf that we
did not write is there: then it is ``<workdir>/slurm.conf`` and ``SLURM_CONF`` is set in
``os.environ`` for the session, so the sbatch that nv-datalad runs as a subprocess finds it.
A test module gets the session fixture with ``pytest_plugins = ["slurm"]`` and asks for
``slurm_cluster``, a ``Cluster``; tasks inherit the submitter's environment (sbatch's default
``--export=ALL``), so PATH, the git identity and SLURM_CONF reach them.

Learning a finished array task's state without slurmdbd (what a finalise step can rely on):

- ``sacct`` does not work: with ``AccountingStorageType=accounting_storage/none`` it exits 1
  with "Slurm accounting storage is disabled".
- ``squeue -h -t all -j ID -o '%i %T'`` (and ``scontrol show job ID``) still show a finished
  job's COMPLETED / FAILED / CANCELLED, but only for ``MinJobAge`` seconds after its end (300 by
  default, 3600 on this cluster); after that, and after a slurmctld restart with state cleared,
  the record is gone, so it can only add detail, never decide.
- What decides is a marker the task writes itself as its last step after success: a task that
  failed, was cancelled (``scancel`` signals the whole batch script), timed out or lost its node
  leaves none. Cancellation also leaves
  ``slurmstepd-<node>: error: *** JOB <task's own id> ON <node> CANCELLED AT <time> ***``
  in the task's ``--output`` file, a readable reason for the report.
- A job that depends with ``afterok`` on an array where one task failed or was cancelled never
  starts: it stays PENDING with reason ``DependencyNeverSatisfied`` (no ``kill_invalid_depend``
  in SchedulerParameters here, nor by default on most clusters). A finalise that must report the
  failed units therefore needs ``afterany`` and the markers.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

log = logging.getLogger(__name__)

PARTITION = "debug"
DEFAULT_CONF = Path("/etc/slurm/slurm.conf")
MARK = "# written by nv-datalad tests/slurm.py; safe to overwrite"
BINARIES = ("sbatch", "squeue", "sinfo", "scancel", "scontrol", "slurmctld", "slurmd", "munged",
            "munge")
SBIN = ("/usr/sbin", "/sbin")
READY = {"idle", "mix", "alloc"}
MUNGE_KEY = Path("/etc/munge/munge.key")
MUNGE_RUN = Path("/run/munge")


@dataclass(frozen=True)
class Cluster:
    """What a test needs to submit to the cluster and to explain a failure from its logs."""

    partition: str
    cpus: int
    conf: Path
    slurmctld_log: Path | None
    slurmd_log: Path | None
    #: True when this call started the daemons (False: an answering cluster was reused).
    started: bool

    @property
    def env(self) -> dict[str, str]:
        """The variables a subprocess calling sbatch needs: none when the conf is the default."""
        return {} if self.conf == DEFAULT_CONF else {"SLURM_CONF": str(self.conf)}

    def sbatch(self, *args: str) -> str:
        """Submit to this cluster's partition with ``sbatch --parsable``; the job id (an
        array's id without task suffix)."""
        out = _run("sbatch", "--parsable", f"--partition={self.partition}", *args).stdout
        return out.strip().split(";")[0]

    def scancel(self, job: str) -> None:
        _run("scancel", job)

    def wait_until(self, done: Callable[[], bool], what: str, timeout: float = 240) -> None:
        """Poll ``done`` until it holds; a bounded wait, so a stuck job fails the test with the
        queue instead of hanging it."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                _fail(f"{what} not reached after {timeout:.0f} s; queue: "
                      + _run("squeue", "-r", "-t", "all").stdout.replace("\n", " | "))
            time.sleep(0.3)

    def wait_gone(self, job: str) -> None:
        """Wait until squeue no longer lists ``job`` as pending or running (all tasks ended)."""
        self.wait_until(lambda: not _run("squeue", "-h", "-j", job).stdout.strip(),
                        f"end of job {job}")

    def reason(self, job: str) -> str:
        """Why a pending job waits (e.g. ``DependencyNeverSatisfied``)."""
        return _run("squeue", "-h", "-j", job, "-o", "%r").stdout.strip()

    def task_states(self, job: str) -> dict[str, str]:
        """Array task id -> state (COMPLETED, FAILED, CANCELLED, RUNNING, ...) from squeue,
        which keeps a finished job for MinJobAge seconds: detail for a report, not proof."""
        out = _run("squeue", "-h", "-t", "all", "-r", "-j", job, "-o", "%K %T").stdout
        return dict(line.split() for line in out.splitlines() if line.strip())


def _fail(message: str) -> None:
    pytest.fail(message, pytrace=False)


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(SBIN))


def _run(*args: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [_which(args[0]) or args[0], *args[1:]]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=check)


def _install() -> None:
    """apt-get install slurm-wlm and munge, updating the package lists only when they lack them."""
    missing = [b for b in BINARIES if _which(b) is None]
    if not missing:
        return
    hint = ("SLURM is absent (missing " + ", ".join(missing) + ") and not installable here: {}; "
            "install Debian's slurm-wlm and munge (apt-get install slurm-wlm munge)")
    if os.geteuid() != 0 or _which("apt-get") is None:
        _fail(hint.format("not root or no apt-get"))
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    packages = ["slurm-wlm", "munge"]
    start = time.monotonic()
    try:
        if subprocess.run(["apt-get", "install", "-s", *packages], capture_output=True,
                          env=env).returncode != 0:
            subprocess.run(["apt-get", "update"], capture_output=True, env=env, check=True,
                           timeout=600)
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", *packages],
                       capture_output=True, text=True, env=env, check=True, timeout=900)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        tail = (getattr(e, "stderr", "") or "").strip().splitlines()[-1:] or [str(e)]
        _fail(hint.format(f"apt-get failed ({tail[0]})"))
    log.info("installed slurm-wlm and munge in %.1f s", time.monotonic() - start)


def _munge_ok() -> bool:
    cred = subprocess.run([_which("munge") or "munge", "-n"], capture_output=True, timeout=10)
    if cred.returncode != 0:
        return False
    return subprocess.run([_which("unmunge") or "unmunge"], input=cred.stdout,
                          capture_output=True, timeout=10).returncode == 0


def _start_munged() -> bool:
    """Start munged as the munge user (as Debian's init script does); True if we started it."""
    if _munge_ok():
        return False
    if not MUNGE_KEY.exists():
        _run("mungekey", "--create", "--keyfile", str(MUNGE_KEY))
    for path in (MUNGE_RUN, Path("/var/lib/munge"), Path("/var/log/munge")):
        path.mkdir(parents=True, exist_ok=True)
        shutil.chown(path, "munge", "munge")
    shutil.chown(MUNGE_KEY, "munge", "munge")
    MUNGE_KEY.chmod(0o600)
    MUNGE_RUN.chmod(0o755)
    _run("runuser", "-u", "munge", "--", _which("munged") or "munged")
    for _ in range(50):
        if _munge_ok():
            return True
        time.sleep(0.2)
    _fail(f"munged did not start: {_tail(Path('/var/log/munge/munged.log'))}")
    return True


def _node_resources() -> tuple[int, int]:
    """CPUs and MB of memory as slurmd itself detects them, so the node never drains as
    'Low RealMemory' or 'Low CPUs' for a config that claims more than it has."""
    fields = dict(f.split("=", 1) for f in _run("slurmd", "-C").stdout.split() if "=" in f)
    return int(fields["CPUs"]), int(fields["RealMemory"])


def _conf_text(workdir: Path) -> str:
    cpus, memory = _node_resources()
    lines = [
        MARK,
        "ClusterName=nvtest",
        "SlurmctldHost=localhost",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_CPU",  # one CPU per task, so several tasks run at once
        "MpiDefault=none",
        "ReturnToService=2",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "MinJobAge=3600",  # finished records stay visible to squeue -t all for an hour
        "SchedulerType=sched/backfill",
        f"StateSaveLocation={workdir / 'state'}",
        f"SlurmdSpoolDir={workdir / 'spool'}",
        f"SlurmctldLogFile={workdir / 'slurmctld.log'}",
        f"SlurmdLogFile={workdir / 'slurmd.log'}",
        f"SlurmctldPidFile={workdir / 'slurmctld.pid'}",
        f"SlurmdPidFile={workdir / 'slurmd.pid'}",
        f"NodeName=localhost CPUs={cpus} RealMemory={memory} State=UNKNOWN",
        f"PartitionName={PARTITION} Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
    ]
    return "\n".join(lines) + "\n"


def _ours(conf: Path) -> bool:
    return conf.exists() and conf.read_text().startswith(MARK)


def _conf_path(workdir: Path) -> Path:
    """Where our conf goes: the default path unless somebody else's conf is there."""
    return workdir / "slurm.conf" if DEFAULT_CONF.exists() and not _ours(DEFAULT_CONF) \
        else DEFAULT_CONF


def _local(daemon: str) -> bool:
    """Whether a process of that name runs here: without one, our conf's cluster cannot answer,
    and asking sinfo would cost its ~9 s of connection retries."""
    return any(_is(comm, daemon) for comm in Path("/proc").glob("[0-9]*/comm"))


def _use_conf(conf: Path) -> None:
    if conf == DEFAULT_CONF:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = str(conf)


def _node_states() -> set[str] | None:
    """The node states sinfo reports, or None when no controller answers."""
    try:
        out = _run("sinfo", "-h", "-o", "%t", timeout=15, check=False)
    except subprocess.TimeoutExpired:
        return None
    return set(out.stdout.split()) if out.returncode == 0 else None


def _tail(path: Path | None, lines: int = 5) -> str:
    if path is None or not path.exists():
        return f"(no log at {path})"
    return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])


def _wait_ready(workdir: Path, stderr: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    states: set[str] | None = None
    while time.monotonic() < deadline:
        states = _node_states()
        if states and states <= READY:
            return
        time.sleep(0.5)
    _fail(f"SLURM did not come up within {timeout:.0f} s (node states {states}) {stderr}; "
          f"slurmctld.log: {_tail(workdir / 'slurmctld.log')}; "
          f"slurmd.log: {_tail(workdir / 'slurmd.log')}")


def _shutdown(workdir: Path) -> None:
    """Stop slurmctld and slurmd started from our conf and wait until their processes are gone."""
    _run("scontrol", "shutdown", check=False)
    deadline = time.monotonic() + 30
    for name in ("slurmctld.pid", "slurmd.pid"):
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            pid = int((workdir / name).read_text())
            comm = Path(f"/proc/{pid}/comm")
            while time.monotonic() < deadline and _is(comm, name.split(".")[0]):
                time.sleep(0.2)
            if _is(comm, name.split(".")[0]):
                os.kill(pid, 9)


def _is(comm: Path, name: str) -> bool:
    """Whether the process behind a /proc/PID/comm runs that program (a stale pid may have been
    reused by another one)."""
    try:
        return comm.read_text().strip() == name
    except (FileNotFoundError, ProcessLookupError):
        return False


def _describe(started: bool) -> Cluster:
    """The cluster as the controller reports it, whether we started it or found it running."""
    config = dict(
        (k.strip(), v.strip()) for k, _, v in
        (line.partition("=") for line in _run("scontrol", "show", "config").stdout.splitlines())
    )
    partitions = _run("sinfo", "-h", "-o", "%P %C").stdout.split("\n")
    default = next((p for p in partitions if p.split(" ")[0].endswith("*")), partitions[0])
    name, cpus = default.split(" ")
    log_path = {k: Path(config[k]) if config.get(k, "(null)") != "(null)" else None
                for k in ("SlurmctldLogFile", "SlurmdLogFile")}
    return Cluster(partition=name.rstrip("*"), cpus=int(cpus.split("/")[-1]),
                   conf=Path(os.environ.get("SLURM_CONF", DEFAULT_CONF)),
                   slurmctld_log=log_path["SlurmctldLogFile"],
                   slurmd_log=log_path["SlurmdLogFile"], started=started)


def ensure_cluster(workdir: Path) -> Cluster:
    """A working SLURM on localhost: the one that answers, else ours started from ``workdir``.

    Fails the test (never skips) when SLURM is missing and cannot be installed. Daemons started
    here keep running after the call; ``stop_cluster`` ends them. Which daemons this started is
    kept in ``<workdir>/owned.json`` so that whichever session ends last can stop them.
    """
    _install()
    current = Path(os.environ.get("SLURM_CONF", DEFAULT_CONF))
    if current.exists() and not _ours(current):  # somebody else's cluster: use it if it answers
        states = _node_states()
        if states and states <= READY:
            return _describe(started=False)
    workdir.mkdir(parents=True, exist_ok=True)
    conf = _conf_path(workdir)
    _use_conf(conf)
    states = _node_states() if _ours(conf) and _local("slurmctld") else None
    if states and states <= READY:
        return _describe(started=False)
    start = time.monotonic()
    munged = _start_munged()
    if states is not None:  # a controller of ours answers but its node is unusable: restart
        _shutdown(workdir)
    for sub in ("state", "spool"):
        (workdir / sub).mkdir(exist_ok=True)
    conf.parent.mkdir(parents=True, exist_ok=True)
    conf.write_text(_conf_text(workdir))
    owned = workdir / "owned.json"
    previous = json.loads(owned.read_text()) if owned.exists() else {}
    owned.write_text(json.dumps({"munged": munged or previous.get("munged", False),
                                 "conf": str(conf)}))
    started = [_run("slurmctld", "-i", check=False), _run("slurmd", "-N", "localhost", check=False)]
    _wait_ready(workdir, " ".join(p.stderr.strip() for p in started))
    log.info("SLURM up in %.1f s (conf %s)", time.monotonic() - start, conf)
    return _describe(started=True)


def stop_cluster(workdir: Path) -> None:
    """Stop what ``ensure_cluster`` started from ``workdir`` (nothing when it reused a cluster)."""
    owned = workdir / "owned.json"
    if not owned.exists():
        return
    record = json.loads(owned.read_text())
    _use_conf(Path(record["conf"]))
    _shutdown(workdir)
    if record.get("munged"):
        _run("munged", "--stop", check=False)
    owned.unlink()


@contextlib.contextmanager
def _flock(path: Path, mode: int) -> Iterator[int]:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, mode)
        yield fd
    finally:
        os.close(fd)


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[Cluster]:
    """The session's cluster, shared with other pytest sessions on this machine.

    Each session holds a shared lock on ``users.lock`` while it runs; the one that can turn it
    into an exclusive lock at its end is the last user and stops the daemons, so a session never
    pulls the cluster from under another one's jobs.
    """
    workdir = Path(tempfile.gettempdir()) / "nv-datalad-slurm"
    workdir.mkdir(exist_ok=True)
    with _flock(workdir / "users.lock", fcntl.LOCK_SH) as users:
        with _flock(workdir / "bringup.lock", fcntl.LOCK_EX):
            cluster = ensure_cluster(workdir)
        yield cluster
        fcntl.flock(users, fcntl.LOCK_UN)
        with _flock(workdir / "bringup.lock", fcntl.LOCK_EX):
            try:
                fcntl.flock(users, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return  # another session still uses the cluster; its end stops it
            stop_cluster(workdir)
