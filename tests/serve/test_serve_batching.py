"""lenet serve's micro-batcher alone, with a fake model that records its calls."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from lenet.serve.batching import MicroBatcher
from lenet.serve.limits import ApiError


class FakeModel:
    """Answers each image with its first pixel; notes the size of every call."""

    def __init__(self, fail: bool = False) -> None:
        self.calls: list[int] = []
        self.fail = fail

    def __call__(self, images: np.ndarray) -> list[int]:
        self.calls.append(len(images))
        if self.fail:
            raise ValueError("the model broke")
        return [int(x[0, 0]) for x in images]


def image(value: int) -> np.ndarray:
    return np.full((28, 28), value, np.uint8)


def batcher(model: FakeModel, **kw) -> MicroBatcher:
    return MicroBatcher(model, **{"max_wait": 0.05, **kw})


def test_a_request_alone_goes_straight_to_the_model():
    model = FakeModel()
    b = batcher(model, max_wait=5.0)  # a wait would show

    async def go():
        started = time.perf_counter()
        value = await b.submit(image(7))
        return value, time.perf_counter() - started

    value, seconds = asyncio.run(go())
    b.close()
    assert value == 7 and model.calls == [1] and seconds < 1.0


def test_requests_on_their_way_are_waited_for_and_classified_together():
    model = FakeModel()
    b = batcher(model, max_wait=5.0)

    async def one(k: int) -> int:
        b.expect()  # reading its body ...
        await asyncio.sleep(0.01 * k)
        return await b.submit(image(k), expected=True)

    async def all_five() -> list[int]:
        return await asyncio.wait_for(asyncio.gather(*(one(k) for k in range(5))), 10)

    assert asyncio.run(all_five()) == [0, 1, 2, 3, 4]
    b.close()
    assert model.calls == [5]


def test_the_wait_is_bounded_and_a_full_batch_goes_at_once():
    model = FakeModel()
    b = batcher(model, max_wait=0.05, max_batch=4)

    async def go():
        b.expect()  # a request that never arrives
        first = await b.submit(image(1))  # waits max_wait for it, then goes
        many = await asyncio.gather(*(b.submit(image(k)) for k in range(4)))
        return first, many

    first, many = asyncio.run(go())
    b.close()
    assert first == 1 and many == [0, 1, 2, 3]
    assert model.calls == [1, 4]


def test_a_model_error_reaches_the_requests_and_the_next_batch_runs():
    model = FakeModel(fail=True)
    b = batcher(model)

    async def go():
        with pytest.raises(ValueError, match="the model broke"):
            await b.submit(image(1))
        model.fail = False
        return await b.submit(image(2))

    assert asyncio.run(go()) == 2
    b.close()


def test_too_many_waiting_is_a_503_and_batch_requests_are_not_merged():
    model = FakeModel()
    b = batcher(model, max_queue=2, max_wait=0.05)

    async def go():
        b.expect()  # holds the gathered images until max_wait
        waiting = [asyncio.ensure_future(b.submit(image(k))) for k in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(ApiError) as refused:
            await b.submit(image(9))
        whole = await b.run(np.stack([image(5), image(6)]))
        return refused.value, await asyncio.gather(*waiting), list(whole)

    refused, waited, whole = asyncio.run(go())
    b.close()
    assert refused.status == 503 and refused.error == "busy"
    assert waited == [0, 1] and whole == [5, 6]
    assert sorted(model.calls) == [2, 2]  # the two singles together; the batch as it came


def test_batch_requests_of_64_or_more_run_on_batch_threads_then_come_back(monkeypatch):
    from lenet.serve.service import Options, Service

    counts: list[int] = []
    monkeypatch.setattr("lenet.base.device.set_threads", lambda n: counts.append(n) or n)
    service = Service.__new__(Service)  # only its options matter here
    service.options = Options(run="r", threads=1, batch_threads=3, own_process=True)
    sizes: list[int] = []
    wide = service._wide(lambda images: sizes.append(len(images)) or [0] * len(images))
    assert len(wide(np.zeros((64, 28, 28), np.uint8))) == 64
    assert len(wide(np.zeros((8, 28, 28), np.uint8))) == 8
    assert sizes == [64, 8] and counts == [3, 1]  # wide for 64, back to 1; 8 left alone
    service.options = Options(run="r", threads=1, batch_threads=3)  # not the server process
    assert service._wide(len) is len
