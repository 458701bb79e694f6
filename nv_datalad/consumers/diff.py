"""``nv-datalad diff``: which images a version added, changed or removed.

Answered from git objects alone (sidecars and annex keys at two revisions), so it works on a
clone without any content and without network.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from nv_datalad.dataset import revision as versions
from nv_datalad.errors import DatasetError
from nv_datalad.records import PROVENANCE_KEY

#: ``old`` for the first version: everything it holds counts as added.
NOTHING = "(nothing)"


@dataclass
class Diff:
    old: str
    new: str
    added: list[int] = field(default_factory=list)
    content_changed: list[int] = field(default_factory=list)
    metadata_only: list[int] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    dates: dict[int, tuple[str | None, str | None]] = field(default_factory=dict)

    def as_dict(self) -> dict:
        data = asdict(self)
        data["dates"] = {str(k): list(v) for k, v in self.dates.items()}
        return data


def default_range(dataset: Path) -> tuple[str, str]:
    """previous tag → HEAD: when HEAD is itself the latest tag, the tag before it."""
    tags = versions.version_tags(dataset)
    if not tags:
        raise DatasetError(f"{dataset} has no version tags yet; build it first")
    head = versions.resolve(dataset, "HEAD")
    latest = versions.latest_tag(dataset, "HEAD")
    if latest is not None and versions.resolve(dataset, latest) == head:
        idx = tags.index(latest)
        if idx == 0:
            return NOTHING, "HEAD"
        return tags[idx - 1], "HEAD"
    return latest or tags[-1], "HEAD"


def _without_provenance(sidecar: dict) -> dict:
    return {k: v for k, v in sidecar.items() if k != PROVENANCE_KEY}


def _key(sidecar: dict) -> str | None:
    return (sidecar.get(PROVENANCE_KEY) or {}).get("key")


def diff(dataset: Path, old: str | None = None, new: str | None = None) -> Diff:
    dataset = versions.ensure_repository(Path(dataset))
    if old is None:
        old, default_new = default_range(dataset)
        new = new or default_new
    new = new or "HEAD"
    before = {} if old == NOTHING else versions.image_sidecars(
        dataset, versions.resolve(dataset, old))
    after = versions.image_sidecars(dataset, versions.resolve(dataset, new))
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


def format_diff(d: Diff) -> str:
    lines = [f"{d.old} → {d.new}"]
    for title, ids in (("added", d.added), ("content changed", d.content_changed),
                       ("metadata only", d.metadata_only), ("removed", d.removed)):
        lines.append(f"{title}: {len(ids)}")
        for iid in ids:
            dates = d.dates.get(iid)
            suffix = f"  (modify_date {dates[0]} → {dates[1]})" if dates else ""
            lines.append(f"  image {iid}{suffix}")
    return "\n".join(lines)
