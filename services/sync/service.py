"""Sync shell: a reconciliation pass on start and every ``sync.interval_s``.

Live mode, during market hours (IST 09:15–15:30 of a trading day by ``ctx.clock``, the wall
clock unless a test injects one; outside them the service idles and says so):

1. read the broker's order book, trade book, positions and funds (``DhanRest`` from the env:
   ``DHAN_REST_URL``, ``DHAN_CLIENT_ID``, ``DHAN_ACCESS_TOKEN``), in that order, each under a
   deadline; a failure stops the reading and the pass reports it (nothing is read as "flat");
2. read the books (pending/active trackers, open orders, and the orders and fill rows of their
   positions) — after the broker, see ``core``;
3. ``core.reconcile_live`` lists the differences and the actions;
4. each action is applied in one Postgres transaction together with its events in the outbox
   (the executor's pattern), logged, and the outbox is then published idempotently by msg_id
   (a crash between the two loses nothing: the next relay, here or in the executor, publishes);
5. the report (differences, actions with their outcome, ok) goes to ``sync_reports``.

Paper mode keeps the ledger's internal consistency checks (``core.reconcile_paper``), ungated.
:meth:`SyncService.run_pass` with ``force=True`` skips the market-hours gate: ``scalper sync
--force`` (:func:`run_once`) and the tests use exactly that path.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any, TypeVar

import msgspec
from redis.exceptions import RedisError

from services.sync import core
from services.sync.model import (
    ActivateTracker,
    Books,
    BrokerFunds,
    BrokerOrder,
    BrokerPosition,
    BrokerReports,
    BrokerTrade,
    CancelTracker,
    Change,
    CloseTracker,
    MoveOrder,
    OpenTracker,
    RecordFill,
    SetQuantity,
    SyncResult,
    SyncRules,
)
from shared import streamids, wire
from shared.bus import Commit
from shared.calendar import is_trading_day as calendar_trading_day
from shared.clock import Clock
from shared.config import Config
from shared.dhan import rest as dhan
from shared.errors import BrokerError, BusError, ScalperError, StoreError
from shared.runtime import Context, Service
from shared.store.db import connect
from shared.store.ledger import Ledger
from shared.store.rows import FillRow

log = logging.getLogger("sync")

REPORT_TIMEOUT_S = 45.0
"""Deadline for one broker report, retries included (the REST client retries 5xx/timeouts)."""
OPEN_ORDER_STATUSES = ("new", "submitting", "in_doubt", "transit", "pending", "part_traded")
OUTBOX_CHUNK = 1000
T = TypeVar("T")


class PassReport(msgspec.Struct, kw_only=True):
    """What one pass did: skipped by the gate (``ran`` false) or the result and outcomes."""

    mode: str
    ran: bool
    gate: str = ""
    seconds_to_open: float = 0.0
    result: SyncResult | None = None
    outcomes: list[dict[str, Any]] = msgspec.field(default_factory=list)
    report_id: int = 0

    @property
    def ok(self) -> bool:
        if self.result is None:
            return True
        return self.result.ok and all(o["outcome"] == "applied" for o in self.outcomes)


class SyncService(Service):
    name = "sync"
    inputs = ()

    def __init__(
        self,
        ctx: Context,
        *,
        rest: dhan.DhanRest | None = None,
        rules: SyncRules | None = None,
        report_timeout_s: float = REPORT_TIMEOUT_S,
        is_trading_day: Callable[[date], bool] | None = None,
    ) -> None:
        super().__init__(ctx)
        env = ctx.config.env
        self.mode = env.mode
        self.ledger = Ledger(connect(env.database_url, env.db_schema, application_name="sync"))
        self._own_rest = rest is None and self.mode == "live"
        self.rest = rest if rest is not None or self.mode != "live" else dhan.DhanRest.from_env(env)
        self.rules = rules or SyncRules()
        self.report_timeout_s = report_timeout_s
        self.is_trading_day = is_trading_day or calendar_trading_day
        self.passes = 0
        self.last_ok: bool | None = None
        self.gate = ""

    async def start(self) -> None:
        if self.mode == "live":
            await self._relay_outbox()  # events a crash left unpublished

    # -- the pass ------------------------------------------------------------------------

    async def run_pass(self, *, force: bool = False) -> PassReport:
        """One reconciliation. Live mode outside market hours does nothing unless ``force``."""
        now = self.ctx.clock.now_ns()
        if self.mode == "live" and not force:
            hours = core.market_hours(now, self.is_trading_day)
            if not hours.open and self.gate != hours.state:  # say so once, not every nap
                log.info("sync idle: " + hours.reason, extra={"fields": {
                    "outcome": "idle", "seconds_to_open": round(hours.seconds_to_open)}})
            self.gate = hours.state
            if not hours.open:
                return PassReport(mode=self.mode, ran=False, gate=hours.reason,
                                  seconds_to_open=hours.seconds_to_open)
        if self.mode == "live":
            reports = await self._broker_reports()
            books = self._books()
            result = core.reconcile_live(books, reports, now_ns=now, tick_id=await self._tick_marker(),
                                         rules=self.rules)
        else:
            active = self.ledger.active_trackers()
            orders = {t.position_id: self.ledger.orders_for_position(t.position_id) for t in active}
            result = core.reconcile_paper(active, orders)
        report = PassReport(mode=self.mode, ran=True, result=result,
                            outcomes=[self._apply(a) for a in result.actions])
        if result.actions:
            await self._relay_outbox()
        self._log_pass(report)
        report.report_id = self.ledger.add_sync_report(
            ts=now, mode=self.mode, differences=msgspec.to_builtins(result.differences),
            actions=report.outcomes, ok=report.ok)  # fmt: skip
        self.passes += 1
        self.last_ok = report.ok
        return report

    def _books(self) -> Books:
        """Pending and active trackers, open orders, and every order and fill of the positions
        with an open order (an intent's other slices, the position's entry and exit fills)."""
        trackers = self.ledger.trackers_in_status(["pending", "active"])
        open_orders = self.ledger.orders_in_status(OPEN_ORDER_STATUSES)
        pids = sorted({o.position_id for o in open_orders})
        fills: dict[str, list[FillRow]] = {}
        for pid in pids:
            for kind in ("entry", "exit"):
                for f in self.ledger.fills_for_position(pid, kind):
                    fills.setdefault(f.correlation_id, []).append(f)
        return Books(trackers=trackers, open_orders=open_orders, fills=fills,
                     orders=[o for pid in pids for o in self.ledger.orders_for_position(pid)])  # fmt: skip

    async def _broker_reports(self) -> BrokerReports:
        """The four reports, the order book first (see ``core``); stops at the first failure."""
        assert self.rest is not None
        rest = self.rest
        failures: list[str] = []

        async def fetch(what: str, call: Callable[[], Awaitable[T]]) -> T | None:
            if failures:
                return None
            try:
                async with asyncio.timeout(self.report_timeout_s):
                    return await call()
            except BrokerError as exc:
                failures.append(f"{what}: {type(exc).__name__} {exc.code}: {exc}".replace("  ", " "))
            except TimeoutError:
                failures.append(f"{what}: no answer within {self.report_timeout_s:g}s")
            return None

        orders = await fetch("order book", rest.order_book)
        trades = await fetch("trade book", rest.trade_book)
        positions = await fetch("positions", rest.positions)
        funds = await fetch("funds", rest.fund_limit)
        return BrokerReports(
            orders=None if orders is None else [_order(o) for o in orders],
            trades=None if trades is None else [_trade(t) for t in trades],
            positions=None if positions is None else [_position(p) for p in positions],
            funds=None if funds is None else BrokerFunds(
                available_paise=funds.available_balance_paise,
                utilized_paise=funds.utilized_amount_paise),
            failures=failures,
        )  # fmt: skip

    async def _tick_marker(self) -> str:
        """The latest ``ticks`` entry: what this pass opens or closes is stamped with it."""
        try:
            last = await self.ctx.redis.xrevrange(self.ctx.keys.stream("ticks"), count=1)
        except RedisError as exc:
            log.warning("cannot read the ticks stream", extra={"fields": {"error": str(exc)}})
            return streamids.ZERO
        if not last:
            return streamids.ZERO
        eid = last[0][0]
        return eid.decode() if isinstance(eid, bytes) else str(eid)

    # -- applying ------------------------------------------------------------------------

    def _apply(self, action: core.Action) -> dict[str, Any]:
        """Apply one action atomically with its events in the outbox; log it; its outcome."""
        outcome = "applied"
        try:
            with self.ledger.transaction():
                for change in action.changes:
                    self._change(change)
                for e in action.events:
                    fields = wire.encode(e.msg)
                    self.ledger.add_outbox(e.stream, e.msg.msg_id, fields["type"].decode(),
                                           fields["data"])
        except StoreError as exc:
            outcome = f"failed: {exc}"
        summary = {**action.summary(), "outcome": outcome}
        level = logging.WARNING if outcome == "applied" else logging.ERROR
        log.log(level, "sync action", extra={"fields": summary})
        return summary

    def _change(self, c: Change) -> None:
        led = self.ledger
        match c:
            case OpenTracker():
                opened = led.open_tracker(
                    position_id=c.position_id, index_key=c.index_key, segment=c.segment,
                    security_id=c.security_id, symbol=c.symbol, option_type=c.option_type,
                    quantity=c.quantity, status="active", entry_price_paise=c.entry_price_paise,
                    entry_tick_id=c.entry_tick_id, ts_entry=c.ts_entry, external=True,
                    paper=False, meta=c.meta)  # fmt: skip
                current = None if opened else led.get_tracker(c.position_id)
                if current is not None and current.status != "active":
                    raise StoreError(f"position {c.position_id}: id already used by a "
                                     f"{current.status} tracker")
            case ActivateTracker():
                led.activate_tracker(c.position_id, entry_price_paise=c.entry_price_paise,
                                     quantity=c.quantity, entry_tick_id=c.entry_tick_id,
                                     ts_entry=c.ts_entry)
            case CloseTracker():
                led.close_tracker(c.position_id, exit_price_paise=c.exit_price_paise,
                                  exit_tick_id=c.exit_tick_id, ts_exit=c.ts_exit, reason=c.reason,
                                  pnl_paise=c.pnl_paise, charges_paise=c.charges_paise,
                                  quantity=c.quantity)
            case SetQuantity():
                current = led.get_tracker(c.position_id)
                if current is None or current.quantity != c.from_quantity:
                    raise StoreError(f"position {c.position_id}: quantity changed meanwhile "
                                     f"({current.quantity if current else 'no tracker'})")
                led.update_tracker_quantity(c.position_id, c.quantity)
            case CancelTracker():
                led.cancel_tracker(c.position_id, c.reason)
            case MoveOrder():
                order = led.get_order(c.correlation_id)
                if order is None or order.status != c.from_status:
                    raise StoreError(f"order {c.correlation_id}: status changed meanwhile "
                                     f"({order.status if order else 'no order'})")
                extra = {"filled_qty": c.filled_qty, "avg_price_paise": c.avg_price_paise} if c.filled_qty else {}
                led.set_order_status(c.correlation_id, c.status, broker_order_id=c.broker_order_id,
                                     reason=c.reason, **extra)
            case RecordFill():
                # Only the quantity the books lacked when the pass read them (see core): a fill
                # recorded since (a live executor) would make this one count twice.
                held = sum(f.quantity for f in led.fills_for(c.correlation_id))
                if held != c.recorded_qty:
                    raise StoreError(f"order {c.correlation_id}: fills changed meanwhile ({held} "
                                     f"recorded, {c.recorded_qty} expected)")
                recorded = led.record_fill(
                    fill_id=c.fill_id, correlation_id=c.correlation_id,
                    broker_order_id=c.broker_order_id, side=c.side, quantity=c.quantity,
                    price_paise=c.price_paise, ts_event=c.ts_event, tick_id=c.tick_id)  # fmt: skip
                if not recorded:
                    raise StoreError(f"order {c.correlation_id}: fill {c.fill_id} already recorded")

    async def _relay_outbox(self) -> None:
        """Publish unpublished outbox rows (idempotent by msg_id), then mark them published."""
        while True:
            rows = self.ledger.unpublished_outbox(OUTBOX_CHUNK)
            if not rows:
                return
            c = Commit()
            for row in rows:
                c.emit_raw(row.stream, row.msg_id, row.type, bytes(row.data).decode())
            try:
                await self.ctx.bus.commit(self.name, c)
            except BusError as exc:
                log.error("outbox publish failed; the next relay retries",
                          extra={"fields": {"rows": len(rows), "error": str(exc)}})
                return
            self.ledger.mark_published([r.id for r in rows])
            if len(rows) < OUTBOX_CHUNK:
                return

    def _log_pass(self, report: PassReport) -> None:
        result = report.result
        assert result is not None
        for d in result.differences:
            log.log(logging.INFO if d.resolved else logging.WARNING, "sync difference",
                    extra={"fields": msgspec.to_builtins(d)})
        fields = {"mode": self.mode, "differences": len(result.differences),
                  "actions": len(result.actions), **result.info,
                  "outcome": "ok" if report.ok else ("failed" if result.failures else "differences")}
        if result.failures:
            log.error("sync pass failed: broker reports incomplete; nothing changed",
                      extra={"fields": {**fields, "failures": result.failures}})
        else:
            log.log(logging.INFO if report.ok else logging.WARNING, "sync pass",
                    extra={"fields": fields})

    # -- the loop ------------------------------------------------------------------------

    async def idle(self) -> None:
        """A pass on start and every ``sync.interval_s``; outside market hours, a nap."""
        wait_s: float = self.ctx.config.algo.sync.interval_s
        try:
            report = await self.run_pass()
            if not report.ran:
                wait_s = min(wait_s, max(report.seconds_to_open, 1.0))
        except ScalperError as exc:  # Postgres or Redis down: say so, try again next interval
            log.error("sync pass aborted", extra={"fields": {"error": f"{type(exc).__name__}: {exc}"}})
            self.last_ok = False
        if not self.ctx.burst:
            await self.ctx.sleep(wait_s)

    def info(self) -> dict[str, Any]:
        return {"passes": self.passes, "last_ok": self.last_ok, "market": self.gate}

    async def stop(self) -> None:
        if self._own_rest and self.rest is not None:
            await self.rest.aclose()
        self.ledger.close()


# --------------------------------------------------------------------------- broker -> core


def _order(o: dhan.Order) -> BrokerOrder:
    return BrokerOrder(
        order_id=o.order_id, correlation_id=o.correlation_id, status=o.order_status.upper(),
        side=o.transaction_type.upper(), segment=o.exchange_segment, security_id=int(o.security_id),
        quantity=o.quantity, filled_qty=o.filled_qty, avg_price_paise=o.average_traded_price_paise,
        reason=o.oms_error_description, time=o.update_time or o.exchange_time)  # fmt: skip


def _trade(t: dhan.Trade) -> BrokerTrade:
    return BrokerTrade(
        order_id=t.order_id, trade_id=t.exchange_trade_id, side=t.transaction_type.upper(),
        segment=t.exchange_segment, security_id=int(t.security_id), quantity=t.traded_quantity,
        price_paise=t.traded_price_paise, time=t.exchange_time or t.create_time)  # fmt: skip


def _position(p: dhan.Position) -> BrokerPosition:
    return BrokerPosition(
        segment=p.exchange_segment, security_id=int(p.security_id), symbol=p.trading_symbol,
        option_type=core.OPTION_TYPES.get(p.drv_option_type.upper(), ""),
        product_type=p.product_type, net_qty=p.net_qty, buy_avg_paise=p.buy_avg_paise,
        sell_avg_paise=p.sell_avg_paise, day_buy_qty=p.day_buy_qty, day_sell_qty=p.day_sell_qty)  # fmt: skip


# --------------------------------------------------------------------------- one-shot (CLI)


async def run_once(
    config: Config, *, force: bool, rest: dhan.DhanRest | None = None, clock: Clock | None = None
) -> PassReport:
    """One pass in its own connections: what ``scalper sync [--force]`` runs."""
    from shared import bus as busmod

    redis = busmod.connect(config.env.redis_url)
    try:
        svc = SyncService(Context(config, redis, "sync", clock=clock), rest=rest)
        try:
            await svc.start()
            return await svc.run_pass(force=force)
        finally:
            await svc.stop()
    finally:
        await redis.aclose()


def render(report: PassReport) -> str:
    """The pass for a terminal: every difference and every action, with its outcome."""
    if not report.ran:
        return f"sync ({report.mode}): not run — {report.gate} (use --force to run anyway)"
    result = report.result
    assert result is not None
    lines = [f"sync ({report.mode}): {len(result.differences)} difference(s), "
             f"{len(report.outcomes)} action(s), {'ok' if report.ok else 'NOT OK'}"
             f" (report {report.report_id})"]  # fmt: skip
    if "funds_available_paise" in result.info:
        lines.append(f"  funds available: ₹{result.info['funds_available_paise'] / 100:,.2f}")
    for f in result.failures:
        lines.append(f"  FAILED  {f}")
    for d in result.differences:
        lines.append(f"  difference  {d.kind}{'' if d.resolved else ' (unresolved)'}: {d.detail}")
    for o in report.outcomes:
        lines.append(f"  action  {o['kind']} [{o['outcome']}]: {o['reason']}")
        if o["events"]:
            lines.append(f"          events {', '.join(o['events'])}")
    return "\n".join(lines)
