"""Fetch annexed content for chosen paths: one ``datalad get``, one result record per file.

Shared by ``nv-datalad get --where`` and ``load(get=True)``; failures are records, and
:func:`raise_on_failures` turns them into one error that lists every file and what to do.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nv_datalad.dataset import layout
from nv_datalad.errors import DatasetError
from nv_datalad.records import Result, Status

log = logging.getLogger(__name__)


def _message(res: Mapping[str, Any]) -> str:
    msg = res.get("message") or ""
    if isinstance(msg, tuple | list) and msg:
        try:
            return str(msg[0]) % tuple(msg[1:])
        except (TypeError, ValueError):
            return " ".join(map(str, msg))
    return str(msg)


def fetch(dataset: Path, relpaths: Sequence[str], jobs: int | None = None) -> list[Result]:
    """``datalad get`` exactly ``relpaths``; one Result per path (never raises per file).

    An empty list fetches nothing (``datalad get`` with no path would fetch the whole dataset).
    """
    if not relpaths:
        return []
    import datalad.api as dl

    root = Path(dataset).resolve()
    raw = dl.get(
        path=[str(root / p) for p in relpaths], dataset=str(root), jobs=jobs,
        on_failure="ignore", return_type="list", result_renderer="disabled",
    )
    by_path: dict[str, Mapping[str, Any]] = {}
    for res in raw or []:
        if res.get("action") != "get" or res.get("type") not in (None, "file"):
            continue
        path = res.get("path")
        if not path:
            continue
        candidate = Path(path)
        try:
            rel = candidate.relative_to(root).as_posix()
        except ValueError:
            rel = candidate.as_posix()
        by_path[rel] = res
    results = []
    for rel in relpaths:
        cid, iid = layout.ids_of(rel)
        res = by_path.get(rel)
        if res is None:
            results.append(Result("get", Status.ERROR, iid, cid, rel, "datalad get gave no result"))
            continue
        try:
            status = Status(res.get("status"))
        except ValueError:
            status = Status.ERROR
        results.append(Result("get", status, iid, cid, rel, _message(res)))
        log.debug("get %s: %s %s", rel, status.value, results[-1].message)  # the CLI prints
    return results


def summarise(results: Sequence[Result]) -> str:
    """``3 ok, 1 notneeded, 0 failed`` for the CLI's last line."""
    counts = {s: 0 for s in Status}
    for r in results:
        counts[r.status] += 1
    failed = counts[Status.ERROR] + counts[Status.IMPOSSIBLE]
    return (f"{counts[Status.OK]} fetched, {counts[Status.NOTNEEDED]} already present, "
            f"{failed} failed")


def raise_on_failures(results: Sequence[Result]) -> None:
    """For callers (``load(get=True)``) that cannot go on without the content."""
    failed = [r for r in results if r.failed]
    if failed:
        shown = "; ".join(f"{r.path}: {r.message}" for r in failed[:5])
        more = f" (and {len(failed) - 5} more)" if len(failed) > 5 else ""
        raise DatasetError(f"could not get {len(failed)} file(s): {shown}{more}")
