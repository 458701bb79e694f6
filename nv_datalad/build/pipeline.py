"""``nv-datalad build``: spec → selection → plan → apply → derivatives → one version tag.

Data flows one way. Selection and planning are pure of side effects (``--dry-run`` stops
there); applying the plan is done in checkpointed batches so an interrupted build loses at most
the batch in flight, and the next build converges to the same result.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from nv_datalad.dataset import layout
from nv_datalad import __version__
from nv_datalad.dataset import repo as ds
from nv_datalad.dataset.annex import (
    Annex,
    annex_available,
    configure_loopback,
    discard,
    git,
    metadata_line,
    reply_error,
)
from nv_datalad.errors import DatasetError, EnvironmentProblem, NeuroVaultError, NotFound
from nv_datalad.neurovault.client import (
    ClientConfig,
    NeuroVaultClient,
    default_neurosynth_url,
    normalise_nulls,
    parse_date,
)
from nv_datalad.records import ANNEX_METADATA_FIELDS, PROVENANCE_KEY, Result, Status
from nv_datalad.build.select import Selected, Selection, select
from nv_datalad.spec.model import Spec, load_spec, spec_to_yaml
from nv_datalad.build.plan import Change, Plan, PlannedImage, format_plan, make_plan, next_version, settle

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]  # (stage, done, total)
Placed = tuple[PlannedImage, str, str, str]  # (image, relpath, url, annex key)


@dataclass
class BuildReport:
    """What a build did: the plan, one result per image/step, and the version it tagged."""

    dataset: Path
    plan: Plan
    results: list[Result] = field(default_factory=list)
    version: str | None = None
    dry_run: bool = False
    record_path: str | None = None

    @property
    def failed(self) -> list[Result]:
        return [r for r in self.results if r.failed]

    @property
    def exit_status(self) -> int:
        return 1 if self.failed else 0

    def count(self, action: str, status: Status = Status.OK) -> int:
        return sum(1 for r in self.results if r.action == action and r.status == status)

    def summary(self) -> str:
        if self.dry_run:
            return "\n".join(format_plan(self.plan))
        parts = [
            f"added {self.count('add')}",
            f"updated {self.count('update')}",
            f"metadata {self.count('metadata')}",
        ]
        if self.failed:
            where = f" (listed in {self.record_path})" if self.record_path else ""
            parts.append(f"failed {len(self.failed)}{where}")
        parts.append(f"tag {self.version}" if self.version else "no change, no new version")
        return ", ".join(parts)


def _noop(stage: str, done: int, total: int) -> None:
    return None


@contextlib.contextmanager
def serving(server: str) -> Iterator[str]:
    """The base URL to talk to; ``embedded`` runs the bundled emulator in this process.

    The emulator listens on a fixed loopback port so URLs registered by an embedded build are
    served again later by ``nv-datalad emulator``. If that port is taken by a running emulator,
    it is used as is.
    """
    if server != "embedded":
        yield server
        return
    from nv_datalad.emulator import DEFAULT_PORT, Emulator

    url = f"http://127.0.0.1:{DEFAULT_PORT}"
    try:
        emu = Emulator(corpus="demo", port=DEFAULT_PORT)
        emu.start()
    except OSError as exc:
        import requests

        try:
            requests.get(url + "/api/collections/?limit=1", timeout=5).raise_for_status()
        except requests.RequestException:
            raise EnvironmentProblem(
                f"port {DEFAULT_PORT} for the embedded emulator is in use by something else "
                f"({exc}); free it or run `nv-datalad emulator --port P` and pass --server"
            ) from None
        log.info("using the emulator already serving at %s", url)
        yield url
        return
    log.info("embedded NeuroVault emulator serving at %s", emu.url)
    try:
        yield emu.url
    finally:
        emu.stop()


def build(
    spec_or_path: Spec | str | Path,
    dataset: str | Path | None = None,
    *,
    mode: str | None = None,
    jobs: int = 4,
    server: str | None = None,
    dry_run: bool = False,
    prune: bool = False,
    recheck: bool = False,
    checkpoint: int = 500,
    stall_timeout: float = 300.0,
    progress: Progress = _noop,
) -> BuildReport:
    """Create or update the dataset described by a spec; see DESIGN.md for the semantics."""
    spec = spec_or_path if isinstance(spec_or_path, Spec) else load_spec(spec_or_path)
    spec = spec.with_overrides(mode=mode, server=server)
    root = Path(dataset if dataset is not None else spec.name).absolute()
    annex_available()
    _require_identity()
    if spec.mode == "offline" and not dry_run and not ds.is_dataset(root):
        raise DatasetError(f"offline mode needs an existing dataset; {root} is not one")
    with serving(spec.server) as base_url:
        job = _Build(spec, root, base_url, jobs, prune, recheck, checkpoint, stall_timeout,
                     progress)
        if job.client is not None:
            job.client.probe()  # an unreachable server is an error before anything is written
        if dry_run:
            return job.dry_run()
        ds.create(root, description=spec.description)
        with ds.locked(root):
            return job.run()


def _require_identity() -> None:
    """Commits need an identity. Without one, commit as the tool (and say how to change it)
    rather than failing on a fresh machine."""
    import os

    for var, key, fallback in (("GIT_AUTHOR_NAME", "user.name", "nv-datalad"),
                               ("GIT_AUTHOR_EMAIL", "user.email", "nv-datalad@localhost")):
        if os.environ.get(var):
            continue
        proc = subprocess.run(["git", "config", "--get", key], capture_output=True, text=True)
        if not proc.stdout.strip():
            log.warning("git has no %s; committing as %r (set it with `git config --global "
                        "%s ...`)", key, fallback, key)
            os.environ[var] = fallback
            os.environ[var.replace("AUTHOR", "COMMITTER")] = fallback


class _Build:
    """One build's state; each method is one stage of the pipeline."""

    def __init__(self, spec: Spec, root: Path, base_url: str, jobs: int, prune: bool,
                 recheck: bool, checkpoint: int, stall_timeout: float, progress: Progress):
        self.spec = spec
        self.root = root
        self.base_url = base_url
        self.jobs = max(1, jobs)
        self.prune = prune
        self.recheck = recheck
        self.checkpoint = max(1, checkpoint)
        self.progress = progress
        self.annex = Annex(root, jobs=self.jobs, stall_timeout=stall_timeout)
        self.results: list[Result] = []
        self.collections: dict[int, dict] = {}
        self.client: NeuroVaultClient | None = None
        if spec.mode != "offline":
            self.client = NeuroVaultClient(base_url, ClientConfig(workers=max(4, self.jobs)))

    # -- planning -----------------------------------------------------------------------

    def _select_and_plan(self, local: Mapping[int, dict]) -> tuple[Selection, Plan]:
        if self.client is None:  # offline: the dataset is the server
            selection = _select_local(self.spec, local, ds.local_collections(self.root))
        else:
            self.progress("metadata", 0, 0)
            selection = select(self.client, self.spec)
            self.results.extend(selection.failures)
        still = self._still_on_server(selection, local) if self.client else {}
        plan = make_plan(
            selection.items, local, mode=self.spec.mode, file_url=self._file_url,
            still_on_server=still, recheck=self.recheck,
        )
        return selection, plan

    def _file_url(self, record: Mapping[str, Any]) -> str | None:
        return self.client.file_url(record) if self.client else record.get("file")

    def _still_on_server(self, selection: Selection, local: Mapping[int, dict]) -> dict[int, bool]:
        """For local images outside the selection: is the server still serving them?"""
        missing = sorted(set(local) - set(selection.ids))
        known: dict[int, bool] = {}
        unknown = []
        for iid in missing:
            cid = local[iid].get("collection_id")
            if selection.complete and cid in selection.walked_collections:
                known[iid] = iid in selection.seen_image_ids
            else:
                unknown.append(iid)
        assert self.client is not None

        def probe(iid: int) -> bool | None:
            try:
                self.client.image(iid)  # type: ignore[union-attr]
                return True
            except NotFound:
                return False
            except NeuroVaultError:
                return None

        for iid, alive in zip(unknown, self.client.map(probe, unknown), strict=True):
            if alive is not None:
                known[iid] = alive
        return known

    def dry_run(self) -> BuildReport:
        local = ds.local_images(self.root) if ds.is_dataset(self.root) else {}
        _, plan = self._select_and_plan(local)
        return BuildReport(self.root, plan, self.results, dry_run=True)

    # -- the pipeline --------------------------------------------------------------------

    def run(self) -> BuildReport:
        start_head = ds.head(self.root)
        ds.recover(self.root)
        if self.client:
            self._allow_loopback([self.base_url])
        local = ds.local_images(self.root)
        self.collections = ds.local_collections(self.root)
        previous_spec = (self.root / layout.SPEC_FILE)
        old_spec_text = previous_spec.read_text() if previous_spec.is_file() else None

        selection, plan = self._select_and_plan(local)
        for line in format_plan(plan):
            log.info("%s", line)
        if self.client:
            plan = self._settle_checks(plan)
            self._write_collections(selection)
            self._add(plan.of(Change.NEW))
            self._update_content(plan.of(Change.CONTENT))
            self._update_metadata(plan.of(Change.METADATA))
        pruned = self._prune(plan) if self.prune else []
        self._report_kept(plan, pruned)
        self._derivatives(plan)
        images, cols = self._write_state()
        spec_text = spec_to_yaml(self.spec)
        spec_changed = old_spec_text is not None and _question(old_spec_text) != _question(
            spec_text)
        if old_spec_text is None or spec_changed:
            ds.write_text(self.root, layout.SPEC_FILE, spec_text)
        changed = ds.head(self.root) != start_head or ds.is_dirty(self.root)
        report = BuildReport(self.root, plan, self.results)
        if not changed:
            log.info("nothing changed: no commit, no tag")
            return report
        tags = ds.tags(self.root)
        content_changed = any(r.action in ("add", "update", "prune") and not r.failed
                              for r in self.results)
        version = next_version(tags[-1] if tags else None, spec_changed=spec_changed,
                               content_changed=content_changed)
        report.version = version
        self._finalise(report, plan, pruned, spec_changed, images, cols)
        return report

    def _settle_checks(self, plan: Plan) -> Plan:
        """Same URL and size, newer date: a conditional HEAD tells a metadata edit (304) from
        a new file, so metadata edits cost no download. When the server cannot tell, the file
        is downloaded and the keys compared."""
        checks = plan.of(Change.CHECK)
        if not checks:
            return plan
        if self.recheck:  # trust no date: download and compare keys
            plan.items = [settle(p, None) for p in plan.items]
            return plan
        assert self.client is not None

        def ask(item: PlannedImage) -> bool | None:
            # The file's mtime (Last-Modified) is at most the modify_date of the save that
            # wrote it, so "modified since the modify_date we hold" means a new file. The
            # server's clock, not ours, is the reference: no skew between machines.
            since = parse_date((item.local or {}).get("modify_date"))
            url = self._file_url(item.record or {})
            if since is None or url is None:
                return None
            try:
                return self.client.file_changed_since(url, since)  # type: ignore[union-attr]
            except NeuroVaultError:
                return None

        answers = dict(zip((c.image_id for c in checks), self.client.map(ask, checks),
                           strict=True))
        plan.items = [settle(p, answers.get(p.image_id)) for p in plan.items]
        return plan

    def _write_collections(self, selection: Selection) -> None:
        """Collection sidecars for every collection that contributes an image."""
        for sel in selection.items:
            cid = sel.collection_id
            old = self.collections.get(cid)
            if old is not None and _same_record(old, sel.collection):
                continue
            record = dict(sel.collection)
            record[PROVENANCE_KEY] = {
                "server": self.base_url,
                "retrieved_at": ds.utcnow(),
                "tool_version": __version__,
            }
            ds.write_json(self.root, layout.collection_sidecar(cid), record)
            self.collections[cid] = record

    # -- images ---------------------------------------------------------------------------

    def _sidecar(self, record: Mapping[str, Any], url: str, path: str, key: str,
                 retrieved_at: str) -> dict:
        sidecar = dict(record)
        sidecar[PROVENANCE_KEY] = {
            "server": self.base_url,
            "source_url": url,
            "retrieved_at": retrieved_at,
            "tool_version": __version__,
            "path": path,
            "key": key,
        }
        return sidecar

    def _add(self, items: Sequence[PlannedImage]) -> None:
        """New images, in checkpointed batches: download and annex, metadata, sidecar,
        commit. A batch interrupted before its commit is undone by ``recover`` next time."""
        total = len(items)
        for start in range(0, total, self.checkpoint):
            batch = items[start : start + self.checkpoint]
            ok = self._register(batch, action="add",
                                on_reply=lambda n, s=start: self.progress("download", s + n,
                                                                          total))
            if ok:
                ds.commit(self.root, f"nv-datalad: add {len(ok)} images (checkpoint)",
                          paths=[layout.NEUROVAULT_DIR])

    def _register(self, items: Sequence[PlannedImage], *, action: str,
                  on_reply: Callable[[int], None] | None = None) -> list[PlannedImage]:
        """Bring ``items`` into the annex, then metadata and sidecars; returns the successes.

        ``content: download``: one GET per file and checksum keys whose web URL is registered;
        ``content: register``: ``addurl --fast`` (URL keys, nothing downloaded).
        """
        todo: list[tuple[PlannedImage, str]] = []
        for item in items:
            record = item.record or {}
            url = self._file_url(record)
            if url is None:
                self._fail(action, item, f"image {item.image_id}: file URL is not http(s): "
                                         f"{record.get('file')!r}")
                continue
            todo.append((item, url))
        self._allow_loopback([url for _, url in todo])  # file URLs may name another host
        retrieved_at = ds.utcnow()
        if self.spec.content == "download":
            placed = self._download(todo, action, on_reply)
        else:
            placed = self._register_only(todo, action, on_reply)
        ok = []
        for item, path, url, key in placed:
            sidecar = self._sidecar(item.record or {}, url, path, key, retrieved_at)
            ds.write_json(self.root, layout.image_sidecar(item.collection_id, item.image_id),
                          sidecar)
            self.results.append(Result(action, Status.OK, item.image_id, item.collection_id,
                                       path, extra={"key": key}))
            ok.append(item)
        if not self.spec.keep_content and self.spec.content == "download":
            for path, err in self.annex.drop([p for _, p, _, _ in placed]).items():
                log.warning("could not drop %s after hashing: %s", path, err)
        return ok

    def _download(self, todo: Sequence[tuple[PlannedImage, str]], action: str,
                  on_reply: Callable[[int], None] | None) -> list[Placed]:
        """One GET per file (addurl sends a HEAD first); each file is annexed, its web URL
        registered and its metadata set the moment it lands, through long-lived batch
        processes, so git-annex works while the network does."""
        from nv_datalad.neurovault.download import Wanted, fetch_all

        assert self.client is not None
        placed: list[Placed] = []
        with self.annex.batch("add") as add, self.annex.batch("registerurl") as reg, \
                self.annex.batch("metadata") as meta:

            done = [0]

            def landed(index: int, got: Any) -> None:
                item, url = todo[index]
                done[0] += 1
                if on_reply is not None:
                    on_reply(done[0])
                if not got.ok:
                    self._fail(action, item, f"image {item.image_id}: {got.error} ({url})")
                    return
                key = add.ask(got.path).get("key")
                problem = "git annex add failed" if not key else reply_error(
                    reg.ask(f"{key} {url}"))
                if problem:
                    self._fail(action, item, f"image {item.image_id}: {problem}")
                    discard(self.root, got.path)
                    return
                err = reply_error(meta.ask(metadata_line(_annex_fields(item.record or {}),
                                                         key=key)))
                if err:
                    log.warning("image %s: annex metadata not set: %s", item.image_id, err)
                placed.append((item, got.path, url, key))

            fetch_all(
                self.client.file_session, self.root,
                [Wanted(url, item.collection_id, item.image_id) for item, url in todo],
                workers=self.jobs, on_result=landed,
            )
        return placed

    def _register_only(self, todo: Sequence[tuple[PlannedImage, str]], action: str,
                       on_reply: Callable[[int], None] | None) -> list[Placed]:
        by_path = {}
        for item, url in todo:
            rel = str(layout.image_file(item.collection_id, item.image_id,
                                        layout.image_extension(url)))
            by_path[rel] = (item, url)
        placed = []
        pairs = [(url, rel) for rel, (_, url) in by_path.items()]
        for res in self.annex.addurls(pairs, on_reply=on_reply):
            item, url = by_path[res.path]
            if res.ok:
                placed.append((item, res.path, url, res.key or ""))
            else:
                self._fail(action, item, f"image {item.image_id}: {res.error} ({url})")
        errors = self.annex.set_metadata(
            [(path, _annex_fields(item.record or {})) for item, path, _, _ in placed])
        for path, err in errors.items():
            log.warning("%s: annex metadata not set: %s", path, err)
        return placed

    def _allow_loopback(self, urls: Sequence[str]) -> None:
        hosts = {urlsplit(u).hostname or "" for u in urls}
        for ip in configure_loopback(self.root, hosts):
            log.info(
                "set annex.security.allowed-ip-addresses to include %s in %s/.git/config so "
                "git-annex may download from this loopback server (clones need the same)",
                ip, self.root,
            )

    def _fail(self, action: str, item: PlannedImage, message: str) -> None:
        log.warning("%s", message)
        self.results.append(Result(action, Status.ERROR, item.image_id, item.collection_id,
                                   message=message))

    def _update_content(self, items: Sequence[PlannedImage]) -> None:
        """New file on the server: new key at the same path, old key archived (if configured)
        and no longer claiming the web has it."""
        if not items:
            return
        old: dict[int, tuple[str, str | None, str | None]] = {}
        for item in items:
            path = ds.image_path_of(self.root, item.collection_id, item.image_id)
            prov = (item.local or {}).get(PROVENANCE_KEY, {})
            if path is None:
                continue
            old[item.image_id] = (path, prov.get("key"), prov.get("source_url"))
        self._archive([k for _, k, _ in old.values() if k])
        # The server serves other bytes at these URLs now: the old keys stop claiming it first,
        # so even an interrupted update leaves no key promising what the web cannot give.
        self.annex.unregister_urls([(k, u) for _, k, u in old.values() if k and u])
        for path, _, _ in old.values():
            git(self.root, "rm", "-q", "--cached", "--", path)
            (self.root / path).unlink(missing_ok=True)
        ok = {i.image_id for i in self._register(items, action="update")}
        for item in items:
            if item.image_id not in old:
                continue
            path, key, _ = old[item.image_id]
            if item.image_id not in ok:  # never lose data: put the old version back
                git(self.root, "checkout", "HEAD", "--", path, check=False)
                continue
            result = next(r for r in reversed(self.results) if r.image_id == item.image_id)
            if result.extra.get("key") == key:
                self._same_bytes(item, result)
        ds.commit(self.root, f"nv-datalad: update {len(ok)} changed images",
                  paths=[layout.NEUROVAULT_DIR])

    def _same_bytes(self, item: PlannedImage, result: Result) -> None:
        """The download gave the key we had: not a content change after all. The sidecar
        keeps its old provenance, so an image whose record did not change either leaves no
        trace (a ``--recheck`` of an unchanged dataset makes no commit)."""
        local = item.local or {}
        sidecar = dict(item.record or {})
        sidecar[PROVENANCE_KEY] = local.get(PROVENANCE_KEY, {})
        ds.write_json(self.root, layout.image_sidecar(item.collection_id, item.image_id),
                      sidecar)
        same_record = _same_record(local, item.record or {})
        result.action = "verified" if same_record else "metadata"

    def _archive(self, keys: Sequence[str]) -> None:
        """Copy content about to be superseded to the ``archive`` remote, so old versions
        stay retrievable after NeuroVault's URL serves new bytes."""
        if not self.spec.archive or not keys:
            return
        from nv_datalad.dataset.archive import ensure_archive

        remote = ensure_archive(self.root, self.spec.archive)
        for key, err in self.annex.copy_keys_to(remote, keys).items():
            log.warning("could not archive %s before superseding it: %s", key, err)
            self.results.append(Result("archive", Status.ERROR, message=f"{key}: {err}"))

    def _update_metadata(self, items: Sequence[PlannedImage]) -> None:
        """Newer record, same file: refresh the sidecar and the key's annex metadata."""
        if not items:
            return
        fields = []
        for item in items:
            prov = dict((item.local or {}).get(PROVENANCE_KEY, {}))
            sidecar = dict(item.record or {})
            sidecar[PROVENANCE_KEY] = prov
            ds.write_json(self.root, layout.image_sidecar(item.collection_id, item.image_id),
                          sidecar)
            if prov.get("path"):
                fields.append((prov["path"], _annex_fields(sidecar)))
            self.results.append(Result("metadata", Status.OK, item.image_id, item.collection_id,
                                       prov.get("path")))
        for path, err in self.annex.set_metadata(fields).items():
            log.warning("annex metadata not refreshed for %s: %s", path, err)
        ds.commit(self.root, f"nv-datalad: refresh metadata of {len(items)} images",
                  paths=[layout.NEUROVAULT_DIR])

    def _prune(self, plan: Plan) -> list[PlannedImage]:
        gone = plan.of(Change.VANISHED, Change.UNSELECTED)
        for item in gone:
            cdir = layout.collection_dir(item.collection_id)
            for rel in (layout.image_sidecar(item.collection_id, item.image_id),
                        layout.resampled_file(item.collection_id, item.image_id),
                        layout.resampled_sidecar(item.collection_id, item.image_id),
                        layout.words_file(item.collection_id, item.image_id)):
                git(self.root, "rm", "-q", "--ignore-unmatch", "--", str(rel), check=False)
            path = ds.image_path_of(self.root, item.collection_id, item.image_id)
            if path:
                git(self.root, "rm", "-q", "--", path)
            self.results.append(Result("prune", Status.OK, item.image_id, item.collection_id,
                                       message=f"{item.change.value}; removed from {cdir}"))
        return gone

    def _report_kept(self, plan: Plan, pruned: Sequence[PlannedImage]) -> None:
        if pruned:
            return
        for item in plan.of(Change.VANISHED, Change.UNSELECTED):
            log.info("image %s %s: kept (use --prune to remove)", item.image_id,
                     "vanished from the server" if item.change is Change.VANISHED
                     else "no longer matches the spec")

    # -- derivatives ----------------------------------------------------------------------

    def _derivatives(self, plan: Plan) -> None:
        selected = [p for p in plan.items
                    if p.change not in (Change.VANISHED, Change.UNSELECTED)]
        failed = {r.image_id for r in self.results if r.failed}
        present = [p for p in selected if p.image_id not in failed
                   and ds.image_path_of(self.root, p.collection_id, p.image_id)]
        if self.spec.neurosynth.words and self.client is not None:
            self._words(present)
        if self.spec.resample is not None:
            self._resample(present, plan)

    def _words(self, items: Sequence[PlannedImage]) -> None:
        from nv_datalad.derivatives import neurosynth

        assert self.client is not None
        url = self.spec.neurosynth.url or default_neurosynth_url(self.base_url)
        todo = [(p.collection_id, p.image_id) for p in items]
        results = neurosynth.fetch_all(self.client.session, url, todo, self.root,
                                       jobs=min(8, self.jobs * 2))
        # Missing words are a note, never a failed build (Neurosynth is often down).
        missing = sum(1 for r in results if r.failed)
        self.results.extend(r for r in results if r.status == Status.OK)
        n = sum(1 for r in results if r.status == Status.OK)
        if missing:
            log.info("Neurosynth had no words for %d images (retried next build)", missing)
        if n:
            ds.commit(self.root, f"nv-datalad: Neurosynth words for {n} images",
                      paths=[layout.NEUROVAULT_DIR])

    def _resample(self, items: Sequence[PlannedImage], plan: Plan) -> None:
        from nv_datalad.derivatives import resample

        changed = {p.image_id for p in plan.of(Change.CONTENT)}
        work = []
        for p in items:
            out = self.root / layout.resampled_file(p.collection_id, p.image_id)
            if p.image_id in changed or not (out.is_symlink() or out.exists()):
                src = ds.image_path_of(self.root, p.collection_id, p.image_id)
                if self.client is None and not (self.root / str(src)).exists():
                    log.info("offline: image %s has no local content, not resampled", p.image_id)
                    continue
                sidecar = ds.read_json(self.root / layout.image_sidecar(p.collection_id,
                                                                        p.image_id)) or {}
                key = sidecar.get(PROVENANCE_KEY, {}).get("key", "")
                work.append((p.collection_id, p.image_id, src, key))
        if not work:
            return
        if ds.is_dirty(self.root):
            ds.commit(self.root, "nv-datalad: state before resampling")
        self.progress("resample", 0, len(work))
        results = resample.resample_with_provenance(
            self.root, work, self.spec.resample, jobs=self.jobs,
            message=f"nv-datalad: resample {len(work)} images",
        )
        self.results.extend(results)
        self.progress("resample", len(work), len(work))
        if not self.spec.keep_content:
            self.annex.drop([w[2] for w in work])

    # -- the version ------------------------------------------------------------------------

    def _write_state(self) -> tuple[dict[int, dict], dict[int, dict]]:
        """Tables (and the word matrix) from the sidecars; returns them for ``_finalise``."""
        images = ds.local_images(self.root)
        cols = ds.local_collections(self.root)
        ds.write_tables(self.root, images, cols)
        if self.spec.neurosynth.words and self.spec.neurosynth.vectorize:
            self._vectorize()
        return images, cols

    def _vectorize(self) -> None:
        from nv_datalad.derivatives import neurosynth

        if not any((self.root / layout.NEUROVAULT_DIR).glob("*/neurosynth_words_for_image_*")):
            return
        ds.commit(self.root, "nv-datalad: tables")
        result = neurosynth.vectorize_with_provenance(self.root, jobs=1)
        if result.failed:
            self.results.append(result)

    def _finalise(self, report: BuildReport, plan: Plan, pruned: Sequence[PlannedImage],
                  spec_changed: bool, images: Mapping[int, dict],
                  cols: Mapping[int, dict]) -> None:
        from nv_datalad.consumers.cite import cff_for
        from nv_datalad.build.readme import render_readme

        version = report.version or "v1.0.0"
        ds_id = ds.dataset_id(self.root)
        today = datetime.now(UTC).date().isoformat()
        counts: dict[int, int] = {}
        for sc in images.values():
            cid = sc.get("collection_id")
            if isinstance(cid, int):
                counts[cid] = counts.get(cid, 0) + 1
        contributing = [cols[c] for c in sorted(counts) if c in cols]
        ds.write_text(self.root, layout.README, render_readme(
            self.spec.raw, version, ds_id, [images[i] for i in sorted(images)],
            contributing, self.base_url))
        ds.write_text(self.root, layout.CITATION, cff_for(
            self.spec.name, self.spec.description, ds_id, version, today, contributing, counts,
            server=self.base_url))
        ds.prepend_changes(self.root, _changes_entry(version, today, plan, self.results,
                                                     pruned, spec_changed))
        record = self._build_record(version, plan)
        report.record_path = f"{layout.BUILDS_DIR}/{record['started'].replace(':', '')}.json"
        ds.write_json(self.root, report.record_path, record)
        ds.commit(self.root, f"nv-datalad: {version}\n\n" + "\n".join(format_plan(plan)))
        ds.tag(self.root, version, f"{self.spec.name} {version}: " + report.summary())

    def _build_record(self, version: str, plan: Plan) -> dict:
        return {
            "started": ds.utcnow(),
            "version": version,
            "server": self.base_url,
            "mode": self.spec.mode,
            "content": self.spec.content,
            "counts": dict(plan.counts()),
            "results": {
                action: sum(1 for r in self.results if r.action == action and not r.failed)
                for action in sorted({r.action for r in self.results})
            },
            "failures": [
                {"action": r.action, "image_id": r.image_id, "collection_id": r.collection_id,
                 "message": r.message}
                for r in self.results if r.failed
            ],
            "tools": _tool_versions(),
        }


def _question(spec_yaml: str) -> object:
    """What a spec asks for, without how to update (``mode``) or where from (``server``):
    a change of either is not a new dataset question, so no major version."""
    import yaml

    data = yaml.safe_load(spec_yaml) or {}
    return {k: v for k, v in data.items() if k not in ("mode", "server")}


def _same_record(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    return {k: v for k, v in old.items() if k != PROVENANCE_KEY} == dict(new)


def _annex_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    clean = normalise_nulls(record)
    fields = {f: clean.get(f) for f in ANNEX_METADATA_FIELDS}
    fields["image_id"] = record.get("id")
    fields["collection_id"] = record.get("collection_id")
    return fields


def _select_local(spec: Spec, local: Mapping[int, dict], cols: Mapping[int, dict]) -> Selection:
    """Offline selection: the spec's filters over what the dataset holds, ascending ids."""
    col_ok, img_ok = spec.collection_predicate(), spec.image_predicate()
    sel = Selection()
    wanted_ids = set(spec.image_ids)
    wanted_cols = set(spec.collection_ids)
    for iid in sorted(local):
        sc = local[iid]
        col = cols.get(sc.get("collection_id"))  # type: ignore[arg-type]
        if col is None:
            continue
        if spec.explicit and iid not in wanted_ids and col.get("id") not in wanted_cols:
            continue
        if col_ok(normalise_nulls(col)) and img_ok(normalise_nulls(sc)):
            sel.items.append(Selected(sc, col))
            if not spec.explicit and spec.max_images is not None \
                    and len(sel.items) >= spec.max_images:
                break
    return sel


def _changes_entry(version: str, date: str, plan: Plan, results: Sequence[Result],
                   pruned: Sequence[PlannedImage], spec_changed: bool) -> str:
    """The CHANGES.md entry: what happened to which image, from the results (not the plan:
    a file that turned out identical is a metadata update, a failed download is a failure)."""
    planned = {p.image_id: p for p in plan.items}
    lines = [f"## {version} ({date})", ""]
    if spec_changed:
        lines.append("- The spec changed (major version).")

    def section(title: str, ids: Sequence[int], dates: bool = False) -> None:
        if not ids:
            return
        lines.append(f"- {title} ({len(ids)}):")
        for iid in ids:
            p = planned.get(iid)
            cid = p.collection_id if p else "?"
            extra = f": modify_date {p.old_date} → {p.new_date}" if dates and p else ""
            lines.append(f"  - image {iid} (collection {cid}){extra}")

    def done(action: str) -> list[int]:
        return sorted(r.image_id for r in results
                      if r.action == action and not r.failed and r.image_id is not None)

    section("Added", done("add"))
    section("Content changed", done("update"), dates=True)
    section("Metadata updated", done("metadata"), dates=True)
    if pruned:
        section("Removed (--prune)", [p.image_id for p in pruned])
    else:
        section("Vanished from NeuroVault (kept)", [p.image_id for p in plan.of(Change.VANISHED)])
        section("No longer matching the spec (kept)",
                [p.image_id for p in plan.of(Change.UNSELECTED)])
    failed = [r for r in results if r.failed]
    if failed:
        lines.append(f"- Failed ({len(failed)}; retried by the next build):")
        lines.extend(f"  - {r.message}" for r in failed)
    if len(lines) == 2:
        lines.append("- Tables, README and citation regenerated.")
    return "\n".join(lines) + "\n"


def _tool_versions() -> dict[str, str]:
    import datalad

    out = {"nv-datalad": __version__, "datalad": datalad.__version__,
           "python": platform.python_version()}
    with contextlib.suppress(Exception):
        out["git-annex"] = annex_available()
    with contextlib.suppress(Exception):
        out["git"] = subprocess.run(["git", "--version"], capture_output=True, text=True,
                                    check=True).stdout.split()[-1]
    return out

