"""Inception-v3 weights in: a PyTorch checkpoint, or seeded random ("demo") weights.

The network is torchvision's ``inception_v3`` built with ``transform_input=False``: the converter folds
its own normalisation into the exported graph, and torchvision's ``transform_input`` would normalise a
second time. ``init_weights=False`` skips the slow truncated-normal initialisation that a checkpoint
overwrites anyway.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torchvision

from .errors import ConverterError

#: Keys under which training scripts commonly wrap the state dict.
WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
DEMO_SEED = 0
#: Gives logits with a spread of a few units on He-initialised features: peaked, varied probabilities.
DEMO_FC_STD = 0.1


@dataclass(frozen=True)
class LoadedWeights:
    """An Inception-v3 in eval mode plus where its weights came from (for the model card)."""

    model: torch.nn.Module
    kind: str
    """``checkpoint`` or ``demo-weights``."""
    sha256: str
    """Of the checkpoint file, or of the seeded state for demo weights."""
    filename: str | None
    """Base name only: the card must not leak the converting host's paths."""
    had_aux_logits: bool = False


def build_inception(num_classes: int) -> torch.nn.Module:
    """An uninitialised-but-valid Inception-v3 for ``num_classes`` training classes, without aux head.

    The auxiliary classifier only contributes to the training loss; in eval mode torchvision ignores it,
    so the served network never needs it.
    """
    return torchvision.models.inception_v3(
        weights=None,
        init_weights=False,
        transform_input=False,
        aux_logits=False,
        num_classes=num_classes,
    )


def extract_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint, unwrapped from ``{"state_dict": ...}``-style containers.

    A ``module.`` prefix (from ``DataParallel``/``DistributedDataParallel``) is stripped.
    """
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    if not isinstance(obj, Mapping):
        raise ConverterError(
            f"the checkpoint holds a {type(obj).__name__}, not a state dict. Save it with "
            "`torch.save(model.state_dict(), path)`."
        )
    for key in WRAPPER_KEYS:
        inner = obj.get(key)
        if isinstance(inner, torch.nn.Module):
            inner = inner.state_dict()
        if isinstance(inner, Mapping) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            obj = inner
            break
    tensors = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not tensors:
        raise ConverterError(
            "the checkpoint holds no tensors. Expected a state dict, bare or under one of the keys "
            f"{', '.join(WRAPPER_KEYS)}."
        )
    if all(k.startswith("module.") for k in tensors):
        tensors = {k[len("module."):]: v for k, v in tensors.items()}
    return tensors


def class_count(state: Mapping[str, torch.Tensor]) -> int:
    """The number of outputs of the final classifier (``fc``)."""
    weight = state.get("fc.weight")
    if weight is None or weight.ndim != 2:
        raise ConverterError(
            "the checkpoint has no 'fc.weight' matrix, so it is not a torchvision inception_v3 state dict. "
            "Export other architectures to ONNX and convert with --onnx."
        )
    return int(weight.shape[0])


def check_class_count(found: int, taxonomy_classes: int, what: str) -> None:
    if found != taxonomy_classes:
        raise ConverterError(
            f"{what} has {found} output classes but the taxonomy lists {taxonomy_classes} training classes. "
            "Pass the taxonomy the network was trained on with --taxonomy (its 'training_classes' must be "
            "in the order of the network's outputs)."
        )


def model_from_state_dict(state: Mapping[str, torch.Tensor], num_classes: int) -> tuple[torch.nn.Module, bool]:
    """Load ``state`` into a fresh Inception-v3; returns the eval-mode model and whether aux weights were dropped."""
    check_class_count(class_count(state), num_classes, "the checkpoint")
    had_aux = any(k.startswith("AuxLogits.") for k in state)
    state = {k: v for k, v in state.items() if not k.startswith("AuxLogits.")}
    model = build_inception(num_classes)
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong_shape = [
        f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if missing or unexpected or wrong_shape:
        raise ConverterError(
            "the checkpoint does not match torchvision's inception_v3: "
            f"{len(missing)} missing keys (e.g. {missing[:3]}), {len(unexpected)} unexpected keys "
            f"(e.g. {unexpected[:3]}), {len(wrong_shape)} of another shape (e.g. {wrong_shape[:2]}). "
            "Convert other architectures through ONNX with --onnx."
        )
    model.load_state_dict(state, strict=True)
    return model.eval(), had_aux


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def state_sha256(model: torch.nn.Module) -> str:
    """A digest of the weights themselves, in key order: reproducible for a given seed and torch version."""
    digest = hashlib.sha256()
    for key, tensor in model.state_dict().items():
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def load_checkpoint(path: str | Path, num_classes: int) -> LoadedWeights:
    """Read a torchvision Inception-v3 checkpoint (bare or wrapped state dict, with or without aux logits)."""
    p = Path(path)
    if not p.is_file():
        raise ConverterError(f"checkpoint {p} does not exist; check the --checkpoint path")
    try:
        # weights_only: a checkpoint is data; never execute pickled code from it.
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - torch raises many types for unreadable files
        raise ConverterError(
            f"cannot read checkpoint {p.name}: {exc}. It must be a file written by torch.save holding a "
            "state dict (tensors only)."
        ) from None
    model, had_aux = model_from_state_dict(extract_state_dict(obj), num_classes)
    return LoadedWeights(model=model, kind="checkpoint", sha256=file_sha256(p), filename=p.name, had_aux_logits=had_aux)


def demo_weights(num_classes: int, seed: int = DEMO_SEED) -> LoadedWeights:
    """A seeded, randomly initialised (untrained) Inception-v3: for demos and tests only."""
    generator = torch.Generator().manual_seed(seed)
    model = build_inception(num_classes)
    with torch.no_grad():
        # Variance-preserving (He) init. PyTorch's default init shrinks the activations layer after layer,
        # and through Inception's ~95 layers they vanish: every image would get the same scores, which makes
        # a poor demo and hides mistakes in tests.
        for module in model.modules():
            if isinstance(module, torch.nn.Conv2d):
                torch.nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu", generator=generator)
            elif isinstance(module, torch.nn.Linear):
                torch.nn.init.normal_(module.weight, std=DEMO_FC_STD, generator=generator)
                torch.nn.init.zeros_(module.bias)
    model.eval()
    return LoadedWeights(model=model, kind="demo-weights", sha256=state_sha256(model), filename=None)
