"""The QIDO query of PACS triage: study-level filters, instance-level checks, cache paths."""

from __future__ import annotations

from pathlib import Path

import pytest

from skinbatch.dicomweb.client import InstanceRef
from skinbatch.triage.pacs import PacsQuery, cache_path


def test_study_filters() -> None:
    q = PacsQuery(study_date="20240101-20241231", modality="XC", patient_id="P1", accession="A1")
    assert q.study_filters() == {"StudyDate": "20240101-20241231", "PatientID": "P1", "AccessionNumber": "A1",
                                 "ModalitiesInStudy": "XC"}
    assert PacsQuery().study_filters() == {}


@pytest.mark.parametrize("date", ["2024", "20240101-2024", "x", "-"])
def test_bad_dates(date: str) -> None:
    with pytest.raises(ValueError):
        PacsQuery(study_date=date)


@pytest.mark.parametrize("date", ["20240101", "20240101-", "-20241231", "20240101-20241231"])
def test_good_dates(date: str) -> None:
    assert PacsQuery(study_date=date).study_filters() == {"StudyDate": date}


def test_instance_matching() -> None:
    photo = InstanceRef("1.2", "1.2.3", "1.2.3.4", "1.2.840.10008.5.1.4.1.1.77.1.4", "XC")
    report = InstanceRef("1.2", "1.2.9", "1.2.9.1", "1.2.840.10008.5.1.4.1.1.88.33", "SR")
    assert PacsQuery().matches(photo) and not PacsQuery().matches(report)
    assert PacsQuery(modality="xc").matches(photo) and not PacsQuery(modality="US").matches(photo)
    assert not PacsQuery(sop_class="1.2.840.10008.5.1.4.1.1.7").matches(photo)


def test_cache_path_is_named_by_uids(tmp_path: Path) -> None:
    ref = InstanceRef("1.2", "1.2.3", "1.2.3.4")
    assert cache_path(tmp_path, ref) == tmp_path / "dicomweb" / "1.2" / "1.2.3" / "1.2.3.4.dcm"
