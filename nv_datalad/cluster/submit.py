"""Plan on the submit host, publish the plan through the RIA store, run the units, finalise.

``nv-datalad build SPEC -d PATH --slurm`` (or ``--local-array``): select and plan as a build
would, split the plan into units (:mod:`~nv_datalad.cluster.units`), commit the job manifest,
push the dataset to the store, then run one array task per unit and one finalise step after
all of them: on SLURM as a job array plus a job with ``--dependency=afterany`` on it; locally
as processes on this machine (the same task command, for debugging and for one big machine).
"""

from __future__ import annotations

import logging
import shlex
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from nv_datalad.cluster import units as split_units
from nv_datalad.cluster.finalise import Finalised, finalise, recorded, status_path
from nv_datalad.cluster.job import (
    JOBS_DIR,
    STORE_REMOTE,
    Job,
    item_dict,
    manifest_path,
    new_job_id,
)
from nv_datalad.cluster.task import store_path
from nv_datalad.dataset import nesting, recover, revision
from nv_datalad.dataset import repo as ds
from nv_datalad.dataset.annex import Annex
from nv_datalad.dataset.archive import ensure_ria_sibling
from nv_datalad.dataset.files import write_text
from nv_datalad.dataset.runner import git, run
from nv_datalad.dataset.state import local_images
from nv_datalad.errors import DatasetError, EnvironmentProblem, SpecError
from nv_datalad.neurovault.client import ClientConfig, NeuroVaultClient
from nv_datalad.pipeline import nested_for, plan_images
from nv_datalad.pipeline.context import BuildContext
from nv_datalad.pipeline.plan import Change
from nv_datalad.spec import Spec, load_spec, spec_to_yaml

log = logging.getLogger(__name__)

WORK = (Change.NEW, Change.CONTENT, Change.METADATA)
#: Seconds a task may print nothing before the local runner calls it stalled.
TASK_STALL = 6 * 3600.0


@dataclass
class Submitted:
    job_id: str | None
    dataset: Path
    units: list[list[int]] = field(default_factory=list)
    slurm_ids: tuple[str, str] | None = None  # (array job, finalise job)
    finalised: Finalised | None = None

    @property
    def exit_status(self) -> int:
        return self.finalised.exit_status if self.finalised else 0

    def summary(self) -> str:
        if self.job_id is None:
            return f"{self.dataset}: nothing to do, no job submitted"
        if self.finalised is not None:
            return f"{self.dataset}: {self.finalised.summary(self.dataset)}"
        array, fin = self.slurm_ids or ("?", "?")
        return (f"job {self.job_id}: {len(self.units)} units submitted as SLURM array {array}, "
                f"finalise job {fin} (afterany); follow with `squeue -j {array},{fin}`; the "
                f"result lands in {status_path(self.dataset, self.job_id)}")


def _check(spec: Spec, prune: bool, local: bool) -> None:
    """Everything a cluster build needs, before anything is written."""
    if not local and shutil.which("sbatch") is None:
        raise EnvironmentProblem("sbatch is not on PATH; run this on a SLURM submit host, or "
                                 "use --local-array to run the tasks here")
    if not spec.ria_store:
        raise SpecError("a cluster build needs `ria: {store: ria+file:///shared/path}` in the "
                        "spec: the store every node clones from and pushes to")
    store_path(spec.ria_store)
    if spec.server == "embedded" or spec.mode == "offline":
        raise SpecError("a cluster build needs a NeuroVault every node reaches: set `server:` "
                        "to a URL (start `nv-datalad emulator` for a local one)")
    if prune:
        raise SpecError("--prune is not supported with a cluster build; run it on one machine")


def submit(spec_path: str | Path | Spec, dataset: str | Path | None, *, tasks: int,
           local: bool, sbatch_args: list[str] | None = None, wait: bool = False,
           jobs: int = 4, mode: str | None = None, server: str | None = None,
           prune: bool = False) -> Submitted:
    spec = spec_path if isinstance(spec_path, Spec) else load_spec(spec_path)
    spec = spec.with_overrides(mode=mode, server=server)
    _check(spec, prune, local)
    root = Path(dataset).absolute() if dataset is not None else ds.default_target(spec.name)
    ds.check_target(root, spec.name)
    ds.ensure_identity()
    client = NeuroVaultClient(spec.server, ClientConfig(workers=max(4, jobs)))
    client.probe()
    exists = ds.is_dataset(root)
    nested = nested_for(root, spec, exists)
    with ds.locked(root):
        ds.create(root, description=spec.description)
        recover.recover(root)
        ctx = BuildContext(spec, root, spec.server, client, Annex(root),
                           nesting.Tree(root, nested=nested, jobs=jobs), jobs, 1000)
        _, plan, _ = plan_images(ctx, local_images(root), settle=True)
        work = [p for p in plan.items if p.change in WORK]
        if not work:
            return Submitted(None, root)
        units = [u.collections for u in split_units.split(split_units.collect(
            (p.collection_id, p.image_id, int((p.record or {}).get("file_size") or 0))
            for p in work), tasks)]
        job = Job(new_job_id(), spec.ria_store or "", revision.dataset_id(root), spec.server,
                  spec_to_yaml(spec), nested, spec.mode, units,
                  [item_dict(p) for p in plan.items])
        _publish(root, job)
    out = Submitted(job.job_id, root, units)
    if local:
        run_local(root, job, range(len(units)), jobs=jobs)
        out.finalised = finalise_locked(root, job.job_id)
    else:
        out.slurm_ids = submit_slurm(root, job, range(len(units)), sbatch_args or [])
        if wait:
            out.finalised = wait_for(root, job.job_id, out.slurm_ids[1])
    return out


def _publish(root: Path, job: Job) -> None:
    """The manifest committed, the dataset (and its subdatasets) in the store."""
    import datalad.api as dl

    write_text(root, manifest_path(job.job_id), job.to_json())
    if job.nested:  # a clone from the store (every task's) finds subdatasets there
        git(root, "config", "-f", ".datalad/config",
            "datalad.get.subdataset-source-candidate-200nvstore", f"{job.store}#{{id}}")
    ds.commit(root, f"nv-datalad: job {job.job_id}: {len(job.units)} units",
              paths=[JOBS_DIR, ".datalad/config"])
    ensure_ria_sibling(root, job.store, STORE_REMOTE)
    for sub in nesting.installed(root):
        ensure_ria_sibling(sub, job.store, STORE_REMOTE)
    dl.push(dataset=str(root), to=STORE_REMOTE, recursive=job.nested, data="anything",
            result_renderer="disabled")


def _task_command(job: Job) -> list[str]:
    """What every array task runs, but its unit and work directory."""
    return [sys.executable, "-m", "nv_datalad.cli", "job-task", job.store, job.dataset_id,
            job.job_id]


def _logs(root: Path, job_id: str) -> Path:
    path = root / ".git" / "nv-datalad" / "jobs" / job_id
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_local(root: Path, job: Job, units, *, jobs: int) -> None:
    """The array on this machine: the same task command, ``jobs`` at a time."""
    work = _logs(root, job.job_id) / "work"

    def one(unit: int) -> None:
        proc = run([*_task_command(job), str(unit), "--workdir", str(work)], check=False,
                   stall=TASK_STALL)
        (_logs(root, job.job_id) / f"unit-{unit}.log").write_bytes(proc.stdout + proc.stderr)

    with ThreadPoolExecutor(max(1, min(jobs, 4))) as pool:
        list(pool.map(one, units))


def finalise_locked(root: Path, job_id: str) -> Finalised:
    with ds.locked(root):
        return finalise(root, job_id)


def submit_slurm(root: Path, job: Job, units, sbatch_args: list[str]) -> tuple[str, str]:
    """One array over ``units`` and one finalise job after it; returns both job ids."""
    logs = _logs(root, job.job_id)
    script = logs / "task.sh"  # the unit and the node-local space come from SLURM
    script.write_text(_script(" ".join(map(shlex.quote, _task_command(job))) +
                              ' "$SLURM_ARRAY_TASK_ID" --workdir "${TMPDIR:-/tmp}"'))
    array = _sbatch(["--array=" + ",".join(map(str, units)), f"--job-name=nv-{job.job_id}",
                     f"--output={logs}/unit-%a.log", *sbatch_args, str(script)])
    fin = logs / "finalise.sh"
    fin.write_text(_script(" ".join(map(shlex.quote, [
        sys.executable, "-m", "nv_datalad.cli", "job-finalise", "-d", str(root), job.job_id]))))
    final = _sbatch([f"--dependency=afterany:{array}", f"--job-name=nv-{job.job_id}-finalise",
                     f"--output={logs}/finalise.log", *sbatch_args, str(fin)])
    log.info("submitted job %s: array %s (%d tasks), finalise %s", job.job_id, array,
             len(list(units)), final)
    return array, final


def _script(command: str) -> str:
    path = shlex.quote(str(Path(sys.executable).parent))
    return f"#!/bin/bash\nset -eu\nexport PATH={path}:\"$PATH\"\nexec {command}\n"


def _sbatch(args: list[str]) -> str:
    proc = run(["sbatch", "--parsable", *args], check=False)
    if not proc.ok:
        raise DatasetError(f"sbatch failed: {proc.err or proc.out}")
    return proc.out.strip().split(";")[0]


def wait_for(root: Path, job_id: str, finalise_id: str, poll: float = 2.0) -> Finalised:
    """Until the finalise job has left the queue; then its recorded outcome."""
    while run(["squeue", "-h", "-j", finalise_id], check=False).out.strip():
        time.sleep(poll)
    outcome = recorded(root, job_id)
    if outcome is None:
        raise DatasetError(f"finalise job {finalise_id} ended without a result; see "
                           f"{_logs(root, job_id)}/finalise.log")
    return outcome


def resubmit(root: Path, job_id: str, units: list[int] | None, *, local: bool,
             sbatch_args: list[str] | None = None, wait: bool = False,
             jobs: int = 4) -> Submitted:
    """Run again the units that did not arrive (or ``units``), then finalise again."""
    root = root.absolute()
    job = Job.read(root, job_id)
    last = recorded(root, job_id)
    todo = units if units is not None else (
        last.missing if last is not None else list(range(len(job.units))))
    out = Submitted(job_id, root, job.units)
    if local:
        run_local(root, job, todo, jobs=jobs)
        out.finalised = finalise_locked(root, job_id)
    else:
        out.slurm_ids = submit_slurm(root, job, todo, sbatch_args or [])
        if wait:
            out.finalised = wait_for(root, job_id, out.slurm_ids[1])
    return out
