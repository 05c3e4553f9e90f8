"""``skinbatch triage ARCHIVE... --triton-url URL --out DIR``: score archives into a ranked report."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from skinbatch.connect.options import TritonSettings, TritonTarget, triton_options
from skinbatch.contract import EXIT_CODE_EPILOG, ConfigurationError, ExitCode
from skinbatch.dicomweb.options import dicomweb_options
from skinbatch.imaging import DecodeLimits
from skinbatch.settings import JSON, MIB, OUT_DIR, PROGRESS, Alias, PipelineSettings, megabytes, options
from skinbatch.status.health import check_triton

from .progress import Progress
from .report import write_reports
from .run import Runner, RunOptions, RunSummary, default_workers
from .state import TriageStore
from .walk import Discovery, discover

if TYPE_CHECKING:
    from skinbatch.dicomweb.client import DicomWebSettings


def _err(message: str) -> None:
    click.echo(f"triage: {message}", err=True)


def exit_code_for(summary: RunSummary, failed: int) -> ExitCode:
    if summary.interrupted:
        return ExitCode.INTERRUPTED
    if summary.model_changed:
        return ExitCode.MODEL_CHANGED
    if summary.triton_error:
        return ExitCode.TRITON_DOWN
    return ExitCode.PARTIAL if failed else ExitCode.OK


@click.command("triage", epilog=EXIT_CODE_EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("archives", nargs=-1, required=False,
                type=click.Path(exists=True, path_type=Path))
@triton_options()
@OUT_DIR.option(help="Folder for the report, the CSV and the resumable state. Re-running with the same folder "
                     "continues where the last run stopped.")
@options(TritonSettings, only=("model",))
@options(PipelineSettings, only=("decode_workers", "max_infer_requests", "shared_memory", "max_image_bytes",
                                 "max_pixels"),
         decode_workers={"default": default_workers, "show_default": "CPUs - 1", "aliases": (Alias("--workers"),)},
         max_infer_requests={"aliases": (Alias("--max-in-flight"),)},
         max_image_bytes={"default": 128 * MIB, "aliases": (
             Alias("--max-file-mb", convert=megabytes, type=click.FloatRange(min=0.001)),)})
@click.option("--maps", "write_maps", is_flag=True,
              help="Write a PNG overlay of the malignancy map of every scored frame into --out/maps/.")
@click.option("--top", "top_n", type=click.IntRange(min=0), default=24, show_default=True,
              help="Highest-risk images shown as thumbnails in the HTML report.")
@click.option("--triton-retry", "triton_retry_s", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="Seconds to wait for a failing Triton to recover before stopping (the run resumes later).")
@PROGRESS.option()
@JSON.option(help="Print the run summary as JSON on stdout.")
@dicomweb_options(help="Also (or instead of folders) score what a QIDO-RS query finds in this DICOMweb archive.")
@click.option("--study-date", default=None, help="QIDO: StudyDate YYYYMMDD or range YYYYMMDD-YYYYMMDD.")
@click.option("--modality", default=None, help="QIDO: modality of the series, e.g. XC (external camera).")
@click.option("--sop-class", default=None,
              help="QIDO: SOP Class UID, e.g. 1.2.840.10008.5.1.4.1.1.77.1.4 (VL Photographic Image).")
@click.option("--patient-id", default=None, help="QIDO: PatientID.")
@click.option("--accession", default=None, help="QIDO: AccessionNumber.")
def triage(archives: tuple[Path, ...], triton: TritonTarget, out_dir: Path, model: str, decode_workers: int,
           max_infer_requests: int, shared_memory: str, max_image_bytes: int, max_pixels: int, write_maps: bool,
           top_n: int, triton_retry_s: float,
           show_progress: bool | None, as_json: bool, dicomweb: DicomWebSettings | None, study_date: str | None,
           modality: str | None, sop_class: str | None, patient_id: str | None, accession: str | None) -> None:
    """Score every image under ARCHIVE... (folders, files, DICOMDIRs) and rank them by malignancy.

    With --dicomweb-url, also score the instances of a PACS or VNA that a QIDO-RS query matches
    (--study-date, --modality, --sop-class, --patient-id, --accession; all optional). They are fetched
    by WADO-RS into --out/dicomweb/ (the report's thumbnails are drawn from there), each once.

    Walks folders recursively for DICOM, JPEG, PNG, WebP, TIFF, HEIC and AVIF files (by extension or
    content; DICOM also without its preamble), names every other file with its reason, follows
    DICOMDIR indexes, and scores each frame on Triton through the same decoding as the Kafka
    consumer. Writes triage.csv (ranked, with per-class scores, identifiers, model version and
    errors), triage.html (thumbnails of the highest-risk images, histogram, failures) and
    triage-summary.json into --out. Content already scored there (by sha256) is never scored again,
    so an interrupted run continues where it stopped.
    """
    health = check_triton(triton, model=model)
    if health.exit_code != ExitCode.OK:
        for problem in health.problems:
            _err(problem)
        sys.exit(int(health.exit_code))

    out_dir = out_dir.resolve()
    qido_filters = (study_date, modality, sop_class, patient_id, accession)
    if not archives and dicomweb is None:
        raise ConfigurationError("give folders or files to score, or a DICOMweb archive with --dicomweb-url")
    if any(qido_filters) and dicomweb is None:
        raise ConfigurationError("--study-date, --modality, --sop-class, --patient-id and --accession query a "
                                 "DICOMweb archive: add --dicomweb-url")
    found = discover(archives, exclude=[out_dir])
    pacs_errors: list[tuple[Path, str, str]] = []
    if dicomweb is not None:
        pacs_errors = _fetch_from_pacs(found, out_dir, dicomweb, qido_filters, quiet=as_json)
    for dicomdir, why in found.unreadable_dicomdirs:
        _err(f"a DICOMDIR could not be read ({why}); its folder is still walked")
    if not found.images and not found.missing and not pacs_errors:
        _err(f"no DICOM, JPEG, PNG, WebP, TIFF, HEIC or AVIF files found under the given paths "
             f"({found.skipped} other files skipped)")
        sys.exit(int(ExitCode.NO_INPUT))

    limits = DecodeLimits(max_bytes=max_image_bytes, max_pixels=max_pixels,
                          max_total_pixels=max(2 * max_pixels, DecodeLimits().max_total_pixels))
    run_options = RunOptions(triton=triton, model=model, workers=decode_workers, max_in_flight=max_infer_requests,
                         shared_memory=shared_memory,
                         limits=limits, triton_retry_s=triton_retry_s)
    with Runner(run_options) as runner:
        card = runner.card
        store = TriageStore.open(out_dir, card.model_summary())  # StateMismatchError: 2
        try:
            for missing in found.missing:
                store.record_path_error(os.path.abspath(missing), "not_found",
                                        "referenced by a DICOMDIR but not on disk")
            for path, error_type, message in pacs_errors:
                store.record_path_error(os.path.abspath(path), error_type, message)
            store.commit()
            if not card.trained and not as_json:
                _err("the served model is UNTRAINED (demo weights): its scores are random")
            progress = Progress(len(found.images), enabled=show_progress)
            summary = runner.run(found.images, store, progress, on_event=_err)
            current = {os.path.abspath(p) for p in [*found.images, *found.missing, *(e[0] for e in pacs_errors)]}
            failed = sum(1 for _ in store.error_rows(paths=current))
            run_info: dict[str, Any] = {
                **summary.to_dict(),
                "files_total": len(found.images) + len(found.missing) + len(pacs_errors),
                "missing_references": len(found.missing),
                "skipped_not_images": found.skipped,
                "failed_total": failed,
                "contents_scored": store.counts()["contents_scored"],
            }
            outputs = write_reports(store, out_dir, card.coarse_labels, card.fine_labels,
                                    card.preprocessing_spec(), run_info, top_n=top_n, limits=limits,
                                    maps=store.maps(), write_maps=write_maps,
                                    skipped=[(os.path.abspath(p), why) for p, why in found.skipped_files])
        finally:
            store.close()
    code = exit_code_for(summary, failed)
    run_info["exit_code"] = int(code)
    if as_json:
        click.echo(json.dumps({**run_info, "outputs": {k: str(v) for k, v in outputs.items()}}, default=str))
    else:
        click.echo(
            f"{run_info['files_total']} files: {summary.scored} scored now ({summary.frames_scored} frames), "
            f"{summary.resumed} done before, {summary.duplicates} duplicates, {failed} failed, "
            f"{found.skipped} non-image files skipped; {summary.elapsed_s:.1f} s")
        click.echo(f"report: {outputs['html']}\nranked: {outputs['csv']}")
    if summary.interrupted:
        _err("interrupted: finished images are saved; run the same command again to continue")
    elif summary.model_changed:
        _err(f"{summary.triton_error}. Images scored before the change are saved here, with the old model; "
             "score the archive with the new model into a new --out folder")
    elif summary.triton_error:
        _err(f"{summary.triton_error}. Finished images are saved; start Triton and run the same command again")
    elif failed:
        _err(f"{failed} file(s) could not be scored; see the Failures section of the report")
    sys.exit(int(code))


def _fetch_from_pacs(found: Discovery, out_dir: Path, settings: DicomWebSettings,
                     filters: tuple[str | None, ...], quiet: bool) -> list[tuple[Path, str, str]]:
    """Add the archive's matching instances (fetched into ``out_dir``) to ``found``; return fetch failures."""
    from skinbatch.dicomweb.client import ArchiveError, ArchiveUnavailable, DicomWebArchive

    from .pacs import PacsQuery, fetch, find_instances

    query = PacsQuery(*filters)  # ConfigurationError: 2
    archive = DicomWebArchive(settings)
    archive.probe()  # ArchiveProblem: a refused certificate (13), refused credentials (12), no answer (8)
    try:
        studies, refs = find_instances(archive, query)
    except ArchiveUnavailable as exc:
        # Down, timing out, 5xx, or refusing the credentials: not a mistake in the command line.
        raise ArchiveUnavailable(f"searching the DICOMweb archive failed: {exc}. Check that the archive is up "
                                 "and the credentials, then run the same command again") from exc
    except ArchiveError as exc:
        raise ConfigurationError(f"the DICOMweb archive refused the search: {exc}. Check --dicomweb-url and the "
                                 "filters") from exc
    if not quiet:
        _err(f"DICOMweb: {studies} studies and {len(refs)} image instances match")
    fetched = fetch(archive, refs, out_dir)
    found.images.extend(fetched.paths)
    errors = [(p, "not_found", f"{why}; listed by the search but not retrievable") for p, why in fetched.not_found]
    errors += [(p, "io_error", f"{why}; retried on the next run") for p, why in fetched.unavailable]
    return errors


if __name__ == "__main__":
    from skinbatch.cli import run_standalone

    run_standalone(triage)
