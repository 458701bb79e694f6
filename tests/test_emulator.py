"""The NeuroVault emulator behaves like NeuroVault's API (NEUROVAULT_API.md), over real HTTP.

Clients are tested against it, so each test here pins a behaviour of the real server that a
client must survive: paging, ordering, redirects, error bodies, both date styles, file headers,
mutations, faults and slow networks. nilearn's own fetcher is used as an independent client.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import requests
from helpers import sigint_as_usual

from nv_datalad.emulator import SAMPLE_IMAGE_ID, Emulator
from nv_datalad.emulator.constants import is_loopback
from nv_datalad.emulator.hostile import HOSTILE_KINDS
from nv_datalad.emulator.neurosynth import VOCABULARY

TIMEOUT = 10
PRIVATE_COLLECTION = 4343
EMPTY_COLLECTION = 5012
OLD_STYLE_COLLECTION = 35  # dates end in "Z"


def get_json(url: str, **kwargs) -> dict:
    response = requests.get(url, timeout=TIMEOUT, **kwargs)
    response.raise_for_status()
    return response.json()


def walk(url: str) -> tuple[list[dict], int]:
    """Every record of a paginated list, following ``next``; and the number of pages."""
    records, pages = [], 0
    while url:
        page = get_json(url)
        records.extend(page["results"])
        pages += 1
        url = page["next"]
    return records, pages


def all_dates(emu: Emulator) -> list[str]:
    records = [*emu.collections.values(), *emu.images.values()]
    return [r[k] for r in records for k in ("add_date", "modify_date") if r.get(k)]


def public_images(emu: Emulator) -> list[dict]:
    collections = emu.collections
    return [i for i in emu.images.values() if not collections[i["collection_id"]]["private"]]


@pytest.fixture(scope="module")
def bench():
    with Emulator(corpus="bench", n_images=1200, seed=3) as emu:
        yield emu


# ---- listing and paging


def test_collection_list_is_public_complete_and_not_in_id_order(shared_emulator):
    emu = shared_emulator
    records, _ = walk(f"{emu.url}/api/collections/?limit=4")
    ids = [r["id"] for r in records]
    public = {cid for cid, c in emu.collections.items() if not c["private"]}
    assert sorted(ids) == sorted(public)
    assert ids != sorted(ids), "NeuroVault does not sort collections by id"
    assert PRIVATE_COLLECTION not in ids
    assert EMPTY_COLLECTION in ids


def test_paging_caps_limit_at_1000_and_links_are_absolute(bench):
    first = get_json(f"{bench.url}/api/images/?limit=5000")
    assert first["count"] == len(public_images(bench)) > 1000
    assert len(first["results"]) == 1000
    assert first["previous"] is None
    assert first["next"] == f"{bench.url}/api/images/?limit=1000&offset=1000"
    second = get_json(first["next"])
    assert len(second["results"]) == first["count"] - 1000
    assert second["next"] is None
    assert second["previous"] == f"{bench.url}/api/images/?limit=1000"
    ids = [r["id"] for r in first["results"] + second["results"]]
    assert len(set(ids)) == len(ids) == first["count"]
    assert ids != sorted(ids), "/api/images/ is unsorted on NeuroVault"
    default = get_json(f"{bench.url}/api/images/")
    assert len(default["results"]) == 100
    assert default["next"] == f"{bench.url}/api/images/?limit=100&offset=100"


def test_collection_images_are_sorted_by_id_across_pages(bench):
    sizes = Counter(i["collection_id"] for i in public_images(bench))
    biggest, size = sizes.most_common(1)[0]
    records, pages = walk(f"{bench.url}/api/collections/{biggest}/images/")
    ids = [r["id"] for r in records]
    assert pages > 1 and len(ids) == size
    assert ids == sorted(ids)
    assert all(r["collection_id"] == biggest for r in records)


# ---- redirects and errors


def test_missing_slash_answers_301_keeping_the_query(shared_emulator):
    url = shared_emulator.url
    response = requests.get(
        f"{url}/api/collections/35?limit=2", allow_redirects=False, timeout=TIMEOUT
    )
    assert response.status_code == 301
    assert response.headers["Location"] == f"{url}/api/collections/35/?limit=2"
    followed = requests.get(f"{url}/api/collections/35", timeout=TIMEOUT)
    assert followed.status_code == 200
    assert followed.json()["id"] == 35


def test_unknown_ids_answer_404_and_private_ones_403(shared_emulator):
    url = shared_emulator.url
    for path in ("/api/collections/999999/", "/api/images/1/", "/api/collections/999999/images/"):
        response = requests.get(url + path, timeout=TIMEOUT)
        assert response.status_code == 404
        assert response.json() == {"detail": "Not found."}
    private_image = next(
        i["id"] for i in shared_emulator.images.values() if i["collection_id"] == PRIVATE_COLLECTION
    )
    forbidden = {"detail": "You do not have permission to perform this action."}
    for path in (
        f"/api/collections/{PRIVATE_COLLECTION}/",
        f"/api/collections/{PRIVATE_COLLECTION}/images/",
        f"/api/images/{private_image}/",
    ):
        response = requests.get(url + path, timeout=TIMEOUT)
        assert response.status_code == 403
        assert response.json() == forbidden
    listed = {r["id"] for r in walk(f"{url}/api/images/?limit=1000")[0]}
    assert private_image not in listed


# ---- records


def test_dates_come_in_both_styles_and_parse_to_aware_datetimes(shared_emulator):
    dates = all_dates(shared_emulator)
    assert any(d.endswith("Z") for d in dates)
    assert any(d.endswith("+01:00") for d in dates)
    assert any(d.endswith("+02:00") for d in dates)
    # The Berlin style drops a zero fraction: "2016-12-09T11:18:13+01:00".
    assert any(d.endswith(("+01:00", "+02:00")) and "." not in d for d in dates)
    for record in [*shared_emulator.collections.values(), *shared_emulator.images.values()]:
        added = datetime.fromisoformat(record["add_date"])
        modified = datetime.fromisoformat(record["modify_date"])
        assert added.tzinfo is not None and modified.tzinfo is not None
        assert modified >= added


def test_records_carry_the_real_servers_quirks(shared_emulator):
    emu = shared_emulator
    images = list(emu.images.values())
    collections = emu.collections
    url = emu.url
    for image in images:
        assert image["file"].startswith(f"{url}/media/images/{image['collection_id']}/")
        assert image["collection"] == f"{url}/collections/{image['collection_id']}/"
        assert image["url"] == f"{url}/images/{image['id']}/"
    # null spelled three ways
    old = [i for i in images if i["collection_id"] == OLD_STYLE_COLLECTION]
    assert any(i["description"] == "" for i in old)
    assert any(i["description"] is None for i in images)
    assert any(i.get("cognitive_paradigm_cogatlas") == "None / Other" for i in images)
    assert any("motor" in (i.get("cognitive_paradigm_cogatlas") or "") for i in images)
    # image types and the fields nilearn filters on, including nulls
    assert {i.get("not_mni") for i in images} >= {True, False, None}
    assert {i.get("is_thresholded") for i in images} >= {True, False, None}
    assert {i.get("analysis_level") for i in images} >= {
        "group", "single-subject", "meta-analysis", None,
    }  # fmt: skip
    assert {i.get("map_type") for i in images} >= {
        "Z map", "T map", "F map", "univariate-beta map", "ROI/mask", "parcellation", "anatomical",
    }  # fmt: skip
    assert {type(i.get("number_of_subjects")) for i in images} >= {int, type(None)}
    atlases = [i for i in images if i["image_type"] == "atlas"]
    assert atlases and all("map_type" not in a for a in atlases)
    label = requests.get(atlases[0]["label_description_file"], timeout=TIMEOUT)
    assert label.status_code == 200 and b"<atlas" in label.content
    assert any(i["file"].endswith(".nii") for i in images)
    assert any("Contrast" in i for i in images), "free-form uploader keys sit at top level"
    # collections: DOI or not, counts that disagree with the list, an empty one
    assert {c["DOI"] is None for c in collections.values()} == {True, False}
    assert all(
        c["DOI"] is None or c["DOI"] == f"10.5555/nvemu.{c['id']}" for c in collections.values()
    )
    assert len({c["name"] for c in collections.values()}) == len(collections)
    listed = {cid: sum(1 for i in images if i["collection_id"] == cid) for cid in collections}
    assert any(c["number_of_images"] != listed[cid] for cid, c in collections.items())
    assert collections[EMPTY_COLLECTION]["number_of_images"] in (0, None)
    assert listed[EMPTY_COLLECTION] == 0


def test_duplicate_and_spaced_upload_names_are_served(shared_emulator):
    emu = shared_emulator
    files = {i["file"].rsplit("/", 1)[1] for i in emu.images.values() if i["collection_id"] == 35}
    assert {
        "zstat1.nii.gz",
        "zstat1_1.nii.gz",
        "zstat1_2.nii.gz",
        "Fig%203B_zstat1.nii.gz",
    } <= files
    spaced = next(i for i in emu.images.values() if i["file"].endswith("Fig%203B_zstat1.nii.gz"))
    response = requests.get(spaced["file"], timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.content == emu.image_bytes(spaced["id"])


# ---- files


def test_file_headers_and_conditional_get(shared_emulator):
    emu = shared_emulator
    image = emu.images[SAMPLE_IMAGE_ID]
    response = requests.get(image["file"], timeout=TIMEOUT)
    assert response.status_code == 200
    assert response.headers["Content-Encoding"] == "utf-8"
    assert response.headers["Content-Type"] == "application/octet-stream"
    assert int(response.headers["Content-Length"]) == image["file_size"] == len(response.content)
    assert response.content[:2] == b"\x1f\x8b", "the body must not be decoded by the client"
    last_modified = response.headers["Last-Modified"]
    not_modified = requests.get(
        image["file"], headers={"If-Modified-Since": last_modified}, timeout=TIMEOUT
    )
    assert not_modified.status_code == 304
    assert not_modified.content == b""
    earlier = format_datetime(parsedate_to_datetime(last_modified).replace(year=2000), usegmt=True)
    again = requests.get(image["file"], headers={"If-Modified-Since": earlier}, timeout=TIMEOUT)
    assert again.status_code == 200 and again.content == response.content
    head = requests.head(image["file"], timeout=TIMEOUT)
    assert head.status_code == 200
    assert int(head.headers["Content-Length"]) == image["file_size"]
    partial = requests.get(image["file"], headers={"Range": "bytes=100-"}, timeout=TIMEOUT)
    assert partial.status_code == 206
    assert partial.content == response.content[100:]


def test_nii_and_nii_gz_bodies_load_with_nibabel(shared_emulator, tmp_path):
    emu = shared_emulator
    images = list(emu.images.values())
    gz = next(i for i in images if i["file"].endswith(".nii.gz") and i["id"] != SAMPLE_IMAGE_ID)
    raw = next(i for i in images if i["file"].endswith(".nii"))
    two_mm = next(i for i in images if i["file"].endswith("Fig%204A%20zstat2.nii.gz"))
    for image, ext in ((gz, ".nii.gz"), (raw, ".nii"), (two_mm, ".nii.gz")):
        body = requests.get(image["file"], timeout=TIMEOUT).content
        assert (body[:2] == b"\x1f\x8b") == (ext == ".nii.gz")
        path = tmp_path / f"image_{image['id']}{ext}"
        path.write_bytes(body)
        img = nib.load(path)
        data = np.asarray(img.dataobj)
        assert data.ndim == 3 and np.isfinite(data).all() and np.any(data != 0)
    img = nib.load(tmp_path / f"image_{two_mm['id']}.nii.gz")
    assert img.shape == (91, 109, 91)
    assert np.allclose(img.affine, np.array([[-2, 0, 0, 90], [0, 2, 0, -126], [0, 0, 2, -72],
                                             [0, 0, 0, 1]]))  # fmt: skip


def test_nilearns_real_sample_map_is_served_byte_for_byte(shared_emulator):
    from nilearn.datasets import load_sample_motor_activation_image

    expected = Path(load_sample_motor_activation_image()).read_bytes()
    image = shared_emulator.images[SAMPLE_IMAGE_ID]
    assert image["name"] == "left vs right button press"
    assert image["map_type"] == "T map"
    assert image["file_size"] == len(expected)
    assert requests.get(image["file"], timeout=TIMEOUT).content == expected


def test_same_corpus_and_seed_give_identical_records_and_bytes(shared_emulator):
    with Emulator(corpus="demo", seed=0) as twin, Emulator(corpus="demo", seed=1) as other:
        mine = json.dumps(shared_emulator.images, sort_keys=True)
        assert json.loads(mine.replace(shared_emulator.url, twin.url)) == json.loads(
            json.dumps(twin.images, sort_keys=True)
        )
        some = sorted(twin.images)[:10]
        for image_id in some:
            served = requests.get(twin.images[image_id]["file"], timeout=TIMEOUT).content
            assert served == shared_emulator.image_bytes(image_id)
        assert any(other.image_bytes(i) != twin.image_bytes(i) for i in some)


# ---- mutations


def test_content_mutation_changes_bytes_size_and_dates(emulator):
    image_id = next(
        i for i, r in emulator.images.items() if r["collection_id"] == OLD_STYLE_COLLECTION
    )
    before = emulator.images[image_id]
    collection_before = emulator.collections[OLD_STYLE_COLLECTION]
    old_bytes = requests.get(before["file"], timeout=TIMEOUT)
    emulator.mutate_content(image_id)
    after = get_json(f"{emulator.url}/api/images/{image_id}/")
    new_bytes = requests.get(after["file"], timeout=TIMEOUT)
    assert after["file"] == before["file"], "NeuroVault URLs are not versioned"
    assert new_bytes.content != old_bytes.content
    assert after["file_size"] == len(new_bytes.content)
    assert datetime.fromisoformat(after["modify_date"]) > datetime.fromisoformat(
        before["modify_date"]
    )
    assert after["modify_date"].endswith("Z"), "the record keeps its date style"
    collection_after = get_json(f"{emulator.url}/api/collections/{OLD_STYLE_COLLECTION}/")
    assert datetime.fromisoformat(collection_after["modify_date"]) > datetime.fromisoformat(
        collection_before["modify_date"]
    )
    assert parsedate_to_datetime(new_bytes.headers["Last-Modified"]) > parsedate_to_datetime(
        old_bytes.headers["Last-Modified"]
    )
    stale = requests.get(
        after["file"],
        headers={"If-Modified-Since": old_bytes.headers["Last-Modified"]},
        timeout=TIMEOUT,
    )
    assert stale.status_code == 200


def test_metadata_mutation_keeps_bytes_and_moves_dates_forward(emulator):
    image_id = SAMPLE_IMAGE_ID
    before = emulator.images[image_id]
    emulator.mutate_metadata(image_id)
    emulator.mutate_metadata(image_id, map_type="Z map")
    after = get_json(f"{emulator.url}/api/images/{image_id}/")
    assert after["description"] != before["description"]
    assert after["map_type"] == "Z map"
    assert after["file_size"] == before["file_size"]
    assert requests.get(after["file"], timeout=TIMEOUT).content == emulator.image_bytes(image_id)
    first_date = datetime.fromisoformat(before["modify_date"])
    assert datetime.fromisoformat(after["modify_date"]) > first_date
    with pytest.raises(ValueError, match="file"):
        emulator.mutate_metadata(image_id, file="http://elsewhere/x.nii.gz")


def test_deleted_image_disappears_everywhere(emulator):
    image = emulator.images[SAMPLE_IMAGE_ID]
    collection_id = image["collection_id"]
    emulator.delete_image(SAMPLE_IMAGE_ID)
    assert (
        requests.get(f"{emulator.url}/api/images/{SAMPLE_IMAGE_ID}/", timeout=10).status_code == 404
    )
    assert requests.get(image["file"], timeout=TIMEOUT).status_code == 404
    listed = get_json(f"{emulator.url}/api/collections/{collection_id}/images/")
    assert SAMPLE_IMAGE_ID not in {r["id"] for r in listed["results"]}
    assert SAMPLE_IMAGE_ID not in {
        r["id"] for r in walk(f"{emulator.url}/api/images/?limit=1000")[0]
    }
    assert SAMPLE_IMAGE_ID not in emulator.images


def test_added_collection_is_listed_with_new_ids_and_later_dates(emulator):
    latest = max(datetime.fromisoformat(d) for d in all_dates(emulator))
    old_collections, old_images = set(emulator.collections), set(emulator.images)
    cid = emulator.add_collection(n_images=2, name="Fresh maps", DOI="10.5555/fresh")
    assert cid > max(old_collections)
    record = get_json(f"{emulator.url}/api/collections/{cid}/")
    assert record["name"] == "Fresh maps" and record["DOI"] == "10.5555/fresh"
    assert datetime.fromisoformat(record["add_date"]) > latest
    assert cid in {r["id"] for r in walk(f"{emulator.url}/api/collections/")[0]}
    images = get_json(f"{emulator.url}/api/collections/{cid}/images/")["results"]
    assert len(images) == 2 == record["number_of_images"]
    assert all(i["id"] > max(old_images) for i in images)
    for image in images:
        added = datetime.fromisoformat(image["add_date"])
        assert latest < added <= datetime.fromisoformat(image["modify_date"])
    with pytest.raises(ValueError, match="unique"):
        emulator.add_collection(name="Fresh maps")
    body = requests.get(images[0]["file"], timeout=TIMEOUT).content
    assert len(body) == images[0]["file_size"]


# ---- faults and network


def test_error_rate_produces_some_server_errors(emulator):
    emulator.set_faults(error_rate=0.2, paths="/api/")
    statuses = [
        requests.get(f"{emulator.url}/api/collections/35/", timeout=TIMEOUT).status_code
        for _ in range(60)
    ]
    errors = sum(s >= 500 for s in statuses)
    assert 0 < errors < 40
    assert statuses.count(200) == 60 - errors
    file_url = emulator.images[SAMPLE_IMAGE_ID]["file"]
    assert requests.get(file_url, timeout=TIMEOUT).status_code == 200, "paths filter applies"


def test_truncated_bodies_and_malformed_json_break_clients(emulator):
    image = emulator.images[SAMPLE_IMAGE_ID]
    emulator.set_faults(truncate_rate=1.0, paths="/media/")
    with pytest.raises(requests.exceptions.RequestException):
        requests.get(image["file"], timeout=TIMEOUT)
    assert emulator.downloads[SAMPLE_IMAGE_ID] == 0, "a truncated body is not a download"
    emulator.set_faults(malformed_json_rate=1.0)
    response = requests.get(f"{emulator.url}/api/images/{SAMPLE_IMAGE_ID}/", timeout=TIMEOUT)
    assert response.status_code == 200
    with pytest.raises(ValueError):
        response.json()
    emulator.set_faults(empty_rate=1.0, paths="/media/")
    empty = requests.get(image["file"], timeout=TIMEOUT)
    assert empty.status_code == 200 and empty.headers["Content-Length"] == "0"
    assert empty.content == b"" and emulator.downloads[SAMPLE_IMAGE_ID] == 0
    emulator.set_faults()
    assert requests.get(image["file"], timeout=TIMEOUT).content == emulator.image_bytes(
        SAMPLE_IMAGE_ID
    )
    assert emulator.downloads[SAMPLE_IMAGE_ID] == 1


def test_stalls_time_clients_out(emulator):
    emulator.set_faults(stall_rate=1.0, stall_seconds=30.0)
    with pytest.raises(requests.exceptions.ReadTimeout):
        requests.get(f"{emulator.url}/api/collections/", timeout=0.5)
    # the fixture's stop() must not wait for the 30 s stall


def test_latency_and_bandwidth_slow_requests_down(emulator):
    image = emulator.images[SAMPLE_IMAGE_ID]
    emulator.set_network(latency=0.3)
    start = time.monotonic()
    requests.get(f"{emulator.url}/api/collections/35/", timeout=TIMEOUT)
    assert time.monotonic() - start >= 0.3
    emulator.set_network(bandwidth=400_000)  # 186 kB sample: about half a second
    start = time.monotonic()
    body = requests.get(image["file"], timeout=TIMEOUT).content
    assert time.monotonic() - start >= 0.4
    assert body == emulator.image_bytes(SAMPLE_IMAGE_ID)


# ---- counters and control


def test_counters_count_requests_by_kind_and_full_downloads(emulator):
    url = emulator.url
    emulator.reset_counters()
    file_url = emulator.images[SAMPLE_IMAGE_ID]["file"]
    requests.get(f"{url}/api/collections/", timeout=TIMEOUT)
    requests.get(f"{url}/api/collections/35", timeout=TIMEOUT)  # redirect + record
    requests.get(f"{url}/api/collections/35/images/", timeout=TIMEOUT)
    requests.get(f"{url}/api/images/", timeout=TIMEOUT)
    requests.get(f"{url}/api/images/{SAMPLE_IMAGE_ID}/", timeout=TIMEOUT)
    requests.get(file_url, timeout=TIMEOUT)
    requests.head(file_url, timeout=TIMEOUT)
    requests.get(f"{url}/api/decode/?neurovault={SAMPLE_IMAGE_ID}", timeout=TIMEOUT)
    counters = emulator.counters
    for kind in ("collections_list", "collection", "collection_images", "images_list", "image",
                 "file_get", "file_head", "decode", "redirect"):  # fmt: skip
        assert counters[kind] == 1, kind
    assert emulator.downloads == {SAMPLE_IMAGE_ID: 1}
    emulator.reset_counters()
    assert not emulator.counters and not emulator.downloads


def test_control_endpoint_mirrors_the_python_api(emulator):
    control = f"{emulator.url}/_control"
    response = requests.post(
        f"{control}/mutate_metadata",
        json={"image_id": SAMPLE_IMAGE_ID, "description": "via HTTP"},
        timeout=TIMEOUT,
    )
    assert response.status_code == 200
    assert emulator.images[SAMPLE_IMAGE_ID]["description"] == "via HTTP"
    new_id = requests.post(f"{control}/add_collection", json={"n_images": 1}, timeout=10).json()
    assert new_id["result"] in emulator.collections
    requests.get(emulator.images[SAMPLE_IMAGE_ID]["file"], timeout=TIMEOUT)
    counters = get_json(f"{control}/counters")
    assert counters["downloads"] == {str(SAMPLE_IMAGE_ID): 1}
    assert counters["counters"]["control"] >= 2
    requests.post(f"{control}/delete_image", json={"image_id": SAMPLE_IMAGE_ID}, timeout=10)
    assert SAMPLE_IMAGE_ID not in emulator.images
    assert requests.post(f"{control}/explode", json={}, timeout=10).status_code == 404
    bad = requests.post(f"{control}/set_faults", json={"error_rate": 3}, timeout=TIMEOUT)
    assert bad.status_code == 400 and "error_rate" in bad.json()["detail"]
    requests.post(f"{control}/reset_counters", timeout=TIMEOUT)
    assert emulator.downloads == {}


def test_control_endpoint_only_trusts_loopback_addresses():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("::ffff:127.0.0.1")
    assert not is_loopback("192.168.1.20") and not is_loopback("10.0.0.1")


# ---- Neurosynth


def test_neurosynth_decoder_answers_words_and_its_usual_failures(shared_emulator):
    url = f"{shared_emulator.url}/api/decode/"
    outcomes = {"words": 0, "empty": 0, "html": 0, "error": 0}
    public = sorted(r["id"] for r in public_images(shared_emulator))
    for image_id in public:
        response = requests.get(url, params={"neurovault": image_id}, timeout=TIMEOUT)
        if response.status_code >= 500:
            outcomes["error"] += 1
        elif response.headers["Content-Type"].startswith("text/html"):
            assert response.status_code == 200
            outcomes["html"] += 1
        else:
            values = response.json()["data"]["values"]
            outcomes["words" if values else "empty"] += 1
            assert set(values) <= set(VOCABULARY)
    assert all(outcomes.values()), outcomes
    assert outcomes["words"] > len(public) / 2


# ---- nilearn as an independent client


@pytest.fixture
def nilearn_on_emulator(shared_emulator, monkeypatch):
    from nilearn.datasets import neurovault

    url = shared_emulator.url
    monkeypatch.setattr(neurovault, "_NEUROVAULT_BASE_URL", f"{url}/api/")
    monkeypatch.setattr(neurovault, "_NEUROVAULT_COLLECTIONS_URL", f"{url}/api/collections/")
    monkeypatch.setattr(neurovault, "_NEUROVAULT_IMAGES_URL", f"{url}/api/images/")
    monkeypatch.setattr(neurovault, "_NEUROSYNTH_FETCH_WORDS_URL", f"{url}/api/decode/")
    return neurovault


def test_nilearn_fetch_neurovault_downloads_from_the_emulator(
    shared_emulator, nilearn_on_emulator, tmp_path
):
    bunch = nilearn_on_emulator.fetch_neurovault(max_images=5, data_dir=tmp_path, verbose=0)
    assert len(bunch.images) == 5
    for path, meta in zip(bunch.images, bunch.images_meta, strict=True):
        assert Path(path).is_relative_to(tmp_path)
        assert Path(path).read_bytes() == shared_emulator.image_bytes(meta["id"])
        assert meta["not_mni"] is False and meta["is_thresholded"] is False


def test_nilearn_fetch_by_ids_follows_the_redirect(shared_emulator, nilearn_on_emulator, tmp_path):
    other = next(i for i, r in shared_emulator.images.items() if r["collection_id"] == 2138)
    redirects = shared_emulator.counters["redirect"]
    bunch = nilearn_on_emulator.fetch_neurovault_ids(
        collection_ids=[EMPTY_COLLECTION],
        image_ids=[SAMPLE_IMAGE_ID, other],
        data_dir=tmp_path,
        verbose=0,
    )
    assert sorted(m["id"] for m in bunch.images_meta) == sorted([SAMPLE_IMAGE_ID, other])
    for path, meta in zip(bunch.images, bunch.images_meta, strict=True):
        assert Path(path).read_bytes() == shared_emulator.image_bytes(meta["id"])
    assert shared_emulator.counters["redirect"] >= redirects + 3  # nilearn drops the slash


def test_nilearns_default_terms_select_most_of_the_demo(shared_emulator):
    from nilearn.datasets.neurovault import ResultFilter, basic_image_terms

    keep = ResultFilter(basic_image_terms())
    public = public_images(shared_emulator)
    selected = [r for r in public if keep(r)]
    assert 50 <= len(selected) <= 60 < len(public)


# ---- knobs for the planner's URL-change branch and for hostile input (issues 17, 18)


def test_moved_file_serves_the_same_bytes_under_a_new_url(emulator):
    before = emulator.images[SAMPLE_IMAGE_ID]
    old_bytes = requests.get(before["file"], timeout=TIMEOUT).content
    new_url = emulator.move_file(SAMPLE_IMAGE_ID)
    after = get_json(f"{emulator.url}/api/images/{SAMPLE_IMAGE_ID}/")
    assert after["file"] == new_url != before["file"]
    assert new_url.rsplit("/", 1)[1] == before["file"].rsplit("/", 1)[1], "same file name"
    assert new_url.count("/") == before["file"].count("/") + 1, "one new path segment"
    assert datetime.fromisoformat(after["modify_date"]) > datetime.fromisoformat(
        before["modify_date"]
    )
    assert after["file_size"] == before["file_size"]
    assert requests.get(before["file"], timeout=TIMEOUT).status_code == 404
    assert requests.get(new_url, timeout=TIMEOUT).content == old_bytes
    listed = get_json(f"{emulator.url}/api/collections/{before['collection_id']}/images/")
    assert new_url in {r["file"] for r in listed["results"]}


def test_hostile_records_are_listed_like_any_other_image(emulator):
    target = min(c for c, r in emulator.collections.items() if not r["private"] and c != 5012)
    injected = {kind: emulator.add_hostile_images(kind) for kind in HOSTILE_KINDS}
    records = {iid: emulator.images[iid] for ids in injected.values() for iid in ids}
    listed, _ = walk(f"{emulator.url}/api/collections/{target}/images/?limit=1000")
    everywhere, _ = walk(f"{emulator.url}/api/images/?limit=1000")
    for iid, record in records.items():
        assert record in listed and record in everywhere, iid
    assert len(records) == len(set(records)) == len(HOSTILE_KINDS) + 3  # 2 traversal, 3 schemes

    def one(kind: str) -> dict:
        return records[injected[kind][0]]

    traversal = [records[i] for i in injected["traversal-name"]]
    assert traversal[0]["name"].startswith("../") and traversal[1]["name"].startswith("/")
    for record, iid in zip(traversal, injected["traversal-name"], strict=True):
        assert "%2F" in record["file"]
        assert requests.get(record["file"], timeout=TIMEOUT).content == emulator.image_bytes(iid)
    assert "\x00" in one("nul-name")["name"] and "%00" in one("nul-name")["file"]
    assert len(one("long-name")["name"]) >= 5000
    assert one("string-id")["id"] == "12a" and one("negative-id")["id"] < 0
    assert one("string-collection-id")["collection_id"] == "abc"
    foreign = one("foreign-collection-id")["collection_id"]
    assert foreign != target and foreign in emulator.collections
    schemes = {records[i]["file"].split(":", 1)[0] for i in injected["file-url-scheme"]}
    assert schemes == {"file", "ftp", "javascript"}
    credentials = one("credentials-url")["file"]
    assert "user:secret@" in credentials
    assert requests.get(credentials, timeout=TIMEOUT).content == emulator.image_bytes(
        injected["credentials-url"][0]
    )
    assert "\n" in one("newline-url")["file"]
    assert one("bad-file-size")["file_size"] == "12 MB"
    assert len(one("huge-record")["description"]) >= 4 << 20
    # the generic knob behind the presets
    iid = emulator.inject_record(target, {"name": "typed by a stranger", "file_size": 0})
    assert get_json(f"{emulator.url}/api/images/{iid}/")["name"] == "typed by a stranger"
    with pytest.raises(ValueError, match="traversal-name"):
        emulator.add_hostile_images("no-such-kind")


def test_one_listing_page_can_answer_html_or_truncated_json(emulator):
    url = emulator.url
    emulator.break_page("/api/images/", "html-page", offset=10)
    assert get_json(f"{url}/api/images/?limit=10")["next"].endswith("offset=10")
    broken = requests.get(f"{url}/api/images/?limit=10&offset=10", timeout=TIMEOUT)
    assert broken.status_code == 200
    assert broken.headers["Content-Type"].startswith("text/html")
    assert get_json(f"{url}/api/images/?limit=10&offset=20")["results"]
    assert requests.get(f"{url}/api/images/?offset=10", timeout=TIMEOUT).text == broken.text
    emulator.break_page("/api/collections/35/images/", "truncated-json", times=1)
    truncated = requests.get(f"{url}/api/collections/35/images/", timeout=TIMEOUT)
    assert truncated.status_code == 200 and truncated.headers["Content-Type"] == "application/json"
    with pytest.raises(ValueError):
        truncated.json()
    assert len(get_json(f"{url}/api/collections/35/images/")["results"]) > 5, "only once"
    emulator.clear_page_faults()
    assert get_json(f"{url}/api/images/?limit=10&offset=10")["results"]


def test_bench_corpus_at_whole_neurovault_scale_with_tiny_files(tmp_path):
    with Emulator(corpus="bench", n_images=100_000, tiny=True) as emu:
        collections = {c: r for c, r in emu.collections.items() if not r["private"]}
        assert get_json(f"{emu.url}/api/images/?limit=1")["count"] == 100_000
        assert get_json(f"{emu.url}/api/collections/?limit=1")["count"] == len(collections)
        assert len(collections) >= 2000
        approx = sorted(((r["number_of_images"] or 0, c) for c, r in collections.items()),
                        reverse=True)  # fmt: skip
        exact = {
            c: get_json(f"{emu.url}/api/collections/{c}/images/?limit=1")["count"]
            for _, c in approx[:10]
        }
        sizes = sorted(exact.values(), reverse=True)
        assert sizes[0] > 10_000, "one collection over 10,000 images"
        assert sum(s >= 1000 for s in sizes) >= 4, "a few with thousands"
        assert approx[len(approx) // 2][0] <= 20, "most collections are small"
        first = get_json(f"{emu.url}/api/collections/{approx[0][1]}/images/?limit=3")["results"]
        body = requests.get(first[0]["file"], timeout=TIMEOUT).content
        assert len(body) == first[0]["file_size"] < 1000
        path = tmp_path / first[0]["file"].rsplit("/", 1)[1]
        path.write_bytes(body)
        assert nib.load(path).shape == (4, 4, 4)


def test_bench_size_distribution_scales_down(bench):
    sizes = Counter(i["collection_id"] for i in public_images(bench))
    assert sum(sizes.values()) == 1200
    assert sizes.most_common(1)[0][1] == 1200 // 4


def test_emulator_module_serves_the_bench_corpus_until_interrupted():
    argv = [sys.executable, "-m", "nv_datalad.emulator", "--corpus", "bench", "--images", "300",
            "--tiny", "--port", "0"]  # fmt: skip
    proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True, preexec_fn=sigint_as_usual)
    try:
        assert proc.stderr is not None
        announced = next(line for line in proc.stderr if "serving at" in line)
        url = announced.rsplit(" ", 1)[1].strip()
        assert url.startswith("http://127.0.0.1:")
        assert get_json(f"{url}/api/images/?limit=1")["count"] == 300
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    assert "emulator stopped" in err


@pytest.mark.parametrize("entry", [["nv_datalad.emulator"], ["nv_datalad.cli", "emulator"]])
def test_both_emulator_commands_refuse_a_non_loopback_host(entry):
    done = subprocess.run([sys.executable, "-m", *entry, "--host", "0.0.0.0"],
                          capture_output=True, text=True, timeout=60)  # fmt: skip
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "'0.0.0.0'" in lines[0] and "loopback only" in lines[0]
