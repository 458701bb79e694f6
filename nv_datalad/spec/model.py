"""The validated spec: frozen dataclasses the rest of the pipeline reads.

Everything here is already checked and has nilearn's defaults filled in
(:mod:`nv_datalad.spec.validate` builds it), so stages never re-validate. ``Spec.raw`` keeps the
document as written, which is what ``.nv-datalad/spec.yaml`` stores and what decides whether a
rebuild asks the same question.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import yaml

from nv_datalad import options
from nv_datalad.neurovault.records import is_public_server
from nv_datalad.spec.filters import Predicate, compile_terms, compile_where
from nv_datalad.spec.problems import check_value
from nv_datalad.spec.schema_doc import TOP_KEYS
from nv_datalad.spec.yamlload import plain


@dataclass(frozen=True)
class ResampleSpec:
    """Resampling of every image to one grid, as nilearn's ``resample=True`` (3 mm by default)."""

    voxel_size: float = options.DEFAULT_VOXEL_SIZE
    interpolation: str = options.DEFAULT_INTERPOLATION
    target_affine: tuple[tuple[float, ...], ...] | None = None
    target_shape: tuple[int, int, int] | None = None


@dataclass(frozen=True)
class NeurosynthSpec:
    """Neurosynth words per image; ``url`` None means the server's natural decoder."""

    words: bool = False
    vectorize: bool = True
    url: str | None = None

    def resolve_url(self, server_url: str) -> str:
        """The decoder to ask: the real Neurosynth for neurovault.org, else the server's own
        ``/api/decode/`` (the emulator serves one) so tests never leave the machine."""
        if self.url is not None:
            return self.url
        if is_public_server(server_url):
            return options.NEUROSYNTH_DECODE_URL
        return server_url.rstrip("/") + "/api/decode/"


def normalise_server(server: str) -> str:
    """One spelling per server (no trailing slash), so URLs built from it and spec comparisons
    do not depend on how the user wrote it."""
    return server if server == options.EMBEDDED else server.rstrip("/")


@dataclass(frozen=True)
class Spec:
    """A validated spec with nilearn's defaults filled in.

    ``collection_terms`` / ``image_terms`` are the effective terms (defaults merged,
    ``collection_id`` moved to the collection side as ``id``); ``raw`` is the document as the
    user wrote it, as plain data, with command-line overrides applied. ``max_images`` is None
    for "no limit" and may be 0. ``subdatasets`` shapes a new dataset (one repository or one
    subdataset per collection); ``ria_store`` is where cluster builds meet (``--slurm``).
    """

    name: str
    description: str
    server: str
    max_images: int | None
    mode: str
    collection_ids: tuple[int, ...]
    image_ids: tuple[int, ...]
    collection_terms: Mapping[str, Any]
    image_terms: Mapping[str, Any]
    where: Mapping[str, Any] | None
    content: str
    keep_content: bool
    resample: ResampleSpec | None
    neurosynth: NeurosynthSpec
    archive: str | None
    subdatasets: str
    ria_store: str | None
    report: bool
    source: str
    raw: Mapping[str, Any] = field(repr=False)

    @property
    def explicit(self) -> bool:
        """True on the ``fetch_neurovault_ids`` path: the spec lists collection or image ids."""
        return bool(self.collection_ids or self.image_ids)

    def collection_predicate(self) -> Predicate:
        """Which collection records to keep (on the explicit path: only filters the user wrote)."""
        return compile_terms(self.collection_terms)

    def image_predicate(self) -> Predicate:
        """Which image records to keep: the image terms AND the ``where`` tree.

        On the explicit path this is applied to the listed images too; restricting to the
        listed ids is the selection's job.
        """
        terms = compile_terms(self.image_terms)
        if self.where is None:
            return terms
        return _Both(terms, compile_where(self.where))

    def with_overrides(self, *, mode: str | None = None, server: str | None = None) -> Spec:
        """The same spec with command-line ``--mode`` / ``--server`` applied (and validated)."""
        raw = dict(self.raw)
        changes: dict[str, Any] = {}
        if mode is not None:
            changes["mode"] = raw["mode"] = check_value(
                "mode", mode, source="command line", label="--mode"
            )
        if server is not None:
            checked = check_value("server", server, source="command line", label="--server")
            changes["server"] = raw["server"] = normalise_server(checked)
        if not changes:
            return self
        return dataclasses.replace(self, raw=MappingProxyType(raw), **changes)


@dataclass(frozen=True)
class _Both:
    """Two predicates that must both hold (a class, so it pickles like the filters do)."""

    first: Predicate
    second: Predicate

    def __call__(self, record: Mapping[str, Any]) -> bool:
        return self.first(record) and self.second(record)


def spec_to_yaml(spec: Spec) -> str:
    """Canonical YAML of ``spec.raw``: top-level keys in the documented order, the rest as
    written. Loading it again gives an equal spec."""
    raw = copy.deepcopy(plain(spec.raw))
    ordered = {key: raw[key] for key in TOP_KEYS if key in raw}
    return yaml.safe_dump(ordered, sort_keys=False, allow_unicode=True, default_flow_style=False)
