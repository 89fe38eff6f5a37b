"""Executor shell: the only process that places orders, and the owner of orders, fills and trackers.

For each intent on ``orders.requests`` (exactly once, DESIGN §5):

1. the order row (unique correlation id) is written to Postgres before anything else;
2. the gateway fills it (paper: the first qualifying tick, see ``core``);
3. one Postgres transaction moves the order, records the fill, opens/closes the tracker and
   queues the resulting events in the outbox;
4. the outbox rows are published (idempotently by msg_id) and the intent acknowledged in one
   Redis step; then the rows are marked published.

A crash anywhere re-delivers the intent; the order row tells how far it got, and the outbox
re-publishes without duplicates. Intents are handled and committed one at a time so that other
stages can tell exactly which fills are known (``executor:state``, see ``shared.gates``).
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import orjson

from services.executor import core
from shared import streamids, wire
from shared.bus import Batch, Commit, Entry
from shared.messages import Message, OrderIntent, SessionEnd, Tick
from shared.runtime import Context, Service, Stopping
from shared.store.db import connect
from shared.store.ledger import Ledger

log = logging.getLogger("executor")

SCAN_CHUNK = 2000
FINAL = {"traded", "rejected", "cancelled", "expired", "dry_run"}


class ExecutorService(Service):
    name = "executor"
    inputs = ("orders.requests",)

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        env = ctx.config.env
        self.ledger = Ledger(connect(env.database_url, env.db_schema, application_name="executor"))
        self.paper = ctx.config.algo.paper
        self.ticks_decoder = wire.StreamDecoder("ticks")
        self.fills = 0
        self.consecutive_rejections = 0

    async def start(self) -> None:
        await self._relay_outbox(None)
        await self.ctx.redis.delete(self.ctx.keys.executor_state())

    # -- outbox ------------------------------------------------------------------------------

    def _queue(self, stream: str, msg: Message) -> None:
        f = wire.encode(msg)
        self.ledger.add_outbox(stream, msg.msg_id, f["type"].decode(), f["data"])

    async def _relay_outbox(self, ack: Entry | None) -> None:
        rows = self.ledger.unpublished_outbox(1000)
        c = Commit()
        for row in rows:
            c.emit_raw(row.stream, row.msg_id, row.type, bytes(row.data).decode())
        if ack is not None:
            c.ack(ack.stream, ack.entry_id)
        await self.ctx.bus.commit(self.name, c)
        if rows:
            self.ledger.mark_published([r.id for r in rows])

    # -- gating state ------------------------------------------------------------------------

    async def _publish_state(self, unacked: list[Entry], scan_floor: str) -> None:
        ids = sorted((e.entry_id for e in unacked), key=streamids.parse)
        state = {"count": len(ids), "min": ids[0], "max": ids[-1], "scan_floor": scan_floor} if ids else {"count": 0}
        await self.ctx.redis.set(self.ctx.keys.executor_state(), orjson.dumps(state))

    # -- handling ----------------------------------------------------------------------------

    async def handle(self, batch: Batch) -> Commit:
        unacked = list(batch.entries)
        for entry in batch.entries:
            others = [e for e in unacked if e is not entry]
            try:
                await self._process(entry, others)
            except Stopping:
                raise
            except Exception as exc:
                # On the order path an unexpected error halts trading instead of being skipped;
                # the entry stays pending and is retried after the restart.
                reason = f"executor error on {entry.entry_id}: {type(exc).__name__}: {exc}"
                log.exception("halting trading", extra={"fields": {"entry_id": entry.entry_id}})
                try:
                    self.ledger.set_trading_state("HALTED", reason[:500])
                    await self.ctx.redis.set(self.ctx.keys.trading_state(), "HALTED")
                except Exception:  # noqa: BLE001 - report the original error, not this one
                    log.exception("could not record the HALTED state")
                raise
            unacked.remove(entry)
            self.handled += 1
        return Commit()

    async def _process(self, entry: Entry, others: list[Entry]) -> None:
        intent = entry.msg
        if not isinstance(intent, OrderIntent):
            await self._relay_outbox(entry)
            return
        fields = {"correlation_id": intent.correlation_id, "position_id": intent.position_id,
                  "kind": intent.kind, "tick_id": intent.tick_id}
        order = self.ledger.get_order(intent.correlation_id)
        if order is None:
            problem = core.validate_intent(intent) or self._refusal(intent)
            with self.ledger.transaction():
                self.ledger.create_order(
                    correlation_id=intent.correlation_id, intent_msg_id=intent.msg_id,
                    position_id=intent.position_id, kind=intent.kind, side=intent.side,
                    segment=intent.segment, security_id=intent.security_id, symbol=intent.symbol,
                    quantity=intent.quantity, ts_intent=intent.ts_event, intent_tick_id=intent.tick_id,
                    order_type=intent.order_type, limit_price_paise=intent.limit_price_paise,
                    reason=intent.reason, payload=msgspec.to_builtins(intent),
                )
                if problem:
                    self.ledger.set_order_status(intent.correlation_id, "rejected", reason=problem)
                    self._queue("orders.events", core.rejected_event(intent, problem, self.ctx.clock.now_ns()))
                elif intent.kind == "entry":
                    self.ledger.open_tracker(
                        position_id=intent.position_id, index_key=intent.index, segment=intent.segment,
                        security_id=intent.security_id, symbol=intent.symbol,
                        option_type=intent.symbol[-2:] if intent.symbol[-2:] in ("CE", "PE") else "",
                        quantity=intent.quantity, signal_id=intent.signal_id, paper=True,
                    )
            order = self.ledger.get_order(intent.correlation_id)
            if problem:
                log.warning("intent refused", extra={"fields": {**fields, "outcome": "rejected", "reason": problem}})
                await self._count_rejection(problem)
        assert order is not None
        if order.status not in FINAL:
            await self._fill_paper(intent, entry, others)
        await self._relay_outbox(entry)

    async def _count_rejection(self, reason: str) -> None:
        """Consecutive rejections beyond ``executor.max_rejections_before_halt`` halt trading."""
        self.consecutive_rejections += 1
        limit = self.ctx.config.algo.executor.max_rejections_before_halt
        if self.consecutive_rejections >= limit and self.ledger.get_trading_state().state != "HALTED":
            why = f"{self.consecutive_rejections} consecutive order rejections (last: {reason})"
            self.ledger.set_trading_state("HALTED", why[:500])
            await self.ctx.redis.set(self.ctx.keys.trading_state(), "HALTED")
            log.error("trading halted", extra={"fields": {"reason": why}})

    def _refusal(self, intent: OrderIntent) -> str | None:
        """Business refusals: trading state, unknown or closed position for an exit."""
        if intent.kind == "entry":
            state = self.ledger.get_trading_state().state
            if state != "ACTIVE":
                return f"trading state is {state}: entries refused"
            return None
        tracker = self.ledger.get_tracker(intent.position_id)
        if tracker is None:
            return f"exit for unknown position {intent.position_id}"
        if tracker.status != "active":
            return f"exit for position {intent.position_id} in status {tracker.status}"
        if intent.quantity != tracker.quantity:
            return f"exit quantity {intent.quantity} differs from open quantity {tracker.quantity}"
        return None

    async def _fill_paper(self, intent: OrderIntent, entry: Entry, others: list[Entry]) -> None:
        found = await self._scan_for_fill(intent, entry, others)
        now = self.ctx.clock.now_ns()
        cid = intent.correlation_id
        fields = {"correlation_id": cid, "position_id": intent.position_id, "kind": intent.kind}
        if isinstance(found, SessionEnd):
            reason = "no tick of the instrument after the intent before the session ended"
            with self.ledger.transaction():
                self.ledger.set_order_status(cid, "cancelled", reason=reason)
                if intent.kind == "entry":
                    self.ledger.cancel_tracker(intent.position_id, reason)
                self._queue("orders.events", core.cancelled_event(intent, reason, found.ts_event, found.tick_id, now))
            log.warning("order cancelled", extra={"fields": {**fields, "outcome": "cancelled", "reason": reason}})
            return
        tick = found
        price = core.paper_fill_price(tick, intent.side, self.paper.slippage_ticks)
        broker_id = f"PAPER-{cid}"
        with self.ledger.transaction():
            self.ledger.set_order_status(cid, "traded", broker_order_id=broker_id,
                                         filled_qty=intent.quantity, avg_price_paise=price)
            self.ledger.record_fill(fill_id=f"F-{cid}", correlation_id=cid, broker_order_id=broker_id,
                                    side=intent.side, quantity=intent.quantity, price_paise=price,
                                    ts_event=tick.ts_event, tick_id=tick.tick_id)
            self._queue("orders.events", core.filled_event(intent, tick, price, broker_id, now))
            if intent.kind == "entry":
                self.ledger.activate_tracker(intent.position_id, entry_price_paise=price,
                                             quantity=intent.quantity, entry_tick_id=tick.tick_id,
                                             ts_entry=tick.ts_event)
                self._queue("positions", core.opened_event(intent, tick, price, now))
            else:
                tr = self.ledger.get_tracker(intent.position_id)
                assert tr is not None and tr.entry_price_paise is not None
                closed = core.closed_event(intent, tick, tr.entry_price_paise, price, intent.quantity, now)
                self.ledger.close_tracker(intent.position_id, exit_price_paise=price,
                                          exit_tick_id=tick.tick_id, ts_exit=tick.ts_event,
                                          reason=intent.reason, pnl_paise=closed.pnl_paise,
                                          charges_paise=closed.charges_paise)
                self._queue("positions", closed)
        self.fills += 1
        self.consecutive_rejections = 0
        log.info("order filled", extra={"fields": {**fields, "outcome": "filled", "price_paise": price,
                                                   "fill_tick_id": tick.tick_id}})

    async def _scan_for_fill(self, intent: OrderIntent, entry: Entry, others: list[Entry]) -> Tick | SessionEnd:
        """Read the ticks after the intent's tick until the fill tick (or the session's end)."""
        redis = self.ctx.redis
        key = self.ctx.keys.stream("ticks")
        pos = intent.tick_id
        latency = self.paper.fill_latency_ms
        floor_others = [e.msg.tick_id for e in others if isinstance(e.msg, OrderIntent)]

        async def publish(scan: str) -> None:
            floor = min([scan, *floor_others], key=streamids.parse)
            await self._publish_state([entry, *others], floor)

        await publish(pos)
        while True:
            rows = await redis.xrange(key, min=f"({pos}", count=SCAN_CHUNK)
            for eid_b, raw in rows:
                eid = eid_b.decode()
                msg = self.ticks_decoder.decode(raw)
                if isinstance(msg, SessionEnd):
                    return msg
                if isinstance(msg, Tick) and core.is_fill_tick(msg, intent, latency):
                    return msg
                pos = eid
            await publish(pos)
            if len(rows) < SCAN_CHUNK:
                # Caught up with the feed: wait for more ticks (or stop).
                if self.ctx.stopping:
                    raise Stopping()
                await redis.xread({key: pos}, count=1, block=200)

    def info(self) -> dict[str, Any]:
        return {"fills": self.fills}

    async def stop(self) -> None:
        self.ledger.close()
