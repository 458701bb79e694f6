"""``nv-datalad diff``: which images a version added, changed or removed.

Answered from git objects alone (sidecars and annex keys at two revisions), so it works on a
clone without any content and without network.
"""

from __future__ import annotations

from pathlib import Path

from nv_datalad.dataset import revision as versions
from nv_datalad.dataset.changes import Diff, compare
from nv_datalad.errors import DatasetError

#: ``old`` for the first version: everything it holds counts as added.
NOTHING = "(nothing)"


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


def diff(dataset: Path, old: str | None = None, new: str | None = None) -> Diff:
    dataset = versions.ensure_repository(Path(dataset))
    if old is None:
        old, default_new = default_range(dataset)
        new = new or default_new
    new = new or "HEAD"
    before = {} if old == NOTHING else versions.image_sidecars(
        dataset, versions.resolve(dataset, old))
    after = versions.image_sidecars(dataset, versions.resolve(dataset, new))
    return compare(before, after, old=old, new=new)


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
