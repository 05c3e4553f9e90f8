"""Evaluation outputs: metrics.json, per-case scores.csv, PNG plots, summary.md / summary.html, and the
reference distribution of P(malignant) that score-drift monitoring compares served scores with."""

from __future__ import annotations

import base64
import csv
import html
import json
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from skinbatch.drift import FILE_NAME as REFERENCE_FILE, ReferenceDistribution

from .compute import CaseScores, Evaluation, MulticlassResult, TaskResult
from .labels import Case

METRICS_FILE = "metrics.json"
SCORES_FILE = "scores.csv"
MARKDOWN_FILE = "summary.md"
HTML_FILE = "summary.html"


def _pct(x: float | None) -> str:
    return "-" if x is None or x != x else f"{100 * x:.1f}%"


def _auc(t: TaskResult) -> str:
    if t.auc is None:
        return "-"
    ci = f" ({t.auc_ci.low:.3f}–{t.auc_ci.high:.3f})" if t.auc_ci else ""
    return f"{t.auc:.3f}{ci}"


def write_scores_csv(path: Path, cases: Sequence[Case], scores: dict[str, CaseScores], ev: Evaluation,
                     coarse_labels: Sequence[str], fine_labels: Sequence[str],
                     failures: dict[str, str]) -> None:
    task_scores = {t.key: {p: s for p, _, s in t.case_scores} for t in ev.tasks}
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "true_coarse", "true_fine", "frames", "malignancy",
                    *(f"task:{t.key}" for t in ev.tasks), "predicted_coarse", "predicted_fine",
                    *(f"coarse:{c}" for c in coarse_labels), *(f"fine:{f}" for f in fine_labels), "error"])
        for case in cases:
            key = str(case.path)
            s = scores.get(key)
            if s is None:
                w.writerow([key, case.label, case.coarse or "", case.fine or "", "", "",
                            *([""] * len(ev.tasks)), "", "", *([""] * (len(coarse_labels) + len(fine_labels))),
                            failures.get(key, "not scored")])
                continue
            w.writerow([
                key, case.label, case.coarse or "", case.fine or "", s.frames, f"{s.malignancy:.6f}",
                *(f"{task_scores[t.key][key]:.6f}" if key in task_scores[t.key] else "" for t in ev.tasks),
                max(coarse_labels, key=lambda c: s.coarse.get(c, -1.0)),
                max(fine_labels, key=lambda f: s.fine.get(f, -1.0)),
                *(f"{s.coarse.get(c, 0.0):.6f}" for c in coarse_labels),
                *(f"{s.fine.get(f, 0.0):.6f}" for f in fine_labels), "",
            ])


def _matrix_md(m: MulticlassResult) -> list[str]:
    head = "| true \\ predicted | " + " | ".join(m.labels) + " |"
    sep = "|---|" + "---:|" * len(m.labels)
    rows = [f"| {lab} | " + " | ".join(str(int(v)) for v in m.matrix[i]) + " |" for i, lab in enumerate(m.labels)]
    return [head, sep, *rows]


def markdown_summary(ev: Evaluation, meta: dict[str, Any], plots: dict[str, str]) -> str:
    model = meta["model"]
    lines = [
        "# skinbatch evaluation", "",
        f"Model **{model.get('name')}** version {model.get('version')} (weights sha256 "
        f"`{str(model.get('weights_sha256', ''))[:16]}…`), taxonomy from {meta['taxonomy_source']}.",
        f"Labels: `{meta['labels']}` — {ev.n_cases} cases, {ev.n_scored} scored, "
        f"{ev.n_cases - ev.n_scored} failed. Bootstrap: {ev.bootstrap} resamples (95% percentile intervals).", "",
    ]
    if not model.get("trained", True):
        lines += ["> **Untrained model (demo weights): these scores are random; AUCs near 0.5 are expected.**", ""]
    lines += ["## Binary tasks (ROC)", "", "| task | positives | negatives | score | AUC (95% CI) | "
              + " | ".join(f"sens / spec @ {t:g}" for t in ev.thresholds) + " |",
              "|---|---:|---:|---|---|" + "---|" * len(ev.thresholds)]
    for t in ev.tasks:
        if t.unavailable:
            lines.append(f"| {t.title} | {t.n_positive} | {t.n_negative} | {t.score_rule} | not available: "
                         f"{t.unavailable} |" + " |" * len(ev.thresholds))
            continue
        ops = " | ".join(f"{_pct(p.sensitivity)} / {_pct(p.specificity)}" for p in t.operating_points)
        lines.append(f"| {t.title} | {t.n_positive} | {t.n_negative} | {t.score_rule} | {_auc(t)} | {ops} |")
    lines.append("")
    for kind, tasks in ev.tasks_by_image_type.items():
        lines += [f"### {kind.capitalize()} images only", "",
                  "| task | positives | negatives | AUC (95% CI) |", "|---|---:|---:|---|"]
        for t in tasks:
            lines.append(f"| {t.title} | {t.n_positive} | {t.n_negative} | "
                         f"{_auc(t) if not t.unavailable else 'not available: ' + t.unavailable} |")
        lines.append("")
    for t in ev.tasks:
        if t.key in plots:
            lines.append(f"![{t.title}]({plots[t.key]})")
    lines += ["", "## 3-way and 9-way accuracy", ""]
    for m in (ev.three_way, ev.nine_way):
        ci = f" (95% CI {_pct(m.accuracy_ci.low)}–{_pct(m.accuracy_ci.high)})" if m.accuracy_ci else ""
        lines += [f"### {m.name}: {_pct(m.accuracy)}{ci}, n = {m.n}", "", *_matrix_md(m), ""]
        key = "confusion_3" if m.name == "3-way" else "confusion_9"
        if key in plots:
            lines += [f"![{m.name} confusion matrix]({plots[key]})", ""]
    lines += ["## Definitions", "",
              "* Malignant vs benign: cases under the first-level malignant node against those under benign "
              "(non-neoplastic left out); score = the served P(malignant).",
              "* Carcinoma and melanoma tasks (Esteva et al. 2017, Fig. 3): score = P(positive node) / "
              "(P(positive node) + P(negative node)), each the sum of training-class probabilities under the node.",
              "* An operating threshold t calls a case positive when its score ≥ t.",
              "* A multi-frame file is one case: its frames' probabilities are averaged.",
              "* Where the labels have an `image_type` column (`dermoscopic` or `clinical`), the binary tasks are "
              "also reported on each kind of image alone.", ""]
    return "\n".join(lines)


def _img(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def html_summary(markdown_text: str, plots: dict[str, str], out_dir: Path) -> str:
    """A small self-contained page: the Markdown's tables and text, with the PNGs inlined."""
    body: list[str] = []
    table: list[str] = []

    def flush_table() -> None:
        if not table:
            return
        rows = [r.strip().strip("|").split(" | ") for r in table if not set(r.replace("|", "").strip()) <= set("-: ")]
        body.append("<table>" + "".join(
            "<tr>" + "".join(f"<{'th' if i == 0 else 'td'}>{html.escape(c.strip())}</{'th' if i == 0 else 'td'}>"
                             for c in row) + "</tr>" for i, row in enumerate(rows)) + "</table>")
        table.clear()

    for line in markdown_text.splitlines():
        if line.startswith("|"):
            table.append(line)
            continue
        flush_table()
        if line.startswith("!["):
            alt, _, rest = line[2:].partition("](")
            src = rest.rstrip(")")
            body.append(f'<img alt="{html.escape(alt)}" src="{_img(out_dir / src)}">')
        elif line.startswith("### "):
            body.append(f"<h3>{html.escape(line[4:])}</h3>")
        elif line.startswith("## "):
            body.append(f"<h2>{html.escape(line[3:])}</h2>")
        elif line.startswith("# "):
            body.append(f"<h1>{html.escape(line[2:])}</h1>")
        elif line.startswith("> "):
            body.append(f'<div class="warn">{html.escape(line[2:].strip("*"))}</div>')
        elif line.startswith("* "):
            body.append(f"<li>{html.escape(line[2:])}</li>")
        elif line.strip():
            body.append(f"<p>{html.escape(line).replace('**', '')}</p>")
    flush_table()
    css = ("body{font-family:system-ui,sans-serif;margin:24px;color:#1d232a;max-width:1200px}"
           "table{border-collapse:collapse;margin:8px 0;font-size:13px}th,td{border:1px solid #ccd;padding:5px 9px}"
           "th{background:#eef1f4}img{max-width:520px;margin:6px;border:1px solid #eee}"
           ".warn{background:#fff3cd;border:1px solid #e0b400;padding:10px;border-radius:6px;font-weight:600}")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>skinbatch evaluation</title>'
            f"<style>{css}</style></head><body>{''.join(body)}</body></html>\n")


def reference_distribution(frame_malignancy: Sequence[float], meta: dict[str, Any]) -> ReferenceDistribution | None:
    """The binned P(malignant) of every scored frame, with the model and labels it came from; None if
    nothing was scored."""
    if not frame_malignancy:
        return None
    source = {"command": "skinbatch evaluate", "labels": meta.get("labels", ""),
              "frames": len(frame_malignancy), "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    return ReferenceDistribution.from_scores(frame_malignancy, meta["model"], source)


def write_outputs(out_dir: Path, ev: Evaluation, meta: dict[str, Any], cases: Sequence[Case],
                  scores: dict[str, CaseScores], coarse_labels: Sequence[str], fine_labels: Sequence[str],
                  failures: dict[str, str], plots: bool = True,
                  frame_malignancy: Sequence[float] = ()) -> dict[str, Path]:
    """Every output file; ``frame_malignancy`` (P(malignant) of each scored frame) gives
    ``reference_distribution.json``, written when any frame was scored."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plot_files: dict[str, str] = {}
    if plots:
        from .plots import confusion_figure, roc_figure

        untrained = not meta["model"].get("trained", True)
        for t in ev.tasks:
            if t.auc is not None:
                plot_files[t.key] = roc_figure(t, out_dir / f"roc_{t.key}.png", untrained).name
        for key, m in (("confusion_3", ev.three_way), ("confusion_9", ev.nine_way)):
            if m.n:
                plot_files[key] = confusion_figure(m, out_dir / f"{key.replace('_', '_matrix_')}way.png").name
    outputs = {"metrics": out_dir / METRICS_FILE, "scores": out_dir / SCORES_FILE,
               "markdown": out_dir / MARKDOWN_FILE, "html": out_dir / HTML_FILE}
    outputs["metrics"].write_text(json.dumps({**meta, **ev.to_dict(), "failures": len(failures),
                                              "plots": plot_files}, indent=1, default=str) + "\n", encoding="utf-8")
    write_scores_csv(outputs["scores"], cases, scores, ev, coarse_labels, fine_labels, failures)
    md = markdown_summary(ev, meta, plot_files)
    outputs["markdown"].write_text(md, encoding="utf-8")
    outputs["html"].write_text(html_summary(md, plot_files, out_dir), encoding="utf-8")
    reference = reference_distribution(frame_malignancy, meta)
    if reference is not None:
        outputs["reference"] = out_dir / REFERENCE_FILE
        outputs["reference"].write_text(reference.to_json() + "\n", encoding="utf-8")
    return outputs
