"""Deterministic NIfTI files for the emulator.

Volumes are smooth sums of separable Gaussian blobs inside a brain-shaped ellipsoid, drawn from
numpy's seeded Generator keyed on (corpus seed, image id, revision): the same key always gives
the same bytes, and a new revision gives new bytes. Values are quantised to 1/4096 so tiny
floating-point differences between machines cannot change the file. Gzip runs with ``mtime=0``
so the compressed bytes are reproducible too (level 1: a demo corpus builds in a
second; the sizes stay realistic).

One real NeuroVault upload is at hand (nilearn's sample motor map, image 10426); it is read from
nilearn's installation at runtime and served byte for byte.
"""

from __future__ import annotations

import gzip
import importlib.util
import logging
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

_QUANTUM = 4096.0


class VolumeKind(StrEnum):
    """What the voxel values mean, which decides their range and dtype."""

    STAT = "stat"  # signed statistic (Z/T/beta/...)
    POSITIVE = "positive"  # F / chi-squared / variance
    PVALUE = "pvalue"  # values in (0, 1)
    THRESHOLDED = "thresholded"  # signed statistic, zero below |3.1|
    LABELS = "labels"  # integer parcels (atlas, parcellation)
    MASK = "mask"  # 0/1 ROI
    ANATOMICAL = "anatomical"  # positive intensities
    SAMPLE = "sample"  # nilearn's real upload: bytes come from disk


@dataclass(frozen=True)
class Grid:
    """A voxel grid: shape and a diagonal affine (voxel sizes with signs, and the origin)."""

    name: str
    shape: tuple[int, int, int]
    zooms: tuple[float, float, float]
    origin: tuple[float, float, float]

    def affine(self) -> np.ndarray:
        aff = np.eye(4)
        aff[0, 0], aff[1, 1], aff[2, 2] = self.zooms
        aff[:3, 3] = self.origin
        return aff


GRIDS: dict[str, Grid] = {
    # nilearn's / FSL's 2 mm MNI grid.
    "mni2mm": Grid("mni2mm", (91, 109, 91), (-2.0, 2.0, 2.0), (90.0, -126.0, -72.0)),
    # The grid of the real sample map (SPM-style 3 mm MNI).
    "mni3mm": Grid("mni3mm", (53, 63, 46), (-3.0, 3.0, 3.0), (78.0, -112.0, -50.0)),
    # A coarse MNI grid to keep the demo light.
    "mni4mm": Grid("mni4mm", (40, 48, 40), (-4.0, 4.0, 4.0), (78.0, -112.0, -70.0)),
    # Native-space EPI (not MNI): anisotropic voxels, scanner origin.
    "native": Grid("native", (48, 48, 30), (3.5, 3.5, 4.0), (-84.0, -95.0, -40.0)),
    # Tiny grid for the large "bench" corpus: metadata scale matters there, not voxels.
    "bench": Grid("bench", (15, 18, 15), (-12.0, 12.0, 12.0), (84.0, -120.0, -80.0)),
    # Smallest useful volume (a few hundred bytes): the bench corpus with ``tiny`` measures
    # repository cost, not bytes.
    "tiny": Grid("tiny", (4, 4, 4), (-40.0, 40.0, 40.0), (60.0, -80.0, -60.0)),
}


@dataclass(frozen=True)
class VolumeSpec:
    """Everything that determines an image's bytes (with the revision)."""

    kind: VolumeKind
    grid: str
    compressed: bool = True


def _blobs(rng: np.random.Generator, shape: tuple[int, int, int], count: int) -> list[np.ndarray]:
    """Separable Gaussian blobs: cheap even on a 2 mm grid (outer product of three 1-D bells)."""
    axes = [np.arange(n, dtype=np.float64) for n in shape]
    blobs = []
    for _ in range(count):
        centre = rng.uniform(0.25, 0.75, 3) * np.array(shape)
        sigma = rng.uniform(0.05, 0.12) * min(shape)
        bells = [
            np.exp(-((ax - c) ** 2) / (2 * sigma**2)).astype(np.float32)
            for ax, c in zip(axes, centre, strict=True)
        ]
        blobs.append(bells[0][:, None, None] * bells[1][None, :, None] * bells[2][None, None, :])
    return blobs


def _brain_mask(shape: tuple[int, int, int]) -> np.ndarray:
    """An ellipsoid filling most of the box: real maps are zero outside the brain."""
    x, y, z = ((np.arange(n, dtype=np.float64) - (n - 1) / 2) / (n * 0.45) for n in shape)
    return (x[:, None, None] ** 2 + y[None, :, None] ** 2 + z[None, None, :] ** 2) <= 1.0


def _signed_field(rng: np.random.Generator, shape: tuple[int, int, int]) -> np.ndarray:
    blobs = _blobs(rng, shape, 6)
    amplitudes = rng.normal(0.0, 4.0, len(blobs))
    field = np.zeros(shape, dtype=np.float32)
    for amplitude, blob in zip(amplitudes, blobs, strict=True):
        field += np.float32(amplitude) * blob
    field += np.float32(0.3) * rng.standard_normal(shape, dtype=np.float32)
    return field


def volume_data(spec: VolumeSpec, seed: int, image_id: int, revision: int) -> np.ndarray:
    """The voxel array of one image revision (pure function of its arguments)."""
    if spec.kind is VolumeKind.SAMPLE:
        raise ValueError("the sample image is read from nilearn, not generated")
    grid = GRIDS[spec.grid]
    shape = grid.shape
    rng = np.random.default_rng([seed, image_id, revision])
    kind = spec.kind
    if spec.grid == "tiny":
        # 64 voxels carry no anatomy: plain seeded noise, a fraction of the cost of blobs.
        field = rng.normal(0.0, 3.0, shape).astype(np.float32)
        mask = np.ones(shape, dtype=bool)
        if kind is VolumeKind.LABELS:
            return (np.abs(field).astype(np.int16) % 8 + 1).astype(np.int16)
        if kind is VolumeKind.MASK:
            return (field > 0).astype(np.uint8)
    else:
        mask = _brain_mask(shape)
        if kind is VolumeKind.LABELS:
            blobs = np.stack(_blobs(rng, shape, 8))
            labels = (np.argmax(blobs, axis=0) + 1).astype(np.int16)
            labels[~mask] = 0
            return labels
        if kind is VolumeKind.MASK:
            roi = np.add(*_blobs(rng, shape, 2)) > 0.3
            return (roi & mask).astype(np.uint8)
        field = _signed_field(rng, shape)
    if kind is VolumeKind.POSITIVE:
        field = field**2 / 4.0
    elif kind is VolumeKind.PVALUE:
        field = 1.0 / (1.0 + np.exp(np.abs(field)))
    elif kind is VolumeKind.THRESHOLDED:
        field[np.abs(field) < 3.1] = 0.0
    elif kind is VolumeKind.ANATOMICAL:
        field = 400.0 + 60.0 * field
    field[~mask] = 0.0
    return (np.round(field * np.float32(_QUANTUM)) / np.float32(_QUANTUM)).astype(np.float32)


@lru_cache(maxsize=64)
def _header_bytes(grid_name: str, dtype: str) -> bytes:
    """The 352 bytes before the voxels (header + empty extension flag) for a grid and dtype.

    They depend on nothing else, so nibabel builds them once and every image reuses them:
    the bench corpus then costs one array-to-bytes per image instead of a header rebuild.
    """
    import nibabel as nib

    grid = GRIDS[grid_name]
    zeros = np.zeros(grid.shape, dtype=dtype)
    img = nib.Nifti1Image(zeros, grid.affine())
    img.header.set_xyzt_units("mm")
    img.header["descrip"] = b"nv-datalad emulator"
    raw = img.to_bytes()
    return raw[: len(raw) - zeros.nbytes]


def nifti_bytes(data: np.ndarray, grid: Grid, compressed: bool) -> bytes:
    """Serialise a volume as NIfTI-1 (gzip with mtime 0 when ``compressed``)."""
    if data.shape != grid.shape:
        raise ValueError(f"volume shape {data.shape} does not match grid {grid.name}")
    raw = _header_bytes(grid.name, data.dtype.str) + data.tobytes(order="F")
    return gzip.compress(raw, compresslevel=1, mtime=0) if compressed else raw


@lru_cache(maxsize=4096)
def image_bytes(spec: VolumeSpec, seed: int, image_id: int, revision: int) -> bytes:
    """The file one image revision serves. Cached per process: it is a pure function, and the
    tests build many emulators over the same corpus."""
    if spec.kind is VolumeKind.SAMPLE:
        if revision == 0:
            return sample_image_bytes()
        # A content mutation of the real map: serve a generated statistic map instead.
        spec = VolumeSpec(VolumeKind.STAT, "mni3mm", compressed=True)
    data = volume_data(spec, seed, image_id, revision)
    return nifti_bytes(data, GRIDS[spec.grid], spec.compressed)


def sample_image_path() -> Path:
    """Where nilearn keeps its copy of NeuroVault image 10426.

    Found through the package's location without importing ``nilearn.datasets`` (which pulls in
    scikit-learn and takes seconds); falls back to nilearn's own accessor if the layout moved.
    """
    spec = importlib.util.find_spec("nilearn")
    if spec is not None and spec.origin:
        path = Path(spec.origin).parent / "datasets" / "data" / "image_10426.nii.gz"
        if path.is_file():
            return path
    from nilearn.datasets import load_sample_motor_activation_image

    return Path(load_sample_motor_activation_image())


@lru_cache(maxsize=1)
def sample_image_bytes() -> bytes:
    """nilearn's shipped copy of NeuroVault image 10426, byte for byte."""
    path = sample_image_path()
    logger.debug("serving nilearn's sample map from %s", path)
    return path.read_bytes()
