"""The Triton model repository: three models, one layout for every target (docs/architecture.md).

```
skin_classifier/   ensemble: IMAGE → inception_v3 → taxonomy; model card, taxonomy and label files
inception_v3/      tensorrt_plan (model.plan) | onnxruntime_onnx (model.onnx) | python (model.py + model.onnx)
taxonomy/          onnxruntime_onnx (model.onnx) | python (model.py + model.onnx)
```

``MALIGNANCY_MAP``, where the card says the network has it, goes straight from ``inception_v3`` to the
ensemble's outputs: no later step reads it, so Triton 2.51's output-subset failure (see
``taxonomy_model.TRAINING_PROBS_OUT``) does not apply, and ``tests/system/test_malignancy_map.py`` checks
both kinds of request against the real server.

Every ``config.pbtxt`` is a ``tritonclient`` ``ModelConfig`` message printed with ``text_format``, so it
parses by construction; :func:`parse_config` reads one back.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from skinbatch.contract import ENSEMBLE, INCEPTION_STEP, INTERNAL_PROBS, MODEL_NAMES, TAXONOMY_STEP
from skinbatch.modelcard import CARD_FILE, CARD_PARAMETER, ModelCard
from skinbatch.taxonomy import Taxonomy

from .cam import MALIGNANCY_MAP
from .errors import ConverterError
from .export import INPUT, OUTPUT, SIZE
from .taxonomy_model import COARSE_PROBS, FINE_PROBS, MALIGNANCY, TRAINING_PROBS_OUT

ENSEMBLE_NAME = ENSEMBLE
INCEPTION_NAME = INCEPTION_STEP
TAXONOMY_NAME = TAXONOMY_STEP
TARGETS = ("tensorrt", "onnx", "cpu")
TAXONOMY_FILE = "taxonomy.json"
LABEL_FILES = {
    OUTPUT: "training_labels.txt",
    COARSE_PROBS: "coarse_labels.txt",
    FINE_PROBS: "fine_labels.txt",
    MALIGNANCY: "malignancy_labels.txt",
}
TEMPLATE = "ort_model.py.tmpl"


@dataclass(frozen=True)
class RepositoryOptions:
    """How the models are served; ``max_batch_size`` also bounds the TensorRT optimisation profile."""

    target: str = "cpu"
    max_batch_size: int = 32
    preferred_batch_sizes: Sequence[int] = field(default_factory=tuple)
    """Empty: half and all of ``max_batch_size``."""
    max_queue_delay_us: int = 2000
    instances: int = 1
    model_version: int = 1
    cpu_threads: int = 0
    """onnxruntime intra-op threads in the ``cpu`` target's python models (0: onnxruntime's default)."""
    cpu_spin: bool = False
    """Let those threads spin while idle (onnxruntime's default). Off: they sleep, and the CPU they would
    burn between batches goes to the decoders on the same host (docs/benchmarks.md: about 2 ms an image)."""

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ConverterError(f"unknown target {self.target!r}; choose one of {', '.join(TARGETS)}")
        if self.max_batch_size < 1:
            raise ConverterError(f"--max-batch-size must be at least 1, got {self.max_batch_size}")
        bad = [b for b in self.preferred_batch_sizes if not 1 <= b <= self.max_batch_size]
        if bad:
            raise ConverterError(
                f"preferred batch sizes {bad} lie outside 1…{self.max_batch_size}; lower them or raise --max-batch-size"
            )
        if self.instances < 1 or self.model_version < 1 or self.max_queue_delay_us < 0 or self.cpu_threads < 0:
            raise ConverterError("--instances and --model-version must be ≥ 1, the queue delay and threads ≥ 0")

    @property
    def preferred(self) -> list[int]:
        if self.preferred_batch_sizes:
            return sorted(set(int(b) for b in self.preferred_batch_sizes))
        return sorted({max(1, self.max_batch_size // 2), self.max_batch_size})


# -- configs ---------------------------------------------------------------------------------------------

def _tensor(cls: type, name: str, dtype: int, dims: Sequence[int], **kw: Any) -> Any:
    return cls(name=name, data_type=dtype, dims=list(dims), **kw)


def _batching(opts: RepositoryOptions) -> mc.ModelDynamicBatching:
    return mc.ModelDynamicBatching(
        preferred_batch_size=opts.preferred, max_queue_delay_microseconds=opts.max_queue_delay_us
    )


def _warmup(name: str, dtype: int, dims: Sequence[int]) -> mc.ModelWarmup:
    # A zero batch of one loads the weights and builds kernels before the first real request.
    return mc.ModelWarmup(
        name=f"zero_{name.lower()}",
        batch_size=1,
        inputs={name: mc.ModelWarmup.Input(data_type=dtype, dims=list(dims), zero_data=True)},
    )


def _python_parameters(config: mc.ModelConfig, opts: RepositoryOptions) -> None:
    config.parameters["intra_op_threads"].string_value = str(opts.cpu_threads)
    config.parameters["allow_spinning"].string_value = "1" if opts.cpu_spin else "0"
    config.parameters["onnx_file"].string_value = "model.onnx"


def _map_outputs(map_grid: Sequence[int] | None) -> list[mc.ModelOutput]:
    return [] if map_grid is None else [_tensor(mc.ModelOutput, MALIGNANCY_MAP, mc.TYPE_FP32, list(map_grid))]


def inception_config(
    opts: RepositoryOptions, num_classes: int, map_grid: Sequence[int] | None = None
) -> mc.ModelConfig:
    """``map_grid``: the ``MALIGNANCY_MAP`` grid (h, w) when the network computes it, else None."""
    config = mc.ModelConfig(
        name=INCEPTION_NAME,
        max_batch_size=opts.max_batch_size,
        input=[_tensor(mc.ModelInput, INPUT, mc.TYPE_UINT8, [SIZE, SIZE, 3])],
        output=[_tensor(mc.ModelOutput, OUTPUT, mc.TYPE_FP32, [num_classes]), *_map_outputs(map_grid)],
        dynamic_batching=_batching(opts),
        model_warmup=[_warmup(INPUT, mc.TYPE_UINT8, [SIZE, SIZE, 3])],
    )
    if opts.target == "tensorrt":
        config.platform = "tensorrt_plan"
        config.default_model_filename = "model.plan"
        kind = mc.ModelInstanceGroup.KIND_GPU
    elif opts.target == "onnx":
        config.platform = "onnxruntime_onnx"
        config.default_model_filename = "model.onnx"
        # GPU where Triton has one, CPU otherwise: the same repository serves on both.
        kind = mc.ModelInstanceGroup.KIND_AUTO
    else:
        config.backend = "python"
        kind = mc.ModelInstanceGroup.KIND_CPU
        _python_parameters(config, opts)
    config.instance_group.append(mc.ModelInstanceGroup(kind=kind, count=opts.instances))
    return config


def taxonomy_config(opts: RepositoryOptions, taxonomy: Taxonomy) -> mc.ModelConfig:
    k = len(taxonomy.training_classes)
    config = mc.ModelConfig(
        name=TAXONOMY_NAME,
        max_batch_size=opts.max_batch_size,
        input=[_tensor(mc.ModelInput, OUTPUT, mc.TYPE_FP32, [k])],
        output=[
            _tensor(mc.ModelOutput, COARSE_PROBS, mc.TYPE_FP32, [len(taxonomy.coarse_labels)]),
            _tensor(mc.ModelOutput, FINE_PROBS, mc.TYPE_FP32, [len(taxonomy.fine_labels)]),
            _tensor(mc.ModelOutput, MALIGNANCY, mc.TYPE_FP32, [1]),
            _tensor(mc.ModelOutput, TRAINING_PROBS_OUT, mc.TYPE_FP32, [k]),
        ],
        # Batch the sums too, but without waiting: they cost microseconds.
        dynamic_batching=mc.ModelDynamicBatching(max_queue_delay_microseconds=0),
        model_warmup=[_warmup(OUTPUT, mc.TYPE_FP32, [k])],
        # A few hundred FLOPs per image: CPU, so the GPU stays with the network.
        instance_group=[mc.ModelInstanceGroup(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)],
    )
    if opts.target == "cpu":
        config.backend = "python"
        _python_parameters(config, opts)
    else:
        config.platform = "onnxruntime_onnx"
        config.default_model_filename = "model.onnx"
    return config


def ensemble_config(opts: RepositoryOptions, taxonomy: Taxonomy, card: ModelCard) -> mc.ModelConfig:
    """The ensemble; it exposes ``MALIGNANCY_MAP`` when the card says the network computes it."""
    k = len(taxonomy.training_classes)
    version = opts.model_version
    map_grid = card.malignancy_map_grid
    config = mc.ModelConfig(
        name=ENSEMBLE_NAME,
        platform="ensemble",
        max_batch_size=opts.max_batch_size,
        input=[_tensor(mc.ModelInput, INPUT, mc.TYPE_UINT8, [SIZE, SIZE, 3])],
        output=[
            _tensor(mc.ModelOutput, name, mc.TYPE_FP32, [dim], label_filename=LABEL_FILES[name])
            for name, dim in (
                (OUTPUT, k),
                (COARSE_PROBS, len(taxonomy.coarse_labels)),
                (FINE_PROBS, len(taxonomy.fine_labels)),
                (MALIGNANCY, 1),
            )
        ] + _map_outputs(map_grid),
        ensemble_scheduling=mc.ModelEnsembling(
            step=[
                # Steps pin the version written with them, so a repository holding several versions
                # never mixes a network with another version's taxonomy.
                mc.ModelEnsembling.Step(
                    model_name=INCEPTION_NAME,
                    model_version=version,
                    input_map={INPUT: INPUT},
                    # The map feeds no later step, so it can be an ensemble output straight from here.
                    output_map={OUTPUT: INTERNAL_PROBS, **({MALIGNANCY_MAP: MALIGNANCY_MAP} if map_grid else {})},
                ),
                mc.ModelEnsembling.Step(
                    model_name=TAXONOMY_NAME,
                    model_version=version,
                    input_map={OUTPUT: INTERNAL_PROBS},
                    output_map={
                        TRAINING_PROBS_OUT: OUTPUT,
                        **{name: name for name in (COARSE_PROBS, FINE_PROBS, MALIGNANCY)},
                    },
                ),
            ]
        ),
    )
    config.parameters[CARD_PARAMETER].string_value = card.to_json(indent=None)
    return config


def config_text(config: mc.ModelConfig) -> str:
    return text_format.MessageToString(config, as_utf8=True)


def parse_config(text: str) -> mc.ModelConfig:
    """Parse a ``config.pbtxt`` the way Triton does (protobuf text format into ``ModelConfig``)."""
    return text_format.Parse(text, mc.ModelConfig())


# -- files -----------------------------------------------------------------------------------------------

def model_template() -> str:
    return resources.files("skinbatch.converter.templates").joinpath(TEMPLATE).read_text(encoding="utf-8")


@dataclass(frozen=True)
class Artifacts:
    """What goes into the version folders; produced by the pipeline for the chosen target."""

    inception_onnx: bytes | None = None
    inception_plan: bytes | None = None
    taxonomy_onnx: bytes = b""


def _labels(taxonomy: Taxonomy) -> dict[str, list[str]]:
    return {
        LABEL_FILES[OUTPUT]: list(taxonomy.training_classes),
        LABEL_FILES[COARSE_PROBS]: list(taxonomy.coarse_labels),
        LABEL_FILES[FINE_PROBS]: list(taxonomy.fine_labels),
        LABEL_FILES[MALIGNANCY]: [taxonomy.malignant_node],
    }


def _write_models(
    root: Path, opts: RepositoryOptions, taxonomy: Taxonomy, card: ModelCard, artifacts: Artifacts
) -> None:
    v = str(opts.model_version)
    ens = root / ENSEMBLE_NAME
    (ens / v).mkdir(parents=True)  # the ensemble has no files of its own, but Triton wants the version folder
    (ens / "config.pbtxt").write_text(config_text(ensemble_config(opts, taxonomy, card)), encoding="utf-8")
    (ens / CARD_FILE).write_text(card.to_json() + "\n", encoding="utf-8")
    (ens / TAXONOMY_FILE).write_text(taxonomy.to_json(), encoding="utf-8")
    for filename, labels in _labels(taxonomy).items():
        (ens / filename).write_text("".join(f"{label}\n" for label in labels), encoding="utf-8")

    inc = root / INCEPTION_NAME
    (inc / v).mkdir(parents=True)
    (inc / "config.pbtxt").write_text(
        config_text(inception_config(opts, len(taxonomy.training_classes), card.malignancy_map_grid)),
        encoding="utf-8"
    )
    if opts.target == "tensorrt":
        if artifacts.inception_plan is None:
            raise ConverterError("internal: the tensorrt target needs a built plan")
        (inc / v / "model.plan").write_bytes(artifacts.inception_plan)
    else:
        if artifacts.inception_onnx is None:
            raise ConverterError("internal: the onnx and cpu targets need the Inception ONNX")
        (inc / v / "model.onnx").write_bytes(artifacts.inception_onnx)

    tax = root / TAXONOMY_NAME
    (tax / v).mkdir(parents=True)
    (tax / "config.pbtxt").write_text(config_text(taxonomy_config(opts, taxonomy)), encoding="utf-8")
    (tax / v / "model.onnx").write_bytes(artifacts.taxonomy_onnx)

    if opts.target == "cpu":
        template = model_template()
        (inc / v / "model.py").write_text(template, encoding="utf-8")
        (tax / v / "model.py").write_text(template, encoding="utf-8")


def write_repository(
    repository: Path,
    opts: RepositoryOptions,
    taxonomy: Taxonomy,
    card: ModelCard,
    artifacts: Artifacts,
    force: bool = False,
) -> list[Path]:
    """Write the three models into ``repository``; returns their folders.

    Other models in the repository are left alone. Existing ``skin_classifier``/``inception_v3``/``taxonomy``
    folders are replaced only with ``force``. The models are written to a staging folder first and then
    moved, so an interrupted run never leaves a half-written model for Triton to load.
    """
    repository = Path(repository)
    existing = [repository / name for name in MODEL_NAMES if (repository / name).exists()]
    if existing and not force:
        raise ConverterError(
            f"{', '.join(p.name for p in existing)} already exist in {repository}; pass --force to replace them "
            "or choose another --repository"
        )
    repository.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".skinbatch-convert-", dir=repository) as staging:
        stage = Path(staging)
        _write_models(stage, opts, taxonomy, card, artifacts)
        for path in existing:
            shutil.rmtree(path)
        for name in MODEL_NAMES:
            (stage / name).rename(repository / name)
    return [repository / name for name in MODEL_NAMES]


def read_configs(repository: Path) -> dict[str, mc.ModelConfig]:
    """Every model's ``config.pbtxt`` parsed back, by model name."""
    return {
        name: parse_config((Path(repository) / name / "config.pbtxt").read_text(encoding="utf-8"))
        for name in MODEL_NAMES
    }



def _replace_text(path: Path, text: str) -> None:
    """Write beside and rename: Triton polling the repository never reads half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def update_card(repository: Path, card: ModelCard) -> None:
    """Replace the ensemble's card (``model_card.json`` and the ``model_card`` config parameter) in place.

    The configs, weights and labels stay as they are. Triton serves the new card once it reloads the
    ensemble: at once with ``--model-control-mode=poll``, else after a restart (or an explicit load).
    """
    folder = Path(repository) / ENSEMBLE_NAME
    config_path = folder / "config.pbtxt"
    if not config_path.is_file():
        raise ConverterError(
            f"{folder} has no config.pbtxt; is {repository} a repository written by `skinbatch convert`?")
    config = parse_config(config_path.read_text(encoding="utf-8"))
    config.parameters[CARD_PARAMETER].string_value = card.to_json(indent=None)
    _replace_text(folder / CARD_FILE, card.to_json() + "\n")
    _replace_text(config_path, config_text(config))
