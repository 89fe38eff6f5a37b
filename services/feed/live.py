"""Live market data: the DhanHQ feed WebSocket onto the ``ticks`` stream.

Tick ids come from the receive time (``<ms>-<seq>``, monotonic across restarts by resuming after
the stream's last id), so downstream ids stay deterministic for a recording of this session.
Clock heartbeats are written every ``runtime.clock_interval_ms`` of wall time. A disconnect that
retrying cannot fix (805-810) ends in a clear halt: trading is HALTED, the feed stays up (no
reconnect storm) and says why in its heartbeat and log.

Writes are behind the receive loop (:class:`WriteBehind`): each frame's commands join the
pipeline being filled, and one writer task sends whatever has gathered since its previous write.
Idle, a frame goes out alone at once; under load one round trip carries many frames, so Redis
round trips (the feed's largest cost per tick, a socket write each) grow with frames, not ticks.
Order is kept (one writer, pipelines in turn); a write error ends the feed (supervisord restarts
it) and, past ``MAX_QUEUED`` commands not yet written, the receive loop waits for the writer.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from services.feed.core import TickIdAllocator
from shared import streamids, wire
from shared.dhan.codec import Packet
from shared.dhan.feed_client import FeedClient, FeedHalted, packet_to_fields
from shared.errors import BusError
from shared.messages import Clock, Tick
from shared.runtime import Context
from shared.store.db import connect
from shared.store.ledger import Ledger

log = logging.getLogger("feed.live")

MAX_QUEUED = 50_000
"""Redis commands gathered and not yet sent before the receive loop waits for the writer."""
YIELD_AT = 100
"""Commands gathered while a write is in flight before the receive loop yields on every frame
(so the writer can take the reply and send the next pipeline): bounds a pipeline under backlog."""


class WriteBehind:
    """Commands gathered into one pipeline while the previous one is being written."""

    def __init__(self, redis: Any, max_queued: int = MAX_QUEUED) -> None:
        self._redis = redis
        self._max = max_queued
        self._pipe = redis.pipeline(transaction=False)
        self._queued = 0  # commands in self._pipe
        self._ticks = 0  # of them, ticks (for the published count)
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        self._idle = asyncio.Event()  # nothing gathered and nothing in flight
        self._idle.set()
        self._waiting = False  # the writer is waiting for something to write
        self.written = 0  # ticks written
        self.writes = 0  # pipelines sent
        self.failure: BaseException | None = None

    @property
    def pipe(self) -> Any:
        """The pipeline to add commands to (synchronously, then call :meth:`added`)."""
        if self.failure is not None:
            raise BusError(f"feed write failed: {self.failure}") from self.failure
        return self._pipe

    def added(self, commands: int, ticks: int) -> None:
        self._queued += commands
        self._ticks += ticks
        self._idle.clear()
        self._wake.set()
        if self._queued >= self._max:
            self._room.clear()

    def should_yield(self) -> bool:
        """After :meth:`added`: should the receive loop yield before the next frame? Yes when the
        writer is waiting (it starts this write now: an idle feed writes a frame at once) or when
        ``YIELD_AT`` commands have gathered behind a write in flight."""
        return self._waiting or self._queued >= YIELD_AT

    async def room(self) -> None:
        """Wait while too much is gathered (the writer is behind)."""
        if not self._room.is_set():
            await self._room.wait()
        if self.failure is not None:
            raise BusError(f"feed write failed: {self.failure}") from self.failure

    async def run(self) -> None:
        """The writer: send what has gathered, in order, until cancelled or a write fails."""
        while True:
            self._waiting = True
            await self._wake.wait()
            self._waiting = False
            self._wake.clear()
            if not self._queued:
                self._idle.set()
                continue
            pipe, n = self._pipe, self._ticks
            self._pipe, self._queued, self._ticks = self._redis.pipeline(transaction=False), 0, 0
            self._room.set()
            try:
                await pipe.execute()
            except Exception as exc:
                self.failure = exc
                self._room.set()
                self._idle.set()
                raise
            self.written += n
            self.writes += 1
            if not self._queued:
                self._idle.set()

    async def flush(self, timeout_s: float) -> None:
        """Wait until everything gathered so far is written (on the way out)."""
        async with asyncio.timeout(timeout_s):
            await self._idle.wait()


class LiveFeed:
    def __init__(self, ctx: Context, ids: TickIdAllocator, client: FeedClient | None = None) -> None:
        self.ctx = ctx
        self.ids = ids
        env = ctx.config.env
        self.client = client or FeedClient(env.dhan_feed_url, env.dhan_client_id, env.access_token,
                                           on_packets=self.on_packets, mode="full")
        self.halted: str = ""
        # Event time of live ticks: the receive time (default), or the exchange's last-trade time
        # (SCALPER_EVENT_TIME=exchange: whole seconds, kept strictly increasing in arrival order),
        # which is what a simulator replaying a past session at N x needs.
        self.exchange_time = os.environ.get("SCALPER_EVENT_TIME", "receive") == "exchange"
        self._last_ts = 0
        self._next_clock = 0
        self._clock_ns = ctx.config.algo.runtime.clock_interval_ms * 1_000_000
        self._key = ctx.keys.stream("ticks")
        self._maxlen = ctx.config.algo.streams.maxlen.get("ticks", 3_000_000)
        self.writer = WriteBehind(ctx.redis)

    @property
    def published(self) -> int:
        return self.writer.written

    async def on_packets(self, packets: list[Packet], recv_ns: int) -> None:
        await self.writer.room()
        pipe = self.writer.pipe
        now = self.ctx.clock.now_ns()
        n = commands = 0
        for p in packets:
            fields = packet_to_fields(p, recv_ns)
            if fields is None:
                continue
            ts = recv_ns
            if self.exchange_time and fields.get("ltt_s"):
                ts = max(fields["ltt_s"] * 1_000_000_000, self._last_ts + 1)
                self._last_ts = ts
                fields["ts_event"] = ts
                if not self._next_clock:
                    self._next_clock = (ts // self._clock_ns + 1) * self._clock_ns
                while ts >= self._next_clock:
                    cid = self.ids.next_id(self._next_clock)
                    c = Clock(msg_id=f"clk-{cid}", ts_event=self._next_clock, ts_init=now, tick_id=cid)
                    pipe.xadd(self._key, wire.encode(c), id=cid, maxlen=self._maxlen, approximate=True)
                    commands += 1
                    self._next_clock += self._clock_ns
            tid = self.ids.next_id(ts)
            t = Tick(msg_id=f"tick-{tid}", ts_init=now, tick_id=tid, **fields)
            pipe.xadd(self._key, wire.encode(t), id=tid, maxlen=self._maxlen, approximate=True)
            if t.ltp_paise > 0:  # the latest-tick hash only moves on a positive LTP
                pipe.hset(self.ctx.keys.latest_tick(t.segment, t.security_id), mapping={
                    "ltp_paise": t.ltp_paise, "ts_event": t.ts_event, "tick_id": tid,
                    "bid_paise": t.bid_paise, "ask_paise": t.ask_paise, "oi": t.oi, "volume": t.volume})
                commands += 1
            commands += 1
            n += 1
        if commands:
            self.writer.added(commands, n)
            if self.writer.should_yield():
                # A receive loop with frames already buffered never suspends: let the writer run.
                await asyncio.sleep(0)

    async def clock_loop(self) -> None:
        if self.exchange_time:
            return  # clocks follow exchange time, written with the ticks
        interval = self.ctx.config.algo.runtime.clock_interval_ms / 1000
        while not self.ctx.stopping:
            await self.ctx.sleep(interval)
            now = self.ctx.clock.now_ns()
            tid = self.ids.next_id(now)
            c = Clock(msg_id=f"clk-{tid}", ts_event=now, ts_init=now, tick_id=tid)
            # Through the writer, so a clock never overtakes ticks with smaller ids still gathered.
            await self.writer.room()
            self.writer.pipe.xadd(self._key, wire.encode(c), id=tid, maxlen=self._maxlen, approximate=True)
            self.writer.added(1, 0)

    async def run(self, initial: list[tuple[str, int]]) -> None:
        await self.client.subscribe(initial)
        clock = asyncio.create_task(self.clock_loop())
        writer = asyncio.create_task(self.writer.run())
        receive = asyncio.create_task(self.client.run())
        try:
            await asyncio.wait({writer, receive}, return_when=asyncio.FIRST_COMPLETED)
            if writer.done():  # a write failed: end the feed with it (the receive loop too)
                receive.cancel()
                await asyncio.gather(receive, return_exceptions=True)
                writer.result()
            await receive
        except FeedHalted as exc:
            self.halted = str(exc)
            log.error("market feed halted", extra={"fields": {"reason": self.halted}})
            await self.ctx.redis.set(self.ctx.keys.trading_state(), "HALTED")
            env = self.ctx.config.env
            try:  # entries and the executor read the ledger's state
                led = Ledger(connect(env.database_url, env.db_schema, application_name="feed"))
                led.set_trading_state("HALTED", self.halted[:500])
                led.close()
            except Exception:  # noqa: BLE001 - the Redis key and the log still say it
                log.exception("could not record the HALTED state in the ledger")
        finally:
            clock.cancel()
            if not writer.done() and not receive.done():
                receive.cancel()
            if not writer.done():
                try:  # what was received is written before the feed goes (SIGTERM)
                    await asyncio.shield(self.writer.flush(2.0))
                except (TimeoutError, asyncio.CancelledError):
                    log.warning("ticks received but not written at stop")
                except BusError:
                    pass
                writer.cancel()

    def info(self) -> dict[str, Any]:
        return {"published": self.published, "writes": self.writer.writes, "halted": self.halted,
                "connected": self.client.connected_count, "subscriptions": len(self.client.subscriptions)}


async def resume_allocator(ctx: Context) -> TickIdAllocator:
    """An id allocator that continues after the last id already in the ticks stream."""
    ids = TickIdAllocator()
    last = await ctx.redis.xrevrange(ctx.keys.stream("ticks"), count=1)
    if last:
        ms, seq = streamids.parse(last[0][0])
        ids.last_ms, ids.seq = ms, seq
    return ids
