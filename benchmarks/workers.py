#!/usr/bin/env python
"""The contenders that are Python functions, each run in its own subprocess.

    python benchmarks/workers.py KIND JSON

runs ``WORKERS[KIND](**JSON)`` and prints its JSON-able result as the last stdout line, which
:func:`measure.measure` reads back. A subprocess per contender keeps interpreter start-up and
imports in the wall time and gives each its own peak memory.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import profiling


def work_nilearn(server: str, data_dir: str) -> dict:
    """nilearn's fetcher pointed at the emulator, as tests/helpers.py does it."""
    from nilearn.datasets import neurovault as nv

    api = server + "/api/"
    nv._NEUROVAULT_BASE_URL = api
    nv._NEUROVAULT_COLLECTIONS_URL = api + "collections/"
    nv._NEUROVAULT_IMAGES_URL = api + "images/"
    nv._NEUROSYNTH_FETCH_WORDS_URL = server + "/api/decode/"
    data = nv.fetch_neurovault(max_images=None, data_dir=data_dir, verbose=0)
    return {"ids": sorted(int(m["id"]) for m in data.images_meta)}


def work_plain(pairs_file: str, dest: str, jobs: int) -> dict:
    """The floor: GET every file once with ``jobs`` persistent connections, write it, done."""
    from concurrent.futures import ThreadPoolExecutor

    import requests

    pairs = json.loads(Path(pairs_file).read_text())
    local = threading.local()

    def fetch(pair: list[str]) -> int:
        url, rel = pair
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        target = Path(dest) / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with session.get(url, stream=True, timeout=120) as reply:
            reply.raise_for_status()
            with target.open("wb") as fh:
                for chunk in reply.iter_content(1 << 16):
                    fh.write(chunk)
        return target.stat().st_size

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        sizes = list(pool.map(fetch, pairs))
    return {"files": len(sizes), "bytes": sum(sizes)}


def work_addurls(table: str, dataset: str, jobs: int) -> dict:
    """The generic DataLad way: create a dataset, addurls a CSV (url, filename, metadata)."""
    import datalad.api as dl

    dl.create(path=dataset, result_renderer="disabled")
    subprocess.run(["git", "-C", dataset, "config", "annex.security.allowed-ip-addresses",
                    "127.0.0.1"], check=True)
    results = dl.addurls(urlfile=table, urlformat="{url}", filenameformat="{filename}",
                         dataset=dataset, jobs=jobs, result_renderer="disabled",
                         on_failure="ignore", return_type="list")
    added = sum(1 for r in results if r.get("action") == "addurl" and r.get("status") == "ok")
    bad = [r.get("message") for r in results if r.get("status") not in ("ok", "notneeded")]
    return {"added": added, "errors": len(bad), "first_error": str(bad[0]) if bad else None}


def work_nilearn_resample(root: str, sources: list[str], out_dir: str) -> dict:
    """nilearn's own loop: ``resample_img`` to its 3 mm STD_AFFINE, then ``to_filename``."""
    from nilearn.datasets.neurovault import STD_AFFINE
    from nilearn.image import resample_img

    for rel in sources:
        img = resample_img(img=str(Path(root) / rel), target_affine=STD_AFFINE,
                           interpolation="continuous")
        img.to_filename(str(Path(out_dir) / (Path(rel).name.split(".")[0] + "_resampled.nii.gz")))
    return {"resampled": len(sources)}


def work_provenance_resample(dataset: str, jobs: int) -> dict:
    """What the build does for derivatives: one ``datalad run`` over every image."""
    from nv_datalad.dataset import layout
    from nv_datalad.derivatives.resample import resample_with_provenance

    root = Path(dataset)
    items = []
    for path in sorted((root / layout.NEUROVAULT_DIR).glob("collection_*/image_*.nii.gz")):
        parsed = layout.parse_image_file(path.name)
        cid = layout.parse_collection_dir(path.parent.name)
        if parsed is None or cid is None:
            continue
        items.append((cid, parsed[0], str(path.relative_to(root)), ""))
    results = resample_with_provenance(root, items, None, jobs=jobs)
    on_disk = sum(1 for cid, iid, _src, _key in items
                  if (root / layout.resampled_file(cid, iid)).is_file())
    return {"images": len(items), "resampled": sum(1 for r in results if not r.failed),
            "failed": sum(1 for r in results if r.failed), "on_disk": on_disk}


WORKERS: dict[str, Callable[..., dict]] = {
    "nilearn": work_nilearn,
    "plain": work_plain,
    "addurls": work_addurls,
    "nilearn-resample": work_nilearn_resample,
    "provenance-resample": work_provenance_resample,
    "profile": profiling.work_profile,
}


def main(argv: list[str]) -> int:
    kind, params = argv
    result = WORKERS[kind](**json.loads(params))
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
