"""Coded concepts on taxonomy nodes: parsed, validated, serialised, carried by the card, with a stable
private fallback; the bundled taxonomy's codes checked against DICOM PS3.16 where it lists them."""

from __future__ import annotations

import copy
import json
import re
from typing import Any

import pydicom.sr._concepts_dict as dicom_concepts
import pytest

from skinbatch.taxonomy import (
    PRIVATE_SCHEME,
    ClassCode,
    Taxonomy,
    TaxonomyError,
    code_for,
    default_taxonomy,
    private_code,
)
from skinbatch.taxonomy.card import taxonomy_card_entry

TREE: dict[str, Any] = {
    "format": "skinbatch-taxonomy/1", "name": "t", "description": "", "malignant_node": "malignant",
    "root": {"name": "skin disease", "children": [
        {"name": "benign", "children": [{"name": "nevus", "images": 10}, {"name": "lentigo", "images": 5}]},
        {"name": "malignant", "children": [{"name": "melanoma", "images": 3}]},
    ]},
    "training_classes": ["nevus", "lentigo", "melanoma"],
}
MELANOMA = {"scheme": "SCT", "value": "93655004", "meaning": "Malignant melanoma of skin"}


def _with_code(tree: dict[str, Any], path: list[int], code: Any) -> dict[str, Any]:
    out = copy.deepcopy(tree)
    node = out["root"]
    for i in path:
        node = node["children"][i]
    node["code"] = code
    return out


def test_a_taxonomy_without_codes_keeps_its_serialisation_and_digest() -> None:
    tax = Taxonomy.from_dict(TREE)
    assert "code" not in json.dumps(tax.to_dict())
    canonical = json.dumps({**TREE, "root": TREE["root"]}, sort_keys=True, separators=(",", ":"))
    # The digest of a codeless tree is what it was before codes existed: the hash of the same canonical JSON.
    import hashlib

    assert tax.sha256() == hashlib.sha256(canonical.encode()).hexdigest()


def test_codes_parse_serialise_and_count_in_the_digest() -> None:
    coded = Taxonomy.from_dict(_with_code(TREE, [1, 0], MELANOMA))
    assert coded.node("melanoma").code == ClassCode("SCT", "93655004", "Malignant melanoma of skin")
    assert coded.codes() == {"melanoma": ClassCode("SCT", "93655004", "Malignant melanoma of skin")}
    again = Taxonomy.from_dict(json.loads(coded.to_json()))
    assert again.codes() == coded.codes() and again.sha256() == coded.sha256()
    assert coded.sha256() != Taxonomy.from_dict(TREE).sha256()


@pytest.mark.parametrize("code, message", [
    ({"scheme": "SCT", "value": "9365x", "meaning": "m"}, "digits only"),
    ({"scheme": "ICD10", "value": "C43", "meaning": "m"}, "not one skinbatch knows"),
    ({"scheme": "SCT", "value": "93655004"}, "'meaning'"),
    ({"scheme": "SCT", "value": "93655004", "meaning": "m", "display": "x"}, "unknown keys"),
    ("93655004", "must be an object"),
    ({"scheme": "99LOCAL", "value": "a\\b", "meaning": "m"}, "backslashes"),
])
def test_malformed_codes_are_rejected_with_the_node_named(code: Any, message: str) -> None:
    with pytest.raises(TaxonomyError, match=message) as raised:
        Taxonomy.from_dict(_with_code(TREE, [1, 0], code))
    assert "melanoma" in str(raised.value)


def test_two_nodes_may_not_share_a_code() -> None:
    tree = _with_code(_with_code(TREE, [1, 0], MELANOMA), [1], MELANOMA)
    with pytest.raises(TaxonomyError, match="same code"):
        Taxonomy.from_dict(tree)


def test_the_private_fallback_is_the_name_whatever_the_position() -> None:
    assert private_code("non-neoplastic") == ClassCode(PRIVATE_SCHEME, "non-neoplastic", "non-neoplastic")
    assert code_for("melanoma", {}) == private_code("melanoma")
    assert code_for("melanoma", None) == private_code("melanoma")
    assert code_for("melanoma", {"melanoma": MELANOMA}).value == "93655004"
    reordered = copy.deepcopy(TREE)
    reordered["root"]["children"].reverse()
    a, b = Taxonomy.from_dict(TREE), Taxonomy.from_dict(reordered)
    assert a.coarse_labels != b.coarse_labels
    assert {n: code_for(n, a.codes()) for n in a.coarse_labels} == {n: code_for(n, b.codes()) for n in b.coarse_labels}
    long_name = "benign epidermal tumors, hamartomas, milia, and growths"
    assert private_code(long_name).value == long_name and len(private_code(long_name).dicom_meaning) <= 64


def test_fhir_systems_of_the_schemes() -> None:
    assert ClassCode("SCT", "1", "m").fhir_system == "http://snomed.info/sct"
    assert ClassCode("LN", "1-8", "m").fhir_system == "http://loinc.org"
    assert private_code("x").fhir_system.startswith("urn:")


def test_the_card_lists_the_codes_of_its_outputs_only() -> None:
    tax = Taxonomy.from_dict(_with_code(_with_code(TREE, [1, 0], MELANOMA), [0],
                                        {"scheme": "SCT", "value": "92384009", "meaning": "Benign neoplasm of skin"}))
    entry = taxonomy_card_entry(tax, "taxonomy.json")
    assert entry["codes"] == {"benign": {"scheme": "SCT", "value": "92384009", "meaning": "Benign neoplasm of skin"},
                              "melanoma": MELANOMA}
    assert taxonomy_card_entry(Taxonomy.from_dict(TREE), "taxonomy.json")["codes"] == {}


# -- the bundled taxonomy --------------------------------------------------------------------------

BUNDLED = default_taxonomy()


def test_the_bundled_taxonomy_codes_its_first_two_levels_where_a_concept_fits() -> None:
    codes = BUNDLED.codes()
    assert codes["benign"].value == "92384009" and codes["malignant"].value == "94047004"
    assert codes["inflammatory conditions"].value == "703938007"
    assert "non-neoplastic" not in codes  # no SNOMED CT concept means "not a neoplasm": private code
    for name in ("melanoma", "basal cell carcinoma", "squamous cell carcinoma", "seborrheic keratosis",
                 "melanocytic nevus"):
        assert codes[name].scheme == "SCT", name
    assert all(c.scheme == "SCT" and c.value.isdigit() for c in codes.values())


def _dicom_meanings() -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for entries in dicom_concepts.concepts["SCT"].values():
        for value, (meaning, _cids) in entries.items():
            out.setdefault(value, set()).add(re.sub(r"\s*\([^)]*\)$", "", meaning).lower())
    return out


def test_bundled_codes_that_dicom_ps3_16_lists_have_its_meaning() -> None:
    # pydicom's concept dictionary is generated from DICOM PS3.16; where it knows a SNOMED CT concept,
    # the bundled meaning must be that concept's. Sources of the others: docs/pacs.md.
    meanings = _dicom_meanings()
    checked = {name: code for name, code in BUNDLED.codes().items() if code.value in meanings}
    assert len(checked) >= 4, checked  # squamous cell carcinoma of skin, actinic keratosis, psoriasis, ...
    for name, code in checked.items():
        assert code.meaning.lower() in meanings[code.value], (name, code, meanings[code.value])
