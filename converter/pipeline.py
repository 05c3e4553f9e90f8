"""``convert``: weights in, Triton model repository out, with parity and drift checked on the way.

Steps, each a function below, in this order:

1. :func:`export_served`: load weights (checkpoint, user ONNX or seeded demo weights) → served FP32 ONNX
   (uint8 NHWC in, softmax out), with the reference it must agree with;
2. :func:`check_parity`: the ONNX against that reference;
3. :func:`attach_malignancy_map`: the ``MALIGNANCY_MAP`` output, checked against its own reference;
4. :func:`make_fp16`: the mixed-precision ONNX and its drift (when FP16 is asked for);
5. :func:`build_tensorrt`: the TensorRT plan and its drift (``tensorrt`` target, GPU hosts);
6. :func:`model_card`: the card, with the reference distribution when one is given;
7. :func:`write`: taxonomy ONNX, configs, card and files into the repository.

Nothing is written to the repository before step 7, so a failed check leaves it as it was.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from skinbatch.drift import ReferenceDistribution, load_reference
from skinbatch.modelcard import ModelCard
from skinbatch.taxonomy import Taxonomy, default_taxonomy, load_taxonomy, malignancy_matrix
from skinbatch.taxonomy.card import taxonomy_card_entry

from . import drift as drift_mod
from .cam import MALIGNANCY_MAP, MapInfo, MapUnavailable, add_malignancy_map, map_parity, numpy_cam, torch_cam
from .errors import ConverterError
from .export import (
    NORMALIZATIONS,
    OUTPUT,
    PARITY_TOLERANCE,
    SIZE,
    adapt_onnx,
    export_pytorch,
    max_abs_diff,
    run_onnx_outputs,
    run_original_onnx,
    sample_images,
    torch_probs,
)
from .repository import TAXONOMY_FILE, Artifacts, RepositoryOptions, write_repository

SOURCES = ("checkpoint", "onnx", "demo-weights")
PRECISIONS = ("fp16", "fp32")
RESIZE_MODES = ("center_crop", "whole")
DEFAULT_TAXONOMY_FILE = "default_taxonomy.json"
#: The served map against its reference, relative to the map's largest magnitude (see cam.map_parity).
MAP_PARITY_TOLERANCE = 1e-4

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
    color_management: bool = True
    """The card's ``color_managed_input``: clients convert embedded ICC profiles to sRGB."""
    max_batch_size: int = 32
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_us: int = 2000
    instances: int = 1
    model_version: int = 1
    model_name: str | None = None
    cpu_threads: int = 0
    cpu_spin: bool = False
    check_images: int = 8
    """Seeded images for the parity and drift checks."""
    timing_cache: Path | None = None
    force: bool = False
    malignancy_map: bool = True
    """Serve ``MALIGNANCY_MAP`` (where the network ends in global pooling and one linear layer)."""
    reference_distribution: Path | None = None
    """``reference_distribution.json`` from ``skinbatch evaluate`` of these weights, for the card."""

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
    malignancy_map: dict[str, Any] | None = None
    """The card's map entry, plus ``parity`` (relative) and its reference; None where no map is served."""
    reference_distribution: bool = False

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


class StepLog:
    """Progress messages and per-step timings, shared by the steps of one conversion."""

    def __init__(self, progress: Progress | None) -> None:
        self.say = progress or (lambda _msg: None)
        self.seconds: dict[str, float] = {}
        self.notes: list[str] = []

    def timed(self, key: str) -> Callable[[], None]:
        start = time.perf_counter()

        def stop() -> None:
            self.seconds[key] = round(time.perf_counter() - start, 2)

        return stop


# -- 0. options ------------------------------------------------------------------------------------------

def repository_options(opts: ConvertOptions) -> RepositoryOptions:
    return RepositoryOptions(
        target=opts.target,
        max_batch_size=opts.max_batch_size,
        preferred_batch_sizes=tuple(opts.preferred_batch_sizes),
        max_queue_delay_us=opts.max_queue_delay_us,
        instances=opts.instances,
        model_version=opts.model_version,
        cpu_threads=opts.cpu_threads,
        cpu_spin=opts.cpu_spin,
    )


def check_options(opts: ConvertOptions) -> None:
    """Every check that needs no model, so that a bad flag fails before minutes of export."""
    opts.source_kind  # noqa: B018 - raises on zero or several sources
    opts.resolved_precision  # noqa: B018
    if opts.normalization not in NORMALIZATIONS:
        raise ConverterError(f"unknown normalization {opts.normalization!r}; choose inception or imagenet")
    repository_options(opts)
    preprocessing_dict(opts.resize, opts.normalization)
    if opts.check_images < 1:
        raise ConverterError("--check-images must be at least 1: parity is always checked")
    if opts.target == "tensorrt":
        from .tensorrt_engine import require_tensorrt

        require_tensorrt()


def resolve_taxonomy(opts: ConvertOptions) -> Taxonomy:
    taxonomy = load_taxonomy(opts.taxonomy) if opts.taxonomy else default_taxonomy()
    if not taxonomy.training_classes:
        raise ConverterError("the taxonomy lists no training classes; run `skinbatch taxonomy partition` first")
    return taxonomy


def read_reference(opts: ConvertOptions) -> ReferenceDistribution | None:
    if opts.reference_distribution is None:
        return None
    try:
        return load_reference(opts.reference_distribution)
    except ValueError as exc:
        raise ConverterError(str(exc)) from None


# -- 1. the served FP32 ONNX -----------------------------------------------------------------------------

@dataclass
class Exported:
    """The served FP32 ONNX and what it must agree with."""

    path: Path
    source: dict[str, Any]
    trained: bool
    reference_probs: np.ndarray
    reference_name: str
    reference_map: Callable[[onnx.ModelProto, np.ndarray], np.ndarray]
    """``(served graph without the map, malignancy column) → map``: PyTorch's for weights, numpy's from the
    graph's own features for a user's ONNX."""
    map_reference_name: str


def export_served(opts: ConvertOptions, num_classes: int, images: np.ndarray, path: Path, steps: StepLog) -> Exported:
    if opts.source_kind == "onnx":
        return _adapt_user_onnx(opts, num_classes, images, path, steps)
    return _export_weights(opts, num_classes, images, path, steps)


def _adapt_user_onnx(
    opts: ConvertOptions, num_classes: int, images: np.ndarray, path: Path, steps: StepLog
) -> Exported:
    from .checkpoint import file_sha256

    assert opts.onnx is not None
    if not opts.onnx.is_file():
        raise ConverterError(f"ONNX file {opts.onnx} does not exist; check the --onnx path")
    steps.say(f"adapting {opts.onnx.name} to the served interface")
    stop = steps.timed("export")
    original = onnx.load(str(opts.onnx))
    served, adapt_notes = adapt_onnx(original, num_classes, opts.normalization)
    steps.notes.extend(adapt_notes)
    onnx.save(served, str(path))
    stop()
    steps.say(f"computing the reference on {len(images)} images (the input ONNX, normalised in numpy)")
    stop = steps.timed("reference")
    reference = run_original_onnx(original, images, opts.normalization)
    stop()
    return Exported(
        path=path,
        source={"kind": "onnx", "sha256": file_sha256(opts.onnx), "filename": opts.onnx.name},
        trained=True,
        reference_probs=reference,
        reference_name="the input ONNX on onnxruntime CPU, normalised in numpy",
        reference_map=lambda model, malignancy: numpy_cam(model, images, malignancy),
        map_reference_name="numpy from the graph's own pooled features and classifier weights",
    )


def _export_weights(opts: ConvertOptions, num_classes: int, images: np.ndarray, path: Path, steps: StepLog) -> Exported:
    from .checkpoint import demo_weights, load_checkpoint

    kind = opts.source_kind
    steps.say("loading weights" if kind == "checkpoint" else f"building demo weights (seed {opts.demo_seed})")
    stop = steps.timed("load")
    if kind == "checkpoint":
        assert opts.checkpoint is not None  # source_kind says so
        weights = load_checkpoint(opts.checkpoint, num_classes)
    else:
        weights = demo_weights(num_classes, opts.demo_seed)
    stop()
    source: dict[str, Any] = {"kind": kind, "sha256": weights.sha256, "filename": weights.filename}
    if kind == "demo-weights":
        source["seed"] = opts.demo_seed
    if weights.had_aux_logits:
        steps.notes.append("checkpoint carried aux-logits weights; dropped (used in training only)")
    steps.say("exporting ONNX (uint8 NHWC in, softmax out)")
    stop = steps.timed("export")
    served = export_pytorch(weights.model, path, opts.normalization)
    stop()
    steps.say(f"computing the PyTorch reference on {len(images)} images")
    stop = steps.timed("reference")
    reference = torch_probs(served, images)
    stop()
    return Exported(
        path=path,
        source=source,
        trained=kind == "checkpoint",
        reference_probs=reference,
        reference_name="PyTorch softmax on the same uint8 input",
        reference_map=lambda _model, malignancy: torch_cam(served, images, malignancy),
        map_reference_name="PyTorch, Mixed_7c features by forward hook and fc.weight",
    )


# -- 2. parity -------------------------------------------------------------------------------------------

def check_parity(exported: Exported, images: np.ndarray, steps: StepLog) -> tuple[np.ndarray, float]:
    """The FP32 ONNX's probabilities and their largest difference from the reference; raises above tolerance."""
    steps.say(f"checking parity on {len(images)} images (onnxruntime CPU vs {exported.reference_name})")
    stop = steps.timed("parity")
    probs = run_onnx_outputs(exported.path, images, (OUTPUT,))[OUTPUT]
    stop()
    parity = max_abs_diff(exported.reference_probs, probs)
    if parity > PARITY_TOLERANCE:
        raise ConverterError(
            f"the exported ONNX differs from {exported.reference_name} by {parity:.2e} (> {PARITY_TOLERANCE:g}). "
            "The export is not faithful; nothing was written. Check the source model's ops, or report this."
        )
    steps.notes.append(f"FP32 ONNX parity vs {exported.reference_name}: max |dp| {parity:.2e} on {len(images)} images")
    return probs, parity


# -- 3. the malignancy map -------------------------------------------------------------------------------

@dataclass(frozen=True)
class ServedMap:
    info: MapInfo
    fp32: np.ndarray
    """The FP32 ONNX's map on the check images: the baseline of the FP16 and TensorRT drift."""
    parity: float
    reference_name: str

    def summary(self) -> dict[str, Any]:
        return {**self.info.card_entry(), "parity": self.parity, "parity_reference": self.reference_name}


def attach_malignancy_map(opts: ConvertOptions, exported: Exported, malignancy: np.ndarray, images: np.ndarray,
                          steps: StepLog) -> ServedMap | None:
    """Add ``MALIGNANCY_MAP`` to the FP32 ONNX in place and check it; None when off or impossible."""
    if not opts.malignancy_map:
        steps.notes.append("no MALIGNANCY_MAP: converted with --no-malignancy-map")
        return None
    model = onnx.load(str(exported.path))
    try:
        with_map, info = add_malignancy_map(model, malignancy)
    except MapUnavailable as exc:
        steps.notes.append(f"no MALIGNANCY_MAP: {exc}")
        return None
    steps.say(f"checking the malignancy map ({info.grid[0]}x{info.grid[1]}) against {exported.map_reference_name}")
    stop = steps.timed("map_parity")
    reference = exported.reference_map(model, malignancy)
    served = run_onnx_outputs(with_map, images, (MALIGNANCY_MAP,))[MALIGNANCY_MAP]
    stop()
    parity = map_parity(reference, served)
    if parity > MAP_PARITY_TOLERANCE:
        raise ConverterError(
            f"the ONNX's MALIGNANCY_MAP differs from {exported.map_reference_name} by {parity:.2e} of its largest "
            f"value (> {MAP_PARITY_TOLERANCE:g}); nothing was written. Convert with --no-malignancy-map to go on "
            "without the map, and report this.")
    onnx.save(with_map, str(exported.path))
    steps.notes.append(f"MALIGNANCY_MAP {info.grid[0]}x{info.grid[1]} (CAM of the malignant node) parity vs "
                       f"{exported.map_reference_name}: max |d| / max |map| {parity:.2e}")
    return ServedMap(info=info, fp32=served, parity=parity, reference_name=exported.map_reference_name)


# -- 4. FP16 ---------------------------------------------------------------------------------------------

@dataclass
class Fp16:
    path: Path
    size: int
    drift: drift_mod.PrecisionDriftReport


def make_fp16(fp32_path: Path, fp32_probs: np.ndarray, served_map: ServedMap | None, malignancy: np.ndarray,
              images: np.ndarray, steps: StepLog) -> Fp16:
    from .fp16 import to_mixed_fp16

    steps.say("converting to mixed-precision FP16 ONNX")
    stop = steps.timed("fp16")
    model = to_mixed_fp16(onnx.load(str(fp32_path)))
    path = fp32_path.with_name("model.fp16.onnx")
    onnx.save(model, str(path))
    stop()
    steps.say("measuring FP16 drift (onnxruntime CPU)")
    stop = steps.timed("drift_cpu")
    names = (OUTPUT, MALIGNANCY_MAP) if served_map else (OUTPUT,)
    out = run_onnx_outputs(model, images, names)
    drift = drift_mod.compare(fp32_probs, out[OUTPUT], malignancy, drift_mod.ORT_CPU_METHOD,
                              served_map.fp32 if served_map else None, out.get(MALIGNANCY_MAP))
    stop()
    steps.notes.append(drift.note())
    return Fp16(path=path, size=path.stat().st_size, drift=drift)


# -- 5. TensorRT -----------------------------------------------------------------------------------------

@dataclass
class Plan:
    data: bytes
    info: dict[str, Any]
    drift: drift_mod.PrecisionDriftReport


def build_tensorrt(opts: ConvertOptions, precision: str, fp32_path: Path, fp16: Fp16 | None, fp32_probs: np.ndarray,
                   served_map: ServedMap | None, malignancy: np.ndarray, images: np.ndarray, steps: StepLog) -> Plan:
    from .tensorrt_engine import build_engine, run_engine_outputs

    steps.say("building the TensorRT engine (minutes)")
    stop = steps.timed("tensorrt_build")
    build = build_engine(
        fp16_onnx=fp16.path if fp16 is not None else None,
        fp32_onnx=fp32_path,
        plan=fp32_path.with_name("model.plan"),
        max_batch_size=opts.max_batch_size,
        precision=precision,
        timing_cache=opts.timing_cache,
    )
    stop()
    info = {
        "version": build.tensorrt_version,
        "strongly_typed": build.strongly_typed,
        "precision_source": build.precision_source,
        "profile": [list(s) for s in build.profile],
        "outputs": list(build.outputs),
    }
    steps.notes.append(
        f"TensorRT {build.tensorrt_version} plan from {build.precision_source}, profile batch 1..{opts.max_batch_size}"
    )
    steps.say("measuring the engine's drift (GPU)")
    stop = steps.timed("drift_tensorrt")
    out = run_engine_outputs(build.plan, images, opts.max_batch_size)
    drift = drift_mod.compare(fp32_probs, out[OUTPUT], malignancy, drift_mod.TENSORRT_METHOD,
                              served_map.fp32 if served_map else None, out.get(MALIGNANCY_MAP))
    stop()
    steps.notes.append(drift.note())
    return Plan(data=build.plan.read_bytes(), info=info, drift=drift)


# -- 6. the model card -----------------------------------------------------------------------------------

def model_name(opts: ConvertOptions) -> str:
    if opts.model_name:
        return opts.model_name
    source = opts.checkpoint or opts.onnx
    return source.stem if source is not None else "demo"


def model_card(opts: ConvertOptions, precision: str, taxonomy: Taxonomy, exported: Exported,
               served_map: ServedMap | None, reference: ReferenceDistribution | None, notes: list[str]) -> ModelCard:
    """The card; a reference distribution made with other weights or another taxonomy is refused."""
    notes = list(notes)
    notes.append(
        f"taxonomy from {opts.taxonomy.name if opts.taxonomy else 'the bundled ' + DEFAULT_TAXONOMY_FILE}, "
        f"{len(taxonomy.training_classes)} training classes"
    )
    if not exported.trained:
        notes.insert(0, "UNTRAINED: seeded random demo weights; every score from this model is meaningless")
    if precision == "fp16":
        notes.append("Softmax, the input normalisation, the malignancy map and the taxonomy sums run in FP32")
    card = ModelCard(
        name=model_name(opts),
        version=str(opts.model_version),
        trained=exported.trained,
        source=exported.source,
        target=opts.target,
        precision=precision,
        preprocessing=preprocessing_dict(opts.resize, opts.normalization),
        taxonomy=taxonomy_card_entry(taxonomy, TAXONOMY_FILE),
        max_batch_size=opts.max_batch_size,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        notes=notes,
        color_managed_input=opts.color_management,
    )
    if served_map is not None:
        card.outputs = [*card.outputs, MALIGNANCY_MAP]
        card.malignancy_map = served_map.info.card_entry()
    if reference is not None:
        check_reference(reference, card.model_summary())
        card.reference_distribution = reference.to_dict()
        card.notes.append(f"reference distribution of P(malignant): {reference.n} scores "
                          f"({reference.source.get('labels', 'source not recorded')})")
    return card


def check_reference(reference: ReferenceDistribution, model: dict[str, Any]) -> None:
    """``model``: a card's ``model_summary()`` (weights and taxonomy sha256 at least)."""
    try:
        reference.check_model(model)
    except ValueError as exc:
        raise ConverterError(str(exc)) from None


# -- 7. the repository -----------------------------------------------------------------------------------

def write(opts: ConvertOptions, taxonomy: Taxonomy, card: ModelCard, inception_onnx: bytes | None,
          plan: bytes | None, steps: StepLog) -> None:
    from .taxonomy_model import build_taxonomy_onnx

    steps.say(f"writing the {opts.target} repository")
    stop = steps.timed("write")
    write_repository(
        opts.repository,
        repository_options(opts),
        taxonomy,
        card,
        Artifacts(
            inception_onnx=None if opts.target == "tensorrt" else inception_onnx,
            inception_plan=plan,
            taxonomy_onnx=build_taxonomy_onnx(taxonomy).SerializeToString(),
        ),
        force=opts.force,
    )
    stop()


# -- all of it -------------------------------------------------------------------------------------------

def convert(opts: ConvertOptions, progress: Progress | None = None) -> ConversionSummary:
    """Run the whole conversion; raises :class:`ConverterError` with advice on bad input or host."""
    check_options(opts)
    precision = opts.resolved_precision
    reference = read_reference(opts)
    taxonomy = resolve_taxonomy(opts)
    k = len(taxonomy.training_classes)
    malignancy = malignancy_matrix(taxonomy)
    images = sample_images(opts.check_images)
    steps = StepLog(progress)
    fp16: Fp16 | None = None
    plan: Plan | None = None
    with tempfile.TemporaryDirectory(prefix="skinbatch-convert-") as tmp_dir:
        exported = export_served(opts, k, images, Path(tmp_dir) / "model.fp32.onnx", steps)
        if reference is not None:  # before minutes of FP16 and TensorRT work, not after
            check_reference(reference, {"weights_sha256": exported.source.get("sha256", ""),
                                        "taxonomy_sha256": taxonomy.sha256()})
        fp32_probs, parity = check_parity(exported, images, steps)
        served_map = attach_malignancy_map(opts, exported, malignancy, images, steps)
        fp32_bytes = exported.path.read_bytes()
        if precision == "fp16":
            fp16 = make_fp16(exported.path, fp32_probs, served_map, malignancy, images, steps)
        if opts.target == "tensorrt":
            plan = build_tensorrt(opts, precision, exported.path, fp16, fp32_probs, served_map, malignancy, images,
                                  steps)
        inception_onnx = fp16.path.read_bytes() if fp16 is not None else fp32_bytes
        card = model_card(opts, precision, taxonomy, exported, served_map, reference, steps.notes)
        write(opts, taxonomy, card, inception_onnx, plan.data if plan else None, steps)
    return ConversionSummary(
        repository=str(opts.repository),
        model_name=card.name,
        model_version=opts.model_version,
        target=opts.target,
        precision=precision,
        trained=exported.trained,
        source=exported.source,
        num_classes=k,
        max_batch_size=opts.max_batch_size,
        parity_max_abs_prob=parity,
        parity_images=len(images),
        parity_reference=exported.reference_name,
        onnx_fp32_bytes=len(fp32_bytes),
        onnx_fp16_bytes=fp16.size if fp16 else None,
        drift_onnx_cpu=fp16.drift.to_dict() if fp16 else None,
        drift_tensorrt=plan.drift.to_dict() if plan else None,
        drift_tensorrt_skipped=drift_mod.TENSORRT_SKIP_REASON if precision == "fp16" and plan is None else None,
        tensorrt=plan.info if plan else None,
        seconds=steps.seconds,
        notes=card.notes,
        malignancy_map=served_map.summary() if served_map else None,
        reference_distribution=reference is not None,
    )


def add_reference_distribution(repository: Path, reference_path: Path) -> ModelCard:
    """Embed ``reference_path`` into the card of an already converted ``repository`` (no conversion).

    For a repository that was converted, served and then evaluated: ``skinbatch evaluate`` writes the
    reference, and a TensorRT model need not be built again to carry it.
    """
    from skinbatch.modelcard import ModelCardError, load_model_card

    from .repository import update_card

    reference = read_reference(ConvertOptions(repository=repository, reference_distribution=reference_path))
    assert reference is not None
    try:
        card = load_model_card(repository)
    except ModelCardError as exc:
        raise ConverterError(str(exc)) from None
    check_reference(reference, card.model_summary())
    card.reference_distribution = reference.to_dict()
    update_card(repository, card)
    return card
