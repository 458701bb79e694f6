"""The NeuroVault client against the emulator over real HTTP (issue 2)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from nv_datalad.errors import Forbidden, NeuroVaultError, NotFound
from nv_datalad.neurovault.client import ClientConfig, NeuroVaultClient
from nv_datalad.neurovault.records import (
    image_collection_id,
    is_web_url,
    normalise_nulls,
    normalise_url,
    parse_date,
    record_id,
)

FAST = ClientConfig(retries=6, backoff=0.01, read_timeout=2.0, connect_timeout=2.0)


@pytest.fixture(scope="module")
def bench():
    from nv_datalad.emulator import Emulator

    with Emulator(corpus="bench", n_images=1200, port=0) as emu:
        yield emu


def test_paging_across_more_than_1000_records(bench):
    with NeuroVaultClient(bench.url, FAST) as client:
        images = client.list_all("images/")
    public = {i for i, r in bench.images.items()
              if not bench.collections[r["collection_id"]].get("private")}
    assert len(images) == len(public) > 1000
    assert {r["id"] for r in images} == public


def test_collection_list_is_complete_although_unordered(bench):
    with NeuroVaultClient(bench.url, FAST) as client:
        cols = client.collections()
    ids = [c["id"] for c in cols]
    assert ids != sorted(ids)  # the server's order, not ours
    assert set(ids) == {c for c, r in bench.collections.items() if not r.get("private")}


def test_20_percent_server_errors_are_survived(emulator):
    emulator.set_faults(error_rate=0.2, paths="/api/")
    with NeuroVaultClient(emulator.url, FAST) as client:
        cols = client.collections()
        images = [client.collection_images(c["id"]) for c in cols]
    assert emulator.counters["collections_list"] >= 1
    got = [r["id"] for listing in images for r in listing]
    assert sorted(got) == sorted(i for i, r in emulator.images.items()
                                 if not emulator.collections[r["collection_id"]].get("private"))
    emulator.set_faults()
    with NeuroVaultClient(emulator.url, FAST) as client:
        assert [c["id"] for c in client.collections()] == [c["id"] for c in cols]


def test_truncated_and_malformed_bodies_are_retried(emulator):
    emulator.set_faults(truncate_rate=0.3, malformed_json_rate=0.3, paths="/api/")
    with NeuroVaultClient(emulator.url, FAST) as client:
        cols = client.collections()
    emulator.set_faults()
    assert {c["id"] for c in cols} == {c for c, r in emulator.collections.items()
                                       if not r.get("private")}


def test_a_dead_server_fails_with_the_url(emulator):
    emulator.set_faults(error_rate=1.0, paths="/api/")
    cfg = ClientConfig(retries=2, backoff=0.01)
    with NeuroVaultClient(emulator.url, cfg) as client, pytest.raises(NeuroVaultError) as err:
        client.collections()
    assert emulator.url in str(err.value) and "HTTP 5" in str(err.value)


def test_not_found_forbidden_and_redirects(shared_emulator):
    emu = shared_emulator
    private = next(c for c, r in emu.collections.items() if r.get("private"))
    public = min(c for c, r in emu.collections.items() if not r.get("private"))
    with NeuroVaultClient(emu.url, FAST) as client:
        with pytest.raises(NotFound):
            client.image(999_999_999)
        with pytest.raises(Forbidden):
            client.collection(private)
        # nilearn's URLs lack the trailing slash: the 301 is followed
        assert client.get_json(f"{emu.url}/api/collections/{public}")["id"] == public


def test_both_date_styles_parse_to_the_same_instant():
    assert parse_date("2016-01-27T21:47:42.236081Z") == parse_date(
        "2016-01-27T22:47:42.236081+01:00")
    assert parse_date("2024-07-01T12:00:00+02:00") == datetime(2024, 7, 1, 10, tzinfo=UTC)
    assert parse_date("2020-01-01T00:00:00") == datetime(2020, 1, 1, tzinfo=UTC)  # naive = UTC
    assert parse_date("not a date") is None and parse_date(None) is None


def test_emulator_dates_of_both_styles_parse(shared_emulator):
    dates = [r["modify_date"] for r in shared_emulator.images.values()]
    assert any(d.endswith("Z") for d in dates) and any("+0" in d for d in dates)
    assert all(parse_date(d) is not None and parse_date(d).tzinfo for d in dates)


def test_null_placeholders_and_urls():
    rec = normalise_nulls({"a": "", "b": "None / Other", "c": "N/A", "d": "None of them",
                           "e": 0, "f": "null"})
    assert rec == {"a": None, "b": None, "c": None, "d": "None of them", "e": 0, "f": None}
    assert is_web_url("https://neurovault.org/media/images/35/a%20b.nii.gz")
    for bad in ("file:///etc/passwd", "ftp://x/y", "javascript:alert(1)", "http://", None,
                "http://x/a\nb"):
        assert not is_web_url(bad)
    assert normalise_url("http://neurovault.org/x", https=True) == "https://neurovault.org/x"
    assert normalise_url("http://127.0.0.1/x", https=False) == "http://127.0.0.1/x"


def test_ids_from_odd_records():
    assert record_id({"id": "12"}) == 12 and record_id({"id": True}) is None
    assert record_id({"id": "../x"}) is None
    assert image_collection_id({"collection": "http://nv/api/collections/35/"}) == 35
    assert image_collection_id({"collection_id": "7"}) == 7


def test_conditional_head_tells_metadata_edits_from_new_files(emulator):
    iid = min(emulator.images)
    old_date = parse_date(emulator.images[iid]["modify_date"])
    url = emulator.images[iid]["file"]
    with NeuroVaultClient(emulator.url, FAST) as client:
        emulator.mutate_metadata(iid)
        assert client.file_changed_since(url, old_date) is False
        emulator.mutate_content(iid)
        assert client.file_changed_since(url, old_date) is True
    assert emulator.downloads[iid] == 0  # HEAD only
