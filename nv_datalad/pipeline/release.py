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
from datetime import UTC, datetime

from nv_datalad._version import __version__
from nv_datalad.dataset import layout, revision, tables
from nv_datalad.dataset import repo as ds
from nv_datalad.dataset.files import utcnow, write_json, write_text
from nv_datalad.dataset.runner import annex_version, git_version
from nv_datalad.dataset.state import local_collections, local_images
from nv_datalad.errors import NvDataladError
from nv_datalad.pipeline.context import BuildContext
from nv_datalad.pipeline.plan import Change, format_plan, next_version
from nv_datalad.pipeline.report import BuildReport


def question(spec_yaml: str) -> object:
    """What a spec asks for, without how to update (``mode``) or where from (``server``):
    a change of either is not a new dataset question, so no major version."""
    import yaml

    data = yaml.safe_load(spec_yaml) or {}
    return {k: v for k, v in data.items() if k not in ("mode", "server")}


def write_tables(ctx: BuildContext) -> tuple[dict[int, dict], dict[int, dict]]:
    """Tables from the sidecars; returns what they were made from, for the release."""
    images, cols = local_images(ctx.root), local_collections(ctx.root)
    tables.write_tables(ctx.root, images, cols)
    return images, cols


def release(ctx: BuildContext, report: BuildReport, *, start_head: str | None,
            old_spec_text: str | None, spec_text: str, images: Mapping[int, dict],
            cols: Mapping[int, dict]) -> None:
    """Tag a version when the build changed anything (sets ``report.version``)."""
    spec_changed = old_spec_text is not None and question(old_spec_text) != question(spec_text)
    if old_spec_text is None or spec_changed:
        write_text(ctx.root, layout.SPEC_FILE, spec_text)
    if ds.head(ctx.root) == start_head and not ds.is_dirty(ctx.root):
        return
    tags = revision.version_tags(ctx.root)
    content_changed = any(r.action in ("add", "update", "prune") and not r.failed
                          for r in report.results)
    version = next_version(tags[-1] if tags else None, spec_changed=spec_changed,
                           content_changed=content_changed)
    report.version = version
    _write_release_files(ctx, report, version, spec_changed, images, cols)
    ds.commit(ctx.root, f"nv-datalad: {version}\n\n" + "\n".join(format_plan(report.plan)))
    ds.tag(ctx.root, version, f"{ctx.spec.name} {version}: " + report.summary())


def _write_release_files(ctx: BuildContext, report: BuildReport, version: str,
                         spec_changed: bool, images: Mapping[int, dict],
                         cols: Mapping[int, dict]) -> None:
    from nv_datalad.citation import cff_for
    from nv_datalad.pipeline.readme import render_readme

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
    ds.prepend_changes(ctx.root, changes_entry(version, today, report, spec_changed))
    record = build_record(ctx, version, report)
    report.record_path = f"{layout.BUILDS_DIR}/{record['started'].replace(':', '')}.json"
    write_json(ctx.root, report.record_path, record)


def changes_entry(version: str, date: str, report: BuildReport, spec_changed: bool) -> str:
    """The CHANGES.md entry: what happened to which image."""
    planned = {p.image_id: p for p in report.plan.items}
    lines = [f"## {version} ({date})", ""]
    if spec_changed:
        lines.append("- The spec changed (major version).")

    def section(title: str, ids: Sequence[int], dates: bool = False) -> None:
        if not ids:
            return
        lines.append(f"- {title} ({len(ids)}):")
        for iid in ids:
            p = planned.get(iid)
            cid = p.collection_id if p else "?"
            extra = f": modify_date {p.old_date} → {p.new_date}" if dates and p else ""
            lines.append(f"  - image {iid} (collection {cid}){extra}")

    section("Added", report.done("add"))
    section("Content changed", report.done("update"), dates=True)
    section("Metadata updated", report.done("metadata"), dates=True)
    pruned = report.done("prune")
    if pruned:
        section("Removed (--prune)", pruned)
    else:
        section("Vanished from NeuroVault (kept)",
                [p.image_id for p in report.plan.of(Change.VANISHED)])
        section("No longer matching the spec (kept)",
                [p.image_id for p in report.plan.of(Change.UNSELECTED)])
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
            for r in results if r.failed
        ],
        "tools": tool_versions(),
    }


def tool_versions() -> dict[str, str]:
    import datalad

    out = {"nv-datalad": __version__, "datalad": datalad.__version__,
           "python": platform.python_version()}
    with contextlib.suppress(NvDataladError):
        out["git-annex"] = annex_version()
        out["git"] = git_version()
    return out
