"""Entries core: from a signal and the state as of it, to decisions and an entry intent.

Pure and synchronous: no asyncio, Redis or HTTP. Time comes from messages (``ts_event``); the
injected ``now_ns`` only stamps ``ts_init``. The shell feeds every tick up to a signal's
``tick_id`` through :meth:`EntriesCore.on_tick` before it calls :meth:`EntriesCore.on_signal`
with an :class:`EntryContext` gathered as of the same tick.

A signal yields one :class:`EntryDecision` per contract tried (or one for a signal-level
refusal) and at most one :class:`OrderIntent`: the picks are tried in preference order and
the first that passes the contract-level rules enters. Every id is derived from the signal's
``msg_id``, so handling the same signal again produces the same messages — and a signal that
was already handled is refused (``duplicate_signal``) instead of entering twice.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Callable

import msgspec

from services.entries.chain import ChainView, Pick, atm_strike_paise
from services.entries.guard import EntryContext, EntryGuard, GuardState, Refusal, TradingState
from services.entries.sizing import paper_available_capital_paise, size_order
from shared.config import (
    CapitalConfig,
    EntriesConfig,
    IndexConfig,
    OptionChainConfig,
    PaperConfig,
    RiskConfig,
)
from shared.errors import DecodeError
from shared.messages import EntryDecision, OrderIntent, Signal, Tick, make_msg_id
from shared.models import Instrument, OpenPosition
from shared.types import NS_PER_MS, CorrelationId, paise_to_rupees_str

__all__ = [
    "EntriesCore",
    "EntryContext",
    "FeedChange",
    "TradingState",
    "correlation_id_for",
]

SNAPSHOT_VERSION = 1


class FeedChange(msgspec.Struct, frozen=True, kw_only=True):
    """Option subscriptions to change because an index's strike window moved."""

    index: str
    segment: str
    subscribe: list[int]
    unsubscribe: list[int]


class CoreSnapshot(msgspec.Struct, kw_only=True):
    """Everything the core needs to resume after a crash."""

    version: int
    guard: GuardState
    ticks: list[Tick]
    windows: dict[str, list[int]]
    window_keys: dict[str, tuple[str, int]]


def correlation_id_for(intent_msg_id: str) -> CorrelationId:
    """DhanHQ ``correlationId`` of an intent: "E-" + 24 base32 characters of its hash (26 chars,
    within DhanHQ's 30-character ``[A-Za-z0-9 _-]`` limit)."""
    digest = hashlib.sha256(intent_msg_id.encode()).digest()[:15]
    return CorrelationId("E-" + base64.b32encode(digest).decode())


class EntriesCore:
    """Option-chain views, entry guard and sizing for every enabled index."""

    def __init__(
        self,
        cfg_entries: EntriesConfig,
        cfg_chain: OptionChainConfig,
        cfg_capital: CapitalConfig,
        cfg_paper: PaperConfig,
        risk: RiskConfig,
        indices: list[IndexConfig],
        instruments: list[Instrument],
        now_ns: Callable[[], int],
    ) -> None:
        self._cfg = cfg_entries
        self._capital = cfg_capital
        self._paper = cfg_paper
        self._risk = risk
        self._now_ns = now_ns
        self._indices: dict[str, IndexConfig] = {ix.key: ix for ix in indices}
        self._views: dict[str, ChainView] = {
            ix.key: ChainView(ix, instruments, cfg_chain) for ix in indices if ix.enabled
        }
        self._route: dict[tuple[str, int], ChainView] = {}
        for view in self._views.values():
            ix = view.index
            self._route[(ix.segment, ix.security_id)] = view
            for sid in view.option_ids():
                self._route[(ix.options_segment, sid)] = view
        self._guard = EntryGuard(cfg_entries, risk, cfg_capital)
        self._windows: dict[str, list[int]] = {}
        self._window_keys: dict[str, tuple[str, int]] = {}

    # ------------------------------------------------------------------ ticks

    def on_tick(self, tick: Tick) -> FeedChange | None:
        """Update the chain views; a :class:`FeedChange` when an index tick moved its window."""
        view = self._route.get((tick.segment, tick.security_id))
        if view is None:
            return None
        view.on_tick(tick)
        ix = view.index
        if tick.segment != ix.segment or tick.security_id != ix.security_id or tick.ltp_paise <= 0:
            return None
        key = (
            view.expiry_for(tick.ts_event),
            atm_strike_paise(tick.ltp_paise, ix.strike_step_paise),
        )
        if self._window_keys.get(ix.key) == key:
            return None
        self._window_keys[ix.key] = key
        new = view.window(tick.ltp_paise, tick.ts_event)
        old = self._windows.get(ix.key, [])
        self._windows[ix.key] = new
        sub, unsub = sorted(set(new) - set(old)), sorted(set(old) - set(new))
        if not sub and not unsub:
            return None
        return FeedChange(
            index=ix.key, segment=ix.options_segment, subscribe=sub, unsubscribe=unsub
        )

    def subscriptions(self) -> dict[str, list[int]]:
        """The current option window of every index (security ids), e.g. to resubscribe."""
        return {k: list(v) for k, v in self._windows.items()}

    def chain(self, index: str) -> ChainView | None:
        return self._views.get(index)

    # ------------------------------------------------------------------ signals

    def on_signal(
        self, signal: Signal, ctx: EntryContext
    ) -> tuple[list[EntryDecision], list[OrderIntent]]:
        """Decide whether ``signal`` enters; at most one intent.

        The strike is chosen around the latest index tick (the signal's close if the view has
        none yet); the option's price is its latest tick, else ``ctx.rest_ltp_paise``.
        """
        index = self._indices.get(signal.index)
        view = self._views.get(signal.index)
        refusal = self._guard.check_signal(signal, ctx, index, self._pnl_reader(ctx, view))
        if refusal is not None and refusal.rule == "duplicate_signal":
            return [self._decision(signal, refusal.rule, refusal.reason)], []
        self._guard.remember_signal(signal.msg_id, signal.ts_event)
        if refusal is not None:
            return [self._decision(signal, refusal.rule, refusal.reason)], []
        assert index is not None and view is not None
        spot = view.spot.ltp_paise if view.spot is not None else signal.close_paise
        selection = view.select(signal.direction, signal.ts_event, spot)
        if not selection.picks:
            return [self._decision(signal, selection.rule, selection.reason)], []
        capital = ctx.available_capital_paise
        assert capital is not None
        decisions: list[EntryDecision] = []
        for pick in selection.picks:
            outcome = self._try_pick(signal, ctx, index, view, pick, capital)
            if isinstance(outcome, OrderIntent):
                self._guard.record_entry(signal.ts_event)
                decisions.append(
                    self._decision(
                        signal,
                        "accepted",
                        outcome.reason,
                        pick.security_id,
                        intent_id=outcome.msg_id,
                    )
                )
                return decisions, [outcome]
            decisions.append(
                self._decision(
                    signal, outcome.rule, f"{outcome.reason} | {pick.describe()}", pick.security_id
                )
            )
        return decisions, []

    def refused_before_funds(self, signal: Signal) -> bool:
        """Would ``signal`` be refused by a rule checked before the funds (a duplicate, a
        disabled index, outside the entry window)? Then the shell fetches nothing from the
        broker for it: the decision is the same, and a burst of such signals no longer queues
        behind the broker's one-quote-a-second limit."""
        index = self._indices.get(signal.index)
        return (
            self._guard.seen(signal.msg_id)
            or index is None
            or not index.enabled
            or self._guard.check_window(signal.ts_event) is not None
        )

    def rest_ltp_wanted(self, signal: Signal) -> list[int]:
        """Security ids of the contracts ``signal`` would try whose latest tick is missing or
        older than ``ltp_max_age_ms``: the shell may fetch their LTP over REST beforehand."""
        view = self._views.get(signal.index)
        if view is None:
            return []
        spot = view.spot.ltp_paise if view.spot is not None else signal.close_paise
        wanted = []
        for pick in view.select(signal.direction, signal.ts_event, spot).picks:
            tick = view.latest_tick(pick.security_id)
            fresh = (
                tick is not None
                and tick.ltp_paise > 0
                and signal.ts_event - tick.ts_event <= self._cfg.ltp_max_age_ms * NS_PER_MS
            )
            if not fresh:
                wanted.append(pick.security_id)
        return wanted

    def _try_pick(
        self,
        signal: Signal,
        ctx: EntryContext,
        index: IndexConfig,
        view: ChainView,
        pick: Pick,
        capital_paise: int,
    ) -> OrderIntent | Refusal:
        inst = pick.instrument
        refusal = self._guard.check_symbol_cooldown(inst.symbol, index, signal.ts_event)
        if refusal is not None:
            return refusal
        ltp = self._guard.resolve_ltp(
            signal.ts_event,
            view.latest_tick(inst.security_id),
            ctx.rest_ltp_paise.get(inst.security_id),
        )
        if isinstance(ltp, Refusal):
            return ltp
        price, source = ltp
        size = size_order(
            premium_paise=price,
            lot_size=inst.lot_size,
            available_capital_paise=capital_paise,
            capital=self._capital,
            risk=self._risk,
            index=index,
            scale_multiplier=signal.multiplier,
        )
        if size.quantity <= 0:
            return Refusal("sizing", size.reason)
        msg_id = make_msg_id("intent", signal.msg_id, inst.security_id)
        reason = (
            f"{signal.direction} {signal.index}: BUY {size.quantity} {inst.symbol} at "
            f"{paise_to_rupees_str(price)} ({source}) | {pick.describe()} | {size.reason}"
        )
        return OrderIntent(
            msg_id=msg_id,
            ts_event=signal.ts_event,
            ts_init=self._now_ns(),
            tick_id=signal.tick_id,
            kind="entry",
            correlation_id=correlation_id_for(msg_id),
            position_id=make_msg_id("pos", msg_id),
            index=signal.index,
            segment=index.options_segment,
            security_id=inst.security_id,
            symbol=inst.symbol,
            side="BUY",
            quantity=size.quantity,
            lot_size=inst.lot_size,
            ref_price_paise=price,
            reason=reason,
            signal_id=signal.msg_id,
        )

    def _decision(
        self,
        signal: Signal,
        rule: str,
        reason: str,
        security_id: int | None = None,
        intent_id: str = "",
    ) -> EntryDecision:
        parts: tuple[object, ...] = (signal.msg_id, rule)
        if security_id is not None:
            parts += (security_id,)
        return EntryDecision(
            msg_id=make_msg_id("dec", *parts),
            ts_event=signal.ts_event,
            ts_init=self._now_ns(),
            tick_id=signal.tick_id,
            signal_id=signal.msg_id,
            index=signal.index,
            accepted=bool(intent_id),
            rule=rule,
            reason=reason,
            intent_id=intent_id,
        )

    def _pnl_reader(
        self, ctx: EntryContext, view: ChainView | None
    ) -> Callable[[OpenPosition], int | None]:
        """PnL of a held position: the shell's figure, else valued at the option's last tick."""

        def pnl_of(p: OpenPosition) -> int | None:
            if p.position_id in ctx.position_pnl_paise:
                return ctx.position_pnl_paise[p.position_id]
            tick = view.latest_tick(p.security_id) if view is not None else None
            if tick is None or tick.ltp_paise <= 0:
                return None
            return (tick.ltp_paise - p.entry_price_paise) * p.quantity

        return pnl_of

    # ------------------------------------------------------------------ exits and capital

    def on_position_closed(self, position_id: str, symbol: str, index: str, ts_exit: int) -> None:
        """Start the symbol and index cooldowns at ``ts_exit`` (event time)."""
        self._guard.record_exit(symbol, index, ts_exit)

    def paper_available_capital(self, open_positions: list[OpenPosition]) -> int:
        """Paper mode's available capital: the paper balance less premium deployed."""
        return paper_available_capital_paise(self._paper, open_positions)

    # ------------------------------------------------------------------ recovery

    def snapshot(self) -> bytes:
        """msgpack of the handled signals, cooldowns, trades today, latest ticks and windows."""
        ticks = [t for view in self._views.values() for t in view.ticks()]
        return msgspec.msgpack.encode(
            CoreSnapshot(
                version=SNAPSHOT_VERSION,
                guard=self._guard.state,
                ticks=ticks,
                windows=self._windows,
                window_keys=self._window_keys,
            )
        )

    def restore(self, blob: bytes) -> None:
        """Load a :meth:`snapshot` into this (freshly built) core."""
        try:
            snap = msgspec.msgpack.decode(blob, type=CoreSnapshot)
        except msgspec.DecodeError as exc:
            raise DecodeError(f"entries snapshot: {exc}") from exc
        if snap.version != SNAPSHOT_VERSION:
            raise DecodeError(f"entries snapshot: version {snap.version} != {SNAPSHOT_VERSION}")
        self._guard.state = snap.guard
        for tick in snap.ticks:
            view = self._route.get((tick.segment, tick.security_id))
            if view is not None:
                view.on_tick(tick)
        self._windows = {k: list(v) for k, v in snap.windows.items() if k in self._views}
        self._window_keys = {k: v for k, v in snap.window_keys.items() if k in self._views}
