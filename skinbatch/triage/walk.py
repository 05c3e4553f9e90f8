"""Finding the images of an archive: folders walked recursively, DICOMDIR indexes followed.

A file is a candidate when its extension says DICOM, JPEG, PNG, WebP, TIFF, HEIC/HEIF or AVIF, or,
whatever its name, when its first bytes do (:func:`skinbatch.imaging.sniff.detect`: DICOM files in PACS
exports and DICOMDIR sets often have no extension, and older tools write them without the 128-byte
preamble). Candidates go to the decoder even if they later turn out to be broken: a corrupt ``.jpg``
belongs in the failure summary, not silently dropped. Everything else (reports, XML, thumbnails
databases) is skipped, and named with the reason in ``Discovery.skipped_files`` (and so in the report).

A DICOMDIR (DICOM PS3.10 media directory) is read with pydicom: every file its records reference is a
candidate, and a referenced file that is missing is reported as such. The DICOMDIR itself is an index,
not an image, and is never scored.

Hidden files and folders (``.name``) are skipped, and named; symbolic links to files are followed, links
to folders are not (they can loop).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from skinbatch.imaging.sniff import SUPPORTED, detect

IMAGE_EXTENSIONS = frozenset({
    ".dcm", ".dicom", ".dic", ".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".webp", ".tif", ".tiff",
    ".heic", ".heif", ".hif", ".avif",
})
DICOMDIR_NAME = "DICOMDIR"
HEAD_BYTES = 144
"""What content detection reads of a file: the DICOM preamble and the first element after it."""

HIDDEN = "hidden file or folder (a name starting with '.'), skipped by rule"
NOT_REGULAR = "not a regular file (a device, socket or pipe)"


def looks_like_image(head: bytes) -> bool:
    """True when the first bytes are of a format skinbatch decodes (DICOM with or without its preamble,
    JPEG, PNG, WebP, TIFF, HEIF, AVIF)."""
    return detect(head) in SUPPORTED


def skip_reason(head: bytes) -> str | None:
    """Why a file with these first bytes (and no image extension) is not scored; None when it is an image."""
    fmt = detect(head)
    if fmt in SUPPORTED:
        return None
    if not head:
        return "empty file"
    if fmt is None:
        return "not an image: neither its name nor its content is a format skinbatch decodes"
    return f"{fmt}: a format skinbatch does not decode"


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
    """Files that are not images (by name and by content); what is skipped by rule (hidden, not a regular
    file, a link not followed) is named in ``skipped_files`` but not counted here."""
    skipped_files: list[tuple[Path, str]] = field(default_factory=list)
    """Every file (and hidden folder) not scored, with the reason, in walk order."""
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


def _skip_reason(path: Path) -> str | None:
    """None for a candidate; otherwise why the file is skipped."""
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return None
    try:
        with open(path, "rb") as fh:
            return skip_reason(fh.read(HEAD_BYTES))
    except OSError:
        return None  # unreadable: let the scorer report it rather than hide it


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
        for path, skipped in _walk(root, excluded):
            if skipped:
                result.skipped_files.append((path, skipped))
            elif is_dicomdir(path):
                handle_dicomdir(path)
            elif (reason := _skip_reason(path)) is None:
                add(path)
            else:
                result.skipped += 1
                result.skipped_files.append((path, reason))
    return result


def _walk(root: Path, excluded: set[Path]) -> Iterator[tuple[Path, str]]:
    """(path, "") for each file to look at; (path, reason) for what is skipped by rule."""
    for folder, dirs, files in os.walk(root, followlinks=False):
        here = Path(folder)
        for d in sorted(dirs):
            if d.startswith("."):
                yield here / d, HIDDEN
            elif (here / d).is_symlink():
                yield here / d, "a symbolic link to a folder, not followed (links can loop)"
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and (here / d).resolve() not in excluded)
        for name in sorted(files):
            path = here / name
            if name.startswith("."):
                yield path, HIDDEN
            elif path.is_file():
                yield path, ""
            elif path.is_symlink() and not path.exists():
                yield path, "a broken symbolic link"
            else:
                yield path, NOT_REGULAR
