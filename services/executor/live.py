"""The live gateway: DhanHQ orders over REST, fills from the order-update socket (polling while it
is down), exactly once.

An order's row is written (status ``submitting``, with the exact payload) before the HTTP call.
After a crash, an order found in ``submitting`` or ``in_doubt`` is first looked up at the broker
by its correlation id; only an order the broker has never seen is (re)submitted, and an order
whose POST was in doubt and that the broker still does not know is *not* resubmitted: it is
rejected with that reason (the exits service retries an exit with a new correlation id). So no
intent ever produces two broker orders — and an intent sliced at the freeze limit exactly one
per slice, each slice being such an order under its own correlation id.

:meth:`LiveGateway.watch` yields every change of an order's traded quantity or status until it
is final: each socket message is kept (so each PART_TRADED step is seen), and the order is
polled over REST as well (every second, every 0.25 s while the socket is down).

With orders disabled (live mode without ``SCALPER_ORDERS_ENABLED``), nothing is sent: the exact
payload is logged and an ``order.dry_run`` event emitted.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

from shared.clock import IST
from shared.dhan.order_updates import OrderUpdate, OrderUpdateClient
from shared.dhan.rest import DhanRest, Order, PlaceOutcome, order_payload
from shared.errors import BrokerAuthError, BrokerError
from shared.messages import OrderIntent

log = logging.getLogger("executor.live")

FINAL_BROKER = {"TRADED", "REJECTED", "CANCELLED", "EXPIRED"}
POLL_CONNECTED_S = 1.0
POLL_DOWN_S = 0.25
FILL_TIMEOUT_S = 120.0


class BrokerOrderState:
    """What the broker says about one order, from either source (socket or REST)."""

    def __init__(self, status: str, order_id: str, filled_qty: int, avg_price_paise: int,
                 reason: str, exchange_time: str, last_price_paise: int = 0) -> None:
        self.status = status.upper().replace(" ", "_")
        self.order_id = order_id
        self.filled_qty = filled_qty
        self.avg_price_paise = avg_price_paise
        self.reason = reason
        self.exchange_time = exchange_time
        self.last_price_paise = last_price_paise
        """Price of the last trade (order-update socket only; 0 when unknown)."""

    @classmethod
    def of_order(cls, o: Order) -> BrokerOrderState:
        # The last update of a final order is its fill / rejection / cancellation time.
        return cls(o.order_status, o.order_id, o.filled_qty, o.average_traded_price_paise,
                   o.oms_error_description, o.update_time or o.exchange_time)

    @classmethod
    def of_update(cls, u: OrderUpdate) -> BrokerOrderState:
        return cls(u.status, u.order_no, u.traded_qty, u.avg_traded_price_paise or u.traded_price_paise,
                   u.reason_description, u.last_updated_time, u.traded_price_paise)

    def __repr__(self) -> str:
        return (f"BrokerOrderState({self.status}, order {self.order_id}, filled {self.filled_qty} "
                f"@ {self.avg_price_paise})")

    @property
    def final(self) -> bool:
        return self.status in FINAL_BROKER

    def ts_ns(self) -> int:
        """The broker's time of the last change (IST text) as UTC ns; wall time if absent."""
        for fmt in ("%Y-%m-%d %H:%M:%S", "%d/%m/%Y %H:%M:%S"):
            try:
                dt = datetime.strptime(self.exchange_time, fmt).replace(tzinfo=IST)
                return int(dt.timestamp()) * 1_000_000_000
            except (ValueError, TypeError):
                continue
        return time.time_ns()


class LiveGateway:
    def __init__(self, rest: DhanRest, client_id: str, *, orders_enabled: bool,
                 updates: OrderUpdateClient | None = None) -> None:
        self.rest = rest
        self.client_id = client_id
        self.orders_enabled = orders_enabled
        self.updates_client = updates
        self._updates: dict[str, list[BrokerOrderState]] = {}  # correlation id -> unseen socket states
        self._events: dict[str, asyncio.Event] = {}
        self._task: asyncio.Task[None] | None = None

    def payload(self, intent: OrderIntent) -> dict[str, Any]:
        return order_payload(self.client_id, intent.correlation_id, intent.side, intent.segment,
                             intent.security_id, intent.quantity)

    async def start(self) -> None:
        if self.updates_client is not None:
            self._task = asyncio.create_task(self.updates_client.run())

    async def stop(self) -> None:
        if self.updates_client is not None:
            await self.updates_client.stop()
        if self._task is not None:
            self._task.cancel()
        await self.rest.aclose()

    async def on_update(self, u: OrderUpdate) -> None:
        if not u.correlation_id:
            return
        self._updates.setdefault(u.correlation_id, []).append(BrokerOrderState.of_update(u))
        self._events.setdefault(u.correlation_id, asyncio.Event()).set()

    @property
    def socket_up(self) -> bool:
        return self.updates_client is not None and self.updates_client.connected

    async def submit(self, payload: dict[str, Any]) -> PlaceOutcome:
        return await self.rest.place_order_safely(payload)

    async def lookup(self, correlation_id: str) -> BrokerOrderState | None:
        o = await self.rest.get_order_by_correlation(correlation_id)
        return BrokerOrderState.of_order(o) if o is not None else None

    async def watch(self, correlation_id: str, order_id: str,
                    stopping: Callable[[], bool]) -> AsyncIterator[BrokerOrderState]:
        """Yield each change of the order (traded quantity up, or status) until a final state,
        which is yielded last. :class:`BrokerError` if not final within ``FILL_TIMEOUT_S``."""
        deadline = time.monotonic() + FILL_TIMEOUT_S
        ev = self._events.setdefault(correlation_id, asyncio.Event())
        seen: tuple[str, int] | None = None
        filled = 0
        last: BrokerOrderState | None = None
        try:
            while True:
                states = self._updates.pop(correlation_id, [])
                if not any(st.final for st in states):
                    polled = await self._poll(correlation_id, order_id)
                    if polled is not None:
                        states.append(polled)
                for st in states:
                    last = st
                    if st.filled_qty < filled:  # an older report arriving late
                        continue
                    if (st.status, st.filled_qty) != seen or st.final:
                        seen, filled = (st.status, st.filled_qty), st.filled_qty
                        yield st
                    if st.final:
                        return
                if time.monotonic() > deadline:
                    raise BrokerError(f"order {correlation_id} not final after {FILL_TIMEOUT_S:.0f}s "
                                      f"(last status {last.status if last else 'unknown'})")
                if stopping():
                    from shared.runtime import Stopping

                    raise Stopping()
                ev.clear()
                if self._updates.get(correlation_id):
                    continue
                try:
                    async with asyncio.timeout(POLL_CONNECTED_S if self.socket_up else POLL_DOWN_S):
                        await ev.wait()
                except TimeoutError:
                    pass
        finally:
            self._events.pop(correlation_id, None)
            self._updates.pop(correlation_id, None)

    async def _poll(self, correlation_id: str, order_id: str) -> BrokerOrderState | None:
        try:
            o = await self.rest.get_order(order_id) if order_id else await self.rest.get_order_by_correlation(correlation_id)
        except BrokerAuthError:
            raise
        except BrokerError as exc:
            log.warning("order status poll failed", extra={"fields": {"correlation_id": correlation_id,
                                                                      "error": str(exc)}})
            return None
        return BrokerOrderState.of_order(o) if o is not None else None
