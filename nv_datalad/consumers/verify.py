"""``nv-datalad verify``: does what the dataset records still match the server and the disk?

Drift is read per collection (one paged list per collection, not one request per image), and
content integrity is ``git annex fsck --fast`` over what is present locally.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from nv_datalad.dataset import layout, nesting
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
    """What verify found; each list is one kind of problem with its own way to repair it."""

    checked: int = 0
    updated: list[tuple[int, str | None, str | None]] = field(default_factory=list)
    size_changed: list[tuple[int, object, object]] = field(default_factory=list)
    vanished: list[int] = field(default_factory=list)
    unreachable: list[str] = field(default_factory=list)
    #: the server could not be asked at all (the content was still checked)
    server_error: str = ""
    #: annexed files whose local content failed ``fsck`` (moved to .git/annex/bad by it)
    corrupted: list[str] = field(default_factory=list)
    #: annexed files without local content although the spec keeps content
    missing: list[str] = field(default_factory=list)

    @property
    def drift(self) -> bool:
        return bool(self.updated or self.size_changed or self.vanished or self.unreachable)

    @property
    def ok(self) -> bool:
        return not (self.drift or self.corrupted or self.missing or self.server_error)

    @property
    def exit_status(self) -> int:
        """2 when the server could not be asked (nothing to conclude about drift), 1 for any
        problem found, 0 when everything matches."""
        return 2 if self.server_error else 0 if self.ok else 1

    def lines(self) -> list[str]:
        out = []
        if self.server_error:
            out.append(f"server: {self.server_error}; only the content was checked")
        else:
            out.append(f"checked {self.checked} images against the server")
        out += [f"drift: image {i} modify_date {a} → {b} on the server"
                for i, a, b in self.updated]
        out += [f"drift: image {i} file_size {a} → {b} on the server"
                for i, a, b in self.size_changed]
        out += [f"drift: image {i} is gone from the server" for i in self.vanished]
        out += [f"unreachable: {u}" for u in self.unreachable]
        out += [f"corrupted: {p}" for p in self.corrupted]
        out += [f"missing: {p} has no local content" for p in self.missing]
        if self.updated or self.size_changed:
            out.append("to update changed images: `nv-datalad build SPEC --mode overwrite`")
        if self.vanished:
            out.append("vanished images are kept on purpose; `nv-datalad build SPEC --prune` "
                       "removes them")
        if self.corrupted or self.missing:
            out.append("to repair content: `datalad get PATH ...` fetches it again from the "
                       "web and checks it against its key")
        if self.ok:
            out.append("ok: the dataset matches the server and its content is intact")
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
        raise versions.not_a_dataset(root, "not a DataLad dataset: no .datalad/config")
    report = VerifyReport()
    local = local_images(root)
    report.checked = len(local)
    if fsck:
        report.corrupted = _fsck(root)
        if _keeps_content(root):
            bad = {c.split(": ", 1)[0] for c in report.corrupted}
            report.missing = [p for p in _absent(root) if p not in bad]
    with serving(server or recorded_server(root)) as base, NeuroVaultClient(base) as client:
        try:
            client.probe()
        except NeuroVaultError as exc:
            report.server_error = str(exc)
            return report
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


def _repositories(root: Path) -> list[tuple[Path, str]]:
    """(repository, its path prefix in the dataset): the dataset and its subdatasets."""
    return [(root, ""), *((sub, f"{sub.relative_to(root).as_posix()}/")
                          for sub in nesting.installed(root))]


def _fsck(root: Path) -> list[str]:
    """``git annex fsck --fast`` over present content (sizes and presence, no re-hashing):
    every file that fails, by name, with git-annex's reason."""
    problems = []
    for repo, prefix in _repositories(root):
        proc = annex(repo, "fsck", "--fast", "--json", "--json-error-messages", check=False)
        for rec in json_lines(proc.out):
            if not rec.get("success", True):
                msgs = "; ".join(m.strip() for m in rec.get("error-messages") or []
                                 if m.strip())
                problems.append(f"{prefix}{rec.get('file')}: "
                                f"{msgs or rec.get('note') or 'failed'}")
    return problems


def _keeps_content(root: Path) -> bool:
    spec = versions.read_spec(root)
    return spec.get("content", "download") == "download" and spec.get("keep_content", True)


def _absent(root: Path) -> list[str]:
    """Annexed images whose content is not here (a drop, or fsck moved it to .git/annex/bad)."""
    absent = []
    for repo, prefix in _repositories(root):
        proc = annex(repo, "find", "--not", "--in=here", "--include=*", "--",
                     *([] if prefix else [layout.NEUROVAULT_DIR]), check=False)
        absent += [prefix + p for p in proc.out.splitlines()
                   if p and layout.parse_image_file(Path(p).name)]
    return absent


__all__ = ["VerifyReport", "verify"]
