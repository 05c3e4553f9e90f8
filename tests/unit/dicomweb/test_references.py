"""Parsing DICOMweb references: JSON documents and dicomweb: URIs."""

from __future__ import annotations

import pytest

from skinbatch.dicomweb.references import (
    DicomWebReference,
    InvalidReference,
    is_dicomweb_document,
    parse_document,
    parse_uri,
)

STUDY, SERIES, SOP = "1.2.840.113619.2.1", "1.2.840.113619.2.1.2", "1.2.840.113619.2.1.2.3"


@pytest.mark.parametrize("uri, expected", [
    (f"dicomweb:studies/{STUDY}", DicomWebReference(STUDY)),
    (f"dicomweb:studies/{STUDY}/series/{SERIES}", DicomWebReference(STUDY, SERIES)),
    (f"dicomweb:studies/{STUDY}/series/{SERIES}/instances/{SOP}", DicomWebReference(STUDY, SERIES, SOP)),
    (f"dicomweb://studies/{STUDY}/series/{SERIES}/instances/{SOP}/frames/2", DicomWebReference(STUDY, SERIES, SOP, 2)),
    (f"  DICOMWEB:/studies/{STUDY}/ ", DicomWebReference(STUDY)),
])
def test_uris(uri: str, expected: DicomWebReference) -> None:
    ref = parse_uri(uri)
    assert ref == expected
    assert parse_uri(ref.uri) == ref


def test_documents() -> None:
    assert parse_document({"study": STUDY, "series": SERIES, "instance": SOP}) == DicomWebReference(STUDY, SERIES, SOP)
    assert parse_document({"study": STUDY, "series": SERIES, "instance": SOP, "frame": "3"}).frame == 3
    assert parse_document({"uri": f"dicomweb:studies/{STUDY}"}).level == "study"
    assert is_dicomweb_document({"study": STUDY}) and is_dicomweb_document({"uri": "dicomweb:studies/1.2"})
    assert not is_dicomweb_document({"uri": "a/b.dcm"}) and not is_dicomweb_document([1])


@pytest.mark.parametrize("doc", [
    {"study": "1.2.abc"}, {"study": "01.2"}, {"study": "1." + "2" * 70}, {"study": 12},
    {"study": STUDY, "instance": SOP},                 # an instance without its series
    {"study": STUDY, "series": SERIES, "frame": 1},    # a frame without its instance
    {"study": STUDY, "series": SERIES, "instance": SOP, "frame": 0},
    {"study": STUDY, "series": SERIES, "instance": SOP, "frame": True},
])
def test_invalid_documents(doc: dict) -> None:
    with pytest.raises(InvalidReference):
        parse_document(doc)


@pytest.mark.parametrize("uri", ["dicomweb:", "dicomweb:series/1.2", f"dicomweb:studies/{STUDY}/instances/{SOP}",
                                 f"dicomweb:studies/{STUDY}/series/{SERIES}/x", "dicomweb:studies/../../etc"])
def test_invalid_uris(uri: str) -> None:
    with pytest.raises(InvalidReference):
        parse_uri(uri)
