"""Undo what an interrupted build left half done, so every build starts from a valid state.

A kill can land anywhere: between a download and its ``git annex add``, between staging and
committing, between removing an old image and adding its new version. The invariants the build
keeps make each case recognisable here (a sidecar is written only after its image is annexed).
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from nv_datalad.dataset import layout
from nv_datalad.dataset.annex import discard
from nv_datalad.dataset.runner import git

log = logging.getLogger(__name__)


def recover(root: Path) -> list[str]:
    """Undo what an interrupted build left half done.

    A sidecar is written only after its image was registered, so an image file without one
    is a download in flight when the build stopped: it is removed and fetched again. An image
    file missing from the tree was being replaced: the committed version comes back.
    """
    shutil.rmtree(root / layout.DOWNLOAD_TMP, ignore_errors=True)  # partial downloads
    removed = []
    for cid, cdir in layout.iter_collection_dirs(root):
        names = {e.name for e in os.scandir(cdir)}
        for name in names:
            parsed = layout.parse_image_file(name)
            if parsed and f"image_{parsed[0]}_metadata.json" not in names:
                rel = str(layout.image_file(cid, parsed[0], parsed[1]))
                discard(root, rel)
                removed.append(rel)
    # An update interrupted between removing the old file and adding the new one: put the
    # committed version back; the next overwrite build sees the newer date and redoes it.
    deleted = set(git(root, "ls-files", "--deleted", "--", layout.NEUROVAULT_DIR).split())
    deleted |= set(git(root, "diff", "--cached", "--name-only", "--diff-filter=D", "--",
                       layout.NEUROVAULT_DIR).split())
    restore = sorted(p for p in deleted if layout.parse_image_file(Path(p).name))
    if restore:
        git(root, "checkout", "HEAD", "--", *restore)
    if removed or restore:
        log.info("recovered from an interrupted build: %d partial images removed, %d restored",
                 len(removed), len(restore))
    return removed + restore
