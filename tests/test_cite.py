"""``nv-datalad cite`` (text, BibTeX, CITATION.cff) and the generated dataset README.

BibTeX is checked with a small strict parser below; CITATION.cff against the constraints of the
CFF 1.2.0 JSON schema that apply to what we write (required keys, closed objects, the DOI,
date and URL patterns, the dataset type). The full upstream schema (shipped as
``cffconvert/schemas/1.2.0/schema.json`` in cffconvert 2.0.0, which pins jsonschema<4 and so
cannot be installed here) accepted the same output when this module was written.
"""

from __future__ import annotations

import re
import shlex
from collections import Counter

import jsonschema
import pytest
import yaml
from dataset_factory import COLLECTIONS, IMAGES, SERVER, SPEC, FactoryDataset
from helpers import git

from nv_datalad.consumers import cite
from nv_datalad.dataset import layout
from nv_datalad.dataset import revision as versions
from nv_datalad.pipeline.readme import render_readme

# --- a strict BibTeX reader ------------------------------------------------------------------

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")
_KEY = re.compile(r"[A-Za-z0-9_.:-]+")


def _braced(text: str, pos: int) -> tuple[str, int]:
    assert text[pos] == "{"
    depth, start = 0, pos
    while pos < len(text):
        ch = text[pos]  # like BibTeX, count every brace, escaped or not
        depth += ch == "{"
        depth -= ch == "}"
        pos += 1
        if depth == 0:
            return text[start + 1:pos - 1], pos
    raise ValueError(f"unbalanced braces from offset {start}")


def _skip_ws(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def parse_bibtex(text: str) -> list[tuple[str, str, dict[str, str]]]:
    """(type, key, fields) per entry; raises ValueError on anything BibTeX would not read."""
    try:
        return _parse_bibtex(text)
    except IndexError as err:
        raise ValueError("unexpected end of text inside an entry") from err


def _parse_bibtex(text: str) -> list[tuple[str, str, dict[str, str]]]:
    entries, pos = [], _skip_ws(text, 0)
    while pos < len(text):
        if text[pos] != "@":
            raise ValueError(f"text outside an entry at offset {pos}: {text[pos:pos + 20]!r}")
        m = _NAME.match(text, pos + 1)
        if not m or text[m.end()] != "{":
            raise ValueError(f"bad entry type at offset {pos}")
        kind, pos = m.group(0).lower(), m.end() + 1
        m = _KEY.match(text, pos)
        if not m or text[m.end()] != ",":
            raise ValueError(f"bad citation key at offset {pos}")
        key, pos = m.group(0), m.end() + 1
        fields: dict[str, str] = {}
        while True:
            pos = _skip_ws(text, pos)
            if text[pos] == "}":
                pos += 1
                break
            m = _NAME.match(text, pos)
            if not m:
                raise ValueError(f"bad field name at offset {pos}")
            name = m.group(0).lower()
            pos = _skip_ws(text, m.end())
            if text[pos] != "=":
                raise ValueError(f"missing '=' after {name}")
            pos = _skip_ws(text, pos + 1)
            if text[pos] == "{":
                value, pos = _braced(text, pos)
            elif text[pos].isdigit():
                m = re.compile(r"\d+").match(text, pos)
                value, pos = m.group(0), m.end()
            else:
                raise ValueError(f"field {name}: value must be {{...}} or a number")
            if name in fields:
                raise ValueError(f"duplicate field {name} in {key}")
            fields[name] = value
            pos = _skip_ws(text, pos)
            if text[pos] == ",":
                pos += 1
            elif text[pos] != "}":
                raise ValueError(f"expected ',' or '}}' after field {name}")
        entries.append((kind, key, fields))
        pos = _skip_ws(text, pos)
    keys = [k for _, k, _ in entries]
    if len(set(keys)) != len(keys):
        raise ValueError(f"duplicate keys: {keys}")
    return entries


def test_the_bibtex_reader_is_strict():
    with pytest.raises(ValueError, match="unbalanced"):
        parse_bibtex("@misc{a,\n title = {x{y}\n")
    with pytest.raises(ValueError, match="unexpected end"):
        parse_bibtex("@misc{a,\n title = {x{y}}\n")
    with pytest.raises(ValueError, match="outside"):
        parse_bibtex("junk @misc{a, title = {x}}")
    with pytest.raises(ValueError, match="duplicate keys"):
        parse_bibtex("@misc{a, title = {x}}\n@misc{a, title = {y}}")
    assert parse_bibtex("@misc{a, year = 2015, title = {{A} b}}") == \
        [("misc", "a", {"year": "2015", "title": "{A} b"})]


# --- CFF 1.2.0 constraints ---------------------------------------------------------------------

_TEXT = {"type": "string", "minLength": 1}
_DOI = {"type": "string", "pattern": r"^10\.\d{4,9}(\.\d+)?/[A-Za-z0-9:/_;\-\.\(\)\[\]\\]+$"}
_URL = {"type": "string", "pattern": r"^(https|http|ftp|sftp)://.+"}
_DATE = {"type": "string", "pattern": r"^[0-9]{4}-(0[1-9]|1[012])-(0[1-9]|[12][0-9]|3[01])$"}
_PERSON = {"type": "object", "additionalProperties": False,
           "properties": {"given-names": _TEXT, "family-names": _TEXT, "affiliation": _TEXT,
                          "email": _TEXT, "orcid": _URL}}
_ENTITY = {"type": "object", "additionalProperties": False, "required": ["name"],
           "properties": {"name": _TEXT, "email": _TEXT, "website": _URL}}
_AUTHORS = {"type": "array", "minItems": 1, "uniqueItems": True,
            "items": {"anyOf": [_PERSON, _ENTITY]}}
_INT_OR_TEXT = {"anyOf": [{"type": "integer"}, _TEXT]}
CFF_SUBSET_SCHEMA = {
    "type": "object",
    "required": ["authors", "cff-version", "message", "title"],
    "additionalProperties": False,
    "properties": {
        "cff-version": {"type": "string", "const": "1.2.0"},
        "message": _TEXT, "title": _TEXT, "abstract": _TEXT, "commit": _TEXT,
        "type": {"enum": ["dataset", "software"]},
        "version": {"anyOf": [_TEXT, {"type": "number"}]},
        "date-released": _DATE,
        "doi": _DOI, "url": _URL, "repository": _URL,
        "authors": _AUTHORS,
        "keywords": {"type": "array", "minItems": 1, "uniqueItems": True, "items": _TEXT},
        "identifiers": {"type": "array", "minItems": 1, "uniqueItems": True, "items": {"anyOf": [
            {"type": "object", "additionalProperties": False, "required": ["type", "value"],
             "properties": {"type": {"const": "doi"}, "value": _DOI, "description": _TEXT}},
            {"type": "object", "additionalProperties": False, "required": ["type", "value"],
             "properties": {"type": {"const": "url"}, "value": _URL, "description": _TEXT}},
            {"type": "object", "additionalProperties": False, "required": ["type", "value"],
             "properties": {"type": {"const": "other"}, "value": _TEXT, "description": _TEXT}},
        ]}},
        "references": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["authors", "title", "type"],
            "properties": {
                "type": {"enum": ["article", "data", "database", "dataset", "generic",
                                  "software", "website"]},
                "title": _TEXT, "authors": _AUTHORS, "journal": _TEXT, "notes": _TEXT,
                "doi": _DOI, "url": _URL, "volume": _INT_OR_TEXT, "start": _INT_OR_TEXT,
                "year": _INT_OR_TEXT,
            },
            "additionalProperties": False,
        }},
    },
}


def validate_cff(text: str) -> dict:
    doc = yaml.safe_load(text)
    jsonschema.validate(doc, CFF_SUBSET_SCHEMA)
    return doc


def test_the_cff_schema_rejects_what_cff_rejects():
    good = {"cff-version": "1.2.0", "message": "m", "title": "t",
            "authors": [{"name": "NeuroVault contributors"}]}
    jsonschema.validate(good, CFF_SUBSET_SCHEMA)
    for bad in ({**good, "authors": []}, {**good, "type": "data"},
                {**good, "date-released": "2024-13-01"},
                {**good, "identifiers": [{"type": "doi", "value": "doi:10.1/x"}]},
                {k: v for k, v in good.items() if k != "message"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, CFF_SUBSET_SCHEMA)


# --- citing a dataset ---------------------------------------------------------------------------

def test_citation_facts_at_head_and_at_an_old_tag(ds):
    head = cite.citation(ds.path)
    assert (head.version, head.commit, head.exact) == ("v1.1.0", ds.v2_commit, True)
    assert head.dataset_id == ds.dataset_id
    assert head.name == SPEC["name"] and head.description == SPEC["description"]
    assert {c.collection_id: c.n_images for c in head.collections} == \
        dict(Counter(cid for cid, _, _ in IMAGES.values()))
    old = cite.citation(ds.path, "v1.0.0")
    assert (old.version, old.commit) == ("v1.0.0", ds.v1_commit)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d", old.date)


def test_text_names_id_tag_commit_and_every_collection(ds):
    text = cite.render(cite.citation(ds.path), "text")
    for needle in (ds.dataset_id, "v1.1.0", ds.v2_commit, "doi:10.1234/nv.col11",
                   "https://example.org/papers/12", f"{SERVER}/collections/13/",
                   "Gorgolewski", "Frontiers in Neuroinformatics 9:8",
                   "doi:10.3389/fninf.2015.00008", "(2 images)", "(1 image)"):
        assert needle in text, needle


def test_citing_a_commit_after_the_last_tag(ds_clone):
    repo = ds_clone()
    (repo / "notes.txt").write_text("local change\n")
    git(repo, "add", "notes.txt")
    git(repo, "commit", "-q", "-m", "local")
    commit = git(repo, "rev-parse", "HEAD").strip()
    cit = cite.citation(repo)
    assert (cit.version, cit.exact, cit.commit) == ("v1.1.0", False, commit)
    text = cite.render(cit, "text")
    assert "after v1.1.0" in text and commit in text


def test_bibtex_parses_with_the_dataset_neurovault_and_collections(ds):
    bib = cite.render(cite.citation(ds.path), "bibtex")
    entries = parse_bibtex(bib)
    kinds = [(kind, key) for kind, key, _ in entries]
    assert kinds[0][0] == "misc" and "v1.1.0" in kinds[0][1]
    assert ("article", "gorgolewski2015neurovault") in kinds
    fields = {key: f for _, key, f in entries}
    assert fields["gorgolewski2015neurovault"]["doi"] == cite.NEUROVAULT_DOI
    dataset = entries[0][2]
    assert ds.dataset_id in dataset["howpublished"] and ds.v2_commit in dataset["note"]
    dois = {f.get("doi") for _, _, f in entries}
    assert "10.1234/nv.col11" in dois
    assert len(entries) == 2 + len(COLLECTIONS)


def test_bibtex_survives_hostile_collection_text():
    credit = cite.CollectionCredit(7, "50% of {weird} names & #tags_\\", "10.1/x_{y}", None,
                                   None, ("A } B",), 1)
    cit = cite.Citation("id-1", "v1.0.0", "a" * 40, True, "2024-01-02", "n}ame",
                        "desc {unbalanced", "http://x", (credit,))
    entries = parse_bibtex(cite.render(cit, "bibtex"))
    assert len(entries) == 3


def test_cff_validates_and_carries_the_identifiers(ds):
    doc = validate_cff(cite.render(cite.citation(ds.path), "cff"))
    assert doc["type"] == "dataset" and doc["version"] == "v1.1.0"
    assert doc["commit"] == ds.v2_commit
    values = {(i["type"], i["value"]) for i in doc["identifiers"]}
    assert ("other", f"datalad:{ds.dataset_id}") in values
    assert ("doi", "10.1234/nv.col11") in values
    assert doc["references"][0]["doi"] == cite.NEUROVAULT_DOI


def test_cff_written_into_the_dataset_by_cff_for_validates(ds):
    doc = validate_cff((ds.path / layout.CITATION).read_text())
    assert doc["version"] == "v1.1.0"
    assert doc["authors"] == [{"name": "NeuroVault contributors"}]


def test_cff_for_before_the_tag_exists():
    records = [{"id": 5, "name": "c5", "DOI": "https://doi.org/10.5555/abc", "authors": "Jo Ko"},
               {"id": 6, "name": "c6", "DOI": "not a doi", "paper_url": ""},
               {"id": 9, "name": "unused", "DOI": "10.5555/zzz"}]
    doc = validate_cff(cite.cff_for("spec", "", "dsid", "v2.0.0", "2025-02-03", records,
                                    {5: 3, 6: 1}, authors=["Jane Q. Public", "Collective"]))
    assert "abstract" not in doc and doc["date-released"] == "2025-02-03"
    assert [i["value"] for i in doc["identifiers"]] == ["datalad:dsid", "10.5555/abc"]
    assert doc["authors"] == [{"given-names": "Jane Q.", "family-names": "Public"},
                              {"name": "Collective"}]
    assert [r["title"] for r in doc["references"][1:]] == ["c5", "c6"]  # 9 has no image
    with pytest.raises(ValueError, match="YYYY-MM-DD"):
        cite.cff_for("spec", "", "dsid", "v2.0.0", "03/02/2025", records, {5: 1})


def test_unknown_format():
    cit = cite.Citation("id", None, "b" * 40, False, "2024-01-01", "n", "", "", ())
    with pytest.raises(ValueError, match="text, bibtex, cff"):
        cite.render(cit, "ris")
    assert "untagged commit bbbbbbbbbbbb" in cite.render(cit, "text")


# --- README -----------------------------------------------------------------------------------

def _readme(ds: FactoryDataset, images=None) -> str:
    sidecars = images if images is not None else list(versions.image_sidecars(ds.path).values())
    return render_readme(SPEC, "v1.1.0", "ds-id-123", sidecars,
                         [{"id": cid, **rec} for cid, rec in COLLECTIONS.items()], SERVER)


def test_readme_counts_and_commands(ds):
    text = _readme(ds)
    assert text.startswith(f"# {SPEC['name']}\n")
    for needle in ("| Z map | 3 |", "| T map | 1 |", "| P map (given null hypothesis) | 1 |",
                   "| fMRI-BOLD | 4 |", "| PET FDG | 1 |", "| group | 3 |",
                   "| (not given) | 1 |", "| single-subject | 1 |",
                   "datalad clone ", "datalad get neurovault/collection_11/image_101.nii.gz",
                   "nv-datalad get -d . --where 'map_type=Z map'", "nv-datalad cite",
                   "git annex get --metadata 'map_type=Z map'",
                   "git checkout v1.1.0", "`ds-id-123`", "doi:10.3389/fninf.2015.00008",
                   "| 11 | Motor mapping | 10.1234/nv.col11 | 2 |",
                   "| 12 | Language \\| reading |  | 2 |", "5 statistical maps from 3"):
        assert needle in text, needle
    spec_block = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    assert yaml.safe_load(spec_block) == SPEC


def test_readme_is_deterministic_and_order_independent(ds):
    sidecars = list(versions.image_sidecars(ds.path).values())
    assert _readme(ds, sidecars) == _readme(ds, list(reversed(sidecars)))


def test_readme_commands_survive_odd_map_types():
    images = [{"id": 1, "collection_id": 2, "map_type": '1-P map ("inverted" probability)'},
              {"id": 3, "collection_id": 2, "map_type": "weird*map"}]
    text = render_readme({"name": "odd"}, "v1.0.0", "x", images[:1], [], "s")
    command = next(line for line in text.splitlines() if line.startswith("nv-datalad get"))
    assert shlex.split(command)[-1] == 'map_type=1-P map ("inverted" probability)'
    assert 'load(".", where={"map_type": "1-P map (\\"inverted\\" probability)"}' in text
    globbed = render_readme({"name": "odd"}, "v1.0.0", "x", images[1:], [], "s")
    assert "git annex get" not in globbed  # a glob character would match other values


def test_readme_for_an_empty_dataset():
    text = render_readme({"name": "empty"}, "v1.0.0", "x", [], [], "https://neurovault.org")
    assert "0 statistical maps from 0" in text and "nv-datalad cite" in text
