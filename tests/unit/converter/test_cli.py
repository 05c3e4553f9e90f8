"""``skinbatch convert`` end to end through click: demo weights, JSON summary, clear failures."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.fixtures.needs import need_module

need_module("torch", "the converter's packages: pip install 'skinbatch[convert]'")
need_module("onnxruntime", "the converter's packages: pip install 'skinbatch[convert]'")
from click.testing import CliRunner  # noqa: E402

from skinbatch.cli import cli  # noqa: E402
from skinbatch.converter.cli import EXIT_NO_TENSORRT  # noqa: E402
from skinbatch.modelcard import load_model_card  # noqa: E402


def test_demo_weights_fp16_onnx_target(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    result = CliRunner().invoke(
        cli,
        ["convert", "--demo-weights", "--target", "onnx", "--precision", "fp16", "--check-images", "2",
         "--max-batch-size", "8", "--resize", "whole", "--repository", str(repo), "--json"],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["trained"] is False and summary["source"]["kind"] == "demo-weights"
    assert summary["parity_max_abs_prob"] <= 1e-5
    assert summary["drift_onnx_cpu"]["images"] == 2
    assert summary["drift_tensorrt_skipped"] == "needs a GPU with TensorRT"
    assert summary["onnx_fp16_bytes"] < 0.55 * summary["onnx_fp32_bytes"]
    card = load_model_card(repo)
    assert card.trained is False and card.name == "demo" and card.precision == "fp16"
    assert card.notes[0].startswith("UNTRAINED")
    assert card.preprocessing["resize"] == "whole"
    assert card.color_managed_input is True and card.preprocessing_spec().color_management is True
    assert any("FP16 drift" in n for n in card.notes)
    # Again without --force: refused, and nothing changed.
    again = CliRunner().invoke(cli, ["convert", "--demo-weights", "--target", "onnx", "--repository", str(repo)])
    assert again.exit_code == 1 and "--force" in again.output


def test_exactly_one_source(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["convert", "--repository", str(tmp_path)])
    assert result.exit_code == 2 and "exactly one" in result.output
    result = CliRunner().invoke(cli, ["convert", "--demo-weights", "--onnx", "x.onnx", "--repository", str(tmp_path)])
    assert result.exit_code == 2


def test_a_taxonomy_that_cannot_be_read_exits_with_its_own_code(tmp_path: Path) -> None:
    from skinbatch.contract import ExitCode
    from skinbatch.taxonomy import TaxonomyError

    bad = tmp_path / "taxonomy.json"
    bad.write_text("{not json", encoding="utf-8")
    result = CliRunner().invoke(cli, ["convert", "--demo-weights", "--target", "cpu", "--taxonomy", str(bad),
                                      "--repository", str(tmp_path / "r")])
    # Bad input (2, TaxonomyError's own code), not a failed conversion (1); a message, not a traceback.
    assert TaxonomyError.exit_code == ExitCode.USAGE
    assert result.exit_code == ExitCode.USAGE, result.output
    assert f"skinbatch convert: taxonomy file {bad} is not valid JSON" in result.stderr
    assert "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_tensorrt_target_without_tensorrt_fails_fast(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["convert", "--demo-weights", "--repository", str(tmp_path / "r")])
    assert result.exit_code == EXIT_NO_TENSORRT
    assert "NGC TensorRT container" in result.output
    assert not (tmp_path / "r").exists()


def test_checkpoint_class_mismatch_via_cli(demo_checkpoint: Path, tmp_path: Path) -> None:
    from skinbatch.taxonomy import default_taxonomy

    # The nine second-level nodes are a valid partition too: a 9-class taxonomy for a 45-class checkpoint.
    base = default_taxonomy()
    path = tmp_path / "nine.json"
    path.write_text(base.with_training_classes(base.fine_labels).to_json())
    result = CliRunner().invoke(cli, ["convert", "--checkpoint", str(demo_checkpoint), "--taxonomy", str(path),
                                      "--target", "cpu", "--repository", str(tmp_path / "r")])
    assert result.exit_code == 1
    assert "45 output classes" in result.output and "9 training classes" in result.output
    assert not (tmp_path / "r").exists()


def test_user_onnx_through_the_pipeline(tmp_path: Path) -> None:
    from skinbatch.converter import ConvertOptions, convert as run
    from tests.unit.converter.test_export import _export_tiny

    _export_tiny(tmp_path / "user.onnx", layout="nhwc")
    summary = run(ConvertOptions(repository=tmp_path / "repo", onnx=tmp_path / "user.onnx", target="cpu",
                                 precision="fp16", check_images=2, model_name="tiny"))
    assert summary.source["kind"] == "onnx" and summary.source["filename"] == "user.onnx"
    assert summary.trained is True and summary.parity_max_abs_prob <= 1e-5
    assert summary.drift_onnx_cpu is not None
    card = load_model_card(tmp_path / "repo")
    assert card.name == "tiny" and any("NHWC" in n for n in card.notes)
    # The tiny net ends in global pooling and one linear layer: it has a CAM, on its own 74x74 grid.
    assert card.serves_malignancy_map and card.malignancy_map_grid == (74, 74)
    assert summary.malignancy_map is not None and summary.malignancy_map["parity"] <= 1e-4
    assert summary.drift_onnx_cpu["max_rel_map"] is not None


def test_no_malignancy_map_and_a_reference_distribution(tmp_path: Path) -> None:
    import numpy as np

    from skinbatch.converter.checkpoint import file_sha256
    from skinbatch.drift import ReferenceDistribution
    from skinbatch.taxonomy import default_taxonomy
    from tests.unit.converter.test_export import _export_tiny

    _export_tiny(tmp_path / "user.onnx")
    model = {"weights_sha256": file_sha256(tmp_path / "user.onnx"), "taxonomy_sha256": default_taxonomy().sha256()}
    reference = ReferenceDistribution.from_scores(np.random.default_rng(0).beta(1, 3, 500), model)
    (tmp_path / "ref.json").write_text(reference.to_json())
    args = ["--onnx", str(tmp_path / "user.onnx"), "--target", "cpu", "--check-images", "1", "--json"]
    result = CliRunner().invoke(cli, ["convert", *args, "--no-malignancy-map", "--reference-distribution",
                                      str(tmp_path / "ref.json"), "--repository", str(tmp_path / "repo")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["malignancy_map"] is None
    card = load_model_card(tmp_path / "repo")
    assert not card.serves_malignancy_map and "MALIGNANCY_MAP" not in card.outputs
    assert any("--no-malignancy-map" in n for n in card.notes)
    assert card.reference() == reference

    # Another model's reference is refused before anything is written.
    other = ReferenceDistribution.from_scores([0.5], {**model, "weights_sha256": "0" * 64})
    (tmp_path / "other.json").write_text(other.to_json())
    result = CliRunner().invoke(cli, ["convert", *args, "--reference-distribution", str(tmp_path / "other.json"),
                                      "--repository", str(tmp_path / "repo2")])
    assert result.exit_code == 1 and "skinbatch evaluate" in result.output
    assert not (tmp_path / "repo2").exists()

    # --update-card converts nothing and takes no weights.
    result = CliRunner().invoke(cli, ["convert", "--update-card", "--repository", str(tmp_path / "repo")])
    assert result.exit_code == 2 and "--reference-distribution" in result.output
    result = CliRunner().invoke(cli, ["convert", "--update-card", "--demo-weights", "--reference-distribution",
                                      str(tmp_path / "ref.json"), "--repository", str(tmp_path / "repo")])
    assert result.exit_code == 2
    result = CliRunner().invoke(cli, ["convert", "--update-card", "--reference-distribution",
                                      str(tmp_path / "other.json"), "--repository", str(tmp_path / "repo")])
    assert result.exit_code == 1 and "weights" in result.output
