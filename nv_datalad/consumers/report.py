"""``nv-datalad report``: one HTML page to look at a dataset version: counts, maps, history.

Thumbnails are nilearn glass brains of the local content. Rendering is the slow part (about a
second a map), so each is cached under ``.git`` by the image's annex key, which names its
bytes: a second report renders only the images that are new or changed, and the cache is never
committed. Images without local content show "not fetched" unless ``--get`` fetches them.

A spec with ``report: true`` has every build refresh ``report.html`` through
:func:`refresh_report_with_provenance`, a ``datalad run`` of ``nv-datalad report`` that
``datalad rerun`` replays on any clone.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import io
import logging
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nv_datalad.citation import collection_url, web_url
from nv_datalad.consumers.cite import citation, render_bibtex, render_text
from nv_datalad.consumers.fetch import fetch
from nv_datalad.consumers.load import ImageEntry, entries
from nv_datalad.consumers.report_html import CHARTS, Card, Page, label_of, render
from nv_datalad.dataset import layout, revision, runner
from nv_datalad.derivatives.runrecord import datalad_run, outputs_committed
from nv_datalad.errors import DatasetError, EnvironmentProblem
from nv_datalad.records import PROVENANCE_KEY, Result, Status

log = logging.getLogger(__name__)

REPORT_FILE = layout.REPORT
#: Rendered glass brains by annex key; inside .git, so never committed.
THUMBNAIL_DIR = layout.THUMBNAILS
REPORT_ACTION = "report"
DEFAULT_COMMAND = ("nv-datalad", "report")
INSTALL_HINT = "install matplotlib with pip install 'nv-datalad[report]'"
_THUMB_SIZE = (3.2, 1.17)  # inches; 230 x 84 px at _THUMB_DPI
_THUMB_DPI = 72
NOT_A_TYPE = "(no map type)"


@dataclass(frozen=True)
class ReportResult:
    """What one report run did; ``rendered`` counts the glass brains drawn this time."""

    path: Path
    images: int
    rendered: int
    cached: int
    not_fetched: int
    failed: int

    def summary(self) -> str:
        return (f"wrote {self.path}: {self.images} images ({self.rendered} rendered, "
                f"{self.cached} from cache, {self.not_fetched} not fetched, "
                f"{self.failed} unreadable)")


def _cache_dir(root: Path) -> Path:
    """``.git/nv-datalad/thumbnails`` of the repository (``.git`` may be a gitdir file)."""
    git = root / ".git"
    if git.is_file():
        text = git.read_text(encoding="utf-8").strip()
        if text.startswith("gitdir:"):
            git = (root / text.removeprefix("gitdir:").strip()).resolve()
    return git / Path(THUMBNAIL_DIR).relative_to(".git")


def _cache_name(key: str) -> str:
    """Annex keys are file-name safe; only very long (URL) keys are hashed to fit."""
    return f"{key}.png" if len(key) <= 200 else f"{hashlib.sha256(key.encode()).hexdigest()}.png"


def _local_content(root: Path, relpath: str, key: str) -> Path | None:
    """The content of ``key`` if present: the work-tree symlink when it names this key (no
    process per image), else where git-annex keeps it (keys of other versions)."""
    path = root / relpath
    if path.is_symlink() and revision.key_from_link(os.readlink(path)) == key:
        return path if path.exists() else None
    return revision.content_path(root, key, relpath)


def render_png(path: Path) -> bytes:
    """A glass brain of the map at ``path`` (first volume of a 4D file), as PNG bytes.

    The figure is made without pyplot, on an Agg canvas, so rendering never opens a window
    or changes the caller's matplotlib backend.
    """
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise EnvironmentProblem(f"glass brains need matplotlib: {INSTALL_HINT}") from exc
    import nibabel as nib
    from nilearn.image import index_img
    from nilearn.plotting import plot_glass_brain

    img = nib.load(str(path))
    if len(img.shape) == 4:
        img = index_img(img, 0)
    fig = Figure(figsize=_THUMB_SIZE)
    FigureCanvasAgg(fig)
    plot_glass_brain(img, figure=fig, display_mode="ortho", colorbar=False, annotate=False,
                     plot_abs=False, threshold=None)
    drawn = io.BytesIO()
    fig.savefig(drawn, format="png", dpi=_THUMB_DPI, metadata={"Software": None})
    # 64 colours keep a glass brain legible at a quarter of the bytes: the page stays small.
    from PIL import Image  # matplotlib's own dependency

    small = io.BytesIO()
    Image.open(drawn).convert("RGB").quantize(colors=64).save(small, format="PNG", optimize=True)
    return small.getvalue()


@dataclass
class _Thumbnails:
    """The cache and the counts of what it did."""

    root: Path
    rendered: int = 0
    cached: int = 0
    not_fetched: int = 0
    failed: int = 0

    def get(self, entry: ImageEntry, key: str | None) -> tuple[bytes | None, str]:
        """(PNG, "") or (None, why not)."""
        if not key:
            self.failed += 1
            return None, "no annex key in the sidecar"
        cached = _cache_dir(self.root) / _cache_name(key)
        if cached.is_file():
            self.cached += 1
            return cached.read_bytes(), ""
        content = _local_content(self.root, entry.relpath, key)
        if content is None:
            self.not_fetched += 1
            return None, f"not fetched (nv-datalad report --get, or datalad get {entry.relpath})"
        # nilearn runs a full gc.collect() per map; frozen, the objects the process already
        # holds are not scanned each time (more than half the time of a render otherwise).
        gc.freeze()
        try:
            png = render_png(content)
        except (OSError, ValueError, TypeError, IndexError) as exc:
            self.failed += 1
            log.warning("image %d: cannot draw a glass brain: %s", entry.image_id, exc)
            return None, f"cannot be drawn: {exc}"
        finally:
            gc.unfreeze()
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_name(f".{cached.name}.tmp")
        tmp.write_bytes(png)
        tmp.replace(cached)
        self.rendered += 1
        return png, ""


def _key_of(root: Path, rev: str | None, entry: ImageEntry) -> str | None:
    prov = entry.meta.get(PROVENANCE_KEY)
    key = prov.get("key") if isinstance(prov, dict) else None
    return key if isinstance(key, str) and key else revision.annex_key(root, rev, entry.relpath)


def _fetch_missing(root: Path, chosen: Sequence[ImageEntry], rev: str | None,
                   jobs: int | None) -> None:
    """``--get``: fetch the images that have neither a thumbnail nor local content."""
    cache = _cache_dir(root)
    todo = []
    for e in chosen:
        key = _key_of(root, rev, e)
        if key and not (cache / _cache_name(key)).is_file() and \
                _local_content(root, e.relpath, key) is None:
            todo.append(e.relpath)
    for r in fetch(root, todo, jobs=jobs):
        if r.failed:
            log.warning("could not get %s: %s", r.path, r.message)


def _described_commit(root: Path) -> str:
    """The newest commit that changed more than the report: the page describes the data, so
    committing the page must not make the next page different (a rebuild stays a no-op)."""
    found = runner.git(root, "log", "-1", "--format=%H", "HEAD", "--", ".",
                       f":(exclude){REPORT_FILE}", check=False).strip()
    return found or "HEAD"


def build_page(dataset: Path | str, version: str | None = None, *, out_dir: Path | None = None,
               get: bool = False, jobs: int | None = None) -> tuple[Page, _Thumbnails]:
    """The page of ``dataset`` at ``version`` (default: the working tree), links relative to
    ``out_dir`` (default: the dataset root)."""
    root = revision.ensure_repository(Path(dataset)).resolve()
    rev = None if version is None else revision.resolve(root, version)
    if get and rev is not None and rev != revision.resolve(root, "HEAD"):
        raise DatasetError(f"report --get --version {version}: the working tree holds another "
                           f"version; check it out first (git -C {root} checkout {version})")
    chosen = entries(root, version=version)
    if get:
        _fetch_missing(root, chosen, rev, jobs)
    cit = citation(root, version or _described_commit(root))
    server = cit.server
    collections = {e.collection_id: (str(e.collection.get("name") or ""),
                                     collection_url({**e.collection, "id": e.collection_id},
                                                    server))
                   for e in chosen}
    counts = {f: Counter(label_of(f, e.collection_id if f == "collection_id" else e.meta.get(f),
                                  collections) for e in chosen) for f, _ in CHARTS}
    thumbs = _Thumbnails(root)
    base = Path(out_dir or root).resolve()
    cards = []
    for e in chosen:
        png, note = thumbs.get(e, _key_of(root, rev, e))
        page_url = web_url(e.meta.get("url")) or (
            f"{server}/images/{e.image_id}/" if web_url(server) else None)
        sidecar = root / layout.image_sidecar(e.collection_id, e.image_id)
        cards.append(Card(
            image_id=e.image_id, collection_id=e.collection_id, name=str(e.meta.get("name") or ""),
            map_type=str(e.meta.get("map_type") or e.meta.get("image_type") or NOT_A_TYPE),
            page_url=page_url, sidecar_href=Path(os.path.relpath(sidecar, base)).as_posix(),
            png=png, note=note))
    page = Page(
        title=cit.name, version=cit.version_label, commit=cit.commit, date=cit.date,
        counts=counts, collections=collections, cards=cards,
        changes=revision.read_text(root, rev, layout.CHANGES) or "",
        citation=render_text(cit), bibtex=render_bibtex(cit))
    return page, thumbs



def report(dataset: Path | str = ".", out: Path | str | None = None, version: str | None = None,
           *, get: bool = False, jobs: int | None = None) -> ReportResult:
    """Write the report of ``dataset`` at ``version`` to ``out`` (default
    ``<dataset>/report.html``)."""
    root = revision.ensure_repository(Path(dataset)).resolve()
    target = Path(out) if out is not None else root / REPORT_FILE
    page, thumbs = build_page(root, version, out_dir=target.absolute().parent, get=get,
                              jobs=jobs)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(render(page), encoding="utf-8")
    tmp.replace(target)
    return ReportResult(target, len(page.cards), thumbs.rendered, thumbs.cached,
                        thumbs.not_fetched, thumbs.failed)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``nv-datalad report`` (``-d`` comes from the CLI)."""
    parser.add_argument("-o", "--output", metavar="FILE",
                        help=f"where to write the page (default: <dataset>/{REPORT_FILE})")
    parser.add_argument("--version", dest="at", metavar="TAG",
                        help="tag or commit (default: the working tree)")
    parser.add_argument("--get", action="store_true",
                        help="datalad get the images that have no thumbnail yet")


def refresh_report_with_provenance(
    root: Path, command_prefix: Sequence[str] | None = None
) -> Result | None:
    """Refresh ``report.html`` under ``datalad run`` when the recorded spec says
    ``report: true`` (None when it does not). ``notneeded``, without any run, when HEAD's
    report already is the page this state gives (a no-op rebuild stays a no-op)."""
    root = Path(root).absolute()
    if revision.read_spec(root).get("report") is not True:
        return None
    try:
        page, _ = build_page(root)
    except EnvironmentProblem as exc:
        return Result(REPORT_ACTION, Status.IMPOSSIBLE, path=REPORT_FILE, message=str(exc))
    if outputs_committed(root, {REPORT_FILE: render(page).encode("utf-8")}):
        return Result(REPORT_ACTION, Status.NOTNEEDED, path=REPORT_FILE)
    head = revision.resolve(root, "HEAD")
    run = datalad_run(root, [*(command_prefix or DEFAULT_COMMAND), "-d", ".", "-o", REPORT_FILE],
                      [], [REPORT_FILE], f"Refresh {REPORT_FILE} ({len(page.cards)} images)")
    if run.problems:
        return Result(REPORT_ACTION, Status.ERROR, path=REPORT_FILE, message=run.message())
    changed = revision.resolve(root, "HEAD") != head
    return Result(REPORT_ACTION, Status.OK if changed else Status.NOTNEEDED, path=REPORT_FILE,
                  extra={"images": len(page.cards)})
