"""The walk that selects images (``nv_datalad.pipeline.select``) against the emulator's bench
corpus (12 images in 6 collections, one of them empty).

Expected selections are computed here from the emulator's records with plain comprehensions
(ascending collection id, then image id, as the docs promise), never with the spec's own
predicates. These tests also serve ``tools/mutation.py select``.
"""

from __future__ import annotations

import pytest

from nv_datalad.neurovault.client import ClientConfig, NeuroVaultClient
from nv_datalad.pipeline.select import REFUSED, Selected, _Walk, select, select_local
from nv_datalad.records import Status
from nv_datalad.spec.validate import parse_spec

FAST = ClientConfig(retries=0, backoff=0.0, workers=2)


@pytest.fixture(scope="module")
def emu():
    from nv_datalad.emulator import Emulator

    with Emulator(corpus="bench", port=0, n_images=12, tiny=True) as e:
        yield e


@pytest.fixture
def client(emu):
    with NeuroVaultClient(emu.url, FAST) as c:
        yield c
    emu.set_faults()


def _spec(emu, body: str):
    return parse_spec(f"name: t\nserver: {emu.url}\n{body}")


ALL_IMAGES = "images:\n  use_default_terms: false\ncollections:\n  terms: {}\n"


def _sizes(emu) -> dict[int, int]:
    """Images per collection, counted from the image records."""
    return {c: sum(r["collection_id"] == c for r in emu.images.values()) for c in emu.collections}


def _walk_order(emu, keep=lambda r: True) -> list[int]:
    return [iid for cid in sorted(emu.collections) for iid in sorted(emu.images)
            if emu.images[iid]["collection_id"] == cid and keep(emu.images[iid])]


def test_every_image_is_selected_in_ascending_collection_then_image_order(emu, client):
    sel = select(client, _spec(emu, ALL_IMAGES))
    assert sel.ids == _walk_order(emu) and len(sel.ids) == 12
    assert [s.collection_id for s in sel.items] == [emu.images[i]["collection_id"]
                                                    for i in sel.ids]
    assert all(s.collection == emu.collections[s.collection_id] for s in sel.items)
    assert sel.walked_collections == set(emu.collections)  # the empty one too
    assert sel.seen_image_ids == set(emu.images)
    assert (sel.complete, sel.failures, sel.refused, sel.unmatched) == (True, [], [], {})


def test_image_terms_choose_and_kept_images_that_no_longer_match_are_noted(emu, client):
    z_maps = _walk_order(emu, lambda r: r["map_type"] == "Z map")
    others = sorted(set(emu.images) - set(z_maps))
    spec = _spec(emu, "images:\n  use_default_terms: false\n  terms:\n    map_type: Z map\n"
                      "collections:\n  terms: {}\n")
    sel = select(client, spec, keep=frozenset(others[:2]))
    assert sel.ids == z_maps and 0 < len(z_maps) < 12
    assert sorted(sel.unmatched) == others[:2]
    assert sel.unmatched[others[0]] == emu.images[others[0]]
    assert sel.seen_image_ids == set(emu.images)


def test_max_images_stops_the_walk_and_a_half_read_collection_is_not_walked(emu, client):
    order = _walk_order(emu)
    for n in (1, 3, 4):
        sel = select(client, _spec(emu, f"max_images: {n}\n{ALL_IMAGES}"))
        assert sel.ids == order[:n]
        last = emu.images[order[n - 1]]["collection_id"]
        assert sel.walked_collections == {c for c in emu.collections if c < last}
    assert select(client, _spec(emu, f"max_images: 0\n{ALL_IMAGES}")).items == []


def test_a_pinned_collection_is_the_only_one_walked(emu, client):
    big = max(_sizes(emu).items(), key=lambda kv: kv[1])[0]
    spec = _spec(emu, f"images:\n  use_default_terms: false\n  terms:\n    collection_id: {big}\n"
                      "collections:\n  terms: {}\n")
    sel = select(client, spec)
    assert sel.ids == _walk_order(emu, lambda r: r["collection_id"] == big)
    assert sel.walked_collections == {big}
    spec = _spec(emu, "images:\n  use_default_terms: false\n  terms:\n    collection_id:\n"
                      f"      in: [999999, {big}]\ncollections:\n  terms: {{}}\n")
    sel = select(client, spec)
    assert sel.walked_collections == {big} and sel.complete
    assert [(f.action, f.status, f.collection_id) for f in sel.failures] == [
        ("select", Status.ERROR, 999999)]
    assert sel.failures[0].message.startswith("collection 999999: not found on the server")


def test_a_bad_record_is_refused_once_and_is_no_failure(emu, client):
    cid = sorted(emu.collections)[0]
    bad = emu.inject_record(cid, {"file": "ftp://127.0.0.1/map.nii.gz"})
    try:
        sel = select(client, _spec(emu, ALL_IMAGES), max_consecutive_fails=1)
    finally:
        emu.delete_image(bad)
    assert bad not in sel.ids and bad in sel.seen_image_ids
    assert sel.complete and sel.failures == []
    (refused,) = sel.refused
    assert (refused.action, refused.status, refused.image_id, refused.collection_id) == (
        REFUSED, Status.IMPOSSIBLE, bad, cid)
    assert refused.message.startswith(f"refused image {str(bad)!r} of collection {cid}: ")


def test_a_collection_that_cannot_be_listed_is_a_failure_and_the_rest_is_walked(emu, client):
    broken = sorted(emu.collections)[1]
    emu.set_faults(error_rate=1.0, paths=f"/api/collections/{broken}/images")
    sel = select(client, _spec(emu, ALL_IMAGES))
    assert sel.ids == _walk_order(emu, lambda r: r["collection_id"] != broken)
    assert [f.collection_id for f in sel.failures] == [broken] and sel.complete
    assert sel.failures[0].message.startswith(f"collection {broken}: ")
    assert broken not in sel.walked_collections


def test_failures_in_a_row_stop_the_walk_as_incomplete(emu, client):
    emu.set_faults(error_rate=1.0, paths=[f"/api/collections/{c}/images" for c in emu.collections])
    sel = select(client, _spec(emu, ALL_IMAGES), max_consecutive_fails=2)
    assert sel.items == [] and not sel.complete
    assert [f.message for f in sel.failures][-1] == (
        "stopped after 2 failures in a row; is the server reachable? Re-run the build later "
        "to finish")
    assert len(sel.failures) == 3  # two collections, then the stop


def test_a_success_resets_the_failures_in_a_row(emu, client):
    """Collections alternate broken / fine: never two failures in a row."""
    cids = [c for c, n in sorted(_sizes(emu).items()) if n]
    broken = cids[0::2]
    emu.set_faults(error_rate=1.0, paths=[f"/api/collections/{c}/images" for c in broken])
    sel = select(client, _spec(emu, ALL_IMAGES), max_consecutive_fails=2)
    assert sel.complete and [f.collection_id for f in sel.failures] == broken
    assert sel.ids == _walk_order(emu, lambda r: r["collection_id"] not in broken)


def test_explicit_ids_take_whole_collections_and_single_images(emu, client):
    small, big = sorted(_sizes(emu), key=lambda c: (_sizes(emu)[c], c))[-2:]
    one = _walk_order(emu, lambda r: r["collection_id"] == big)[0]
    spec = _spec(emu, f"collections:\n  ids: [{small}]\nimages:\n  ids: [{one}, 999999]\n")
    sel = select(client, spec)
    assert sel.ids == sorted([*_walk_order(emu, lambda r: r["collection_id"] == small), one])
    assert [s.collection_id for s in sel.items if s.image_id == one] == [big]
    assert [f.message for f in sel.failures] == ["image 999999: not found on the server"]
    assert sel.failures[0].image_id == 999999
    assert one in sel.seen_image_ids and small in sel.walked_collections


def test_explicit_ids_still_apply_the_users_own_filters(emu, client):
    big = max(_sizes(emu).items(), key=lambda kv: kv[1])[0]
    spec = _spec(emu, f"collections:\n  ids: [{big}, 999999]\nimages:\n  terms:\n"
                      "    map_type: Z map\n")
    sel = select(client, spec)
    assert sel.ids == _walk_order(emu, lambda r: r["collection_id"] == big
                                  and r["map_type"] == "Z map")
    assert [f.message.split(":")[0] for f in sel.failures] == ["collection 999999"]
    spec = _spec(emu, f"collections:\n  ids: [{big}]\n  terms:\n    name: nothing\n")
    assert select(client, spec).ids == []


def test_a_failure_after_a_success_still_counts_towards_the_stop(emu, client):
    cids = [c for c, n in sorted(_sizes(emu).items()) if n]
    emu.set_faults(error_rate=1.0, paths=[f"/api/collections/{c}/images" for c in cids[1:3]])
    sel = select(client, _spec(emu, ALL_IMAGES), max_consecutive_fails=2)
    assert not sel.complete and sel.ids == _walk_order(emu, lambda r: r["collection_id"]
                                                       == cids[0])


def test_explicit_ids_go_on_after_a_missing_or_refused_image(emu, client):
    big = max(_sizes(emu).items(), key=lambda kv: kv[1])[0]
    first, *_ = _walk_order(emu, lambda r: r["collection_id"] == big)
    liar = emu.inject_record(big, {"id": 1})  # its URL answers with another id
    try:
        spec = _spec(emu, f"images:\n  ids: [2, {liar}, {first}]\n")
        sel = select(client, spec)
    finally:
        emu.delete_image(liar)
    assert sel.ids == [first]
    assert [f.message for f in sel.failures] == ["image 2: not found on the server"]
    (refused,) = sel.refused
    assert refused.message == f"refused image '1': answers for image {liar} with another id"


def test_explicit_collections_go_on_after_a_missing_one(emu, client):
    big = max(_sizes(emu).items(), key=lambda kv: kv[1])[0]
    sel = select(client, _spec(emu, f"collections:\n  ids: [1, {big}]\n"))
    assert sel.ids == _walk_order(emu, lambda r: r["collection_id"] == big)
    assert [f.message.split(":")[0] for f in sel.failures] == ["collection 1"]


def test_explicit_collections_go_on_after_one_that_cannot_be_listed(emu, client):
    a, b = [c for c, n in sorted(_sizes(emu).items()) if n][:2]
    emu.set_faults(error_rate=1.0, paths=f"/api/collections/{a}/images")
    sel = select(client, _spec(emu, f"collections:\n  ids: [{a}, {b}]\n"))
    assert sel.ids == _walk_order(emu, lambda r: r["collection_id"] == b)
    assert [f.collection_id for f in sel.failures] == [a]


def test_explicit_images_go_on_after_one_whose_collection_cannot_be_read(emu, client):
    a, b = [c for c, n in sorted(_sizes(emu).items()) if n][:2]
    ia = _walk_order(emu, lambda r: r["collection_id"] == a)[0]
    ib = _walk_order(emu, lambda r: r["collection_id"] == b)[0]
    emu.set_faults(error_rate=1.0, paths=f"/api/collections/{a}/")
    sel = select(client, _spec(emu, f"images:\n  ids: [{ia}, {ib}]\n"))
    assert sel.ids == [ib] and [f.collection_id for f in sel.failures] == [a]


def test_images_of_listed_collections_are_not_asked_for_one_by_one(emu, client):
    a, b = [c for c, n in sorted(_sizes(emu).items()) if n][:2]
    mine = _walk_order(emu, lambda r: r["collection_id"] == a)
    other = _walk_order(emu, lambda r: r["collection_id"] == b)[0]
    emu.reset_counters()
    sel = select(client, _spec(emu, f"collections:\n  ids: [{a}]\nimages:\n"
                                    f"  ids: [{mine[0]}, {other}]\n"))
    assert sel.ids == sorted([*mine, other])
    assert emu.counters["image"] == 1  # only the image outside the listed collection


def test_only_integer_ids_pin_the_collections_to_ask_for():
    from nv_datalad.pipeline.select import _wanted_collection_ids

    assert _wanted_collection_ids({"id": {"in": [True, 3]}}) is None
    assert _wanted_collection_ids({"id": {"in": [3, 5], "gt": 4}}) is None
    assert _wanted_collection_ids({"id": True}) is None
    assert _wanted_collection_ids({"id": {"in": ["a", 3]}}) is None
    assert _wanted_collection_ids({"id": {"in": "35"}}) is None
    assert _wanted_collection_ids({"id": {}}) is None


def test_offline_selection_filters_what_the_dataset_holds():
    cols = {1: {"id": 1, "name": "one"}, 2: {"id": 2, "name": "two"}}
    local = {5: {"id": 5, "collection_id": 2, "map_type": "Z map"},
             3: {"id": 3, "collection_id": 1, "map_type": "Z map"},
             4: {"id": 4, "collection_id": 1, "map_type": "T map"},
             6: {"id": 6, "collection_id": 9, "map_type": "Z map"},  # its collection is gone
             7: {"id": 7, "collection_id": 2, "map_type": "Z map"}}
    base = "name: t\nserver: http://127.0.0.1:9\n"
    terms = "images:\n  use_default_terms: false\n  terms:\n    map_type: Z map\n" \
            "collections:\n  terms: {}\n"

    def ids(body: str) -> list[int]:
        return [s.image_id for s in select_local(parse_spec(base + body), local, cols).items]

    assert ids(terms) == [3, 5, 7]
    assert ids("max_images: 2\n" + terms) == [3, 5]
    assert ids("max_images: 0\n" + terms) == []
    assert ids("images:\n  ids: [4, 7]\n") == [4, 7]
    assert ids("collections:\n  ids: [1]\nimages:\n  ids: [7]\n") == [3, 4, 7]
    assert ids("collections:\n  ids: [2]\nmax_images: 1\n") == [5, 7]  # explicit: no limit


def test_a_refused_record_is_named_by_its_first_40_characters():
    walk = _Walk(max_images=None, max_consecutive_fails=3)
    walk.refuse({"id": "x" * 60}, "id is bad", None, kind="collection")
    walk.refuse({"id": 7}, "no file", 4)
    assert [r.message for r in walk.sel.refused] == [
        f"refused collection {'x' * 40!r}: id is bad",
        "refused image '7' of collection 4: no file"]
    assert [r.collection_id for r in walk.sel.refused] == [None, 4]
    assert walk.consecutive_fails == 0


def test_a_selected_image_knows_its_ids():
    s = Selected({"id": "12"}, {"id": "3"})
    assert (s.image_id, s.collection_id) == (12, 3)
