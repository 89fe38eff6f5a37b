"""Feed shell: publishes ticks onto the ``ticks`` stream and keeps the latest-tick hashes.

Replay mode (``SCALPER_REPLAY=1``) reads a recorded session file and writes it with explicit,
deterministic stream ids; after a restart it resumes after the last id already in the stream, so
a crash never duplicates or skips a tick. Live mode connects the DhanHQ market feed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import orjson
from redis.exceptions import RedisError, ResponseError

from services.feed.core import session_messages
from services.feed.live import LiveFeed, resume_allocator
from services.feed.replay import load_session
from shared import streamids, wire
from shared.bus import Batch, Commit
from shared.errors import BusError, ConfigError
from shared.messages import FeedSubscribe, FeedUnsubscribe, Tick
from shared.runtime import Context, Service, Stopping

log = logging.getLogger("feed")

WRITE_BATCH = 1000


class FeedService(Service):
    name = "feed"
    inputs = ("feed.control",)

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.subscriptions: dict[tuple[str, int], set[str]] = {}
        self.replay_file = os.environ.get("SCALPER_REPLAY_FILE", "")
        speed = os.environ.get("SCALPER_REPLAY_SPEED", "max")
        self.speed = 0.0 if speed == "max" else float(speed)
        self.from_hhmm = os.environ.get("SCALPER_REPLAY_FROM") or None
        self.to_hhmm = os.environ.get("SCALPER_REPLAY_TO") or None
        self._task: asyncio.Task[None] | None = None
        self.done = False
        self.published = 0
        self.live: LiveFeed | None = None

    async def start(self) -> None:
        # A session file is the tick source whenever one is given (a replay, or a test feeding a
        # live-mode pipeline); SCALPER_REPLAY itself only switches the other stages' gating on.
        if self.replay_file:
            self._task = asyncio.create_task(self._replay())
        elif self.ctx.replay:
            raise ConfigError("env SCALPER_REPLAY_FILE: required in replay mode")
        else:
            env = self.ctx.config.env
            if not env.dhan_client_id or not env.access_token:
                raise ConfigError("env DHAN_CLIENT_ID / DHAN_ACCESS_TOKEN: required for the live feed")
            self.live = LiveFeed(self.ctx, await resume_allocator(self.ctx))
            initial = [(ix.segment, ix.security_id) for ix in self.ctx.config.algo.indices if ix.enabled]
            self._task = asyncio.create_task(self.live.run(initial))

    async def _last_id(self) -> str:
        key = self.ctx.keys.stream("ticks")
        try:
            info = await self.ctx.redis.xinfo_stream(key)
        except ResponseError:
            return streamids.ZERO
        last = info.get("last-generated-id") or info.get(b"last-generated-id")
        return last.decode() if isinstance(last, bytes) else str(last or streamids.ZERO)

    async def _status(self, **fields: Any) -> None:
        await self.ctx.redis.set(self.ctx.keys.replay_status(), orjson.dumps(fields))

    async def _replay(self) -> None:
        ctx = self.ctx
        rec = await asyncio.to_thread(
            load_session, self.replay_file, from_hhmm=self.from_hhmm, to_hhmm=self.to_hhmm
        )
        last = streamids.parse(await self._last_id())
        key = ctx.keys.stream("ticks")
        maxlen = ctx.config.algo.streams.maxlen.get("ticks", 3_000_000)
        pipe = ctx.redis.pipeline(transaction=False)
        pending = 0
        latest: dict[tuple[str, int], Tick] = {}
        skipped = 0
        t0_wall = time.monotonic()
        t0_event: int | None = None
        total = rec.n
        log.info("replay starting", extra={"fields": {"file": self.replay_file, "ticks": total,
                                                      "resume_after": streamids.fmt(*last)}})
        await self._status(state="running", file=self.replay_file, published=0, total=total)
        for tid, msg in session_messages(rec, ctx.clock.now_ns,
                                         clock_interval_ms=ctx.config.algo.runtime.clock_interval_ms):
            if streamids.parse(tid) <= last:
                skipped += 1
                continue
            if self.speed > 0:
                if t0_event is None:
                    t0_event = msg.ts_event
                due = (msg.ts_event - t0_event) / 1e9 / self.speed
                ahead = due - (time.monotonic() - t0_wall)
                if ahead > 0.002:
                    await self._flush(pipe, latest)
                    pending = 0
                    await ctx.sleep(ahead)
            pipe.xadd(key, wire.encode(msg), id=tid, maxlen=maxlen, approximate=True)
            if isinstance(msg, Tick) and msg.ltp_paise > 0:
                latest[(msg.segment, msg.security_id)] = msg
            pending += 1
            self.published += 1
            if pending >= WRITE_BATCH:
                await self._flush(pipe, latest)
                pending = 0
                await self._status(state="running", file=self.replay_file, published=self.published,
                                   total=total, last_id=tid, ts_event=msg.ts_event)
        await self._flush(pipe, latest)
        self.done = True
        await self._status(state="done", file=self.replay_file, published=self.published,
                           skipped=skipped, total=total)
        log.info("replay finished", extra={"fields": {"published": self.published, "skipped": skipped}})

    async def _flush(self, pipe: Any, latest: dict[tuple[str, int], Tick]) -> None:
        for (seg, sid), t in latest.items():
            pipe.hset(self.ctx.keys.latest_tick(seg, sid), mapping={
                "ltp_paise": t.ltp_paise, "ts_event": t.ts_event, "tick_id": t.tick_id,
                "bid_paise": t.bid_paise, "ask_paise": t.ask_paise, "oi": t.oi, "volume": t.volume,
            })
        latest.clear()
        try:
            await pipe.execute()
        except RedisError as exc:
            raise BusError(f"feed write failed: {exc}") from exc

    async def handle(self, batch: Batch) -> Commit:
        c = Commit()
        for e in batch.entries:
            m = e.msg
            if isinstance(m, FeedSubscribe):
                for sid in m.security_ids:
                    self.subscriptions.setdefault((m.segment, sid), set()).add(m.requester)
                if self.live is not None:
                    await self.live.client.subscribe([(m.segment, sid) for sid in m.security_ids])
            elif isinstance(m, FeedUnsubscribe):
                drop = []
                for sid in m.security_ids:
                    holders = self.subscriptions.get((m.segment, sid), set())
                    holders.discard(m.requester)
                    if not holders:
                        drop.append((m.segment, sid))
                if self.live is not None and drop:
                    await self.live.client.unsubscribe(drop)
            log.info("feed control", extra={"fields": {"type": type(m).__name__, "msg_id": m.msg_id,
                                                       "outcome": "recorded" if self.ctx.replay else "applied"}})
            c.ack(e.stream, e.entry_id)
        return c

    async def idle(self) -> None:
        if self._task is not None and self._task.done():
            exc = self._task.exception()
            if exc is not None and not isinstance(exc, Stopping):
                raise exc

    def drained(self) -> bool:
        return self.done

    def info(self) -> dict[str, Any]:
        if self.live is not None:
            return self.live.info()
        return {"published": self.published, "replay_done": self.done}

    async def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
