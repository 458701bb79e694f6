"""The update plan: compare what the server selects with what the dataset holds.

Pure functions, no I/O: given server records and local sidecars, classify every image.
Applying the plan (downloads, commits) is the builder's job; ``--dry-run`` prints this plan.

``modify_date`` is compared as aware datetimes (the server mixes ``Z`` and ``+01:00``).
A newer date does not prove the file changed (a metadata edit bumps it too): images whose
URL or ``file_size`` differ are content changes; the rest are ``CHECK`` until a conditional
request to the server settles them (see :func:`settle`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from nv_datalad.neurovault.records import image_collection_id, parse_date
from nv_datalad.pipeline.select import Selected
from nv_datalad.records import PROVENANCE_KEY


class Change(StrEnum):
    NEW = "new"
    CONTENT = "content"  # newer modify_date and a different file
    METADATA = "metadata"  # newer modify_date, same file
    CHECK = "check"  # newer modify_date, same URL and size: ask the server
    UNCHANGED = "unchanged"
    OUTDATED = "outdated"  # newer on the server; download_new leaves it, overwrite updates it
    VANISHED = "vanished"  # gone from the server
    UNSELECTED = "unselected"  # still on the server, no longer matches the spec


@dataclass(frozen=True)
class PlannedImage:
    image_id: int
    collection_id: int
    change: Change
    record: dict | None = None  # server record (None when vanished / not re-read)
    collection: dict | None = None  # server collection record
    local: dict | None = None  # current sidecar


@dataclass
class Plan:
    mode: str
    items: list[PlannedImage] = field(default_factory=list)

    def of(self, *changes: Change) -> list[PlannedImage]:
        return [p for p in self.items if p.change in changes]

    def counts(self) -> Counter:
        return Counter(p.change.value for p in self.items)


def _local_url(sidecar: Mapping[str, Any]) -> str | None:
    prov = sidecar.get(PROVENANCE_KEY) or {}
    return prov.get("source_url") or sidecar.get("file")


def classify(
    selected: Selected, local: Mapping[str, Any] | None, *, mode: str, file_url: str | None
) -> Change:
    """One image's change, from its server record and its sidecar (None: not in dataset)."""
    if local is None:
        return Change.NEW
    new, old = parse_date(selected.image.get("modify_date")), parse_date(local.get("modify_date"))
    if new is None or old is None or new <= old:
        return Change.UNCHANGED
    if mode != "overwrite":
        return Change.OUTDATED
    if file_url != _local_url(local):
        return Change.CONTENT
    if selected.image.get("file_size") != local.get("file_size"):
        return Change.CONTENT
    return Change.CHECK


def make_plan(
    selection: Iterable[Selected],
    local: Mapping[int, Mapping[str, Any]],
    *,
    mode: str,
    file_url: Any = lambda record: record.get("file"),
    still_on_server: Mapping[int, bool] | None = None,
    file_changed: Mapping[int, bool | None] | None = None,
    seen_records: Mapping[int, dict] | None = None,
    recheck: bool = False,
) -> Plan:
    """Classify selected images and every local image the selection no longer covers.

    The server's answers are gathered before planning (:mod:`nv_datalad.pipeline.probe`), so this
    stays a pure function. ``still_on_server`` says, for local images outside the selection,
    whether the server still has them (True → unselected, False → vanished); unknown ids count
    as unselected. ``file_changed`` settles each ``CHECK`` (see :func:`settle`); without it
    (``--dry-run``) checks stay checks. ``recheck`` turns every unchanged image into a
    ``CHECK`` (force a content re-check).
    """
    plan = Plan(mode=mode)
    selected_ids: set[int] = set()
    for sel in selection:
        iid = sel.image_id
        selected_ids.add(iid)
        sidecar = local.get(iid)
        change = classify(sel, sidecar, mode=mode, file_url=file_url(sel.image))
        if recheck and change is Change.UNCHANGED and sidecar is not None:
            change = Change.CHECK
        item = PlannedImage(iid, sel.collection_id, change, sel.image, sel.collection, sidecar)
        if file_changed is not None:
            item = settle(item, file_changed.get(iid))
        plan.items.append(item)
    if mode == "offline":
        return plan
    known = still_on_server or {}
    seen = seen_records or {}
    for iid in sorted(set(local) - selected_ids):
        sidecar = local[iid]
        cid = image_collection_id(sidecar) or 0
        change = Change.UNSELECTED if known.get(iid, True) else Change.VANISHED
        record = seen.get(iid) if change is Change.UNSELECTED else None
        plan.items.append(PlannedImage(iid, cid, change, record, None, sidecar))
    plan.items.sort(key=lambda p: p.image_id)
    return plan


def settle(item: PlannedImage, file_changed: bool | None) -> PlannedImage:
    """Resolve a ``CHECK`` with the server's answer (None: the server could not tell, so the
    file is downloaded and its key compared)."""
    if item.change is not Change.CHECK:
        return item
    if file_changed is False:
        return replace(item, change=Change.METADATA)
    return replace(item, change=Change.CONTENT)


def next_version(previous: str | None, *, spec_changed: bool, content_changed: bool) -> str:
    """Semantic version of a build.

    major: the spec asks a different question; minor: images added, replaced or removed;
    patch: metadata only (refreshed sidecars, regenerated tables).
    """
    if previous is None:
        return "v1.0.0"
    major, minor, patch = (int(x) for x in previous.lstrip("v").split("."))
    if spec_changed:
        return f"v{major + 1}.0.0"
    if content_changed:
        return f"v{major}.{minor + 1}.0"
    return f"v{major}.{minor}.{patch + 1}"


def format_plan(plan: Plan, *, limit: int = 20) -> list[str]:
    """Human-readable lines for ``--dry-run`` and the build log."""
    counts = plan.counts()
    lines = [
        "plan: "
        + ", ".join(f"{name} {counts.get(name, 0)}" for name in ("new", "content", "metadata",
                                                                 "check", "unchanged",
                                                                 "vanished", "unselected"))
    ]
    if counts.get(Change.OUTDATED.value):
        lines[0] += (f" (outdated {counts[Change.OUTDATED.value]}: newer on the server, "
                     "updated only by --mode overwrite)")
    for change in Change:
        ids = [p.image_id for p in plan.of(change)]
        if ids and change is not Change.UNCHANGED:
            shown = ", ".join(map(str, ids[:limit])) + (" ..." if len(ids) > limit else "")
            lines.append(f"  {change.value}: {shown}")
    return lines
