"""What every stage of one build reads: the spec, the dataset, the server, the annex.

Read-only by convention: stages communicate through the values they return (selection,
plan, result records), never through this object.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from nv_datalad._version import __version__
from nv_datalad.dataset.annex import Annex, configure_loopback
from nv_datalad.dataset.files import utcnow
from nv_datalad.dataset.nesting import Tree
from nv_datalad.neurovault.client import NeuroVaultClient
from nv_datalad.records import PROVENANCE_KEY
from nv_datalad.spec import Spec

if TYPE_CHECKING:
    from nv_datalad.neurovault.download import Downloads

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (stage, done, total)


def no_progress(stage: str, done: int, total: int) -> None:
    return None


@dataclass(frozen=True)
class BuildContext:
    spec: Spec
    root: Path
    base_url: str
    client: NeuroVaultClient | None  # None: offline, the dataset is the server
    annex: Annex
    tree: Tree  # the repositories written to: superdataset and collection subdatasets
    jobs: int
    checkpoint: int
    recheck: bool = False  # trust no date, no remembered Neurosynth miss
    progress: Progress = no_progress
    label: str = ""  # appended to derivative commit messages (a cluster job names itself)
    downloads: Downloads | None = None  # one pool per build: the crawl starts the first files

    def file_url(self, record: Mapping[str, Any]) -> str | None:
        """The http(s) URL to fetch a record's file from (None: refused)."""
        return self.client.file_url(record) if self.client else record.get("file")

    def provenance(self, **extra: str) -> dict[str, str]:
        """The ``nv_datalad`` key of a sidecar written now."""
        return {"server": self.base_url, "retrieved_at": utcnow(), "tool_version": __version__,
                **extra}

    def sidecar(self, record: Mapping[str, Any], provenance: Mapping[str, Any]) -> dict:
        return {**record, PROVENANCE_KEY: dict(provenance)}

    def allow_loopback(self, urls: Iterable[str]) -> None:
        hosts = {urlsplit(u).hostname or "" for u in urls}
        new = configure_loopback(self.root, hosts)
        if new and self.tree.nested:
            self.tree.allow()
        for ip in new:
            log.info(
                "set annex.security.allowed-ip-addresses to include %s in %s/.git/config so "
                "git-annex may download from this loopback server (clones need the same)",
                ip, self.root,
            )
