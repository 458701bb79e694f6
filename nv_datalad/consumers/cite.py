"""``nv-datalad cite``: how to cite one exact version of a dataset.

A paper must name what it analysed so someone else can get the same bytes: the DataLad dataset
id, the version tag and the commit. It must also credit NeuroVault and every collection whose
maps were used (its DOI; the paper URL or the NeuroVault page when there is no DOI). All of it
is read from git at that version (``versions``), so citing an old tag needs no checkout.

The citation facts and the CFF document are :mod:`nv_datalad.citation`'s, shared with the
release stage, which writes ``CITATION.cff`` before the tag exists.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from nv_datalad.citation import (
    DEFAULT_AUTHOR,
    NEUROVAULT_AUTHORS,
    NEUROVAULT_DOI,
    NEUROVAULT_JOURNAL,
    NEUROVAULT_REFERENCE,
    NEUROVAULT_TITLE,
    CollectionCredit,
    cff_for,
    credits_for,
    plural,
    web_url,
)
from nv_datalad.dataset import layout
from nv_datalad.dataset import revision as versions
from nv_datalad.options import CITE_FORMATS
from nv_datalad.records import PROVENANCE_KEY, parse_id


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
        cid = parse_id(record.get("collection_id"))
        if cid is None and isinstance(path, str):
            cid = layout.ids_of(path)[0]
        if cid is not None:
            counts[cid] += 1
        if isinstance(prov, Mapping) and web_url(prov.get("server")):
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


def render(cit: Citation, fmt: str = "text") -> str:
    """``text`` (paragraph + list), ``bibtex`` or ``cff`` (CITATION.cff 1.2.0)."""
    if fmt == "text":
        return render_text(cit)
    if fmt == "bibtex":
        return render_bibtex(cit)
    if fmt == "cff":
        return render_cff(cit)
    raise ValueError(f"unknown citation format {fmt!r}; use one of {', '.join(CITE_FORMATS)}")


def render_text(cit: Citation) -> str:
    desc = f" {cit.description.rstrip('.')}." if cit.description else ""
    lines = [
        f"{cit.name}, version {cit.version_label} ({cit.date}). DataLad dataset of "
        f"{plural(cit.n_images, 'statistical map')} from "
        f"{plural(len(cit.collections), 'NeuroVault collection')}, built with nv-datalad."
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
        f"  - collection {c.collection_id} \"{c.name}\" ({plural(c.n_images, 'image')}): "
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
            f"{plural(cit.n_images, 'image')} from NeuroVault, built with nv-datalad")),
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
                f"NeuroVault collection {c.collection_id}; {plural(c.n_images, 'image')} "
                f"in {cit.name} {cit.version_label}")),
        ]))
    return "\n".join(entries)


# --- CITATION.cff ---------------------------------------------------------------------------

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
