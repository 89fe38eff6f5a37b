"""Entry guard: the rules a signal must pass before it may become an order intent.

Every refusal is a :class:`Refusal` with the rule's name and a reason carrying its numbers.
Time is the signal's event time; the guard's own memory (signals already handled, exits for
cooldowns, trades per day) lives in :class:`GuardState` so it can be snapshotted.

Order of the checks (signal level, then per candidate contract):

    duplicate_signal, index_disabled, trading_state, entry_window, funds_unknown,
    max_trades_per_day, daily_loss_limit, max_concurrent_positions, max_same_side /
    pyramid_too_young / pyramid_not_in_profit / pyramid_pnl_unknown, index_cooldown;
    then symbol_cooldown, stale_ltp (see :meth:`EntryGuard.resolve_ltp`), sizing.

Pyramiding (a second same-side position on an index, when ``max_same_side`` allows it) needs
every held same-side position to be at least ``pyramid_min_age_s`` old *by its entry time* and
in profit. (The original measured age from ``updated_at``, which every PnL update touches.)
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import Literal

import msgspec

from services.entries.sizing import band_for, exact
from shared.clock import NS_PER_S, hhmm_to_minutes, ist_day, ist_minute_of_day
from shared.config import CapitalConfig, EntriesConfig, IndexConfig, RiskConfig
from shared.messages import Signal, Tick
from shared.models import OpenPosition
from shared.types import NS_PER_MS, paise_to_rupees_str

TradingState = Literal["ACTIVE", "REDUCING", "HALTED"]

_SIGNAL_MEMORY_NS = 3 * 86_400 * NS_PER_S
_EXIT_MEMORY_NS = 86_400 * NS_PER_S


class EntryContext(msgspec.Struct, frozen=True, kw_only=True):
    """Market and account state as of a signal, gathered by the shell.

    - ``open_positions``: positions held as of the signal's tick.
    - ``position_pnl_paise``: current unrealised PnL by position id, where known (otherwise the
      core values the position at its option's latest tick).
    - ``realised_pnl_today_paise`` / ``realised_pnl_by_index_paise``: realised PnL of the IST day.
    - ``available_capital_paise``: money available for a new entry; ``None`` = funds unknown.
    - ``day_start_capital_paise``: base of the daily loss limit (default: available capital).
    - ``rest_ltp_paise``: LTPs fetched over REST by security id, used when the tick is stale.
    """

    trading_state: TradingState
    open_positions: list[OpenPosition] = msgspec.field(default_factory=list)
    position_pnl_paise: dict[str, int] = msgspec.field(default_factory=dict)
    realised_pnl_today_paise: int = 0
    realised_pnl_by_index_paise: dict[str, int] = msgspec.field(default_factory=dict)
    available_capital_paise: int | None = None
    day_start_capital_paise: int | None = None
    rest_ltp_paise: dict[int, int] = msgspec.field(default_factory=dict)


class Refusal(msgspec.Struct, frozen=True):
    rule: str
    reason: str


class GuardState(msgspec.Struct, kw_only=True):
    """The guard's memory (mutable; snapshotted by the core)."""

    signals: dict[str, int] = msgspec.field(default_factory=dict)  # msg_id -> ts_event
    symbol_exits: dict[str, int] = msgspec.field(default_factory=dict)  # symbol -> ts_exit
    index_exits: dict[str, int] = msgspec.field(default_factory=dict)  # index -> ts_exit
    trades_day: str = ""
    trades_today: int = 0


class EntryGuard:
    """Signal- and contract-level entry rules over a :class:`GuardState`."""

    def __init__(
        self,
        cfg: EntriesConfig,
        risk: RiskConfig,
        capital: CapitalConfig,
        state: GuardState | None = None,
    ) -> None:
        self.cfg = cfg
        self.risk = risk
        self.capital = capital
        self.state = state if state is not None else GuardState()

    # ---- memory

    def seen(self, signal_id: str) -> bool:
        return signal_id in self.state.signals

    def remember_signal(self, signal_id: str, ts_event: int) -> None:
        signals = self.state.signals
        signals[signal_id] = ts_event
        horizon = ts_event - _SIGNAL_MEMORY_NS
        for sid in [s for s, ts in signals.items() if ts < horizon]:
            del signals[sid]

    def trades_on(self, ts_event: int) -> int:
        """Entries accepted on the IST day of ``ts_event``."""
        return self.state.trades_today if self.state.trades_day == _day(ts_event) else 0

    def record_entry(self, ts_event: int) -> None:
        day = _day(ts_event)
        if self.state.trades_day != day:
            self.state.trades_day, self.state.trades_today = day, 0
        self.state.trades_today += 1

    def record_exit(self, symbol: str, index: str, ts_exit: int) -> None:
        for book, key in ((self.state.symbol_exits, symbol), (self.state.index_exits, index)):
            book[key] = max(ts_exit, book.get(key, ts_exit))
            horizon = ts_exit - _EXIT_MEMORY_NS
            for k in [k for k, ts in book.items() if ts < horizon]:
                del book[k]

    # ---- signal-level rules

    def check_signal(
        self,
        signal: Signal,
        ctx: EntryContext,
        index: IndexConfig | None,
        pnl_of: Callable[[OpenPosition], int | None],
    ) -> Refusal | None:
        """The first signal-level rule that refuses ``signal``, or ``None``."""
        if self.seen(signal.msg_id):
            return Refusal("duplicate_signal", f"signal {signal.msg_id} was already handled")
        if index is None or not index.enabled:
            return Refusal("index_disabled", f"index {signal.index} is not configured or disabled")
        return (
            self.check_trading_state(ctx)
            or self.check_window(signal.ts_event)
            or self.check_funds(ctx)
            or self.check_daily_limits(signal, ctx)
            or self.check_exposure(signal, ctx, index, pnl_of)
            or self.check_index_cooldown(index, signal.ts_event)
        )

    def check_trading_state(self, ctx: EntryContext) -> Refusal | None:
        if ctx.trading_state != "ACTIVE":
            return Refusal(
                "trading_state", f"trading state {ctx.trading_state}: entries need ACTIVE"
            )
        return None

    def check_window(self, ts_event: int) -> Refusal | None:
        minute = ist_minute_of_day(ts_event)
        start, end = self.cfg.window_start_hhmm, self.cfg.window_end_hhmm
        if not hhmm_to_minutes(start) <= minute < hhmm_to_minutes(end):
            return Refusal(
                "entry_window",
                f"event time {minute // 60:02d}:{minute % 60:02d} IST outside entry window "
                f"{start}-{end}",
            )
        return None

    def check_funds(self, ctx: EntryContext) -> Refusal | None:
        if ctx.available_capital_paise is None:
            return Refusal("funds_unknown", "available capital unknown: no entry without funds")
        return None

    def check_daily_limits(self, signal: Signal, ctx: EntryContext) -> Refusal | None:
        done = self.trades_on(signal.ts_event)
        if done >= self.cfg.max_trades_per_day:
            return Refusal(
                "max_trades_per_day",
                f"{done} entries today >= max_trades_per_day {self.cfg.max_trades_per_day}",
            )
        base = ctx.day_start_capital_paise
        if base is None:
            base = ctx.available_capital_paise or 0
        pct = Fraction(0)
        pct_text = ""
        if self.risk.daily_loss_limit_pct > 0:
            pct, pct_text = (
                exact(self.risk.daily_loss_limit_pct),
                f"risk {self.risk.daily_loss_limit_pct:g}",
            )
        if self.capital.sizing == "bands":
            ix, band = band_for(base, self.capital.bands)
            if band.daily_max_loss_pct > 0 and (pct == 0 or exact(band.daily_max_loss_pct) < pct):
                pct, pct_text = (
                    exact(band.daily_max_loss_pct),
                    f"band {ix} {band.daily_max_loss_pct:g}",
                )
        refusal = _loss_refusal(-ctx.realised_pnl_today_paise, base, pct, f"today ({pct_text})")
        if refusal:
            return refusal
        ix_pct = self.risk.daily_loss_limit_pct_by_index.get(signal.index)
        if ix_pct and signal.index in ctx.realised_pnl_by_index_paise:
            loss = -ctx.realised_pnl_by_index_paise[signal.index]
            return _loss_refusal(loss, base, exact(ix_pct), f"on {signal.index} ({ix_pct:g})")
        return None

    def check_exposure(
        self,
        signal: Signal,
        ctx: EntryContext,
        index: IndexConfig,
        pnl_of: Callable[[OpenPosition], int | None],
    ) -> Refusal | None:
        held = len(ctx.open_positions)
        if held >= self.cfg.max_concurrent_positions:
            return Refusal(
                "max_concurrent_positions",
                f"{held} open positions >= max_concurrent_positions "
                f"{self.cfg.max_concurrent_positions}",
            )
        side = "CE" if signal.direction == "bullish" else "PE"
        same = [p for p in ctx.open_positions if p.index == index.key and p.option_type == side]
        if len(same) >= index.max_same_side:
            return Refusal(
                "max_same_side",
                f"{len(same)} open {index.key} {side} position(s) >= max_same_side "
                f"{index.max_same_side}",
            )
        min_age_ns = self.cfg.pyramid_min_age_s * NS_PER_S
        for p in same:
            age_ns = signal.ts_event - p.ts_entry
            if age_ns < min_age_ns:
                return Refusal(
                    "pyramid_too_young",
                    f"held {p.position_id} entered {age_ns / NS_PER_S:.0f}s ago < "
                    f"pyramid_min_age_s {self.cfg.pyramid_min_age_s}",
                )
            pnl = pnl_of(p)
            if pnl is None:
                return Refusal("pyramid_pnl_unknown", f"PnL of held {p.position_id} unknown")
            if pnl <= 0:
                return Refusal(
                    "pyramid_not_in_profit",
                    f"held {p.position_id} PnL {paise_to_rupees_str(pnl)} is not a profit",
                )
        return None

    def check_index_cooldown(self, index: IndexConfig, ts_event: int) -> Refusal | None:
        return _cooldown(
            "index_cooldown",
            index.key,
            self.state.index_exits.get(index.key),
            ts_event,
            index.cooldown_s,
        )

    # ---- contract-level rules

    def check_symbol_cooldown(
        self, symbol: str, index: IndexConfig, ts_event: int
    ) -> Refusal | None:
        return _cooldown(
            "symbol_cooldown",
            symbol,
            self.state.symbol_exits.get(symbol),
            ts_event,
            index.cooldown_s,
        )

    def resolve_ltp(
        self, ts_event: int, tick: Tick | None, rest_ltp_paise: int | None
    ) -> tuple[int, str] | Refusal:
        """(price, source) from a tick no older than ``ltp_max_age_ms`` in event time, else the
        shell's REST LTP, else a refusal."""
        max_age_ms = self.cfg.ltp_max_age_ms
        if tick is not None and tick.ltp_paise > 0:
            age_ms = (ts_event - tick.ts_event) // NS_PER_MS
            if age_ms <= max_age_ms:
                return tick.ltp_paise, f"tick {tick.tick_id} ({max(age_ms, 0)} ms old)"
            tick_text = f"tick {age_ms} ms old > ltp_max_age_ms {max_age_ms}"
        else:
            tick_text = "no tick"
        if rest_ltp_paise is not None and rest_ltp_paise > 0:
            return rest_ltp_paise, f"REST LTP ({tick_text})"
        return Refusal("stale_ltp", f"{tick_text} and no REST LTP")


def _day(ts_event: int) -> str:
    return ist_day(ts_event).isoformat()


def _loss_refusal(loss_paise: int, base_paise: int, pct: Fraction, where: str) -> Refusal | None:
    if pct <= 0 or loss_paise <= 0 or loss_paise < base_paise * pct:
        return None
    limit = int(base_paise * pct)
    return Refusal(
        "daily_loss_limit",
        f"realised loss {paise_to_rupees_str(loss_paise)} {where} >= limit "
        f"{paise_to_rupees_str(limit)} of {paise_to_rupees_str(base_paise)}",
    )


def _cooldown(
    rule: str, key: str, ts_exit: int | None, ts_event: int, cooldown_s: int
) -> Refusal | None:
    if ts_exit is None or cooldown_s <= 0:
        return None
    # An exit stamped after the signal (its fill time and the signal's tick time come from
    # different clocks in live mode) counts as an exit at the signal: inside any cooldown.
    elapsed_ns = max(0, ts_event - ts_exit)
    if elapsed_ns < cooldown_s * NS_PER_S:
        return Refusal(
            rule,
            f"{key} exited {elapsed_ns / NS_PER_S:.0f}s before the signal < cooldown {cooldown_s}s",
        )
    return None
