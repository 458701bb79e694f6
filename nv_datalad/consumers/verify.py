"""``nv-datalad verify``: does what the dataset records still match the server and the disk?

Drift is read per collection (one paged list per collection, not one request per image), and
content integrity is ``git annex fsck --fast`` over what is present locally.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from nv_datalad.dataset import layout
from nv_datalad.dataset import repo as ds
from nv_datalad.dataset import revision as versions
from nv_datalad.dataset.runner import annex, json_lines
from nv_datalad.dataset.state import local_images
from nv_datalad.errors import DatasetError, NeuroVaultError, NotFound
from nv_datalad.neurovault.client import NeuroVaultClient
from nv_datalad.neurovault.records import parse_date, record_id

log = logging.getLogger(__name__)


@dataclass
class VerifyReport:
    checked: int = 0
    updated: list[tuple[int, str | None, str | None]] = field(default_factory=list)
    size_changed: list[tuple[int, object, object]] = field(default_factory=list)
    vanished: list[int] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)
    fsck_problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.updated or self.size_changed or self.vanished or self.unreachable
                    or self.fsck_problems)

    def lines(self) -> list[str]:
        out = [f"checked {self.checked} images against the server"]
        out += [f"drift: image {i} modify_date {a} → {b} on the server"
                for i, a, b in self.updated]
        out += [f"drift: image {i} file_size {a} → {b} on the server"
                for i, a, b in self.size_changed]
        out += [f"drift: image {i} is gone from the server" for i in self.vanished]
        out += [f"unreachable: {u}" for u in self.unreachable]
        out += [f"fsck: {p}" for p in self.fsck_problems]
        out.append("ok: the dataset matches the server" if self.ok else
                   "drift found: run `nv-datalad build SPEC --mode overwrite` to update")
        return out


def recorded_server(root: Path) -> str:
    spec = versions.read_spec(root)
    if not spec:
        raise DatasetError(f"{root} has no {layout.SPEC_FILE}; is it a nv-datalad dataset?")
    return str(spec.get("server") or "https://neurovault.org")


def verify(dataset: Path, *, server: str | None = None, fsck: bool = True) -> VerifyReport:
    from nv_datalad.neurovault.serving import serving

    root = Path(dataset).absolute()
    if not ds.is_dataset(root):
        raise DatasetError(f"{root} is not a DataLad dataset")
    report = VerifyReport()
    local = local_images(root)
    report.checked = len(local)
    with serving(server or recorded_server(root)) as base, NeuroVaultClient(base) as client:
        by_collection: dict[int, list[int]] = {}
        for iid, sc in local.items():
            by_collection.setdefault(int(sc.get("collection_id") or 0), []).append(iid)

        def listing(cid: int) -> dict[int, dict] | Exception:
            try:
                return {record_id(r): r for r in client.collection_images(cid)}  # type: ignore[misc]
            except NotFound:
                return {}
            except NeuroVaultError as exc:
                return exc

        cids = sorted(by_collection)
        for cid, remote in zip(cids, client.map(listing, cids), strict=True):
            if isinstance(remote, Exception):
                report.unreachable.append(str(remote))
                continue
            for iid in sorted(by_collection[cid]):
                _compare(report, iid, local[iid], remote.get(iid))
    if fsck:
        report.fsck_problems = _fsck(root)
    return report


def _compare(report: VerifyReport, iid: int, sidecar: dict, record: dict | None) -> None:
    if record is None:
        report.vanished.append(iid)
        return
    old, new = parse_date(sidecar.get("modify_date")), parse_date(record.get("modify_date"))
    if old and new and new > old:
        report.updated.append((iid, sidecar.get("modify_date"), record.get("modify_date")))
    if record.get("file_size") != sidecar.get("file_size"):
        report.size_changed.append((iid, sidecar.get("file_size"), record.get("file_size")))


def _fsck(root: Path) -> list[str]:
    """``git annex fsck --fast`` over present content: sizes and presence, no re-hashing."""
    proc = annex(root, "fsck", "--fast", "--json", "--json-error-messages", "--quiet",
                 check=False)
    problems = []
    for rec in json_lines(proc.out):
        if not rec.get("success", True):
            msgs = "; ".join(rec.get("error-messages") or []) or rec.get("note", "failed")
            problems.append(f"{rec.get('file')}: {msgs}")
    return problems


__all__ = ["VerifyReport", "verify"]
