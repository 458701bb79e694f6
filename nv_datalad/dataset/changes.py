"""What changed between two states of a dataset, image by image, from their sidecars alone.

One comparison serves ``nv-datalad diff`` (two revisions) and the release stage (the last tag
against the work tree), so CHANGES.md, the tag message and ``diff`` always agree — also for a
version that completes an interrupted build, whose images were committed by an earlier run.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from nv_datalad.records import PROVENANCE_KEY


@dataclass
class Diff:
    old: str
    new: str
    added: list[int] = field(default_factory=list)
    content_changed: list[int] = field(default_factory=list)
    metadata_only: list[int] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    dates: dict[int, tuple[str | None, str | None]] = field(default_factory=dict)

    @property
    def changes_content(self) -> bool:
        """Images added, replaced or removed (a minor version, not a patch)."""
        return bool(self.added or self.content_changed or self.removed)

    def as_dict(self) -> dict:
        data = asdict(self)
        data["dates"] = {str(k): list(v) for k, v in self.dates.items()}
        return data


def _without_provenance(sidecar: Mapping) -> dict:
    return {k: v for k, v in sidecar.items() if k != PROVENANCE_KEY}


def _key(sidecar: Mapping) -> str | None:
    return (sidecar.get(PROVENANCE_KEY) or {}).get("key")


def compare(before: Mapping[int, Mapping], after: Mapping[int, Mapping], *, old: str,
            new: str) -> Diff:
    """Image id → sidecar at two states: added, new key, new record only, removed."""
    result = Diff(old=old, new=new)
    for iid in sorted(set(before) | set(after)):
        a, b = before.get(iid), after.get(iid)
        if a is None:
            result.added.append(iid)
        elif b is None:
            result.removed.append(iid)
        elif _key(a) != _key(b):
            result.content_changed.append(iid)
            result.dates[iid] = (a.get("modify_date"), b.get("modify_date"))
        elif _without_provenance(a) != _without_provenance(b):
            result.metadata_only.append(iid)
            result.dates[iid] = (a.get("modify_date"), b.get("modify_date"))
    return result
