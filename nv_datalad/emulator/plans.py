"""What a corpus contains, before any record is written: image kinds and collection plans.

* ``KINDS``: the families of uploads (Z/T/F maps, masks, atlases, ...), how their records
  describe them and how their voxels look.
* ``demo_plans``: the hand-planned demo corpus, a dozen collections (~80 images) covering every
  quirk a client meets on the real server (old and new date styles, ``""`` versus null,
  ``"None / Other"``, atlases, masks, non-MNI and thresholded maps, uncompressed ``.nii`` uploads,
  duplicate and spaced file names, a private and an empty collection, image counts that disagree
  with the list) plus nilearn's real sample map as image 10426.

The ``bench`` corpus is planned in ``bench`` (columns, not one plan per image, to scale).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nv_datalad.emulator.constants import SAMPLE_IMAGE_ID
from nv_datalad.emulator.dates import DateStyle
from nv_datalad.emulator.nifti import VolumeKind

# "Now" for the synthetic corpus: every generated date is earlier, every mutation later.
SNAPSHOT = datetime(2024, 9, 2, 9, 0, 0, tzinfo=UTC)


# --------------------------------------------------------------------------------------------
# What kinds of images exist


@dataclass(frozen=True)
class ImageKind:
    """One family of uploads: how the record describes it and how its voxels look."""

    image_type: str
    map_type: str | None  # None: the field is absent (atlases have no map_type)
    volume: VolumeKind
    is_thresholded: bool | None
    not_mni: bool | None
    grid: str = "mni3mm"
    upload_stem: str = "zstat{n}"
    modality: str | None = None  # overrides the collection's modality


KINDS: dict[str, ImageKind] = {
    "Z": ImageKind("statistic_map", "Z map", VolumeKind.STAT, False, False),
    "T": ImageKind("statistic_map", "T map", VolumeKind.STAT, False, False, upload_stem="tstat{n}"),
    "F": ImageKind("statistic_map", "F map", VolumeKind.POSITIVE, False, False,
                   upload_stem="zfstat{n}"),
    "beta": ImageKind("statistic_map", "univariate-beta map", VolumeKind.STAT, False, False,
                      upload_stem="con_{n:04d}"),
    "P": ImageKind("statistic_map", "P map (given null hypothesis)", VolumeKind.PVALUE, False,
                   False, upload_stem="p_map_{n}"),
    "var": ImageKind("statistic_map", "variance", VolumeKind.POSITIVE, False, False,
                     upload_stem="varcope{n}"),
    "other": ImageKind("statistic_map", "other", VolumeKind.STAT, False, False,
                       upload_stem="map_{n}"),
    "Zthr": ImageKind("statistic_map", "Z map", VolumeKind.THRESHOLDED, True, False,
                      upload_stem="thresh_zstat{n}"),
    "Tthr": ImageKind("statistic_map", "T map", VolumeKind.THRESHOLDED, True, False,
                      upload_stem="spmT_{n:04d}_thr"),
    "Znull": ImageKind("statistic_map", "Z map", VolumeKind.STAT, False, None,
                       upload_stem="zmap_{n}"),
    "Tnull": ImageKind("statistic_map", "T map", VolumeKind.STAT, None, False,
                       upload_stem="spmT_{n:04d}"),
    "Tnative": ImageKind("statistic_map", "T map", VolumeKind.STAT, False, True, grid="native",
                         upload_stem="native_tstat{n}"),
    "roi": ImageKind("statistic_map", "ROI/mask", VolumeKind.MASK, False, False,
                     upload_stem="roi_{n}_mask"),
    "parc": ImageKind("statistic_map", "parcellation", VolumeKind.LABELS, False, False,
                      upload_stem="parcellation_{n}"),
    "anat": ImageKind("statistic_map", "anatomical", VolumeKind.ANATOMICAL, False, False,
                      upload_stem="mean_T1w_{n}", modality="Structural MRI"),
    "atlas": ImageKind("atlas", None, VolumeKind.LABELS, None, None, upload_stem="atlas_{n}"),
    "nidm": ImageKind("NIDM results statistic map", "T map", VolumeKind.STAT, False, False,
                      upload_stem="TStatistic_{n:04d}"),
    "sample": ImageKind("statistic_map", "T map", VolumeKind.SAMPLE, False, False,
                        upload_stem="image_10426"),
}  # fmt: skip

PARADIGMS: tuple[tuple[str, str], ...] = (
    # (task name, contrast)
    ("motor fMRI task paradigm", "left hand vs right hand"),
    ("finger tapping task", "tapping vs rest"),
    ("working memory fMRI task paradigm", "2-back vs 0-back"),
    ("emotion processing fMRI task paradigm", "faces vs shapes"),
    ("language processing fMRI task paradigm", "story vs math"),
    ("gambling fMRI task paradigm", "reward vs punishment"),
    ("stop signal task", "failed stop vs go"),
    ("n-back task", "load effect"),
    ("rest eyes open", "seed connectivity"),
    ("Sternberg item recognition task", "probe vs fixation"),
)
MODALITIES = ("fMRI-BOLD", "fMRI-CBF", "PET FDG", "Diffusion MRI", "MEG", "Other")
ANALYSIS_LEVELS = ("group", "single-subject", "meta-analysis", None)


# --------------------------------------------------------------------------------------------
# Plans: what a corpus contains, before records are written


@dataclass(frozen=True)
class ImagePlan:
    """One upload to make: its kind and what sets it apart from the kind's defaults."""

    kind: str
    grid: str | None = None  # None: the kind's default grid
    nii: bool = False  # uncompressed upload
    upload: str | None = None  # original upload name (before de-duplication), without extension
    name: str | None = None
    extra: tuple[tuple[str, Any], ...] = ()  # free-form uploader keys / field overrides


@dataclass(frozen=True)
class CollectionPlan:
    """One collection to make; ``images`` is empty for bench collections (see ``bench``)."""

    id: int
    name: str
    style: DateStyle
    added: datetime
    first_image_id: int
    images: tuple[ImagePlan, ...]
    analysis_level: str | None = "group"
    modality: str = "fMRI-BOLD"
    paradigm: int | None = 0  # index in PARADIGMS; None: "None / Other"
    subjects: int | None = 20
    doi: bool = True
    private: bool = False
    count_offset: int = 0  # number_of_images = live images + offset
    count_null: bool = False
    fields: tuple[tuple[str, Any], ...] = ()


def many(kind: str, n: int, **kw: Any) -> tuple[ImagePlan, ...]:
    return tuple(ImagePlan(kind, **kw) for _ in range(n))


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def demo_plans() -> tuple[CollectionPlan, ...]:
    """The hand-planned demo corpus. 57 of its 83 public images pass nilearn's default
    image terms, so nilearn and nv-datalad have something substantial to agree on."""
    old, new = DateStyle.UTC_Z, DateStyle.BERLIN
    return (
        CollectionPlan(
            35, "Motor lateralisation in healthy adults", old, utc(2015, 3, 11, 14, 2, 7),
            112,
            (
                ImagePlan("Z", upload="zstat1", extra=(("Contrast", "left > right"),)),
                ImagePlan("Z", upload="zstat1"),
                ImagePlan("Z", upload="Fig 3B_zstat1"),
                ImagePlan("Z", upload="zstat1"),
                *many("Z", 3),
                ImagePlan("Z", grid="mni2mm", upload="Fig 4A zstat2"),
                *many("Zthr", 2),
                *many("T", 2),
            ),
            paradigm=0, subjects=21, analysis_level=None,
        ),
        CollectionPlan(
            63, "Probabilistic atlas of motor regions", old, utc(2015, 6, 2, 9, 30, 0),
            262,
            (
                ImagePlan("atlas", upload="motor_atlas"),
                ImagePlan("atlas", grid="mni2mm", upload="motor_atlas"),
                ImagePlan("parc"),
                *many("roi", 2),
            ),
            analysis_level=None, paradigm=None, subjects=None, count_offset=1,
        ),
        CollectionPlan(
            457, "Single-subject finger tapping", old, utc(2016, 1, 21, 17, 23, 16),
            1031,
            (
                *many("T", 4),
                *many("T", 3, nii=True),
                ImagePlan("Tthr", nii=True),
                *many("T", 2, extra=(("subject", "sub-07"),)),
            ),
            analysis_level="single-subject", paradigm=1, subjects=1, count_offset=2,
        ),
        CollectionPlan(
            1952, "Button press localizer (nilearn sample)", new, utc(2016, 12, 9, 10, 11, 12),
            SAMPLE_IMAGE_ID,
            (
                ImagePlan(
                    "sample",
                    name="left vs right button press",
                    extra=(("description", "Real upload: nilearn's sample motor map."),),
                ),
            ),
            paradigm=0, subjects=None,
        ),
        CollectionPlan(
            2138, "Meta-analysis of working memory", new, utc(2017, 4, 3, 8, 0, 0),
            12101,
            (*many("Z", 6), *many("Zthr", 2), ImagePlan("P")),
            analysis_level="meta-analysis", paradigm=2, subjects=None, doi=False,
        ),
        CollectionPlan(
            3324, "Native-space emotion maps", new, utc(2017, 11, 20, 16, 45, 1),
            18312,
            (*many("Tnative", 4), ImagePlan("anat"), *many("Z", 2)),
            paradigm=3, subjects=16,
        ),
        CollectionPlan(
            4343, "Unpublished pilot (private)", new, utc(2018, 2, 14, 12, 0, 0),
            20405,
            many("Z", 4),
            private=True, paradigm=0, subjects=12, doi=False,
        ),
        CollectionPlan(
            5012, "Placeholder collection", new, utc(2018, 7, 1, 7, 7, 7),
            0, (), analysis_level=None, paradigm=None, subjects=None, doi=False,
        ),
        CollectionPlan(
            6618, "Language and reward F-tests", new, utc(2019, 5, 27, 13, 14, 15),
            27520,
            (*many("F", 4), *many("beta", 4), *many("Znull", 2), *many("Tnull", 2)),
            paradigm=4, subjects=48, modality="fMRI-BOLD",
        ),
        CollectionPlan(
            8076, "HCP-style motor and gambling group maps", new, utc(2020, 10, 5, 10, 0, 0),
            41044,
            (
                *many("Z", 2, grid="mni2mm"),
                *many("Z", 4, grid="mni4mm"),
                *many("Zthr", 2, grid="mni4mm"),
                *many("T", 2),
                ImagePlan("Tthr"),
                ImagePlan("other"),
                ImagePlan("var"),
                ImagePlan("nidm"),
                ImagePlan("roi"),
            ),
            paradigm=5, subjects=100, count_offset=-1,
            fields=(("journal_name", "NeuroImage"),),
        ),
        CollectionPlan(
            9820, "Motor imagery without DOI", old, utc(2018, 3, 30, 23, 59, 58),
            30077,
            (
                *many("Z", 3),
                *many("Z", 2, nii=True),
                ImagePlan("anat"),
            ),
            paradigm=0, subjects=None, doi=False,
            fields=(("description", "None"),),
        ),
        CollectionPlan(
            12093, "PET and CBF group maps", new, utc(2022, 3, 27, 0, 30, 0),
            60211,
            (
                *many("Z", 2, grid="mni4mm"),
                ImagePlan("Znull", grid="mni4mm"),
                *many("T", 2, grid="mni4mm"),
                ImagePlan("Zthr"),
            ),
            paradigm=6, subjects=34, modality="PET FDG",
        ),
    )  # fmt: skip
