"""The ``--where`` language: words to filter terms, honest refusals, and the git-annex line.

Pure tests (no dataset): what a user types after ``nv-datalad get --where`` must mean one
filter, a mistake must name the problem, and a field that only collections have must be
refused instead of silently matching every image.
"""

from __future__ import annotations

import pytest

from nv_datalad.errors import SpecError
from nv_datalad.spec import where as where_language
from nv_datalad.spec.where import COLLECTION_ONLY_FIELDS, compile_filter, where_tree


@pytest.mark.parametrize(("expr", "expected"), [
    ("map_type='Z map'", ("map_type", "Z map")),
    ('map_type="Z map"', ("map_type", "Z map")),
    ("map_type=Z map", ("map_type", "Z map")),
    (" map_type = Z map ", ("map_type", "Z map")),
    ("number_of_subjects>=20", ("number_of_subjects", {"ge": 20})),
    ("number_of_subjects>20", ("number_of_subjects", {"gt": 20})),
    ("number_of_subjects<2.5", ("number_of_subjects", {"lt": 2.5})),
    ("number_of_subjects<=20", ("number_of_subjects", {"le": 20})),
    ("number_of_subjects=20", ("number_of_subjects", 20)),
    ("number_of_subjects='20'", ("number_of_subjects", "20")),
    ("map_type!=T map", ("map_type", {"not_equal": "T map"})),
    ("is_thresholded=false", ("is_thresholded", False)),
    ("DOI=null", ("DOI", {"is_null": True})),
    ("DOI!=null", ("DOI", {"not_null": True})),
    ("DOI='null'", ("DOI", "null")),
    ("name~=(?i).*motor", ("name", {"pattern": "(?i).*motor"})),
    ("name~='a b'", ("name", {"pattern": "a b"})),
    ("analysis_level:{in: [group, meta-analysis]}",
     ("analysis_level", {"in": ["group", "meta-analysis"]})),
    ('map_type:{"not_in": ["ROI/mask"]}', ("map_type", {"not_in": ["ROI/mask"]})),
    ("name:{pattern: motor, flags: i}", ("name", {"pattern": "motor", "flags": "i"})),
    ("map_type=no", ("map_type", "no")),  # not YAML 1.1's boolean
    ("add_date=2016-01-21", ("add_date", "2016-01-21")),  # not a date object
])
def test_parse_where(expr, expected):
    assert where_language.parse_where(expr) == expected


@pytest.mark.parametrize(("expr", "message"), [
    ("map_type", "expected FIELD=VALUE"),
    ("=Z map", "expected FIELD=VALUE"),
    ("map_type=", "empty value"),
    ("number_of_subjects>=null", "null can only be compared"),
    ("name~=(unclosed", "invalid regular expression"),
    ("map_type:{equals: x}", "unknown operator equals"),
    ("map_type:[a, b]", "needs an operator"),
    ("map_type:{in: [a, b}", "cannot parse"),
    ("map_type:", "missing condition"),
])
def test_parse_where_errors_name_the_problem(expr, message):
    with pytest.raises(SpecError, match=message):
        where_language.parse_where(expr)


def test_parse_error_names_the_field():
    with pytest.raises(SpecError) as err:
        where_language.parse_where("number_of_subjects>=null")
    assert err.value.key == "number_of_subjects"
    assert str(err.value).startswith("number_of_subjects: ")


@pytest.mark.parametrize(("where", "reason"), [
    (["name~=map"], "no git-annex equivalent"),
    (["description=x"], "not recorded in the git-annex metadata"),
    (["map_type=Z*"], "glob characters"),
    ({"any": [{"map_type": "Z map"}, {"modality": "MEG"}]}, "any/not"),
    (["number_of_subjects>=many"], "compares numbers only"),
])
def test_no_annex_equivalent_says_why(where, reason):
    line, note = where_language.explain_annex_equivalent(where)
    assert line is None
    assert reason in note
    assert where_language.annex_equivalent(where) is None


@pytest.mark.parametrize("where", [
    ["DOI=null"],
    ["DOI!=null"],
    {"DOI": {"is_null": True}},
    ["map_type=Z map", "authors~=.*Turing"],
    {"any": [{"map_type": "Z map"}, {"not": {"journal_name": "NeuroImage"}}]},
])
def test_collection_fields_are_refused_not_matched_everywhere(where):
    with pytest.raises(SpecError) as err:
        compile_filter(where)
    field = next(f for f in COLLECTION_ONLY_FIELDS if f in str(err.value))
    assert str(err.value) == (
        f"{field} is a collection field; nv-datalad get --where filters image fields "
        "(use the spec's collections.terms to select collections)"
    )
    with pytest.raises(SpecError, match="is a collection field"):
        where_language.explain_annex_equivalent(where)


def test_collection_only_fields_are_not_image_fields():
    # NEUROVAULT_API.md: these are on collection records; images carry collection_id, name,
    # description and the dates too, so those stay usable.
    assert {"DOI", "authors", "journal_name", "paper_url"} <= COLLECTION_ONLY_FIELDS
    assert not {"collection_id", "name", "description", "add_date", "modify_date", "id"} & \
        COLLECTION_ONLY_FIELDS
    assert where_tree(["collection_id=35", "name~=.*motor"]) == {
        "collection_id": 35, "name": {"pattern": ".*motor"}}
    keep = compile_filter(["number_of_subjects>=20"])
    assert keep({"number_of_subjects": 21}) and not keep({"number_of_subjects": 3})
