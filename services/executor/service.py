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
import os
import random
import signal
import time
from typing import Any

import msgspec
import orjson

from services.executor import core
from services.executor.live import STATUS_MAP, LiveGateway
from shared import streamids, wire
from shared.bus import Batch, Commit, Entry
from shared.dhan.order_updates import OrderUpdateClient
from shared.dhan.rest import DhanRest
from shared.errors import BrokerAuthError, BrokerRateLimited, BrokerRejected
from shared.messages import Message, OrderIntent, SessionEnd, Tick
from shared.runtime import Context, Service, Stopping
from shared.store.db import connect
from shared.store.ledger import Ledger

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
FINAL = {"traded", "rejected", "cancelled", "expired", "dry_run"}
RATE_LIMIT_ATTEMPTS = 6


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
            crash_point("before_row")
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
                        quantity=intent.quantity, signal_id=intent.signal_id,
                        paper=self.ctx.config.env.mode == "paper",
                    )
            order = self.ledger.get_order(intent.correlation_id)
            if problem:
                log.warning("intent refused", extra={"fields": {**fields, "outcome": "rejected", "reason": problem}})
                await self._count_rejection(problem)
        assert order is not None
        if order.status not in FINAL:
            if self.live is not None:
                await self._execute_live(intent, order.status)
            else:
                await self._fill_paper(intent, entry, others)
        crash_point("before_ack")
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
        self._observe_order(intent)  # the paper "broker call"
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
        self._record_fill(intent, tick, price, f"PAPER-{cid}", from_status="new")

    def _record_fill(self, intent: OrderIntent, tick: Tick, price: int, broker_id: str, from_status: str) -> None:
        """One transaction: order traded, fill, tracker opened/closed, events in the outbox."""
        cid = intent.correlation_id
        now = self.ctx.clock.now_ns()
        fields = {"correlation_id": cid, "position_id": intent.position_id, "kind": intent.kind}
        with self.ledger.transaction():
            cur = self.ledger.get_order(cid)
            if cur is not None and cur.status != "traded":
                self.ledger.set_order_status(cid, "traded", broker_order_id=broker_id,
                                             filled_qty=intent.quantity, avg_price_paise=price)
            self.ledger.record_fill(fill_id=f"F-{cid}", correlation_id=cid, broker_order_id=broker_id,
                                    side=intent.side, quantity=intent.quantity, price_paise=price,
                                    ts_event=tick.ts_event, tick_id=tick.tick_id)
            self._queue("orders.events", core.filled_event(intent, tick, price, broker_id, now))
            tr = self.ledger.get_tracker(intent.position_id)
            if intent.kind == "entry":
                if tr is not None and tr.status == "pending":  # sync may have settled it already
                    self.ledger.activate_tracker(intent.position_id, entry_price_paise=price,
                                                 quantity=intent.quantity, entry_tick_id=tick.tick_id,
                                                 ts_entry=tick.ts_event)
                self._queue("positions", core.opened_event(intent, tick, price, now))
            elif tr is not None and tr.status != "active":
                log.warning("exit fill for a position no longer active (settled by sync?)",
                            extra={"fields": {**fields, "tracker_status": tr.status}})
            else:
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

    def _observe_order(self, intent: OrderIntent) -> None:
        """Tick-to-order latency: from the feed building the originating tick to the broker call."""
        if intent.ts_origin:
            self.metrics.observe(f"tick_to_order_{intent.kind}", max(0, time.time_ns() - intent.ts_origin) / 1e6)

    async def _execute_live(self, intent: OrderIntent, status: str) -> None:
        assert self.live is not None
        cid = intent.correlation_id
        now = self.ctx.clock.now_ns()
        fields = {"correlation_id": cid, "position_id": intent.position_id, "kind": intent.kind}
        payload = self.live.payload(intent)
        if not self.live.orders_enabled:
            with self.ledger.transaction():
                self.ledger.set_order_status(cid, "dry_run", payload=payload, reason="orders disabled")
                if intent.kind == "entry":
                    self.ledger.cancel_tracker(intent.position_id, "dry run: orders disabled")
                self._queue("orders.events", core.dry_run_event(intent, payload, now))
            log.warning("dry run: order not sent (orders disabled)", extra={"fields": {
                **fields, "outcome": "dry_run", "payload": payload}})
            return
        state = None
        order_id = ""
        if status != "new":
            # We may have sent it before a crash: the broker decides, never a blind resubmit.
            state = await self.live.lookup(cid)
            if state is None and status != "submitting":
                self._reject(intent, f"order was {status} and the broker has no such order; not resubmitted")
                return
            log.info("recovered order state", extra={"fields": {**fields, "found": state is not None}})
        if state is None:
            if status == "new":
                self.ledger.set_order_status(cid, "submitting", payload=payload)
            self._observe_order(intent)
            crash_point("after_row")
            try:
                outcome = await self._submit_with_backoff(intent, payload)
            except BrokerAuthError as exc:
                self._reject(intent, f"broker authentication failed: {exc}")
                await self._halt(f"broker authentication failed ({exc.code}): trading halted")
                return
            except BrokerRejected as exc:
                self._reject(intent, f"broker refused the order: {exc}")
                await self._count_rejection(str(exc))
                return
            crash_point("after_call")
            if outcome.kind == "not_found":
                self.ledger.set_order_status(cid, "in_doubt", reason="POST in doubt; broker has no such order")
                self._reject(intent, "order POST in doubt and the broker has no such order; not resubmitted")
                return
            order_id = outcome.order_id
            broker_status = outcome.order_status.upper()
            self._advance(cid, broker_status, order_id)
            with self.ledger.transaction():
                self._queue("orders.events", core.accepted_event(intent, order_id, broker_status, now))
            log.info("order placed", extra={"fields": {**fields, "order_id": order_id, "status": broker_status,
                                                       "outcome": outcome.kind}})
        else:
            order_id = state.order_id
        final = state if state is not None and state.final else await self.live.wait_final(
            cid, order_id, lambda: self.ctx.stopping)
        if final.status == "TRADED":
            tick = await self._latest_tick_marker(final.ts_ns())
            self._advance(cid, "TRADED", final.order_id, final.filled_qty or intent.quantity, final.avg_price_paise, record=False)
            self._record_fill(intent, tick, final.avg_price_paise, final.order_id, from_status="live")
        elif final.status == "REJECTED":
            self._reject(intent, f"broker rejected: {final.reason or 'no reason given'}", final.order_id)
            await self._count_rejection(final.reason)
        else:
            reason = f"broker status {final.status}: {final.reason}"
            with self.ledger.transaction():
                self._advance(cid, final.status, final.order_id)
                if intent.kind == "entry":
                    self.ledger.cancel_tracker(intent.position_id, reason)
                self._queue("orders.events", core.cancelled_event(intent, reason, intent.ts_event, intent.tick_id, now))

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

    def _advance(self, cid: str, broker_status: str, order_id: str, filled: int = 0, avg: int = 0,
                 record: bool = True) -> None:
        """Move the order to the broker's status (skipping moves the table already made)."""
        target = STATUS_MAP.get(broker_status.upper(), "pending")
        current = self.ledger.get_order(cid)
        if current is None or current.status == target or target == "traded":
            return
        extra: dict[str, Any] = {"broker_order_id": order_id}
        if filled:
            extra.update(filled_qty=filled, avg_price_paise=avg)
        self.ledger.set_order_status(cid, target, **extra)

    def _reject(self, intent: OrderIntent, reason: str, order_id: str = "") -> None:
        cid = intent.correlation_id
        with self.ledger.transaction():
            cur = self.ledger.get_order(cid)
            if cur is not None and cur.status not in FINAL:
                self.ledger.set_order_status(cid, "rejected", reason=reason[:500],
                                             **({"broker_order_id": order_id} if order_id else {}))
            if intent.kind == "entry":
                tr = self.ledger.get_tracker(intent.position_id)
                if tr is not None and tr.status == "pending":
                    self.ledger.cancel_tracker(intent.position_id, reason[:200])
            self._queue("orders.events", core.rejected_event(intent, reason, self.ctx.clock.now_ns()))
        log.warning("order rejected", extra={"fields": {"correlation_id": cid, "position_id": intent.position_id,
                                                        "kind": intent.kind, "outcome": "rejected", "reason": reason}})

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
