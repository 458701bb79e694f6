"""Spec loading: nilearn's defaults, a precise message per mistake, all of them at once.

A researcher's bad spec must fail before anything is written with ``file:line key.path:
problem`` (one line per problem when there are several); a good one must select what
``fetch_neurovault`` would with the same arguments. The published JSON Schema is what decides.
"""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
from nilearn.datasets.neurovault import ResultFilter, basic_collection_terms, basic_image_terms

from nv_datalad import options
from nv_datalad.errors import SpecError
from nv_datalad.spec import (
    NeurosynthSpec,
    ResampleSpec,
    load_spec,
    parse_spec,
    schema,
    spec_to_yaml,
)
from nv_datalad.spec.filters import OPERATORS
from nv_datalad.spec.schema_doc import TOP_KEYS
from nv_datalad.spec.yamlload import load_yaml, plain

SM = "statistic_map"
SPECS_DIR = Path(__file__).resolve().parent.parent / "specs"

IMAGES = [
    {"not_mni": False, "is_thresholded": False, "map_type": "Z map", "image_type": SM},
    {"not_mni": False, "is_thresholded": False, "map_type": "ROI/mask", "image_type": SM},
    {"not_mni": False, "is_thresholded": True, "map_type": "T map", "image_type": SM},
    {"not_mni": True, "is_thresholded": False, "map_type": "T map", "image_type": SM},
    {"not_mni": False, "is_thresholded": False, "map_type": "F map", "image_type": "atlas"},
    {"not_mni": False, "is_thresholded": False, "map_type": "anatomical"},
    {"map_type": "Z map"},
]
COLLECTIONS = [{"number_of_images": 3}, {"number_of_images": 0}, {"number_of_images": None}, {}]


# --- defaults ---------------------------------------------------------------------------------


def test_minimal_spec_gets_nilearns_defaults():
    spec = parse_spec("name: zmaps\n")
    assert spec.name == "zmaps"
    assert spec.server == "https://neurovault.org"
    assert spec.max_images == 100
    assert spec.mode == "download_new"
    assert spec.content == "download" and spec.keep_content is True
    assert spec.resample is None
    assert spec.neurosynth == NeurosynthSpec(words=False, vectorize=True, url=None)
    assert spec.archive is None and spec.where is None
    assert not spec.explicit
    assert dict(spec.collection_terms) == {"number_of_images": {"not_null": True}}
    assert dict(spec.image_terms) == {
        "not_mni": False,
        "is_thresholded": False,
        "map_type": {"not_in": ["ROI/mask", "anatomical", "parcellation"]},
        "image_type": {"not_equal": "atlas"},
    }
    # ... and they select exactly what nilearn's basic terms select.
    nilearn_images = ResultFilter(basic_image_terms())
    nilearn_collections = ResultFilter(basic_collection_terms())
    ours_i, ours_c = spec.image_predicate(), spec.collection_predicate()
    assert [ours_i(r) for r in IMAGES] == [nilearn_images(r) for r in IMAGES]
    assert [ours_i(r) for r in IMAGES] == [True, False, False, False, False, False, False]
    assert [ours_c(r) for r in COLLECTIONS] == [nilearn_collections(r) for r in COLLECTIONS]
    assert [ours_c(r) for r in COLLECTIONS] == [True, False, False, False]


def test_user_image_terms_win_over_defaults_which_still_apply():
    spec = parse_spec("name: x\nimages:\n  terms:\n    is_thresholded: true\n    map_type: Z map\n")
    assert spec.image_terms["is_thresholded"] is True
    assert spec.image_terms["map_type"] == "Z map"
    assert spec.image_terms["not_mni"] is False
    assert spec.image_terms["image_type"] == {"not_equal": "atlas"}
    keep = spec.image_predicate()
    thresholded = {"not_mni": False, "is_thresholded": True, "map_type": "Z map", "image_type": SM}
    assert keep(thresholded)
    assert not keep({**thresholded, "not_mni": True})
    assert not keep({**thresholded, "map_type": "T map"})


def test_use_default_terms_false_keeps_only_the_users_terms():
    spec = parse_spec("name: x\nimages:\n  use_default_terms: false\n  terms: {map_type: T map}\n")
    assert dict(spec.image_terms) == {"map_type": "T map"}
    assert spec.image_predicate()({"map_type": "T map", "not_mni": True})


def test_collection_terms_replace_the_default_when_given():
    spec = parse_spec("name: x\ncollections:\n  terms:\n    DOI: {not_null: true}\n")
    assert dict(spec.collection_terms) == {"DOI": {"not_null": True}}
    assert parse_spec("name: x\ncollections:\n  terms: {}\n").collection_terms == {}
    assert not spec.collection_predicate()({"number_of_images": 4, "DOI": None})
    assert spec.collection_predicate()({"number_of_images": 0, "DOI": "10.1/x"})


def test_collection_id_in_image_terms_moves_to_the_collection_side():
    spec = parse_spec("name: x\nimages:\n  terms:\n    collection_id: 35\n")
    assert "collection_id" not in spec.image_terms
    assert spec.collection_terms == {"number_of_images": {"not_null": True}, "id": 35}
    assert spec.collection_predicate()({"id": 35, "number_of_images": 2})
    assert not spec.collection_predicate()({"id": 36, "number_of_images": 2})
    same = parse_spec(
        "name: x\ncollections:\n  terms: {id: 35}\nimages:\n  terms: {collection_id: 35}\n"
    )
    assert dict(same.collection_terms) == {"id": 35}


def test_explicit_ids_take_the_fetch_neurovault_ids_path():
    spec = parse_spec(
        "name: x\nmax_images: 5\ncollections:\n  ids: [35, 1952]\n"
        "images:\n  ids: [110]\n  terms: {map_type: Z map}\n"
    )
    assert spec.explicit
    assert spec.collection_ids == (35, 1952) and spec.image_ids == (110,)
    assert spec.max_images is None  # ignored, as nilearn does
    assert dict(spec.collection_terms) == {}  # no defaults ...
    assert dict(spec.image_terms) == {"map_type": "Z map"}  # ... but the user's filter stays
    assert spec.image_predicate()({"map_type": "Z map", "is_thresholded": True})
    assert not spec.image_predicate()({"map_type": "T map"})


def test_empty_id_lists_mean_the_filtered_path():
    spec = parse_spec("name: x\ncollections: {ids: []}\nimages: {ids: []}\n")
    assert not spec.explicit
    assert spec.max_images == 100
    assert "not_mni" in spec.image_terms


def test_image_predicate_is_terms_and_where():
    spec = parse_spec(
        "name: x\n"
        "images:\n"
        "  use_default_terms: false\n"
        "  terms: {map_type: {in: [T map, Z map]}}\n"
        "  where:\n"
        "    any: [{modality: fMRI-BOLD}, {not: {number_of_subjects: {lt: 10}}}]\n"
    )
    keep = spec.image_predicate()
    assert keep({"map_type": "Z map", "modality": "fMRI-BOLD", "number_of_subjects": 3})
    assert keep({"map_type": "T map", "modality": "PET FDG", "number_of_subjects": 30})
    assert not keep({"map_type": "T map", "modality": "PET FDG", "number_of_subjects": 3})
    assert not keep({"map_type": "F map", "modality": "fMRI-BOLD"})


def test_dates_stay_text_so_they_compare_with_iso_records():
    spec = parse_spec(
        "name: x\nimages:\n  use_default_terms: false\n  terms:\n    add_date: {ge: 2020-01-01}\n"
    )
    assert spec.image_terms["add_date"] == {"ge": "2020-01-01"}
    keep = spec.image_predicate()
    assert keep({"add_date": "2021-03-04T10:00:00.123456Z"})
    assert not keep({"add_date": "2016-01-21T17:23:16.733390Z"})
    assert not keep({})


def test_server_resample_and_neurosynth_forms():
    spec = parse_spec(
        "name: x\nserver: http://127.0.0.1:8765/\nmax_images: null\n"
        "resample: {voxel_size: 2, interpolation: nearest}\n"
        "neurosynth: {words: true, vectorize: false}\narchive: backup\n"
    )
    assert spec.server == "http://127.0.0.1:8765"
    assert spec.max_images is None
    assert spec.resample == ResampleSpec(voxel_size=2.0, interpolation="nearest")
    assert spec.neurosynth.resolve_url(spec.server) == "http://127.0.0.1:8765/api/decode/"
    assert NeurosynthSpec().resolve_url("https://neurovault.org/") == (
        "https://neurosynth.org/api/decode/"
    )
    assert spec.archive == "backup"
    assert parse_spec("name: x\nserver: embedded\n").server == "embedded"
    assert parse_spec("name: x\nresample: true\n").resample == ResampleSpec()
    affine = "[[3,0,0,-90],[0,3,0,-126],[0,0,3,-72],[0,0,0,1]]"
    grid = parse_spec(
        f"name: x\nresample:\n  target_affine: {affine}\n  target_shape: [61, 73, 61]\n"
    )
    assert grid.resample.target_affine[0] == (3.0, 0.0, 0.0, -90.0)
    assert grid.resample.target_shape == (61, 73, 61)


def test_overrides_from_the_command_line_are_validated():
    spec = parse_spec("name: x\n")
    offline = spec.with_overrides(mode="offline")
    assert offline.mode == "offline" and offline.raw["mode"] == "offline"
    assert spec.mode == "download_new" and "mode" not in spec.raw
    moved = spec.with_overrides(server="http://127.0.0.1:9/")
    assert moved.server == "http://127.0.0.1:9" and moved.raw["server"] == "http://127.0.0.1:9"
    with pytest.raises(SpecError) as info:
        spec.with_overrides(mode="ofline")
    assert info.value.key == "--mode"
    assert "did you mean 'offline'" in str(info.value)
    with pytest.raises(SpecError):
        spec.with_overrides(server="file:///etc")


def test_spec_to_yaml_round_trips_in_canonical_order():
    text = (
        "images:\n  terms:\n    add_date: {ge: 2020-01-01}\n    flag: 'yes'\n"
        "mode: overwrite\nname: round-trip\n"
    )
    spec = parse_spec(text)
    dumped = spec_to_yaml(spec)
    assert dumped.splitlines()[0] == "name: round-trip"
    again = parse_spec(dumped)
    assert again == spec
    assert again.image_terms["add_date"] == {"ge": "2020-01-01"}
    assert again.image_terms["flag"] == "yes"


# --- every bad spec names file, line and key --------------------------------------------------

BAD_SPECS = [
    # (id, text, line, key, fragment)
    ("yaml-syntax", "name: x\nimages: {terms: [a\n", 3, "", "not valid YAML"),
    ("not-a-mapping", "- name: x\n", 1, "", "a spec is a mapping"),
    ("empty", "# nothing\n", 1, "", "the spec is empty"),
    ("missing-name", "description: d\nmode: offline\n", 1, "name", "needs a name"),
    ("bad-name", "description: d\nname: ../data\n", 2, "name", "not a usable dataset name"),
    ("unknown-key", "name: x\nmax_image: 3\n", 2, "max_image", "did you mean 'max_images'"),
    (
        "unknown-nested-key",
        "name: x\nimages:\n  term: {}\n",
        3,
        "images.term",
        "did you mean 'terms'",
    ),
    (
        "duplicate-key",
        "name: x\nmode: offline\nmode: overwrite\n",
        3,
        "mode",
        "duplicate key 'mode' (first at line 2)",
    ),
    ("wrong-type-bool", "name: x\nkeep_content: sometimes\n", 2, "keep_content", "true or false"),
    ("wrong-type-section", "name: x\nimages: [1, 2]\n", 2, "images", "must be a mapping"),
    ("bad-mode", "name: x\nmode: download\n", 2, "mode", "download_new, overwrite, offline"),
    ("bad-content", "name: x\ncontent: copy\n", 2, "content", "download, register"),
    (
        "bad-interpolation",
        "name: x\nresample:\n  interpolation: cubic\n",
        3,
        "resample.interpolation",
        "continuous, linear, nearest",
    ),
    ("negative-max-images", "name: x\nmax_images: -1\n", 2, "max_images", "non-negative integer"),
    ("decimal-max-images", "name: x\nmax_images: 2.5\n", 2, "max_images", "non-negative integer"),
    ("non-http-server", "name: x\nserver: ftp://neurovault.org\n", 2, "server", "http"),
    (
        "non-integer-id",
        "name: x\ncollections:\n  ids: [35, '12']\n",
        3,
        "collections.ids[1]",
        "non-negative integers",
    ),
    (
        "negative-id",
        "name: x\nimages:\n  ids:\n    - 4\n    - -7\n",
        5,
        "images.ids[1]",
        "non-negative integers",
    ),
    (
        "duplicate-id",
        "name: x\nimages:\n  ids:\n    - 4\n    - 5\n    - 4\n",
        6,
        "images.ids[2]",
        "listed twice",
    ),
    ("ids-not-a-list", "name: x\nimages:\n  ids: 110\n", 3, "images.ids", "must be a list"),
    (
        "invalid-regex",
        "name: x\nimages:\n  terms:\n    name: {pattern: 'motor('}\n",
        4,
        "images.terms.name.pattern",
        "invalid regular expression",
    ),
    (
        "unknown-operator",
        "name: x\nimages:\n  terms:\n    map_type:\n      equals: Z map\n",
        5,
        "images.terms.map_type",
        "unknown operator 'equals'; use one of: not_null, is_null",
    ),
    (
        "in-needs-a-list",
        "name: x\nimages:\n  terms:\n    analysis_level: {in: group}\n",
        4,
        "images.terms.analysis_level.in",
        "needs a list",
    ),
    (
        "not-null-needs-true",
        "name: x\ncollections:\n  terms:\n    DOI:\n      not_null: false\n",
        5,
        "collections.terms.DOI.not_null",
        "takes only true",
    ),
    (
        "bad-where",
        "name: x\nimages:\n  where:\n    any:\n      - modality: MEG\n"
        "      - number_of_subjects: {gt: [10]}\n",
        6,
        "images.where.any[1].number_of_subjects.gt",
        "needs a number or a text bound",
    ),
    (
        "bad-voxel-size",
        "name: x\nresample:\n  voxel_size: 0\n",
        3,
        "resample.voxel_size",
        "positive number",
    ),
    (
        "bad-target-affine",
        "name: x\nresample:\n  target_affine: [[1, 0, 0, 0], [0, 1, 0, 0]]\n",
        3,
        "resample.target_affine",
        "4×4",
    ),
    (
        "affine-last-row",
        "name: x\nresample:\n  target_affine:\n    - [1, 0, 0, 0]\n"
        "    - [0, 1, 0, 0]\n    - [0, 0, 1, 0]\n    - [0, 0, 1, 1]\n",
        7,
        "resample.target_affine[3]",
        "[0, 0, 0, 1]",
    ),
    (
        "bad-target-shape",
        "name: x\nresample:\n  target_affine: [[1,0,0,0],[0,1,0,0],[0,0,1,0],"
        "[0,0,0,1]]\n  target_shape: [61, 0, 61]\n",
        4,
        "resample.target_shape",
        "3 positive",
    ),
    (
        "shape-without-affine",
        "name: x\nresample:\n  target_shape: [61, 73, 61]\n",
        3,
        "resample.target_shape",
        "needs target_affine",
    ),
    (
        "bad-neurosynth-url",
        "name: x\nneurosynth:\n  url: neurosynth.org/api\n",
        3,
        "neurosynth.url",
        "http",
    ),
    ("archive-not-text", "name: x\narchive: 42\n", 2, "archive", "must be text"),
    (
        "contradictory-collection-ids",
        "name: x\ncollections:\n  terms: {id: 3}\nimages:\n  terms:\n    collection_id: 4\n",
        6,
        "images.terms.collection_id",
        "contradicts",
    ),
    (
        "use-default-terms-not-bool",
        "name: x\nimages:\n  use_default_terms: 1\n",
        3,
        "images.use_default_terms",
        "true or false",
    ),
]


@pytest.mark.parametrize(
    ("text", "line", "key", "fragment"),
    [case[1:] for case in BAD_SPECS],
    ids=[case[0] for case in BAD_SPECS],
)
def test_bad_spec_names_file_line_and_key(tmp_path, text, line, key, fragment):
    path = tmp_path / "spec.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    err = info.value
    message = str(err)
    assert (err.source, err.line, err.key) == (str(path), line, key)
    prefix = f"{path}:{line} {key}: " if key else f"{path}:{line}: "
    assert message.startswith(prefix), message
    assert fragment in message
    assert "\n" not in message  # the CLI prints it as one line


def test_unreadable_spec_file_is_a_spec_error(tmp_path):
    missing = tmp_path / "nope.yaml"
    with pytest.raises(SpecError) as info:
        load_spec(missing)
    assert str(info.value).startswith(f"{missing}: cannot read the spec")


# --- the shipped example specs ----------------------------------------------------------------


def shipped_specs() -> list[Path]:
    return sorted(SPECS_DIR.glob("*.yaml"))


def test_specs_directory_has_the_documented_examples():
    names = {p.name for p in shipped_specs()}
    assert "demo.yaml" in names
    assert len(names) >= 6


@pytest.mark.parametrize("path", shipped_specs(), ids=lambda p: p.name)
def test_every_shipped_spec_loads(path):
    spec = load_spec(path)
    assert spec.description
    assert spec.server in ("embedded", "https://neurovault.org")
    assert parse_spec(spec_to_yaml(spec), str(path)) == spec


def test_demo_spec_runs_offline_with_derivatives():
    demo = load_spec(SPECS_DIR / "demo.yaml")
    assert demo.name == "nv-datalad-demo"
    assert demo.server == "embedded"
    assert demo.max_images is None
    assert demo.resample == ResampleSpec(voxel_size=3.0)
    assert demo.neurosynth.words is True


def test_everything_spec_has_no_filter_and_no_limit():
    spec = load_spec(SPECS_DIR / "everything.yaml")
    assert spec.max_images is None
    assert dict(spec.collection_terms) == {} and dict(spec.image_terms) == {}
    assert spec.image_predicate()({"is_thresholded": True, "map_type": "ROI/mask"})


# --- the published JSON Schema decides -------------------------------------------------------

GOOD_SPECS = [
    "name: x\n",
    "name: Motor.zmaps_2024-v1\ndescription: null\nmax_images: 0\n",
    (
        "name: motor-group-zmaps\ndescription: d\nserver: https://neurovault.org\n"
        "max_images: 200\nmode: download_new\n"
        "collections:\n  ids: []\n  terms: {DOI: {not_null: true}}\n"
        "images:\n  ids: []\n  use_default_terms: true\n  terms:\n    map_type: Z map\n"
        "    analysis_level: {in: [group, meta-analysis]}\n"
        "    cognitive_paradigm_cogatlas: {pattern: '(?i).*motor'}\n"
        "  where:\n    any: [{modality: fMRI-BOLD}, {not: {number_of_subjects: {lt: 10}}}]\n"
        "content: download\nkeep_content: true\n"
        "resample:\n  voxel_size: 3\n  interpolation: continuous\n"
        "neurosynth: {words: false, vectorize: true, url: 'https://neurosynth.org/api/decode/'}\n"
        "archive: null\n"
    ),
    "name: x\nserver: http://127.0.0.1:8080\nresample: true\nneurosynth: null\n",
    "name: x\nsubdatasets: per-collection\nria: {store: 'ria+file:///shared/store'}\n"
    "report: true\n",
    "name: x\nsubdatasets: none\nria: {store: null}\nreport: false\n",
    "name: x\ncollections:\n  ids: [1, 2]\nimages:\n  ids: [3]\n  terms: null\n",
    (
        "name: x\nimages:\n  terms:\n    add_date: {ge: 2020-01-01, lt: '2024'}\n"
        "    map_type: {any: [{pattern: z, flags: i}, {not_in: [T map]}], not: F map}\n"
        "    description: {contains: [face, house], not_contains: test}\n"
        "    number_of_subjects: {gt: 10.5, le: 100}\n    name: {is_null: true}\n"
        "    image_type: {not_equal: atlas}\n    not_mni: false\n    smoothing_fwhm: null\n"
        "  where:\n    all:\n      - not: {modality: MEG}\n      - any: [{a: 1}, {b: {gt: 2}}]\n"
    ),
    (
        "name: x\nresample:\n  interpolation: linear\n  target_affine:\n"
        "    [[2, 0, 0, -90], [0, 2, 0, -126], [0, 0, 2, -72], [0, 0, 0, 1]]\n"
        "  target_shape: [91, 109, 91]\narchive: my-ria-store\ncontent: register\n"
        "keep_content: false\nmode: offline\n"
    ),
]

# Mistakes the schema can express too (not: YAML syntax, duplicate keys, contradictory ids,
# an affine whose last row is wrong).
SCHEMA_EXPRESSIBLE = {
    "not-a-mapping",
    "missing-name",
    "bad-name",
    "unknown-key",
    "unknown-nested-key",
    "wrong-type-bool",
    "wrong-type-section",
    "bad-mode",
    "bad-content",
    "bad-interpolation",
    "negative-max-images",
    "decimal-max-images",
    "non-http-server",
    "non-integer-id",
    "negative-id",
    "duplicate-id",
    "ids-not-a-list",
    "invalid-regex",
    "unknown-operator",
    "in-needs-a-list",
    "not-null-needs-true",
    "bad-where",
    "bad-voxel-size",
    "bad-target-affine",
    "bad-target-shape",
    "shape-without-affine",
    "bad-neurosynth-url",
    "archive-not-text",
    "use-default-terms-not-bool",
}
EXTRA_BAD_SPECS = [
    "name: x\nimages:\n  terms:\n    map_type: {pattern: a, flags: q}\n",
    "name: x\nimages:\n  terms:\n    map_type: {flags: i}\n",
    "name: x\nimages:\n  where: {any: []}\n",
    "name: x\nimages:\n  terms:\n    map_type: {}\n",
    "name: x\nimages:\n  terms:\n    number_of_subjects: {gt: true}\n",
    "name: x\nresample:\n  voxel_size: 2\n"
    "  target_affine: [[1,0,0,0],[0,1,0,0],[0,0,1,0],[0,0,0,1]]\n",
    "name: x\nserver: https://\n",
    "name: x.\n",
    "name: x\nmax_images: true\n",
]


def as_data(text: str):
    """The document as JSON-like data, loaded exactly as the spec loader loads it."""
    return plain(load_yaml(text, "<test>"))


def schema_validator() -> jsonschema.Draft202012Validator:
    """A plain validator, as an editor would use the schema ``nv-datalad schema`` prints."""
    cls = jsonschema.Draft202012Validator
    return cls(schema(), format_checker=cls.FORMAT_CHECKER)


def test_schema_is_a_valid_draft_2020_12_schema():
    document = schema()
    assert document["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(document)


@pytest.mark.parametrize(
    "text",
    GOOD_SPECS + [p.read_text(encoding="utf-8") for p in shipped_specs()],
)
def test_good_specs_pass_the_loader_and_the_published_schema(text):
    parse_spec(text)
    errors = list(schema_validator().iter_errors(as_data(text)))
    assert errors == []


@pytest.mark.parametrize(
    "text",
    [case[1] for case in BAD_SPECS if case[0] in SCHEMA_EXPRESSIBLE] + EXTRA_BAD_SPECS,
)
def test_bad_specs_fail_the_loader_and_the_published_schema(text):
    with pytest.raises(SpecError):
        parse_spec(text)
    assert not schema_validator().is_valid(as_data(text))


def test_schema_operators_equal_the_filter_operators():
    operators = schema()["$defs"]["operators"]["properties"]
    assert set(operators) - {"flags", "all", "any", "not"} == set(OPERATORS)
    assert set(schema()["properties"]) == set(TOP_KEYS)


def test_schema_enums_and_defaults_come_from_the_options():
    document = schema()
    top = document["properties"]
    assert top["mode"]["enum"] == list(options.MODES)
    assert top["content"]["enum"] == list(options.CONTENTS)
    assert top["subdatasets"]["enum"] == list(options.SUBDATASETS)
    assert top["subdatasets"]["default"] == "none"
    assert top["server"]["default"] == options.DEFAULT_SERVER
    assert top["max_images"]["default"] == options.DEFAULT_MAX_IMAGES
    assert {"const": options.EMBEDDED} in top["server"]["anyOf"]
    interpolation = document["$defs"]["resample"]["properties"]["interpolation"]
    assert interpolation["enum"] == list(options.INTERPOLATIONS)
    assert interpolation["default"] == options.DEFAULT_INTERPOLATION


def test_messages_name_what_the_schema_allows():
    """The choices and keys a message offers are the schema's, not a copy of them."""
    with pytest.raises(SpecError) as info:
        parse_spec("name: x\nsubdatasets: per_collection\n", "spec.yaml")
    assert str(info.value) == (
        "spec.yaml:2 subdatasets: unknown subdatasets 'per_collection' (did you mean "
        f"'per-collection'?); use one of: {', '.join(options.SUBDATASETS)}"
    )
    with pytest.raises(SpecError) as info:
        parse_spec("name: x\nimages:\n  term: {}\n", "spec.yaml")
    allowed = schema()["properties"]["images"]["properties"]
    assert str(info.value).endswith(f"allowed here: {', '.join(allowed)}")
    with pytest.raises(SpecError) as info:
        parse_spec("name: x\nreport: yes please\n", "spec.yaml")
    assert str(info.value) == "spec.yaml:2 report: must be true or false; got 'yes please'"


def test_every_violation_is_reported_with_its_line(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(
        "name: x\n"                                  # 1
        "mode: ofline\n"                             # 2
        "max_image: 3\n"                             # 3
        "images:\n"                                  # 4
        "  ids: [1, -2]\n"                           # 5
        "  terms:\n"                                 # 6
        "    map_type:\n"                            # 7
        "      equals: Z map\n"                      # 8
        "resample:\n"                                # 9
        "  voxel_size: 0\n"                          # 10
        "ria: {store: /shared/store}\n",             # 11
        encoding="utf-8",
    )
    with pytest.raises(SpecError) as info:
        load_spec(path)
    first, *rest = str(info.value).splitlines()
    assert first == f"{path}: 6 problems"
    assert [line.split(": ", 1)[0] for line in rest] == [
        f"  {path}:2 mode",
        f"  {path}:3 max_image",
        f"  {path}:5 images.ids[1]",
        f"  {path}:8 images.terms.map_type",
        f"  {path}:10 resample.voxel_size",
        f"  {path}:11 ria.store",
    ]
    assert "did you mean 'offline'" in rest[0]
    assert "did you mean 'max_images'" in rest[1]
    assert "non-negative integers; got -2" in rest[2]
    assert "unknown operator 'equals'" in rest[3]
    assert "positive number" in rest[4]
    assert "ria+file:///shared/store" in rest[5]


def test_max_images_zero_is_kept_as_zero():
    spec = parse_spec("name: x\nmax_images: 0\n")
    assert spec.max_images == 0 and spec.max_images is not None
    assert spec.raw["max_images"] == 0
    assert parse_spec(spec_to_yaml(spec)).max_images == 0


def test_scale_keys_are_carried_and_change_nothing_else():
    plain_spec = parse_spec("name: x\n")
    assert (plain_spec.subdatasets, plain_spec.ria_store, plain_spec.report) == (
        "none", None, False)
    scaled = parse_spec(
        "name: x\nsubdatasets: per-collection\nria:\n  store: ria+file:///shared/store\n"
        "report: true\n"
    )
    assert scaled.subdatasets == "per-collection"
    assert scaled.ria_store == "ria+file:///shared/store"
    assert scaled.report is True
    assert dict(scaled.image_terms) == dict(plain_spec.image_terms)
    assert scaled.max_images == plain_spec.max_images
    assert spec_to_yaml(scaled).splitlines()[-4:] == [
        "subdatasets: per-collection", "ria:", "  store: ria+file:///shared/store",
        "report: true"]
