"""The build pipeline: spec → select → probe → plan → apply → derive → release.

Each stage is a module and talks to the next through values: the selection, the server's
answers, the pure plan, one result record per image. ``--dry-run`` stops after planning and
writes nothing. Applying is checkpointed, and recovery at the start of every build undoes what
an interrupted one left half done, so the next build converges to the same result.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from nv_datalad.dataset import layout, nesting, recover, repo, revision
from nv_datalad.dataset.annex import Annex
from nv_datalad.dataset.revision import not_a_dataset
from nv_datalad.dataset.runner import annex_version
from nv_datalad.dataset.state import local_collections, local_images
from nv_datalad.errors import DatasetError, NvDataladError
from nv_datalad.neurovault.client import ClientConfig, NeuroVaultClient
from nv_datalad.neurovault.download import GRACE, Downloads, Wanted
from nv_datalad.neurovault.serving import serving
from nv_datalad.options import DEFAULT_CHECKPOINT, DEFAULT_JOBS
from nv_datalad.pipeline import apply, derive, probe, release
from nv_datalad.pipeline.context import BuildContext, Progress, no_progress
from nv_datalad.pipeline.plan import Change, Plan, format_plan, make_plan, next_version
from nv_datalad.pipeline.report import BuildReport
from nv_datalad.pipeline.select import Selected, Selection, select, select_local
from nv_datalad.spec import Spec, load_spec, spec_to_yaml

__all__ = ["BuildReport", "build"]

log = logging.getLogger(__name__)


def build(
    spec_or_path: Spec | str | Path,
    dataset: str | Path | None = None,
    *,
    mode: str | None = None,
    jobs: int = DEFAULT_JOBS,
    server: str | None = None,
    dry_run: bool = False,
    prune: bool = False,
    recheck: bool = False,
    checkpoint: int = DEFAULT_CHECKPOINT,
    stall_timeout: float = 300.0,
    progress: Progress = no_progress,
) -> BuildReport:
    """Create or update the dataset described by a spec; see DESIGN.md for the semantics."""
    spec = spec_or_path if isinstance(spec_or_path, Spec) else load_spec(spec_or_path)
    spec = spec.with_overrides(mode=mode, server=server)
    root = Path(dataset).absolute() if dataset is not None else repo.default_target(spec.name)
    annex_version()
    repo.check_target(root, spec.name)
    repo.ensure_identity()
    if spec.mode == "offline" and not dry_run and not repo.is_dataset(root):
        raise not_a_dataset(root, "offline mode builds from an existing dataset")
    jobs = max(1, jobs)
    with serving(spec.server) as base_url:
        client = None
        if spec.mode != "offline":
            client = NeuroVaultClient(base_url, ClientConfig(workers=max(4, jobs)))
            client.probe()  # an unreachable server is an error before anything is written
        exists = repo.is_dataset(root)
        tree = nesting.Tree(root, nested=nested_for(root, spec, exists), jobs=jobs,
                            description=spec.description)
        downloads = None
        if client is not None and spec.content == "download" and not dry_run:
            downloads = Downloads(client.file_session, root, workers=jobs,
                                  timeout=client.config.file_timeout)
        ctx = BuildContext(spec, root, base_url, client,
                           Annex(root, stall_timeout=stall_timeout, workers=jobs), tree, jobs,
                           max(1, checkpoint), recheck, progress, downloads=downloads)
        if dry_run:
            _, plan, problems = plan_images(ctx, local_images(root) if exists else {},
                                            settle=False)
            return BuildReport(root, plan, problems, dry_run=True,
                               version=_would_tag(ctx, plan),
                               subdatasets=_subdatasets(ctx, plan, prune))
        made_dir = not root.exists()
        with repo.locked(root), downloads or contextlib.nullcontext():
            if exists:
                repo.create(root, description=spec.description)  # finishes a cut-short one
                return _run(ctx, prune=prune, planned=None)
            with repo.creating(root, description=spec.description, made_dir=made_dir,
                               stop_writers=downloads and (lambda: downloads.close(grace=GRACE))):
                first = plan_images(ctx, {}, settle=False)
                if not first[1].items:
                    raise NvDataladError(
                        f"the spec selects no image on {base_url}; nothing was written (check "
                        "its filters with `nv-datalad build SPEC --dry-run`)")
            return _run(ctx, prune=prune, planned=first)


def nested_for(root: Path, spec: Spec, exists: bool) -> bool:
    """Per-collection subdatasets or one repository: the spec decides for a new dataset; an
    existing one keeps its shape (changing it is a new dataset, not an update)."""
    wanted = spec.subdatasets == "per-collection"
    if not exists or not any(True for _ in layout.iter_collection_dirs(root)):
        return wanted
    nested = nesting.is_nested(root)
    if nested != wanted:
        have = "per-collection subdatasets" if nested else "one repository"
        raise DatasetError(
            f"{root} keeps its collections in {have}; the spec asks for subdatasets: "
            f"{spec.subdatasets}. Build into another -d PATH, or set subdatasets: "
            f"{'per-collection' if nested else 'none'} to update this dataset")
    return nested


def _subdatasets(ctx: BuildContext, plan: Plan, prune: bool) -> tuple[int, int, int] | None:
    """(created, updated, untouched) subdatasets of a build of ``plan``; None: one repository."""
    if not ctx.tree.nested:
        return None
    writes = {Change.NEW, Change.CONTENT, Change.METADATA, Change.CHECK}
    if prune:
        writes |= {Change.VANISHED, Change.UNSELECTED}
    create, update = nesting.subdatasets_of_plan(
        ctx.root, {p.collection_id for p in plan.items if p.change in writes})
    return create, update, len(nesting.installed(ctx.root)) - update


def plan_images(ctx: BuildContext, local: dict[int, dict], *,
          settle: bool) -> tuple[Selection, Plan, list]:
    """Select, ask the server what planning needs, plan. ``settle=False`` (dry run) leaves
    the date checks unasked, so a dry run sends no request per file."""
    spec, client = ctx.spec, ctx.client
    if client is None:  # offline: the dataset is the server
        selection = select_local(spec, local, local_collections(ctx.root))
        return selection, make_plan(selection.items, local, mode=spec.mode), []
    ctx.progress("metadata", 0, 0)
    selection = select(client, spec, keep=frozenset(local), on_take=_head_start(ctx, local))
    ctx.progress("metadata", len(selection.items), len(selection.items))
    still = probe.still_on_server(client, selection, local)
    plan = make_plan(selection.items, local, mode=spec.mode, file_url=ctx.file_url,
                     still_on_server=still, seen_records=selection.unmatched,
                     recheck=ctx.recheck)
    if settle:
        changed = probe.file_changes(client, plan.of(Change.CHECK), recheck=ctx.recheck)
        plan = make_plan(selection.items, local, mode=spec.mode, file_url=ctx.file_url,
                         still_on_server=still, file_changed=changed,
                         seen_records=selection.unmatched, recheck=ctx.recheck)
    return selection, plan, [*selection.failures, *selection.refused]


def _head_start(ctx: BuildContext, local: Mapping[int, dict]) -> Callable[[Selected], None] | None:
    """Downloads begin while the crawl walks on: each image selected that is new to the
    dataset is asked for at once, up to one checkpoint batch (what the first import takes)."""
    downloads = ctx.downloads
    if downloads is None:
        return None
    room = [ctx.checkpoint]

    def start(sel: Selected) -> None:
        url = ctx.file_url(sel.image)
        if room[0] > 0 and sel.image_id not in local and url is not None:
            room[0] -= 1
            downloads.start(Wanted(url, sel.collection_id, sel.image_id))

    return start


def _would_tag(ctx: BuildContext, plan: Plan) -> str | None:
    """The version a build would tag (None: nothing to do), as the release would decide."""
    tags = revision.version_tags(ctx.root) if repo.is_dataset(ctx.root) else []
    recorded = ctx.root / layout.SPEC_FILE
    spec_changed = release.asks_differently(
        recorded.read_text() if recorded.is_file() else None, spec_to_yaml(ctx.spec))
    content = any(p.change in (Change.NEW, Change.CONTENT) for p in plan.items)
    if tags and not spec_changed and not content and not plan.of(Change.METADATA, Change.CHECK):
        return None
    return next_version(tags[-1] if tags else None, spec_changed=spec_changed,
                        content_changed=content)


def _run(ctx: BuildContext, *, prune: bool,
         planned: tuple[Selection, Plan, list] | None) -> BuildReport:
    root = ctx.root
    start_head = repo.head(root)
    if planned is None:  # a dataset made just now has nothing an earlier build left
        recover.recover(root)
    if ctx.client is not None:
        ctx.allow_loopback([ctx.base_url])
    spec_file = root / layout.SPEC_FILE
    old_spec_text = spec_file.read_text() if spec_file.is_file() else None
    selection, plan, results = planned or plan_images(ctx, local_images(root), settle=True)
    for line in format_plan(plan):
        log.info("%s", line)
    results += apply.apply(ctx, selection, plan, local_collections(root), prune=prune)
    results += derive.derive(ctx, plan, results)
    spec_text = spec_to_yaml(ctx.spec)
    if old_spec_text is not None and not release.asks_differently(old_spec_text, spec_text) \
            and repo.head(root) == start_head and not repo.is_dirty(root) \
            and not ctx.tree.has_changes():
        # nothing was written: the tables, the word matrix and the release all stand
        ctx.tree.close()
        log.info("nothing changed: no commit, no tag")
        return BuildReport(root, plan, results)
    images, cols = release.write_tables(ctx)
    results += derive.vectorize(ctx)
    report = BuildReport(root, plan, results)
    release.release(ctx, report, start_head=start_head, old_spec_text=old_spec_text,
                    spec_text=spec_text, images=images, cols=cols)
    if report.version is None:
        log.info("nothing changed: no commit, no tag")
    report.results += derive.refresh_report(ctx)
    return report
