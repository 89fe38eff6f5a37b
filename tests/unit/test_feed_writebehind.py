"""The live feed's write-behind: frames gathered while a write is in flight, in order, errors out."""

from __future__ import annotations

import asyncio

import pytest

from services.feed.live import YIELD_AT, WriteBehind
from shared.errors import BusError


class FakePipe:
    def __init__(self, redis: FakeRedis) -> None:
        self.redis, self.commands = redis, []

    def xadd(self, key, fields, id, **kw):  # noqa: A002 - redis-py's name
        self.commands.append(("xadd", id))

    async def execute(self):
        self.redis.in_flight = self.commands
        await self.redis.gate.wait()
        if self.redis.fail:
            raise ConnectionError("Connection closed by server.")
        self.redis.written.append([c[1] for c in self.commands])
        self.redis.in_flight = None
        return [b"ok"] * len(self.commands)


class FakeRedis:
    """Pipelines whose execute waits on ``gate`` (open by default) and records what it wrote."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()
        self.gate.set()
        self.written: list[list[str]] = []
        self.in_flight = None
        self.fail = False

    def pipeline(self, transaction: bool = True) -> FakePipe:
        assert transaction is False
        return FakePipe(self)


def frame(wb: WriteBehind, *ids: str) -> None:
    for i in ids:
        wb.pipe.xadd("ticks", {}, id=i)
    wb.added(len(ids), len(ids))


async def until(predicate, timeout: float = 2.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0)


def test_an_idle_writer_sends_a_frame_alone_at_once():
    async def go():
        r = FakeRedis()
        wb = WriteBehind(r)
        task = asyncio.create_task(wb.run())
        await until(lambda: wb.should_yield())  # the writer waits for work
        frame(wb, "1-0", "1-1")
        assert wb.should_yield()  # the feed yields so the write starts now
        await until(lambda: r.written)
        assert r.written == [["1-0", "1-1"]] and wb.written == 2 and wb.writes == 1
        task.cancel()

    asyncio.run(go())


def test_frames_arriving_during_a_write_go_together_in_the_next_one_in_order():
    async def go():
        r = FakeRedis()
        wb = WriteBehind(r)
        task = asyncio.create_task(wb.run())
        r.gate.clear()  # the first write stays in flight
        await until(lambda: wb.should_yield())
        frame(wb, "1-0")
        await until(lambda: r.in_flight is not None)
        for k in range(1, 6):
            frame(wb, f"2-{k}")
            assert not wb.should_yield()  # a write is in flight and little has gathered: go on reading
        r.gate.set()
        await wb.flush(2.0)
        assert r.written == [["1-0"], ["2-1", "2-2", "2-3", "2-4", "2-5"]]
        assert wb.written == 6 and wb.writes == 2
        task.cancel()

    asyncio.run(go())


def test_a_large_gathering_behind_a_slow_write_makes_the_feed_yield_and_then_wait():
    async def go():
        r = FakeRedis()
        wb = WriteBehind(r, max_queued=3 * YIELD_AT)
        task = asyncio.create_task(wb.run())
        r.gate.clear()
        await until(lambda: wb.should_yield())
        frame(wb, "0-1")
        await until(lambda: r.in_flight is not None)
        frame(wb, *[f"1-{k}" for k in range(YIELD_AT)])
        assert wb.should_yield()
        frame(wb, *[f"2-{k}" for k in range(2 * YIELD_AT)])
        waiting = asyncio.create_task(wb.room())  # full: the receive loop waits for the writer
        await asyncio.sleep(0)
        assert not waiting.done()
        r.gate.set()
        await asyncio.wait_for(waiting, 2.0)
        await wb.flush(2.0)
        assert [len(w) for w in r.written] == [1, 3 * YIELD_AT]
        task.cancel()

    asyncio.run(go())


def test_a_failed_write_ends_the_writer_and_the_next_frame_raises():
    async def go():
        r = FakeRedis()
        r.fail = True
        wb = WriteBehind(r)
        task = asyncio.create_task(wb.run())
        await until(lambda: wb.should_yield())
        frame(wb, "1-0")
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(task, 2.0)
        with pytest.raises(BusError, match="feed write failed: Connection closed"):
            wb.pipe.xadd("ticks", {}, id="1-1")
        with pytest.raises(BusError):
            await wb.room()
        assert wb.written == 0

    asyncio.run(go())


def test_flush_waits_for_what_was_gathered_and_times_out_if_the_write_hangs():
    async def go():
        r = FakeRedis()
        wb = WriteBehind(r)
        task = asyncio.create_task(wb.run())
        await wb.flush(1.0)  # nothing gathered: returns at once
        r.gate.clear()
        frame(wb, "1-0")
        with pytest.raises(TimeoutError):
            await wb.flush(0.05)
        r.gate.set()
        await wb.flush(2.0)
        assert r.written == [["1-0"]]
        task.cancel()

    asyncio.run(go())
