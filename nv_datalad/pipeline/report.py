"""What a build did: the plan, one result record per image or step, and the version tagged.

Stages return lists of :class:`~nv_datalad.records.Result`; nothing rewrites a result after the
fact, so the report, the build record and CHANGES.md all read the same records.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from nv_datalad.pipeline.plan import Plan, format_plan
from nv_datalad.records import Result, Status


@dataclass
class BuildReport:
    dataset: Path
    plan: Plan
    results: list[Result] = field(default_factory=list)
    version: str | None = None
    dry_run: bool = False
    record_path: str | None = None

    @property
    def failed(self) -> list[Result]:
        return [r for r in self.results if r.failed]

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
            return "\n".join(format_plan(self.plan))
        parts = [
            f"added {self.count('add')}",
            f"updated {self.count('update')}",
            f"metadata {self.count('metadata')}",
        ]
        if self.count("prune"):
            parts.append(f"removed {self.count('prune')}")
        if self.failed:
            where = f" (listed in {self.record_path})" if self.record_path else ""
            parts.append(f"failed {len(self.failed)}{where}")
        parts.append(f"tag {self.version}" if self.version else "no change, no new version")
        return ", ".join(parts)
