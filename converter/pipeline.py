"""``convert``: weights in, Triton model repository out, with parity and drift checked on the way.

Steps: load weights (checkpoint, user ONNX or seeded demo weights) → served FP32 ONNX (uint8 NHWC in,
softmax out) → parity against the source → FP16 ONNX and its drift (when FP16 is asked for) →
TensorRT plan (``tensorrt`` target) → taxonomy ONNX → model card → repository.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import onnx

from skinbatch.modelcard import ModelCard
from skinbatch.taxonomy import default_taxonomy, load_taxonomy, malignancy_matrix
from skinbatch.taxonomy.card import taxonomy_card_entry

from . import drift as drift_mod
from .errors import ConverterError
from .export import (
    NORMALIZATIONS,
    PARITY_TOLERANCE,
    SIZE,
    adapt_onnx,
    export_pytorch,
    max_abs_diff,
    run_onnx,
    run_original_onnx,
    sample_images,
    torch_probs,
)
from .repository import TAXONOMY_FILE, Artifacts, RepositoryOptions, write_repository

SOURCES = ("checkpoint", "onnx", "demo-weights")
PRECISIONS = ("fp16", "fp32")
RESIZE_MODES = ("center_crop", "whole")
DEFAULT_TAXONOMY_FILE = "default_taxonomy.json"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ConvertOptions:
    repository: Path
    checkpoint: Path | None = None
    onnx: Path | None = None
    demo_weights: bool = False
    demo_seed: int = 0
    taxonomy: Path | None = None
    normalization: str = "inception"
    target: str = "tensorrt"
    precision: str | None = None
    """None: ``fp16`` for tensorrt, ``fp32`` otherwise."""
    resize: str = "center_crop"
    max_batch_size: int = 32
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 2000
    instances: int = 1
    model_version: int = 1
    model_name: str | None = None
    cpu_threads: int = 0
    check_images: int = 8
    """Seeded images for the parity and drift checks."""
    timing_cache: Path | None = None
    force: bool = False

    @property
    def source_kind(self) -> str:
        chosen = [k for k, on in zip(SOURCES, (self.checkpoint, self.onnx, self.demo_weights)) if on]
        if len(chosen) != 1:
            raise ConverterError("give exactly one of --checkpoint, --onnx or --demo-weights")
        return chosen[0]

    @property
    def resolved_precision(self) -> str:
        precision = self.precision or ("fp16" if self.target == "tensorrt" else "fp32")
        if precision not in PRECISIONS:
            raise ConverterError(f"unknown precision {precision!r}; choose fp16 or fp32")
        return precision


@dataclass
class ConversionSummary:
    repository: str
    model_name: str
    model_version: int
    target: str
    precision: str
    trained: bool
    source: dict[str, Any]
    num_classes: int
    max_batch_size: int
    parity_max_abs_prob: float
    parity_images: int
    parity_reference: str
    onnx_fp32_bytes: int
    onnx_fp16_bytes: int | None = None
    drift_onnx_cpu: dict[str, Any] | None = None
    drift_tensorrt: dict[str, Any] | None = None
    drift_tensorrt_skipped: str | None = None
    tensorrt: dict[str, Any] | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def preprocessing_dict(resize: str, normalization: str) -> dict[str, Any]:
    """The card's preprocessing: ``skinbatch.imaging.Preprocessing`` fields plus ``normalization``."""
    if resize not in RESIZE_MODES:
        raise ConverterError(f"unknown resize mode {resize!r}; choose center-crop or whole")
    try:
        from skinbatch.imaging import Preprocessing
    except ImportError:  # the imaging package is optional for the converter; same keys either way
        base: dict[str, Any] = {"size": SIZE, "resize": resize, "interpolation": "bilinear", "antialias": True}
    else:
        base = Preprocessing(size=SIZE, resize=resize).to_dict()
    return {**base, "normalization": normalization}


def _timer(seconds: dict[str, float], key: str) -> Callable[[], None]:
    start = time.perf_counter()

    def stop() -> None:
        seconds[key] = round(time.perf_counter() - start, 2)

    return stop


def convert(opts: ConvertOptions, progress: Progress | None = None) -> ConversionSummary:
    """Run the whole conversion; raises :class:`ConverterError` with advice on bad input or host."""
    say = progress or (lambda _msg: None)
    kind = opts.source_kind
    precision = opts.resolved_precision
    if opts.normalization not in NORMALIZATIONS:
        raise ConverterError(f"unknown normalization {opts.normalization!r}; choose inception or imagenet")
    repo_opts = RepositoryOptions(
        target=opts.target,
        max_batch_size=opts.max_batch_size,
        preferred_batch_sizes=tuple(opts.preferred_batch_sizes),
        max_queue_delay_us=opts.max_queue_delay_us,
        instances=opts.instances,
        model_version=opts.model_version,
        cpu_threads=opts.cpu_threads,
    )
    preprocessing = preprocessing_dict(opts.resize, opts.normalization)
    if opts.check_images < 1:
        raise ConverterError("--check-images must be at least 1: parity is always checked")
    if opts.target == "tensorrt":
        from .tensorrt_engine import require_tensorrt

        require_tensorrt()  # fail before minutes of export, not after

    taxonomy = load_taxonomy(opts.taxonomy) if opts.taxonomy else default_taxonomy()
    k = len(taxonomy.training_classes)
    if k == 0:
        raise ConverterError("the taxonomy lists no training classes; run `skinbatch taxonomy partition` first")
    seconds: dict[str, float] = {}
    notes: list[str] = []
    images = sample_images(opts.check_images)

    # -- 1. the served FP32 ONNX, and parity with its source ----------------------------------------------
    with tempfile.TemporaryDirectory(prefix="skinbatch-convert-") as tmp_dir:
        tmp = Path(tmp_dir)
        fp32_path = tmp / "model.fp32.onnx"
        if kind == "onnx":
            assert opts.onnx is not None
            if not opts.onnx.is_file():
                raise ConverterError(f"ONNX file {opts.onnx} does not exist; check the --onnx path")
            from .checkpoint import file_sha256

            say(f"adapting {opts.onnx.name} to the served interface")
            stop = _timer(seconds, "export")
            original = onnx.load(str(opts.onnx))
            served, adapt_notes = adapt_onnx(original, k, opts.normalization)
            notes.extend(adapt_notes)
            onnx.save(served, str(fp32_path))
            stop()
            source = {"kind": kind, "sha256": file_sha256(opts.onnx), "filename": opts.onnx.name}
            trained = True
            say(f"checking parity on {len(images)} images (onnxruntime CPU, adapted vs original)")
            stop = _timer(seconds, "parity")
            reference = run_original_onnx(original, images, opts.normalization)
            reference_name = "the input ONNX on onnxruntime CPU, normalised in numpy"
        else:
            from .checkpoint import demo_weights, load_checkpoint

            say("loading weights" if kind == "checkpoint" else f"building demo weights (seed {opts.demo_seed})")
            stop = _timer(seconds, "load")
            weights = (
                load_checkpoint(opts.checkpoint, k) if kind == "checkpoint" else demo_weights(k, opts.demo_seed)
            )
            stop()
            source = {"kind": kind, "sha256": weights.sha256, "filename": weights.filename}
            if kind == "demo-weights":
                source["seed"] = opts.demo_seed
            if weights.had_aux_logits:
                notes.append("checkpoint carried aux-logits weights; dropped (used in training only)")
            trained = kind == "checkpoint"
            say("exporting ONNX (uint8 NHWC in, softmax out)")
            stop = _timer(seconds, "export")
            served_module = export_pytorch(weights.model, fp32_path, opts.normalization)
            stop()
            say(f"checking parity on {len(images)} images (PyTorch vs onnxruntime CPU)")
            stop = _timer(seconds, "parity")
            reference = torch_probs(served_module, images)
            reference_name = "PyTorch softmax on the same uint8 input"
        fp32_probs = run_onnx(fp32_path, images)
        stop()
        parity = max_abs_diff(reference, fp32_probs)
        if parity > PARITY_TOLERANCE:
            raise ConverterError(
                f"the exported ONNX differs from {reference_name} by {parity:.2e} (> {PARITY_TOLERANCE:g}). "
                "The export is not faithful; nothing was written. Check the source model's ops, or report this."
            )
        notes.append(f"FP32 ONNX parity vs {reference_name}: max |dp| {parity:.2e} on {len(images)} images")
        fp32_bytes = fp32_path.read_bytes()

        # -- 2. FP16 and its drift -----------------------------------------------------------------------
        fp16_bytes: bytes | None = None
        drift_cpu = drift_trt = None
        trt_skip: str | None = None
        malignancy = malignancy_matrix(taxonomy)
        if precision == "fp16":
            from .fp16 import to_mixed_fp16

            say("converting to mixed-precision FP16 ONNX")
            stop = _timer(seconds, "fp16")
            fp16_model = to_mixed_fp16(onnx.load_from_string(fp32_bytes))
            fp16_bytes = fp16_model.SerializeToString()
            (tmp / "model.fp16.onnx").write_bytes(fp16_bytes)
            stop()
            say("measuring FP16 drift (onnxruntime CPU)")
            stop = _timer(seconds, "drift_cpu")
            drift_cpu = drift_mod.compare(
                fp32_probs, run_onnx(fp16_model, images), malignancy, drift_mod.ORT_CPU_METHOD
            )
            stop()
            notes.append(drift_cpu.note())

        # -- 3. TensorRT ---------------------------------------------------------------------------------
        plan_bytes: bytes | None = None
        trt_info: dict[str, Any] | None = None
        if opts.target == "tensorrt":
            from .tensorrt_engine import build_engine, run_engine

            say("building the TensorRT engine (minutes)")
            stop = _timer(seconds, "tensorrt_build")
            build = build_engine(
                fp16_onnx=(tmp / "model.fp16.onnx") if fp16_bytes is not None else None,
                fp32_onnx=fp32_path,
                plan=tmp / "model.plan",
                max_batch_size=opts.max_batch_size,
                precision=precision,
                timing_cache=opts.timing_cache,
            )
            stop()
            plan_bytes = build.plan.read_bytes()
            trt_info = {
                "version": build.tensorrt_version,
                "strongly_typed": build.strongly_typed,
                "precision_source": build.precision_source,
                "profile": [list(s) for s in build.profile],
            }
            notes.append(
                f"TensorRT {build.tensorrt_version} plan from {build.precision_source}, profile batch 1..{opts.max_batch_size}"
            )
            say("measuring the engine's drift (GPU)")
            stop = _timer(seconds, "drift_tensorrt")
            drift_trt = drift_mod.compare(
                fp32_probs, run_engine(build.plan, images, opts.max_batch_size), malignancy, drift_mod.TENSORRT_METHOD
            )
            stop()
            notes.append(drift_trt.note())
        elif precision == "fp16":
            trt_skip = drift_mod.TENSORRT_SKIP_REASON

    # -- 4. taxonomy model, card, repository -------------------------------------------------------------
    from .taxonomy_model import build_taxonomy_onnx

    taxonomy_onnx = build_taxonomy_onnx(taxonomy).SerializeToString()
    notes.append(
        f"taxonomy from {opts.taxonomy.name if opts.taxonomy else 'the bundled ' + DEFAULT_TAXONOMY_FILE}, "
        f"{k} training classes"
    )
    if not trained:
        notes.insert(0, "UNTRAINED: seeded random demo weights; every score from this model is meaningless")
    if precision == "fp16":
        notes.append("Softmax, the input normalisation and the taxonomy sums run in FP32")
    name = opts.model_name or (
        (opts.checkpoint or opts.onnx).stem if kind != "demo-weights" else "demo"  # type: ignore[union-attr]
    )
    card = ModelCard(
        name=name,
        version=str(opts.model_version),
        trained=trained,
        source=source,
        target=opts.target,
        precision=precision,
        preprocessing=preprocessing,
        taxonomy=taxonomy_card_entry(taxonomy, TAXONOMY_FILE),
        max_batch_size=opts.max_batch_size,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        notes=notes,
    )
    inception_onnx = fp16_bytes if (precision == "fp16" and fp16_bytes is not None) else fp32_bytes
    say(f"writing the {opts.target} repository")
    stop = _timer(seconds, "write")
    write_repository(
        opts.repository,
        repo_opts,
        taxonomy,
        card,
        Artifacts(
            inception_onnx=None if opts.target == "tensorrt" else inception_onnx,
            inception_plan=plan_bytes,
            taxonomy_onnx=taxonomy_onnx,
        ),
        force=opts.force,
    )
    stop()
    return ConversionSummary(
        repository=str(opts.repository),
        model_name=name,
        model_version=opts.model_version,
        target=opts.target,
        precision=precision,
        trained=trained,
        source=source,
        num_classes=k,
        max_batch_size=opts.max_batch_size,
        parity_max_abs_prob=parity,
        parity_images=len(images),
        parity_reference=reference_name,
        onnx_fp32_bytes=len(fp32_bytes),
        onnx_fp16_bytes=len(fp16_bytes) if fp16_bytes is not None else None,
        drift_onnx_cpu=drift_cpu.to_dict() if drift_cpu else None,
        drift_tensorrt=drift_trt.to_dict() if drift_trt else None,
        drift_tensorrt_skipped=trt_skip,
        tensorrt=trt_info,
        seconds=seconds,
        notes=notes,
    )

