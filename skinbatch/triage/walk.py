"""Finding the images of an archive: folders walked recursively, DICOMDIR indexes followed.

A file is a candidate when its extension says DICOM, JPEG or PNG, or, whatever its name, when its first
bytes do (DICOM files in PACS exports and DICOMDIR sets often have no extension). Candidates go to the
decoder even if they later turn out to be broken: a corrupt ``.jpg`` belongs in the failure summary,
not silently dropped. Everything else (reports, XML, thumbnails databases) is skipped and counted.

A DICOMDIR (DICOM PS3.10 media directory) is read with pydicom: every file its records reference is a
candidate, and a referenced file that is missing is reported as such. The DICOMDIR itself is an index,
not an image, and is never scored.

Hidden files and folders (``.name``) are skipped; symbolic links to files are followed, links to
folders are not (they can loop).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

IMAGE_EXTENSIONS = frozenset({".dcm", ".dicom", ".dic", ".jpg", ".jpeg", ".jpe", ".jfif", ".png"})
DICOMDIR_NAME = "DICOMDIR"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def looks_like_image(head: bytes) -> bool:
    """True when the first bytes are a DICOM Part-10 preamble, a JPEG SOI or a PNG signature."""
    return head[128:132] == b"DICM" or head[:3] == b"\xff\xd8\xff" or head.startswith(_PNG_SIGNATURE)


def is_dicomdir(path: Path) -> bool:
    return path.name.upper() == DICOMDIR_NAME or path.name.upper().startswith(DICOMDIR_NAME + ".")


@dataclass
class Discovery:
    """What a walk found."""

    images: list[Path] = field(default_factory=list)
    """Candidates, each once, in a stable order (sorted within each folder)."""
    missing: list[Path] = field(default_factory=list)
    """Files a DICOMDIR references that do not exist."""
    skipped: int = 0
    """Files that are not images (by name and by content)."""
    dicomdirs: list[Path] = field(default_factory=list)
    unreadable_dicomdirs: list[tuple[Path, str]] = field(default_factory=list)


def dicomdir_references(path: Path) -> list[Path]:
    """Files referenced by a DICOMDIR, as paths under the DICOMDIR's folder.

    Raises ``ValueError`` when the file is not a readable DICOMDIR.
    """
    import warnings

    import pydicom

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path, force=True)
    except Exception as exc:  # noqa: BLE001 - any failure means "not a usable index"
        raise ValueError(f"not a readable DICOMDIR ({type(exc).__name__})") from None
    records = getattr(ds, "DirectoryRecordSequence", None)
    if records is None:
        raise ValueError("no DirectoryRecordSequence: not a DICOMDIR")
    base = path.parent
    out = []
    for record in records:
        value = record.get("ReferencedFileID")
        if value in (None, ""):
            continue
        parts = [value] if isinstance(value, str) else list(value)
        parts = [str(p).strip() for p in parts if str(p).strip()]
        if not parts or any(p in ("..", ".") or "/" in p or "\\" in p for p in parts):
            continue  # a component that could escape the media's root folder
        out.append(_case_insensitive(base, parts))
    return out


def _case_insensitive(base: Path, parts: list[str]) -> Path:
    """DICOM media file IDs are upper case; the copy on disk may have been lower-cased."""
    current = base
    for part in parts:
        candidate = current / part
        if not candidate.exists() and current.is_dir():
            lowered = {p.name.lower(): p for p in current.iterdir()}
            candidate = lowered.get(part.lower(), candidate)
        current = candidate
    return current


def _is_candidate(path: Path) -> bool:
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as fh:
            return looks_like_image(fh.read(132))
    except OSError:
        return True  # unreadable: let the scorer report it rather than hide it


def discover(paths: Iterable[str | Path], exclude: Iterable[str | Path] = ()) -> Discovery:
    """Walk files, folders and DICOMDIRs; every image once (by resolved path)."""
    result = Discovery()
    seen: set[Path] = set()
    excluded = {Path(p).resolve() for p in exclude}

    def add(p: Path) -> None:
        key = p.resolve()
        if key not in seen:
            seen.add(key)
            result.images.append(p)

    def handle_dicomdir(p: Path) -> None:
        result.dicomdirs.append(p)
        try:
            refs = dicomdir_references(p)
        except ValueError as exc:
            result.unreadable_dicomdirs.append((p, str(exc)))
            return
        for ref in refs:
            if ref.is_file():
                add(ref)
            elif ref.resolve() not in seen:
                seen.add(ref.resolve())
                result.missing.append(ref)

    for given in paths:
        root = Path(given)
        if root.is_file():
            if is_dicomdir(root):
                handle_dicomdir(root)
            else:
                add(root)  # named explicitly: always a candidate
            continue
        for path in _walk(root, excluded):
            if is_dicomdir(path):
                handle_dicomdir(path)
            elif _is_candidate(path):
                add(path)
            else:
                result.skipped += 1
    return result


def _walk(root: Path, excluded: set[Path]) -> Iterator[Path]:
    for folder, dirs, files in os.walk(root, followlinks=False):
        here = Path(folder)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (here / d).resolve() not in excluded)
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = here / name
            if path.is_file():
                yield path
