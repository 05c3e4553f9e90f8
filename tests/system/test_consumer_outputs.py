"""What the consumer writes besides scores, against real Kafka and the real Triton: malignancy maps on
request, and FHIR R4 bundles that HAPI FHIR's validator accepts and that keep their ids on redelivery."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from skinbatch.imaging import decode, preprocess
from skinbatch.samples import pydicom_colour_files, synthetic_jpeg
from skinbatch.scoring import TritonScorer
from tests.fixtures.stack import ConsumerProcess, TopicReader, produce, unique_topics

pytestmark = [pytest.mark.system, pytest.mark.timeout(600)]


def _read_fhir(bootstrap: str, topic: str, count: int) -> list[dict[str, Any]]:
    from kafka import KafkaConsumer, TopicPartition

    reader = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, group_id=None,
                           auto_offset_reset="earliest")
    try:
        parts = [TopicPartition(topic, p) for p in reader.partitions_for_topic(topic) or {0}]
        reader.assign(parts)
        reader.seek_to_beginning(*parts)
        bundles: list[dict[str, Any]] = []
        while len(bundles) < count:
            polled = reader.poll(timeout_ms=5000)
            assert polled, f"only {len(bundles)} of {count} FHIR bundles arrived"
            for records in polled.values():
                for r in records:
                    assert dict(r.headers)["content-type"].startswith(b"application/fhir+json")
                    bundles.append({"key": r.key.decode(), "bundle": json.loads(r.value)})
        return bundles
    finally:
        reader.close()


def _ids(bundle: dict[str, Any]) -> list[str]:
    return sorted(e["request"]["url"] for e in bundle["entry"])


def test_maps_on_request_and_fhir_bundles(kafka_broker: Any, served_triton: Any, tmp_path: Path,
                                          fhir_validator: Callable[[Sequence[dict[str, Any]]], list[Any]]) -> None:
    topics = unique_topics("out")
    fhir = topics["request"] + "-fhir"
    kafka_broker.create_topics({topics["request"]: 2, topics["result"]: 1, topics["dead"]: 1, fhir: 1})
    dicom = next(p for p in pydicom_colour_files() if p.name == "SC_rgb_rle_2frame.dcm")
    inputs = {"photo-map": synthetic_jpeg(640, 480, seed=1), "photo": synthetic_jpeg(640, 480, seed=2),
              "dicom-map": dicom.read_bytes()}
    produce(kafka_broker.bootstrap_servers, topics["request"],
            [(rid, data, [("malignancy-map", b"1")] if rid.endswith("-map") else []) for rid, data in inputs.items()])

    def consume(group: str) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
        consumer = ConsumerProcess(kafka_broker.bootstrap_servers, served_triton.grpc_url, topics, group,
                                   tmp_path / f"{group}.log", ["--fhir-topic", fhir]).start()
        reader = TopicReader(kafka_broker.bootstrap_servers, topics["result"])
        expected = len(inputs) + 1  # the DICOM file has two frames
        try:
            msgs = reader.read(lambda m: len(m[topics["result"]]) >= expected * (2 if group == "g-again" else 1),
                               timeout=300)
        finally:
            reader.close()
            assert consumer.stop() == 0, consumer.log()
        results = {m["request_id"]: m for m in msgs[topics["result"]]}
        return results, _read_fhir(kafka_broker.bootstrap_servers, fhir, len(inputs) * (2 if group == "g-again" else 1))

    results, bundles = consume("g-first")
    assert set(results) == {"photo-map", "photo", "dicom-map:1", "dicom-map:2"}

    # Maps: only where asked, and equal to what Triton serves for the same input.
    assert "malignancy_map" not in results["photo"]
    scorer = TritonScorer(served_triton.grpc_url)
    spec = scorer.load_card().preprocessing_spec()
    for rid, data, frame in (("photo-map", inputs["photo-map"], 0), ("dicom-map:2", inputs["dicom-map"], 1)):
        got = results[rid]["malignancy_map"]
        assert got["shape"] == [8, 8]
        image = preprocess(decode(data, target=spec).arrays[frame], spec)
        direct = scorer.infer(image[None], with_map=True)[0].malignancy_map
        assert direct is not None
        np.testing.assert_allclose(np.array(got["values"]), direct, rtol=1e-3, atol=1e-6)
    scorer.close()

    # FHIR: one bundle per request, keyed by it, every resource valid, scores equal to the results.
    by_key = {b["key"]: b["bundle"] for b in bundles}
    assert set(by_key) == {"photo-map", "photo", "dicom-map"}
    problems = [v for v in fhir_validator([b for b in by_key.values()]) if v.errors]
    assert not problems, problems
    dicom_bundle = by_key["dicom-map"]
    observations = [e["resource"] for e in dicom_bundle["entry"] if e["resource"]["resourceType"] == "Observation"]
    assert len(observations) == 2
    values = sorted(o["valueQuantity"]["value"] for o in observations)
    assert values == pytest.approx(sorted([results["dicom-map:1"]["malignancy"], results["dicom-map:2"]["malignancy"]]),
                                   abs=1e-6)
    text = json.dumps(dicom_bundle)
    result = results["dicom-map:1"]
    assert result["input"]["sha256"] in text and result["model"]["weights_sha256"] in text

    # Redelivery (the same messages consumed again): the same resource ids, so a FHIR server updates.
    _, again = consume("g-again")
    latest = {}
    for b in again:
        latest[b["key"]] = b["bundle"]
    for key, bundle in by_key.items():
        assert _ids(latest[key]) == _ids(bundle), key
