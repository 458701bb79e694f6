"""Resampling on realistic volumes: nilearn's loop against ``nv-datalad resample``.

The ``bench`` corpus's 15×18×15 volumes would measure nothing, so N realistic 2 mm MNI volumes
(91×109×91 float32, smooth blobs in a brain mask) are generated with the emulator's own NIfTI
generator and resampled to nilearn's 3 mm grid, continuous interpolation, by nilearn's own loop
(``resample_img`` + ``to_filename``, as ``fetch_neurovault`` does), by the bare
``nv-datalad resample --manifest`` entry point and by ``resample_with_provenance`` (one
``datalad run`` over every image: exactly what a build does).

On a shared machine the load changes between contenders, so with ``rounds`` > 1 nilearn's loop
and the ``-J 2`` ``datalad run`` are measured again, alternately, each on a fresh copy: the
report takes the ratio within each round, i.e. of two runs seconds apart.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from measure import NV_CLI, Measurement, log, measure, worker_argv

RESAMPLE_COLLECTION = 9001  # collection id of the generated volumes


@dataclass
class ResampleRun:
    n_images: int
    measurements: dict[str, Measurement] = field(default_factory=dict)
    max_abs_diff: float | None = None
    rounds: int = 1  # nilearn / prov_2 pairs: keys "nilearn", "prov_2", then "nilearn@2", ...

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ResampleRun:
        return cls(d["n_images"], {k: Measurement(**m) for k, m in d["measurements"].items()},
                   d["max_abs_diff"], d.get("rounds", 1))

    def pairs(self) -> list[tuple[Measurement, Measurement]]:
        """(nilearn loop, -J 2 datalad run) of each round, measured one after the other."""
        out = []
        for r in range(1, self.rounds + 1):
            tag = "" if r == 1 else f"@{r}"
            nl, prov = (self.measurements.get(k + tag) for k in ("nilearn", "prov_2"))
            if nl is not None and prov is not None:
                out.append((nl, prov))
        return out


def generate_volumes(root: Path, n: int) -> list[str]:
    """``n`` volumes at the dataset layout's paths; returns their relative paths."""
    from nv_datalad.dataset import layout
    from nv_datalad.emulator.nifti import GRIDS, VolumeKind, VolumeSpec, nifti_bytes, volume_data

    spec = VolumeSpec(VolumeKind.STAT, "mni2mm")
    rels = []
    for iid in range(1, n + 1):
        rel = str(layout.image_file(RESAMPLE_COLLECTION, iid))
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(nifti_bytes(volume_data(spec, 0, iid, 0), GRIDS["mni2mm"], True))
        rels.append(rel)
    return rels


def make_dataset(path: Path, source: Path) -> None:
    """A throwaway DataLad dataset holding the generated volumes (annexed, committed)."""
    import datalad.api as dl

    dl.create(path=str(path), cfg_proc="text2git", result_renderer="disabled")
    shutil.copytree(source / "neurovault", path / "neurovault")
    dl.save(dataset=str(path), message="volumes", result_renderer="disabled")


def write_manifest(root: Path, rels: Sequence[str]) -> Path:
    """A manifest for the bare ``nv-datalad resample`` entry point (no git needed)."""
    from nv_datalad.dataset import layout
    from nv_datalad.derivatives.manifest import format_manifest, manifest_row

    rows = []
    for rel in rels:
        parsed = layout.parse_image_file(Path(rel).name)
        if parsed is None:
            raise ValueError(f"not an image path of the layout: {rel}")
        rows.append(manifest_row(RESAMPLE_COLLECTION, parsed[0], rel,
                                 f"BENCH-s0--{parsed[0]}.nii.gz"))
    path = root / "manifest.tsv"
    path.write_text(format_manifest(rows))
    return path


def resampling(n: int, work: Path, env: dict[str, str], jobs_list: Sequence[int],
               rounds: int = 1) -> ResampleRun:
    """nilearn's loop, then the bare entry point and the ``datalad run`` path at each -J;
    then ``rounds - 1`` more nilearn / ``-J 2`` ``datalad run`` pairs."""
    run = ResampleRun(n, rounds=max(1, rounds))
    base = work / "resample"
    logs = base / "logs"
    logs.mkdir(parents=True)
    source = base / "source"
    log.info("generating %d 2 mm volumes", n)
    rels = generate_volumes(source, n)
    nl_out = base / "nilearn-out"
    nl_out.mkdir()
    run.measurements["nilearn"] = measure(
        "nilearn resample_img loop", n,
        worker_argv("nilearn-resample", root=str(source), sources=rels, out_dir=str(nl_out)),
        env, logs)
    bare = base / "bare"
    shutil.copytree(source, bare)
    manifest = write_manifest(bare, rels)
    for j in jobs_list:
        run.measurements[f"bare_{j}"] = measure(
            f"nv-datalad resample -J {j} (entry point)", n,
            [*NV_CLI, "resample", "--manifest", str(manifest), "-J", str(j)], env, logs,
            cwd=bare)
    for j in jobs_list:
        _provenance(run, f"prov_{j}", base / f"ds-J{j}", source, j, env, logs)
    for r in range(2, run.rounds + 1):
        out = base / f"nilearn-out-{r}"
        out.mkdir()
        run.measurements[f"nilearn@{r}"] = measure(
            f"nilearn resample_img loop (round {r})", n,
            worker_argv("nilearn-resample", root=str(source), sources=rels, out_dir=str(out)),
            env, logs)
        _provenance(run, f"prov_2@{r}", base / f"ds-J2-{r}", source, 2, env, logs)
    run.max_abs_diff = _max_diff(nl_out, bare, rels)
    return run


def _provenance(run: ResampleRun, key: str, ds: Path, source: Path, jobs: int,
                env: dict[str, str], logs: Path) -> None:
    """The build's path (one ``datalad run`` over every image) on a fresh dataset."""
    make_dataset(ds, source)
    tag = key.partition("@")[2]
    run.measurements[key] = measure(
        f"nv-datalad resample -J {jobs} (datalad run, as in a build)"
        + (f" (round {tag})" if tag else ""), run.n_images,
        worker_argv("provenance-resample", dataset=str(ds), jobs=jobs), env, logs)


def _max_diff(nl_out: Path, source: Path, rels: Sequence[str]) -> float | None:
    """Same work? The largest voxel difference between nilearn's and nv-datalad's output."""
    import nibabel as nib
    import numpy as np

    from nv_datalad.dataset import layout

    worst = 0.0
    for rel in rels[:3]:
        parsed = layout.parse_image_file(Path(rel).name)
        if parsed is None:
            continue
        ours = source / layout.resampled_file(RESAMPLE_COLLECTION, parsed[0])
        theirs = nl_out / f"image_{parsed[0]}_resampled.nii.gz"
        if not (ours.exists() and theirs.exists()):
            return None
        a = np.asarray(nib.load(ours).dataobj)
        b = np.asarray(nib.load(theirs).dataobj)
        if a.shape != b.shape:
            return float("inf")
        worst = max(worst, float(np.nanmax(np.abs(a - b))))
    return worst
