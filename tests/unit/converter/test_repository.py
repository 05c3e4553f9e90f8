"""The model repository: layout of docs/architecture.md, every config.pbtxt parses into ModelConfig."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.fixtures.needs import need_module

need_module("tritonclient.grpc", "tritonclient[grpc], a dependency of skinbatch: reinstall it")
from google.protobuf import json_format  # noqa: E402
from tritonclient.grpc import model_config_pb2 as mc  # noqa: E402

from skinbatch.converter.errors import ConverterError  # noqa: E402
from skinbatch.converter.pipeline import preprocessing_dict  # noqa: E402
from skinbatch.converter.repository import (  # noqa: E402
    LABEL_FILES,
    TARGETS,
    Artifacts,
    RepositoryOptions,
    config_text,
    ensemble_config,
    inception_config,
    model_template,
    parse_config,
    read_configs,
    taxonomy_config,
    write_repository,
)
from skinbatch.converter.tensorrt_engine import profile_shapes  # noqa: E402
from skinbatch.modelcard import ModelCard, card_from_model_config, load_model_card  # noqa: E402
from skinbatch.taxonomy import default_taxonomy  # noqa: E402
from skinbatch.taxonomy.card import taxonomy_card_entry  # noqa: E402

TAXONOMY = default_taxonomy()
K = len(TAXONOMY.training_classes)


def _card(target: str, max_batch_size: int) -> ModelCard:
    return ModelCard(
        name="test", version="1", trained=False, source={"kind": "demo-weights", "sha256": "0" * 64, "filename": None},
        target=target, precision="fp32", preprocessing=preprocessing_dict("center_crop", "inception"),
        taxonomy=taxonomy_card_entry(TAXONOMY, "taxonomy.json"), max_batch_size=max_batch_size, created="now",
        notes=["a note with \"quotes\" and ünïcode"],
    )


def _write(root: Path, target: str, **kw) -> RepositoryOptions:
    opts = RepositoryOptions(target=target, **kw)
    artifacts = Artifacts(
        inception_onnx=None if target == "tensorrt" else b"onnx",
        inception_plan=b"plan" if target == "tensorrt" else None,
        taxonomy_onnx=b"taxonomy-onnx",
    )
    write_repository(root, opts, TAXONOMY, _card(target, opts.max_batch_size), artifacts)
    return opts


@pytest.mark.parametrize("target", TARGETS)
def test_every_config_parses_and_matches_the_contract(target: str, tmp_path: Path) -> None:
    opts = _write(tmp_path, target, max_batch_size=24, preferred_batch_sizes=(8, 24), instances=2, model_version=3)
    configs = read_configs(tmp_path)
    assert set(configs) == {"skin_classifier", "inception_v3", "taxonomy"}
    for config in configs.values():
        assert isinstance(config, mc.ModelConfig)
        assert config.max_batch_size == 24
        # Printing the parsed message gives the same text back: nothing was lost or invented.
        assert parse_config(config_text(config)) == config

    ens, inc, tax = configs["skin_classifier"], configs["inception_v3"], configs["taxonomy"]
    assert ens.platform == "ensemble"
    assert [(i.name, i.data_type, list(i.dims)) for i in ens.input] == [("IMAGE", mc.TYPE_UINT8, [299, 299, 3])]
    assert [(o.name, o.data_type, list(o.dims), o.label_filename) for o in ens.output] == [
        ("TRAINING_PROBS", mc.TYPE_FP32, [K], "training_labels.txt"),
        ("COARSE_PROBS", mc.TYPE_FP32, [3], "coarse_labels.txt"),
        ("FINE_PROBS", mc.TYPE_FP32, [9], "fine_labels.txt"),
        ("MALIGNANCY", mc.TYPE_FP32, [1], "malignancy_labels.txt"),
    ]
    steps = ens.ensemble_scheduling.step
    assert [(s.model_name, s.model_version) for s in steps] == [("inception_v3", 3), ("taxonomy", 3)]
    assert dict(steps[0].input_map) == {"IMAGE": "IMAGE"}
    assert dict(steps[0].output_map) == {"TRAINING_PROBS": "inception_probs"}
    assert dict(steps[1].input_map) == {"TRAINING_PROBS": "inception_probs"}
    # Every ensemble output comes from the last step (Triton 2.51 fails output subsets otherwise).
    assert dict(steps[1].output_map) == {"COARSE_PROBS": "COARSE_PROBS", "FINE_PROBS": "FINE_PROBS",
                                         "MALIGNANCY": "MALIGNANCY", "TRAINING_PROBS_OUT": "TRAINING_PROBS"}

    assert list(inc.dynamic_batching.preferred_batch_size) == [8, 24]
    assert inc.dynamic_batching.max_queue_delay_microseconds == opts.max_queue_delay_us
    assert inc.instance_group[0].count == 2
    assert inc.model_warmup[0].inputs["IMAGE"].zero_data
    assert tax.HasField("dynamic_batching") and tax.model_warmup[0].inputs["TRAINING_PROBS"].zero_data

    inc_dir, tax_dir, ens_dir = tmp_path / "inception_v3", tmp_path / "taxonomy", tmp_path / "skin_classifier"
    assert (ens_dir / "3").is_dir() and not any((ens_dir / "3").iterdir())
    if target == "tensorrt":
        assert (inc.platform, inc.instance_group[0].kind) == ("tensorrt_plan", mc.ModelInstanceGroup.KIND_GPU)
        assert (inc_dir / "3" / "model.plan").read_bytes() == b"plan"
        assert tax.platform == "onnxruntime_onnx"
    elif target == "onnx":
        assert inc.platform == "onnxruntime_onnx" and (inc_dir / "3" / "model.onnx").is_file()
        assert tax.platform == "onnxruntime_onnx"
    else:
        assert inc.backend == "python" and tax.backend == "python"
        assert inc.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
        assert inc.parameters["intra_op_threads"].string_value == "0"
        assert inc.parameters["allow_spinning"].string_value == "0"
        for folder in (inc_dir, tax_dir):
            assert (folder / "3" / "model.py").read_text() == model_template()
            assert (folder / "3" / "model.onnx").is_file()
    if target != "cpu":
        assert not list(tmp_path.rglob("model.py"))
    assert (tax_dir / "3" / "model.onnx").read_bytes() == b"taxonomy-onnx"


@pytest.mark.parametrize("target", TARGETS)
def test_card_and_labels_round_trip(target: str, tmp_path: Path) -> None:
    _write(tmp_path, target)
    ens = tmp_path / "skin_classifier"
    config = read_configs(tmp_path)["skin_classifier"]
    # The form Triton returns from get_model_config(as_json=True).
    as_json = json_format.MessageToDict(config, preserving_proto_field_name=True)
    from_triton = card_from_model_config(as_json)
    from_file = load_model_card(tmp_path)
    assert from_triton == from_file
    assert from_file.training_classes == TAXONOMY.training_classes
    assert from_file.notes == ["a note with \"quotes\" and ünïcode"]
    assert json.loads((ens / "taxonomy.json").read_text())["training_classes"] == TAXONOMY.training_classes
    labels = {name: (ens / f).read_text().splitlines() for name, f in LABEL_FILES.items()}
    assert labels["TRAINING_PROBS"] == TAXONOMY.training_classes
    assert labels["COARSE_PROBS"] == TAXONOMY.coarse_labels
    assert labels["FINE_PROBS"] == TAXONOMY.fine_labels
    assert labels["MALIGNANCY"] == [TAXONOMY.malignant_node]


def test_existing_models_need_force(tmp_path: Path) -> None:
    _write(tmp_path, "cpu")
    (tmp_path / "other_model").mkdir()
    with pytest.raises(ConverterError, match="--force"):
        _write(tmp_path, "cpu")
    opts = RepositoryOptions(target="onnx", max_batch_size=8)
    write_repository(tmp_path, opts, TAXONOMY, _card("onnx", 8), Artifacts(b"onnx", None, b"t"), force=True)
    assert read_configs(tmp_path)["inception_v3"].platform == "onnxruntime_onnx"
    assert not list(tmp_path.rglob("model.py"))
    assert (tmp_path / "other_model").is_dir()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_max_batch_size_agrees_everywhere() -> None:
    opts = RepositoryOptions(target="tensorrt", max_batch_size=48)
    card = _card("tensorrt", 48)
    sizes = {
        inception_config(opts, K).max_batch_size,
        taxonomy_config(opts, TAXONOMY).max_batch_size,
        ensemble_config(opts, TAXONOMY, card).max_batch_size,
        profile_shapes(opts.max_batch_size)[2][0],
    }
    assert sizes == {48}
    assert max(opts.preferred) <= 48


def test_bad_options_are_refused() -> None:
    with pytest.raises(ConverterError, match="outside"):
        RepositoryOptions(max_batch_size=8, preferred_batch_sizes=(16,))
    with pytest.raises(ConverterError, match="target"):
        RepositoryOptions(target="tflite")
    with pytest.raises(ConverterError, match="at least 1"):
        RepositoryOptions(max_batch_size=0)


def test_converted_cpu_repository(cpu_repository: Path, converted) -> None:
    configs = read_configs(cpu_repository)
    assert configs["inception_v3"].backend == "python"
    card = load_model_card(cpu_repository)
    assert card.trained is True and card.target == "cpu" and card.precision == "fp32"
    assert card.source["kind"] == "checkpoint" and card.source["filename"] == converted.checkpoint.name
    assert "/" not in card.source["filename"]
    assert card.preprocessing == {"size": 299, "resize": "center_crop", "interpolation": "bilinear",
                                  "antialias": True, "normalization": "inception"}
    assert card.taxonomy["sha256"] == TAXONOMY.sha256() and card.max_batch_size == 16
    assert any("parity" in note for note in card.notes)
    ensemble = json_format.MessageToDict(configs["skin_classifier"], preserving_proto_field_name=True)
    assert card_from_model_config(ensemble) == card


# -- MALIGNANCY_MAP and the card's optional fields ---------------------------------------------------------

MAP_ENTRY = {"tensor": "MALIGNANCY_MAP", "shape": [8, 8], "channels": 2048, "malignant_classes": 13,
             "features": "/net/Mixed_7c/Concat_output_0", "method": "CAM"}


def _map_card(target: str, max_batch_size: int = 32) -> ModelCard:
    card = _card(target, max_batch_size)
    card.outputs = [*card.outputs, "MALIGNANCY_MAP"]
    card.malignancy_map = dict(MAP_ENTRY)
    return card


@pytest.mark.parametrize("target", TARGETS)
def test_the_map_goes_from_the_network_straight_to_the_ensemble(target: str, tmp_path: Path) -> None:
    opts = RepositoryOptions(target=target)
    artifacts = Artifacts(inception_onnx=None if target == "tensorrt" else b"onnx",
                          inception_plan=b"plan" if target == "tensorrt" else None, taxonomy_onnx=b"t")
    write_repository(tmp_path, opts, TAXONOMY, _map_card(target), artifacts)
    configs = read_configs(tmp_path)
    ens, inc, tax = configs["skin_classifier"], configs["inception_v3"], configs["taxonomy"]
    assert [(o.name, o.data_type, list(o.dims)) for o in inc.output] == [
        ("TRAINING_PROBS", mc.TYPE_FP32, [K]), ("MALIGNANCY_MAP", mc.TYPE_FP32, [8, 8])]
    assert [o.name for o in ens.output][-1] == "MALIGNANCY_MAP" and list(ens.output[-1].dims) == [8, 8]
    assert not ens.output[-1].label_filename
    first, last = ens.ensemble_scheduling.step
    assert dict(first.output_map) == {"TRAINING_PROBS": "inception_probs", "MALIGNANCY_MAP": "MALIGNANCY_MAP"}
    # No later step reads the map, so Triton's output-subset failure cannot come from it.
    assert "MALIGNANCY_MAP" not in dict(last.input_map).values()
    assert [i.name for i in tax.input] == ["TRAINING_PROBS"]
    card = load_model_card(tmp_path)
    assert card.serves_malignancy_map and card.malignancy_map_grid == (8, 8)
    as_json = json_format.MessageToDict(ens, preserving_proto_field_name=True)
    assert card_from_model_config(as_json) == card


def test_no_map_in_the_card_no_map_in_the_configs(tmp_path: Path) -> None:
    _write(tmp_path, "cpu")
    configs = read_configs(tmp_path)
    assert "MALIGNANCY_MAP" not in [o.name for c in configs.values() for o in c.output]
    assert not load_model_card(tmp_path).serves_malignancy_map


def test_a_reference_distribution_is_embedded_in_an_existing_repository(tmp_path: Path) -> None:
    import numpy as np

    from skinbatch.converter.pipeline import add_reference_distribution
    from skinbatch.drift import ReferenceDistribution

    _write(tmp_path / "repo", "cpu")
    before = load_model_card(tmp_path / "repo")
    scores = np.random.default_rng(0).beta(0.5, 4, 300)
    reference = ReferenceDistribution.from_scores(scores, before.model_summary(), {"labels": "val.csv"})
    path = tmp_path / "reference_distribution.json"
    path.write_text(reference.to_json())
    add_reference_distribution(tmp_path / "repo", path)
    after = load_model_card(tmp_path / "repo")
    assert after.reference() == reference
    assert after == card_from_model_config(json_format.MessageToDict(read_configs(tmp_path / "repo")["skin_classifier"],
                                                                     preserving_proto_field_name=True))
    assert {**after.to_dict(), "reference_distribution": None} == before.to_dict()
    assert not [p.name for p in (tmp_path / "repo" / "skin_classifier").iterdir() if p.name.startswith(".")]
    # Another model's reference is refused, and the card stays as it was.
    other = ReferenceDistribution.from_scores(scores, {**before.model_summary(), "weights_sha256": "f" * 64})
    path.write_text(other.to_json())
    with pytest.raises(ConverterError, match="skinbatch evaluate"):
        add_reference_distribution(tmp_path / "repo", path)
    assert load_model_card(tmp_path / "repo").reference() == reference


def test_cpu_threads_sleep_between_batches_unless_asked_to_spin() -> None:
    # Spinning onnxruntime threads took about 2 ms of CPU an image from the decoders sharing the host.
    for spin, expected in ((False, "0"), (True, "1")):
        opts = RepositoryOptions(target="cpu", cpu_spin=spin)
        for config in (inception_config(opts, K), taxonomy_config(opts, TAXONOMY)):
            assert config.parameters["allow_spinning"].string_value == expected
    assert 'add_session_config_entry("session.intra_op.allow_spinning"' in model_template()
