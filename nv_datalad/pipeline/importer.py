"""Bring image files into the annex: one streamed GET per file, or registration only.

``content: download``: each file is downloaded once and handed, the moment it lands, to
long-lived ``git annex add`` / ``registerurl`` / ``metadata`` batch processes, so git-annex works
while the network does (``addurl`` would send a HEAD before every GET). Keys are checksums and
the web URL is registered, so ``datalad get`` can fetch it again after a drop.
``content: register``: no request at all; URL keys made from the API's URL and ``file_size``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nv_datalad.dataset import layout
from nv_datalad.dataset.annex import discard, metadata_line
from nv_datalad.dataset.runner import reply_error, says_no_space
from nv_datalad.neurovault.download import DiskFull
from nv_datalad.neurovault.records import normalise_nulls
from nv_datalad.pipeline.context import BuildContext
from nv_datalad.pipeline.plan import PlannedImage
from nv_datalad.records import ANNEX_METADATA_FIELDS, Result, Status

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placed:
    """One image now in the annex at ``path`` under ``key``, fetched from ``url``."""

    item: PlannedImage
    path: str
    url: str
    key: str


def annex_fields(record: Mapping[str, Any]) -> dict[str, Any]:
    """The git-annex metadata of an image key (what ``git annex find --metadata`` selects on)."""
    clean = normalise_nulls(record)
    fields = {f: clean.get(f) for f in ANNEX_METADATA_FIELDS}
    fields["image_id"] = record.get("id")
    fields["collection_id"] = record.get("collection_id")
    return fields


@dataclass
class Placement:
    """What one batch brought into the annex; ``stop`` says why the build must not go on
    fetching (``interrupted``: Ctrl-C, after committing this; otherwise the disk is full)."""

    placed: list[Placed]
    failures: list[Result]
    stop: str | None = None


INTERRUPTED = "interrupted"


def failure(action: str, item: PlannedImage, message: str) -> Result:
    log.warning("%s", message)
    return Result(action, Status.ERROR, item.image_id, item.collection_id, message=message)


def place(ctx: BuildContext, items: Sequence[PlannedImage], *, action: str,
          on_reply: Callable[[int], None] | None = None) -> Placement:
    """Annex ``items``: what landed, one failure record per image that did not, and whether
    the build was stopped (Ctrl-C, full disk) on the way."""
    failures: list[Result] = []
    todo: list[tuple[PlannedImage, str]] = []
    for item in items:
        url = ctx.file_url(item.record or {})
        if url is None:
            failures.append(failure(action, item, f"image {item.image_id}: file URL is not "
                                                  f"http(s): {(item.record or {}).get('file')!r}"))
        else:
            todo.append((item, url))
    ctx.allow_loopback(url for _, url in todo)  # file URLs may name another host
    placed: list[Placed] = []
    stop = None
    try:
        if ctx.spec.content == "download":
            _download(ctx, todo, action, on_reply, failures, placed)
        else:
            placed = _register(ctx, todo, action, on_reply, failures)
    except KeyboardInterrupt:
        stop = INTERRUPTED
    except DiskFull as exc:
        log.error("%s", exc.strerror)
        stop = exc.strerror
    full = next((f.message for f in failures if says_no_space(f.message or "")), None)
    if stop is None and full is not None:  # git-annex, not the download, found the disk full
        log.error("%s", full)
        stop = f"disk full: {full}"
    if not ctx.spec.keep_content and ctx.spec.content == "download":
        for path, err in ctx.annex.drop([p.path for p in placed]).items():
            log.warning("could not drop %s after hashing: %s", path, err)
    if stop is not None:
        landed = {p.item.image_id for p in placed} | {f.image_id for f in failures}
        failures += [failure(action, item, f"image {item.image_id}: not fetched ({stop})")
                     for item, _ in todo if item.image_id not in landed]
    return Placement(placed, failures, stop)


def _download(ctx: BuildContext, todo: Sequence[tuple[PlannedImage, str]], action: str,
              on_reply: Callable[[int], None] | None, failures: list[Result],
              placed: list[Placed]) -> None:
    """Fill ``placed`` as files land, so what landed before an interruption is known."""
    from nv_datalad.neurovault.download import Wanted, fetch_all

    assert ctx.client is not None
    done = [0]
    annex = ctx.annex.batches()
    try:

        def landed(index: int, got: Any) -> None:
            item, url = todo[index]
            done[0] += 1
            if on_reply is not None:
                on_reply(done[0])
            if not got.ok:
                failures.append(failure(action, item, f"image {item.image_id}: {got.error} "
                                                      f"({url})"))
                return
            reply = annex.ask("add", got.path)
            key = reply.get("key")
            if not key:
                failures.append(failure(action, item, f"image {item.image_id}: git annex add "
                                                      f"failed: {reply_error(reply)}"))
                discard(ctx.root, got.path)
                return
            # the key is all the build needs now: URL and metadata replies are read at the end
            annex.send("registerurl", got.path, f"{key} {url}", tag=str(index))
            annex.send("metadata", got.path, metadata_line(annex_fields(item.record or {}),
                                                           key=key), tag=str(index))
            placed.append(Placed(item, got.path, url, key))

        wanted = [Wanted(url, item.collection_id, item.image_id) for item, url in todo]
        if ctx.downloads is not None:  # the build's pool: the crawl may have started some
            ctx.downloads.fetch(wanted, landed)
        else:
            fetch_all(ctx.client.file_session, ctx.root, wanted, workers=ctx.jobs,
                      timeout=ctx.client.config.file_timeout, on_result=landed)
    finally:
        annex.close()
        _unregistered(ctx, annex.failed, todo, action, failures, placed)


def _unregistered(ctx: BuildContext, failed: Sequence[tuple[str, str, str]],
                  todo: Sequence[tuple[PlannedImage, str]], action: str,
                  failures: list[Result], placed: list[Placed]) -> None:
    """A file whose web URL git-annex did not record is not imported: ``datalad get`` could
    not fetch it again after a drop. A missing metadata field is only a warning."""
    lost = set()
    for command, tag, error in failed:
        item, url = todo[int(tag)]
        if command == "registerurl":
            lost.add(item.image_id)
            failures.append(failure(action, item, f"image {item.image_id}: {error} ({url})"))
        else:
            log.warning("image %s: annex metadata not set: %s", item.image_id, error)
    for p in [p for p in placed if p.item.image_id in lost]:
        placed.remove(p)
        discard(ctx.root, p.path)


def _register(ctx: BuildContext, todo: Sequence[tuple[PlannedImage, str]], action: str,
              on_reply: Callable[[int], None] | None, failures: list[Result]) -> list[Placed]:
    """The API already says each file's URL and size: registering sends no request, and the
    first ``datalad get`` of a file is what fetches (and checks) it."""
    by_path = {
        str(layout.image_file(item.collection_id, item.image_id, layout.image_extension(url))):
            (item, url)
        for item, url in todo
    }
    placed = []
    triples = [(url, rel, _file_size(item.record or {})) for rel, (item, url) in by_path.items()]
    fields = {rel: annex_fields(item.record or {}) for rel, (item, _) in by_path.items()}
    for res in ctx.annex.addurls(triples, on_reply=on_reply, metadata=fields):
        item, url = by_path[res.path]
        if res.ok:
            placed.append(Placed(item, res.path, url, res.key or ""))
            if res.metadata_error:
                log.warning("%s: annex metadata not set: %s", res.path, res.metadata_error)
        else:
            failures.append(failure(action, item, f"image {item.image_id}: {res.error} ({url})"))
    return placed


def _file_size(record: Mapping[str, Any]) -> int | None:
    """The size a key may claim: ``file_size`` 0 means the file is missing on the server's
    disk (NEUROVAULT_API.md), so it claims none."""
    size = record.get("file_size")
    return size if isinstance(size, int) and not isinstance(size, bool) and size > 0 else None
