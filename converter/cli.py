"""``skinbatch convert``: the click command (registered lazily by ``skinbatch.cli``)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from skinbatch.contract import ExitCode
from skinbatch.settings import JSON, REPOSITORY, TAXONOMY

#: Exit codes (skinbatch.contract.ExitCode): 0 done, 1 the conversion failed (bad input, parity check),
#: 2 usage or a taxonomy that cannot be read, 14 this host lacks TensorRT or a GPU. Errors are raised; the
#: ``skinbatch`` group prints them and exits with their own code (skinbatch.cli).
EXIT_NO_TENSORRT = int(ExitCode.ENVIRONMENT)


def _batch_sizes(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[int, ...]:
    if not value:
        return ()
    try:
        return tuple(int(v) for v in value.replace(" ", "").split(",") if v)
    except ValueError:
        raise click.BadParameter("give comma-separated integers, e.g. 8,16,32") from None


@click.command("convert", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path),
              help="torchvision inception_v3 state dict (torch.save).")
@click.option("--onnx", "onnx_path", type=click.Path(dir_okay=False, path_type=Path),
              help="An Inception ONNX (float NCHW/NHWC or uint8 NHWC input).")
@click.option("--demo-weights", is_flag=True, help="Seeded random weights: an UNTRAINED model for demos and tests.")
@TAXONOMY.option(type=click.Path(dir_okay=False, path_type=Path),
                 help="Taxonomy JSON the network was trained on (default: the bundled one).")
@click.option("--normalization", type=click.Choice(["inception", "imagenet"]), default="inception", show_default=True,
              help="inception: x/127.5-1 (paper); imagenet: (x/255-mean)/std.")
@click.option("--target", type=click.Choice(["tensorrt", "onnx", "cpu"]), default="tensorrt", show_default=True,
              help="tensorrt: GPU plan; onnx: Triton onnxruntime backend; cpu: python backend + onnxruntime CPU.")
@click.option("--precision", type=click.Choice(["fp16", "fp32"]), default=None,
              help="Default: fp16 for tensorrt, fp32 otherwise.")
@click.option("--resize", type=click.Choice(["center-crop", "whole"]), default="center-crop", show_default=True,
              help="How clients fit images to 299x299 (recorded in the model card).")
@click.option("--color-management/--no-color-management", default=True, show_default=True,
              help="Record in the model card that the model expects colour-managed sRGB input: clients convert "
                   "photos with an embedded ICC profile (Display P3, Adobe RGB, DICOM's) to sRGB before resizing. "
                   "--no-color-management keeps profiles ignored, as cards written before this option did.")
@click.option("--max-batch-size", type=click.IntRange(min=1), default=32, show_default=True,
              help="Triton max_batch_size; also the TensorRT profile's maximum.")
@click.option("--preferred-batch-sizes", callback=_batch_sizes,
              help="Comma-separated, e.g. 8,16,32 (default: half and all of the maximum).")
@click.option("--max-queue-delay-us", type=click.IntRange(min=0), default=2000, show_default=True,
              help="Dynamic batcher's max queue delay in microseconds.")
@click.option("--instances", type=click.IntRange(min=1), default=1, show_default=True,
              help="Instances of inception_v3.")
@click.option("--cpu-threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="onnxruntime intra-op threads per cpu-target instance (0: its default).")
@click.option("--cpu-spin/--no-cpu-spin", default=False, show_default=True,
              help="Let those threads spin between batches (onnxruntime's default): a little less latency on a "
                   "host of Triton's own, CPU taken from the decoders on a shared one.")
@click.option("--model-version", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--model-name", help="Name in the model card (default: the weights file's stem, or 'demo').")
@click.option("--check-images", type=click.IntRange(min=1), default=8, show_default=True,
              help="Seeded images for the parity and drift checks.")
@click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=Path),
              help="TensorRT timing cache: loaded if present, saved after the build.")
@REPOSITORY.option(required=True, help="Model repository folder to write into.")
@click.option("--force", is_flag=True, help="Replace existing skin_classifier/inception_v3/taxonomy folders.")
@click.option("--malignancy-map/--no-malignancy-map", default=True, show_default=True,
              help="Serve MALIGNANCY_MAP, the class activation map of P(malignant) (where the network ends in "
                   "global pooling and one linear layer).")
@click.option("--reference-distribution", type=click.Path(dir_okay=False, path_type=Path),
              help="reference_distribution.json from `skinbatch evaluate` of these weights: the baseline of the "
                   "score-drift PSI, embedded in the model card.")
@click.option("--update-card", is_flag=True,
              help="Convert nothing: embed --reference-distribution into the card of the existing --repository.")
@JSON.option(help="Print the summary as JSON on stdout.")
def convert(
    checkpoint: Path | None,
    onnx_path: Path | None,
    demo_weights: bool,
    taxonomy: Path | None,
    normalization: str,
    target: str,
    precision: str | None,
    resize: str,
    color_management: bool,
    max_batch_size: int,
    preferred_batch_sizes: tuple[int, ...],
    max_queue_delay_us: int,
    instances: int,
    cpu_threads: int,
    cpu_spin: bool,
    model_version: int,
    model_name: str | None,
    check_images: int,
    timing_cache: Path | None,
    repository: Path,
    force: bool,
    malignancy_map: bool,
    reference_distribution: Path | None,
    update_card: bool,
    as_json: bool,
) -> None:
    """Convert an Inception-v3 (checkpoint, ONNX or demo weights) into a Triton model repository.

    Exports uint8-input ONNX with the normalisation folded in, checks it against the source, optionally
    builds FP16 / TensorRT, and writes skin_classifier, inception_v3 and taxonomy with the model card.

    With --update-card, only embeds --reference-distribution into an existing repository's card.
    """
    if update_card:
        _update_card(repository, reference_distribution, as_json,
                     sources=sum(bool(x) for x in (checkpoint, onnx_path, demo_weights)))
        return
    if sum(bool(x) for x in (checkpoint, onnx_path, demo_weights)) != 1:
        raise click.UsageError("give exactly one of --checkpoint, --onnx or --demo-weights")
    from .pipeline import ConvertOptions, convert as run

    opts = ConvertOptions(
        repository=repository,
        checkpoint=checkpoint,
        onnx=onnx_path,
        demo_weights=demo_weights,
        taxonomy=taxonomy,
        normalization=normalization,
        target=target,
        precision=precision,
        resize=resize.replace("-", "_"),
        color_management=color_management,
        max_batch_size=max_batch_size,
        preferred_batch_sizes=preferred_batch_sizes,
        max_queue_delay_us=max_queue_delay_us,
        instances=instances,
        model_version=model_version,
        model_name=model_name,
        cpu_threads=cpu_threads,
        cpu_spin=cpu_spin,
        check_images=check_images,
        timing_cache=timing_cache,
        force=force,
        malignancy_map=malignancy_map,
        reference_distribution=reference_distribution,
    )
    steps = iter(range(1, 100))

    def progress(message: str) -> None:
        click.echo(f"[{next(steps)}] {message}…", err=True)

    summary = run(opts, progress=progress)  # ConverterError 1 or 14, TaxonomyError 2: skinbatch.cli exits
    if as_json:
        click.echo(json.dumps(summary.to_dict(), indent=1))
        return
    click.echo(f"wrote {summary.target} repository to {summary.repository}", err=True)
    click.echo(f"  model {summary.model_name} v{summary.model_version}, {summary.precision}, "
               f"{summary.num_classes} classes, max batch {summary.max_batch_size}"
               + ("" if summary.trained else "  [UNTRAINED demo weights]"), err=True)
    click.echo(f"  parity: max |dp| {summary.parity_max_abs_prob:.2e} on {summary.parity_images} images", err=True)
    if summary.drift_onnx_cpu:
        d = summary.drift_onnx_cpu
        click.echo(f"  FP16 drift (onnxruntime CPU): max |dp| {d['max_abs_prob']:.2e}, max |d malignancy| "
                   f"{d['max_abs_malignancy']:.2e}, top-1 agreement {d['top1_agreement']:.0%}", err=True)
    if summary.drift_tensorrt:
        d = summary.drift_tensorrt
        click.echo(f"  TensorRT drift: max |dp| {d['max_abs_prob']:.2e}, max |d malignancy| "
                   f"{d['max_abs_malignancy']:.2e}, top-1 agreement {d['top1_agreement']:.0%}", err=True)
    elif summary.drift_tensorrt_skipped:
        click.echo(f"  TensorRT drift: skipped ({summary.drift_tensorrt_skipped})", err=True)
    if summary.malignancy_map:
        m = summary.malignancy_map
        click.echo(f"  MALIGNANCY_MAP {m['shape'][0]}x{m['shape'][1]}: parity {m['parity']:.2e} of its largest value",
                   err=True)
    else:
        click.echo("  no MALIGNANCY_MAP (see the card's notes)", err=True)
    if summary.reference_distribution:
        click.echo("  reference distribution of P(malignant) embedded in the card", err=True)


def _update_card(repository: Path, reference: Path | None, as_json: bool, sources: int) -> None:
    if reference is None or sources:
        raise click.UsageError("--update-card takes --repository and --reference-distribution, and no weights")
    from .pipeline import add_reference_distribution

    card = add_reference_distribution(repository, reference)
    n = (card.reference_distribution or {}).get("n")
    if as_json:
        click.echo(json.dumps({"repository": str(repository), "reference_distribution": n}))
    click.echo(f"embedded a reference distribution of {n} scores in {repository}'s model card; "
               "Triton serves it after it reloads skin_classifier (restart it, or run it with "
               "--model-control-mode=poll)", err=True)
