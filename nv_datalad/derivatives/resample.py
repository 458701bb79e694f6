"""Resampled derivatives, made by ``datalad run`` so anyone can re-create them.

The grid defaults to what ``nilearn.datasets.fetch_neurovault(resample=True)`` produces: a
diagonal 3 mm affine with origin (-90, -126, -72) and no target shape, computed with
``nilearn.image.resample_img`` called exactly as nilearn calls it (library defaults for
``force_resample`` and ``copy_header``). Outputs are written byte-for-byte deterministically
(gzip mtime 0, no file name in the gzip header, the header nibabel derives from the source),
so ``datalad rerun`` of a resampling commit reproduces identical files and makes no commit.

The work list is a committed manifest (TSV: source, key, output, sidecar) whose file name
carries a hash of its content: the recorded command stays short however many images there are,
and rerunning an old commit reads the manifest of that commit, never a later one.

The command ``nv-datalad resample --manifest PATH`` writes every derivative it can, reports the
images it could not resample, and exits non-zero only when nothing at all could be done.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from nv_datalad.dataset import layout
from nv_datalad.dataset.repo import write_atomic
from nv_datalad.records import Result, Status

lgr = logging.getLogger(__name__)

ACTION = "resample"
INTERPOLATIONS = ("continuous", "linear", "nearest")
#: nilearn's ``STD_AFFINE`` origin (``fetch_neurovault(resample=True)``).
NILEARN_ORIGIN = (-90.0, -126.0, -72.0)
DEFAULT_VOXEL_SIZE = 3.0
MANIFEST_COLUMNS = ("source", "key", "output", "sidecar")
DEFAULT_COMMAND = ("nv-datalad", "resample")
#: Beyond this many recorded paths the run record goes to ``.datalad/runinfo`` instead of the
#: commit message, so ``git log`` stays readable for builds of thousands of images.
RECORD_INLINE_LIMIT = 200
#: Side channel (not part of the recorded command) through which the command tells
#: :func:`resample_with_provenance` why images failed.
REPORT_ENV = "NV_DATALAD_RESAMPLE_REPORT"
GZIP_LEVEL = 6


class ResampleOptions(Protocol):
    """What :func:`target_grid` reads; ``nv_datalad.spec.ResampleSpec`` has these attributes."""

    voxel_size: float
    interpolation: str
    target_affine: Any
    target_shape: Any


@dataclass(frozen=True)
class TargetGrid:
    """Where and how to resample: the arguments given to ``nilearn.image.resample_img``."""

    affine: tuple[tuple[float, ...], ...]
    shape: tuple[int, ...] | None
    interpolation: str

    def as_record(self) -> dict:
        return {
            "target_affine": [list(row) for row in self.affine],
            "target_shape": list(self.shape) if self.shape is not None else None,
            "interpolation": self.interpolation,
        }


@dataclass(frozen=True)
class ManifestRow:
    """One image to resample; all paths relative to the dataset root (POSIX)."""

    source: str
    key: str
    output: str
    sidecar: str


@dataclass(frozen=True)
class Outcome:
    """What the command did with one manifest row."""

    output: str
    ok: bool
    message: str = ""


# --------------------------------------------------------------------------- target grid


def nilearn_affine(voxel_size: float = DEFAULT_VOXEL_SIZE) -> tuple[tuple[float, ...], ...]:
    """nilearn's ``STD_AFFINE`` with the diagonal scaled to ``voxel_size`` (origin kept)."""
    v = float(voxel_size)
    if not v > 0:
        raise ValueError(f"voxel_size must be a positive number, got {voxel_size!r}")
    x, y, z = NILEARN_ORIGIN
    return ((v, 0.0, 0.0, x), (0.0, v, 0.0, y), (0.0, 0.0, v, z), (0.0, 0.0, 0.0, 1.0))


def _as_affine(value: Any) -> tuple[tuple[float, ...], ...]:
    rows = tuple(tuple(float(c) for c in row) for row in value)
    if len(rows) not in (3, 4) or any(len(r) != len(rows) for r in rows):
        raise ValueError(f"target_affine must be a 3x3 or 4x4 matrix, got {value!r}")
    return rows


def _as_shape(value: Any) -> tuple[int, ...]:
    shape = tuple(int(s) for s in value)
    if len(shape) != 3 or any(s <= 0 for s in shape):
        raise ValueError(f"target_shape must be three positive integers, got {value!r}")
    return shape


def make_grid(
    voxel_size: float = DEFAULT_VOXEL_SIZE,
    interpolation: str = "continuous",
    target_affine: Any = None,
    target_shape: Any = None,
) -> TargetGrid:
    """Validate options into a grid; an explicit affine (+ shape) overrides ``voxel_size``."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(
            f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}"
        )
    if target_affine is None:
        if target_shape is not None:
            raise ValueError("target_shape needs target_affine (nilearn refuses a shape alone)")
        return TargetGrid(nilearn_affine(voxel_size), None, interpolation)
    affine = _as_affine(target_affine)
    shape = _as_shape(target_shape) if target_shape is not None else None
    if shape is not None and len(affine) == 3:
        raise ValueError("target_shape needs a 4x4 target_affine")
    return TargetGrid(affine, shape, interpolation)


def target_grid(options: ResampleOptions | None) -> TargetGrid:
    """The grid for a spec's ``resample`` section (any object with its four attributes)."""
    if options is None:
        return make_grid()
    return make_grid(
        voxel_size=getattr(options, "voxel_size", DEFAULT_VOXEL_SIZE),
        interpolation=getattr(options, "interpolation", "continuous"),
        target_affine=getattr(options, "target_affine", None),
        target_shape=getattr(options, "target_shape", None),
    )


# --------------------------------------------------------------------------- manifest


def _check_key(key: str) -> str:
    if not key or any(ch in key for ch in "\t\r\n\0") or "/" in key:
        raise ValueError(f"not a git-annex key: {key!r}")
    return key


def manifest_row(collection_id: int, image_id: int, source: str, key: str) -> ManifestRow:
    """A row whose paths all come from ids, so the manifest can never point outside the tree.

    ``source`` must be the image's layout path (``.nii.gz`` or ``.nii``).
    """
    allowed = {
        str(layout.image_file(collection_id, image_id, ext)) for ext in layout.NIFTI_EXTENSIONS
    }
    source = str(PurePosixPath(source))
    if source not in allowed:
        raise ValueError(
            f"source {source!r} is not the layout path of image {image_id} "
            f"in collection {collection_id}"
        )
    return ManifestRow(
        source=source,
        key=_check_key(key),
        output=str(layout.resampled_file(collection_id, image_id)),
        sidecar=str(layout.resampled_sidecar(collection_id, image_id)),
    )


def validate_row(row: ManifestRow) -> ManifestRow:
    """Re-derive a row read from a (possibly hand-edited) manifest from its source path."""
    src = PurePosixPath(row.source)
    parsed = layout.parse_image_file(src.name)
    cid = layout.parse_collection_dir(src.parent.name)
    if parsed is None or cid is None or src.parent.parent != PurePosixPath(layout.NEUROVAULT_DIR):
        raise ValueError(f"source {row.source!r} is not an image path of the dataset layout")
    expected = manifest_row(cid, parsed[0], row.source, row.key)
    if expected != row:
        raise ValueError(
            f"manifest row for {row.source!r} names outputs {row.output!r}, {row.sidecar!r}; "
            f"expected {expected.output!r}, {expected.sidecar!r}"
        )
    return row


def format_manifest(rows: Sequence[ManifestRow]) -> str:
    """TSV text, rows sorted by source path so the same work gives the same bytes."""
    lines = ["\t".join(MANIFEST_COLUMNS)]
    for row in sorted(rows, key=lambda r: r.source):
        lines.append("\t".join((row.source, row.key, row.output, row.sidecar)))
    return "\n".join(lines) + "\n"


def parse_manifest(text: str) -> list[ManifestRow]:
    """Rows of a manifest; raises ``ValueError`` naming the bad line."""
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines or tuple(lines[0].split("\t")) != MANIFEST_COLUMNS:
        raise ValueError(f"manifest header must be {' '.join(MANIFEST_COLUMNS)} (tab-separated)")
    rows = []
    for number, line in enumerate(lines[1:], start=2):
        fields = line.split("\t")
        if len(fields) != len(MANIFEST_COLUMNS):
            raise ValueError(f"manifest line {number}: expected 4 tab-separated fields")
        rows.append(ManifestRow(*fields))
    return rows


def manifest_relpath(text: str) -> str:
    """Content-addressed manifest name next to ``layout.RESAMPLE_MANIFEST``.

    A fixed name would be overwritten by the next build, and ``datalad rerun`` of an older
    resampling commit would then recompute the newer build's images instead of its own.
    """
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]
    base = PurePosixPath(layout.RESAMPLE_MANIFEST)
    return str(base.with_name(f"{base.stem}-{digest}{base.suffix}"))


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
        (base / row.output).parent.mkdir(parents=True, exist_ok=True)
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
    parser.add_argument("--interpolation", choices=INTERPOLATIONS, default="continuous")
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


def _write_report(outcomes: Sequence[Outcome]) -> None:
    target = os.environ.get(REPORT_ENV)
    if not target:
        return
    failures = {o.output: o.message for o in outcomes if not o.ok}
    Path(target).write_text(json.dumps(failures, sort_keys=True))


def main_from_args(args: argparse.Namespace) -> int:
    """Resample a manifest. 0: something was done (or nothing to do); 1: every image failed;
    2: unusable options or manifest."""
    try:
        grid = make_grid(args.voxel_size, args.interpolation, args.target_affine, args.target_shape)
        rows = parse_manifest(Path(args.manifest).read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError) as exc:
        lgr.error("resample: %s", exc)
        return 2
    outcomes = run_manifest(Path.cwd(), rows, grid, jobs=max(1, args.jobs))
    _write_report(outcomes)
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
    default_affine = nilearn_affine(grid.affine[0][0]) if len(grid.affine) == 4 else None
    if grid.shape is None and grid.affine == default_affine:
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


def _lookup_keys(dataset: Path, paths: Sequence[str]) -> dict[str, str]:
    """Annex keys of files whose key the caller did not know (one batched git-annex call)."""
    from nv_datalad.dataset.annex import Annex

    return Annex(dataset).lookup_keys(paths)


def _result(
    item: tuple[int, int, str, str],
    status: Status,
    message: str = "",
    path: str | None = None,
    **extra: Any,
) -> Result:
    cid, iid = int(item[0]), int(item[1])
    return Result(
        ACTION,
        status,
        image_id=iid,
        collection_id=cid,
        path=path,
        message=message,
        extra=dict(extra),
    )


def resample_with_provenance(
    dataset: Path,
    items: Sequence[tuple[int, int, str, str]],
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
    results: dict[int, Result] = {}
    todo: list[tuple[int, ManifestRow]] = []
    known = _lookup_keys(dataset, [str(it[2]) for it in items if not it[3]])
    for index, item in enumerate(items):
        try:
            key = item[3] or known.get(str(item[2]), "")
            row = manifest_row(item[0], item[1], item[2], key)
        except ValueError as exc:
            results[index] = _result(item, Status.ERROR, str(exc))
            continue
        if _up_to_date(dataset, row, grid):
            results[index] = _result(
                item,
                Status.NOTNEEDED,
                "derivative up to date",
                path=row.output,
                sidecar=row.sidecar,
            )
        else:
            todo.append((index, row))
    if not todo:
        return [results[i] for i in range(len(items))]

    rows = [row for _, row in todo]
    text = format_manifest(rows)
    manifest = manifest_relpath(text)
    (dataset / manifest).parent.mkdir(parents=True, exist_ok=True)
    (dataset / manifest).write_text(text, encoding="utf-8")
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
        why = f"cannot commit the manifest {manifest}: {_render(unsaved[0].get('message'))}"
        for index, _row in todo:
            results[index] = _result(items[index], Status.ERROR, why)
        return [results[i] for i in range(len(items))]

    inputs = [manifest, *(r.source for r in rows)]
    outputs = [p for r in rows for p in (r.output, r.sidecar)]
    cmd = command_args(manifest, grid, jobs, command_prefix or DEFAULT_COMMAND)
    msg = message or f"Resample {len(rows)} images ({grid.interpolation})"
    run_results, failures = _datalad_run(dataset, cmd, inputs, outputs, msg)
    run_error = next(
        (
            r.get("message")
            for r in run_results
            if r.get("action") == "run" and r.get("status") != "ok"
        ),
        None,
    )
    for index, row in todo:
        item = items[index]
        if _up_to_date(dataset, row, grid):
            results[index] = _result(item, Status.OK, path=row.output, sidecar=row.sidecar)
        else:
            why = failures.get(row.output) or _render(run_error) or "derivative not produced"
            results[index] = _result(item, Status.ERROR, why, path=row.output)
    return [results[i] for i in range(len(items))]


def _render(message: Any) -> str:
    """DataLad messages may be ``(format, *args)`` tuples."""
    if isinstance(message, tuple) and message:
        try:
            return str(message[0]) % tuple(message[1:])
        except TypeError:
            return " ".join(str(m) for m in message)
    return str(message) if message else ""


def _datalad_run(
    dataset: Path, cmd: list[str], inputs: list[str], outputs: list[str], message: str
) -> tuple[list[dict], dict[str, str]]:
    """``datalad run`` from the dataset root; returns its results and the per-image failures
    the command reported through :data:`REPORT_ENV` (a side channel outside the record)."""
    import datalad.api as dl
    from datalad.utils import chpwd

    with tempfile.TemporaryDirectory(prefix="nv-datalad-resample-") as tmp:
        report = Path(tmp) / "failures.json"
        old = os.environ.get(REPORT_ENV)
        os.environ[REPORT_ENV] = str(report)
        try:
            with chpwd(str(dataset)):
                results = dl.run(
                    cmd=cmd,
                    dataset=str(dataset),
                    inputs=inputs,
                    outputs=outputs,
                    message=message,
                    explicit=True,
                    sidecar=True if len(inputs) + len(outputs) > RECORD_INLINE_LIMIT else None,
                    result_renderer="disabled",
                    on_failure="ignore",
                    return_type="list",
                )
        finally:
            if old is None:
                os.environ.pop(REPORT_ENV, None)
            else:
                os.environ[REPORT_ENV] = old
        try:
            failures = json.loads(report.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            failures = {}
    for res in results:
        if res.get("status") not in ("ok", "notneeded"):
            lgr.info(
                "datalad %s %s: %s",
                res.get("action"),
                res.get("status"),
                _render(res.get("message")),
            )
    return results, failures
