"""The target grid of resampling: what ``nilearn.image.resample_img`` is given.

The default is what ``nilearn.datasets.fetch_neurovault(resample=True)`` produces: a diagonal
affine with nilearn's origin and no target shape. The choices and defaults themselves live in
:mod:`nv_datalad.options`; this module only turns a spec's ``resample`` section (or the
command line of a recorded run) into a validated grid.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from nv_datalad.options import (
    DEFAULT_INTERPOLATION,
    DEFAULT_VOXEL_SIZE,
    INTERPOLATIONS,
    NILEARN_ORIGIN,
)

Affine = tuple[tuple[float, ...], ...]


class ResampleOptions(Protocol):
    """What :func:`target_grid` reads; the spec's ``ResampleSpec`` has these attributes."""

    voxel_size: float
    interpolation: str
    target_affine: Any
    target_shape: Any


@dataclass(frozen=True)
class TargetGrid:
    """Where and how to resample: the arguments given to ``nilearn.image.resample_img``."""

    affine: Affine
    shape: tuple[int, ...] | None
    interpolation: str

    def as_record(self) -> dict:
        return {
            "target_affine": [list(row) for row in self.affine],
            "target_shape": list(self.shape) if self.shape is not None else None,
            "interpolation": self.interpolation,
        }

    def is_nilearn_grid(self) -> bool:
        """True when ``voxel_size`` alone says it all (nilearn's origin, no shape), so the
        recorded command can stay ``--voxel-size N``."""
        if self.shape is not None or len(self.affine) != 4 or not self.affine[0][0] > 0:
            return False
        return self.affine == nilearn_affine(self.affine[0][0])


def nilearn_affine(voxel_size: float = DEFAULT_VOXEL_SIZE) -> Affine:
    """nilearn's ``STD_AFFINE`` with the diagonal scaled to ``voxel_size`` (origin kept)."""
    v = float(voxel_size)
    if not v > 0:
        raise ValueError(f"voxel_size must be a positive number, got {voxel_size!r}")
    x, y, z = NILEARN_ORIGIN
    return ((v, 0.0, 0.0, x), (0.0, v, 0.0, y), (0.0, 0.0, v, z), (0.0, 0.0, 0.0, 1.0))


def _as_affine(value: Any) -> Affine:
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
    interpolation: str = DEFAULT_INTERPOLATION,
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
        interpolation=getattr(options, "interpolation", DEFAULT_INTERPOLATION),
        target_affine=getattr(options, "target_affine", None),
        target_shape=getattr(options, "target_shape", None),
    )
