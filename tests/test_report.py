"""``nv-datalad report``: the page a user opens, read back with an HTML parser and a browser.

One image from each of six demo collections, so the charts have several map types,
modalities and analysis levels, an atlas among the thumbnails and a real upload (10426).
"""

from __future__ import annotations

import contextlib
import io
import re
import shutil
import subprocess
import sys
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest
from helpers import build, clone, git, nv, tags

from nv_datalad.consumers.report import THUMBNAIL_DIR, refresh_report_with_provenance
from nv_datalad.records import Status

IMAGES = [112, 262, 1031, 10426, 12101, 60211]  # the first image of six collections


class _Page(HTMLParser):
    """The parts of the page the tests look at, gathered while parsing."""

    def __init__(self) -> None:
        super().__init__()
        self.cards: list[int] = []
        self.thumbs: list[dict[str, str | None]] = []
        self.missing: list[str] = []
        self.links: list[dict[str, str | None]] = []
        self.charts: list[str] = []
        self.text: list[str] = []
        self._in_missing = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        classes = (a.get("class") or "").split()
        if tag == "figure" and "card" in classes:
            self.cards.append(int(a["data-image-id"] or -1))
        elif tag == "img" and "thumb" in classes:
            self.thumbs.append(a)
        elif tag == "img" and "chart" in classes:
            self.charts.append(a["src"] or "")
        elif tag == "div" and "missing" in classes:
            self._in_missing = True
        elif tag == "a":
            self.links.append(a)

    def handle_endtag(self, tag: str) -> None:
        self._in_missing = self._in_missing and tag != "div"

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_missing:
            self.missing.append(data)


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    page.close()
    return page


def _chart_counts(src: str) -> dict[str, int]:
    """label -> count, read from one inline SVG bar chart."""
    import base64

    svg = base64.b64decode(src.split(",", 1)[1]).decode()
    labels = re.findall(r"<title>([^<]*)</title>", svg)
    counts = re.findall(r'<text x="\d+" y="\d+">(\d+)</text>', svg)
    return dict(zip(labels, map(int, counts), strict=True))


def _summary(out: str) -> dict[str, int]:
    found = re.search(r"(\d+) images \((\d+) rendered, (\d+) from cache, (\d+) not fetched", out)
    assert found, out
    return dict(zip(("images", "rendered", "cached", "not_fetched"), map(int, found.groups()),
                    strict=True))


def _report(*args: object) -> dict[str, int]:
    """Run ``nv-datalad report ARGS``; the counts of its summary line."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert nv("report", *args) == 0
    return _summary(printed.getvalue())


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """(emulator, spec, built dataset, clone without content)."""
    from nv_datalad.emulator import Emulator

    tmp = tmp_path_factory.mktemp("report")
    with Emulator(corpus="demo", port=0) as emu:
        spec, ds = build(tmp, emu.url, images={"ids": IMAGES}, report=True)
        yield emu, spec, ds, clone(ds, tmp / "clone")


@pytest.fixture(scope="module")
def first(dataset, tmp_path_factory):
    """The clone's first two reports, outside it, before and with ``--get``
    (``"missing"``/``"got"``: (html path, summary counts)), and the commit they describe."""
    copy = dataset[3]
    out = tmp_path_factory.mktemp("first")
    missing, got = out / "missing" / "report.html", out / "report.html"
    return {"missing": (missing, _report("-d", copy, "-o", missing)),
            "got": (got, _report("-d", copy, "-o", got, "--get")),
            # the page describes the newest commit that changed more than report.html
            "head": git(copy, "log", "-1", "--format=%H", "--", ".",
                        ":(exclude)report.html").strip()}


def test_the_page_shows_counts_thumbnails_and_links(dataset, first):
    ds = dataset[3]
    out, counts = first["got"]
    assert counts == {"images": 6, "rendered": 6, "cached": 0, "not_fetched": 0}
    page = _parse(out)
    assert sorted(page.cards) == IMAGES
    assert len(page.thumbs) == 6 and all(t["src"].startswith("data:image/png;base64,")
                                         for t in page.thumbs)

    rows = [line.split("\t") for line in
            git(ds, "show", f"{first['head']}:images.tsv").splitlines()]
    header, rows = rows[0], rows[1:]
    by_field = {f: Counter(r[header.index(f)] or "(not given)" for r in rows)
                for f in ("map_type", "modality", "analysis_level")}
    charts = [_chart_counts(src) for src in page.charts]
    assert charts[:3] == [dict(by_field[f]) for f in ("map_type", "modality", "analysis_level")]
    by_collection = Counter(r[header.index("collection_id")] for r in rows)
    assert {label.split()[0]: n for label, n in charts[3].items()} == dict(by_collection)

    sidecars = [a["href"] for a in page.links if "sidecar" in (a.get("class") or "")]
    assert len(sidecars) == 6
    for href in sidecars:
        target = (out.parent / href).resolve()
        assert target.is_file() and target.parent.parent.name == "neurovault"
        image_id = int(re.search(r"image_(\d+)_metadata", href).group(1))
        assert f'"id": {image_id}' in target.read_text()
    pages = {a["href"] for a in page.links if "page" in (a.get("class") or "")}
    assert pages == {f"{ds_server(ds)}/images/{i}/" for i in IMAGES}

    text = " ".join(page.text)
    assert "v1.0.0" in text and "6 images from 6 collections" in " ".join(text.split())
    assert "Added (6):" in text  # CHANGES.md
    assert first["head"] in text  # how to cite: the commit


def ds_server(ds: Path) -> str:
    import json

    sidecar = next((ds / "neurovault").glob("collection_*/image_*_metadata.json"))
    return json.loads(sidecar.read_text())["nv_datalad"]["server"]


@pytest.fixture(scope="session")
def chromium() -> str:
    """Debian's chromium, installed when missing (the tests run as root in CI)."""
    found = shutil.which("chromium")
    if found is None:
        install = ["apt-get", "install", "-y", "--no-install-recommends", "chromium"]
        if subprocess.run(install, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update"], capture_output=True, check=True)
            subprocess.run(install, capture_output=True, check=True)
        found = shutil.which("chromium")
    assert found, "chromium is not installed and apt-get could not install it"
    return found


def test_a_browser_loads_every_thumbnail_and_chart(first, chromium, tmp_path):
    out, _ = first["got"]
    probe = ("<script>addEventListener('load', () => { const all = [...document.images];"
             "document.body.dataset.images = all.length; document.body.dataset.broken ="
             " all.filter(i => !i.complete || i.naturalWidth === 0).length; });</script>")
    checked = tmp_path / "probe.html"
    checked.write_text(out.read_text().replace("</body>", probe + "</body>"))
    browser = [chromium, "--headless", "--no-sandbox", "--disable-gpu",
               "--virtual-time-budget=10000"]
    dom = subprocess.run([*browser, "--dump-dom", checked.as_uri()], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    body = re.search(r"<body[^>]*>", dom).group(0)
    assert 'data-images="10"' in body and 'data-broken="0"' in body  # 6 thumbnails, 4 charts
    assert "v1.0.0" in dom
    shot = tmp_path / "shot.png"
    subprocess.run([*browser, "--window-size=1200,1600", f"--screenshot={shot}", out.as_uri()],
                   capture_output=True, timeout=120, check=True)
    assert shot.stat().st_size > 20_000  # a page with pictures, not a blank one


def test_images_without_content_are_shown_not_fetched(dataset, first):
    copy = dataset[3]
    out, counts = first["missing"]
    assert counts == {"images": 6, "rendered": 0, "cached": 0, "not_fetched": 6}
    page = _parse(out)
    assert len(page.cards) == 6 and not page.thumbs
    assert sum("not fetched" in m for m in page.missing) == 6
    assert len(list((copy / THUMBNAIL_DIR).glob("*.png"))) == 6  # made by the --get report
    assert THUMBNAIL_DIR not in git(copy, "ls-files")


def test_only_new_or_changed_images_are_rendered_again(dataset, first, tmp_path):
    emu, spec, ds, copy = dataset
    assert _report("-d", copy, "-o", tmp_path / "again.html") == {
        "images": 6, "rendered": 0, "cached": 6, "not_fetched": 0}
    emu.mutate_content(IMAGES[0])
    assert nv("build", spec, "-d", ds, "--mode", "overwrite") == 0
    import datalad.api as dl

    dl.update(dataset=str(copy), how="merge", result_renderer="disabled")
    assert _report("-d", copy, "-o", tmp_path / "changed.html", "--get") == {
        "images": 6, "rendered": 1, "cached": 5, "not_fetched": 0}


def test_report_true_refreshes_the_page_under_datalad_run(dataset, first):
    copy = dataset[3]
    refreshed = refresh_report_with_provenance(copy)
    assert refreshed is not None and not refreshed.failed
    log = git(copy, "log", "-1", "--format=%B", "--", "report.html")
    assert "[DATALAD RUNCMD]" in log and "nv-datalad report -d . -o report.html" in log
    page = _parse(copy / "report.html")
    assert sorted(page.cards) == IMAGES and len(page.thumbs) == 6
    head = git(copy, "rev-parse", "HEAD")
    again = refresh_report_with_provenance(copy)
    assert again is not None and again.status == Status.NOTNEEDED
    assert git(copy, "rev-parse", "HEAD") == head and tags(copy)


def test_a_build_with_report_true_commits_the_page_by_datalad_run(dataset):
    ds = dataset[2]
    log = git(ds, "log", "-1", "--format=%B", "--", "report.html")
    assert "[DATALAD RUNCMD]" in log and "nv-datalad report -d . -o report.html" in log
    assert sorted(_parse(ds / "report.html").cards) == IMAGES


def test_without_report_true_nothing_is_refreshed(dataset, tmp_path):
    plain = clone(dataset[2], tmp_path / "plain")
    spec = plain / ".nv-datalad" / "spec.yaml"
    spec.write_text(spec.read_text().replace("report: true", "report: false"))
    git(plain, "commit", "-q", "-m", "no report", "--", ".nv-datalad/spec.yaml")
    head = git(plain, "rev-parse", "HEAD")
    assert refresh_report_with_provenance(plain) is None
    assert git(plain, "rev-parse", "HEAD") == head


def test_without_matplotlib_the_command_says_how_to_install_it(dataset, tmp_path, capsys,
                                                               monkeypatch):
    ds = clone(dataset[2], tmp_path / "fresh")  # no thumbnail drawn in this clone yet
    git(ds, "config", "annex.security.allowed-ip-addresses", "127.0.0.1")
    for name in ["matplotlib", *(n for n in sys.modules if n.startswith("matplotlib."))]:
        monkeypatch.setitem(sys.modules, name, None)  # `import matplotlib...` now fails
    out = tmp_path / "report.html"
    assert nv("report", "-d", ds, "-o", out, "--get") == 2
    assert "install matplotlib with pip install 'nv-datalad[report]'" in capsys.readouterr().err
    assert not out.exists()
