"""Parallel downloads (``nv_datalad.neurovault.download``) against the emulator, counted per file.

The bench corpus's tiny volumes (a few hundred bytes) make the fault runs cheap; the demo
corpus serves multi-chunk gzip files and an uncompressed ``.nii`` upload. Expected bytes are the
emulator's, expected request counts follow from the attempts asked for. These tests also serve
``tools/mutation.py download`` (each mutant runs only this file).
"""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest
import requests

from nv_datalad.dataset import layout
from nv_datalad.neurovault.download import CHUNK, DiskFull, Downloads, Wanted, fetch_all


@pytest.fixture(scope="module")
def bench():
    from nv_datalad.emulator import Emulator

    with Emulator(corpus="bench", port=0, n_images=6, tiny=True) as emu:
        yield emu


@pytest.fixture
def tiny(bench):
    """The module's bench emulator (volumes of a few hundred bytes), counted from zero and
    without faults for each test."""
    bench.reset_counters()
    yield bench
    bench.set_faults()


@pytest.fixture(scope="module")
def demo():
    from nv_datalad.emulator import Emulator

    with Emulator(corpus="demo", port=0) as emu:
        yield emu


@pytest.fixture
def session():
    with requests.Session() as s:
        yield s


def _wanted(emu, ids) -> list[Wanted]:
    return [Wanted(emu.images[i]["file"], emu.images[i]["collection_id"], i) for i in ids]


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in (root / layout.DOWNLOAD_TMP).iterdir())


def test_a_leftover_file_or_symlink_is_replaced_never_written_through(tiny, session, tmp_path):
    a, b = sorted(tiny.images)[:2]
    outside = tmp_path / "outside.txt"
    outside.write_text("keep me")
    for iid, how in ((a, "file"), (b, "link")):
        target = tmp_path / layout.image_file(tiny.images[iid]["collection_id"], iid)
        target.parent.mkdir(parents=True, exist_ok=True)
        if how == "file":
            target.write_bytes(b"stale")
        else:
            target.symlink_to(outside)
    got = fetch_all(session, tmp_path, _wanted(tiny, [a, b]))
    for fetched in got:
        path = tmp_path / (fetched.path or "")
        assert not path.is_symlink() and path.read_bytes() == tiny.image_bytes(
            fetched.wanted.image_id)
    assert outside.read_text() == "keep me"


def test_an_http_error_is_reported_at_once_without_retrying(tiny, session, tmp_path):
    (iid,) = sorted(tiny.images)[:1]
    missing = Wanted(f"{tiny.url}/media/images/0/none.nii.gz", 1, 7)
    tiny.set_faults(error_rate=1.0, paths=tiny.images[iid]["file"].split(tiny.url)[1])
    got = fetch_all(session, tmp_path, [missing, *_wanted(tiny, [iid])], attempts=3)
    assert [(f.path, f.ok) for f in got] == [(None, False), (None, False)]
    assert got[0].error == "HTTP 404"
    assert got[1].error in ("HTTP 500", "HTTP 502", "HTTP 503")
    assert tiny.counters["file_get"] == 2  # a server's answer is final: no retry
    assert _leftovers(tmp_path) == [] and not (tmp_path / "neurovault").exists()


def test_a_bad_request_is_an_error_too(tiny, session, tmp_path):
    (got,) = fetch_all(session, tmp_path, [Wanted(f"{tiny.url}/api/decode/?neurovault=x", 1, 5)])
    assert (got.path, got.error) == (None, "HTTP 400")


def test_by_default_a_cut_off_body_is_tried_three_times(tiny, session, tmp_path):
    tiny.set_faults(truncate_rate=1.0, paths="/media/")
    (got,) = fetch_all(session, tmp_path, _wanted(tiny, sorted(tiny.images)[:1]))
    assert tiny.counters["file_get"] == 3
    assert got.error.startswith("download failed after 3 attempts: ")


def test_a_full_disk_stops_every_download_and_is_raised(tiny, session, tmp_path):
    ids = sorted(tiny.images)[:3]
    (tmp_path / layout.DOWNLOAD_TMP).mkdir(parents=True)
    part = tmp_path / layout.DOWNLOAD_TMP / f"image_{ids[0]}.part"
    part.symlink_to("/dev/full")  # every write: ENOSPC
    with pytest.raises(DiskFull) as err:
        fetch_all(session, tmp_path, _wanted(tiny, ids), workers=1)
    assert err.value.strerror == (f"disk full while downloading {tiny.images[ids[0]]['file']} "
                              f"into {tmp_path}")
    assert err.value.errno == errno.ENOSPC
    assert not os.path.lexists(part)
    assert tiny.counters["file_get"] == 1  # the others were not started
    assert not (tmp_path / "neurovault").exists()


@pytest.mark.parametrize("attempts", [1, 2, 3])
def test_a_cut_off_body_is_retried_the_attempts_asked_for_then_reported(tiny, session, tmp_path,
                                                                       attempts):
    ids = sorted(tiny.images)[:2]
    tiny.set_faults(truncate_rate=1.0, paths="/media/")
    got = fetch_all(session, tmp_path, _wanted(tiny, ids), workers=1, attempts=attempts)
    assert tiny.counters["file_get"] == 2 * attempts
    for fetched in got:
        assert fetched.path is None
        assert fetched.error.startswith(f"download failed after {attempts} attempts: ")
        assert "IncompleteRead" in fetched.error or "incomplete" in fetched.error.lower()
    assert _leftovers(tmp_path) == []  # no .part stays behind
    assert not (tmp_path / "neurovault").exists()


def test_an_empty_body_is_retried_then_reported_and_never_kept(tiny, session, tmp_path):
    ids = sorted(tiny.images)[:2]
    tiny.set_faults(empty_rate=1.0, paths="/media/")
    got = fetch_all(session, tmp_path, _wanted(tiny, ids), workers=1, attempts=2)
    assert tiny.counters["file_get"] == 4
    assert [f.error for f in got] == ["download failed after 2 attempts: empty body"] * 2
    assert all(f.path is None for f in got)
    assert _leftovers(tmp_path) == [] and not (tmp_path / "neurovault").exists()


def test_a_stalled_body_times_out_and_is_retried(tiny, session, tmp_path):
    (iid,) = sorted(tiny.images)[:1]
    tiny.set_faults(stall_rate=1.0, stall_seconds=5, paths="/media/")
    (got,) = fetch_all(session, tmp_path, _wanted(tiny, [iid]), timeout=(2.0, 0.3), attempts=2)
    assert got.path is None and got.error.startswith("download failed after 2 attempts: ")
    assert tiny.counters["file_get"] == 2


def test_failures_in_a_row_stop_the_rest_and_a_success_resets_the_count(tiny, session,
                                                                        tmp_path):
    ids = sorted(tiny.images)[:2]

    def gone(n: int) -> Wanted:
        return Wanted(f"{tiny.url}/media/images/0/gone{n}.nii.gz", 1, 900 + n)

    wanted = [gone(1), _wanted(tiny, ids[:1])[0], gone(2), gone(3), _wanted(tiny, ids[1:])[0],
              gone(4)]
    got = fetch_all(session, tmp_path, wanted, workers=1, max_consecutive_fails=2)
    assert [f.error for f in got[:4]] == ["HTTP 404", "", "HTTP 404", "HTTP 404"]
    assert [f.ok for f in got] == [False, True, False, False, False, False]
    assert got[4].error == got[5].error == (
        "not tried: 2 downloads failed in a row (server down?); the next build retries")
    assert tiny.counters["file_get"] == 4 and dict(tiny.downloads) == {ids[0]: 1}


def test_failures_from_the_first_download_on_count(tiny, session, tmp_path):
    gone = [Wanted(f"{tiny.url}/media/images/0/gone{n}.nii.gz", 1, 900 + n) for n in range(2)]
    got = fetch_all(session, tmp_path, [*gone, *_wanted(tiny, sorted(tiny.images)[:1])],
                    workers=1, max_consecutive_fails=2)
    assert [f.error[:9] for f in got] == ["HTTP 404", "HTTP 404", "not tried"]


def test_by_default_twenty_failures_in_a_row_stop_the_rest(tiny, session, tmp_path):
    gone = [Wanted(f"{tiny.url}/media/images/0/gone{n}.nii.gz", 1, 900 + n) for n in range(21)]
    got = fetch_all(session, tmp_path, gone, workers=1)
    assert [f.error for f in got[:20]] == ["HTTP 404"] * 20
    assert got[20].error.startswith("not tried: 20 downloads failed in a row")
    assert tiny.counters["file_get"] == 20


def test_results_are_handed_over_as_they_land_in_the_calling_thread(tiny, session, tmp_path):
    ids = sorted(tiny.images)[:4]
    seen: list[tuple[int, int, bool]] = []
    main = threading.get_ident()

    def on_result(index, fetched):
        assert threading.get_ident() == main
        seen.append((index, fetched.wanted.image_id, (tmp_path / fetched.path).is_file()))

    got = fetch_all(session, tmp_path, _wanted(tiny, ids), workers=3, on_result=on_result)
    assert sorted(seen) == [(n, iid, True) for n, iid in enumerate(ids)]
    assert [f.wanted.image_id for f in got] == ids


def test_a_failing_callback_stops_the_queued_downloads(tiny, session, tmp_path):
    ids = sorted(tiny.images)[:5]
    before = set(threading.enumerate())

    def on_result(index, fetched):
        raise RuntimeError("the caller gave up")

    with pytest.raises(RuntimeError, match="the caller gave up"):
        fetch_all(session, tmp_path, _wanted(tiny, ids), workers=1, on_result=on_result)
    for thread in set(threading.enumerate()) - before:  # the worker ends its current item
        if thread.name.startswith("download"):
            thread.join(timeout=30)
    assert tiny.counters["file_get"] <= 2  # the first, maybe the one in flight, no more
    assert sum(1 for _ in (tmp_path / "neurovault").rglob("image_*")) <= 2


def test_nothing_to_fetch_writes_nothing(session, tmp_path):
    assert fetch_all(session, tmp_path, [], workers=0) == []
    assert list(tmp_path.iterdir()) == []


def test_zero_workers_still_download_on_one(tiny, session, tmp_path):
    (got,) = fetch_all(session, tmp_path, _wanted(tiny, sorted(tiny.images)[:1]), workers=0)
    assert got.ok and tiny.counters["file_get"] == 1


def test_a_file_started_early_is_fetched_once_and_appears_only_when_collected(tiny, session,
                                                                             tmp_path):
    """The crawl starts downloads before their batch: a started file is not asked again,
    lands at its layout path only when its batch collects it, and one no batch collects is
    deleted when the build ends."""
    a, b = _wanted(tiny, sorted(tiny.images)[:2])
    with Downloads(session, tmp_path, workers=2) as downloads:
        downloads.start(a)
        downloads.start(b)
        downloads.start(a)  # asked twice, fetched once
        (got,) = downloads.fetch([a])
        assert not list((tmp_path / "neurovault").rglob(f"image_{b.image_id}*"))
    assert got.ok and (tmp_path / got.path).read_bytes() == tiny.image_bytes(a.image_id)
    assert tiny.counters["file_get"] == 2
    assert [p.relative_to(tmp_path).as_posix() for p in (tmp_path / "neurovault").rglob("*")
            if p.is_file()] == [got.path]
    assert _leftovers(tmp_path) == []  # b's file, never collected, is gone


def test_after_close_nothing_is_fetched(tiny, session, tmp_path):
    downloads = Downloads(session, tmp_path)
    downloads.close()
    (got,) = downloads.fetch(_wanted(tiny, sorted(tiny.images)[:1]))
    assert (got.path, got.error) == (None, "not fetched: the build was interrupted")
    assert tiny.counters["file_get"] == 0


# the demo corpus last: it takes seconds to make, and most mutants are caught before

def test_each_file_lands_once_at_its_layout_path_named_by_its_bytes(demo, session, tmp_path):
    gz = [i for i, r in demo.images.items() if r["file"].endswith(".nii.gz")][:2]
    (nii,) = [i for i, r in demo.images.items() if r["file"].endswith(".nii")][:1]
    assert all(len(demo.image_bytes(i)) > 2 * CHUNK for i in [*gz, nii])  # several chunks
    before = demo.downloads.copy()
    got = fetch_all(session, tmp_path, _wanted(demo, [nii, *gz]), workers=2)
    assert [f.wanted.image_id for f in got] == [nii, *gz]  # input order
    for fetched in got:
        w = fetched.wanted
        ext = ".nii" if w.image_id == nii else ".nii.gz"
        assert fetched.ok and fetched.error == ""
        assert fetched.path == f"neurovault/collection_{w.collection_id}/image_{w.image_id}{ext}"
        assert (tmp_path / fetched.path).read_bytes() == demo.image_bytes(w.image_id)
    assert {i: demo.downloads[i] - before[i] for i in [nii, *gz]} == dict.fromkeys([nii, *gz], 1)
    assert _leftovers(tmp_path) == []  # every .part was moved into place
