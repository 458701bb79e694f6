"""``nv-datalad cite`` (``nv_datalad.consumers.cite``): what it reads from git and what it prints.

The dataset is the hand-made tiny repository of ``test_units_revision`` (dates, tags and
collections known in advance); the renderers get a hand-built :class:`Citation` and their
output is compared in full. These tests also serve ``tools/mutation.py cite``.
"""

from __future__ import annotations

import os
import subprocess

import pytest
import yaml
from helpers import git
from test_units_citation import NV_ARTICLE
from test_units_revision import DATASET_ID, Tiny, make_tiny

from nv_datalad.citation import CollectionCredit
from nv_datalad.consumers.cite import (
    Citation,
    bib_escape,
    citation,
    render,
    render_bibtex,
    render_cff,
    render_text,
)
from nv_datalad.errors import DatasetError

LOCAL = "http://127.0.0.1:5000"
THREE = "Three"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Tiny:
    return make_tiny(tmp_path_factory.mktemp("tiny") / "ds")


def _credit(cid: int, n: int, url: str = LOCAL) -> CollectionCredit:
    if cid == 3:
        return CollectionCredit(3, THREE, "10.5555/three", None, f"{url}/collections/3/",
                                ("Ann Lee", "Bo Kim"), n)
    return CollectionCredit(8, "Eight", None, "https://paper.example/8",
                            f"{url}/collections/8/", (), n)


CIT = Citation(
    dataset_id="id-1", version="v2.0.0", commit="0123456789abcdef0123", exact=True,
    date="2024-05-06", name="motor_maps", description="Maps of 50% & more.",
    server="https://nv.example",
    collections=(
        CollectionCredit(3, "Faces {A}", "10.5555/f_a", "https://p/3", "https://nv/c/3",
                         ("Ann Lee", "Bo Kim"), 2),
        CollectionCredit(8, "Eight", None, "https://paper/8", "https://nv/c/8", (), 1),
        CollectionCredit(9, "Nine", None, None, "https://nv/c/9", ("Cy",), 1),
        CollectionCredit(10, "Ten", None, None, None, (), 1),
    ))
AFTER = Citation(**{**CIT.__dict__, "exact": False, "collections": CIT.collections[1:2],
                    "description": ""})
NEVER = Citation(**{**AFTER.__dict__, "version": None})


def test_the_text_citation_names_the_version_neurovault_and_each_collection():
    assert render_text(CIT) == (
        "motor_maps, version v2.0.0 (2024-05-06). DataLad dataset of 5 statistical maps from "
        "4 NeuroVault collections, built with nv-datalad. Maps of 50% & more. Dataset id id-1, "
        "commit 0123456789abcdef0123.\n\n"
        "  dataset id: id-1\n  version:    v2.0.0\n  commit:     0123456789abcdef0123\n"
        "  date:       2024-05-06\n\n"
        "Please also cite NeuroVault:\n"
        "  Gorgolewski KJ, Varoquaux G, Rivera G, Schwarz Y, Ghosh SS, Maumet C, Sochat VV, "
        "Nichols TE, Poldrack RA, Poline J-B, Yarkoni T, Margulies DS (2015). NeuroVault.org: a "
        "web-based repository for collecting and sharing unthresholded statistical maps of the "
        "human brain. Frontiers in Neuroinformatics 9:8. doi:10.3389/fninf.2015.00008\n\n"
        "and the collections the maps come from:\n"
        '  - collection 3 "Faces {A}" (2 images): doi:10.5555/f_a\n'
        '  - collection 8 "Eight" (1 image): https://paper/8\n'
        '  - collection 9 "Nine" (1 image): NeuroVault collection https://nv/c/9\n'
        '  - collection 10 "Ten" (1 image): NeuroVault collection 10\n')
    assert render(CIT) == render(CIT, "text") == render_text(CIT)


def test_the_text_citation_of_a_commit_after_a_tag_or_without_one():
    after = render_text(AFTER).splitlines()
    assert after[0] == ("motor_maps, version v2.0.0+0123456789ab (2024-05-06). DataLad "
                        "dataset of 1 statistical map from 1 NeuroVault collection, built "
                        "with nv-datalad. Dataset id id-1, commit 0123456789abcdef0123.")
    assert after[3] == "  version:    v2.0.0 (commit is after v2.0.0)"
    never = render_text(NEVER).splitlines()
    assert never[3] == "  version:    (no tag)"
    assert "version untagged commit 0123456789ab (" in never[0]
    empty = render_text(Citation(**{**NEVER.__dict__, "collections": ()}))
    assert empty.endswith("and the collections the maps come from:\n  (none)\n")
    dot = Citation(**{**NEVER.__dict__, "description": "Ends with a dot."})
    assert "built with nv-datalad. Ends with a dot. Dataset id" in render_text(dot)


def test_bibtex_of_a_version_in_full():
    assert render_bibtex(CIT) == (
        "@misc{nvdatalad:motor_maps:v2.0.0,\n"
        "  title = {{motor\\_maps: Maps of 50\\% \\& more.}},\n"
        "  author = {{NeuroVault contributors}},\n"
        "  year = {2024},\n"
        "  version = {v2.0.0},\n"
        "  howpublished = {DataLad dataset id-1},\n"
        "  note = {Version v2.0.0, git commit 0123456789abcdef0123, 5 images from NeuroVault, "
        "built with nv-datalad}\n}\n\n"
        "@article{gorgolewski2015neurovault,\n"
        "  author = {Gorgolewski, Krzysztof J. and Varoquaux, Gael and Rivera, Gabriel and "
        "Schwarz, Yannick and Ghosh, Satrajit S. and Maumet, Camille and Sochat, Vanessa V. and "
        "Nichols, Thomas E. and Poldrack, Russell A. and Poline, Jean-Baptiste and Yarkoni, Tal "
        "and Margulies, Daniel S.},\n"
        "  title = {{NeuroVault.org: a web-based repository for collecting and sharing "
        "unthresholded statistical maps of the human brain}},\n"
        "  journal = {Frontiers in Neuroinformatics},\n"
        "  volume = {9},\n  pages = {8},\n  year = {2015},\n"
        "  doi = {10.3389/fninf.2015.00008}\n}\n\n"
        "@misc{neurovault-collection:3,\n"
        "  title = {{Faces \\textbraceleft{}A\\textbraceright{}}},\n"
        "  author = {Ann Lee and Bo Kim},\n"
        "  doi = {10.5555/f_a},\n"
        "  url = {https://doi.org/10.5555/f_a},\n"
        "  note = {NeuroVault collection 3; 2 images in motor\\_maps v2.0.0}\n}\n\n"
        "@misc{neurovault-collection:8,\n"
        "  title = {{Eight}},\n"
        "  author = {{NeuroVault collection 8 contributors}},\n"
        "  url = {https://paper/8},\n"
        "  note = {NeuroVault collection 8; 1 image in motor\\_maps v2.0.0}\n}\n\n"
        "@misc{neurovault-collection:9,\n"
        "  title = {{Nine}},\n  author = {Cy},\n  url = {https://nv/c/9},\n"
        "  note = {NeuroVault collection 9; 1 image in motor\\_maps v2.0.0}\n}\n\n"
        "@misc{neurovault-collection:10,\n"
        "  title = {{Ten}},\n"
        "  author = {{NeuroVault collection 10 contributors}},\n"
        "  note = {NeuroVault collection 10; 1 image in motor\\_maps v2.0.0}\n}\n")
    assert render(CIT, "bibtex") == render_bibtex(CIT)


def test_bibtex_of_an_untagged_commit_is_keyed_by_it():
    text = render_bibtex(NEVER)
    assert text.startswith("@misc{nvdatalad:motor_maps:0123456789ab,\n"
                           "  title = {{motor\\_maps}},\n")
    assert "  version = {untagged commit 0123456789ab},\n" in text
    assert "  note = {Version untagged commit 0123456789ab, git commit 0123456789abcdef0123, " \
        "1 image from NeuroVault, built with nv-datalad}\n}\n" in text
    odd = Citation(**{**NEVER.__dict__, "name": "  --a b/c!  "})
    assert render_bibtex(odd).startswith("@misc{nvdatalad:---a-b-c-:0123456789ab,\n")


@pytest.mark.parametrize(("text", "escaped"), [
    ("a\\b", "a\\textbackslash{}b"), ("{x}", "\\textbraceleft{}x\\textbraceright{}"),
    ("R&D 5% $3 #1 a_b", "R\\&D 5\\% \\$3 \\#1 a\\_b"),
    ("~^", "\\textasciitilde{}\\textasciicircum{}"),
    ("  many \n  spaces\t", "many spaces"),
])
def test_bibtex_escapes_every_latex_special(text, escaped):
    assert bib_escape(text) == escaped


def test_bibtex_urls_and_dois_lose_braces_backslashes_and_spaces():
    cit = Citation(**{**NEVER.__dict__, "collections": (
        CollectionCredit(4, "c", "10.1/a{b}", None, None, (), 1),
        CollectionCredit(5, "d", None, "https://p/x y\\{z}", None, (), 1))})
    text = render_bibtex(cit)
    assert "  doi = {10.1/ab},\n  url = {https://doi.org/10.1/ab},\n" in text
    assert "  url = {https://p/xyz},\n" in text


def test_cff_of_an_existing_version_adds_its_commit():
    doc = yaml.safe_load(render_cff(AFTER))
    assert {k: doc[k] for k in ("title", "version", "date-released", "commit")} == {
        "title": "motor_maps", "version": "v2.0.0+0123456789ab", "date-released": "2024-05-06",
        "commit": "0123456789abcdef0123"}
    assert "abstract" not in doc
    assert doc["references"] == [NV_ARTICLE, {
        "type": "data", "title": "Eight",
        "authors": [{"name": "NeuroVault collection 8 contributors"}],
        "notes": "NeuroVault collection 8; 1 image of 1 in this dataset",
        "url": "https://paper/8"}]
    full = yaml.safe_load(render(CIT, "cff"))
    assert full["abstract"] == "Maps of 50% & more."
    assert full["identifiers"][1:] == [{"type": "doi", "value": "10.5555/f_a",
                                        "description": "NeuroVault collection 3: 2 images "
                                                       "included"}]
    assert [r.get("url") for r in full["references"][1:]] == [
        "https://p/3", "https://paper/8", "https://nv/c/9",
        "https://nv.example/collections/10/"]  # the page, made from the server
    assert full["references"][1]["authors"] == [
        {"given-names": "Ann", "family-names": "Lee"},
        {"given-names": "Bo", "family-names": "Kim"}]


@pytest.mark.parametrize("fmt", ["ris", "xml", "apa", "cat", "csl", "TEXT", ""])
def test_an_unknown_format_names_the_known_ones(fmt):
    with pytest.raises(ValueError, match=rf"^unknown citation format {fmt!r}; use one of text, "
                                         r"bibtex, cff$"):
        render(CIT, fmt)


def test_a_format_read_from_the_command_line_is_recognised():
    """argparse hands over new strings, never the interned literals."""
    for fmt, renderer in (("text", render_text), ("bibtex", render_bibtex),
                          ("cff", render_cff)):
        assert render(CIT, "".join(list(fmt))) == renderer(CIT)


# -- read from git: the tiny repository (after the renderers: a mutant there is caught first)

def test_head_after_the_last_tag_is_cited_as_that_version_plus_its_commit(tiny):
    assert citation(tiny.root) == Citation(
        dataset_id=DATASET_ID, version="v1.1.0", commit=tiny.third, exact=False,
        date="2023-01-02", name="tiny", description="Tiny maps.", server=LOCAL,
        collections=(_credit(3, 3), _credit(8, 1)))


def test_a_tag_asked_for_by_name_wins_over_a_newer_tag_on_its_commit(tiny):
    cit = citation(tiny.root, "v1.0.0")
    assert (cit.version, cit.commit, cit.exact, cit.date) == (
        "v1.0.0", tiny.first, True, "2021-03-05")  # the annotated tag's own date
    assert cit.collections == (_credit(3, 1), _credit(8, 1))
    by_sha = citation(tiny.root, tiny.first)
    assert (by_sha.version, by_sha.exact, by_sha.date) == ("v1.0.1", True, "2021-03-04")


def test_a_lightweight_tag_is_dated_by_its_commit(tiny):
    cit = citation(tiny.root, "v1.1.0")
    assert (cit.version, cit.commit, cit.exact, cit.date) == (
        "v1.1.0", tiny.second, True, "2022-06-07")
    assert [c.n_images for c in cit.collections] == [2, 1]


def test_a_never_tagged_dataset_is_cited_by_its_commit(tmp_path):
    root = tmp_path / "untagged"
    make_tiny(root)
    for tag in ("v1.0.0", "v1.0.1", "v1.1.0"):
        git(root, "tag", "-d", tag)
    (root / ".nv-datalad" / "spec.yaml").write_text("description: '  padded  '\n")
    git(root, "commit", "-q", "-am", "no name")
    cit = citation(root / "neurovault")
    head = git(root, "rev-parse", "HEAD").strip()
    assert (cit.version, cit.exact, cit.commit) == (None, False, head)
    assert cit.version_label == f"untagged commit {head[:12]}"
    assert (cit.name, cit.description, cit.server) == ("untagged", "padded", LOCAL)
    with pytest.raises(DatasetError, match="the dataset has no version tag"):
        citation(root, "v1.0.0")


def test_without_a_web_server_in_the_provenance_the_specs_server_is_cited(tmp_path):
    root = tmp_path / "spec-server"
    make_tiny(root)
    sidecar = root / "neurovault/collection_3/image_31_metadata.json"
    sidecar.write_text(sidecar.read_text().replace(LOCAL, "embedded"))
    (root / ".nv-datalad" / "spec.yaml").write_text("name: s\nserver: https://nv.example\n")
    git(root, "commit", "-q", "-am", "spec server")
    cit = citation(root)
    assert cit.server == "https://nv.example"
    assert [c.url for c in cit.collections] == ["https://nv.example/collections/3/",
                                                "https://nv.example/collections/8/"]


def test_every_commit_after_a_tag_is_cited_as_after_it(tmp_path):
    """Commit shas sort at random against the tag's: a tag on a high sha, then commits after
    it until one sorts below it (fixed dates: the same commits every run)."""
    root = tmp_path / "after"
    make_tiny(root)

    def commit(n: int) -> str:
        stamp = f"2024-01-01T00:00:{n:02d}+00:00"
        env = dict(os.environ, GIT_AUTHOR_DATE=stamp, GIT_COMMITTER_DATE=stamp)
        subprocess.run(["git", "-C", str(root), "commit", "-q", "--allow-empty", "-m", str(n)],
                       check=True, env=env)
        return git(root, "rev-parse", "HEAD").strip()

    tagged = next(sha for sha in map(commit, range(30)) if sha[0] >= "c")
    git(root, "tag", "v2.0.0", tagged)
    orders = set()
    for n in range(30, 60):
        sha = commit(n)
        cit = citation(root)
        assert (cit.version, cit.exact, cit.commit) == ("v2.0.0", False, sha)
        orders.add(sha > tagged)
        if False in orders:
            break
    assert False in orders
