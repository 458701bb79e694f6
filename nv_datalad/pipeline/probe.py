"""The server's answers the planner needs, gathered before planning so the plan stays pure.

Two questions need a request per image, and only for a few images: is a local image that the
selection no longer lists still on the server (unselected) or gone (vanished)? And for an image
whose date is newer but whose URL and size are the same: did the file change, or only its
metadata? Both are asked in parallel through the client's pool.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from nv_datalad.errors import NeuroVaultError, NotFound
from nv_datalad.neurovault.client import NeuroVaultClient
from nv_datalad.neurovault.records import image_collection_id, parse_date
from nv_datalad.pipeline.plan import PlannedImage
from nv_datalad.pipeline.select import Selection


def still_on_server(client: NeuroVaultClient, selection: Selection,
                    local: Mapping[int, dict]) -> dict[int, bool]:
    """For local images outside the selection: does the server still serve them?

    A complete walk of their collection already answers it; the rest cost one request each.
    """
    known: dict[int, bool] = {}
    unknown = []
    for iid in sorted(set(local) - set(selection.ids)):
        cid = image_collection_id(local[iid])
        if selection.complete and cid in selection.walked_collections:
            known[iid] = iid in selection.seen_image_ids
        else:
            unknown.append(iid)

    def probe(iid: int) -> bool | None:
        try:
            client.image(iid)
            return True
        except NotFound:
            return False
        except NeuroVaultError:
            return None

    for iid, alive in zip(unknown, client.map(probe, unknown), strict=True):
        if alive is not None:
            known[iid] = alive
    return known


def file_changes(client: NeuroVaultClient, checks: Sequence[PlannedImage], *,
                 recheck: bool) -> dict[int, bool | None]:
    """Same URL and size, newer date: a conditional HEAD tells a metadata edit (304) from a
    new file, so metadata edits cost no download. None: the server cannot tell (or
    ``--recheck`` trusts no date), so the file is downloaded and the keys compared."""
    if recheck:
        return {c.image_id: None for c in checks}

    def ask(item: PlannedImage) -> bool | None:
        # The file's mtime (Last-Modified) is at most the modify_date of the save that wrote
        # it, so "modified since the modify_date we hold" means a new file. The server's
        # clock, not ours, is the reference: no skew between machines.
        since = parse_date((item.local or {}).get("modify_date"))
        url = client.file_url(item.record or {})
        if since is None or url is None:
            return None
        try:
            return client.file_changed_since(url, since)
        except NeuroVaultError:
            return None

    return dict(zip((c.image_id for c in checks), client.map(ask, checks), strict=True))
