"""Entries shell: a signal, the market and the books as of its tick, in; a decision and maybe an
entry intent, out.

For a signal caused by tick T the shell (1) in replay mode waits until exits has processed every
tick before T and the executor has published every fill at or before T (``shared.gates``);
(2) feeds the core every tick up to T (an as-of read of the ``ticks`` stream, never beyond T);
(3) reads positions and realised PnL as of T from the ledger; (4) asks the core. Each signal is
committed on its own (decisions, intent, feed-control requests, ack, checkpoint) before the next
one is considered.

Live mode only, between (2) and (4): the broker's option chain (:class:`BrokerChainFeed`), fetched
on demand with a cache. A signal whose index has no chain snapshot within
``broker_chain_max_age_s`` of it fetches one (nearest expiry) if the call slot is free (one call
per ``broker_chain_min_interval_s``, all indices together), bounded by ``broker_chain_timeout_s``
and never retried; otherwise, or on any broker error, the signal is decided at once on
Black-Scholes from ticks. On demand rather than a background refresher: calls happen only when a
decision needs them, the rate limit sits in one visible place, and the snapshot is stamped with
the signal's event time, so its age is judged in event time like every other input. The snapshot
is a cache, not checkpointed: after a restart the next signal fetches again. Replay never calls
the broker.

Live mode, the available balance: fetched between signals and used by a signal while current
(:class:`services.entries.funds.FundsCache`: young enough and fetched after the last entry
intent), else fetched on the signal's path. LTPs fetched over REST for picks without a fresh tick
are reused by later signals under the tick rule (:class:`services.entries.ltpcache.RestLtpCache`).
"""

from __future__ import annotations

import heapq
import logging
import time
from typing import Any

import msgspec

from services.entries.brokerchain import BrokerChainFeed
from services.entries.core import EntriesCore, EntryContext
from services.entries.funds import FundsCache
from services.entries.ltpcache import RestLtpCache
from shared import gates, streamids, wire
from shared.bus import Batch, Commit, Entry, dead_letter, group_state
from shared.clock import ist_day
from shared.dhan.rest import DhanRest
from shared.dhan.retry import RetryPolicy
from shared.errors import BrokerError
from shared.messages import FeedSubscribe, FeedUnsubscribe, Signal, Tick, make_msg_id
from shared.runtime import Context, Service
from shared.store.db import connect
from shared.store.ledger import Ledger
from shared.types import rupees_to_paise

log = logging.getLogger("entries")
CHUNK = 5000
IDLE_CHUNKS = 4
FUNDS_IDLE_TIMEOUT_S = 1.0  # a balance fetched between signals: one attempt, at most this long
"""Ticks read ahead per idle call, in CHUNKs: bounded so a signal arriving meanwhile waits little."""


class _Checkpoint(msgspec.Struct):
    core: bytes
    tick_cursor: str
    closed_seen: list[str]


class EntriesService(Service):
    name = "entries"
    inputs = ("signals",)

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        env = ctx.config.env
        self.ledger = Ledger(connect(env.database_url, env.db_schema, application_name="entries"))
        self.core: EntriesCore | None = None
        self.tick_cursor = streamids.ZERO
        self.closed_seen: set[str] = set()
        self.ticks_decoder = wire.StreamDecoder("ticks")
        self.intents = 0
        self.heap: list[tuple[tuple[int, int], int, Entry]] = []
        self.rest = DhanRest(env.dhan_rest_url, env.dhan_client_id, env.access_token) if env.mode == "live" else None
        self.chain_feed: BrokerChainFeed | None = None
        chain_cfg = ctx.config.algo.option_chain
        if self.rest is not None and not ctx.replay and chain_cfg.broker_chain:
            chain_rest = DhanRest(env.dhan_rest_url, env.dhan_client_id, env.access_token,
                                  retry=RetryPolicy(attempts=1), timeout_s=chain_cfg.broker_chain_timeout_s)
            self.chain_feed = BrokerChainFeed(chain_rest, chain_cfg, ctx.clock.now_ns)
        self.funds = FundsCache(ctx.config.algo.entries.funds_max_age_s, time.monotonic)
        self._funds_rest: DhanRest | None = None
        if self.rest is not None:  # between signals: one attempt, a short wait, never in a signal's way
            self._funds_rest = DhanRest(env.dhan_rest_url, env.dhan_client_id, env.access_token,
                                        retry=RetryPolicy(attempts=1), timeout_s=FUNDS_IDLE_TIMEOUT_S)
        self.funds_counts = {"on_path": 0, "cached": 0, "idle_fetches": 0, "idle_errors": 0}
        self.rest_ltps = RestLtpCache(ctx.config.algo.entries.ltp_max_age_ms)
        self._seq = 0

    async def start(self) -> None:
        algo = self.ctx.config.algo
        instruments = self.ledger.load_instruments()
        self.core = EntriesCore(algo.entries, algo.option_chain, algo.capital, algo.paper, algo.risk,
                                algo.indices, instruments, self.ctx.clock.now_ns)
        raw = await self.ctx.redis.get(self.ctx.keys.checkpoint(self.name))
        if raw:
            cp = msgspec.msgpack.decode(raw, type=_Checkpoint)
            self.core.restore(cp.core)
            self.tick_cursor = cp.tick_cursor
            self.closed_seen = set(cp.closed_seen)
            log.info("restored checkpoint", extra={"fields": {"tick_cursor": self.tick_cursor}})
        log.info("instruments loaded", extra={"fields": {"count": len(instruments)}})

    # -- as-of reads -------------------------------------------------------------------------

    async def _advance_ticks(self, upto: str, commit: Commit, *, exclusive: bool = False,
                             max_chunks: int | None = None) -> None:
        """Feed the core every tick after the cursor up to ``upto`` (included unless
        ``exclusive``), at most ``max_chunks`` reads of ``CHUNK`` ticks when given."""
        assert self.core is not None
        key = self.ctx.keys.stream("ticks")
        hi = f"({upto}" if exclusive else upto
        chunks = 0
        while streamids.less(self.tick_cursor, upto):
            if max_chunks is not None and chunks >= max_chunks:
                break
            chunks += 1
            rows = await self.ctx.redis.xrange(key, min=f"({self.tick_cursor}", max=hi, count=CHUNK)
            if not rows:
                break
            for eid, raw in rows:
                msg = self.ticks_decoder.decode(raw)
                if isinstance(msg, Tick):
                    change = self.core.on_tick(msg)
                    if change is not None:
                        self._feed_control(change, msg, commit)
                self.tick_cursor = eid.decode()
            if len(rows) < CHUNK:
                break

    async def idle(self) -> None:
        """Between signals, read the ticks ahead, so a signal finds the chain view nearly current
        (and the chain window follows spot between signals, not only at them).

        Only ticks before the signals frontier F, and only when every signal is decided (the
        group has nothing undelivered or pending, checked after F is read): the signals service
        publishes a signal and moves F in one commit, so any signal still to come has a tick at
        or after F, and no decision ever sees a tick after its signal's. The cursor, the core
        and any feed-control requests are committed together."""
        if self.core is None or self.heap:
            return
        await self._refresh_funds()
        r, k = self.ctx.redis, self.ctx.keys
        upto = await gates.signals_frontier(r, k)
        if not streamids.less(self.tick_cursor, upto):
            return
        if await group_state(r, k.stream("signals"), self.name) != (0, 0):
            return
        c = Commit()
        before = self.tick_cursor
        await self._advance_ticks(upto, c, exclusive=True, max_chunks=IDLE_CHUNKS)
        if self.tick_cursor != before:
            self._checkpoint(c)
            await self.ctx.bus.commit(self.name, c)

    async def _refresh_funds(self) -> None:
        """Live mode, between signals: fetch the available balance when the cache wants one."""
        if self._funds_rest is None or not self.funds.due():
            return
        started = self.funds.started()
        self.funds_counts["idle_fetches"] += 1
        try:
            balance = (await self._funds_rest.fund_limit()).available_balance_paise
        except BrokerError as exc:  # the next signal fetches on its path
            self.funds_counts["idle_errors"] += 1
            log.warning("funds refresh failed", extra={"fields": {"error": str(exc)}})
            return
        self.funds.store(balance, started)

    def _checkpoint(self, c: Commit) -> None:
        assert self.core is not None
        c.sets[self.ctx.keys.checkpoint(self.name)] = msgspec.msgpack.encode(_Checkpoint(
            core=self.core.snapshot(), tick_cursor=self.tick_cursor, closed_seen=sorted(self.closed_seen)))

    def _feed_control(self, change: Any, tick: Tick, commit: Commit) -> None:
        now = self.ctx.clock.now_ns()
        if change.subscribe:
            commit.emit("feed.control", FeedSubscribe(
                msg_id=make_msg_id("sub", change.index, tick.tick_id), ts_event=tick.ts_event, ts_init=now,
                tick_id=tick.tick_id, segment=change.segment, security_ids=change.subscribe, requester="entries"))
        if change.unsubscribe:
            commit.emit("feed.control", FeedUnsubscribe(
                msg_id=make_msg_id("unsub", change.index, tick.tick_id), ts_event=tick.ts_event, ts_init=now,
                tick_id=tick.tick_id, segment=change.segment, security_ids=change.unsubscribe, requester="entries"))

    async def _wait_upstream(self, signal: Signal) -> None:
        r, k = self.ctx.redis, self.ctx.keys
        await r.set(k.frontier(self.name), signal.tick_id)
        limit = None if self.ctx.replay else self.ctx.config.algo.runtime.upstream_wait_s
        limit = limit if limit is not None else self.ctx.config.algo.entries.replay_wait_timeout_s
        waited, delay = 0.0, 0.001
        while True:
            exits_f = await gates.get_frontier(r, k, "exits")
            if not streamids.less(exits_f, signal.tick_id) and await gates.executor_settled_through(r, k, signal.tick_id):
                return
            if waited >= limit:
                log.warning("upstream not caught up; deciding anyway", extra={"fields": {
                    "signal_id": signal.msg_id, "tick_id": signal.tick_id, "exits_frontier": exits_f,
                    "waited_s": round(waited, 3)}})
                return
            await self.ctx.sleep(delay)
            waited += delay
            delay = min(delay * 2, 0.05)

    async def _broker_inputs(self, signal: Signal) -> tuple[int | None, dict[int, int]]:
        """Live mode: the broker's available balance and REST LTPs for picks whose tick is stale.
        A failed funds call leaves funds unknown (the guard refuses); a failed LTP call leaves
        the stale pick to be refused."""
        assert self.core is not None and self.rest is not None
        capital = self.funds.usable()
        if capital is not None:
            self.funds_counts["cached"] += 1
        else:
            self.funds_counts["on_path"] += 1
            started = self.funds.started()
            try:
                capital = (await self.rest.fund_limit()).available_balance_paise
                self.funds.store(capital, started)
            except BrokerError as exc:
                log.warning("funds unknown", extra={"fields": {"signal_id": signal.msg_id, "error": str(exc)}})
        ltps, missing = self.rest_ltps.split(self.core.rest_ltp_wanted(signal), signal.ts_event)
        if missing:
            seg = self.ctx.config.algo.index(signal.index).options_segment
            try:
                got = await self.rest.ltp({seg: missing})
                fetched = {int(sid): p for (_s, sid), p in got.items() if p > 0}
                self.rest_ltps.store(fetched, signal.ts_event)
                ltps.update(fetched)
            except BrokerError as exc:
                log.warning("REST LTP failed", extra={"fields": {"signal_id": signal.msg_id, "error": str(exc)}})
        return capital, ltps

    def _context(self, signal: Signal, capital: int | None = None, rest_ltp: dict[int, int] | None = None) -> EntryContext:
        assert self.core is not None
        algo = self.ctx.config.algo
        open_positions = self.ledger.positions_asof(signal.tick_id)
        day = ist_day(signal.ts_event).isoformat()
        realised = 0
        by_index: dict[str, int] = {}
        tk = streamids.key(signal.tick_id)
        for t in self.ledger.closed_trades(day):
            if t.exit_tick_key is None or t.exit_tick_key > tk:
                continue
            realised += t.pnl_paise or 0
            by_index[t.index_key] = by_index.get(t.index_key, 0) + (t.pnl_paise or 0)
            if t.position_id not in self.closed_seen:
                self.closed_seen.add(t.position_id)
                self.core.on_position_closed(t.position_id, t.symbol, t.index_key, t.ts_exit or 0)
        state = self.ledger.get_trading_state().state
        if self.ctx.config.env.mode == "paper":
            capital = self.core.paper_available_capital(open_positions)
        return EntryContext(
            trading_state=state,  # type: ignore[arg-type]
            open_positions=open_positions,
            realised_pnl_today_paise=realised,
            realised_pnl_by_index_paise=by_index,
            available_capital_paise=capital,
            day_start_capital_paise=rupees_to_paise(algo.paper.balance_rupees),
            rest_ltp_paise=rest_ltp or {},
        )

    # -- handling ----------------------------------------------------------------------------

    async def handle(self, batch: Batch) -> Commit:
        """Signals are decided in tick order, even when several signals partitions interleave
        on the stream: in replay mode a signal waits until every partition has passed its tick,
        so no signal from an earlier tick can still arrive."""
        for e in batch.entries:
            self._push(e)
        while self.heap:
            await self._pull_more()
            head = self.heap[0][2]
            if self.ctx.replay:
                await self._wait_signals_past(head.msg.tick_id)
                await self._pull_more()
                if self.heap[0][2] is not head:
                    continue
            heapq.heappop(self.heap)
            await self._one(head)
            self.handled += 1
        return Commit()

    def _push(self, e: Entry) -> None:
        self._seq += 1
        heapq.heappush(self.heap, (streamids.parse(e.msg.tick_id or streamids.ZERO), self._seq, e))

    async def _pull_more(self) -> None:
        consumer = self.consumer  # type: ignore[attr-defined]
        b = await consumer.read(block=False)
        for e in b.entries:
            self._push(e)
        if b.dead:
            c = Commit()
            for logical, eid, fields, error in b.dead:
                c.emit("deadletter", dead_letter(self.name, logical, eid, fields, error, self.ctx.clock.now_ns()))
                c.ack(logical, eid)
            await self.ctx.bus.commit(self.name, c)

    async def _wait_signals_past(self, tick_id: str) -> None:
        r, k = self.ctx.redis, self.ctx.keys
        await r.set(k.frontier(self.name), tick_id)  # let exits advance up to this tick meanwhile
        waited, delay = 0.0, 0.001
        limit = self.ctx.config.algo.entries.replay_wait_timeout_s
        while streamids.less(await gates.signals_frontier(r, k), streamids.successor(tick_id)):
            if waited >= limit:
                log.warning("signals partitions not past the tick; deciding anyway",
                            extra={"fields": {"tick_id": tick_id, "waited_s": round(waited, 3)}})
                return
            await self.ctx.sleep(delay)
            waited += delay
            delay = min(delay * 2, 0.05)

    async def _one(self, e: Entry) -> None:
        assert self.core is not None
        c = Commit()
        m = e.msg
        if isinstance(m, Signal):
            await self._wait_upstream(m)
            await self._advance_ticks(m.tick_id, c)
            view = self.core.chain(m.index)
            if self.chain_feed is not None and view is not None:
                await self.chain_feed.refresh(view, m)
            broker = self.rest is not None and not self.core.refused_before_funds(m)
            capital, ltps = (await self._broker_inputs(m)) if broker else (None, {})
            ctx = self._context(m, capital, ltps)
            decisions, intents = self.core.on_signal(m, ctx)
            for d in decisions:
                c.emit("entries.decisions", d)
                log.info("entry decision", extra={"fields": {
                    "signal_id": m.msg_id, "msg_id": d.msg_id, "tick_id": m.tick_id, "rule": d.rule,
                    "reason": d.reason, "outcome": "accepted" if d.accepted else "refused"}})
            for it in intents:
                it = msgspec.structs.replace(it, ts_origin=m.ts_origin)
                c.emit("orders.requests", it)
                self.intents += 1
                self.funds.intent_sent()
        c.ack(e.stream, e.entry_id)
        self._checkpoint(c)
        await self.ctx.bus.commit(self.name, c)

    def info(self) -> dict[str, Any]:
        out: dict[str, Any] = {"intents": self.intents, "tick_cursor": self.tick_cursor}
        if self.rest is not None:
            out["funds"] = dict(self.funds_counts)
        if self.chain_feed is not None:
            out["broker_chain"] = dict(self.chain_feed.counts)
        return out

    async def stop(self) -> None:
        if self.rest is not None:
            await self.rest.aclose()
        if self.chain_feed is not None:
            await self.chain_feed.rest.aclose()
        self.ledger.close()
