"""The release stage: tables, README, CITATION.cff, CHANGES.md, the build record, one tag.

A build that changed anything ends in exactly one annotated version tag; one that changed
nothing makes no commit and no tag. The version number says what kind of change it was
(:func:`~nv_datalad.pipeline.plan.next_version`); CHANGES.md says what happened to which
image, from the result records (not the plan: a file that turned out identical is a metadata
update, a failed download is a failure).
"""

from __future__ import annotations

import contextlib
import platform
from collections.abc import Mapping, Sequence
from collections.abc import Set as AbstractSet
from datetime import UTC, datetime

from nv_datalad._version import __version__
from nv_datalad.dataset import layout, revision, tables
from nv_datalad.dataset import repo as ds
from nv_datalad.dataset.changes import compare
from nv_datalad.dataset.files import utcnow, write_json, write_text
from nv_datalad.dataset.runner import annex_version, git_version
from nv_datalad.dataset.state import local_collections, local_images
from nv_datalad.errors import NvDataladError
from nv_datalad.pipeline.context import BuildContext
from nv_datalad.pipeline.plan import Change, format_plan, next_version
from nv_datalad.pipeline.report import BuildReport


def asks_differently(recorded: str | None, spec_yaml: str) -> bool:
    """Does ``spec_yaml`` ask another question than the ``recorded`` spec (None: no spec
    yet)? ``mode`` (how to update) and ``server`` (where from) do not count: changing either
    is no new dataset question, so no major version."""
    import yaml

    def question(text: str) -> object:
        data = yaml.safe_load(text) or {}
        return {k: v for k, v in data.items() if k not in ("mode", "server")}

    return recorded is not None and question(recorded) != question(spec_yaml)


def write_tables(ctx: BuildContext) -> tuple[dict[int, dict], dict[int, dict]]:
    """Tables from the sidecars; returns what they were made from, for the release."""
    images, cols = local_images(ctx.root), local_collections(ctx.root)
    tables.write_tables(ctx.root, images, cols)
    return images, cols


def release(ctx: BuildContext, report: BuildReport, *, start_head: str | None,
            old_spec_text: str | None, spec_text: str, images: Mapping[int, dict],
            cols: Mapping[int, dict]) -> None:
    """Tag a version when the build changed anything (sets ``report.version`` and
    ``report.changes``: what this version holds that the last one did not)."""
    spec_changed = asks_differently(old_spec_text, spec_text)
    if old_spec_text is None or spec_changed:
        write_text(ctx.root, layout.SPEC_FILE, spec_text)
    if ds.head(ctx.root) == start_head and not ds.is_dirty(ctx.root) \
            and not ctx.tree.has_changes():
        ctx.tree.close()
        return
    tags = revision.version_tags(ctx.root)
    last = tags[-1] if tags else None
    before = revision.image_sidecars(ctx.root, last) if last else {}
    report.changes = compare(before, images, old=last or "(nothing)", new="HEAD")
    version = next_version(last, spec_changed=spec_changed,
                           content_changed=report.changes.changes_content)
    report.version = version
    _write_release_files(ctx, report, version, spec_changed, images, cols)
    ctx.tree.commit(f"nv-datalad: {version}\n\n" + "\n".join(format_plan(report.plan)))
    ds.tag(ctx.root, version, f"{ctx.spec.name} {version}: " + report.summary())
    ctx.tree.close()


def _write_release_files(ctx: BuildContext, report: BuildReport, version: str,
                         spec_changed: bool, images: Mapping[int, dict],
                         cols: Mapping[int, dict]) -> None:
    """The build record first: while it is uncommitted, recovery knows the README, citation
    and CHANGES next to it are a release cut short, not a person's edits."""
    from nv_datalad.citation import cff_for
    from nv_datalad.pipeline.readme import render_readme

    previous = latest_record(ctx)
    record = build_record(ctx, version, report)
    report.record_path = f"{layout.BUILDS_DIR}/{record['started'].replace(':', '')}.json"
    write_json(ctx.root, report.record_path, record)
    ds_id = revision.dataset_id(ctx.root)
    today = datetime.now(UTC).date().isoformat()
    counts: dict[int, int] = {}
    for sc in images.values():
        cid = sc.get("collection_id")
        if isinstance(cid, int):
            counts[cid] = counts.get(cid, 0) + 1
    contributing = [cols[c] for c in sorted(counts) if c in cols]
    write_text(ctx.root, layout.README, render_readme(
        ctx.spec.raw, version, ds_id, [images[i] for i in sorted(images)], contributing,
        ctx.base_url))
    write_text(ctx.root, layout.CITATION, cff_for(
        ctx.spec.name, ctx.spec.description, ds_id, version, today, contributing, counts,
        server=ctx.base_url))
    ds.prepend_changes(ctx.root, changes_entry(version, today, report, spec_changed,
                                               already_kept=_kept(previous)))


def latest_record(ctx: BuildContext) -> dict:
    """The newest committed build record ({} before the first version)."""
    names = [p for p in revision.list_files(ctx.root, None, layout.BUILDS_DIR)
             if p.endswith(".json")]
    return (revision.read_json(ctx.root, None, max(names)) or {}) if names else {}


def _kept(record: Mapping) -> set[int]:
    kept = record.get("kept") or {}
    return {int(i) for ids in kept.values() for i in ids if isinstance(i, int)}


def changes_entry(version: str, date: str, report: BuildReport, spec_changed: bool,
                  already_kept: AbstractSet[int] = frozenset()) -> str:
    """The CHANGES.md entry: what happened to which image since the last version.

    Vanished and unselected images kept in the dataset are listed once, in the version where
    that first happened, not again in every later one.
    """
    changes = report.changes
    assert changes is not None
    collection_of = {p.image_id: p.collection_id for p in report.plan.items}
    lines = [f"## {version} ({date})", ""]
    if spec_changed:
        lines.append("- The spec changed (major version).")

    def section(title: str, ids: Sequence[int], dates: bool = False) -> None:
        if not ids:
            return
        lines.append(f"- {title} ({len(ids)}):")
        for iid in ids:
            span = changes.dates.get(iid)
            extra = f": modify_date {span[0]} → {span[1]}" if dates and span else ""
            lines.append(f"  - image {iid} (collection {collection_of.get(iid, '?')}){extra}")

    section("Added", changes.added)
    section("Content changed", changes.content_changed, dates=True)
    section("Metadata updated", changes.metadata_only, dates=True)
    section("Removed (--prune)", changes.removed)
    section("Vanished from NeuroVault (kept)",
            [p.image_id for p in report.plan.of(Change.VANISHED)
             if p.image_id not in already_kept])
    section("No longer matching the spec (kept)",
            [p.image_id for p in report.plan.of(Change.UNSELECTED)
             if p.image_id not in already_kept])
    if report.refused:
        lines.append(f"- Refused records ({len(report.refused)}; bad data from the server):")
        lines.extend(f"  - {r.message}" for r in report.refused)
    failed = report.failed
    if failed:
        lines.append(f"- Failed ({len(failed)}; retried by the next build):")
        lines.extend(f"  - {r.message}" for r in failed)
    if len(lines) == 2:
        lines.append("- Tables, README and citation regenerated.")
    return "\n".join(lines) + "\n"


def build_record(ctx: BuildContext, version: str, report: BuildReport) -> dict:
    """``.nv-datalad/builds/<timestamp>.json``: what this build saw and did."""
    results = report.results
    return {
        "started": utcnow(),
        "version": version,
        "server": ctx.base_url,
        "mode": ctx.spec.mode,
        "content": ctx.spec.content,
        "counts": dict(report.plan.counts()),
        "results": {
            action: sum(1 for r in results if r.action == action and not r.failed)
            for action in sorted({r.action for r in results})
        },
        "failures": [
            {"action": r.action, "image_id": r.image_id, "collection_id": r.collection_id,
             "message": r.message}
            for r in report.failed
        ],
        "refused": [{"image_id": r.image_id, "collection_id": r.collection_id,
                     "message": r.message} for r in report.refused],
        "kept": {change.value: [p.image_id for p in report.plan.of(change)]
                 for change in (Change.VANISHED, Change.UNSELECTED)},
        "tools": tool_versions(),
    }


def tool_versions() -> dict[str, str]:
    import datalad

    out = {"nv-datalad": __version__, "datalad": datalad.__version__,
           "python": platform.python_version()}
    with contextlib.suppress(NvDataladError):
        out["git-annex"] = annex_version()
    with contextlib.suppress(NvDataladError):
        out["git"] = git_version()
    return out
