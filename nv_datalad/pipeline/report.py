"""What a build did: the plan, one result record per image or step, and the version tagged.

Stages return lists of :class:`~nv_datalad.records.Result`; nothing rewrites a result after the
fact, so the report, the build record and CHANGES.md all read the same records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nv_datalad.dataset.changes import Diff
from nv_datalad.pipeline.plan import Plan, format_plan
from nv_datalad.pipeline.select import REFUSED
from nv_datalad.records import Result, Status


@dataclass
class BuildReport:
    dataset: Path
    plan: Plan
    results: list[Result] = field(default_factory=list)
    version: str | None = None
    changes: Diff | None = None  # set by the release: this version against the last one
    dry_run: bool = False
    record_path: str | None = None
    #: per-collection datasets: subdatasets a dry run would (create, update, leave untouched)
    subdatasets: tuple[int, int, int] | None = None

    @property
    def failed(self) -> list[Result]:
        """What went wrong and the next build retries (exit 1)."""
        return [r for r in self.results if r.failed and r.action != REFUSED]

    @property
    def refused(self) -> list[Result]:
        """Records refused at the edge: reported, never retried into the dataset."""
        return [r for r in self.results if r.action == REFUSED]

    @property
    def exit_status(self) -> int:
        return 1 if self.failed else 0

    def count(self, action: str, status: Status = Status.OK) -> int:
        return sum(1 for r in self.results if r.action == action and r.status == status)

    def done(self, action: str) -> list[int]:
        """Ids of the images ``action`` succeeded for, ascending."""
        return sorted(r.image_id for r in self.results
                      if r.action == action and not r.failed and r.image_id is not None)

    def summary(self) -> str:
        if self.dry_run:
            lines = format_plan(self.plan)
            if self.subdatasets is not None:
                lines.append("subdatasets: would create {}, update {}, leave {} untouched"
                             .format(*self.subdatasets))
            if self.version is None:
                lines.append("would make no new version")
            elif self.version.endswith(".0.0") and self.version != "v1.0.0":
                lines.append(f"would tag {self.version} (the spec asks a different question: "
                             "a major version)")
            else:
                lines.append(f"would tag {self.version}")
            return "\n".join(lines)
        if self.changes is not None:  # a version: what it holds that the last one did not
            added, updated = len(self.changes.added), len(self.changes.content_changed)
            metadata, removed = len(self.changes.metadata_only), len(self.changes.removed)
        else:
            added, updated = self.count("add"), self.count("update")
            metadata, removed = self.count("metadata"), self.count("prune")
        parts = [f"added {added}", f"updated {updated}", f"metadata {metadata}"]
        if removed:
            parts.append(f"removed {removed}")
        if self.refused:
            parts.append(f"refused {len(self.refused)} bad records")
        if self.failed:
            where = f" (listed in {self.record_path})" if self.record_path else ""
            parts.append(f"failed {len(self.failed)}{where}")
        parts.append(f"tag {self.version}" if self.version else "no change, no new version")
        return ", ".join(parts)
