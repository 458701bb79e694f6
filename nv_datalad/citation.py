"""Citation facts and the CITATION.cff document, as pure functions over records.

Shared by the release stage (which writes ``CITATION.cff`` before the tag exists) and by
``nv-datalad cite`` (which reads any version from git). Server strings are checked before they
reach a citation: a DOI that is not a DOI, or a URL that is not http(s), would make the file
invalid, so such values are left out.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from nv_datalad.neurovault.records import normalise_nulls

NEUROVAULT_DOI = "10.3389/fninf.2015.00008"
NEUROVAULT_TITLE = (
    "NeuroVault.org: a web-based repository for collecting and sharing unthresholded "
    "statistical maps of the human brain"
)
NEUROVAULT_JOURNAL = "Frontiers in Neuroinformatics"
#: (family, given) names of the NeuroVault paper's authors, in order.
NEUROVAULT_AUTHORS = (
    ("Gorgolewski", "Krzysztof J."), ("Varoquaux", "Gael"), ("Rivera", "Gabriel"),
    ("Schwarz", "Yannick"), ("Ghosh", "Satrajit S."), ("Maumet", "Camille"),
    ("Sochat", "Vanessa V."), ("Nichols", "Thomas E."), ("Poldrack", "Russell A."),
    ("Poline", "Jean-Baptiste"), ("Yarkoni", "Tal"), ("Margulies", "Daniel S."),
)
NEUROVAULT_REFERENCE = (
    "Gorgolewski KJ, Varoquaux G, Rivera G, Schwarz Y, Ghosh SS, Maumet C, Sochat VV, "
    "Nichols TE, Poldrack RA, Poline J-B, Yarkoni T, Margulies DS (2015). "
    f"{NEUROVAULT_TITLE}. {NEUROVAULT_JOURNAL} 9:8. doi:{NEUROVAULT_DOI}"
)
DEFAULT_AUTHOR = "NeuroVault contributors"

_DOI = re.compile(r"^10\.\d{4,9}(\.\d+)?/[A-Za-z0-9:/_;\-.()\[\]\\]+$")
_DOI_PREFIX = re.compile(r"^(?:doi:\s*|https?://(?:dx\.)?doi\.org/)", re.IGNORECASE)
WEB = re.compile(r"^https?://\S+$")
DATE = re.compile(r"^\d{4}-(0[1-9]|1[012])-(0[1-9]|[12]\d|3[01])$")


@dataclass(frozen=True)
class CollectionCredit:
    """One collection that contributes images to the cited version."""

    collection_id: int
    name: str
    doi: str | None
    paper_url: str | None
    url: str | None  # the collection's NeuroVault page
    authors: tuple[str, ...]
    n_images: int

    @property
    def reference(self) -> str:
        """What to cite for it: DOI, else paper URL, else the NeuroVault page."""
        if self.doi:
            return f"doi:{self.doi}"
        if self.paper_url:
            return self.paper_url
        return f"NeuroVault collection {self.url or self.collection_id}"


def normalise_doi(value: object) -> str | None:
    """``https://doi.org/10.1/x`` / ``doi:10.1/x`` / ``10.1/x`` -> ``10.1/x``; anything that is
    not a DOI -> None (it would make CITATION.cff invalid)."""
    if not isinstance(value, str):
        return None
    text = _DOI_PREFIX.sub("", value.strip())
    return text if _DOI.match(text) else None


def web_url(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and WEB.match(value.strip()) else None


def split_authors(value: object) -> tuple[str, ...]:
    """NeuroVault's ``authors`` is free text, usually ``"A. Name, B. Other"``."""
    if not isinstance(value, str):
        return ()
    parts = re.split(r"\s*(?:;|,|\band\b)\s*", value.strip())
    return tuple(p for p in (s.strip() for s in parts) if p)


def collection_url(record: Mapping[str, Any], server: str) -> str | None:
    """The collection's NeuroVault page: the record's ``url`` when it is a web URL, else built
    from the server and the integer id."""
    url = web_url(record.get("url"))
    if url:
        return url
    cid = record.get("id")
    base = web_url(server)
    if base and isinstance(cid, int) and not isinstance(cid, bool):
        return f"{base.rstrip('/')}/collections/{cid}/"
    return None


def credits_for(
    collections: Sequence[Mapping[str, Any]], counts: Mapping[int, int], server: str = ""
) -> tuple[CollectionCredit, ...]:
    """Credits for the collections with at least one image in ``counts`` (id order)."""
    by_id = {}
    for record in collections:
        rec = normalise_nulls(record)
        cid = rec.get("id")
        if isinstance(cid, int) and not isinstance(cid, bool):
            by_id[cid] = rec
    out = []
    for cid in sorted(c for c, n in counts.items() if n > 0):
        rec = by_id.get(cid, {"id": cid})
        out.append(CollectionCredit(
            collection_id=cid,
            name=str(rec.get("name") or f"collection {cid}"),
            doi=normalise_doi(rec.get("DOI")),
            paper_url=web_url(rec.get("paper_url")),
            url=collection_url(rec, server),
            authors=split_authors(rec.get("authors")),
            n_images=int(counts[cid]),
        ))
    return tuple(out)


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _cff_person(name: str) -> dict[str, str]:
    """``"Jane Q. Doe"`` -> given/family names; a single word stays an entity name."""
    words = name.split()
    if len(words) < 2:
        return {"name": name}
    return {"given-names": " ".join(words[:-1]), "family-names": words[-1]}


def _unique(items: list[dict]) -> list[dict]:
    seen, out = set(), []
    for item in items:
        marker = tuple(sorted(item.items()))
        if marker not in seen:
            seen.add(marker)
            out.append(item)
    return out


def cff_for(
    spec_name: str,
    description: str,
    dataset_id: str,
    version: str,
    date: str,
    collections: Sequence[Mapping[str, Any]],
    counts: Mapping[int, int],
    *,
    server: str = "",
    commit: str | None = None,
    authors: Sequence[str] = (),
) -> str:
    """CITATION.cff (1.2.0, ``type: dataset``) text for a dataset version.

    The builder calls it before tagging (no commit yet); ``collections`` are collection records
    (API records or sidecars) and ``counts`` maps collection id -> images included; collections
    without images are left out. ``authors`` default to the entity "NeuroVault contributors".
    """
    if not DATE.match(date):
        raise ValueError(f"date must be YYYY-MM-DD, got {date!r}")
    credits = credits_for(collections, counts, server)
    n_images = sum(c.n_images for c in credits)
    doc: dict[str, Any] = {
        "cff-version": "1.2.0",
        "message": (
            "If you use this dataset, please cite this version (dataset id, version and "
            "commit), NeuroVault (see references) and the collections listed in identifiers."
        ),
        "type": "dataset",
        "title": spec_name or "NeuroVault dataset",
    }
    if description and description.strip():
        doc["abstract"] = " ".join(description.split())
    doc["authors"] = _unique([_cff_person(a) for a in authors if a.strip()]) or [
        {"name": DEFAULT_AUTHOR}]
    doc["version"] = version
    doc["date-released"] = date
    if commit:
        doc["commit"] = commit
    identifiers: list[dict[str, str]] = [{
        "type": "other", "value": f"datalad:{dataset_id}", "description": "DataLad dataset id",
    }]
    for c in credits:
        if c.doi:
            identifiers.append({
                "type": "doi", "value": c.doi,
                "description": f"NeuroVault collection {c.collection_id}: "
                               f"{plural(c.n_images, 'image')} included",
            })
    doc["identifiers"] = _unique(identifiers)
    doc["keywords"] = ["neuroimaging", "NeuroVault", "statistical maps", "DataLad"]
    references: list[dict[str, Any]] = [{
        "type": "article",
        "title": NEUROVAULT_TITLE,
        "authors": [{"family-names": f, "given-names": g} for f, g in NEUROVAULT_AUTHORS],
        "journal": NEUROVAULT_JOURNAL,
        "volume": 9,
        "start": 8,
        "year": 2015,
        "doi": NEUROVAULT_DOI,
    }]
    for c in credits:
        ref: dict[str, Any] = {
            "type": "data",
            "title": c.name,
            "authors": _unique([_cff_person(a) for a in c.authors]) or [
                {"name": f"NeuroVault collection {c.collection_id} contributors"}],
            "notes": f"NeuroVault collection {c.collection_id}; "
                     f"{plural(c.n_images, 'image')} of {n_images} in this dataset",
        }
        if c.doi:
            ref["doi"] = c.doi
        url = c.paper_url or c.url
        if url:
            ref["url"] = url
        references.append(ref)
    doc["references"] = references
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)


