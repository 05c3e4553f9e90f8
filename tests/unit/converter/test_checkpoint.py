"""Checkpoint loading: bare or wrapped state dicts, ``module.`` prefixes, aux logits, class-count errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.needs import need_module

torch = need_module("torch", "the converter's packages: pip install 'skinbatch[convert]'")
torchvision = need_module("torchvision", "the converter's packages: pip install 'skinbatch[convert]'")

from skinbatch.converter.checkpoint import (  # noqa: E402
    demo_weights,
    extract_state_dict,
    load_checkpoint,
    state_sha256,
)
from skinbatch.converter.errors import ConverterError  # noqa: E402

K = 45


@pytest.fixture(scope="module")
def state() -> dict:
    return demo_weights(K, seed=3).model.state_dict()


def _aux_state(num_classes: int) -> dict:
    aux = torchvision.models.inception.InceptionAux(768, num_classes)
    return {f"AuxLogits.{k}": v for k, v in aux.state_dict().items()}


def _same_weights(model: torch.nn.Module, state: dict) -> bool:
    loaded = model.state_dict()
    return all(torch.equal(loaded[k], state[k]) for k in loaded)


@pytest.mark.parametrize(
    "variant",
    ["bare", "state_dict", "model", "model_state_dict", "module_prefix", "wrapped_module_prefix", "aux", "aux_wrapped"],
)
def test_checkpoint_variants_load_the_same_weights(variant: str, state: dict, tmp_path: Path) -> None:
    obj: object
    if variant == "bare":
        obj = state
    elif variant in ("state_dict", "model", "model_state_dict"):
        obj = {variant: state, "epoch": 12, "optimizer": {"lr": 0.01}}
    elif variant == "module_prefix":
        obj = {f"module.{k}": v for k, v in state.items()}
    elif variant == "wrapped_module_prefix":
        obj = {"state_dict": {f"module.{k}": v for k, v in state.items()}}
    elif variant == "aux":
        obj = {**state, **_aux_state(K)}
    else:
        obj = {"model_state_dict": {f"module.{k}": v for k, v in {**state, **_aux_state(K)}.items()}}
    path = tmp_path / f"{variant}.pt"
    torch.save(obj, path)

    loaded = load_checkpoint(path, K)

    assert _same_weights(loaded.model, state)
    assert not loaded.model.training
    assert loaded.kind == "checkpoint"
    assert loaded.filename == path.name
    assert len(loaded.sha256) == 64
    assert loaded.had_aux_logits == variant.startswith("aux")


def test_class_count_mismatch_names_both_numbers(state: dict, tmp_path: Path) -> None:
    bad = dict(state)
    bad["fc.weight"] = torch.zeros(10, 2048)
    bad["fc.bias"] = torch.zeros(10)
    path = tmp_path / "ten.pt"
    torch.save(bad, path)
    with pytest.raises(ConverterError) as info:
        load_checkpoint(path, K)
    message = str(info.value)
    assert "10" in message and "45" in message and "--taxonomy" in message


def test_not_an_inception_checkpoint_is_explained(tmp_path: Path) -> None:
    path = tmp_path / "resnet.pt"
    torch.save(torchvision.models.resnet18(num_classes=K).state_dict(), path)
    with pytest.raises(ConverterError, match="missing keys"):
        load_checkpoint(path, K)


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConverterError, match="does not exist"):
        load_checkpoint(tmp_path / "nope.pt", K)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ConverterError, match="cannot read checkpoint"):
        load_checkpoint(junk, K)


def test_extract_rejects_containers_without_tensors() -> None:
    with pytest.raises(ConverterError, match="no tensors"):
        extract_state_dict({"epoch": 3})
    with pytest.raises(ConverterError, match="not a state dict"):
        extract_state_dict([1, 2, 3])


def test_demo_weights_are_seeded_and_untrained_kind() -> None:
    a, b, c = demo_weights(K, seed=1), demo_weights(K, seed=1), demo_weights(K, seed=2)
    assert a.kind == "demo-weights" and a.filename is None
    assert a.sha256 == b.sha256 == state_sha256(b.model)
    assert a.sha256 != c.sha256
