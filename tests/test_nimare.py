"""``nv-datalad export nimare`` / ``nv_datalad.to_nimare``: a dataset version as NiMARE input.

The corpus is the demo emulator's, edited the way uploaders label their maps: in collection
6618 three beta maps get a variance map of the same ``contrast_definition`` (the F maps, whose
voxels are positive), in 8076 the "other" map becomes the beta of its variance map. So the
export meets every case: z and t maps, beta+varcope pairs in two collections, a z+t pair,
atlases, masks and an F map NiMARE cannot use, and an image without a sample size.
"""

from __future__ import annotations

import gc
import json
import sys
import warnings

import pytest
from helpers import build, clone, git, nv, tags, write_spec

import nv_datalad
from nv_datalad.consumers import nimare

COLLECTIONS = [35, 63, 6618]  # Z/T maps; atlases and masks; F, beta, Z and T maps
NO_SUBJECTS = 112  # its number_of_subjects is removed on the server


def _label_pairs(emu) -> list[int]:
    """Relabel maps as the module docstring says; returns the two 8076 image ids to build."""
    images = emu.images
    in_6618 = {i: r["map_type"] for i, r in images.items() if r["collection_id"] == 6618}
    betas = sorted(i for i, t in in_6618.items() if t == "univariate-beta map")
    f_maps = sorted(i for i, t in in_6618.items() if t == "F map")
    for run, (beta, f_map) in enumerate(zip(betas[:3], f_maps[:3], strict=True), start=1):
        emu.mutate_metadata(beta, contrast_definition=f"story vs math run {run}",
                            number_of_subjects=40)
        emu.mutate_metadata(f_map, map_type="variance",
                            contrast_definition=f"story vs math run {run}", number_of_subjects=40)
    z_maps = sorted(i for i, t in in_6618.items() if t == "Z map")
    t_maps = sorted(i for i, t in in_6618.items() if t == "T map")
    emu.mutate_metadata(z_maps[0], contrast_definition="sentences")  # a z+t pair
    emu.mutate_metadata(t_maps[0], contrast_definition="sentences")
    for single in (betas[3], z_maps[1], t_maps[1]):
        emu.mutate_metadata(single, contrast_definition="N/A")
    in_8076 = {r["map_type"]: i for i, r in images.items() if r["collection_id"] == 8076}
    emu.mutate_metadata(in_8076["other"], map_type="univariate-beta map",
                        contrast_definition="reward", number_of_subjects=90)
    emu.mutate_metadata(in_8076["variance"], contrast_definition="reward",
                        number_of_subjects=90)
    emu.mutate_metadata(NO_SUBJECTS, number_of_subjects=None)
    return [in_8076["other"], in_8076["variance"]]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(dataset, clone with content): v1.0.0 as above; the next version adds a collection of
    2 Z maps (the spec names it: a new major version)."""
    from nv_datalad.emulator import Emulator

    tmp = tmp_path_factory.mktemp("nimare")
    with Emulator(corpus="demo", port=0) as emu:
        pair = _label_pairs(emu)
        spec, ds = build(tmp, emu.url, collections={"ids": COLLECTIONS}, images={"ids": pair})
        added = emu.add_collection(n_images=2)
        write_spec(tmp, emu.url, collections={"ids": [*COLLECTIONS, added]},
                   images={"ids": pair})
        assert nv("build", spec, "-d", ds) == 0
    copy = clone(ds, tmp / "clone")
    assert nv("get", "-d", copy, "--where", "id>=0") == 0  # from the origin, not the web
    return ds, copy


def _tsv_rows(ds, version: str = "HEAD") -> list[dict[str, str]]:
    lines = git(ds, "show", f"{version}:images.tsv").splitlines()
    header = lines[0].split("\t")
    return [dict(zip(header, line.split("\t"), strict=True)) for line in lines[1:]]


def _mask():
    from nilearn.datasets import load_mni152_brain_mask

    return load_mni152_brain_mask(resolution=4)  # a coarse mask keeps the fits quick


def test_export_runs_stouffers_and_dersimonian_laird(exported):
    from nilearn.masking import apply_mask
    from nimare.meta.ibma import DerSimonianLaird, Stouffers

    _, copy = exported
    rows = _tsv_rows(copy)
    dset = nv_datalad.to_nimare(copy, mask=_mask())

    usable = [r for r in rows if r["collection_id"] != "63" and r["map_type"] != "F map"]
    assert len(rows) == 33 and len(usable) == 27  # 5 atlases/masks and one F map left out
    assert set(dset.images["study_id"]) == {f"collection-{c}" for c in
                                            {r["collection_id"] for r in usable}}
    image_cells = dset.images[["z", "t", "beta", "varcope"]].notna().to_numpy().sum()
    assert image_cells == len(usable)
    # 3 + 1 beta+varcope pairs and one z+t pair share a contrast: 27 images, 22 contrasts
    assert len(dset.ids) == 22
    (varcope,) = dset.get_images(ids=["collection-6618-story-vs-math-run-1"], imtype="varcope")
    assert varcope.startswith(str(copy)) and varcope.endswith(".nii.gz")
    pairs = dset.images.dropna(subset=["beta", "varcope"])
    assert sorted(pairs["study_id"]) == ["collection-6618"] * 3 + ["collection-8076"]

    meta = dset.metadata.set_index("id")
    assert meta.loc["collection-6618-story-vs-math-run-2", "sample_sizes"] == [40]
    assert meta.loc["collection-35-image-112", "sample_sizes"] is None
    latest = tags(copy)[-1]  # the second build's version
    assert set(meta["nv_datalad_tag"]) == {latest}
    commit = git(copy, "rev-parse", f"{latest}^{{commit}}").strip()
    assert set(meta["nv_datalad_commit"]) == {commit}
    dataset_id = git(copy, "config", "-f", ".datalad/config", "datalad.dataset.id").strip()
    assert set(meta["nv_datalad_dataset_id"]) == {dataset_id}

    mask = _mask()
    # nilearn runs gc.collect() per map; frozen, the session's objects are not scanned each time
    gc.freeze()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # NiMARE's Dataset deprecation and numeric notes
            z = Stouffers().fit(dset).get_map("z")
            est = DerSimonianLaird().fit(dset).get_map("est")
    finally:
        gc.unfreeze()
    assert (apply_mask(z, mask) != 0).sum() > 1000
    assert (apply_mask(est, mask) != 0).sum() > 1000


def test_cli_writes_files_nimare_reads_after_datalad_get(exported, tmp_path, capsys):
    from nimare.dataset import Dataset
    from nimare.nimads import Studyset

    _, copy = exported
    out = tmp_path / "meta" / "dataset.json"
    assert nv("export", "nimare", "-d", copy, "-o", out, "--where", "collection_id=6618") == 0
    printed = capsys.readouterr().out
    assert "1 studies, 7 contrasts, 11 images" in printed
    f_maps = [r["image_id"] for r in _tsv_rows(copy) if r["map_type"] == "F map"]
    assert f"not exported: image {f_maps[0]} (collection 6618): map type 'F map' has no " \
           "NiMARE image type" in printed

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        dset = Dataset(str(out))
    assert all(p.startswith("neurovault/collection_6618/") for p in
               dset.images["beta__relative"].dropna())
    dset.update_path(str(copy))
    paths = [p for col in ("z", "t", "beta", "varcope") for p in dset.images[col].dropna()]
    assert len(paths) == 11 and all((copy / p).resolve().is_file() for p in paths)

    nimads = tmp_path / "studyset.json"
    assert nv("export", "nimare", "-d", copy, "-o", nimads, "--format", "nimads") == 0
    studyset = Studyset(str(nimads)).update_path(str(copy))
    assert len(studyset.ids) == 22 and len(studyset.study_ids) == 4
    doc = json.loads(nimads.read_text())
    assert doc["nv_datalad"]["nv_datalad_version"] == tags(copy)[-1]
    assert sorted(u["image_id"] for u in doc["nv_datalad"]["unusable"]) == sorted(
        int(r["image_id"]) for r in _tsv_rows(copy)
        if r["collection_id"] == "63" or r["map_type"] == "F map")


def test_an_older_version_exports_what_it_held(exported):
    ds, _ = exported
    old = nimare.export(ds, version="v1.0.0")
    new = nimare.export(ds)
    assert (len(old.studies), len(old.contrasts), old.n_images) == (3, 20, 25)
    assert (len(new.studies), len(new.contrasts), new.n_images) == (4, 22, 27)
    assert old.provenance()["nv_datalad_tag"] == "v1.0.0"
    assert old.provenance()["nv_datalad_commit"] == git(ds, "rev-parse", "v1.0.0^{commit}").strip()
    assert {u.image_id for u in old.unusable} == {u.image_id for u in new.unusable}


def test_missing_sample_sizes_are_listed_or_left_out(exported, tmp_path, capsys):
    ds, _ = exported
    out = tmp_path / "n.json"
    kept = nimare.export(ds, where=["collection_id=35"])
    assert kept.without_sample_size == [NO_SUBJECTS]
    assert f"no sample size (exported without sample_sizes) for 1 image(s): {NO_SUBJECTS}" \
        in nimare.summary_lines(kept, out, "dataset")
    assert nv("export", "nimare", "-d", ds, "-o", out, "--where", "collection_id=35",
              "--require-sample-size") == 0
    printed = capsys.readouterr().out
    assert f"not exported: image {NO_SUBJECTS} (collection 35): no number_of_subjects" in printed
    assert "1 studies, 11 contrasts, 11 images" in printed
    assert f"/image_{NO_SUBJECTS}." not in out.read_text()


def test_without_nimare_the_command_says_how_to_install_it(exported, tmp_path, capsys,
                                                          monkeypatch):
    ds, _ = exported
    monkeypatch.setitem(sys.modules, "nimare", None)  # `import nimare` now fails
    out = tmp_path / "x.json"
    assert nv("export", "nimare", "-d", ds, "-o", out) == 2
    assert "install it with pip install 'nv-datalad[nimare]'" in capsys.readouterr().err
    assert not out.exists()


def test_a_selection_nimare_cannot_use_is_an_error(exported, tmp_path, capsys):
    ds, _ = exported
    assert nv("export", "nimare", "-d", ds, "-o", tmp_path / "x.json",
              "--where", "collection_id=63") == 2
    err = capsys.readouterr().err
    assert "can be used by NiMARE: 5 unusable image(s)" in err and "an atlas" in err
