"""The citation facts and CITATION.cff (``nv_datalad.citation``), pure functions checked fast.

Expected values are written out by hand from what a reader of the citation would check: the
DOI a resolver accepts, the URL a browser opens, the names in the right fields. They also
serve ``tools/mutation.py citation`` (each mutant runs only this file).
"""

from __future__ import annotations

import pytest
import yaml

from nv_datalad.citation import (
    CollectionCredit,
    cff_for,
    collection_url,
    credits_for,
    normalise_doi,
    plural,
    split_authors,
    web_url,
)

SERVER = "https://nv.example.org"


@pytest.mark.parametrize(("given", "doi"), [
    ("10.1234/abc", "10.1234/abc"),
    ("  10.1234/abc  ", "10.1234/abc"),
    ("https://doi.org/10.1016/j.neuro.2020.01.001", "10.1016/j.neuro.2020.01.001"),
    ("http://dx.doi.org/10.1234/x(y)", "10.1234/x(y)"),
    ("HTTPS://DOI.ORG/10.1234/up", "10.1234/up"),
    ("doi:10.1234/abc", "10.1234/abc"),
    ("DOI: 10.1234/abc", "10.1234/abc"),
    ("10.123456789/x", "10.123456789/x"),
    ("10.1234.5/x", "10.1234.5/x"),
    ("10.1234/a:b;c_d-e.f[g]", "10.1234/a:b;c_d-e.f[g]"),
    ("10.123/short-registrant", None),
    ("10.1234567890/too-long-registrant", None),
    ("10.1234/", None),
    ("10.1234/a b", None),
    ("see 10.1234/abc", None),
    ("10.1234/abc ok", None),
    ("https://example.org/10.1234/abc", None),
    ("11.1234/abc", None),
    ("10.12a4/abc", None),
    ("10.1234.x/abc", None),
    ("", None),
    (None, None),
    (1234, None),
])
def test_a_doi_is_kept_only_when_a_resolver_would_accept_it(given, doi):
    assert normalise_doi(given) == doi


@pytest.mark.parametrize(("given", "url"), [
    ("https://example.org/paper", "https://example.org/paper"),
    (" http://example.org/a?b=1 ", "http://example.org/a?b=1"),
    ("ftp://example.org/x", None),
    ("https://example.org/a b", None),
    ("https://", None),
    ("example.org/paper", None),
    ("see https://example.org", None),
    ("javascript:alert(1)", None),
    ("", None),
    (None, None),
    (7, None),
])
def test_only_web_urls_are_kept(given, url):
    assert web_url(given) == url


@pytest.mark.parametrize(("given", "names"), [
    ("A. Name, B. Other", ("A. Name", "B. Other")),
    ("Ann Lee;Bo Kim and Cy Dee", ("Ann Lee", "Bo Kim", "Cy Dee")),
    ("  Rand Landau  and  Bo Kim  ", ("Rand Landau", "Bo Kim")),
    ("Sandy Anderson", ("Sandy Anderson",)),
    (" , ;Solo, ", ("Solo",)),
    ("", ()),
    (None, ()),
    (["A", "B"], ()),
])
def test_free_text_authors_are_split_into_people(given, names):
    assert split_authors(given) == names


def test_a_collection_page_is_the_records_url_or_made_from_the_server_and_id():
    assert collection_url({"url": " https://nv.example.org/c/5 ", "id": 5}, "") == \
        "https://nv.example.org/c/5"
    assert collection_url({"url": "not a url", "id": 5}, SERVER + "/") == \
        f"{SERVER}/collections/5/"
    assert collection_url({"id": 0}, SERVER) == f"{SERVER}/collections/0/"
    assert collection_url({"id": 5}, "embedded") is None
    assert collection_url({"id": "5"}, SERVER) is None
    assert collection_url({"id": True}, SERVER) is None
    assert collection_url({}, SERVER) is None


def test_credits_are_the_collections_with_images_in_id_order():
    records = [
        {"id": 9, "name": "Nine", "DOI": "doi:10.1234/nine", "paper_url": "https://p/9",
         "authors": "Ann Lee, Bo Kim"},
        {"id": 3, "name": "", "DOI": "not a doi", "paper_url": "ftp://p/3", "url": None,
         "authors": None},
        {"id": 4, "name": "Four, no images"},
        {"id": True, "name": "a bool is no id"},
        {"id": "7", "name": "a string is no id"},
        {"name": "no id at all"},
    ]
    credits = credits_for(records, {9: 2, 3: 1, 4: 0, 7: 1, 1: 1}, SERVER)
    assert credits == (
        CollectionCredit(1, "collection 1", None, None, f"{SERVER}/collections/1/", (), 1),
        CollectionCredit(3, "collection 3", None, None, f"{SERVER}/collections/3/", (), 1),
        CollectionCredit(7, "collection 7", None, None, f"{SERVER}/collections/7/", (), 1),
        CollectionCredit(9, "Nine", "10.1234/nine", "https://p/9", f"{SERVER}/collections/9/",
                         ("Ann Lee", "Bo Kim"), 2),
    )
    assert credits_for(records, {}) == ()


def test_placeholder_strings_of_the_server_are_no_values():
    (credit,) = credits_for([{"id": 2, "name": "None", "DOI": "null", "paper_url": "n/a"}],
                            {2: 1})
    assert credit.name == "collection 2" and credit.doi is None and credit.paper_url is None


def test_the_reference_to_cite_is_the_doi_else_the_paper_else_the_page():
    def credit(doi, paper, url):
        return CollectionCredit(4, "c", doi, paper, url, (), 1)

    assert credit("10.1/x", "https://p", "https://u").reference == "doi:10.1/x"
    assert credit(None, "https://p", "https://u").reference == "https://p"
    assert credit(None, None, "https://u").reference == "NeuroVault collection https://u"
    assert credit(None, None, None).reference == "NeuroVault collection 4"


def test_plural():
    assert [plural(n, "image") for n in (0, 1, 2)] == ["0 images", "1 image", "2 images"]


NV_AUTHORS = [
    ("Gorgolewski", "Krzysztof J."), ("Varoquaux", "Gael"), ("Rivera", "Gabriel"),
    ("Schwarz", "Yannick"), ("Ghosh", "Satrajit S."), ("Maumet", "Camille"),
    ("Sochat", "Vanessa V."), ("Nichols", "Thomas E."), ("Poldrack", "Russell A."),
    ("Poline", "Jean-Baptiste"), ("Yarkoni", "Tal"), ("Margulies", "Daniel S."),
]
NV_ARTICLE = {
    "type": "article",
    "title": "NeuroVault.org: a web-based repository for collecting and sharing unthresholded "
             "statistical maps of the human brain",
    "authors": [{"family-names": f, "given-names": g} for f, g in NV_AUTHORS],
    "journal": "Frontiers in Neuroinformatics", "volume": 9, "start": 8, "year": 2015,
    "doi": "10.3389/fninf.2015.00008",
}
MESSAGE = ("If you use this dataset, please cite this version (dataset id, version and commit), "
           "NeuroVault (see references) and the collections listed in identifiers.")
KEYWORDS = ["neuroimaging", "NeuroVault", "statistical maps", "DataLad"]


def test_cff_document_holds_every_field_of_the_version():
    collections = [
        {"id": 12, "name": "Motor task", "DOI": "https://doi.org/10.5555/motor",
         "paper_url": "https://journal.example/motor", "authors": "Jane Q. Doe, Consortium"},
        {"id": 5, "name": "Faces", "url": "https://nv.example.org/c/5", "authors": ""},
        {"id": 6, "name": "No images here", "DOI": "10.5555/none"},
    ]
    text = cff_for("motor-maps", "  Motor maps\n  of healthy adults. ", "ds-id-1", "v1.2.0",
                   "2024-02-29", collections, {12: 3, 5: 1, 6: 0}, server=SERVER,
                   commit="abc123", authors=["Jane Q. Doe", "  ", "Jane Q. Doe", "Ann Lee", "Lab"])
    assert yaml.safe_load(text) == {
        "cff-version": "1.2.0",
        "message": MESSAGE,
        "type": "dataset",
        "title": "motor-maps",
        "abstract": "Motor maps of healthy adults.",
        "authors": [{"given-names": "Jane Q.", "family-names": "Doe"},
                    {"given-names": "Ann", "family-names": "Lee"}, {"name": "Lab"}],
        "version": "v1.2.0",
        "date-released": "2024-02-29",
        "commit": "abc123",
        "identifiers": [
            {"type": "other", "value": "datalad:ds-id-1", "description": "DataLad dataset id"},
            {"type": "doi", "value": "10.5555/motor",
             "description": "NeuroVault collection 12: 3 images included"},
        ],
        "keywords": KEYWORDS,
        "references": [
            NV_ARTICLE,
            {"type": "data", "title": "Faces",
             "authors": [{"name": "NeuroVault collection 5 contributors"}],
             "notes": "NeuroVault collection 5; 1 image of 4 in this dataset",
             "url": "https://nv.example.org/c/5"},
            {"type": "data", "title": "Motor task",
             "authors": [{"given-names": "Jane Q.", "family-names": "Doe"},
                         {"name": "Consortium"}],
             "notes": "NeuroVault collection 12; 3 images of 4 in this dataset",
             "doi": "10.5555/motor", "url": "https://journal.example/motor"},
        ],
    }
    assert text.startswith("cff-version: 1.2.0\nmessage: ")  # the order CFF readers show


def test_cff_document_of_a_bare_version_falls_back_to_defaults():
    text = cff_for("", " \n ", "id-2", "v1.0.0", "2020-12-31", [{"id": 1}], {1: 1})
    assert yaml.safe_load(text) == {
        "cff-version": "1.2.0", "message": MESSAGE, "type": "dataset",
        "title": "NeuroVault dataset", "authors": [{"name": "NeuroVault contributors"}],
        "version": "v1.0.0", "date-released": "2020-12-31",
        "identifiers": [{"type": "other", "value": "datalad:id-2",
                         "description": "DataLad dataset id"}],
        "keywords": KEYWORDS,
        "references": [NV_ARTICLE, {
            "type": "data", "title": "collection 1",
            "authors": [{"name": "NeuroVault collection 1 contributors"}],
            "notes": "NeuroVault collection 1; 1 image of 1 in this dataset"}],
    }


def test_cff_keeps_non_ascii_names_readable_and_long_lines_whole():
    title = "Études sur la mémoire " + "très longue " * 12
    text = cff_for(title.strip(), "", "id", "v1.0.0", "2021-01-01", [], {})
    assert "title: Études sur la mémoire très longue" in text  # not \xc9 escapes
    assert "title: " + title.strip()[:92] in text  # wrapped at 100 columns, not 80


@pytest.mark.parametrize("date", ["2024-13-01", "2024-00-10", "2024-01-32", "2024-1-01",
                                  "24-01-01", "2024-01-01T00:00", "2024-01-00", ""])
def test_cff_refuses_a_release_date_that_is_not_a_day(date):
    with pytest.raises(ValueError, match=f"date must be YYYY-MM-DD, got {date!r}"):
        cff_for("n", "", "id", "v1.0.0", date, [], {})


@pytest.mark.parametrize("date", ["2024-10-31", "2024-12-30", "2024-09-19", "2024-11-20"])
def test_cff_accepts_every_month_and_day(date):
    assert f"date-released: '{date}'" in cff_for("n", "", "id", "v1", date, [], {})
