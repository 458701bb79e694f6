"""``nv-datalad cite``: how to cite one exact version of a dataset.

A paper must name what it analysed so someone else can get the same bytes: the DataLad dataset
id, the version tag and the commit. It must also credit NeuroVault and every collection whose
maps were used (its DOI; the paper URL or the NeuroVault page when there is no DOI). All of it
is read from git at that version (``versions``), so citing an old tag needs no checkout.

:func:`cff_for` is shared with the builder, which writes ``CITATION.cff`` before the tag exists.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from nv_datalad.dataset import layout
from nv_datalad.dataset import revision as versions
from nv_datalad.neurovault.client import normalise_nulls
from nv_datalad.records import PROVENANCE_KEY

FORMATS = ("text", "bibtex", "cff")

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
_WEB = re.compile(r"^https?://\S+$")
_DATE = re.compile(r"^\d{4}-(0[1-9]|1[012])-(0[1-9]|[12]\d|3[01])$")


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


@dataclass(frozen=True)
class Citation:
    """Everything needed to cite one version of a dataset."""

    dataset_id: str
    version: str | None  # newest v-tag at or before ``commit`` (None: never tagged)
    commit: str
    exact: bool  # ``commit`` is the tagged commit itself
    date: str  # YYYY-MM-DD of the tag (or of the commit when not exact)
    name: str
    description: str
    server: str
    collections: tuple[CollectionCredit, ...]

    @property
    def n_images(self) -> int:
        return sum(c.n_images for c in self.collections)

    @property
    def version_label(self) -> str:
        if self.version is None:
            return f"untagged commit {self.commit[:12]}"
        return self.version if self.exact else f"{self.version}+{self.commit[:12]}"


def normalise_doi(value: object) -> str | None:
    """``https://doi.org/10.1/x`` / ``doi:10.1/x`` / ``10.1/x`` -> ``10.1/x``; anything that is
    not a DOI -> None (it would make CITATION.cff invalid)."""
    if not isinstance(value, str):
        return None
    text = _DOI_PREFIX.sub("", value.strip())
    return text if _DOI.match(text) else None


def _web_url(value: object) -> str | None:
    return value.strip() if isinstance(value, str) and _WEB.match(value.strip()) else None


def split_authors(value: object) -> tuple[str, ...]:
    """NeuroVault's ``authors`` is free text, usually ``"A. Name, B. Other"``."""
    if not isinstance(value, str):
        return ()
    parts = re.split(r"\s*(?:;|,|\band\b)\s*", value.strip())
    return tuple(p for p in (s.strip() for s in parts) if p)


def collection_url(record: Mapping[str, Any], server: str) -> str | None:
    """The collection's NeuroVault page: the record's ``url`` when it is a web URL, else built
    from the server and the integer id."""
    url = _web_url(record.get("url"))
    if url:
        return url
    cid = record.get("id")
    base = _web_url(server)
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
            paper_url=_web_url(rec.get("paper_url")),
            url=collection_url(rec, server),
            authors=split_authors(rec.get("authors")),
            n_images=int(counts[cid]),
        ))
    return tuple(out)


def citation(dataset: Path | str, version: str | None = None) -> Citation:
    """The citation of ``version`` (tag or commit; default HEAD), read from git only."""
    root = versions.ensure_repository(Path(dataset))
    commit = versions.resolve(root, version or "HEAD")
    tag = versions.latest_tag(root, commit)
    if version and version in versions.version_tags(root):
        tag = version  # a tag asked for by name wins over a newer tag on the same commit
    exact = tag is not None and versions.resolve(root, tag) == commit
    date = versions.tag_date(root, tag) if exact and tag else versions.commit_date(root, commit)
    spec = versions.read_spec(root, commit)
    images = versions.image_sidecars(root, commit)
    counts: Counter[int] = Counter()
    server = str(spec.get("server") or "")
    for record in images.values():
        prov = record.get(PROVENANCE_KEY) or {}
        path = prov.get("path") if isinstance(prov, Mapping) else None
        cid = _collection_id(record, path)
        if cid is not None:
            counts[cid] += 1
        if isinstance(prov, Mapping) and _web_url(prov.get("server")):
            server = str(prov["server"])  # the real URL even when the spec says "embedded"
    collections = versions.collection_sidecars(root, commit)
    records = [{**rec, "id": cid} for cid, rec in collections.items()]
    return Citation(
        dataset_id=versions.dataset_id(root),
        version=tag,
        commit=commit,
        exact=exact,
        date=date,
        name=str(spec.get("name") or root.name),
        description=str(spec.get("description") or "").strip(),
        server=server,
        collections=credits_for(records, counts, server),
    )


def _collection_id(record: Mapping[str, Any], path: object) -> int | None:
    cid = record.get("collection_id")
    if isinstance(cid, int) and not isinstance(cid, bool):
        return cid
    if isinstance(path, str):
        parts = PurePosixPath(path).parts
        if len(parts) >= 2:
            return layout.parse_collection_dir(parts[1])
    return None


def render(cit: Citation, fmt: str = "text") -> str:
    """``text`` (paragraph + list), ``bibtex`` or ``cff`` (CITATION.cff 1.2.0)."""
    if fmt == "text":
        return render_text(cit)
    if fmt == "bibtex":
        return render_bibtex(cit)
    if fmt == "cff":
        return render_cff(cit)
    raise ValueError(f"unknown citation format {fmt!r}; use one of {', '.join(FORMATS)}")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def render_text(cit: Citation) -> str:
    desc = f" {cit.description.rstrip('.')}." if cit.description else ""
    lines = [
        f"{cit.name}, version {cit.version_label} ({cit.date}). DataLad dataset of "
        f"{_plural(cit.n_images, 'statistical map')} from "
        f"{_plural(len(cit.collections), 'NeuroVault collection')}, built with nv-datalad."
        f"{desc} Dataset id {cit.dataset_id}, commit {cit.commit}.",
        "",
        f"  dataset id: {cit.dataset_id}",
        f"  version:    {cit.version or '(no tag)'}"
        + ("" if cit.exact or cit.version is None else f" (commit is after {cit.version})"),
        f"  commit:     {cit.commit}",
        f"  date:       {cit.date}",
        "",
        "Please also cite NeuroVault:",
        f"  {NEUROVAULT_REFERENCE}",
        "",
        "and the collections the maps come from:",
    ]
    lines += [
        f"  - collection {c.collection_id} \"{c.name}\" ({_plural(c.n_images, 'image')}): "
        f"{c.reference}"
        for c in cit.collections
    ] or ["  (none)"]
    return "\n".join(lines) + "\n"


# --- BibTeX -------------------------------------------------------------------------------

_BIB_SPECIAL = {
    "\\": r"\textbackslash{}", "{": r"\textbraceleft{}", "}": r"\textbraceright{}",
    "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
    "~": r"\textasciitilde{}", "^": r"\textasciicircum{}",
}


def bib_escape(text: str) -> str:
    """Free text inside a ``{...}`` BibTeX value: LaTeX specials escaped. BibTeX counts every
    brace, even ``\\{``, so braces become ``\\textbraceleft{}`` / ``\\textbraceright{}``."""
    return "".join(_BIB_SPECIAL.get(ch, ch) for ch in " ".join(text.split()))


def _bib_raw(text: str) -> str:
    """DOIs and URLs are kept verbatim (biblatex/url handle them) minus brace characters."""
    return re.sub(r"[{}\\\s]", "", text)


def _bib_key(*parts: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.:-]+", "-", ":".join(parts)).strip("-") or "nvdatalad"


def _bib_entry(kind: str, key: str, fields: Sequence[tuple[str, str]]) -> str:
    body = ",\n".join(f"  {name} = {{{value}}}" for name, value in fields if value)
    return f"@{kind}{{{key},\n{body}\n}}\n"


def render_bibtex(cit: Citation) -> str:
    """One ``@misc`` for the dataset version, ``@article`` for NeuroVault, one ``@misc`` per
    contributing collection (DOI, else URL)."""
    year = cit.date[:4]
    title = cit.name + (f": {cit.description}" if cit.description else "")
    entries = [_bib_entry("misc", _bib_key("nvdatalad", cit.name, cit.version or cit.commit[:12]), [
        ("title", "{" + bib_escape(title) + "}"),
        ("author", "{" + bib_escape(DEFAULT_AUTHOR) + "}"),
        ("year", year),
        ("version", bib_escape(cit.version_label)),
        ("howpublished", bib_escape(f"DataLad dataset {cit.dataset_id}")),
        ("note", bib_escape(
            f"Version {cit.version_label}, git commit {cit.commit}, "
            f"{_plural(cit.n_images, 'image')} from NeuroVault, built with nv-datalad")),
    ])]
    entries.append(_bib_entry("article", "gorgolewski2015neurovault", [
        ("author", " and ".join(
            f"{bib_escape(f)}, {bib_escape(g)}" for f, g in NEUROVAULT_AUTHORS)),
        ("title", "{" + bib_escape(NEUROVAULT_TITLE) + "}"),
        ("journal", NEUROVAULT_JOURNAL),
        ("volume", "9"),
        ("pages", "8"),
        ("year", "2015"),
        ("doi", NEUROVAULT_DOI),
    ]))
    for c in cit.collections:
        url = f"https://doi.org/{c.doi}" if c.doi else (c.paper_url or c.url or "")
        entries.append(_bib_entry("misc", _bib_key("neurovault-collection", str(c.collection_id)), [
            ("title", "{" + bib_escape(c.name) + "}"),
            ("author", " and ".join(bib_escape(a) for a in c.authors)
             or "{" + bib_escape(f"NeuroVault collection {c.collection_id} contributors") + "}"),
            ("doi", _bib_raw(c.doi) if c.doi else ""),
            ("url", _bib_raw(url)),
            ("note", bib_escape(
                f"NeuroVault collection {c.collection_id}; {_plural(c.n_images, 'image')} "
                f"in {cit.name} {cit.version_label}")),
        ]))
    return "\n".join(entries)


# --- CITATION.cff ---------------------------------------------------------------------------

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
    if not _DATE.match(date):
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
                               f"{_plural(c.n_images, 'image')} included",
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
                     f"{_plural(c.n_images, 'image')} of {n_images} in this dataset",
        }
        if c.doi:
            ref["doi"] = c.doi
        url = c.paper_url or c.url
        if url:
            ref["url"] = url
        references.append(ref)
    doc["references"] = references
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=100)


def render_cff(cit: Citation) -> str:
    """CITATION.cff for an existing version (adds the commit sha)."""
    records = [
        {"id": c.collection_id, "name": c.name, "DOI": c.doi, "paper_url": c.paper_url,
         "url": c.url, "authors": ", ".join(c.authors)}
        for c in cit.collections
    ]
    counts = {c.collection_id: c.n_images for c in cit.collections}
    return cff_for(cit.name, cit.description, cit.dataset_id, cit.version_label, cit.date,
                   records, counts, server=cit.server, commit=cit.commit)
