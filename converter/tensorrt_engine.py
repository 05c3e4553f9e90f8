"""TensorRT plan for the ``tensorrt`` target: a strongly typed network built from the mixed-precision ONNX.

TensorRT 11 removed weak typing (``BuilderFlag.FP16`` is gone; every network is strongly typed and the
``STRONGLY_TYPED`` creation flag is kept only for compatibility). Precision therefore comes from the
ONNX itself: the FP16 ONNX of :mod:`skinbatch.converter.fp16` (Softmax and the input normalisation in FP32). TensorRT
10.x has strong typing too; only a TensorRT without it falls back to the FP32 ONNX plus
``BuilderFlag.FP16``.

An engine runs only on the TensorRT version and GPU model that built it: build it on the deployment GPU
with the TensorRT that ships in the Triton release you serve with (NGC images of the same release number).

The plan has the ONNX's outputs: ``TRAINING_PROBS`` and, where the converter added it,
``MALIGNANCY_MAP`` (FP32 in the strongly typed build because the FP16 ONNX computes it in FP32; pinned to
FP32 by layer precision in the TensorRT < 10 fallback). The profile only concerns the input.

``tensorrt`` is imported lazily: the rest of the converter works on hosts without it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .cam import MALIGNANCY_MAP, PREFIX as MAP_PREFIX
from .errors import ConverterError, TensorRTUnavailable
from .export import INPUT, OUTPUT, SIZE

Shape = tuple[int, int, int, int]

NEEDS_GPU = (
    "building a TensorRT plan needs the `tensorrt` Python package and an NVIDIA GPU ({why}). Run "
    "`skinbatch convert --target tensorrt` on a GPU host of the same model you deploy on, ideally inside "
    "the NGC TensorRT container (nvcr.io/nvidia/tensorrt:<YY.MM>-py3) of the same release as your Triton "
    "image (tritonserver:<YY.MM>-py3), or convert with --target onnx / --target cpu here."
)


@dataclass(frozen=True)
class EngineBuild:
    plan: Path
    tensorrt_version: str
    strongly_typed: bool
    precision_source: str
    """``fp16-onnx`` (strong typing), ``fp32-onnx`` or ``fp32-onnx+BuilderFlag.FP16`` (TensorRT < 10 fallback)."""
    profile: tuple[Shape, Shape, Shape]
    outputs: tuple[str, ...] = (OUTPUT,)
    """The network's output tensors, in order."""


def profile_shapes(
    max_batch_size: int, opt_batch_size: int | None = None, size: int = SIZE
) -> tuple[Shape, Shape, Shape]:
    """(min, opt, max) shapes of ``IMAGE`` for the optimisation profile.

    The profile must cover batch 1 … ``max_batch_size`` exactly, the same ``max_batch_size`` as in
    ``config.pbtxt``: Triton's dynamic batcher may form any batch up to it, and a profile that stops short
    fails at run time (TensorRT #4420, server #1157/#5013). ``opt`` defaults to the maximum, where
    throughput matters most.
    """
    if max_batch_size < 1:
        raise ConverterError(f"--max-batch-size must be at least 1, got {max_batch_size}")
    opt = max_batch_size if opt_batch_size is None else opt_batch_size
    if not 1 <= opt <= max_batch_size:
        raise ConverterError(f"the optimisation batch size {opt} is outside 1…{max_batch_size}")
    return (1, size, size, 3), (opt, size, size, 3), (max_batch_size, size, size, 3)


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or a :class:`TensorRTUnavailable` that says where to run the converter instead."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise TensorRTUnavailable(NEEDS_GPU.format(why=f"tensorrt is not importable: {exc}")) from None
    return trt


def gpu_available() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:  # pragma: no cover - torch is a converter dependency
        return False


def require_tensorrt() -> Any:
    trt = import_tensorrt()
    if not gpu_available():
        raise TensorRTUnavailable(NEEDS_GPU.format(why="no CUDA GPU is visible"))
    return trt


def tensorrt_major(trt: Any) -> int:
    return int(str(trt.__version__).split(".")[0])


def _network_flags(trt: Any) -> tuple[int, bool]:
    """Creation flags, and whether the network is strongly typed."""
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if flag is not None:
        return 1 << int(flag), True
    if tensorrt_major(trt) >= 11:  # strong typing is the only mode; the flag may disappear in later releases
        return 0, True
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    return (1 << int(explicit) if explicit is not None else 0), False


def build_engine(
    fp16_onnx: Path | None,
    fp32_onnx: Path,
    plan: Path,
    max_batch_size: int,
    precision: str = "fp16",
    opt_batch_size: int | None = None,
    timing_cache: Path | None = None,
    workspace_bytes: int = 2 << 30,
) -> EngineBuild:
    """Build and write ``plan``; the timing cache is loaded if present and saved after the build."""
    trt = require_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags, strongly_typed = _network_flags(trt)
    network = builder.create_network(flags)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)

    if precision == "fp16" and strongly_typed:
        if fp16_onnx is None:
            raise ConverterError("internal: the FP16 ONNX is needed for a strongly typed FP16 build")
        source, precision_source = fp16_onnx, "fp16-onnx"
    elif precision == "fp16":
        source, precision_source = fp32_onnx, "fp32-onnx+BuilderFlag.FP16"
        config.set_flag(trt.BuilderFlag.FP16)
    else:
        source, precision_source = fp32_onnx, "fp32-onnx"
        # TF32 is on by default and would silently cut FP32 convolutions to a 10-bit mantissa.
        if hasattr(trt.BuilderFlag, "TF32"):
            config.clear_flag(trt.BuilderFlag.TF32)

    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(source)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ConverterError(f"TensorRT could not parse {source.name}: {errors}")
    if not strongly_typed and precision == "fp16":
        pin_map_fp32(trt, network, config)
    outputs = tuple(network.get_output(i).name for i in range(network.num_outputs))

    shapes = profile_shapes(max_batch_size, opt_batch_size)
    profile = builder.create_optimization_profile()
    profile.set_shape(INPUT, *shapes)
    config.add_optimization_profile(profile)

    cache_bytes = timing_cache.read_bytes() if timing_cache is not None and timing_cache.is_file() else b""
    cache = config.create_timing_cache(cache_bytes)
    # ignore_mismatch=False: a cache from another GPU or TensorRT version would mislead tactic selection.
    config.set_timing_cache(cache, False)

    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ConverterError(
            "TensorRT failed to build the engine (see its log above). Check that the TensorRT version matches "
            "your Triton release and that the GPU has enough memory for --max-batch-size."
        )
    plan.parent.mkdir(parents=True, exist_ok=True)
    plan.write_bytes(bytes(serialized))
    if timing_cache is not None:
        timing_cache.parent.mkdir(parents=True, exist_ok=True)
        timing_cache.write_bytes(bytes(config.get_timing_cache().serialize()))
    return EngineBuild(
        plan=plan,
        tensorrt_version=str(trt.__version__),
        strongly_typed=strongly_typed,
        precision_source=precision_source,
        profile=shapes,
        outputs=outputs,
    )


def pin_map_fp32(trt: Any, network: Any, config: Any) -> int:
    """Keep the malignancy-map layers in FP32 in a weakly typed FP16 build; returns how many were pinned.

    Only the TensorRT < 10 fallback needs it: with ``BuilderFlag.FP16`` TensorRT may run any layer in FP16
    unless told otherwise, and the map is a 2048-term sum whose terms cancel.
    """
    pinned = 0
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        if not layer.name.startswith(MAP_PREFIX):
            continue
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            layer.set_output_type(j, trt.float32)
        pinned += 1
    for i in range(network.num_outputs):
        if network.get_output(i).name == MALIGNANCY_MAP:
            network.get_output(i).dtype = trt.float32
    if pinned:
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
    return pinned


def engine_profile(plan: Path) -> tuple[Shape, Shape, Shape]:
    """The (min, opt, max) ``IMAGE`` shapes stored in a built plan: to check it against ``max_batch_size``."""
    trt = require_tensorrt()
    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(plan.read_bytes())
    return tuple(tuple(s) for s in engine.get_tensor_profile_shape(INPUT, 0))  # type: ignore[return-value]


def run_engine(plan: Path, images: np.ndarray, batch: int) -> np.ndarray:
    """``TRAINING_PROBS`` of a plan on the GPU, in chunks of ``batch`` images."""
    return run_engine_outputs(plan, images, batch)[OUTPUT]


def run_engine_outputs(plan: Path, images: np.ndarray, batch: int) -> dict[str, np.ndarray]:
    """Every output of a plan on the GPU (device buffers via torch), in chunks of ``batch`` images.

    Every output needs a device address before ``execute_async_v3``, whether or not it is read.
    """
    trt = require_tensorrt()
    import torch

    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(plan.read_bytes())
    context = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    outputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
    # The stream torch copies on: execution is then ordered after the host-to-device copy.
    stream = torch.cuda.current_stream()
    outs: dict[str, list[np.ndarray]] = {name: [] for name in outputs}
    for start in range(0, len(images), batch):
        chunk = torch.from_numpy(np.ascontiguousarray(images[start:start + batch])).cuda()
        context.set_input_shape(INPUT, tuple(chunk.shape))
        context.set_tensor_address(INPUT, chunk.data_ptr())
        buffers = {}
        for name in outputs:
            buffers[name] = torch.empty(tuple(context.get_tensor_shape(name)), dtype=torch.float32, device="cuda")
            context.set_tensor_address(name, buffers[name].data_ptr())
        if not context.execute_async_v3(stream.cuda_stream):
            raise ConverterError("TensorRT inference failed while measuring the engine's drift")
        stream.synchronize()
        for name, buffer in buffers.items():
            outs[name].append(buffer.cpu().numpy())
    return {name: np.concatenate(values) for name, values in outs.items()}
