"""nv-datalad: NeuroVault statistical maps as reproducible, versioned, citable DataLad datasets.

Heavy imports (datalad, nilearn, requests) happen inside the functions that need them, so
``import nv_datalad`` and ``nv-datalad --help`` stay instant.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["__version__", "build", "load"]


def build(spec_or_path: Any, dataset: Any = None, **options: Any) -> Any:
    """Create or update a dataset from a spec; see :func:`nv_datalad.build.pipeline.build`."""
    from nv_datalad.build.pipeline import build as _build
    from nv_datalad.dataset.annex import ensure_tools_on_path

    ensure_tools_on_path()  # git-annex and the `nv-datalad` that `datalad run` records
    return _build(spec_or_path, dataset, **options)


def load(dataset: Any, **options: Any) -> Any:
    """A ``fetch_neurovault``-style Bunch of a built dataset (:func:`.consumers.load.load`)."""
    from nv_datalad.consumers.load import load as _load
    from nv_datalad.dataset.annex import ensure_tools_on_path

    ensure_tools_on_path()
    return _load(dataset, **options)
