"""Feed shell: publishes ticks onto the ``ticks`` stream and keeps the latest-tick hashes.

Replay mode (``SCALPER_REPLAY=1``) reads recorded session files (one trading day each, back to
back in date order, each day ending with its SessionEnd) and writes them with explicit,
deterministic stream ids; after a restart it resumes after the last id already in the stream, so
a crash never duplicates or skips a tick. Its progress goes to the ``replay:status`` key (fields in
``services.feed.replay.progress_line``). Live mode connects the DhanHQ market feed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from typing import Any

import orjson
from redis.exceptions import RedisError, ResponseError

from services.feed.core import RateMeter, TickIdAllocator, session_messages
from services.feed.live import LiveFeed, resume_allocator
from services.feed.replay import load_session, plan_days, remaining_event_s
from shared import streamids, wire
from shared.bus import Batch, Commit
from shared.errors import BusError, ConfigError
from shared.messages import FeedSubscribe, FeedUnsubscribe, Tick
from shared.runtime import Context, Service, Stopping

log = logging.getLogger("feed")

WRITE_BATCH = 1000
STATUS_INTERVAL_S = 0.5  # a paced replay also writes its status at least this often


class FeedService(Service):
    name = "feed"
    inputs = ("feed.control",)

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.subscriptions: dict[tuple[str, int], set[str]] = {}
        self.replay_file = os.environ.get("SCALPER_REPLAY_FILE", "")
        # Several days back to back (``scalper replay DAY1 DAY2 ...``): os.pathsep-separated,
        # replayed in date order; SCALPER_REPLAY_FILE then names the first (others read its
        # metadata).
        files = [f for f in os.environ.get("SCALPER_REPLAY_FILES", "").split(os.pathsep) if f]
        self.replay_files = files or ([self.replay_file] if self.replay_file else [])
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
        if self.replay_files:
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
        """Publish every day of the plan back to back, each ending with its SessionEnd."""
        ctx = self.ctx
        plan = await asyncio.to_thread(
            plan_days, self.replay_files, from_hhmm=self.from_hhmm, to_hhmm=self.to_hhmm
        )
        last = streamids.parse(await self._last_id())
        key = ctx.keys.stream("ticks")
        maxlen = ctx.config.algo.streams.maxlen.get("ticks", 3_000_000)
        pipe = ctx.redis.pipeline(transaction=False)
        pending = 0
        latest: dict[tuple[str, int], Tick] = {}
        skipped = 0
        ids = TickIdAllocator()  # one for all days: ids increase strictly across them
        rate = RateMeter()
        own_ticks = 0  # ticks this process published (the rate's numerator)
        ticks_done = 0  # ticks published by anyone (a restarted feed skips those already there)
        total = sum(d.ticks for d in plan)
        status: dict[str, Any] = {"state": "running", "days": len(plan),
                                  "total": total, "speed": self.speed}
        last_status = 0.0

        async def write_status(msg: Any = None, **fields: Any) -> None:
            nonlocal last_status
            last_status = time.monotonic()
            rate.add(last_status, own_ticks)
            status.update(fields, published=self.published, skipped=skipped, ticks=ticks_done,
                          rate=round(rate.rate(), 1))
            if msg is not None:
                left = remaining_event_s(plan, status["day_index"] - 1, msg.ts_event)
                status.update(last_id=msg.tick_id, ts_event=msg.ts_event, remaining_event_s=round(left, 3))
            await self._status(**status)

        log.info("replay starting", extra={"fields": {
            "file": self.replay_file, "files": [d.path for d in plan], "ticks": total,
            "resume_after": streamids.fmt(*last)}})
        await write_status()
        for i, day in enumerate(plan):
            rec = await asyncio.to_thread(
                load_session, day.path, from_hhmm=self.from_hhmm, to_hhmm=self.to_hhmm
            )
            await write_status(file=day.path, day=rec.trading_day, day_index=i + 1)
            log.info("replay day", extra={"fields": {"file": day.path, "day": rec.trading_day,
                                                     "ticks": rec.n, "day_index": i + 1}})
            # Pacing restarts each day: the night between two recorded days is not replayed.
            t0_wall = time.monotonic()
            t0_event: int | None = None
            msg: Any = None
            for tid, msg in session_messages(rec, ctx.clock.now_ns, ids=ids,
                                             clock_interval_ms=ctx.config.algo.runtime.clock_interval_ms):
                is_tick = isinstance(msg, Tick)
                if streamids.parse(tid) <= last:
                    skipped += 1
                    ticks_done += is_tick
                    continue
                if self.speed > 0:
                    if t0_event is None:
                        t0_event = msg.ts_event
                    due = (msg.ts_event - t0_event) / 1e9 / self.speed
                    ahead = due - (time.monotonic() - t0_wall)
                    if ahead > 0.002:
                        await self._flush(pipe, latest)
                        pending = 0
                        if time.monotonic() - last_status >= STATUS_INTERVAL_S:
                            await write_status(msg)
                        await ctx.sleep(ahead)
                pipe.xadd(key, wire.encode(msg), id=tid, maxlen=maxlen, approximate=True)
                if is_tick and msg.ltp_paise > 0:
                    latest[(msg.segment, msg.security_id)] = msg
                pending += 1
                self.published += 1
                own_ticks += is_tick
                ticks_done += is_tick
                if pending >= WRITE_BATCH:
                    await self._flush(pipe, latest)
                    pending = 0
                    await write_status(msg)
            await self._flush(pipe, latest)
            pending = 0
            await write_status(msg)
        self.done = True
        await write_status(state="done")
        log.info("replay finished", extra={"fields": {"published": self.published, "skipped": skipped,
                                                      "days": len(plan)}})

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
