"""Live market data: the DhanHQ feed WebSocket onto the ``ticks`` stream.

Tick ids come from the receive time (``<ms>-<seq>``, monotonic across restarts by resuming after
the stream's last id), so downstream ids stay deterministic for a recording of this session.
Clock heartbeats are written every ``runtime.clock_interval_ms`` of wall time. A disconnect that
retrying cannot fix (805-810) ends in a clear halt: trading is HALTED, the feed stays up (no
reconnect storm) and says why in its heartbeat and log.
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
from shared.messages import Clock, Tick
from shared.runtime import Context
from shared.store.db import connect
from shared.store.ledger import Ledger

log = logging.getLogger("feed.live")


class LiveFeed:
    def __init__(self, ctx: Context, ids: TickIdAllocator, client: FeedClient | None = None) -> None:
        self.ctx = ctx
        self.ids = ids
        env = ctx.config.env
        self.client = client or FeedClient(env.dhan_feed_url, env.dhan_client_id, env.access_token,
                                           on_packets=self.on_packets, mode="full")
        self.halted: str = ""
        self.published = 0
        # Event time of live ticks: the receive time (default), or the exchange's last-trade time
        # (SCALPER_EVENT_TIME=exchange: whole seconds, kept strictly increasing in arrival order),
        # which is what a simulator replaying a past session at N x needs.
        self.exchange_time = os.environ.get("SCALPER_EVENT_TIME", "receive") == "exchange"
        self._last_ts = 0
        self._next_clock = 0
        self._clock_ns = ctx.config.algo.runtime.clock_interval_ms * 1_000_000
        self._key = ctx.keys.stream("ticks")
        self._maxlen = ctx.config.algo.streams.maxlen.get("ticks", 3_000_000)

    async def on_packets(self, packets: list[Packet], recv_ns: int) -> None:
        pipe = self.ctx.redis.pipeline(transaction=False)
        now = self.ctx.clock.now_ns()
        n = 0
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
                    self._next_clock += self._clock_ns
            tid = self.ids.next_id(ts)
            t = Tick(msg_id=f"tick-{tid}", ts_init=now, tick_id=tid, **fields)
            pipe.xadd(self._key, wire.encode(t), id=tid, maxlen=self._maxlen, approximate=True)
            if t.ltp_paise > 0:  # the latest-tick hash only moves on a positive LTP
                pipe.hset(self.ctx.keys.latest_tick(t.segment, t.security_id), mapping={
                    "ltp_paise": t.ltp_paise, "ts_event": t.ts_event, "tick_id": tid,
                    "bid_paise": t.bid_paise, "ask_paise": t.ask_paise, "oi": t.oi, "volume": t.volume})
            n += 1
        if n:
            await pipe.execute()
            self.published += n

    async def clock_loop(self) -> None:
        if self.exchange_time:
            return  # clocks follow exchange time, written with the ticks
        interval = self.ctx.config.algo.runtime.clock_interval_ms / 1000
        while not self.ctx.stopping:
            await self.ctx.sleep(interval)
            now = self.ctx.clock.now_ns()
            tid = self.ids.next_id(now)
            c = Clock(msg_id=f"clk-{tid}", ts_event=now, ts_init=now, tick_id=tid)
            await self.ctx.redis.xadd(self._key, wire.encode(c), id=tid, maxlen=self._maxlen, approximate=True)

    async def run(self, initial: list[tuple[str, int]]) -> None:
        await self.client.subscribe(initial)
        clock = asyncio.create_task(self.clock_loop())
        try:
            await self.client.run()
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

    def info(self) -> dict[str, Any]:
        return {"published": self.published, "halted": self.halted,
                "connected": self.client.connected_count, "subscriptions": len(self.client.subscriptions)}


async def resume_allocator(ctx: Context) -> TickIdAllocator:
    """An id allocator that continues after the last id already in the ticks stream."""
    ids = TickIdAllocator()
    last = await ctx.redis.xrevrange(ctx.keys.stream("ticks"), count=1)
    if last:
        ms, seq = streamids.parse(last[0][0])
        ids.last_ms, ids.seq = ms, seq
    return ids
