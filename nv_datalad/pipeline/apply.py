"""Apply a plan to the dataset: add, replace, refresh, prune. One result record per image.

New images land in checkpointed batches (annex, sidecars, commit), so an interrupted build
loses at most the batch in flight, which recovery undoes and the next build redoes. A sidecar
is written only after its image is in the annex: that ordering is what recovery relies on.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Mapping, Sequence

from nv_datalad.dataset import layout
from nv_datalad.dataset.files import write_json
from nv_datalad.dataset.nesting import by_owner, git_paths
from nv_datalad.dataset.state import image_path_of
from nv_datalad.pipeline.context import BuildContext
from nv_datalad.pipeline.importer import INTERRUPTED, annex_fields, place
from nv_datalad.pipeline.plan import Change, Plan, PlannedImage
from nv_datalad.pipeline.select import Selection
from nv_datalad.records import PROVENANCE_KEY, Result, Status

log = logging.getLogger(__name__)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a build, after what had landed was committed."""

    def __init__(self, committed: int):
        super().__init__(committed)
        self.committed = committed


def same_record(old: Mapping, new: Mapping) -> bool:
    """Equal apart from our provenance key."""
    return {k: v for k, v in old.items() if k != PROVENANCE_KEY} == dict(new)


def apply(ctx: BuildContext, selection: Selection, plan: Plan,
          collections: Mapping[int, dict], *, prune: bool) -> list[Result]:
    results: list[Result] = []
    if ctx.client is not None:
        write_collections(ctx, selection, collections)
        results += add(ctx, plan.of(Change.NEW))
        results += update_content(ctx, plan.of(Change.CONTENT))
        results += update_metadata(ctx, [*plan.of(Change.METADATA), *_drifted(ctx, plan)])
    if prune:
        results += remove(ctx, plan.of(Change.VANISHED, Change.UNSELECTED))
    else:
        for item in plan.of(Change.VANISHED, Change.UNSELECTED):
            log.info("image %s %s: kept (use --prune to remove)", item.image_id,
                     "vanished from the server" if item.change is Change.VANISHED
                     else "no longer matches the spec")
    return results


def _drifted(ctx: BuildContext, plan: Plan) -> list[PlannedImage]:
    """Kept images that stopped matching, whose server record moved on (became a T map):
    in overwrite mode their sidecar and annex metadata follow the server, so tables and
    ``git annex find --metadata`` never describe them by what they no longer are."""
    if ctx.spec.mode != "overwrite":
        return []
    return [p for p in plan.of(Change.UNSELECTED)
            if p.record is not None and p.local is not None and not same_record(p.local, p.record)]


def write_collections(ctx: BuildContext, selection: Selection,
                      collections: Mapping[int, dict]) -> None:
    """Collection sidecars for every collection that contributes an image."""
    todo: dict[int, Mapping] = {}
    for sel in selection.items:
        cid = sel.collection_id
        old = collections.get(cid)
        if cid not in todo and (old is None or not same_record(old, sel.collection)):
            todo[cid] = sel.collection
    ctx.tree.touch(todo)
    for cid, record in todo.items():
        write_json(ctx.root, layout.collection_sidecar(cid),
                   ctx.sidecar(record, ctx.provenance()))


def _provenance(ctx: BuildContext, path: str, url: str, key: str) -> dict:
    return ctx.provenance(source_url=url, path=path, key=key)


def add(ctx: BuildContext, items: Sequence[PlannedImage]) -> list[Result]:
    """New images, in checkpointed batches: annex, metadata, sidecar, commit."""
    results: list[Result] = []
    total = len(items)
    for start in range(0, total, ctx.checkpoint):
        batch = items[start:start + ctx.checkpoint]
        ctx.tree.touch(item.collection_id for item in batch)
        got = place(ctx, batch, action="add",
                    on_reply=lambda n, s=start: ctx.progress("download", s + n, total))
        _stop_if_full(ctx, got.stop)
        results += got.failures
        for p in got.placed:
            write_json(ctx.root, layout.image_sidecar(p.item.collection_id, p.item.image_id),
                       ctx.sidecar(p.item.record or {}, _provenance(ctx, p.path, p.url, p.key)))
            results.append(Result("add", Status.OK, p.item.image_id, p.item.collection_id,
                                  p.path, extra={"key": p.key}))
        if got.placed:
            ctx.tree.commit(f"nv-datalad: add {len(got.placed)} images (checkpoint)",
                            paths=[layout.NEUROVAULT_DIR])
        if got.stop == INTERRUPTED:
            raise Interrupted(len(got.placed))
    return results


def _disk_full(stop: str | None) -> bool:
    return stop is not None and stop != INTERRUPTED


def _stop_if_full(ctx: BuildContext, stop: str | None) -> None:
    """A full disk stops the build before it writes more: git itself can hang on one
    (``git-annex filter-process`` retrying a write). The batch in flight is left as a kill
    would leave it, which the next build's recovery undoes; what earlier batches committed
    stays."""
    if _disk_full(stop):
        raise OSError(errno.ENOSPC, stop, str(ctx.root))


def update_content(ctx: BuildContext, items: Sequence[PlannedImage]) -> list[Result]:
    """New file on the server: new key at the same path, old key archived (if configured)
    and no longer claiming the web has it. A download that gives the old key back was a
    metadata edit after all (``verified`` when the record did not change either)."""
    if not items:
        return []
    ctx.tree.touch(item.collection_id for item in items)
    old: dict[int, tuple[str, str | None, str | None]] = {}
    for item in items:
        path = image_path_of(ctx.root, item.collection_id, item.image_id)
        prov = (item.local or {}).get(PROVENANCE_KEY, {})
        if path is not None:
            old[item.image_id] = (path, prov.get("key"), prov.get("source_url"))
    results = archive(ctx, [(p, k) for p, k, _ in old.values() if k])
    # The server serves other bytes at these URLs now: the old keys stop claiming it first,
    # so even an interrupted update leaves no key promising what the web cannot give.
    ctx.annex.unregister_urls([(p, k, u) for p, k, u in old.values() if k and u])
    git_paths(ctx.root, ["rm", "-q", "--cached"], [p for p, _, _ in old.values()])
    for path, _, _ in old.values():
        (ctx.root / path).unlink(missing_ok=True)
    got = place(ctx, items, action="update")
    placed = got.placed
    results += got.failures
    landed = set() if _disk_full(got.stop) else {p.item.image_id for p in placed}
    # never lose data: a failed replacement puts the old version back (all of them when the
    # disk is full: the next build redoes the whole update)
    git_paths(ctx.root, ["checkout", "HEAD"], [old[item.image_id][0] for item in items
                                               if item.image_id in old
                                               and item.image_id not in landed], check=False)
    _stop_if_full(ctx, got.stop)
    for p in placed:
        item, sidecar_path = p.item, layout.image_sidecar(p.item.collection_id, p.item.image_id)
        if item.image_id in old and old[item.image_id][1] == p.key:
            # Same bytes: keep the old provenance, so an unchanged image leaves no trace, but
            # name the URL it is served from now (a private collection gone public moves it).
            local = item.local or {}
            prov = {**local.get(PROVENANCE_KEY, {}), "source_url": p.url}
            write_json(ctx.root, sidecar_path, ctx.sidecar(item.record or {}, prov))
            action = "verified" if same_record(local, item.record or {}) else "metadata"
        else:
            write_json(ctx.root, sidecar_path,
                       ctx.sidecar(item.record or {}, _provenance(ctx, p.path, p.url, p.key)))
            action = "update"
        results.append(Result(action, Status.OK, item.image_id, item.collection_id, p.path,
                              extra={"key": p.key}))
    ctx.tree.commit(f"nv-datalad: update {len(placed)} changed images",
                    paths=[layout.NEUROVAULT_DIR])
    if got.stop == INTERRUPTED:
        raise Interrupted(len(placed))
    return results


def archive(ctx: BuildContext, keyed: Sequence[tuple[str, str]]) -> list[Result]:
    """Copy content about to be superseded (``(path, key)``) to the ``archive`` remote, so old
    versions stay retrievable after NeuroVault's URL serves new bytes. Each subdataset gets
    the remote too (a RIA store then holds each of them under its own id)."""
    if not ctx.spec.archive or not keyed:
        return []
    from nv_datalad.dataset.archive import ensure_archive

    keys = dict(keyed)
    results = []
    for repo, pairs in by_owner(ctx.root, keys).items():
        remote = ensure_archive(repo, ctx.spec.archive)
        for key, err in ctx.annex.copy_keys_to(repo, remote,
                                               [keys[rel] for rel, _ in pairs]).items():
            log.warning("could not archive %s before superseding it: %s", key, err)
            results.append(Result("archive", Status.ERROR, message=f"{key}: {err}"))
    return results


def update_metadata(ctx: BuildContext, items: Sequence[PlannedImage]) -> list[Result]:
    """Newer record, same file: refresh the sidecar and the key's annex metadata."""
    if not items:
        return []
    ctx.tree.touch(item.collection_id for item in items)
    fields, results = [], []
    for item in items:
        prov = dict((item.local or {}).get(PROVENANCE_KEY, {}))
        sidecar = ctx.sidecar(item.record or {}, prov)
        write_json(ctx.root, layout.image_sidecar(item.collection_id, item.image_id), sidecar)
        if prov.get("path"):
            fields.append((prov["path"], annex_fields(sidecar)))
        results.append(Result("metadata", Status.OK, item.image_id, item.collection_id,
                              prov.get("path")))
    for path, err in ctx.annex.set_metadata(fields).items():
        log.warning("annex metadata not refreshed for %s: %s", path, err)
    ctx.tree.commit(f"nv-datalad: refresh metadata of {len(items)} images",
                    paths=[layout.NEUROVAULT_DIR])
    return results


def remove(ctx: BuildContext, items: Sequence[PlannedImage]) -> list[Result]:
    """``--prune``: images that vanished or stopped matching leave the dataset, with every
    file that belongs to them."""
    results = []
    ctx.tree.touch(item.collection_id for item in items)
    for item in items:
        cid, iid = item.collection_id, item.image_id
        git_paths(ctx.root, ["rm", "-q", "--ignore-unmatch"], [
            str(rel) for rel in (layout.image_sidecar(cid, iid), layout.resampled_file(cid, iid),
                                 layout.resampled_sidecar(cid, iid), layout.words_file(cid, iid))
        ], check=False)
        path = image_path_of(ctx.root, cid, iid)
        if path:
            git_paths(ctx.root, ["rm", "-q"], [path])
        results.append(Result("prune", Status.OK, iid, cid,
                              message=f"{item.change.value}; removed from "
                                      f"{layout.collection_dir(cid)}"))
    for cid in sorted({item.collection_id for item in items}):
        folder = ctx.root / layout.collection_dir(cid)
        if not any(layout.parse_sidecar(p.name) is not None for p in folder.glob("image_*")):
            # nothing of the collection is left: its record goes too, and the folder with it
            # (a subdataset stays registered, empty: its history keeps what it held)
            git_paths(ctx.root, ["rm", "-q", "--ignore-unmatch"],
                      [str(layout.collection_sidecar(cid))], check=False)
    return results
