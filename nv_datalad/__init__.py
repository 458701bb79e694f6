"""nv-datalad: NeuroVault statistical maps as reproducible, versioned, citable DataLad datasets.

The public Python API, one function per command::

    build(spec, dataset)            create or update a dataset from a spec -> BuildReport
    load(dataset, version=None)     a fetch_neurovault-style Bunch of a built dataset
    get(dataset, **where)           datalad get of the matching images -> list of paths
    cite(dataset, version=None)     how to cite one exact version -> Citation
    diff(dataset, old, new)         images added / updated / removed between versions -> Diff
    verify(dataset)                 drift against the server and annex integrity -> VerifyReport
    to_nimare(dataset, where=None)  a version's maps as a nimare.dataset.Dataset (NiMARE extra)
    report(dataset, out=None)       an HTML page: counts, glass brains, history -> ReportResult

Heavy imports (datalad, nilearn, requests) happen inside the functions that need them, so
``import nv_datalad`` and ``nv-datalad --help`` stay instant.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nv_datalad._version import __version__

__all__ = ["__version__", "build", "cite", "diff", "get", "load", "report", "to_nimare",
           "verify"]


def _tools() -> None:
    from nv_datalad.dataset.runner import ensure_tools_on_path

    ensure_tools_on_path()  # git-annex, and the `nv-datalad` that `datalad run` records


def build(spec_or_path: Any, dataset: str | Path | None = None, **options: Any) -> Any:
    """Create or update a dataset from a spec (a path or a :class:`~nv_datalad.spec.Spec`)."""
    from nv_datalad.pipeline import build as _build

    _tools()
    return _build(spec_or_path, dataset, **options)


def load(dataset: str | Path, **options: Any) -> Any:
    """A ``fetch_neurovault``-style Bunch of a built dataset (``version=``, ``where=``,
    ``get=``, ``resampled=``); see :func:`nv_datalad.consumers.load.load`."""
    from nv_datalad.consumers.load import load as _load

    _tools()
    return _load(dataset, **options)


def get(dataset: str | Path, *, resampled: bool = False, jobs: int | None = None,
        **where: Any) -> list[Path]:
    """``datalad get`` the images whose metadata matches ``where`` (``map_type="Z map"``,
    ``number_of_subjects={"ge": 20}``); returns their absolute paths. Raises when some could
    not be fetched (the error lists them)."""
    from nv_datalad.consumers.fetch import raise_on_failures
    from nv_datalad.consumers.get import get as _get

    _tools()
    root = Path(dataset).absolute()
    results = _get(root, dict(where) or None, resampled=resampled, jobs=jobs)
    raise_on_failures(results)
    return [root / r.path for r in results if r.path]


def cite(dataset: str | Path = ".", version: str | None = None) -> Any:
    """The :class:`~nv_datalad.consumers.cite.Citation` of a version (tag or commit)."""
    from nv_datalad.consumers.cite import citation

    return citation(dataset, version)


def diff(dataset: str | Path = ".", old: str | None = None, new: str | None = None) -> Any:
    """Images added, updated and removed between two versions (default: last tag → HEAD)."""
    from nv_datalad.consumers.diff import diff as _diff

    return _diff(Path(dataset), old, new)


def verify(dataset: str | Path = ".", *, server: str | None = None, fsck: bool = True) -> Any:
    """Does the dataset still match the server, and is its annexed content intact?"""
    from nv_datalad.consumers.verify import verify as _verify

    _tools()
    return _verify(Path(dataset), server=server, fsck=fsck)


def to_nimare(dataset: str | Path = ".", where: Any = None, version: str | None = None,
              **options: Any) -> Any:
    """The images of a version as a ``nimare.dataset.Dataset``: one study per collection, paths
    resolved in the dataset (``datalad get`` them before fitting). ``require_sample_size=``,
    ``target=``, ``mask=``; see :func:`nv_datalad.consumers.nimare.export`. Needs the
    ``nimare`` extra."""
    from nv_datalad.consumers.nimare import to_nimare as _to_nimare

    return _to_nimare(Path(dataset), where, version, **options)


def report(dataset: str | Path = ".", out: str | Path | None = None, version: str | None = None,
           *, get: bool = False, jobs: int | None = None) -> Any:
    """Write the HTML report of a version (default ``<dataset>/report.html``); ``get=True``
    fetches the images that have no thumbnail yet. Needs the ``report`` extra (matplotlib)."""
    from nv_datalad.consumers.report import report as _report

    _tools()
    return _report(Path(dataset), out, version, get=get, jobs=jobs)
