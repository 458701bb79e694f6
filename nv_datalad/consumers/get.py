"""``nv-datalad get --where``: fetch the content of exactly the images whose metadata matches.

Selection reads the JSON sidecars, filtered by the ``--where`` language of
:mod:`nv_datalad.spec.where` (shared with ``load(where=...)`` and the spec); fetching is one
``datalad get`` call on the selected paths, reported as one Result per file.
"""

from __future__ import annotations

import logging
from pathlib import Path

from nv_datalad.consumers.fetch import fetch
from nv_datalad.records import Result
from nv_datalad.spec.where import Where

# Re-exported until load.py, build/readme.py and cli.py import them from nv_datalad.spec.where.

log = logging.getLogger(__name__)


def select(
    dataset: Path, where: Where, version: str | None = None, resampled: bool = False
) -> list[str]:
    """Dataset-relative paths of the matching images (their resampled derivatives when
    ``resampled``; images without one are skipped with a warning), in images.tsv order."""
    from nv_datalad.consumers.load import entries

    chosen = entries(dataset, version=version, where=where)
    if not resampled:
        return [e.relpath for e in chosen]
    missing = [e.image_id for e in chosen if e.resampled_relpath is None]
    if missing:
        log.warning("%d matching image(s) have no resampled derivative (ids %s)",
                    len(missing), ", ".join(map(str, missing[:10])))
    return [e.resampled_relpath for e in chosen if e.resampled_relpath is not None]


def get(
    dataset: Path, where: Where, resampled: bool = False, jobs: int | None = None
) -> list[Result]:
    """Fetch the content of the images matching ``where`` in the working tree's metadata."""
    paths = select(dataset, where, resampled=resampled)
    if not paths:
        log.warning("no image matches %s: nothing to get", where)
    return fetch(dataset, paths, jobs=jobs)
