"""Discovery: folders, names and magic bytes, DICOMDIR indexes, hidden and excluded folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from skinbatch.samples import pydicom_colour_files, synthetic_jpeg, synthetic_png
from skinbatch.triage.walk import dicomdir_references, discover, looks_like_image


def _dicom_set(folder: Path, names: tuple[str, ...] = ("SC_rgb_rle_2frame.dcm", "SC_rgb_jpeg_dcmtk.dcm")) -> list[Path]:
    """A DICOM File-set (DICOMDIR + IMxxxxxx files without extensions), written by pydicom."""
    import pydicom
    from pydicom.fileset import FileSet

    fs = FileSet()
    for path in pydicom_colour_files():
        if path.name in names:
            fs.add(pydicom.dcmread(path))
    fs.write(folder)
    return sorted(p for p in folder.rglob("IM*"))


def test_magic_bytes() -> None:
    assert looks_like_image(synthetic_jpeg(32, 32)[:132])
    assert looks_like_image(synthetic_png(32, 32)[:132])
    assert looks_like_image(b"\0" * 128 + b"DICM")
    assert not looks_like_image(b"%PDF-1.7 ...")


def test_walks_recursively_by_extension_and_content(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "one.JPG").write_bytes(synthetic_jpeg(40, 30))
    (tmp_path / "a" / "b" / "two.png").write_bytes(synthetic_png(40, 30))
    shutil.copy(pydicom_colour_files()[0], tmp_path / "a" / "b" / "NOEXT")  # DICOM without extension
    (tmp_path / "a" / "broken.jpg").write_bytes(b"not really")  # named as an image: still a candidate
    (tmp_path / "a" / "notes.txt").write_text("x")
    (tmp_path / ".hidden").mkdir()
    (tmp_path / ".hidden" / "x.jpg").write_bytes(synthetic_jpeg(40, 30))
    found = discover([tmp_path])
    names = sorted(p.name for p in found.images)
    assert names == ["NOEXT", "broken.jpg", "one.JPG", "two.png"]
    assert found.skipped == 1


def test_files_are_listed_once_and_out_dir_is_excluded(tmp_path: Path) -> None:
    img = tmp_path / "x.jpg"
    img.write_bytes(synthetic_jpeg(40, 30))
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "thumb.jpg").write_bytes(synthetic_jpeg(40, 30))
    found = discover([tmp_path, img], exclude=[tmp_path / "out"])
    assert [p.name for p in found.images] == ["x.jpg"]


def test_dicomdir_references_are_followed(tmp_path: Path) -> None:
    images = _dicom_set(tmp_path)
    refs = dicomdir_references(tmp_path / "DICOMDIR")
    assert sorted(refs) == images
    found = discover([tmp_path / "DICOMDIR"])  # the index alone is enough
    assert sorted(found.images) == images and found.dicomdirs == [tmp_path / "DICOMDIR"]
    # walking the folder finds each file once, and never scores the DICOMDIR itself
    walked = discover([tmp_path])
    assert sorted(walked.images) == images


def test_missing_dicomdir_references_are_reported(tmp_path: Path) -> None:
    images = _dicom_set(tmp_path)
    images[0].unlink()
    found = discover([tmp_path])
    assert found.missing == [images[0]]
    assert found.images == [images[1]]


def test_unreadable_dicomdir_is_reported_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "DICOMDIR").write_bytes(b"garbage")
    (tmp_path / "x.png").write_bytes(synthetic_png(20, 20))
    found = discover([tmp_path])
    assert [p.name for p in found.images] == ["x.png"]
    assert len(found.unreadable_dicomdirs) == 1


@pytest.mark.parametrize("name", ["dicomdir", "DICOMDIR"])
def test_lower_case_copies_of_a_file_set_resolve(tmp_path: Path, name: str) -> None:
    images = _dicom_set(tmp_path)
    for p in sorted(tmp_path.rglob("*"), key=lambda p: -len(p.parts)):
        p.rename(p.with_name(p.name.lower()))
    refs = dicomdir_references(tmp_path / "dicomdir")
    assert all(r.is_file() for r in refs) and len(refs) == len(images)
