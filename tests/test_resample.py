"""Resampled derivatives: nilearn's grid and values, deterministic bytes, datalad run records.

Everything is real: nibabel writes the sources, nilearn is the oracle, git-annex stores the
files and ``datalad run`` / ``datalad rerun`` record and replay the command.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from contextlib import chdir
from pathlib import Path

import datalad.api as dl
import nibabel as nib
import numpy as np
import pytest
from helpers import git, head
from nilearn.datasets.neurovault import STD_AFFINE
from nilearn.image import resample_img

from nv_datalad.cli import main as cli_main
from nv_datalad.dataset import layout
from nv_datalad.derivatives import grid as gr
from nv_datalad.derivatives import manifest as mf
from nv_datalad.derivatives import resample as rs
from nv_datalad.records import Status

PREFIX = [sys.executable, "-m", "nv_datalad.cli", "resample"]


class Spec:
    """Stands in for ``nv_datalad.spec.ResampleSpec``: only its attributes are read."""

    def __init__(
        self, voxel_size=3.0, interpolation="continuous", target_affine=None, target_shape=None
    ):
        self.voxel_size = voxel_size
        self.interpolation = interpolation
        self.target_affine = target_affine
        self.target_shape = target_shape


def synthetic_image(seed: int, shape=(18, 22, 18), voxel=8.0) -> nib.Nifti1Image:
    """A smooth positive/negative blob map on a coarse MNI-like grid (small: tests stay fast)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij"))
    centre = rng.uniform(-0.5, 0.5, size=(3, 1, 1, 1))
    data = 4 * np.exp(-((grid - centre) ** 2).sum(0) * 3) - 1 + rng.normal(0, 0.1, shape)
    affine = np.diag([voxel, voxel, voxel, 1.0])
    affine[:3, 3] = [-72.0, -106.0, -60.0]
    img = nib.Nifti1Image(data.astype("float32"), affine)
    img.header.set_xyzt_units("mm")
    return img


def write_sources(root: Path, ids: list[tuple[int, int]], garbage: tuple[int, int] | None = None):
    for cid, iid in ids:
        path = root / layout.image_file(cid, iid)
        path.parent.mkdir(parents=True, exist_ok=True)
        synthetic_image(iid).to_filename(path)
    if garbage is not None:
        path = root / layout.image_file(*garbage)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes(range(256)) * 8)  # binary: goes to the annex, not a NIfTI


def annex_keys(root: Path) -> dict[str, str]:
    out = git(root, "annex", "find", "--format=${file}\t${key}\n")
    return dict(line.split("\t") for line in out.splitlines())


def make_dataset(root: Path, ids, garbage=None) -> list[tuple[int, int, str, str]]:
    dl.create(str(root), cfg_proc="text2git", result_renderer="disabled")
    write_sources(root, ids, garbage)
    dl.save(dataset=str(root), message="images", result_renderer="disabled")
    keys = annex_keys(root)
    all_ids = [*ids, *([garbage] if garbage else [])]
    return [
        (c, i, str(layout.image_file(c, i)), keys[str(layout.image_file(c, i))]) for c, i in all_ids
    ]


def change_source(root: Path, item, seed: int) -> tuple[Path, str]:
    """Give an image new content in a new commit; its path and its new key."""
    source = root / item[2]
    source.unlink()
    synthetic_image(seed).to_filename(source)
    dl.save(dataset=str(root), message=f"image {item[1]} changed", result_renderer="disabled")
    new_key = annex_keys(root)[item[2]]
    assert new_key != item[3]
    return source, new_key


def derivative_bytes(root: Path, items) -> dict[str, bytes]:
    out = {}
    for cid, iid, *_ in items:
        for rel in (layout.resampled_file(cid, iid), layout.resampled_sidecar(cid, iid)):
            if (root / rel).exists():
                out[str(rel)] = (root / rel).read_bytes()
    return out


def run_cli(root: Path, rows, *options: str) -> int:
    """``nv-datalad resample`` as a user runs it from the dataset root (the CLI's ``main``,
    in this process: the datalad tests below run it as a separate command)."""
    manifest = root / "manifest.tsv"
    manifest.write_text(mf.format_manifest(rows))
    with chdir(root):
        return cli_main(["resample", "--manifest", "manifest.tsv", *options])


# --------------------------------------------------------------------------- values and grid


@pytest.mark.parametrize("interpolation", ["continuous", "linear", "nearest"])
def test_output_is_what_fetch_neurovault_resampling_writes(tmp_path, interpolation):
    write_sources(tmp_path, [(1, 5)])
    src = tmp_path / layout.image_file(1, 5)
    assert (
        run_cli(
            tmp_path,
            [mf.manifest_row(1, 5, str(layout.image_file(1, 5)), "KEY-x")],
            "--interpolation",
            interpolation,
        )
        == 0
    )

    ours = nib.load(tmp_path / layout.resampled_file(1, 5))
    # the call nilearn's _download_image_nii_file makes, with its own constant
    theirs = resample_img(img=src, target_affine=STD_AFFINE, interpolation=interpolation)
    np.testing.assert_array_equal(ours.affine, STD_AFFINE)
    assert ours.shape == theirs.shape
    np.testing.assert_allclose(ours.get_fdata(), theirs.get_fdata())
    # the NIfTI stream itself (header included) is what nilearn's to_filename would write
    theirs.to_filename(tmp_path / "nilearn.nii.gz")
    assert gzip.decompress(
        (tmp_path / layout.resampled_file(1, 5)).read_bytes()
    ) == gzip.decompress((tmp_path / "nilearn.nii.gz").read_bytes())


def test_voxel_size_keeps_nilearn_origin_and_explicit_grid_overrides(tmp_path):
    write_sources(tmp_path, [(1, 5), (1, 6)])
    src = tmp_path / layout.image_file(1, 5)
    row5 = mf.manifest_row(1, 5, str(layout.image_file(1, 5)), "K5")
    row6 = mf.manifest_row(1, 6, str(layout.image_file(1, 6)), "K6")

    assert run_cli(tmp_path, [row5], "--voxel-size", "4") == 0
    four = nib.load(tmp_path / row5.output)
    expected = np.diag([4.0, 4.0, 4.0, 1.0])
    expected[:3, 3] = (-90, -126, -72)
    np.testing.assert_array_equal(four.affine, expected)

    affine = [[2.5, 0, 0, -80], [0, 2.5, 0, -100], [0, 0, 2.5, -50], [0, 0, 0, 1]]
    assert (
        run_cli(
            tmp_path,
            [row6],
            "--voxel-size",
            "4",
            "--interpolation",
            "nearest",
            "--target-affine",
            json.dumps(affine),
            "--target-shape",
            "[20, 30, 25]",
        )
        == 0
    )
    explicit = nib.load(tmp_path / row6.output)
    oracle = resample_img(
        img=str(tmp_path / layout.image_file(1, 6)),
        target_affine=np.array(affine),
        target_shape=(20, 30, 25),
        interpolation="nearest",
    )
    assert explicit.shape == (20, 30, 25)
    np.testing.assert_array_equal(explicit.affine, np.array(affine))
    np.testing.assert_allclose(explicit.get_fdata(), oracle.get_fdata())
    sidecar = json.loads((tmp_path / row6.sidecar).read_text())
    assert sidecar["target_shape"] == [20, 30, 25]
    assert sidecar["interpolation"] == "nearest"
    assert nib.load(src).shape == (18, 22, 18)  # the source is left alone


def test_grid_options_are_validated():
    assert gr.target_grid(Spec(voxel_size=2)).affine[0] == (2.0, 0.0, 0.0, -90.0)
    with pytest.raises(ValueError, match="interpolation"):
        gr.target_grid(Spec(interpolation="cubic"))
    with pytest.raises(ValueError, match="target_affine"):
        gr.target_grid(Spec(target_shape=(10, 10, 10)))
    with pytest.raises(ValueError, match="voxel_size"):
        gr.target_grid(Spec(voxel_size=0))


def test_recorded_command_round_trips_the_grid():
    for spec in (
        Spec(),
        Spec(voxel_size=2, interpolation="linear"),
        Spec(target_affine=np.diag([2.0, 2, 2, 1]).tolist(), target_shape=(5, 6, 7)),
    ):
        grid = gr.target_grid(spec)
        cmd = rs.command_args("m.tsv", grid, 3, prefix=["nv-datalad", "resample"])
        assert cmd[:2] == ["nv-datalad", "resample"]
        parser = __import__("argparse").ArgumentParser()
        rs.add_arguments(parser)
        args = parser.parse_args(cmd[2:])
        assert (
            gr.make_grid(args.voxel_size, args.interpolation, args.target_affine, args.target_shape)
            == grid
        )
        assert args.jobs == 3


# --------------------------------------------------------------------------- manifests


def test_manifest_rows_only_point_inside_the_layout():
    row = mf.manifest_row(3, 7, "neurovault/collection_3/image_7.nii", "MD5E-s1--abc.nii")
    assert row.output == "neurovault/collection_3/image_7_resampled.nii.gz"
    assert mf.parse_manifest(mf.format_manifest([row])) == [row]
    for bad in (
        "../../etc/passwd",
        "neurovault/collection_3/image_8.nii.gz",
        "/neurovault/collection_3/image_7.nii.gz",
    ):
        with pytest.raises(ValueError):
            mf.manifest_row(3, 7, bad, "K")
    with pytest.raises(ValueError, match="key"):
        mf.manifest_row(3, 7, "neurovault/collection_3/image_7.nii", "bad\tkey")
    tampered = mf.ManifestRow(row.source, row.key, "../outside.nii.gz", row.sidecar)
    with pytest.raises(ValueError, match="expected"):
        mf.validate_row(tampered)


def test_command_exit_status(tmp_path):
    write_sources(tmp_path, [(1, 5)], garbage=(1, 9))
    good = mf.manifest_row(1, 5, str(layout.image_file(1, 5)), "K5")
    bad = mf.manifest_row(1, 9, str(layout.image_file(1, 9)), "K9")
    missing = mf.manifest_row(1, 4, str(layout.image_file(1, 4)), "K4")
    # everything failed: nothing could be done
    assert run_cli(tmp_path, [bad, missing]) == 1
    assert not (tmp_path / bad.output).exists()
    # partial success writes what it can and succeeds
    assert run_cli(tmp_path, [bad, good]) == 0
    assert (tmp_path / good.output).is_file() and not (tmp_path / bad.output).exists()
    # an unusable manifest is a usage error
    (tmp_path / "manifest.tsv").write_text("not\ta manifest\n")
    proc = subprocess.run(
        [*PREFIX, "--manifest", "manifest.tsv"], cwd=tmp_path, capture_output=True, text=True
    )
    assert proc.returncode == 2 and "manifest header" in proc.stderr


def test_two_runs_give_identical_bytes(tmp_path):
    items = [(1, 5), (2, 8)]
    rows = [mf.manifest_row(c, i, str(layout.image_file(c, i)), f"K{i}") for c, i in items]
    outputs = []
    for name in ("a", "b"):
        root = tmp_path / name
        write_sources(root, items)
        assert run_cli(root, rows, "-J", "2") == 0
        outputs.append(derivative_bytes(root, items))
    assert outputs[0] == outputs[1] and len(outputs[0]) == 4
    first = outputs[0][str(layout.resampled_file(1, 5))]
    assert first[4:8] == b"\0\0\0\0"  # gzip mtime field
    sidecar = json.loads(outputs[0][str(layout.resampled_sidecar(1, 5))])
    assert sidecar["source_key"] == "K5"
    assert set(sidecar["software"]) >= {"nilearn", "nibabel", "numpy"}
    assert sidecar["affine"] == STD_AFFINE.tolist()


# --------------------------------------------------------------------------- datalad run


def test_run_record_and_rerun_reproduces(tmp_path):
    ds = tmp_path / "ds"
    items = make_dataset(ds, [(1, 10), (1, 11), (2, 20)], garbage=(2, 21))
    results = rs.resample_with_provenance(ds, items, Spec(), jobs=2, command_prefix=PREFIX)

    assert [(r.image_id, r.status) for r in results] == [
        (10, Status.OK),
        (11, Status.OK),
        (20, Status.OK),
        (21, Status.ERROR),
    ]
    assert "gzip" in results[3].message  # the reason the command gave, not a generic one
    log = git(ds, "log", "-1", "--format=%B")
    assert log.startswith("[DATALAD RUNCMD]")
    record = json.loads(log.split("=== Do not change lines below ===")[1].split("^^^")[0])
    assert "nv_datalad.cli resample --manifest .nv-datalad/" in record["cmd"]
    manifest = record["cmd"].split("--manifest ")[1].split()[0]
    assert manifest in record["inputs"] and str(layout.image_file(1, 10)) in record["inputs"]
    assert str(layout.resampled_sidecar(2, 20)) in record["outputs"]
    tracked = git(ds, "ls-files", manifest)
    assert tracked.strip() == manifest
    sidecar = json.loads((ds / layout.resampled_sidecar(1, 11)).read_text())
    assert sidecar["source_key"] == items[1][3]
    assert sidecar["source"] == items[1][2]
    assert sidecar["target_affine"] == STD_AFFINE.tolist()
    # the derivative went to the annex, its sidecar to git
    assert (ds / layout.resampled_file(1, 10)).is_symlink()
    assert not (ds / layout.resampled_sidecar(1, 10)).is_symlink()

    before, commit = derivative_bytes(ds, items), head(ds)
    dl.rerun(revision=commit, dataset=str(ds), result_renderer="disabled")
    assert head(ds) == commit  # identical outputs: no new commit
    assert derivative_bytes(ds, items) == before
    assert git(ds, "status", "--porcelain") == ""

    # asking again for the same work does nothing
    again = rs.resample_with_provenance(ds, items[:3], Spec(), command_prefix=PREFIX)
    assert {r.status for r in again} == {Status.NOTNEEDED}
    assert head(ds) == commit

    # a source that changed (new key) gets a new derivative; the others are left alone
    source, new_key = change_source(ds, items[0], seed=999)
    updated = [(1, 10, items[0][2], new_key), *items[1:3]]
    results = rs.resample_with_provenance(ds, updated, Spec(), command_prefix=PREFIX)
    assert [r.status for r in results] == [Status.OK, Status.NOTNEEDED, Status.NOTNEEDED]
    sidecar = json.loads((ds / layout.resampled_sidecar(1, 10)).read_text())
    assert sidecar["source_key"] == new_key
    oracle = resample_img(img=str(source), target_affine=STD_AFFINE)
    got = nib.load(ds / layout.resampled_file(1, 10))
    np.testing.assert_allclose(got.get_fdata(), oracle.get_fdata())
    assert (ds / manifest).is_file()  # the first run's manifest stays, for its rerun


def test_rerun_of_an_old_record_names_the_key_it_really_read(tmp_path):
    """Issue 12 finding 7: rerunning an old resampling commit after the source changed
    resamples the present content, and the sidecar names that content's key, not the
    manifest's."""
    ds = tmp_path / "ds"
    items = make_dataset(ds, [(3, 30), (3, 31)])
    results = rs.resample_with_provenance(ds, items, Spec(), command_prefix=PREFIX)
    assert {r.status for r in results} == {Status.OK}
    old_run = head(ds)
    source, new_key = change_source(ds, items[0], seed=777)

    dl.rerun(revision=old_run, dataset=str(ds), result_renderer="disabled")
    assert head(ds) != old_run  # the derivative of the new content was recorded
    sidecar = json.loads((ds / layout.resampled_sidecar(3, 30)).read_text())
    assert sidecar["source_key"] == new_key
    oracle = resample_img(img=str(source), target_affine=STD_AFFINE)
    got = nib.load(ds / layout.resampled_file(3, 30))
    np.testing.assert_allclose(got.get_fdata(), oracle.get_fdata())
    unchanged = json.loads((ds / layout.resampled_sidecar(3, 31)).read_text())
    assert unchanged["source_key"] == items[1][3]

    # the build agrees the derivative is current, and a second rerun changes nothing
    current = [(3, 30, items[0][2], new_key), items[1]]
    again = rs.resample_with_provenance(ds, current, Spec(), command_prefix=PREFIX)
    assert {r.status for r in again} == {Status.NOTNEEDED}
    settled = head(ds)
    dl.rerun(revision=old_run, dataset=str(ds), result_renderer="disabled")
    assert head(ds) == settled
    assert json.loads((ds / layout.resampled_sidecar(3, 30)).read_text()) == sidecar


def test_sources_without_local_content_are_fetched(tmp_path):
    origin = tmp_path / "origin"
    items = make_dataset(origin, [(4, 40), (4, 41)])
    clone = tmp_path / "clone"
    dl.clone(source=str(origin), path=str(clone), result_renderer="disabled")
    assert not (clone / layout.image_file(4, 40)).exists()  # a symlink without content

    unknown_key = [*items[:1], (*items[1][:3], "")]  # a caller that does not know the key
    results = rs.resample_with_provenance(
        clone, unknown_key, Spec(interpolation="linear"), command_prefix=PREFIX
    )
    assert [r.status for r in results] == [Status.OK, Status.OK]
    sidecar = json.loads((clone / layout.resampled_sidecar(4, 41)).read_text())
    assert sidecar["source_key"] == items[1][3]
    got = nib.load(clone / layout.resampled_file(4, 41))
    oracle = resample_img(
        img=str(origin / layout.image_file(4, 41)), target_affine=STD_AFFINE, interpolation="linear"
    )
    np.testing.assert_allclose(got.get_fdata(), oracle.get_fdata())


def test_many_images_keep_the_command_short(tmp_path):
    ds = tmp_path / "ds"  # a manifest, 68 sources, 136 outputs: over the 200 paths inlined
    ids = [(c, 1000 + c * 100 + i) for c in (1, 2) for i in range(34)]
    items = make_dataset(ds, ids)
    results = rs.resample_with_provenance(
        ds, items, Spec(interpolation="nearest"), jobs=2, command_prefix=PREFIX
    )
    assert all(r.status == Status.OK for r in results) and len(results) == 68
    log = git(ds, "log", "-1", "--format=%B")
    assert log.startswith("[DATALAD RUNCMD]")
    assert len(log) < 2000  # the record went to .datalad/runinfo, the command is one line
    record_id = log.split("=== Do not change lines below ===")[1].split("^^^")[0].strip()
    assert (ds / ".datalad" / "runinfo" / record_id.strip('"')).exists()


# --------------------------------------------------------------------------- nilearn itself


@pytest.fixture
def nilearn_on_emulator(monkeypatch, shared_emulator):
    """nilearn's fetchers pointed at the emulator instead of neurovault.org."""
    from nilearn.datasets import neurovault as nv

    api = f"{shared_emulator.url}/api/"
    monkeypatch.setattr(nv, "_NEUROVAULT_BASE_URL", api)
    monkeypatch.setattr(nv, "_NEUROVAULT_COLLECTIONS_URL", api + "collections/")
    monkeypatch.setattr(nv, "_NEUROVAULT_IMAGES_URL", api + "images/")
    return nv


@pytest.mark.parametrize("interpolation", ["continuous", "linear", "nearest"])
def test_same_as_fetch_neurovault_resample(
    nilearn_on_emulator, shared_emulator, tmp_path, interpolation
):
    fetched = nilearn_on_emulator.fetch_neurovault(
        max_images=2,
        data_dir=str(tmp_path / "nilearn"),
        resample=True,
        interpolation=interpolation,
        verbose=0,
    )
    assert len(fetched.images) == 2
    rows = []
    for meta in fetched.images_meta:
        cid, iid = int(meta["collection_id"]), int(meta["id"])
        data = shared_emulator.image_bytes(iid)
        source = layout.image_file(cid, iid, layout.extension_for_bytes(data[:2]))
        (tmp_path / source).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / source).write_bytes(data)
        rows.append(mf.manifest_row(cid, iid, str(source), f"K{iid}"))
    assert run_cli(tmp_path, rows, "--interpolation", interpolation, "-J", "2") == 0

    for row, theirs_path in zip(rows, fetched.images, strict=True):
        ours, theirs = nib.load(tmp_path / row.output), nib.load(theirs_path)
        np.testing.assert_array_equal(ours.affine, STD_AFFINE)
        assert ours.shape == theirs.shape
        np.testing.assert_allclose(ours.get_fdata(), theirs.get_fdata())
