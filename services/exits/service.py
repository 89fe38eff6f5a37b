"""Exits shell: every tick of a held instrument through the risk rules; exit intents out.

Inputs: ``ticks`` (the pipeline's clock), ``positions`` (opened/closed/adjusted, from the
executor) and ``orders.events`` (a rejected or cancelled exit is retried).
Outputs: exit intents on ``orders.requests``; the PnL hash per position; the trading state when
a daily limit latches. State (high-water marks, exiting flags, daily PnL) is checkpointed with
every commit, so a restart resumes exactly where the last commit left off.

Replay gating (``shared.gates``): before deciding at tick t, exits makes sure every entry intent
from signals before t is written and every fill at or before t is published, then reads the
positions stream. So which positions exist at t never depends on process timing. A position
learnt after its fill tick had been passed (live mode, or a restart) is caught up by re-reading
the ticks since its fill.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

import msgspec

from services.exits.core import ExitAction, ExitsCore
from shared import gates, streamids, wire
from shared.bus import Batch, Commit, Entry
from shared.messages import (
    Clock,
    OrderCancelled,
    OrderRejected,
    PositionAdjusted,
    PositionClosed,
    PositionOpened,
    SessionEnd,
    Tick,
)
from shared.runtime import Context, Service
from shared.store.db import connect
from shared.store.ledger import Ledger
from shared.types import rupees_to_paise

log = logging.getLogger("exits")

MAX_BUFFER = 20_000


class _Checkpoint(msgspec.Struct):
    core: bytes
    last_tick: str


class ExitsService(Service):
    name = "exits"
    inputs = ("ticks", "positions", "orders.events")

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        algo = ctx.config.algo
        env = ctx.config.env
        self.ledger = Ledger(connect(env.database_url, env.db_schema, application_name="exits"))
        self.core = ExitsCore(algo.risk, algo.indices, rupees_to_paise(algo.paper.balance_rupees),
                              ctx.clock.now_ns)
        self.buffer: deque[Entry] = deque()
        self.commit = Commit()
        self.last_tick = streamids.ZERO
        self.gate_ok_upto = streamids.ZERO
        self.exits_emitted = 0
        self.ticks_decoder = wire.StreamDecoder("ticks")
        self.hwm_saved: dict[str, int] = {}

    # -- start-up ----------------------------------------------------------------------------

    async def start(self) -> None:
        raw = await self.ctx.redis.get(self.ctx.keys.checkpoint(self.name))
        if raw:
            cp = msgspec.msgpack.decode(raw, type=_Checkpoint)
            self.core.restore(cp.core)
            self.last_tick = cp.last_tick
            log.info("restored checkpoint", extra={"fields": {"last_tick": cp.last_tick}})
            return
        # No checkpoint (first start, or Redis lost it): rebuild the position index from the
        # ledger, then catch each position up over the ticks this group already consumed.
        self.last_tick = await self._group_last_delivered()
        rebuilt = []
        for t in self.ledger.active_trackers():
            if t.entry_price_paise is None or t.entry_tick_id is None:
                continue
            self.core.on_position_opened(PositionOpened(
                msg_id=f"rebuild-{t.position_id}", ts_event=t.ts_entry or 0, ts_init=self.ctx.clock.now_ns(),
                tick_id=t.entry_tick_id, position_id=t.position_id, index=t.index_key, segment=t.segment,
                security_id=t.security_id, symbol=t.symbol, quantity=t.quantity,
                entry_price_paise=t.entry_price_paise, entry_tick_id=t.entry_tick_id, ts_entry=t.ts_entry or 0,
            ))
            hwm = int((t.trailing_state or {}).get("hwm_ltp_paise", 0))
            if hwm:
                self.core.restore_hwm(t.position_id, hwm)
            self.hwm_saved[t.position_id] = hwm
            rebuilt.append(t)
            log.info("rebuilt position from ledger", extra={"fields": {"position_id": t.position_id,
                                                                      "hwm_ltp_paise": hwm}})
        for t in rebuilt:
            if t.entry_tick_id and streamids.less(t.entry_tick_id, self.last_tick):
                self._emit(self.core.catch_up(
                    t.position_id, await self._ticks_between(t.entry_tick_id, self.last_tick)))
        if rebuilt:
            await self._flush()

    async def _group_last_delivered(self) -> str:
        try:
            groups = await self.ctx.redis.xinfo_groups(self.ctx.keys.stream("ticks"))
        except Exception:  # noqa: BLE001 - no stream yet
            return streamids.ZERO
        for g in groups:
            name = g.get("name")
            if (name.decode() if isinstance(name, bytes) else name) == self.name:
                last = g.get("last-delivered-id")
                return last.decode() if isinstance(last, bytes) else str(last)
        return streamids.ZERO

    # -- positions ---------------------------------------------------------------------------

    async def _apply_position(self, e: Entry) -> None:
        m = e.msg
        if isinstance(m, PositionOpened):
            self.core.on_position_opened(m)
            if streamids.less(m.entry_tick_id, self.last_tick):
                # Learnt late: check it against every tick since its fill.
                actions = self.core.catch_up(m.position_id, await self._ticks_between(m.entry_tick_id, self.last_tick))
                self._emit(actions)
                log.info("caught up late position", extra={"fields": {
                    "position_id": m.position_id, "from": m.entry_tick_id, "to": self.last_tick,
                    "outcome": "exit" if actions else "open"}})
        elif isinstance(m, PositionAdjusted):
            self.core.on_position_adjusted(m.position_id, m.quantity)
        elif isinstance(m, PositionClosed):
            self.core.on_position_closed(m)
            self.hwm_saved.pop(m.position_id, None)
        elif isinstance(m, OrderRejected | OrderCancelled) and m.kind == "exit":
            # Refused, or ended at the broker with (part of) the position still open — e.g. a
            # freeze-limit slice rejected or a partly filled exit's remainder cancelled, the
            # quantity left arriving as position.adjusted: either way the exit is retried.
            due = self.core.on_exit_rejected(m.position_id, m.ts_event, m.correlation_id)
            log.warning("exit rejected" if isinstance(m, OrderRejected) else "exit cancelled", extra={"fields": {
                "position_id": m.position_id, "correlation_id": m.correlation_id, "reason": m.reason,
                "outcome": "retry scheduled" if due else "ignored", "retry_at_ns": due}})
        self.commit.ack(e.stream, e.entry_id)
        self._state_changes()

    async def _ticks_between(self, after: str, upto: str) -> list[Tick]:
        out: list[Tick] = []
        key = self.ctx.keys.stream("ticks")
        pos = after
        while True:
            rows = await self.ctx.redis.xrange(key, min=f"({pos}", max=upto, count=5000)
            for eid, raw in rows:
                msg = self.ticks_decoder.decode(raw)
                if isinstance(msg, Tick):
                    out.append(msg)
                pos = eid.decode()
            if len(rows) < 5000:
                return out

    async def _drain_positions(self) -> None:
        consumer = self.consumer  # type: ignore[attr-defined]
        while True:
            b = await consumer.read(block=False, only=["positions", "orders.events"])
            for e in b.entries:
                await self._apply_position(e)
            for logical, eid, fields, error in b.dead:
                from shared.bus import dead_letter

                self.commit.emit("deadletter", dead_letter(self.name, logical, eid, fields, error,
                                                           self.ctx.clock.now_ns()))
                self.commit.ack(logical, eid)
            if not b:
                return

    # -- gating ------------------------------------------------------------------------------

    async def _gate(self, tick_id: str) -> bool:
        """May we decide at ``tick_id``? (Replay: upstreams caught up; live: always.)"""
        if not streamids.less(self.gate_ok_upto, tick_id):
            return True
        r, k = self.ctx.redis, self.ctx.keys
        e_front = await gates.entries_frontier(r, k)
        last_buf = self.buffer[-1].entry_id if self.buffer else tick_id
        cand = min(e_front, last_buf, key=streamids.parse)
        if not streamids.less(cand, tick_id) and await gates.executor_settled_through(r, k, cand):
            self.gate_ok_upto = cand
        elif not streamids.less(e_front, tick_id) and await gates.executor_settled_through(r, k, tick_id):
            self.gate_ok_upto = tick_id
        else:
            return False
        await self._drain_positions()
        return True

    async def _wait_gate(self, tick_id: str) -> None:
        delay = 0.001
        waited = 0.0
        limit = None if self.ctx.replay else self.ctx.config.algo.runtime.upstream_wait_s
        while not await self._gate(tick_id):
            if limit is not None and waited >= limit:
                log.warning("upstream not caught up; proceeding", extra={"fields": {"tick_id": tick_id}})
                return
            await self.ctx.sleep(delay)
            waited += delay
            delay = min(delay * 2, 0.05)

    # -- ticks -------------------------------------------------------------------------------

    def _emit(self, actions: list[ExitAction], tick_ts_init: int = 0) -> None:
        for a in actions:
            intent = a.intent
            if tick_ts_init:
                intent = msgspec.structs.replace(intent, ts_origin=tick_ts_init)
                self.metrics.observe("tick_to_exit_intent", max(0, time.time_ns() - tick_ts_init) / 1e6)
            self.commit.emit("orders.requests", intent)
            self.exits_emitted += 1
            log.info("exit", extra={"fields": {"position_id": a.position_id, "rule": a.rule,
                                               "reason": a.reason, "tick_id": a.intent.tick_id,
                                               "msg_id": a.intent.msg_id, "outcome": "exit_intent"}})

    def _state_changes(self) -> None:
        for ch in self.core.take_state_changes():
            if ch.scope == "global":
                current = self.ledger.get_trading_state().state
                if current == "HALTED":  # an operator's or pre-open halt is never lifted from here
                    log.warning("trading state change not applied: state is HALTED",
                                extra={"fields": msgspec.to_builtins(ch)})
                    continue
                self.ledger.set_trading_state(ch.state, ch.reason)
                self.commit.sets[self.ctx.keys.trading_state()] = ch.state.encode()
            log.warning("trading state change", extra={"fields": msgspec.to_builtins(ch)})

    async def _flush(self) -> None:
        c, self.commit = self.commit, Commit()
        c.sets[self.ctx.keys.checkpoint(self.name)] = msgspec.msgpack.encode(
            _Checkpoint(core=self.core.snapshot(), last_tick=self.last_tick))
        c.sets[self.ctx.keys.frontier(self.name)] = streamids.successor(self.last_tick).encode()
        await self.ctx.bus.commit(self.name, c)
        await self._write_pnl()

    async def _write_pnl(self) -> None:
        views = self.core.pnl_views()
        if not views:
            return
        pipe = self.ctx.redis.pipeline(transaction=False)
        for v in views:
            pipe.hset(self.ctx.keys.pnl(v.position_id), mapping={
                "pnl_paise": v.pnl_paise, "pnl_pct": repr(v.pnl_pct), "ltp_paise": v.ltp_paise,
                "hwm_pnl_paise": v.hwm_pnl_paise, "hwm_pnl_pct": repr(v.hwm_pnl_pct),
                "ts_event": v.ts_event})
            pipe.expire(self.ctx.keys.pnl(v.position_id), 86_400)
        await pipe.execute()
        for v in views:
            hwm = self.core.hwm_ltp_paise(v.position_id)
            if hwm is not None and hwm > self.hwm_saved.get(v.position_id, 0):
                # Postgres keeps the high-water mark so it survives a loss of Redis too.
                self.ledger.update_hwm(v.position_id, v.hwm_pnl_paise, {"hwm_ltp_paise": hwm})
                self.hwm_saved[v.position_id] = hwm

    async def handle(self, batch: Batch) -> Commit:
        for e in batch.entries:
            if e.stream in ("positions", "orders.events"):
                await self._apply_position(e)
            else:
                self.buffer.append(e)
        await self._process()
        return Commit()

    async def _process(self) -> None:
        while self.buffer:
            e = self.buffer[0]
            if streamids.less(self.gate_ok_upto, e.entry_id):
                if self.ctx.replay:
                    if self.commit.acks or self.commit.outputs:
                        await self._flush()  # let others see our progress before we wait
                    await self._wait_gate(e.entry_id)
                else:
                    # Live: no waiting; learn new positions once per batch (late ones catch up).
                    await self._drain_positions()
                    self.gate_ok_upto = self.buffer[-1].entry_id
            self.buffer.popleft()
            m = e.msg
            actions: list[ExitAction] = []
            if isinstance(m, Tick):
                actions = self.core.on_tick(m)
            elif isinstance(m, Clock):
                actions = self.core.on_clock(m)
            elif isinstance(m, SessionEnd):
                actions = self.core.on_session_end(m)
            if streamids.less(self.last_tick, e.entry_id):  # never move back (claimed old entries)
                self.last_tick = e.entry_id
            self.commit.ack(e.stream, e.entry_id)
            self._state_changes()
            if actions:
                self._emit(actions, m.ts_init)
                # The executor now has work before later ticks: publish it, re-check the gate.
                self.gate_ok_upto = e.entry_id
                await self._flush()
            self.handled += 1
        await self._flush()

    def info(self) -> dict[str, Any]:
        return {"exits": self.exits_emitted, "last_tick": self.last_tick,
                "trading_state": self.core.trading_state}

    async def stop(self) -> None:
        self.ledger.close()
