"""Signals shell: index ticks in, signals out (and into the ledger's signals table).

The core's state (candles, indicators, scaling) is checkpointed atomically with each commit, so
a restart continues exactly where the last commit ended and never emits a signal twice (and the
signal's deterministic msg_id deduplicates a re-processed batch anyway).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import msgspec

from services.signals.core import SignalsCore
from shared import streamids
from shared.bus import Batch, Commit
from shared.errors import ConfigError, DecodeError
from shared.messages import Clock, Signal, SignalSkipped, Tick
from shared.runtime import Context, Service
from shared.store.db import connect
from shared.store.ledger import Ledger
from shared.warmup import candles_from_session

log = logging.getLogger("signals")


class SignalsService(Service):
    name = "signals"
    inputs = ("ticks",)

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        env = ctx.config.env
        # Partitioning by index (DESIGN §8): SCALPER_SIGNALS_INDICES=NIFTY,SENSEX gives this
        # process those indices and its own consumer group; several partitions together
        # produce the same signals as one process with all indices.
        subset = [k.strip().upper() for k in os.environ.get("SCALPER_SIGNALS_INDICES", "").split(",") if k.strip()]
        known = {ix.key for ix in ctx.config.algo.indices}
        unknown = sorted(set(subset) - known)
        if unknown:
            raise ConfigError(f"env SCALPER_SIGNALS_INDICES: unknown index {', '.join(unknown)}")
        self.subset = sorted(subset)
        self._group = "signals-" + "-".join(k.lower() for k in self.subset) if subset else "signals"
        self.ledger = Ledger(connect(env.database_url, env.db_schema, application_name="signals"))
        self.core: SignalsCore | None = None
        self.signals = 0
        self.last: str | None = None

    @property
    def group(self) -> str:
        return self._group

    def _indices(self) -> list[Any]:
        algo = self.ctx.config.algo
        if not self.subset:
            return list(algo.indices)
        return [ix for ix in algo.indices if ix.key in self.subset]

    async def start(self) -> None:
        algo = self.ctx.config.algo
        await self.ctx.redis.sadd(self.ctx.keys.signals_partitions(), self.group)
        raw = await self.ctx.redis.get(self.ctx.keys.checkpoint(self.group))
        if raw:
            try:
                self.core = SignalsCore.restore(algo.signals, self._indices(), self.ctx.clock.now_ns, raw)
                log.info("restored checkpoint")
                return
            except (ConfigError, DecodeError) as exc:
                # A changed indicator config (or an unreadable snapshot) must not crash-loop the
                # service: start fresh and say so; signals' msg_ids still deduplicate outputs.
                log.warning("checkpoint not usable; starting fresh", extra={"fields": {"error": str(exc)}})
        self.core = SignalsCore(algo.signals, self._indices(), self.ctx.clock.now_ns)
        if self.ctx.config.env.mode == "live" and not os.environ.get("SCALPER_WARMUP_FILE"):
            await self._warm_up_live()
        else:
            self._warm_up()

    async def _warm_up_live(self) -> None:
        """Live: 1-minute candles of the previous trading day and of today so far from the
        intraday charts endpoint (the last, possibly forming, bar is dropped)."""
        from datetime import date as _date

        from shared.calendar import previous_trading_day
        from shared.clock import ist_day
        from shared.dhan.rest import DhanRest
        from shared.errors import BrokerError
        from shared.warmup import candles_from_charts

        assert self.core is not None
        env = self.ctx.config.env
        day_s = os.environ.get("SCALPER_WARMUP_DAY", "")
        today = _date.fromisoformat(day_s) if day_s else ist_day(self.ctx.clock.now_ns())
        prev = previous_trading_day(today, "NSE")
        async with DhanRest(env.dhan_rest_url, env.dhan_client_id, env.access_token) as rest:
            for ix in self._indices():
                if not ix.enabled:
                    continue
                try:
                    c = await rest.intraday_charts(ix.security_id, ix.segment, "INDEX", 1, prev, today)
                except BrokerError as exc:
                    log.warning("warm-up from intraday charts failed", extra={"fields": {
                        "index": ix.key, "error": str(exc)}})
                    continue
                candles = candles_from_charts(c.ts_ns, c.open_paise, c.high_paise, c.low_paise, c.close_paise)[:-1]
                n = self.core.warm_up(ix.key, candles) if candles else 0
                log.info("warm-up", extra={"fields": {"index": ix.key, "candles": n, "source": "intraday charts",
                                                      "from": prev.isoformat(), "to": today.isoformat()}})

    def _warm_up(self) -> None:
        """Replay: previous day's session (SCALPER_WARMUP_FILE) so indicators are valid at 09:15."""
        assert self.core is not None
        path = os.environ.get("SCALPER_WARMUP_FILE", "")
        if not path:
            log.info("no warm-up data; indicators become valid after enough candles")
            return
        for ix in self._indices():
            if not ix.enabled:
                continue
            candles = candles_from_session(path, ix.security_id, ix.segment)
            n = self.core.warm_up(ix.key, candles) if candles else 0
            log.info("warm-up", extra={"fields": {"index": ix.key, "candles": n, "file": path}})

    async def handle(self, batch: Batch) -> Commit:
        assert self.core is not None
        c = Commit()
        last = None
        for e in batch.entries:
            m = e.msg
            outs: list[Signal | SignalSkipped] = []
            if isinstance(m, Tick):
                outs = self.core.on_tick(m)
            elif isinstance(m, Clock):
                outs = self.core.on_clock(m)
            if outs and m.ts_init:
                outs = [msgspec.structs.replace(o, ts_origin=m.ts_init) if isinstance(o, Signal) else o
                        for o in outs]
            for o in outs:
                self.ledger.insert_signal(o)
                c.emit("signals", o)
                if isinstance(o, Signal):
                    self.signals += 1
                    log.info("signal", extra={"fields": {
                        "msg_id": o.msg_id, "tick_id": o.tick_id, "index": o.index,
                        "direction": o.direction, "reason": o.reason, "outcome": "signal"}})
                else:
                    log.info("signal skipped", extra={"fields": {
                        "msg_id": o.msg_id, "tick_id": o.tick_id, "index": o.index,
                        "reason": o.reason, "outcome": "skipped"}})
            c.ack(e.stream, e.entry_id)
            last = e.entry_id
        for logical, eid, _f, _err in batch.dead:
            if logical == "ticks":
                last = max(last or eid, eid, key=streamids.parse)
        if last is not None:
            # Never move the frontier back (entries claimed from a dead consumer can be older).
            if self.last is None or streamids.less(self.last, last):
                self.last = last
            c.sets[self.ctx.keys.checkpoint(self.group)] = self.core.snapshot()
            c.sets[self.ctx.keys.frontier(self.group)] = streamids.successor(self.last).encode()
        return c

    def info(self) -> dict[str, Any]:
        return {"signals": self.signals}

    async def stop(self) -> None:
        self.ledger.close()
