"""Wiring: load the session and instruments, start the three servers and the clock.

Use from tests::

    async with run_simulator(session=path, instruments=csv, speed=SPEED_PAUSED) as sim:
        sim.rest_url, sim.feed_url, sim.order_ws_url   # bound ports in sim.ports
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec

from services.feed.replay import load_session
from shared.clock import fmt_ist
from shared.instruments import parse_scrip_master
from shared.types import rupees_to_paise

from .app import RestApp
from .clock import SessionClock, parse_speed, speed_label
from .decisions import FEED_PING_INTERVAL_S, SOD_LIMIT_RUPEES
from .faults import Faults, parse_spec
from .feed import FeedHub
from .httpserver import HttpServer
from .market import Market
from .order_ws import OrderUpdateHub
from .orders import OrderBook
from .ratelimit import RateLimiter

log = logging.getLogger("dhansim")

DEFAULT_TOKEN = "dhansim-access-token"
DEFAULT_CLIENT_ID = "1000000001"
FAULT_TIMER_INTERVAL_S = 0.1


class SimConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Everything the simulator needs.

    ``speed``: N× real time, ``"max"`` (or ``inf``), ``"paused"`` (or 0); see :mod:`dhansim.clock`.
    """

    session: str
    instruments: str
    speed: float | str = 1.0
    host: str = "127.0.0.1"
    rest_port: int = 0
    feed_port: int = 0
    order_ws_port: int = 0
    token: str = DEFAULT_TOKEN
    client_id: str = DEFAULT_CLIENT_ID
    faults: str = ""
    """A fault spec (see :mod:`dhansim.faults`) applied at start."""
    funds_rupees: float = SOD_LIMIT_RUPEES
    rate_limits: bool = True
    from_hhmm: str | None = None
    to_hhmm: str | None = None
    ping_interval_s: float = FEED_PING_INTERVAL_S


def _check_loopback(host: str) -> None:
    if host == "localhost":
        return
    try:
        if ipaddress.ip_address(host).is_loopback:
            return
    except ValueError:
        pass
    raise ValueError(f"the simulator binds loopback addresses only, not {host!r}")


class Simulator:
    def __init__(self, config: SimConfig) -> None:
        _check_loopback(config.host)
        self.config = config
        rec = load_session(config.session, from_hhmm=config.from_hhmm, to_hhmm=config.to_hhmm)
        self.trading_day = rec.trading_day
        self.market = Market(rec, parse_scrip_master(config.instruments))
        speed = parse_speed(config.speed)
        self.clock = SessionClock([int(t) for t in rec.c["ts_recv_ns"]], speed)
        self.faults = Faults(parse_spec(config.faults))
        self.limiter = RateLimiter(enabled=config.rate_limits)
        self.book = OrderBook(
            self.clock, self.market, rupees_to_paise(config.funds_rupees), self.trading_day
        )
        self.order_hub = OrderUpdateHub(token=config.token, client_id=config.client_id)
        self.book.listeners.append(self.order_hub.publish)
        self.feed = FeedHub(
            self.market,
            self.faults,
            token=config.token,
            client_id=config.client_id,
            on_change=self.clock.poke,
            ping_interval_s=config.ping_interval_s,
        )
        self.clock.backpressure = self.feed
        self.clock.add_listener(self.market.on_tick)
        self.clock.add_listener(self.book.on_tick)
        self.clock.add_listener(self.feed.on_tick)
        self.rest = HttpServer(RestApp(self).handle)
        self.ports: dict[str, int] = {}
        self._tasks: list[asyncio.Task[None]] = []

    # -------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        host = self.config.host
        self.ports = {
            "rest": await self.rest.start(host, self.config.rest_port),
            "feed": await self.feed.start(host, self.config.feed_port),
            "order_ws": await self.order_hub.start(host, self.config.order_ws_port),
        }
        self._tasks = [
            asyncio.create_task(self.clock.run(), name="dhansim-clock"),
            asyncio.create_task(self._fault_timers(), name="dhansim-fault-timers"),
        ]
        log.info(
            "dhansim up: rest %s feed %s order-ws %s, %d ticks of %s at speed %s",
            self.rest_url,
            self.feed_base_url,
            self.order_ws_url,
            self.clock.n,
            self.trading_day,
            speed_label(self.clock.speed),
        )

    async def stop(self) -> None:
        self.clock.stop()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.rest.stop()
        await self.feed.stop()
        await self.order_hub.stop()

    # -------------------------------------------------------------------- addresses

    @property
    def rest_url(self) -> str:
        """Base URL like ``https://api.dhan.co/v2``: ``http://127.0.0.1:PORT/v2``."""
        return f"http://{self.config.host}:{self.ports['rest']}/v2"

    @property
    def feed_base_url(self) -> str:
        return f"ws://{self.config.host}:{self.ports['feed']}"

    @property
    def feed_url(self) -> str:
        """The full feed URL with the configured credentials in the query."""
        c = self.config
        return f"{self.feed_base_url}/?version=2&token={c.token}&clientId={c.client_id}&authType=2"

    @property
    def order_ws_url(self) -> str:
        return f"ws://{self.config.host}:{self.ports['order_ws']}"

    @property
    def control_url(self) -> str:
        return f"http://{self.config.host}:{self.ports['rest']}/__sim"

    # -------------------------------------------------------------------- control

    def state(self) -> dict[str, Any]:
        clock = self.clock
        now = clock.now_ns()
        return {
            "trading_day": self.trading_day,
            "speed": speed_label(clock.speed),
            "cursor": clock.cursor,
            "total_ticks": clock.n,
            "finished": clock.finished,
            "now_ns": now,
            "now_ist": fmt_ist(now, with_date=True),
            "session_start_ns": clock.ts_ns[0],
            "session_end_ns": clock.ts_ns[-1],
            "orders": len(self.book.orders),
            "trades": len(self.book.trades),
            "feed_connections": len(self.feed.conns),
            "order_ws_connections": len(self.order_hub.subscribers),
            "requests": dict(self.limiter.allowed),
            "rate_limited": dict(self.limiter.refused),
            "ports": self.ports,
            "faults": self.faults.snapshot(),
        }

    async def apply_faults(self, changes: dict[str, Any]) -> dict[str, int]:
        """Merge fault settings and run the requested actions; counts of sockets affected."""
        actions = self.faults.update(changes)
        done: dict[str, int] = {}
        if actions.feed_disconnect is not None:
            done["feed_disconnected"] = await self.feed.disconnect_all(actions.feed_disconnect)
        if actions.drop_feed:
            done["feed_dropped"] = await self.feed.disconnect_all(None)
        if actions.drop_order_ws:
            done["order_ws_dropped"] = self.order_hub.drop_all()
        if done:
            log.info("fault actions: %s", done)
        return done

    async def _fault_timers(self) -> None:
        last: dict[str, float] = {}

        def due(name: str, period_s: float) -> bool:
            if period_s <= 0:
                last.pop(name, None)
                return False
            now = time.monotonic()
            start = last.setdefault(name, now)
            if now - start >= period_s:
                last[name] = now
                return True
            return False

        while True:
            await asyncio.sleep(FAULT_TIMER_INTERVAL_S)
            s = self.faults.settings
            if due("feed_disconnect", s.feed_disconnect_every_s):
                await self.feed.disconnect_all(s.feed_disconnect_reason)
            if due("drop_feed", s.drop_feed_every_s):
                await self.feed.disconnect_all(None)
            if due("drop_order_ws", s.drop_order_ws_every_s):
                self.order_hub.drop_all()


@contextlib.asynccontextmanager
async def run_simulator(config: SimConfig | None = None, **kwargs: Any) -> AsyncIterator[Simulator]:
    """Start a simulator (``SimConfig`` or its fields as keywords); stop it on exit."""
    sim = Simulator(config or SimConfig(**kwargs))
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()
