"""Resampled derivatives, made by ``datalad run`` so anyone can re-create them.

``resample_img`` is called exactly as ``nilearn.datasets.fetch_neurovault(resample=True)``
calls it (library defaults for ``force_resample`` and ``copy_header``), on the grid of
:mod:`~nv_datalad.derivatives.grid`. Outputs are written byte-for-byte deterministically (gzip
mtime 0, no file name in the gzip header, the header nibabel derives from the source), so
``datalad rerun`` of a resampling commit reproduces identical files and makes no commit.

The command ``nv-datalad resample --manifest PATH`` (the manifest:
:mod:`~nv_datalad.derivatives.manifest`) writes every derivative it can, reports the images it
could not resample, and exits non-zero only when nothing at all could be done.

Which content was resampled: the command looks up, in one batch, the git-annex key of every
source as it is when the command runs, and each sidecar records that key. ``datalad rerun`` of
an old resampling commit therefore resamples the source content of the current tree (that is
what a rerun re-executes), and when that content changed since the manifest was written the
sidecar names the key really read, never the manifest's stale one (a warning says so).
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from nv_datalad.dataset.annex import Annex
from nv_datalad.dataset.files import write_atomic
from nv_datalad.derivatives.grid import ResampleOptions, TargetGrid, make_grid, target_grid
from nv_datalad.derivatives.manifest import (
    ManifestRow,
    format_manifest,
    manifest_relpath,
    manifest_row,
    parse_manifest,
    validate_row,
)
from nv_datalad.derivatives.runrecord import datalad_run, render, write_report
from nv_datalad.options import DEFAULT_INTERPOLATION, DEFAULT_VOXEL_SIZE, INTERPOLATIONS
from nv_datalad.records import Result, Status

lgr = logging.getLogger(__name__)

ACTION = "resample"
DEFAULT_COMMAND = ("nv-datalad", "resample")
#: Side channel (not part of the recorded command) through which the command tells
#: :func:`resample_with_provenance` why images failed.
REPORT_ENV = "NV_DATALAD_RESAMPLE_REPORT"
GZIP_LEVEL = 6

#: (collection id, image id, source path, source key or "" when the caller does not know it)
Item = tuple[int, int, str, str]


@dataclass(frozen=True)
class Outcome:
    """What the command did with one manifest row."""

    output: str
    ok: bool
    message: str = ""


# --------------------------------------------------------------------------- one image


def resample_image(source: Path, grid: TargetGrid):
    """``resample_img`` called as ``fetch_neurovault(resample=True)`` calls it (path input)."""
    import numpy as np
    from nilearn.image import resample_img

    return resample_img(
        img=str(source),
        target_affine=np.array(grid.affine),
        target_shape=grid.shape,
        interpolation=grid.interpolation,
    )


def nifti_gz_bytes(img) -> bytes:
    """The image as ``.nii.gz`` bytes that depend only on the image (mtime 0, no file name)."""
    return gzip.compress(img.to_bytes(), compresslevel=GZIP_LEVEL, mtime=0)


def software_versions() -> dict[str, str]:
    """Versions that determine the output bytes (no timestamps: a rerun must be identical)."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for dist in ("nv-datalad", "nilearn", "nibabel", "numpy", "scipy"):
        try:
            versions[dist] = version(dist)
        except PackageNotFoundError:
            versions[dist] = "unknown"
    return versions


def sidecar_record(row: ManifestRow, grid: TargetGrid, img) -> dict:
    """Provenance of one derivative: where it came from, on which grid, with which software."""
    return {
        "source": row.source,
        "source_key": row.key,
        "output": row.output,
        **grid.as_record(),
        "shape": [int(s) for s in img.shape],
        "affine": [[float(c) for c in r] for r in img.affine],
        "method": "nilearn.image.resample_img",
        "software": software_versions(),
    }


def sidecar_bytes(record: dict) -> bytes:
    return (json.dumps(record, indent=2, sort_keys=True) + "\n").encode("utf-8")


def process_row(root: str, row: ManifestRow, grid: TargetGrid) -> Outcome:
    """Resample one image and write its derivative and sidecar; failures become an Outcome.

    Runs in a worker process: one image in memory per worker.
    """
    base = Path(root)
    try:
        validate_row(row)
        source = base / row.source
        if not source.exists():
            return Outcome(row.output, False, "source content not present (datalad get it)")
        img = resample_image(source, grid)
        data = nifti_gz_bytes(img)
        write_atomic(base / row.output, data)
        write_atomic(base / row.sidecar, sidecar_bytes(sidecar_record(row, grid, img)))
    except Exception as exc:  # any per-image failure is reported, never aborts the batch
        return Outcome(row.output, False, f"{type(exc).__name__}: {exc}")
    return Outcome(row.output, True)


def run_manifest(
    root: Path, rows: Sequence[ManifestRow], grid: TargetGrid, jobs: int = 1
) -> list[Outcome]:
    """Process every row, in a pool of ``jobs`` processes when ``jobs > 1``."""
    if jobs <= 1 or len(rows) <= 1:
        return [process_row(str(root), row, grid) for row in rows]
    import nilearn.image  # noqa: F401 - imported once here, inherited by the forked workers

    with ProcessPoolExecutor(max_workers=min(jobs, len(rows))) as pool:
        return list(pool.map(process_row, [str(root)] * len(rows), rows, [grid] * len(rows)))


def with_present_keys(root: Path, rows: Sequence[ManifestRow]) -> list[ManifestRow]:
    """Rows carrying the key of the source content as it is now (one git-annex batch).

    A manifest's key says what the run was planned for; after the source changed, a rerun
    reads the new content, and its sidecar must say so. Sources git-annex does not know (a
    plain directory, a file in git) keep the manifest's key.
    """
    present = Annex(root).lookup_keys([row.source for row in rows])
    out = []
    for row in rows:
        key = present.get(row.source, row.key)
        if key != row.key:
            lgr.warning(
                "resample: %s is now %s, not %s as the manifest says; resampling the present "
                "content and recording its key",
                row.source,
                key,
                row.key,
            )
        out.append(replace(row, key=key))
    return out


# --------------------------------------------------------------------------- command line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``nv-datalad resample`` (run from the dataset root)."""
    parser.add_argument(
        "--manifest", required=True, type=Path, help="TSV with columns source, key, output, sidecar"
    )
    parser.add_argument(
        "--voxel-size",
        type=float,
        default=DEFAULT_VOXEL_SIZE,
        help="voxel size in mm of nilearn's grid (origin -90,-126,-72)",
    )
    parser.add_argument("--interpolation", choices=INTERPOLATIONS, default=DEFAULT_INTERPOLATION)
    parser.add_argument(
        "--target-affine",
        type=json.loads,
        default=None,
        help="explicit 4x4 (or 3x3) affine as JSON; overrides --voxel-size",
    )
    parser.add_argument(
        "--target-shape",
        type=json.loads,
        default=None,
        help="explicit output shape as JSON, with --target-affine",
    )
    parser.add_argument(
        "-J", "--jobs", type=int, default=1, help="images resampled in parallel (one per process)"
    )


def main_from_args(args: argparse.Namespace) -> int:
    """Resample a manifest. 0: something was done (or nothing to do); 1: every image failed;
    2: unusable options or manifest."""
    try:
        grid = make_grid(args.voxel_size, args.interpolation, args.target_affine, args.target_shape)
        rows = parse_manifest(Path(args.manifest).read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError) as exc:
        lgr.error("resample: %s", exc)
        return 2
    root = Path.cwd()
    outcomes = run_manifest(root, with_present_keys(root, rows), grid, jobs=max(1, args.jobs))
    write_report(REPORT_ENV, {o.output: o.message for o in outcomes if not o.ok})
    failed = [o for o in outcomes if not o.ok]
    for outcome in failed:
        lgr.error("resample: %s not made: %s", outcome.output, outcome.message)
    lgr.info("resample: %d of %d images resampled", len(outcomes) - len(failed), len(outcomes))
    return 1 if outcomes and len(failed) == len(outcomes) else 0


def command_args(
    manifest: str, grid: TargetGrid, jobs: int, prefix: Sequence[str] = DEFAULT_COMMAND
) -> list[str]:
    """The command line recorded by ``datalad run``: short, whatever the number of images."""
    cmd = [*prefix, "--manifest", manifest, "--interpolation", grid.interpolation]
    if grid.is_nilearn_grid():
        cmd += ["--voxel-size", repr(grid.affine[0][0])]
    else:
        cmd += ["--target-affine", json.dumps([list(r) for r in grid.affine])]
        if grid.shape is not None:
            cmd += ["--target-shape", json.dumps(list(grid.shape))]
    return [*cmd, "-J", str(max(1, jobs))]


# --------------------------------------------------------------------------- provenance


def _up_to_date(dataset: Path, row: ManifestRow, grid: TargetGrid) -> bool:
    """The derivative exists and its sidecar says it came from this key, on this grid, with
    this software: used both to skip work already done and to tell success after a run."""
    sidecar = dataset / row.sidecar
    if not (dataset / row.output).is_symlink() and not (dataset / row.output).exists():
        return False
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    wanted = {
        "source": row.source,
        "source_key": row.key,
        **grid.as_record(),
        "software": software_versions(),
    }
    return all(record.get(k) == v for k, v in wanted.items())


def _result(
    item: Item, status: Status, message: str = "", path: str | None = None, **extra: Any
) -> Result:
    return Result(
        ACTION,
        status,
        image_id=int(item[1]),
        collection_id=int(item[0]),
        path=path,
        message=message,
        extra=dict(extra),
    )


def _plan(
    dataset: Path, items: Sequence[Item], grid: TargetGrid
) -> tuple[dict[int, Result], list[tuple[int, ManifestRow]]]:
    """Results for the items already done or unusable, and the rows still to resample.

    Keys are those of the sources as they are now (the caller's key only for sources git-annex
    does not know), the same lookup the command makes, so "up to date" means the same to both.
    """
    results: dict[int, Result] = {}
    todo: list[tuple[int, ManifestRow]] = []
    present = Annex(dataset).lookup_keys([str(it[2]) for it in items])
    for index, item in enumerate(items):
        try:
            row = manifest_row(item[0], item[1], item[2], present.get(str(item[2]), item[3]))
        except ValueError as exc:
            results[index] = _result(item, Status.ERROR, str(exc))
            continue
        if _up_to_date(dataset, row, grid):
            results[index] = _result(
                item, Status.NOTNEEDED, "derivative up to date", row.output, sidecar=row.sidecar
            )
        else:
            todo.append((index, row))
    return results, todo


def resample_with_provenance(
    dataset: Path,
    items: Sequence[Item],
    resample: ResampleOptions | None,
    jobs: int = 1,
    message: str | None = None,
    command_prefix: Sequence[str] | None = None,
) -> list[Result]:
    """Resample ``items`` (collection id, image id, source path, source key) in one
    ``datalad run``: the manifest is committed first, sources are fetched as inputs, the
    derivatives and sidecars are saved as outputs. One Result per item."""
    import datalad.api as dl

    dataset = Path(dataset).absolute()
    grid = target_grid(resample)
    results, todo = _plan(dataset, items, grid)
    if not todo:
        return [results[i] for i in range(len(items))]

    rows = [row for _, row in todo]
    text = format_manifest(rows)
    manifest = manifest_relpath(text)
    write_atomic(dataset / manifest, text.encode("utf-8"))
    saved = dl.save(
        dataset=str(dataset),
        path=[str(dataset / manifest)],
        message=f"Add resampling manifest for {len(rows)} images",
        result_renderer="disabled",
        on_failure="ignore",
        return_type="list",
    )
    unsaved = [r for r in saved if r.get("status") not in ("ok", "notneeded")]
    if unsaved:
        why = f"cannot commit the manifest {manifest}: {render(unsaved[0].get('message'))}"
        for index, _row in todo:
            results[index] = _result(items[index], Status.ERROR, why)
        return [results[i] for i in range(len(items))]

    run = datalad_run(
        dataset,
        command_args(manifest, grid, jobs, command_prefix or DEFAULT_COMMAND),
        inputs=[manifest, *(r.source for r in rows)],
        outputs=[p for r in rows for p in (r.output, r.sidecar)],
        message=message or f"Resample {len(rows)} images ({grid.interpolation})",
        report_env=REPORT_ENV,
    )
    for index, row in todo:
        item = items[index]
        if _up_to_date(dataset, row, grid):
            results[index] = _result(item, Status.OK, path=row.output, sidecar=row.sidecar)
        else:
            why = run.report.get(row.output) or run.message() or "derivative not produced"
            results[index] = _result(item, Status.ERROR, why, path=row.output)
    return [results[i] for i in range(len(items))]
