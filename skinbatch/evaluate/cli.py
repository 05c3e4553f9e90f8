"""``skinbatch evaluate --labels CSV --triton-url URL --out DIR``: how well does the served model do?"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import click

from skinbatch.connect.options import TritonSettings, TritonTarget, triton_options
from skinbatch.contract import EXIT_CODE_EPILOG, ConfigurationError, ExitCode
from skinbatch.drift import DEFAULT_WINDOW, MIN_REFERENCE, expected_psi
from skinbatch.settings import JSON, OUT_DIR, PROGRESS, TAXONOMY, Alias, PipelineSettings, options
from skinbatch.status.health import check_triton
from skinbatch.triage.progress import Progress
from skinbatch.triage.run import Runner, RunOptions, default_workers
from skinbatch.triage.state import TriageStore

from .compute import CaseScores, evaluate_cases
from .labels import read_labels, resolve_taxonomy

STATE_FILE = "evaluate-state.sqlite"


def _err(message: str) -> None:
    click.echo(f"evaluate: {message}", err=True)


@click.command("evaluate", epilog=EXIT_CODE_EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--labels", "labels_csv", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="CSV with columns path,label; label = any node of the taxonomy; paths relative to the CSV.")
@triton_options()
@OUT_DIR.option(help="Folder for metrics.json, scores.csv, the PNG plots, summary.md / summary.html and "
                   "reference_distribution.json (P(malignant) per frame, the baseline of score-drift "
                   "monitoring). Scores are kept there, so a re-run only scores what is new.")
@TAXONOMY.option(type=click.Path(exists=True, path_type=Path),
                 help="The served repository's skin_classifier/taxonomy.json, or the repository folder "
                   "(default: the bundled taxonomy). Checked against the model card's sha256.")
@click.option("--threshold", "thresholds", type=click.FloatRange(0, 1), multiple=True,
              help="Operating threshold for sensitivity/specificity; repeat for several (default 0.5).")
@click.option("--bootstrap", "n_boot", type=click.IntRange(min=0), default=1000, show_default=True,
              help="Bootstrap resamples for the confidence intervals (0: none).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the bootstrap.")
@click.option("--plots/--no-plots", default=True, show_default=True,
              help="PNG figures (need matplotlib: `pip install 'skinbatch[report]'`).")
@options(TritonSettings, only=("model",))
@options(PipelineSettings, only=("decode_workers",),
         decode_workers={"default": default_workers, "show_default": "CPUs - 1", "aliases": (Alias("--workers"),)})
@PROGRESS.option()
@JSON.option(help="Print the headline metrics as JSON on stdout.")
def evaluate(labels_csv: Path, triton: TritonTarget, out_dir: Path, taxonomy: Path | None,
             thresholds: tuple[float, ...], n_boot: int, seed: int, plots: bool, model: str, decode_workers: int,
             show_progress: bool | None, as_json: bool) -> None:
    """Score a labelled set and report ROC/AUC, sensitivity/specificity, 3-way and 9-way accuracy.

    Binary tasks: malignant vs benign (score: P(malignant)); keratinocyte carcinoma vs seborrheic
    keratosis and melanoma vs melanocytic nevus (score: P(positive node) normalised within the two
    nodes), each where the labels have both classes. AUCs come with bootstrap confidence intervals.
    """
    if plots:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise click.UsageError(
                "plots need matplotlib: `pip install 'skinbatch[report]'`, or pass --no-plots") from None
    health = check_triton(triton, model=model)
    if health.exit_code != ExitCode.OK:
        for problem in health.problems:
            _err(problem)
        sys.exit(int(health.exit_code))
    chosen_thresholds = list(thresholds) or [0.5]
    out_dir = out_dir.resolve()
    run_options = RunOptions(triton=triton, model=model, workers=decode_workers, keep_training=True)
    with Runner(run_options) as runner:
        card = runner.card
        tree, taxonomy_source = resolve_taxonomy(card, taxonomy)  # LabelsError: 2
        cases = read_labels(labels_csv, tree)
        store = TriageStore(out_dir / STATE_FILE, card.model_summary())  # StateMismatchError: 2
        try:
            paths = list(dict.fromkeys(str(c.path) for c in cases))
            summary = runner.run(paths, store, Progress(len(paths), label="evaluate", enabled=show_progress),
                                 on_event=_err)
            wanted = set(paths)
            frames: dict[str, list[CaseScores]] = defaultdict(list)
            for row in store.frame_rows(paths=wanted, with_training=True):
                if row.training is None:
                    raise ConfigurationError(f"{out_dir / STATE_FILE} holds scores without class probabilities; "
                                             "use a new --out folder")
                frames[row.path].append(CaseScores(row.malignancy, row.coarse, row.fine, row.training))
            failures = {e.path: f"{e.error_type}: {e.error_message}" for e in store.error_rows(paths=wanted)}
        finally:
            store.close()
    scores = {p: CaseScores.mean_of(f) for p, f in frames.items()}
    ev = evaluate_cases(cases, scores, tree, card.coarse_labels, card.fine_labels, chosen_thresholds,
                        n_boot=n_boot, seed=seed)
    meta: dict[str, Any] = {"model": card.model_summary(), "taxonomy_source": taxonomy_source,
                            "labels": labels_csv.name, "run": summary.to_dict()}
    from .report import write_outputs

    # The drift reference counts frames, as the consumer's histogram does (one result per frame).
    frame_malignancy = [f.malignancy for path_frames in frames.values() for f in path_frames]
    outputs = write_outputs(out_dir, ev, meta, cases, scores, card.coarse_labels, card.fine_labels, failures,
                            plots=plots, frame_malignancy=frame_malignancy)
    if summary.interrupted:
        code = ExitCode.INTERRUPTED
    elif summary.triton_error:
        code = ExitCode.TRITON_DOWN
    else:
        code = ExitCode.PARTIAL if failures else ExitCode.OK
    if as_json:
        click.echo(json.dumps({
            "exit_code": int(code), "n_cases": ev.n_cases, "n_scored": ev.n_scored, "failures": len(failures),
            "auc": {t.key: t.auc for t in ev.tasks},
            "auc_ci": {t.key: (t.auc_ci.to_dict() if t.auc_ci else None) for t in ev.tasks},
            **({"auc_by_image_type": {kind: {t.key: t.auc for t in tasks}
                                      for kind, tasks in ev.tasks_by_image_type.items()}}
               if ev.tasks_by_image_type else {}),
            "accuracy_3way": ev.three_way.accuracy, "accuracy_9way": ev.nine_way.accuracy,
            "outputs": {k: str(v) for k, v in outputs.items()}}, default=str))
    else:
        if not card.trained:
            _err("the served model is UNTRAINED (demo weights): AUCs near 0.5 are expected")
        for t in ev.tasks:
            fig = f"AUC {t.auc:.3f}" if t.auc is not None else f"not available ({t.unavailable})"
            ci = f" (95% CI {t.auc_ci.low:.3f}–{t.auc_ci.high:.3f})" if t.auc_ci else ""
            click.echo(f"{t.title}: {fig}{ci}")
        for m in (ev.three_way, ev.nine_way):
            acc = "-" if m.accuracy is None else f"{100 * m.accuracy:.1f}%"
            click.echo(f"{m.name} accuracy: {acc} (n = {m.n})")
        click.echo(f"summary: {outputs['html']}")
        if "reference" in outputs:
            click.echo(f"reference distribution of P(malignant) for drift monitoring: {outputs['reference']} "
                       "(embed it with `skinbatch convert --update-card --reference-distribution FILE "
                       "--repository DIR`)")
    if 0 < len(frame_malignancy) < MIN_REFERENCE:
        _err(f"the reference distribution holds {len(frame_malignancy)} scores; drift readings against it carry "
             f"noise of about {expected_psi(DEFAULT_WINDOW, len(frame_malignancy)):.2f} PSI. Evaluate at least "
             f"{MIN_REFERENCE} images for a reference worth monitoring against")
    if failures:
        _err(f"{len(failures)} file(s) could not be scored; see scores.csv")
    if summary.triton_error:
        _err(f"{summary.triton_error}; start Triton and run again (finished scores are kept)")
    sys.exit(int(code))


if __name__ == "__main__":
    from skinbatch.cli import run_standalone

    run_standalone(evaluate)
