"""The job manifest: what a cluster build's tasks do, committed into the dataset before any runs.

Every task reads it from its clone, so the submit host's selection and plan are the only ones
(no task walks NeuroVault again, and a resubmitted unit does exactly the same work). Units,
their branches and their result files are named here, once.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from uuid import uuid4

from nv_datalad.dataset import layout
from nv_datalad.dataset.runner import git
from nv_datalad.pipeline.plan import Change, PlannedImage

JOBS_DIR = f"{layout.STATE_DIR}/jobs"
#: The RIA sibling every task clones from and pushes to; its storage remote holds the content.
STORE_REMOTE = "nv-store"
STORAGE_REMOTE = f"{STORE_REMOTE}-storage"


def store_remote(repo: Path) -> str:
    """The store's name in ``repo``: ``origin`` in a clone from it, else our sibling."""
    return "origin" if "origin" in git(repo, "remote").split() else STORE_REMOTE


def new_job_id() -> str:
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%S") + "-" + uuid4().hex[:6]


def manifest_path(job_id: str) -> str:
    return f"{JOBS_DIR}/{job_id}.json"


def unit_result_path(job_id: str, unit: int) -> str:
    return f"{JOBS_DIR}/{job_id}/unit-{unit}.json"


def unit_branch(job_id: str, unit: int) -> str:
    return f"nv-job/{job_id}/unit-{unit}"


def unit_annex_branch(job_id: str, unit: int) -> str:
    """Where a task pushes its git-annex branch (URLs, metadata); finalise merges them all."""
    return f"nv-job/{job_id}/annex-{unit}"


@dataclass
class Job:
    job_id: str
    store: str  # the RIA store URL (ria+file:///...)
    dataset_id: str
    server: str  # the NeuroVault every task talks to (never an in-process emulator)
    spec: str  # the spec as YAML, with mode and server as the submit host used them
    nested: bool
    mode: str
    units: list[list[int]] = field(default_factory=list)  # unit → collection ids
    items: list[dict] = field(default_factory=list)  # planned images (PlannedImage fields)

    def planned(self, unit: int | None = None) -> list[PlannedImage]:
        mine = None if unit is None else set(self.units[unit])
        return [PlannedImage(**{**d, "change": Change(d["change"])}) for d in self.items
                if mine is None or d["collection_id"] in mine]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, sort_keys=True) + "\n"

    @classmethod
    def read(cls, root: Path, job_id: str) -> Job:
        path = root / manifest_path(job_id)
        return cls(**json.loads(path.read_text(encoding="utf-8")))


def item_dict(item: PlannedImage) -> dict:
    return {**asdict(item), "change": item.change.value}
