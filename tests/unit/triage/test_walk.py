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


def test_every_photo_format_is_found_by_name_or_content_and_every_other_file_is_named(tmp_path: Path) -> None:
    import io
    import os

    from pydicom.filewriter import dcmwrite

    from tests.unit.imaging import _factories as f

    ds = f.dicom_dataset([f.photo(64, 48)], transfer_syntax=f.IMPLICIT_LE)
    ds.preamble = None
    del ds.file_meta
    buf = io.BytesIO()
    dcmwrite(buf, ds, enforce_file_format=False, implicit_vr=True, little_endian=True)
    (tmp_path / "IM0001").write_bytes(buf.getvalue())  # no preamble, no "DICM", no extension
    tiff = b"II*\x00" + bytes(60)
    (tmp_path / "scan.tif").write_bytes(tiff)
    (tmp_path / "SCAN0002").write_bytes(tiff)  # by content
    (tmp_path / "photo.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(40))
    (tmp_path / "UPLOAD").write_bytes(b"RIFF\x00\x00\x00\x00WEBPVP8 " + bytes(40))
    (tmp_path / "a.avif").write_bytes(b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf" + bytes(40))
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "report.bin").write_bytes(b"%PDF-1.7 ...")
    (tmp_path / "anim").write_bytes(b"GIF89a" + bytes(20))
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / ".DS_Store").write_bytes(b"x")
    os.mkfifo(tmp_path / "pipe")
    (tmp_path / "gone").symlink_to(tmp_path / "nowhere")
    found = discover([tmp_path])
    assert sorted(p.name for p in found.images) == ["IM0001", "SCAN0002", "UPLOAD", "a.avif", "photo.HEIC",
                                                    "scan.tif"]
    reasons = {p.name: why for p, why in found.skipped_files}
    assert set(reasons) == {"notes.txt", "report.bin", "anim", "empty", ".DS_Store", "pipe", "gone"}
    assert reasons["report.bin"].startswith("PDF") and reasons["anim"].startswith("GIF")
    assert "not an image" in reasons["notes.txt"] and reasons["empty"] == "empty file"
    assert "hidden" in reasons[".DS_Store"] and "regular" in reasons["pipe"] and "broken" in reasons["gone"]
    assert found.skipped == 4  # not images; hidden files, pipes and links are skipped by rule
