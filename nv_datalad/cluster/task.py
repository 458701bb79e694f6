"""One array task: clone from the RIA store, build one unit on its own branch, push it back.

The FAIRly-big pattern: a task never writes the shared dataset. It clones from the store into
node-local space, applies its unit of the job's plan (downloads, annex, metadata, derivatives
under ``datalad run`` whose record names the job), copies the content to the store's storage
remote, declares its temporary clone dead (so no location log points at a deleted disk), and
pushes its branch and its git-annex branch under names of its own. Pushes to one store
repository are serialised with a lock file in the store, as FAIRly-big does with ``flock``.
With per-collection subdatasets the unit's subdatasets are pushed to the store as datasets of
their own (each owned by this unit only).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import shutil
import socket
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path
from urllib.parse import urlsplit

from nv_datalad.cluster.job import (
    STORAGE_REMOTE,
    STORE_REMOTE,
    Job,
    store_remote,
    unit_annex_branch,
    unit_branch,
    unit_result_path,
)
from nv_datalad.dataset import nesting
from nv_datalad.dataset.annex import Annex
from nv_datalad.dataset.archive import ensure_ria_sibling, trust_remote
from nv_datalad.dataset.files import utcnow, write_json
from nv_datalad.dataset.runner import annex, git
from nv_datalad.dataset.state import local_collections
from nv_datalad.errors import DatasetError
from nv_datalad.neurovault.client import ClientConfig, NeuroVaultClient
from nv_datalad.pipeline import apply, derive
from nv_datalad.pipeline.context import BuildContext
from nv_datalad.pipeline.plan import Plan
from nv_datalad.pipeline.select import Selected, Selection
from nv_datalad.spec import parse_spec

log = logging.getLogger(__name__)


def store_path(store: str) -> Path:
    """The directory of a ``ria+file://`` store (the only kind whose pushes we can lock)."""
    parts = urlsplit(store.removeprefix("ria+"))
    if parts.scheme != "file":
        raise DatasetError(f"{store}: only ria+file:// stores are supported for cluster builds "
                           "(a path every node mounts)")
    return Path(parts.path)


@contextlib.contextmanager
def store_lock(store: str) -> Iterator[None]:
    """One push into the store at a time (git refuses concurrent ref updates otherwise)."""
    path = store_path(store) / ".nv-datalad-push.lock"
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def clone_from_store(store: str, dataset_id: str, dest: Path) -> Path:
    import datalad.api as dl

    if dest.exists():  # a retried task starts from the store again
        shutil.rmtree(dest)
    dl.clone(source=f"{store}#{dataset_id}", path=str(dest), result_renderer="disabled")
    return dest


def run_task(store: str, dataset_id: str, job_id: str, unit: int, *, workdir: Path,
             jobs: int = 4) -> int:
    """Build ``unit`` of job ``job_id``; 0 when its branch is in the store, 1 when some
    images failed (the branch is pushed all the same: finalise reports them)."""
    root = clone_from_store(store, dataset_id, Path(workdir) / f"nv-{job_id}-unit-{unit}")
    job = Job.read(root, job_id)
    git(root, "checkout", "-q", "-b", unit_branch(job_id, unit))
    trust_remote(root, STORAGE_REMOTE)
    plan = Plan(job.mode, job.planned(unit))
    _install_subdatasets(root, job.units[unit])
    spec = parse_spec(job.spec)
    client = NeuroVaultClient(job.server, ClientConfig(workers=max(4, jobs)))
    tree = nesting.Tree(root, nested=job.nested, jobs=jobs)
    ctx = BuildContext(spec, root, job.server, client, Annex(root), tree, jobs, 1000,
                       label=f" (job {job_id}, unit {unit})")
    ctx.allow_loopback([job.server])
    selection = Selection(items=[Selected(p.record, p.collection) for p in plan.items
                                 if p.record is not None and p.collection is not None])
    results = apply.apply(ctx, selection, plan, local_collections(root), prune=False)
    results += derive.derive(ctx, plan, results)
    subs = {str(s.relative_to(root)): nesting.dataset_id(s)
            for cid in job.units[unit]
            if nesting.is_repository(s := root / nesting.subdataset_dir(cid))}
    write_json(root, unit_result_path(job_id, unit), {
        "unit": unit, "host": socket.gethostname(), "finished": utcnow(),
        "collections": job.units[unit], "subdatasets": subs,
        "results": [{**asdict(r), "status": r.status.value} for r in results]})
    tree.commit(f"nv-datalad: job {job_id} unit {unit}")
    for rel in subs:
        _push_subdataset(root / rel, store)
    _push(root, job_id, unit, store)
    failed = [r for r in results if r.failed]
    log.info("unit %d: %d results, %d failed; branch %s pushed", unit, len(results),
             len(failed), unit_branch(job_id, unit))
    return 1 if failed else 0


def _install_subdatasets(root: Path, collections: list[int]) -> None:
    """The unit's existing subdatasets, without content (the store is their source)."""
    import datalad.api as dl

    known = nesting.registered(root)
    wanted = [str(root / nesting.subdataset_dir(c)) for c in collections
              if nesting.subdataset_dir(c) in known]
    if wanted:
        dl.get(path=wanted, dataset=str(root), get_data=False, result_renderer="disabled")


def _copy_content(repo: Path, remote: str) -> None:
    """Everything present here goes to the store; then this clone is forgotten."""
    trust_remote(repo, remote)
    annex(repo, "copy", "--to", remote, "--quiet", "--include=*", "-J", "4")
    annex(repo, "dead", "here", "--quiet")


def _push(root: Path, job_id: str, unit: int, store: str) -> None:
    _copy_content(root, STORAGE_REMOTE)
    with store_lock(store):
        git(root, "push", "-q", "origin", f"HEAD:refs/heads/{unit_branch(job_id, unit)}",
            f"git-annex:refs/heads/{unit_annex_branch(job_id, unit)}")


def _push_subdataset(sub: Path, store: str) -> None:
    """A unit owns its subdatasets: their branch and git-annex branch go to the store as
    they are (a new one gets its place in the store first)."""
    remote = store_remote(sub)
    if remote == STORE_REMOTE:
        ensure_ria_sibling(sub, store, STORE_REMOTE)
    _copy_content(sub, STORAGE_REMOTE)
    branch = git(sub, "symbolic-ref", "--short", "-q", "HEAD", check=False).strip() or "main"
    with store_lock(store):
        git(sub, "push", "-q", remote, f"HEAD:refs/heads/{branch}", "git-annex")
