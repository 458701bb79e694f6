"""Finalise a cluster build: merge the units' branches, release one version, check the store.

Runs after every array task has ended (SLURM ``afterany``: a failed task must not leave the
finalise step waiting forever). A unit whose branch is not in the store failed; then nothing
is merged and the report names the units and the command that resubmits just those. When all
are there: one merge (octopus; unit by unit when git cannot, e.g. two units registered
subdatasets in ``.gitmodules``, which merges as a union), the git-annex branches of the
tasks merged, then the release a single-machine build would make (tables, README,
CITATION.cff, CHANGES.md, build record, one tag), pushed to the store, and the store checked:
``git annex fsck --fast --from`` it and nothing annexed missing from it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from nv_datalad.cluster.job import (
    STORAGE_REMOTE,
    STORE_REMOTE,
    Job,
    store_remote,
    unit_annex_branch,
    unit_branch,
    unit_result_path,
)
from nv_datalad.dataset import layout, nesting
from nv_datalad.dataset import repo as ds
from nv_datalad.dataset.annex import Annex
from nv_datalad.dataset.files import write_json
from nv_datalad.dataset.runner import annex, git, run
from nv_datalad.pipeline import derive, release
from nv_datalad.pipeline.context import BuildContext
from nv_datalad.pipeline.plan import Plan
from nv_datalad.pipeline.report import BuildReport
from nv_datalad.records import Result, Status
from nv_datalad.spec import parse_spec

log = logging.getLogger(__name__)


@dataclass
class Finalised:
    job_id: str
    units: int
    missing: list[int] = field(default_factory=list)  # units whose branch never arrived
    version: str | None = None
    failed: list[str] = field(default_factory=list)  # image failures inside the units
    store_problems: list[str] = field(default_factory=list)

    @property
    def exit_status(self) -> int:
        return 1 if self.missing or self.failed or self.store_problems else 0

    def summary(self, root: Path) -> str:
        if self.missing:
            units = ",".join(map(str, self.missing))
            return (f"job {self.job_id}: unit(s) {units} of {self.units} did not finish, nothing "
                    f"merged; resubmit them with `nv-datalad job-resubmit -d {root} "
                    f"{self.job_id} --units {units}` (their logs are in "
                    f"{root}/.git/nv-datalad/jobs/{self.job_id}/)")
        parts = [f"job {self.job_id}: {self.units} units merged",
                 f"tag {self.version}" if self.version else "no new version"]
        if self.failed:
            parts.append(f"{len(self.failed)} images failed (a rebuild retries them)")
        parts += self.store_problems
        return ", ".join(parts)


def status_path(root: Path, job_id: str) -> Path:
    return root / ".git" / "nv-datalad" / "jobs" / job_id / "finalised.json"


def recorded(root: Path, job_id: str) -> Finalised | None:
    """What the last finalise of ``job_id`` wrote (None: it has not run)."""
    path = status_path(root, job_id)
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return Finalised(job_id, len(Job.read(root, job_id).units), data["missing"],
                     data["version"], data["failed"], data["store_problems"])


def finalise(root: Path, job_id: str) -> Finalised:
    job = Job.read(root, job_id)
    n = len(job.units)
    prefix = f"refs/remotes/{STORE_REMOTE}/nv-job/{job_id}"
    git(root, "fetch", "-q", STORE_REMOTE, f"+refs/heads/nv-job/{job_id}/*:{prefix}/*")
    arrived = set(git(root, "for-each-ref", "--format=%(refname)", prefix).split())
    out = Finalised(job_id, n, missing=[u for u in range(n) if
                                        f"refs/remotes/{STORE_REMOTE}/{unit_branch(job_id, u)}"
                                        not in arrived])
    if not out.missing:
        _release(root, job, out)
    write_json(root, str(status_path(root, job_id).relative_to(root)),
               {"missing": out.missing, "version": out.version, "failed": out.failed,
                "store_problems": out.store_problems, "exit": out.exit_status})
    return out


def _release(root: Path, job: Job, out: Finalised) -> None:
    units = range(len(job.units))
    base = ds.head(root)
    old_spec = git(root, "show", f"{base}:.nv-datalad/spec.yaml", check=False) or None
    _merge(root, job, [f"{STORE_REMOTE}/{unit_branch(job.job_id, u)}" for u in units])
    for u in units:  # git-annex merges every <remote>/git-annex branch it finds
        git(root, "update-ref", f"refs/remotes/nv-unit-{u}/git-annex",
            f"refs/remotes/{STORE_REMOTE}/{unit_annex_branch(job.job_id, u)}")
    annex(root, "merge", "--quiet")
    for u in units:
        git(root, "update-ref", "-d", f"refs/remotes/nv-unit-{u}/git-annex")
    results = _unit_results(root, job)
    if job.nested:
        _check_out_subdatasets(root, job)
    spec = parse_spec(job.spec)
    tree = nesting.Tree(root, nested=job.nested)
    ctx = BuildContext(spec, root, job.server, None, Annex(root), tree, 1, 1000)
    images, cols = release.write_tables(ctx)
    results += derive.vectorize(ctx)
    report = BuildReport(root, Plan(job.mode, job.planned()), results)
    release.release(ctx, report, start_head=base, old_spec_text=old_spec, spec_text=job.spec,
                    images=images, cols=cols)
    results += derive.refresh_report(ctx)
    out.version = report.version
    out.failed = [r.message for r in report.failed]
    _push_and_check(root, job, out)


def _merge(root: Path, job: Job, branches: list[str]) -> None:
    message = f"nv-datalad: merge job {job.job_id} ({len(branches)} units)"
    if job.nested:  # units append to .gitmodules: keep every line of each
        info = root / ".git" / "info" / "attributes"
        info.parent.mkdir(parents=True, exist_ok=True)
        text = info.read_text() if info.is_file() else ""
        if ".gitmodules merge=union" not in text:
            info.write_text(text + ".gitmodules merge=union\n")
    octopus = run(["git", "-C", str(root), "merge", "-q", "--no-edit", "--no-ff", "-m",
                   message, *branches], check=False)
    if octopus.ok:
        return
    git(root, "merge", "--abort", check=False)
    git(root, "reset", "-q", "--hard", "HEAD")
    for branch in branches:  # octopus refused: one at a time
        git(root, "merge", "-q", "--no-edit", "--no-ff", "-m", f"{message}: {branch}", branch)


def _unit_results(root: Path, job: Job) -> list[Result]:
    results = []
    for u in range(len(job.units)):
        data = json.loads((root / unit_result_path(job.job_id, u)).read_text(encoding="utf-8"))
        for r in data["results"]:
            results.append(Result(**{**r, "status": Status(r["status"])}))
    return results


def _check_out_subdatasets(root: Path, job: Job) -> None:
    """The job's subdatasets at the commits the merge recorded: new ones installed from the
    store (no content), existing ones brought forward from it."""
    import datalad.api as dl

    missing = nesting.not_installed(root)
    if missing:
        dl.get(path=[str(root / p) for p in missing], dataset=str(root), get_data=False,
               result_renderer="disabled")
    for cid in sorted({c for unit in job.units for c in unit}):
        rel = nesting.subdataset_dir(cid)
        sub = root / rel
        want = git(root, "rev-parse", f"HEAD:{rel}", check=False).strip()
        if not nesting.is_repository(sub) or not want or ds.head(sub) == want:
            continue
        git(sub, "fetch", "-q", store_remote(sub))
        git(sub, "merge", "-q", "--ff-only", want)
        annex(sub, "merge", "--quiet")


def _push_and_check(root: Path, job: Job, out: Finalised) -> None:
    import datalad.api as dl

    dl.push(dataset=str(root), to=STORE_REMOTE, data="nothing", result_renderer="disabled")
    git(root, "push", "-q", STORE_REMOTE, "--tags")
    content = parse_spec(job.spec).content == "download"
    for repo in [root, *nesting.installed(root)]:
        fsck = annex(repo, "fsck", "--fast", "--quiet", "--from", STORAGE_REMOTE, check=False)
        if not fsck.ok:
            out.store_problems.append(f"fsck --from {STORAGE_REMOTE} in {repo}: "
                                      f"{(fsck.err or fsck.out)[:200]}")
        if content:
            absent = annex(repo, "find", "--not", "--in", STORAGE_REMOTE, "--include=*",
                           "--", *([layout.NEUROVAULT_DIR] if repo == root else []),
                           check=False).out.split()
            if absent:
                out.store_problems.append(f"{len(absent)} files of {repo} not in the store, "
                                          f"e.g. {absent[0]}")
