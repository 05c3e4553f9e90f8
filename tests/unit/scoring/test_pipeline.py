"""The scoring pipeline's logic, with a decode pool that runs inline and a Triton that answers when told.

The real decode pool, Triton and shared memory with a real server are exercised by the consumer's and
triage's system tests; here: batching, shared-memory runs, faults, model changes and stopping.
"""

from __future__ import annotations

from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from skinbatch.contract import ServedModelChanged, TritonUnavailable
from skinbatch.imaging import Preprocessing
from skinbatch.imaging.model_input import ModelInput
from skinbatch.modelcard import ModelCard
from skinbatch.samples import synthetic_jpeg
from skinbatch.scoring import Scores, ShmInput, decoding
from skinbatch.scoring.pipeline import Mailbox, PipelineOptions, ScoredInput, ScoringPipeline
from skinbatch.scoring.slots import attach
from skinbatch.taxonomy import default_taxonomy

SIZE = 32


@pytest.fixture(scope="module")
def card() -> ModelCard:
    t = default_taxonomy()
    return ModelCard(name="demo", version="1", trained=False, source={}, target="cpu", precision="fp32",
                     preprocessing=Preprocessing(size=SIZE).to_dict(), max_batch_size=4,
                     taxonomy={"sha256": t.sha256(), "name": t.name, "training_classes": t.training_classes,
                               "coarse_labels": t.coarse_labels, "fine_labels": t.fine_labels})


class InlinePool(Executor):
    """Decodes at submit, in this process (what a worker would do, attached to the same segment)."""

    def __init__(self, workers: int, initargs: tuple[Any, ...]) -> None:
        decoding._slots = attach(*initargs) if initargs else None

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 - handed over like a worker's exception
            future.set_exception(exc)
        return future


class Transport:
    def __init__(self) -> None:
        self.registered: list[str] = []

    def register_shm(self, region: str, key: str, byte_size: int, timeout_s: float) -> None:
        self.registered.append(region)

    def unregister_shm(self, region: str, timeout_s: float) -> None:
        self.registered.remove(region)


class Scorer:
    """Records each request; the test answers them (or fails them) with :meth:`answer`."""

    def __init__(self, card: ModelCard) -> None:
        self.card = card
        self.url = "grpc://fake:8001"
        self.transport = Transport()
        self.requests: list[tuple[Any, Any]] = []
        self.ready = True

    def infer_async(self, images: Any, callback: Any, *, with_map: bool = False) -> None:
        self.requests.append((images, callback))

    def is_ready(self) -> bool:
        return self.ready

    def answer(self, index: int = 0, error: BaseException | None = None) -> Any:
        images, callback = self.requests.pop(index)
        n = images.shape[0]
        k = len(self.card.training_classes)
        scores = [Scores(malignancy=0.1 * (i + 1), coarse={}, fine={}, top_classes=[],
                         training_probs=np.full(k, 1 / k, np.float32)) for i in range(n)]
        callback(None if error else scores, error)
        return images


class Listener:
    def __init__(self) -> None:
        self.scored_list: list[tuple[Any, ScoredInput]] = []
        self.rejected_list: list[tuple[Any, ModelInput]] = []
        self.events: list[str] = []
        self.gone: set[Any] = set()

    def current(self, ticket: Any) -> bool:
        return ticket not in self.gone

    def frames(self, ticket: Any, decoded: ModelInput) -> range:
        return range(len(decoded.frame_numbers))

    def scored(self, ticket: Any, result: ScoredInput) -> None:
        self.scored_list.append((ticket, result))

    def rejected(self, ticket: Any, decoded: ModelInput) -> None:
        self.rejected_list.append((ticket, decoded))

    def unreadable(self, ticket: Any, error: BaseException) -> None:
        self.events.append("unreadable")

    def decode_bug(self, ticket: Any, error: BaseException) -> None:
        self.events.append("bug")

    def triton_down(self, error: BaseException) -> None:
        self.events.append("down")

    def triton_up(self, down_s: float) -> None:
        self.events.append("up")

    def model_changed(self, error: ServedModelChanged) -> None:
        self.events.append("changed")


def _pipeline(card: ModelCard, shared_memory: str = "on", **options: Any) -> tuple[ScoringPipeline, Scorer, Listener,
                                                                                     Mailbox]:
    scorer, listener, mailbox = Scorer(card), Listener(), Mailbox()
    pipeline = ScoringPipeline(scorer, mailbox, listener,  # type: ignore[arg-type]
                               PipelineOptions(shared_memory=shared_memory, max_frames=8, **options),
                               pool_factory=InlinePool)
    pipeline.start()
    return pipeline, scorer, listener, mailbox


def _turn(pipeline: ScoringPipeline, mailbox: Mailbox) -> None:
    mailbox.run()
    pipeline.pump()


def test_frames_ready_together_go_in_one_request_of_consecutive_slots(card: ModelCard) -> None:
    pipeline, scorer, listener, mailbox = _pipeline(card, max_requests=1)
    try:
        for i in range(6):
            pipeline.submit(f"img-{i}", payload=synthetic_jpeg(80, 60, seed=i))
        _turn(pipeline, mailbox)
        assert pipeline.shared_memory and scorer.transport.registered
        (images, _), = scorer.requests  # one request at a time (max_requests=1)
        assert isinstance(images, ShmInput) and images.shape == (4, SIZE, SIZE, 3)  # max batch 4
        assert images.offset == 0
        scorer.answer()
        _turn(pipeline, mailbox)
        assert [t for t, _ in listener.scored_list] == ["img-0", "img-1", "img-2", "img-3"]
        (rest, _), = scorer.requests
        assert rest.shape[0] == 2 and rest.offset == 4 * SIZE * SIZE * 3
        scorer.answer()
        _turn(pipeline, mailbox)
        assert len(listener.scored_list) == 6 and not pipeline.busy
        result = listener.scored_list[0][1]
        assert result.decoded.images is None and result.frames[0].number == 1
    finally:
        pipeline.close()


def test_with_a_request_out_only_full_batches_go_and_the_rest_waits_for_its_answer(card: ModelCard) -> None:
    # Nagle's rule: Triton charges per execution, so frames ready while a request is out wait for it.
    pipeline, scorer, listener, mailbox = _pipeline(card, max_requests=4)
    try:
        pipeline.submit("first", payload=synthetic_jpeg(40, 40, seed=0))
        _turn(pipeline, mailbox)
        assert len(scorer.requests) == 1  # nothing was out: it goes alone, at once
        for i in range(3):
            pipeline.submit(f"second-{i}", payload=synthetic_jpeg(40, 40, seed=i + 1))
            _turn(pipeline, mailbox)
        assert len(scorer.requests) == 1, "three frames, less than a batch of 4, wait while a request is out"
        pipeline.submit("second-3", payload=synthetic_jpeg(40, 40, seed=9))
        _turn(pipeline, mailbox)
        assert [r[0].shape[0] for r in scorer.requests] == [1, 4]  # a full batch goes beside it
        pipeline.submit("third", payload=synthetic_jpeg(40, 40, seed=10))
        _turn(pipeline, mailbox)
        assert len(scorer.requests) == 2
        scorer.answer(0)
        _turn(pipeline, mailbox)
        assert len(scorer.requests) == 1  # an answer does not release a partial batch while another is out
        scorer.answer(0)
        _turn(pipeline, mailbox)
        assert [r[0].shape[0] for r in scorer.requests] == [1]  # nothing out: what is ready goes
        scorer.answer(0)
        _turn(pipeline, mailbox)
        assert len(listener.scored_list) == 6 and not pipeline.busy
    finally:
        pipeline.close()


def test_the_slot_holds_the_model_input(card: ModelCard) -> None:
    from skinbatch.imaging import decode, preprocess

    pipeline, scorer, _listener_, mailbox = _pipeline(card)
    try:
        data = synthetic_jpeg(90, 70, seed=3)
        pipeline.submit("one", payload=data)
        _turn(pipeline, mailbox)
        (images, _), = scorer.requests
        spec = Preprocessing(size=SIZE)
        expected = preprocess(decode(data, target=spec).arrays[0], spec)
        assert pipeline._slots is not None
        np.testing.assert_array_equal(pipeline._slots.array[images.offset // expected.size], expected)
    finally:
        pipeline.close()


def test_without_shared_memory_frames_are_stacked_into_the_request(card: ModelCard) -> None:
    pipeline, scorer, listener, mailbox = _pipeline(card, shared_memory="off")
    try:
        for i in range(3):
            pipeline.submit(i, payload=synthetic_jpeg(40, 40, seed=i))
        _turn(pipeline, mailbox)
        (images, _), = scorer.requests
        assert isinstance(images, np.ndarray) and images.shape == (3, SIZE, SIZE, 3)
        assert pipeline.frames_at_triton == 3 and pipeline.frames_held == 0  # the request holds the pixels now
        scorer.answer()
        _turn(pipeline, mailbox)
        assert len(listener.scored_list) == 3 and pipeline.frames_held == 0
    finally:
        pipeline.close()


def test_triton_failing_keeps_the_frames_and_sends_them_again(card: ModelCard) -> None:
    pipeline, scorer, listener, mailbox = _pipeline(card, retry_initial_s=0.0)
    try:
        pipeline.submit("a", payload=synthetic_jpeg(40, 40, seed=1))
        _turn(pipeline, mailbox)
        scorer.ready = False
        scorer.answer(error=TritonUnavailable("connection refused"))
        _turn(pipeline, mailbox)
        assert listener.events == ["down"] and pipeline.saturated and not scorer.requests
        scorer.ready = True
        _turn(pipeline, mailbox)
        assert listener.events == ["down", "up"] and len(scorer.requests) == 1
        scorer.answer()
        _turn(pipeline, mailbox)
        assert [t for t, _ in listener.scored_list] == ["a"] and not listener.rejected_list
    finally:
        pipeline.close()


def test_a_model_change_names_nothing(card: ModelCard) -> None:
    pipeline, scorer, listener, mailbox = _pipeline(card)
    try:
        pipeline.submit("a", payload=synthetic_jpeg(40, 40, seed=1))
        _turn(pipeline, mailbox)
        scorer.answer(error=ServedModelChanged("skin_classifier", "2", "1"))
        _turn(pipeline, mailbox)
        pipeline.submit("b", payload=synthetic_jpeg(40, 40, seed=2))
        _turn(pipeline, mailbox)
        assert listener.events == ["changed"] and not listener.scored_list and not scorer.requests
    finally:
        pipeline.close()


def test_revoked_work_is_dropped_and_frames_apart_are_staged_together(card: ModelCard) -> None:
    pipeline, scorer, listener, mailbox = _pipeline(card, max_requests=1)
    try:
        pipeline.submit("keep", payload=synthetic_jpeg(40, 40, seed=1))
        _turn(pipeline, mailbox)  # sent alone
        for name in ("a", "gone", "b"):
            pipeline.submit(name, payload=synthetic_jpeg(40, 40, seed=len(name)))
        mailbox.run()
        listener.gone.add("gone")
        scorer.answer()
        _turn(pipeline, mailbox)
        (images, _), = scorer.requests
        # "a" and "b" no longer lie side by side: copied into a staging block after the decode slots.
        assert images.shape[0] == 2 and images.offset >= 8 * SIZE * SIZE * 3
        assert pipeline.frames_held == 0, "their decode slots are free again once copied"
        scorer.answer()
        _turn(pipeline, mailbox)
        assert [t for t, _ in listener.scored_list] == ["keep", "a", "b"]
        assert pipeline.frames_held == 0 and not pipeline.busy
    finally:
        pipeline.close()


def test_bad_input_is_the_listeners_to_report(card: ModelCard, tmp_path: Path) -> None:
    pipeline, scorer, listener, mailbox = _pipeline(card)
    try:
        pipeline.submit("junk", payload=b"not an image at all")
        pipeline.submit("missing", path=str(tmp_path / "nope.jpg"))
        _turn(pipeline, mailbox)
        assert [(t, d.error_type) for t, d in listener.rejected_list] == [
            ("junk", "unsupported_format"), ("missing", "reference_not_found")]
        assert not scorer.requests and pipeline.frames_held == 0
    finally:
        pipeline.close()


def test_finishing_keeps_what_was_sent_and_drops_the_rest(card: ModelCard) -> None:
    pipeline, scorer, listener, mailbox = _pipeline(card, max_requests=1)
    try:
        for i in range(3):
            pipeline.submit(i, payload=synthetic_jpeg(40, 40, seed=i))
        mailbox.run()
        pipeline.pump()  # batch of 3 at Triton
        pipeline.submit(9, payload=synthetic_jpeg(40, 40, seed=9))
        mailbox.run()
        pipeline.finish_started()
        pipeline.pump()
        assert not pipeline.finished
        scorer.answer()
        _turn(pipeline, mailbox)
        assert pipeline.finished and [t for t, _ in listener.scored_list] == [0, 1, 2]
        assert not scorer.requests and pipeline.frames_held == 0
    finally:
        pipeline.close()


class DyingPool(Executor):
    """Runs what it was given when told to; like a real pool, a worker that dies fails every task in it.
    A payload of b"poison" kills its worker."""

    pools: list[DyingPool] = []

    def __init__(self, workers: int, initargs: tuple[Any, ...]) -> None:
        decoding._slots = attach(*initargs) if initargs else None
        self.pending: list[tuple[Future[Any], Any, tuple[Any, ...]]] = []
        DyingPool.pools.append(self)

    def submit(self, fn: Any, /, *args: Any, **kwargs: Any) -> Future[Any]:
        future: Future[Any] = Future()
        self.pending.append((future, fn, args))
        return future

    def run(self) -> None:
        from concurrent.futures.process import BrokenProcessPool

        pending, self.pending = self.pending, []
        if any(args[0] == b"poison" for _, _, args in pending):
            for future, _, _ in pending:
                future.set_exception(BrokenProcessPool("a worker died"))
            return
        for future, fn, args in pending:
            future.set_result(fn(*args))


def test_an_input_that_kills_its_worker_is_found_and_given_up_alone(card: ModelCard) -> None:
    scorer, listener, mailbox = Scorer(card), Listener(), Mailbox()
    DyingPool.pools.clear()
    pipeline = ScoringPipeline(scorer, mailbox, listener, PipelineOptions(shared_memory="on", max_frames=8),  # type: ignore[arg-type]
                               pool_factory=DyingPool)
    pipeline.start()
    try:
        for name, payload in (("a", synthetic_jpeg(40, 40, seed=1)), ("poison", b"poison"),
                              ("b", synthetic_jpeg(40, 40, seed=2))):
            pipeline.submit(name, payload=payload)
        DyingPool.pools[-1].run()  # the poison kills the worker: all three fail
        for _ in range(12):  # suspects, one at a time, each in the current pool
            _turn(pipeline, mailbox)
            DyingPool.pools[-1].run()
            mailbox.run()
            while scorer.requests:
                scorer.answer()
                mailbox.run()
        assert listener.events == ["bug"], "only the poison is given up"
        assert sorted(t for t, _ in listener.scored_list) == ["a", "b"]
        assert pipeline.frames_held == 0 and not pipeline.busy
    finally:
        pipeline.close()
