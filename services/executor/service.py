"""Executor shell: the only process that places orders, and the owner of orders, fills and trackers.

For each intent on ``orders.requests`` (exactly once, DESIGN §5):

1. its order rows are written to Postgres before anything is sent: one row (unique correlation
   id), or one per slice when the quantity is above the freeze limit (``slicing``), in one
   transaction with the entry's pending tracker;
2. the gateway fills them (paper: every slice at the first qualifying tick, see ``core``; live:
   each slice POSTed in turn, then followed to a final status, each partial fill recorded);
3. each step is one Postgres transaction that moves an order, records its fills, and once all
   the intent's orders are final opens / closes / reduces the tracker, with the resulting events
   queued in the outbox (``books``);
4. the outbox rows are published (idempotently by msg_id) and the intent acknowledged in one
   Redis step; then the rows are marked published.

A crash anywhere re-delivers the intent; the order rows tell how far it got (a slice already
sent is looked up at the broker by its correlation id, never blindly resent), and the outbox
re-publishes without duplicates. Intents are handled and committed one at a time so that other
stages can tell exactly which fills are known (``executor:state``, see ``shared.gates``).
"""

from __future__ import annotations

import logging
import os
import random
import signal
import time
from typing import Any

import msgspec
import orjson

from services.executor import core
from services.executor.books import AT_BROKER, FINAL, ExecutorBooks
from services.executor.live import LiveGateway
from services.executor.slicing import (
    Slice,
    SliceError,
    effective_freeze_qty,
    plan_slices,
    slice_intent,
)
from shared import streamids, wire
from shared.bus import Batch, Commit, Entry
from shared.dhan.order_updates import OrderUpdateClient
from shared.dhan.rest import DhanRest
from shared.errors import INFRASTRUCTURE_ERRORS, BrokerAuthError, BrokerRateLimited, BrokerRejected
from shared.messages import OrderIntent, SessionEnd, Tick
from shared.runtime import Context, Service, Stopping
from shared.store.db import connect
from shared.store.ledger import Ledger
from shared.store.rows import OrderRow

log = logging.getLogger("executor")


def crash_point(name: str) -> None:
    """Test hook for the exactly-once tests: SIGKILL this process at the named point, once.

    Active only when SCALPER_TEST_CRASH_AT names the point and SCALPER_TEST_CRASH_ONCE names a
    file that does not exist yet (it is created first, so the restarted process goes on).
    """
    if os.environ.get("SCALPER_TEST_CRASH_AT") != name:
        return
    marker = os.environ.get("SCALPER_TEST_CRASH_ONCE", "")
    if not marker or os.path.exists(marker):
        return
    with open(marker, "w") as f:
        f.write(name)
    log.warning("test crash point reached; killing this process", extra={"fields": {"point": name}})
    os.kill(os.getpid(), signal.SIGKILL)

SCAN_CHUNK = 2000
RATE_LIMIT_ATTEMPTS = 6


class ExecutorService(Service):
    name = "executor"
    inputs = ("orders.requests",)

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        env = ctx.config.env
        self.ledger = Ledger(connect(env.database_url, env.db_schema, application_name="executor"))
        self.books = ExecutorBooks(self.ledger, ctx.clock.now_ns, paper=env.mode == "paper")
        self.paper = ctx.config.algo.paper
        self.default_freeze_qty = ctx.config.algo.executor.default_freeze_qty
        self.ticks_decoder = wire.StreamDecoder("ticks")
        self.fills = 0
        self.consecutive_rejections = 0
        self.live: LiveGateway | None = None
        self._rng = random.Random(int(os.environ.get("SCALPER_SEED", "20261201")))
        if env.mode == "live":
            rest = DhanRest(env.dhan_rest_url, env.dhan_client_id, env.access_token)
            self.live = LiveGateway(rest, env.dhan_client_id, orders_enabled=env.orders_enabled)
            if env.orders_enabled:
                self.live.updates_client = OrderUpdateClient(
                    env.dhan_order_ws_url, env.dhan_client_id, env.access_token, on_update=self.live.on_update)

    async def start(self) -> None:
        if self.live is not None:
            await self.live.start()
        await self._relay_outbox(None)
        await self.ctx.redis.delete(self.ctx.keys.executor_state())

    # -- outbox ------------------------------------------------------------------------------

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
            except INFRASTRUCTURE_ERRORS:
                # Redis or PostgreSQL out of reach: the process exits and its restart (start-up is
                # recovery) takes the entry up again; not a reason to change the trading state.
                log.exception("infrastructure error; exiting", extra={"fields": {"entry_id": entry.entry_id}})
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
        rows = self.books.orders(intent)
        if not rows:
            crash_point("before_row")
            problem = core.validate_intent(intent) or self._refusal(intent)
            slices: list[Slice] = []
            if not problem:
                try:
                    slices = self._plan(intent)
                except SliceError as exc:
                    problem = f"cannot slice at the freeze limit: {exc}"
            rows = self.books.record_intent(intent, slices, problem, msgspec.to_builtins(intent))
            if problem:
                log.warning("intent refused", extra={"fields": {**fields, "outcome": "rejected", "reason": problem}})
                await self._count_rejection(problem)
            elif len(rows) > 1:
                log.info("intent sliced at the freeze limit", extra={"fields": {
                    **fields, "quantity": intent.quantity, "slices": [[r.correlation_id, r.quantity] for r in rows]}})
        if any(r.status not in FINAL for r in rows):
            if self.live is not None:
                await self._execute_live(intent, rows)
            else:
                await self._fill_paper(intent, rows, entry, others)
        else:
            self.books.settle(intent)  # done unless a crash fell between the last fill and it
        crash_point("before_ack")
        await self._relay_outbox(entry)

    def _plan(self, intent: OrderIntent) -> list[Slice]:
        """The intent's orders: lot size and freeze quantity from the instrument master (the
        index default when it has no freeze quantity), see ``slicing``."""
        inst = self.ledger.get_instrument(intent.segment, intent.security_id)
        lot = inst.lot_size if inst is not None and inst.lot_size > 0 else intent.lot_size
        freeze = effective_freeze_qty(inst.freeze_qty if inst is not None else 0, intent.index,
                                      self.default_freeze_qty)
        return plan_slices(intent.correlation_id, intent.quantity, lot, freeze)

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

    def _filled(self, intent: OrderIntent, fields: dict[str, Any]) -> None:
        """Count and log an intent whose orders filled (the books settled it already)."""
        self.fills += 1
        self.consecutive_rejections = 0
        tr = self.ledger.get_tracker(intent.position_id)
        log.info("order filled", extra={"fields": {
            **fields, "outcome": "filled", "position": tr.status if tr else None,
            "position_quantity": tr.quantity if tr else None}})

    # -- paper -------------------------------------------------------------------------------

    async def _fill_paper(self, intent: OrderIntent, rows: list[OrderRow], entry: Entry,
                          others: list[Entry]) -> None:
        """Every slice fills at the first qualifying tick (they are one decision)."""
        self._observe_order(intent)  # the paper "broker call"
        found = await self._scan_for_fill(intent, entry, others)
        fields = {"correlation_id": intent.correlation_id, "position_id": intent.position_id, "kind": intent.kind}
        if isinstance(found, SessionEnd):
            reason = "no tick of the instrument after the intent before the session ended"
            self.books.cancel_all(intent, rows, reason, found.ts_event, found.tick_id)
            log.warning("order cancelled", extra={"fields": {**fields, "outcome": "cancelled", "reason": reason}})
            return
        price = core.paper_fill_price(found, intent.side, self.paper.slippage_ticks)
        self.books.paper_fill(intent, rows, found.tick_id, found.ts_event, price)
        self._filled(intent, {**fields, "price_paise": price, "fill_tick_id": found.tick_id, "orders": len(rows)})

    def _observe_order(self, intent: OrderIntent) -> None:
        """Tick-to-order latency: from the feed building the originating tick to the broker call."""
        if intent.ts_origin:
            self.metrics.observe(f"tick_to_order_{intent.kind}", max(0, time.time_ns() - intent.ts_origin) / 1e6)

    # -- live --------------------------------------------------------------------------------

    async def _execute_live(self, intent: OrderIntent, rows: list[OrderRow]) -> None:
        """Send each slice not yet at the broker, in slice order (after one is refused, the rest
        are not sent), then follow each to a final status."""
        live = self.live
        assert live is not None
        fields = {"correlation_id": intent.correlation_id, "position_id": intent.position_id, "kind": intent.kind}
        if not live.orders_enabled:
            fresh = [r for r in rows if r.status == "new"]
            if fresh:
                payloads = [live.payload(slice_intent(intent, r.correlation_id, r.quantity)) for r in fresh]
                self.books.dry_run(intent, fresh, payloads)
                log.warning("dry run: order not sent (orders disabled)", extra={"fields": {
                    **fields, "outcome": "dry_run", "payload": payloads[0] if len(payloads) == 1 else payloads}})
            rows = self.books.orders(intent)
            if all(r.status in FINAL for r in rows):
                return
        refused = ""
        for i, row in enumerate(rows):
            if row.status in FINAL or row.status in AT_BROKER:
                continue
            if refused:
                self._reject(intent, row, f"not sent: {refused}")
                continue
            problem = await self._submit_slice(intent, row)
            if problem:
                refused = f"slice {row.slice_no} was refused ({problem})" if row.slice_no else problem
            elif i < len(rows) - 1:
                crash_point("between_slices")
        for row in self.books.orders(intent):
            if row.status not in FINAL:
                await self._follow(intent, row)
        self.books.settle(intent)  # settled with its last order already, unless none reached the broker
        rows = self.books.orders(intent)
        if any(r.filled_qty for r in rows):
            self._filled(intent, {**fields, "orders": len(rows),
                                  "filled_qty": sum(r.filled_qty for r in rows)})

    async def _submit_slice(self, intent: OrderIntent, row: OrderRow) -> str | None:
        """POST one order (row written first), or find it at the broker after a crash; the
        refusal reason if it is not at the broker now."""
        assert self.live is not None
        child = slice_intent(intent, row.correlation_id, row.quantity)
        cid = row.correlation_id
        fields = {"correlation_id": cid, "position_id": intent.position_id, "kind": intent.kind}
        payload = self.live.payload(child)
        if row.status != "new":
            # We may have sent it before a crash: the broker decides, never a blind resubmit.
            state = await self.live.lookup(cid)
            log.info("recovered order state", extra={"fields": {**fields, "found": state is not None}})
            if state is not None:
                mark = await self._latest_tick_marker(state.ts_ns())
                self.books.apply_state(intent, row, state, mark.tick_id, mark.ts_event)
                return None
            if row.status != "submitting":
                reason = f"order was {row.status} and the broker has no such order; not resubmitted"
                self._reject(intent, row, reason)
                return reason
        else:
            self.books.submitting(row, payload)
        self._observe_order(intent)
        crash_point("after_row")
        try:
            outcome = await self._submit_with_backoff(child, payload)
        except BrokerAuthError as exc:
            reason = f"broker authentication failed: {exc}"
            self._reject(intent, row, reason)
            await self._halt(f"broker authentication failed ({exc.code}): trading halted")
            return reason
        except BrokerRejected as exc:
            reason = f"broker refused the order: {exc}"
            self._reject(intent, row, reason)
            await self._count_rejection(str(exc))
            return reason
        crash_point("after_call")
        if outcome.kind == "not_found":
            reason = "order POST in doubt and the broker has no such order; not resubmitted"
            self.books.in_doubt(row, "POST in doubt; broker has no such order")
            self._reject(intent, row, reason)
            return reason
        status = outcome.order_status.upper()
        self.books.accepted(intent, row, outcome.order_id, status)
        log.info("order placed", extra={"fields": {**fields, "order_id": outcome.order_id, "status": status,
                                                   "outcome": outcome.kind, "quantity": row.quantity}})
        return None

    async def _follow(self, intent: OrderIntent, row: OrderRow) -> None:
        """Record every change of one order until it is final (each partial fill a fill row)."""
        assert self.live is not None
        cid = row.correlation_id
        fields = {"correlation_id": cid, "position_id": intent.position_id, "kind": intent.kind}
        async for state in self.live.watch(cid, row.broker_order_id or "", lambda: self.ctx.stopping):
            mark = await self._latest_tick_marker(state.ts_ns())
            inc = self.books.apply_state(intent, row, state, mark.tick_id, mark.ts_event)
            if inc is not None and not inc.whole:
                log.info("order filled in part", extra={"fields": {
                    **fields, "outcome": "part_filled", "quantity": inc.quantity, "price_paise": inc.price_paise,
                    "filled_qty": inc.filled_qty, "order_quantity": row.quantity}})
            if state.status == "REJECTED":
                log.warning("order rejected", extra={"fields": {**fields, "outcome": "rejected",
                                                                "reason": state.reason}})
                await self._count_rejection(state.reason)
            elif state.final and state.status != "TRADED":
                log.warning("order ended unfilled" if not state.filled_qty else "order ended part filled",
                            extra={"fields": {**fields, "outcome": state.status.lower(),
                                              "filled_qty": state.filled_qty, "reason": state.reason}})

    async def _submit_with_backoff(self, intent: OrderIntent, payload: dict[str, Any]) -> Any:
        """POST the order; a 429 / DH-904 means it was *not* accepted, so it is safe to send again
        after a jittered backoff (bounded). Everything in doubt goes through the broker lookup."""
        assert self.live is not None
        delay = 0.25
        for attempt in range(1, RATE_LIMIT_ATTEMPTS + 1):
            try:
                return await self.live.submit(payload)
            except BrokerRateLimited as exc:
                if attempt == RATE_LIMIT_ATTEMPTS:
                    raise BrokerRejected(f"still rate limited after {attempt} attempts: {exc}",
                                         code=exc.code, http_status=exc.http_status) from exc
                wait = delay * (0.5 + self._rng.random() / 2)
                log.warning("order rate limited by the broker; retrying", extra={"fields": {
                    "correlation_id": intent.correlation_id, "attempt": attempt, "delay_s": round(wait, 3),
                    "code": exc.code}})
                await self.ctx.sleep(wait)
                delay = min(delay * 2, 4.0)
        raise AssertionError("unreachable")

    async def _halt(self, reason: str) -> None:
        self.ledger.set_trading_state("HALTED", reason[:500])
        await self.ctx.redis.set(self.ctx.keys.trading_state(), "HALTED")
        log.error("trading halted", extra={"fields": {"reason": reason}})

    def _reject(self, intent: OrderIntent, row: OrderRow, reason: str) -> None:
        self.books.reject(intent, row, reason)
        log.warning("order rejected", extra={"fields": {
            "correlation_id": row.correlation_id, "position_id": intent.position_id, "kind": intent.kind,
            "outcome": "rejected", "reason": reason}})

    async def _latest_tick_marker(self, ts_ns: int) -> Tick:
        """A live fill is stamped with the latest tick id (the pipeline's clock) and broker time."""
        last = await self.ctx.redis.xrevrange(self.ctx.keys.stream("ticks"), count=1)
        tid = last[0][0].decode() if last else streamids.ZERO
        return Tick(msg_id=f"fillmark-{tid}", ts_event=ts_ns, ts_init=self.ctx.clock.now_ns(), tick_id=tid,
                    segment="", security_id=0, ltp_paise=0)

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
        own = await redis.xrange(key, min=intent.tick_id, max=intent.tick_id)
        if own and intent.kind == "exit":
            first = self.ticks_decoder.decode(own[0][1])
            if isinstance(first, SessionEnd):  # a square-off at the session's end
                return await self._last_tick_before(intent, first)
        while True:
            rows = await redis.xrange(key, min=f"({pos}", count=SCAN_CHUNK)
            for eid_b, raw in rows:
                eid = eid_b.decode()
                msg = self.ticks_decoder.decode(raw)
                if isinstance(msg, SessionEnd):
                    if intent.kind == "exit":
                        return await self._last_tick_before(intent, msg)
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

    async def _last_tick_before(self, intent: OrderIntent, end: SessionEnd) -> Tick | SessionEnd:
        """An exit that meets the session's end fills at the instrument's last tick before it
        (the square-off price); with no tick of the instrument at all it is cancelled."""
        key = self.ctx.keys.stream("ticks")
        hi = f"({end.tick_id}"
        while True:
            rows = await self.ctx.redis.xrevrange(key, max=hi, count=SCAN_CHUNK)
            for eid_b, raw in rows:
                msg = self.ticks_decoder.decode(raw)
                if isinstance(msg, SessionEnd) and msg.tick_id != end.tick_id:
                    return end  # the previous day's end: no tick of it this day
                if isinstance(msg, Tick) and msg.security_id == intent.security_id and msg.ltp_paise > 0:
                    return msg
                hi = f"({eid_b.decode()}"
            if len(rows) < SCAN_CHUNK:
                return end

    def info(self) -> dict[str, Any]:
        return {"fills": self.fills}

    async def stop(self) -> None:
        if self.live is not None:
            await self.live.stop()
        self.ledger.close()
