"""Triage outputs: a CSV ranked by malignancy, and a self-contained HTML report.

The CSV has one row per file and frame: scored frames first, highest P(malignant) first, then the files
that could not be scored, with the reason. Every scored row carries the per-class scores, the content's
sha256, the DICOM identifiers and the model that produced it, so a score can be traced to the exact
bytes and weights.

The HTML report (one file, no external resources) shows the highest-risk images as thumbnails of what
the model saw (the preprocessed 299×299 input), a histogram of the scores, and a summary of failures.
Thumbnails are made again from the files at report time, and only if the file still has the hash that
was scored.

Where the served model computes ``MALIGNANCY_MAP`` and the run kept it, the maps arrive as an explicit
``maps`` argument keyed by (content sha256, frame). The report then overlays each top image's map on its
thumbnail (rendering in :mod:`skinbatch.maps`), and with ``write_maps`` writes one PNG overlay per scored
frame into ``maps/`` next to the CSV, whose ``map_png`` column names it.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import html
import json
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from skinbatch.imaging import DecodeLimits, ImageDecodeError, Preprocessing, decode, preprocess
from skinbatch.maps import encode_image, heat_layer, overlay

from .state import ErrorRow, FrameRow, TriageStore

CSV_FILE = "triage.csv"
HTML_FILE = "triage.html"
SUMMARY_FILE = "triage-summary.json"
MAPS_DIR = "maps"
THUMBNAIL = 160

MapKey = tuple[str, int]
"""(sha256 of the file's bytes, frame number from 1): one scored frame."""
Maps = Mapping[MapKey, np.ndarray]
"""``MALIGNANCY_MAP`` grids (h × w, raw, as served) by frame."""

DICOM_COLUMNS = ("study_instance_uid", "series_instance_uid", "sop_instance_uid", "sop_class_uid",
                 "accession_number")

ERROR_MEANINGS: dict[str, str] = {
    "empty": "the file is empty",
    "too_large": "over the size or memory limit",
    "unsupported_format": "not DICOM, JPEG, PNG, WebP, TIFF, HEIC/HEIF or AVIF",
    "format_needs_extra": "HEIC/HEIF: install skinbatch[heic] (pillow-heif) and run again",
    "unsupported_transfer_syntax": "DICOM compression no installed decoder handles",
    "unsupported_pixel_format": "pixels of a kind not turned into RGB",
    "truncated": "the file ends early",
    "corrupt": "the bytes do not decode",
    "no_pixel_data": "DICOM without pixel data (a report, a structured document…)",
    "decompression_bomb": "more pixels than allowed, refused before decoding",
    "not_found": "missing (e.g. referenced by a DICOMDIR but not on disk); retried next run",
    "unreadable": "permission denied; retried next run",
    "io_error": "reading failed; retried next run",
    "worker_crashed": "a decoding process died; retried next run",
}


def csv_header(coarse_labels: Sequence[str], fine_labels: Sequence[str]) -> list[str]:
    return [
        "rank", "malignancy", "status", "path", "frame", "frames", "sha256", "format", "monochrome", "bytes",
        *(f"coarse:{c}" for c in coarse_labels), *(f"fine:{f}" for f in fine_labels),
        "top_class", "top_probability", "top_classes", *DICOM_COLUMNS, "error_type", "error_message",
        "model_name", "model_version", "model_trained", "weights_sha256", "taxonomy_sha256", "scored_at",
        "map_png",
    ]


def _model_cells(model: dict[str, Any]) -> list[Any]:
    return [model.get("name", ""), model.get("version", ""), model.get("trained", ""),
            model.get("weights_sha256", ""), model.get("taxonomy_sha256", "")]


def frame_csv_row(rank: int, row: FrameRow, coarse_labels: Sequence[str], fine_labels: Sequence[str],
                  model: dict[str, Any], map_png: str = "") -> list[Any]:
    top = row.top_classes[0] if row.top_classes else {"name": "", "probability": ""}
    dicom = row.dicom or {}
    return [
        rank, f"{row.malignancy:.6f}", "scored", row.path, row.frame, row.frames, row.sha256, row.format,
        int(row.monochrome), row.bytes,
        *(f"{row.coarse.get(c, float('nan')):.6f}" for c in coarse_labels),
        *(f"{row.fine.get(f, float('nan')):.6f}" for f in fine_labels),
        top["name"], top["probability"] if top["probability"] == "" else f"{top['probability']:.6f}",
        json.dumps(row.top_classes, ensure_ascii=False), *(dicom.get(k, "") for k in DICOM_COLUMNS), "", "",
        *_model_cells(model), row.scored_at, map_png,
    ]


def error_csv_row(row: ErrorRow, n_coarse: int, n_fine: int, model: dict[str, Any]) -> list[Any]:
    return [
        "", "", "failed", row.path, "", "", row.sha256 or "", "", "", row.bytes if row.bytes is not None else "",
        *([""] * (n_coarse + n_fine)), "", "", "", *([""] * len(DICOM_COLUMNS)), row.error_type,
        row.error_message, *_model_cells(model), "", "",
    ]


def skipped_csv_row(path: str, reason: str, n_coarse: int, n_fine: int, model: dict[str, Any]) -> list[Any]:
    """A file the walk did not score (not an image, hidden, not a regular file), with the reason."""
    return [
        "", "", "skipped", path, "", "", "", "", "", "",
        *([""] * (n_coarse + n_fine)), "", "", "", *([""] * len(DICOM_COLUMNS)), "skipped", reason,
        *_model_cells(model), "", "",
    ]


def write_csv(store: TriageStore, path: Path, coarse_labels: Sequence[str], fine_labels: Sequence[str],
              map_files: Mapping[MapKey, str] | None = None, skipped: Sequence[tuple[str, str]] = ()) -> int:
    """Write the ranked CSV; returns the number of scored rows. ``map_files``: overlay PNGs by frame,
    relative to the CSV's folder. ``skipped``: (path, reason) of the files not scored, as rows with
    status ``skipped``."""
    map_files = map_files or {}
    n = 0
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(csv_header(coarse_labels, fine_labels))
        for n, row in enumerate(store.frame_rows(), 1):
            w.writerow(frame_csv_row(n, row, coarse_labels, fine_labels, store.model,
                                     map_files.get((row.sha256, row.frame), "")))
        for err in store.error_rows():
            w.writerow(error_csv_row(err, len(coarse_labels), len(fine_labels), store.model))
        for skipped_path, reason in skipped:
            w.writerow(skipped_csv_row(skipped_path, reason, len(coarse_labels), len(fine_labels), store.model))
    tmp.replace(path)
    return n


# -- HTML pieces (pure) ------------------------------------------------------------------------------

def histogram_counts(values: Sequence[float], bins: int = 20) -> list[int]:
    counts = [0] * bins
    for v in values:
        counts[min(bins - 1, max(0, int(v * bins)))] += 1
    return counts


def svg_histogram(values: Sequence[float], bins: int = 20, width: int = 640, height: int = 220) -> str:
    """An inline SVG histogram of scores in [0, 1]."""
    counts = histogram_counts(values, bins)
    top = max(counts) or 1
    left, bottom, right, top_pad = 44, 34, 10, 12
    plot_w, plot_h = width - left - right, height - bottom - top_pad
    bar_w = plot_w / bins
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}" role="img" aria-label="Histogram of P(malignant)">']
    for i, c in enumerate(counts):
        h = plot_h * c / top
        x = left + i * bar_w
        hue = 120 - 120 * (i + 0.5) / bins  # green (low risk) to red (high risk)
        parts.append(f'<rect x="{x + 1:.1f}" y="{top_pad + plot_h - h:.1f}" width="{bar_w - 2:.1f}" height="{h:.1f}" '
                     f'fill="hsl({hue:.0f},65%,50%)"><title>{i / bins:.2f}–{(i + 1) / bins:.2f}: {c}</title></rect>')
    axis_y = top_pad + plot_h
    parts.append(f'<line x1="{left}" y1="{axis_y}" x2="{left + plot_w}" y2="{axis_y}" stroke="#333"/>')
    parts.append(f'<line x1="{left}" y1="{top_pad}" x2="{left}" y2="{axis_y}" stroke="#333"/>')
    for k in range(0, 11, 2):
        x = left + plot_w * k / 10
        parts.append(f'<text x="{x:.1f}" y="{axis_y + 16}" font-size="11" text-anchor="middle">{k / 10:.1f}</text>')
    parts.append(f'<text x="{left + plot_w / 2:.0f}" y="{height - 2}" font-size="12" text-anchor="middle">'
                 'P(malignant)</text>')
    for frac in (0, 0.5, 1):
        y = axis_y - plot_h * frac
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{top * frac:g}</text>')
    parts.append("</svg>")
    return "".join(parts)


def model_input(path: str, sha256: str, frame: int, preprocessing: Preprocessing,
                limits: DecodeLimits | None = None) -> np.ndarray | None:
    """The model's input (size × size × 3 uint8) for one frame, or None if the file changed or is gone."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return None
    if hashlib.sha256(data).hexdigest() != sha256:
        return None
    try:
        decoded = decode(data, limits=limits, target=preprocessing)
    except ImageDecodeError:
        return None
    frames = [f for f in decoded.frames if f.number == frame] or list(decoded.frames[:1])
    if not frames:
        return None
    return preprocess(frames[0].pixels, preprocessing)


def _thumbnail(pixels: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.LANCZOS))


def _jpeg_data_uri(rgb: np.ndarray) -> str:
    return "data:image/jpeg;base64," + base64.b64encode(encode_image(rgb, "JPEG", 82)).decode("ascii")


def _jpeg_uri(pixels: np.ndarray, size: int = THUMBNAIL) -> str:
    return _jpeg_data_uri(_thumbnail(pixels, size))


def thumbnail_data_uri(path: str, sha256: str, frame: int, preprocessing: Preprocessing,
                       limits: DecodeLimits | None = None, size: int = THUMBNAIL) -> str | None:
    """A JPEG data URI of the model's input for one frame, or None if the file changed or is gone."""
    pixels = model_input(path, sha256, frame, preprocessing, limits)
    return None if pixels is None else _jpeg_uri(pixels, size)


def overlay_data_uri(pixels: np.ndarray, cam: np.ndarray, size: int = THUMBNAIL) -> str:
    """A PNG data URI of the map alone, translucent, at the thumbnail's size: the page lays it over the
    thumbnail (one JPEG per image, the map as a layer that hovering hides)."""
    height, width = _thumbnail(pixels, size).shape[:2]
    layer = heat_layer(cam, (height, width))
    return "data:image/png;base64," + base64.b64encode(encode_image(layer, "PNG")).decode("ascii")


def map_png_name(key: MapKey) -> str:
    """Stable across runs and resumes: named by content and frame, not by rank."""
    return f"{MAPS_DIR}/{key[0]}_{key[1]}.png"


def write_map_overlays(store: TriageStore, out_dir: Path, maps: Maps, preprocessing: Preprocessing,
                       limits: DecodeLimits | None = None) -> dict[MapKey, str]:
    """One PNG per scored frame that has a map: the map over the model's input, full size. Returns the
    files by frame, relative to ``out_dir``. A file that changed since it was scored gets none."""
    written: dict[MapKey, str] = {}
    for row in store.frame_rows():
        key = (row.sha256, row.frame)
        if key in written or key not in maps:
            continue
        pixels = model_input(row.path, row.sha256, row.frame, preprocessing, limits)
        if pixels is None:
            continue
        target = out_dir / map_png_name(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(".png.tmp")
        tmp.write_bytes(encode_image(overlay(pixels, maps[key])))
        tmp.replace(target)
        written[key] = map_png_name(key)
    return written


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#1d232a;background:#f6f7f9}
h1{margin:0 0 4px;font-size:24px} h2{margin:28px 0 10px;font-size:18px}
.meta{color:#555;font-size:13px} .warn{background:#fff3cd;border:1px solid #e0b400;padding:10px 14px;
border-radius:6px;margin:14px 0;font-weight:600}
.stats{display:flex;gap:12px;flex-wrap:wrap;margin:14px 0}
.stat{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:10px 16px;min-width:110px}
.stat b{display:block;font-size:22px} .stat span{color:#555;font-size:12px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(220px,1fr));gap:12px}
.card{background:#fff;border:1px solid #dde1e6;border-radius:8px;padding:10px;font-size:12px;overflow:hidden}
.card img,.card .noimg{width:160px;height:160px;display:block;margin:0 auto 8px;border-radius:4px;background:#e9ecef}
.pair{position:relative;width:160px;height:160px;margin:0 auto 8px} .pair img{position:absolute;left:0;top:0;margin:0}
.pair img.map{transition:opacity .15s} .pair:hover img.map{opacity:0}
.maplegend{color:#555;font-size:12px;margin:-4px 0 10px}
.noimg{line-height:160px;text-align:center;color:#777}
.rank{font-weight:700;font-size:14px} .score{font-size:18px;font-weight:700}
.bar{height:6px;background:#e9ecef;border-radius:3px;margin:4px 0 6px}
.bar i{display:block;height:6px;border-radius:3px}
.path{color:#333;word-break:break-all}
.uid{color:#666;font-family:ui-monospace,monospace;font-size:10px;word-break:break-all}
table{border-collapse:collapse;background:#fff;font-size:13px}
th,td{border:1px solid #dde1e6;padding:6px 10px;text-align:left;vertical-align:top}
th{background:#eef1f4} td.num{text-align:right} .examples{font-size:11px;color:#555;word-break:break-all}
"""


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


class TopImage(NamedTuple):
    """One card of the report's highest-risk grid."""

    rank: int
    row: FrameRow
    thumbnail: str | None
    """Data URI of the model's input, or None if the file is gone or changed."""
    also: int
    """Other paths holding the same content."""
    overlay: str | None = None
    """Data URI of the malignancy map over the thumbnail, where the run kept a map."""


def _card_html(rank: int, row: FrameRow, uri: str | None, also: int, overlay_uri: str | None = None) -> str:
    pct = 100 * row.malignancy
    hue = 120 - 120 * row.malignancy
    if uri and overlay_uri:
        # The overlay sits on the plain thumbnail; hovering hides it to show the image alone.
        img = (f'<div class="pair" title="malignancy map; hover to hide">'
               f'<img src="{uri}" alt="model input, rank {rank}">'
               f'<img class="map" src="{overlay_uri}" alt="malignancy map over the model input, rank {rank}"></div>')
    elif uri:
        img = f'<img src="{uri}" alt="model input, rank {rank}">'
    else:
        img = '<div class="noimg">no thumbnail</div>'
    top = row.top_classes[0] if row.top_classes else None
    name = Path(row.path).name
    frame = f" · frame {row.frame}/{row.frames}" if row.frames > 1 else ""
    dicom = row.dicom or {}
    uid = f'<div class="uid">SOP {_esc(dicom["sop_instance_uid"])}</div>' if dicom.get("sop_instance_uid") else ""
    dup = f"<div>+{also} other path(s), same content</div>" if also else ""
    top_html = f"<div>top class: {_esc(top['name'])} ({100 * top['probability']:.1f}%)</div>" if top else ""
    return (
        f'<div class="card">{img}<div class="rank">#{rank}</div>'
        f'<div class="score">{pct:.1f}%</div>'
        f'<div class="bar"><i style="width:{pct:.1f}%;background:hsl({hue:.0f},65%,45%)"></i></div>'
        f'{top_html}<div class="path" title="{_esc(row.path)}">{_esc(name)}{frame}</div>{uid}'
        f'<div class="uid">sha256 {row.sha256[:16]}…</div>{dup}</div>'
    )


MAP_LEGEND = ("Coloured overlay: where the network found evidence for “malignant” (class activation map of "
              "P(malignant), relative within each image: red most, blue little; uncoloured none or against). "
              "Hover over an image to see it alone.")


def skipped_html(skipped: Sequence[tuple[str, str]]) -> str:
    """Every skipped file, grouped by reason (the CSV lists them too)."""
    if not skipped:
        return "<p>Nothing skipped.</p>"
    by_reason: dict[str, list[str]] = defaultdict(list)
    for path, reason in skipped:
        by_reason[reason].append(path)
    rows = "".join(
        f"<tr><td>{_esc(reason)}</td><td class=num>{len(paths)}</td>"
        f'<td class="examples"><details><summary>{_esc(paths[0])}{" …" if len(paths) > 1 else ""}</summary>'
        f'{"<br>".join(_esc(p) for p in paths)}</details></td></tr>'
        for reason, paths in sorted(by_reason.items(), key=lambda kv: (-len(kv[1]), kv[0])))
    return "<table><tr><th>reason</th><th>files</th><th>files skipped</th></tr>" + rows + "</table>"


def render_html(*, model: dict[str, Any], run: dict[str, Any], top: Sequence[TopImage | tuple[Any, ...]],
                scores: Sequence[float], errors: Sequence[ErrorRow], csv_name: str, generated_at: str,
                skipped: Sequence[tuple[str, str]] = ()) -> str:
    """The whole report page. Pure: thumbnails and overlays arrive as data URIs."""
    images = [TopImage(*entry) for entry in top]
    untrained = (
        '<div class="warn">Untrained model (demo weights): these scores are random and must not be used '
        "clinically.</div>" if not model.get("trained", False) else "")
    by_type: dict[str, list[ErrorRow]] = defaultdict(list)
    for e in errors:
        by_type[e.error_type].append(e)
    stats = [
        (run.get("files_total", len(scores)), "files found"),
        (run.get("contents_scored", 0), "images scored"),
        (len(scores), "frames scored"),
        (len(errors), "failed"),
        (run.get("skipped_not_images", 0), "skipped (not images)"),
    ]
    failure_rows = "".join(
        f"<tr><td>{_esc(t)}</td><td class=num>{len(rows)}</td><td>{_esc(ERROR_MEANINGS.get(t, ''))}</td>"
        f'<td class="examples">{"<br>".join(_esc(r.path) for r in rows[:5])}'
        f'{"<br>…" if len(rows) > 5 else ""}</td></tr>'
        for t, rows in sorted(by_type.items(), key=lambda kv: (-len(kv[1]), kv[0])))
    failures = (
        "<table><tr><th>error</th><th>files</th><th>meaning</th><th>examples</th></tr>" + failure_rows + "</table>"
        if errors else "<p>No failures.</p>")
    cards = "".join(_card_html(t.rank, t.row, t.thumbnail, t.also, t.overlay) for t in images)
    legend = f'<p class="maplegend">{_esc(MAP_LEGEND)}</p>' if any(t.overlay for t in images) else ""
    weights = str(model.get("weights_sha256", ""))[:16]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>skinbatch triage report</title>
<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>
<body>
<h1>skinbatch triage report</h1>
<div class="meta">Model {_esc(model.get('name', '?'))} version {_esc(model.get('version', '?'))}
 · weights sha256 {_esc(weights)}… · generated {_esc(generated_at)}
 · full list: <a href="{_esc(csv_name)}">{_esc(csv_name)}</a></div>
{untrained}
<div class="stats">{''.join(f'<div class="stat"><b>{_esc(v)}</b><span>{_esc(k)}</span></div>' for v, k in stats)}</div>
<h2>Highest risk ({len(top)} shown)</h2>
{legend}<div class="grid">{cards or '<p>No scored images.</p>'}</div>
<h2>Distribution of P(malignant) over {len(scores)} frames</h2>
{svg_histogram(scores)}
<h2>Failures</h2>
{failures}
<h2>Skipped ({len(skipped)} files not scored)</h2>
{skipped_html(skipped)}
</body></html>
"""


def _top_image(rank: int, row: FrameRow, also: int, preprocessing: Preprocessing, limits: DecodeLimits | None,
               maps: Maps) -> TopImage:
    pixels = model_input(row.path, row.sha256, row.frame, preprocessing, limits)
    if pixels is None:
        return TopImage(rank, row, None, also)
    cam = maps.get((row.sha256, row.frame))
    return TopImage(rank, row, _jpeg_uri(pixels), also, None if cam is None else overlay_data_uri(pixels, cam))


def write_reports(store: TriageStore, out_dir: Path, coarse_labels: Sequence[str], fine_labels: Sequence[str],
                  preprocessing: Preprocessing, run: dict[str, Any], top_n: int = 24,
                  limits: DecodeLimits | None = None, maps: Maps | None = None,
                  write_maps: bool = False, skipped: Sequence[tuple[str, str]] = ()) -> dict[str, Path]:
    """CSV, HTML and a JSON summary into ``out_dir``; returns their paths.

    ``maps``: ``MALIGNANCY_MAP`` by (sha256, frame), overlaid on the top images' thumbnails. With
    ``write_maps`` (``--maps``), every frame with a map also gets a PNG overlay in ``out_dir/maps/``,
    named in the CSV's ``map_png`` column, and the result has a ``maps`` entry. ``skipped``: (path,
    reason) of every file the walk did not score, named in the CSV, the HTML and the summary's counts.
    """
    maps = maps or {}
    out_dir.mkdir(parents=True, exist_ok=True)
    outputs: dict[str, Path] = {}
    map_files: dict[MapKey, str] = {}
    if write_maps and maps:
        map_files = write_map_overlays(store, out_dir, maps, preprocessing, limits)
        outputs["maps"] = out_dir / MAPS_DIR
    csv_path = out_dir / CSV_FILE
    write_csv(store, csv_path, coarse_labels, fine_labels, map_files, skipped)
    scores: list[float] = []
    paths_per_content: Counter[tuple[str, int]] = Counter()
    top_rows: list[FrameRow] = []
    seen: set[tuple[str, int]] = set()
    for row in store.frame_rows():
        key = (row.sha256, row.frame)
        if key not in paths_per_content:
            scores.append(row.malignancy)  # each distinct frame once, however many paths hold it
        paths_per_content[key] += 1
        if key not in seen and len(top_rows) < top_n:
            seen.add(key)
            top_rows.append(row)
    errors = list(store.error_rows())
    top = [_top_image(rank, row, paths_per_content[(row.sha256, row.frame)] - 1, preprocessing, limits, maps)
           for rank, row in enumerate(top_rows, 1)]
    generated = datetime.now(timezone.utc).isoformat(timespec="seconds")
    html_path = out_dir / HTML_FILE
    html_path.write_text(render_html(model=store.model, run=run, top=top, scores=scores, errors=errors,
                                     csv_name=CSV_FILE, generated_at=generated, skipped=skipped),
                         encoding="utf-8")
    summary_path = out_dir / SUMMARY_FILE
    summary = {**run, "generated_at": generated, "model": store.model, "frames_scored_total": len(scores),
               "failures_by_type": dict(Counter(e.error_type for e in errors)),
               "skipped_by_reason": dict(Counter(reason for _, reason in skipped)),
               "csv": CSV_FILE, "html": HTML_FILE, "map_overlays": len(map_files),
               "maps": MAPS_DIR if map_files else None}
    summary_path.write_text(json.dumps(summary, indent=1, default=str) + "\n", encoding="utf-8")
    return {"csv": csv_path, "html": html_path, "summary": summary_path, **outputs}
