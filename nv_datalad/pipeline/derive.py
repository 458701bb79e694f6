"""The derivatives stage: Neurosynth words and resampled maps, each inside ``datalad run``.

Derivatives are made for the selected images whose import did not fail; a changed source gets
its derivative recomputed in the same build. The workers live in :mod:`nv_datalad.derivatives`;
this stage decides what to give them.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

from nv_datalad.dataset import layout
from nv_datalad.dataset.state import image_path_of
from nv_datalad.pipeline.context import BuildContext
from nv_datalad.pipeline.plan import Change, Plan, PlannedImage
from nv_datalad.records import PROVENANCE_KEY, Result, Status

log = logging.getLogger(__name__)


def derive(ctx: BuildContext, plan: Plan, results: Sequence[Result]) -> list[Result]:
    failed = {r.image_id for r in results if r.failed}
    present = [p for p in plan.items
               if p.change not in (Change.VANISHED, Change.UNSELECTED)
               and p.image_id not in failed
               and image_path_of(ctx.root, p.collection_id, p.image_id)]
    out: list[Result] = []
    if ctx.spec.neurosynth.words and ctx.client is not None:
        out += words(ctx, present)
    if ctx.spec.resample is not None:
        out += resample(ctx, present, {p.image_id for p in plan.of(Change.CONTENT)})
    return out


def words(ctx: BuildContext, items: Sequence[PlannedImage]) -> list[Result]:
    from nv_datalad.derivatives import neurosynth
    from nv_datalad.derivatives.misses import MissLog

    assert ctx.client is not None
    url = ctx.spec.neurosynth.resolve_url(ctx.base_url)
    todo = [(p.collection_id, p.image_id) for p in items]
    # only collections that may get a word file now are opened (a no-op rebuild opens none)
    misses, now = MissLog.load(ctx.root), datetime.now(UTC)
    ctx.tree.touch(cid for cid, iid in todo
                   if not (ctx.root / layout.words_file(cid, iid)).is_file()
                   and (ctx.recheck or misses.due(iid, now)))
    got = neurosynth.fetch_all(ctx.client.session, url, todo, ctx.root,
                               jobs=min(8, ctx.jobs * 2), retry_all=ctx.recheck, now=now)
    # Missing words are a note, never a failed build (Neurosynth is often down).
    ok = [r for r in got if r.status == Status.OK]
    missing = [r for r in got if r.failed]
    if missing:
        waiting = sum(1 for r in missing if r.extra.get("asked") is False)
        log.log(logging.DEBUG if waiting == len(missing) else logging.INFO,
                "Neurosynth had no words for %d images%s; a later build asks again after a "
                "back-off (--recheck asks now)", len(missing),
                f" ({waiting} not asked this time)" if waiting else "")
    if ok:
        ctx.tree.commit(f"nv-datalad: Neurosynth words for {len(ok)} images",
                        paths=[layout.NEUROVAULT_DIR])
    return ok


def resample(ctx: BuildContext, items: Sequence[PlannedImage], changed: set[int]) -> list[Result]:
    from nv_datalad.derivatives import resample as worker

    work = []
    for p in items:
        out = ctx.root / layout.resampled_file(p.collection_id, p.image_id)
        if p.image_id not in changed and (out.is_symlink() or out.exists()):
            continue
        src = image_path_of(ctx.root, p.collection_id, p.image_id)
        if ctx.client is None and not (ctx.root / str(src)).exists():
            log.info("offline: image %s has no local content, not resampled", p.image_id)
            continue
        key = ((p.local or {}).get(PROVENANCE_KEY) or {}).get("key", "")  # looked up again
        work.append((p.collection_id, p.image_id, src, key))
    if not work:
        return []
    ctx.tree.commit("nv-datalad: state before resampling")
    ctx.progress("resample", 0, len(work))
    results = worker.resample_with_provenance(
        ctx.root, work, ctx.spec.resample, jobs=ctx.jobs,
        message=f"nv-datalad: resample {len(work)} images{ctx.label}",
    )
    ctx.progress("resample", len(work), len(work))
    if not ctx.spec.keep_content:
        ctx.annex.drop([w[2] for w in work])
    return results


def refresh_report(ctx: BuildContext) -> list[Result]:
    """``report: true``: report.html refreshed by ``datalad run`` after the version is tagged,
    so the page shows that version; a no-op rebuild leaves it (and the history) alone."""
    from nv_datalad.consumers.report import refresh_report_with_provenance

    result = refresh_report_with_provenance(ctx.root) if ctx.spec.report else None
    return [result] if result is not None and result.failed else []


def vectorize(ctx: BuildContext) -> list[Result]:
    """The word matrix over every word file, when Neurosynth words are asked for."""
    from nv_datalad.derivatives import neurosynth

    spec = ctx.spec.neurosynth
    if not (spec.words and spec.vectorize):
        return []
    if not any((ctx.root / layout.NEUROVAULT_DIR).glob("*/neurosynth_words_for_image_*")):
        return []
    ctx.tree.commit("nv-datalad: tables")
    result = neurosynth.vectorize_with_provenance(ctx.root, jobs=1)
    return [result] if result.failed else []
