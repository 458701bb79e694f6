"""What the dataset holds in its work tree now: images (sidecar + file) and collections.

Built on :mod:`nv_datalad.dataset.revision`'s readers with ``rev=None``, so the build, offline
mode and the consumers read sidecars one way, at HEAD or at any tag.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from nv_datalad.dataset import layout, revision


def image_path_of(root: Path, collection_id: int, image_id: int) -> str | None:
    """The image file present for an id (``.nii.gz`` or ``.nii``), as a relpath."""
    for ext in layout.NIFTI_EXTENSIONS:
        rel = layout.image_file(collection_id, image_id, ext)
        if os.path.lexists(root / rel):
            return str(rel)
    return None


def local_images(root: Path) -> dict[int, dict]:
    """Image id → sidecar, for every image that is fully in the dataset (sidecar + file).

    A sidecar without its image is an import that did not finish; recovery removes it.
    """
    files = revision.list_files(root, None)
    present = set(files)

    def has_image(rel: str, iid: int) -> bool:
        folder = PurePosixPath(rel).parent
        return any(str(folder / f"image_{iid}{ext}") in present for ext in layout.NIFTI_EXTENSIONS)

    paths = {iid: rel for iid, rel in revision.image_sidecar_paths(files).items()
             if has_image(rel, iid)}
    parsed = revision.read_json_many(root, None, list(paths.values()))
    return {iid: parsed[rel] for iid, rel in sorted(paths.items()) if rel in parsed}


def local_collections(root: Path) -> dict[int, dict]:
    """Collection id → ``collection_metadata.json``."""
    return revision.collection_sidecars(root, None)
