"""The ``archive`` remote: where content goes before NeuroVault's URL starts serving new bytes.

NeuroVault URLs are not versioned, so the web remote can only ever give the newest file. With
``archive`` set, superseded content is copied to a git-annex special remote first, and
``datalad get`` at an old tag still works. Two kinds:

- a directory path → a ``directory`` special remote (``autoenable`` so clones find it);
- ``ria+file:///...`` (or another ``ria+`` URL) → a DataLad RIA store via
  ``datalad create-sibling-ria``; its ORA storage remote is the archive.
"""

from __future__ import annotations

import contextlib
import io
import logging
import re
from pathlib import Path

from nv_datalad.dataset.runner import annex, git
from nv_datalad.errors import DatasetError

log = logging.getLogger(__name__)

ARCHIVE_REMOTE = "nv-archive"


def ensure_archive(root: Path, target: str) -> str:
    """Set up (once) and return the name of the git-annex remote that keeps old content."""
    if target.startswith("ria+"):
        return _ensure_ria(root, target)
    directory = Path(target).expanduser()
    if not directory.is_absolute():
        directory = (root / directory).resolve()
    configured = git(root, "config", "--get", f"remote.{ARCHIVE_REMOTE}.annex-uuid", check=False)
    if configured.strip():
        return ARCHIVE_REMOTE
    directory.mkdir(parents=True, exist_ok=True)
    proc = annex(root, "initremote", ARCHIVE_REMOTE, "type=directory",
                 f"directory={directory}", "encryption=none", "autoenable=true", check=False)
    if not proc.ok:
        proc = annex(root, "enableremote", ARCHIVE_REMOTE, f"directory={directory}",
                     check=False)
    if not proc.ok:
        raise DatasetError(f"cannot set up the archive remote at {directory}: {proc.err[:300]}")
    log.info("archive: superseded content goes to %s (remote %s)", directory, ARCHIVE_REMOTE)
    return ARCHIVE_REMOTE


def _ensure_ria(root: Path, url: str) -> str:
    return ensure_ria_sibling(root, url, ARCHIVE_REMOTE)


def ensure_ria_sibling(root: Path, url: str, name: str) -> str:
    """A RIA store sibling ``name`` of ``root`` (made once, with the store if it is new);
    returns its storage remote's name (``<name>-storage``)."""
    import datalad.api as dl

    storage = f"{name}-storage"
    configured = git(root, "config", "--get", f"remote.{storage}.annex-uuid", check=False)
    if not configured.strip():
        # it renders an inner `update` result on stdout whatever result_renderer says
        with contextlib.redirect_stdout(io.StringIO()):
            dl.create_sibling_ria(url=url, name=name, dataset=str(root),
                                  new_store_ok=True, result_renderer="disabled")
    trust_remote(root, storage)
    return storage


def trust_remote(root: Path, storage: str) -> None:
    """git-annex 10.2026x refuses writes to a special remote it has not verified in this
    clone: verify it (a no-op for a git-annex that does not know the check)."""
    probe = annex(root, "verifyremote", storage, check=False)
    said = re.search(r"verifyremote \S+ --safe (\S+)", probe.out)
    if said:
        annex(root, "verifyremote", storage, "--safe", said.group(1), check=False)
