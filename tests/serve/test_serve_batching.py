"""The micro-batching queue on its own: grouping within the window, the batch-size cap, separate groups per decoding
setting, the queue bound, dropped cancelled requests, a failing batch failing only its own requests."""

from __future__ import annotations

import asyncio
import threading

import pytest

from grok.serve.batching import Batcher, QueueFullError
from grok.serve.engine import Generated, PreparedCase, Sampling

GREEDY = Sampling(max_new_tokens=4, temperature=0.0, top_p=1.0)
WARM = Sampling(max_new_tokens=4, temperature=0.7, top_p=0.9)


def _case(name: str) -> PreparedCase:
    return PreparedCase(item={"id": name}, prompt_tokens=1, text_tokens=1)


class Recorder:
    """A fake engine.generate recording each batch (ids, sampling, limits) and echoing ids back."""

    def __init__(self, fail_on: str | None = None, gate: threading.Event | None = None) -> None:
        self.batches: list[tuple[list[str], Sampling, list[int]]] = []
        self.fail_on = fail_on
        self.gate = gate

    def __call__(self, cases, sampling, limits, sinks) -> list[Generated]:
        if self.gate is not None:
            assert self.gate.wait(10)
        ids = [case.item["id"] for case in cases]
        self.batches.append((ids, sampling, list(limits)))
        if self.fail_on in ids:
            raise RuntimeError("boom")
        for sink, name in zip(sinks, ids, strict=True):
            if sink is not None:
                sink(f"delta of {name}")
        return [Generated(name, 1, 1, "stop") for name in ids]


def _run(coroutine):
    return asyncio.run(coroutine)


def test_requests_within_the_window_share_a_batch_up_to_its_cap() -> None:
    recorder = Recorder()

    async def scenario() -> list[str]:
        batcher = Batcher(recorder, max_batch_size=4, window_ms=200, max_queue=64)
        await batcher.start()
        futures = [batcher.submit(_case(f"r{i}"), Sampling(4 + i, 0.0, 1.0)) for i in range(10)]
        results = [result.text for result in await asyncio.gather(*futures)]
        await batcher.stop()
        return results

    assert _run(scenario()) == [f"r{i}" for i in range(10)]  # each request gets its own reply
    assert [ids for ids, _, _ in recorder.batches] == [["r0", "r1", "r2", "r3"], ["r4", "r5", "r6", "r7"], ["r8", "r9"]]
    assert recorder.batches[0][2] == [4, 5, 6, 7]  # each row keeps its own length limit


def test_a_lone_request_waits_only_the_window_and_settings_split_batches() -> None:
    recorder = Recorder()

    async def scenario() -> float:
        batcher = Batcher(recorder, max_batch_size=8, window_ms=30, max_queue=8)
        await batcher.start()
        loop = asyncio.get_running_loop()
        started = loop.time()
        await batcher.submit(_case("alone"), GREEDY)
        waited = loop.time() - started
        await asyncio.gather(
            batcher.submit(_case("g1"), GREEDY), batcher.submit(_case("w1"), WARM), batcher.submit(_case("g2"), GREEDY)
        )
        await batcher.stop()
        return waited

    assert _run(scenario()) < 2.0
    assert [(ids, sampling) for ids, sampling, _ in recorder.batches] == [
        (["alone"], GREEDY),
        (["g1", "g2"], GREEDY),
        (["w1"], WARM),
    ]


def test_the_queue_bound_cancelled_requests_and_a_failing_batch() -> None:
    gate = threading.Event()
    recorder = Recorder(fail_on="bad", gate=gate)

    async def scenario() -> None:
        batcher = Batcher(recorder, max_batch_size=1, window_ms=0, max_queue=2)
        await batcher.start()
        running = batcher.submit(_case("first"), GREEDY)
        await asyncio.sleep(0.05)  # "first" is in the generation thread, waiting at the gate
        gone = batcher.submit(_case("gone"), GREEDY)
        bad = batcher.submit(_case("bad"), GREEDY)
        with pytest.raises(QueueFullError, match="2 requests are already waiting"):
            batcher.submit(_case("third"), GREEDY)
        gone.cancel()  # its client went away before its batch
        gate.set()
        assert (await running).text == "first"
        with pytest.raises(RuntimeError, match="boom"):
            await bad
        assert (await batcher.submit(_case("after"), GREEDY)).text == "after"  # the worker survived
        await batcher.stop()

    _run(scenario())
    assert [ids for ids, _, _ in recorder.batches] == [["first"], ["bad"], ["after"]]


def test_deltas_reach_the_sink_of_their_request() -> None:
    recorder = Recorder()

    async def scenario() -> dict[str, list[str]]:
        batcher = Batcher(recorder, max_batch_size=4, window_ms=50, max_queue=4)
        await batcher.start()
        seen: dict[str, list[str]] = {"a": [], "b": []}
        await asyncio.gather(
            batcher.submit(_case("a"), GREEDY, seen["a"].append), batcher.submit(_case("b"), GREEDY, seen["b"].append)
        )
        await batcher.stop()
        return seen

    assert _run(scenario()) == {"a": ["delta of a"], "b": ["delta of b"]}
