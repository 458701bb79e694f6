"""Selection details that the emulator cannot provoke (pure, no I/O)."""

from nv_datalad.pipeline.select import _Walk, _wanted_collection_ids


def test_image_without_collection_id_gets_the_walked_one():
    """Older records name their collection only by URL; later layers read collection_id."""
    walk = _Walk(max_images=None, max_consecutive_fails=3)
    walk.take({"id": 5, "collection": "https://neurovault.org/collections/7/"}, {"id": 7})
    walk.take({"id": 6, "collection_id": 7}, {"id": 7})
    assert [s.image["collection_id"] for s in walk.sel.items] == [7, 7]


def test_pinned_collection_ids_skip_the_full_listing():
    assert _wanted_collection_ids({"id": 35}) == [35]
    assert _wanted_collection_ids({"id": {"in": [9, 3, 9]}}) == [3, 9]
    assert _wanted_collection_ids({"id": {"gt": 3}}) is None
    assert _wanted_collection_ids({"DOI": {"not_null": True}}) is None


def test_max_images_stops_the_walk():
    walk = _Walk(max_images=2, max_consecutive_fails=3)
    for iid in (1, 2):
        assert not walk.full
        walk.take({"id": iid, "collection_id": 1}, {"id": 1})
    assert walk.full
