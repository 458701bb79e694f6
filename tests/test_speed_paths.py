"""The fast paths of issue 13: a crawl that overlaps, registration without requests, and a
dataset created without DataLad that DataLad accepts. Requests are counted by the emulator."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from helpers import annex, clone, git, image_file, image_ids, nv, write_spec

from nv_datalad.dataset.annex import url_key
from nv_datalad.neurovault.client import ClientConfig, NeuroVaultClient
from nv_datalad.pipeline.select import _prefetch, select
from nv_datalad.spec import load_spec

FAST = ClientConfig(retries=3, backoff=0.01, read_timeout=5.0, connect_timeout=2.0)


def _public_collections(emu) -> list[int]:
    return sorted(c for c, r in emu.collections.items() if not r.get("private"))


def _images_of(emu, cid: int) -> set[int]:
    return {i for i, r in emu.images.items() if r["collection_id"] == cid}


def test_crawl_asks_every_page_once_and_yields_in_id_order(emulator):
    """Many small collections, lists of several pages: every page is asked exactly once and
    the lists come back complete, in the order the walk consumes them."""
    for size in (1, 2, 3, 4, 5) * 4:
        emulator.add_collection(n_images=size)
    cids = _public_collections(emulator)
    page = 2
    with NeuroVaultClient(emulator.url, ClientConfig(page_size=page, workers=2)) as client:
        emulator.reset_counters()
        got = list(_prefetch(client, [{"id": c} for c in cids]))
    assert [col["id"] for col, _ in got] == cids
    for col, images in got:
        assert {r["id"] for r in images} == _images_of(emulator, col["id"])
    pages = sum(max(1, -(-len(_images_of(emulator, c)) // page)) for c in cids)
    assert emulator.counters["collection_images"] == pages


def test_a_closed_crawl_sends_no_new_request(emulator):
    """``max_images`` met after the first collection: only the lists already asked for (the
    window ahead) were requested; the queued ones were cancelled."""
    for _ in range(30):
        emulator.add_collection(n_images=1)
    cids = _public_collections(emulator)
    with NeuroVaultClient(emulator.url, FAST) as client:
        emulator.reset_counters()
        lists = _prefetch(client, [{"id": c} for c in cids], window=3)
        first, images = next(lists)
        lists.close()
        assert first["id"] == cids[0] and images
    assert 1 <= emulator.counters["collection_images"] <= 4 < len(cids)


def test_selection_keeps_connections_alive(emulator, default_selection, tmp_path):
    """One crawl of many collections reuses its connections instead of opening one per
    request, and selects what nilearn selects (the added collections are default-selected)."""
    added = [emulator.add_collection(n_images=size) for size in (2, 3) * 10]
    spec = load_spec(write_spec(tmp_path, emulator.url))
    with NeuroVaultClient(emulator.url, ClientConfig(workers=2)) as client:
        sel = select(client, spec)
        pools = client.session.get_adapter(emulator.url).poolmanager.pools
        # one host, one connection pool (urllib3 container: no iteration, only keys())
        (pool,) = (pools[key] for key in pools.keys())  # noqa: SIM118
        assert pool.num_requests == client.requests_made > 2 * client.config.crawl_workers
        assert pool.num_connections <= client.config.crawl_workers
    assert set(sel.ids) == default_selection | {i for c in added
                                                for i in _images_of(emulator, c)}
    walked = [(s.collection_id, s.image_id) for s in sel.items]
    assert walked == sorted(walked)  # ascending ids: collections, then images in each


def test_downloads_keep_connections_alive(shared_emulator, tmp_path):
    """Files come over a few persistent connections, not one connection per file."""
    from nv_datalad.neurovault.download import Wanted, fetch_all

    emu = shared_emulator
    ids = sorted(i for i, r in emu.images.items()
                 if not emu.collections[r["collection_id"]].get("private"))[:12]
    with NeuroVaultClient(emu.url, FAST) as client:
        got = fetch_all(client.file_session, tmp_path,
                        [Wanted(emu.images[i]["file"], emu.images[i]["collection_id"], i)
                         for i in ids], workers=3)
        pools = client.file_session.get_adapter(emu.url).poolmanager.pools
        (pool,) = (pools[key] for key in pools.keys())  # noqa: SIM118 - see above
        assert pool.num_requests == len(ids) and pool.num_connections <= 3
    assert [(tmp_path / g.path).read_bytes() for g in got] == [emu.image_bytes(i) for i in ids]


def test_register_sends_no_file_request_and_get_fetches_the_served_bytes(emulator, tmp_path):
    spec = write_spec(tmp_path, emulator.url, content="register", max_images=4)
    emulator.reset_counters()
    assert nv("build", spec, "-d", tmp_path / "ds") == 0
    assert emulator.counters["file_get"] == 0 and emulator.counters["file_head"] == 0
    ds = tmp_path / "ds"
    ids = sorted(image_ids(ds))
    assert len(ids) == 4
    for iid in ids:
        rel = str(image_file(ds, iid).relative_to(ds))
        record = emulator.images[iid]
        assert annex(ds, "lookupkey", rel).strip() == url_key(record["file"],
                                                              record["file_size"])
        assert f"image_id={iid}" in annex(ds, "metadata", rel)
    assert git(ds, "status", "--porcelain") == ""
    # a later get fetches from the registered URL (the build allowed the loopback server)
    path = image_file(ds, ids[0])
    annex(ds, "get", str(path.relative_to(ds)))
    assert path.read_bytes() == emulator.image_bytes(ids[0])
    assert emulator.counters["file_get"] == 1
    assert json.loads(annex(ds, "fsck", "--json", str(path.relative_to(ds))))["success"]


URLS = [
    "http://127.0.0.1:9/media/images/35/zstat1.nii.gz",
    "https://neurovault.org/media/images/35/a%20b,c~d+e=f&g.nii.gz",
    "https://neurovault.org/media/images/1234/a_very_long_file_name_of_a_group_map.nii.gz",
    "https://neurovault.org/media/images/35/carte_é.nii",
    "http://[::1]:8080/media/images/1/x.nii.gz",
]


def test_url_keys_are_the_keys_addurl_makes(tmp_path, shared_emulator):
    """The same key ``addurl --relaxed`` (no size) and ``addurl --fast`` (size from a HEAD)
    make, so a dataset's keys do not depend on how a file was registered."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    annex(repo, "init", "-q")
    lines = "".join(f"{u} f{i}\n" for i, u in enumerate(URLS))
    out = annex(repo, "addurl", "--relaxed", "--raw", "--batch", "--with-files", "--json",
                input=lines)
    assert [json.loads(line)["key"] for line in out.splitlines()] == \
        [url_key(u, None) for u in URLS]
    iid = min(shared_emulator.images)
    record = shared_emulator.images[iid]
    git(repo, "config", "annex.security.allowed-ip-addresses", "127.0.0.1")
    out = annex(repo, "addurl", "--fast", "--batch", "--with-files", "--json",
                input=f"{record['file']} sized\n")
    assert json.loads(out)["key"] == url_key(record["file"], record["file_size"])


def test_a_new_dataset_is_what_datalad_create_makes(built, tmp_path):
    """Made without DataLad, yet the same files, config and first commit as
    ``datalad create``; DataLad sees a clean installed dataset and clones it."""
    import datalad.api as dl

    ref = tmp_path / "ref"
    dl.create(path=str(ref), result_renderer="disabled")

    def first_commit(ds: Path) -> tuple[str, list[str]]:
        root = git(ds, "rev-list", "--max-parents=0", "HEAD").strip()
        files = git(ds, "ls-tree", "-r", "--name-only", root).split()
        return git(ds, "log", "-1", "--format=%s", root).strip(), files

    assert first_commit(built) == first_commit(ref)
    for name in (".datalad/.gitattributes",):
        assert (built / name).read_text() == (ref / name).read_text()
    assert (built / ".gitattributes").read_text().startswith(
        (ref / ".gitattributes").read_text())
    config = git(built, "config", "--local", "--list").splitlines()
    keys = {line.split("=", 1)[0] for line in config} - {"annex.security.allowed-ip-addresses"}
    assert keys == {line.split("=", 1)[0]
                    for line in git(ref, "config", "--local", "--list").splitlines()}
    ds = dl.Dataset(str(built))
    assert ds.is_installed() and ds.id
    status = subprocess.run(["datalad", "status"], cwd=built, capture_output=True, text=True,
                            check=True)
    assert "nothing to save" in status.stdout
    copy = clone(built, tmp_path / "clone")
    assert dl.Dataset(str(copy)).id == ds.id


def _late_collection(emu, selection: set[int], nth: int, seconds: float) -> int:
    """Make the image list of the ``nth`` collection the default walk reads answer late;
    returns how many images the walk takes before it (max_images one more needs it)."""
    cids = sorted({emu.images[i]["collection_id"] for i in selection})
    emu.set_faults(stall_rate=1.0, stall_seconds=seconds,
                   paths=f"/api/collections/{cids[nth - 1]}/images")
    return sum(1 for i in selection if emu.images[i]["collection_id"] in cids[:nth - 1])


def _stop_at_crawl_end(emu, seen: list[int], interrupt: bool):
    """A progress callback: the crawl ended (all images selected); note how many files the
    server had sent by then, and press Ctrl-C there if asked to."""

    def progress(stage: str, done: int, total: int) -> None:
        if stage == "metadata" and total:
            seen.append(sum(emu.downloads.values()))
            if interrupt:
                raise KeyboardInterrupt

    return progress


def test_downloads_begin_while_the_crawl_still_walks(emulator, default_selection, tmp_path):
    """A collection whose list answers late holds the crawl up, not the downloads: the
    first collection's files have landed before the crawl ends, each is fetched exactly
    once, and the dataset is what a build always makes."""
    from nv_datalad.pipeline import build

    given = _late_collection(emulator, default_selection, 2, seconds=3.0)
    seen: list[int] = []
    emulator.reset_counters()
    report = build(load_spec(write_spec(tmp_path, emulator.url, max_images=given + 1)),
                   tmp_path / "ds", progress=_stop_at_crawl_end(emulator, seen, False))
    ds = tmp_path / "ds"
    assert len(seen) == 1 and seen[0] >= given  # the first collection's, before the end
    assert report.exit_status == 0 and len(image_ids(ds)) == given + 1
    assert dict(emulator.downloads) == {i: 1 for i in image_ids(ds)}
    assert git(ds, "status", "--porcelain") == ""
    assert not any((ds / ".git" / "nv-datalad-tmp").iterdir())


def test_ctrl_c_during_the_crawl_of_a_new_dataset_leaves_nothing(emulator, default_selection,
                                                                 tmp_path):
    """Files the crawl started are stopped and deleted with the half-made dataset."""
    from nv_datalad.pipeline import build

    given = _late_collection(emulator, default_selection, 2, seconds=1.0)
    seen: list[int] = []
    with pytest.raises(KeyboardInterrupt):
        build(load_spec(write_spec(tmp_path, emulator.url, max_images=given + 1)),
              tmp_path / "ds", progress=_stop_at_crawl_end(emulator, seen, True))
    assert seen and seen[0] > 0  # downloads had begun
    assert not (tmp_path / "ds").exists()


def test_ctrl_c_during_the_crawl_of_an_update_changes_nothing(emulator, default_selection,
                                                              tmp_path):
    """An update whose crawl had started downloading new images, stopped: no file of them
    in the work tree or the download directory, HEAD as it was, and the next build adds
    them."""
    from nv_datalad.pipeline import build

    first = _late_collection(emulator, default_selection, 2, seconds=0.0)
    ds = tmp_path / "ds"
    build(load_spec(write_spec(tmp_path, emulator.url, max_images=first)), ds)
    before = (git(ds, "rev-parse", "HEAD"), image_ids(ds))
    given = _late_collection(emulator, default_selection, 3, seconds=1.0)
    spec = write_spec(tmp_path, emulator.url, max_images=given + 1)
    seen: list[int] = []
    emulator.reset_counters()
    with pytest.raises(KeyboardInterrupt):
        build(load_spec(spec), ds, progress=_stop_at_crawl_end(emulator, seen, True))
    assert seen and seen[0] > 0  # the second collection's files had begun to come
    assert (git(ds, "rev-parse", "HEAD"), image_ids(ds)) == before
    assert git(ds, "status", "--porcelain") == ""
    assert not [p for p in (ds / ".git" / "nv-datalad-tmp").iterdir()]
    emulator.set_faults()
    assert build(load_spec(spec), ds).exit_status == 0
    assert len(image_ids(ds)) == given + 1
