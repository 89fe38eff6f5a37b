"""Exits core: tick-driven PnL, high-water marks and the exit rules, with no I/O.

The shell feeds it ``positions`` messages, ticks and clock heartbeats; it answers with
:class:`ExitAction` values (each carrying the ``OrderIntent`` to write) and keeps a
:class:`PnlView` per open position for the Redis PnL hash. Time comes only from messages
(``ts_event``); ``now_ns`` stamps ``ts_init`` and nothing else.

Units, one everywhere: money and prices in integer paise; ``*_pct`` is a fraction of the entry
value (0.152 = 15.2 %), the same unit as ``RiskConfig``. A threshold of 0 turns a rule off
(``sl_pct``, ``tp_pct``, ``emergency_sl_pct``, ``breakeven_after_gain_pct``,
``trail_distance_pct``, ``daily_loss_limit_pct``); a rule left out of ``risk.rule_order`` is off.

High-water mark: the highest LTP since the fill, never below the entry price, updated before the
rules run on the same tick; so ``hwm_pnl >= pnl`` always and a trailing drop is never negative.

Exactly one exit per position: once an exit is emitted the position is *exiting* and emits
nothing more, unless :meth:`ExitsCore.on_exit_rejected` schedules a retry, which is sent with a
new correlation id on the first tick or clock at or after the backoff (event time).

Daily limits (realised + unrealised PnL of the IST trading day of the event time): the global
loss limit (and the optional profit lock) latch the trading state to REDUCING and exit every
position; a per-index loss limit latches that index to REDUCING and exits its positions. Each
latch is recorded in :attr:`ExitsCore.state_changes`. Everything daily resets when the IST day of
the event time moves forward.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from typing import Literal

import msgspec

from shared.clock import fmt_ist, hhmm_to_minutes, ist_day, ist_minute_of_day
from shared.config import IndexConfig, RiskConfig
from shared.messages import (
    Clock,
    OrderIntent,
    PositionClosed,
    PositionOpened,
    SessionEnd,
    Tick,
    make_msg_id,
)
from shared.types import paise_to_rupees_str

TradingState = Literal["ACTIVE", "REDUCING"]
GLOBAL_SCOPE = "global"
_SNAPSHOT_VERSION = 1
_CLOSED_KEEP_DAYS = 7


class PnlView(msgspec.Struct, frozen=True, kw_only=True):
    """One position's PnL as of its last tick (``ts_event``); ``*_pct`` are fractions."""

    position_id: str
    pnl_paise: int
    pnl_pct: float
    ltp_paise: int
    hwm_pnl_paise: int
    hwm_pnl_pct: float
    ts_event: int


class ExitAction(msgspec.Struct, frozen=True, kw_only=True):
    """A decision to sell a whole position; ``intent`` is the message to write."""

    position_id: str
    rule: str
    reason: str
    attempt: int
    intent: OrderIntent


class TradingStateChange(msgspec.Struct, frozen=True, kw_only=True):
    """The trading state of ``scope`` ("global" or an index key) moved to ``state``."""

    scope: str
    state: TradingState
    rule: str
    reason: str
    ts_event: int
    tick_id: str


class _Position(msgspec.Struct, kw_only=True):
    position_id: str
    index: str
    segment: str
    security_id: int
    symbol: str
    quantity: int
    lot_size: int
    entry_price_paise: int
    entry_tick_id: str
    ts_entry: int
    ltp_paise: int
    ts_last: int
    hwm_ltp_paise: int
    last_tick_id: str = ""
    exit_attempt: int = 0  # 0 = not exiting
    exit_rule: str = ""
    exit_reason: str = ""
    retry_at_ns: int | None = None
    retry_backoff_ms: int = 0

    @property
    def exiting(self) -> bool:
        return self.exit_attempt > 0

    @property
    def priced(self) -> bool:
        """Has seen a tick after its fill (price rules need one)."""
        return self.last_tick_id != ""

    @property
    def pnl_paise(self) -> int:
        return (self.ltp_paise - self.entry_price_paise) * self.quantity

    @property
    def hwm_pnl_paise(self) -> int:
        return (self.hwm_ltp_paise - self.entry_price_paise) * self.quantity

    def pct(self, price_diff_paise: int) -> float:
        """A per-unit price difference as a fraction of the entry price."""
        return price_diff_paise / self.entry_price_paise if self.entry_price_paise > 0 else 0.0

    @property
    def pnl_pct(self) -> float:
        return self.pct(self.ltp_paise - self.entry_price_paise)

    @property
    def hwm_pnl_pct(self) -> float:
        return self.pct(self.hwm_ltp_paise - self.entry_price_paise)


class _Breach(msgspec.Struct, kw_only=True):
    rule: str
    reason: str


class _Snapshot(msgspec.Struct, kw_only=True):
    version: int
    day: str
    realised_paise: int
    realised_by_index: dict[str, int]
    closed: dict[str, str]
    breaches: dict[str, _Breach]
    positions: list[_Position]


def _pct(x: float) -> str:
    return f"{x * 100:+.2f}%"


def _rs(paise: int) -> str:
    return paise_to_rupees_str(paise)


def _id_key(tick_id: str) -> tuple[int, int] | None:
    ms, sep, seq = tick_id.partition("-")
    if not (ms.isdigit() and (not sep or seq.isdigit())):
        return None
    return int(ms), int(seq or 0)


def _later(tick_id: str, ts: int, prev_id: str, prev_ts: int) -> bool:
    """Is (tick_id, ts) strictly after (prev_id, prev_ts)? Stream-id order, else event time."""
    a, b = _id_key(tick_id), _id_key(prev_id)
    if a is not None and b is not None:
        return a > b
    return ts > prev_ts


def exit_correlation_id(position_id: str, attempt: int) -> str:
    """Deterministic, ≤ 30 chars of ``[A-Za-z0-9-]``: ``X-<16 hex>-<attempt>``."""
    return f"X-{hashlib.sha256(position_id.encode()).hexdigest()[:16]}-{attempt}"


class ExitsCore:
    """The exit rules for every open position, and the day's PnL limits."""

    def __init__(
        self,
        risk: RiskConfig,
        indices: list[IndexConfig],
        starting_capital_paise: int,
        now_ns: Callable[[], int],
        *,
        retry_base_ms: int = 1_000,
        retry_cap_ms: int = 30_000,
    ) -> None:
        self.risk = risk
        self.indices = [ix.key for ix in indices]
        self.starting_capital_paise = starting_capital_paise
        self._now_ns = now_ns
        self._retry_base_ms = retry_base_ms
        self._retry_cap_ms = retry_cap_ms
        self._time_exit_min = hhmm_to_minutes(risk.time_exit_hhmm)
        self._tiers = sorted(risk.trailing_tiers, key=lambda t: t.trigger_pct)
        self.state_changes: list[TradingStateChange] = []
        self._positions: dict[str, _Position] = {}
        self._day = ""
        self._realised_paise = 0
        self._realised_by_index: dict[str, int] = {}
        self._closed: dict[str, str] = {}  # position id -> IST day it closed
        self._breaches: dict[str, _Breach] = {}  # scope -> latched daily limit

    # ------------------------------------------------------------------ state, views

    @property
    def trading_state(self) -> TradingState:
        return "REDUCING" if GLOBAL_SCOPE in self._breaches else "ACTIVE"

    @property
    def index_states(self) -> dict[str, TradingState]:
        """Every configured index: REDUCING when its own or the global limit latched."""
        glob = GLOBAL_SCOPE in self._breaches
        return {k: "REDUCING" if glob or k in self._breaches else "ACTIVE" for k in self.indices}

    @property
    def day_pnl_paise(self) -> int:
        """Realised + unrealised PnL of the current IST trading day."""
        return self._realised_paise + sum(p.pnl_paise for p in self._positions.values())

    def take_state_changes(self) -> list[TradingStateChange]:
        """Return and clear the trading-state changes recorded since the last call."""
        out, self.state_changes = self.state_changes, []
        return out

    def is_exiting(self, position_id: str) -> bool:
        pos = self._positions.get(position_id)
        return pos is not None and pos.exiting

    def instruments(self) -> list[tuple[str, int]]:
        """(segment, security_id) of every open position, for tick subscriptions."""
        return sorted({(p.segment, p.security_id) for p in self._positions.values()})

    def pnl_views(self) -> list[PnlView]:
        return [
            PnlView(
                position_id=p.position_id,
                pnl_paise=p.pnl_paise,
                pnl_pct=p.pnl_pct,
                ltp_paise=p.ltp_paise,
                hwm_pnl_paise=p.hwm_pnl_paise,
                hwm_pnl_pct=p.hwm_pnl_pct,
                ts_event=p.ts_last,
            )
            for p in self._ordered()
        ]

    def snapshot(self) -> bytes:
        """Everything that must survive a restart (HWMs, exiting flags, daily state), msgpack."""
        return msgspec.msgpack.encode(
            _Snapshot(
                version=_SNAPSHOT_VERSION,
                day=self._day,
                realised_paise=self._realised_paise,
                realised_by_index=self._realised_by_index,
                closed=self._closed,
                breaches=self._breaches,
                positions=self._ordered(),
            )
        )

    def restore(self, data: bytes) -> None:
        """Replace the state with a :meth:`snapshot`; config comes from the constructor."""
        snap = msgspec.msgpack.decode(data, type=_Snapshot)
        if snap.version != _SNAPSHOT_VERSION:
            raise ValueError(f"exits snapshot version {snap.version}, expected {_SNAPSHOT_VERSION}")
        self._day = snap.day
        self._realised_paise = snap.realised_paise
        self._realised_by_index = dict(snap.realised_by_index)
        self._closed = dict(snap.closed)
        self._breaches = dict(snap.breaches)
        self._positions = {p.position_id: p for p in snap.positions}

    # ------------------------------------------------------------------ inputs

    def on_position_opened(self, msg: PositionOpened) -> None:
        """Track a new position; a redelivered or already-closed one is ignored."""
        self._roll_day(msg.ts_event, msg.tick_id)
        pid = msg.position_id
        if pid in self._positions or pid in self._closed or msg.quantity <= 0:
            return
        self._positions[pid] = _Position(
            position_id=pid,
            index=msg.index,
            segment=msg.segment,
            security_id=msg.security_id,
            symbol=msg.symbol,
            quantity=msg.quantity,
            lot_size=msg.lot_size,
            entry_price_paise=msg.entry_price_paise,
            entry_tick_id=msg.entry_tick_id,
            ts_entry=msg.ts_entry,
            ltp_paise=msg.entry_price_paise,
            ts_last=msg.ts_entry,
            hwm_ltp_paise=msg.entry_price_paise,
        )

    def on_position_adjusted(self, position_id: str, quantity: int) -> None:
        """A correction from sync: the broker's quantity is the truth."""
        pos = self._positions.get(position_id)
        if pos is not None and quantity > 0:
            pos.quantity = quantity

    def restore_hwm(self, position_id: str, hwm_ltp_paise: int) -> None:
        """Raise a position's high-water LTP to a persisted value (rebuild after losing Redis)."""
        pos = self._positions.get(position_id)
        if pos is not None:
            pos.hwm_ltp_paise = max(pos.hwm_ltp_paise, hwm_ltp_paise)

    def hwm_ltp_paise(self, position_id: str) -> int | None:
        pos = self._positions.get(position_id)
        return pos.hwm_ltp_paise if pos is not None else None

    def on_position_closed(self, msg: PositionClosed) -> None:
        """Forget the position; its realised PnL counts toward the day if it closed today."""
        self._roll_day(msg.ts_event, msg.tick_id)
        pid = msg.position_id
        if pid in self._closed:
            return
        self._closed[pid] = self._day
        self._positions.pop(pid, None)
        if ist_day(msg.ts_exit).isoformat() == self._day:
            self._realised_paise += msg.pnl_paise
            self._realised_by_index[msg.index] = (
                self._realised_by_index.get(msg.index, 0) + msg.pnl_paise
            )
        self._check_limits(msg.ts_event, msg.tick_id)

    def on_tick(self, tick: Tick) -> list[ExitAction]:
        """Update the positions on this instrument, then run every rule; exits to emit."""
        self._roll_day(tick.ts_event, tick.tick_id)
        fresh = {p.position_id for p in self._ordered() if self._apply_tick(p, tick)}
        self._check_limits(tick.ts_event, tick.tick_id)
        return self._sweep(tick.ts_event, tick.tick_id, fresh)

    def on_clock(self, msg: Clock) -> list[ExitAction]:
        """Run the time-driven rules (time exit, daily limits, due retries) with no new price."""
        self._roll_day(msg.ts_event, msg.tick_id)
        self._check_limits(msg.ts_event, msg.tick_id)
        return self._sweep(msg.ts_event, msg.tick_id, set())

    def on_session_end(self, msg: SessionEnd) -> list[ExitAction]:
        """Square off: every position still open when its session ends (a replay cut with
        ``--to``, or the end of a trading day) is exited at that moment."""
        self._roll_day(msg.ts_event, msg.tick_id)
        out = []
        for pos in self._ordered():
            if not pos.exiting:
                reason = f"session_end: {msg.trading_day} ended with the position open at ltp {_rs(pos.ltp_paise)}"
                out.append(self._start_exit(pos, "session_end", reason, msg.ts_event, msg.tick_id))
        return out

    def catch_up(self, position_id: str, ticks: Iterable[Tick]) -> list[ExitAction]:
        """Replay the ticks since the fill for a position learnt late; stop at its first exit.

        Ticks of other instruments, and ticks at or before the fill or already applied, are
        skipped, so catching up and then receiving the same ticks live is harmless. Only this
        position's exit is returned; if a daily limit latches on the way, the other positions
        exit on the next ``on_tick`` / ``on_clock``.
        """
        pos = self._positions.get(position_id)
        if pos is None:
            return []
        for tick in ticks:
            if pos.exiting:
                break
            self._roll_day(tick.ts_event, tick.tick_id)
            if not self._apply_tick(pos, tick):
                continue
            self._check_limits(tick.ts_event, tick.tick_id)
            hit = self._evaluate(pos, tick.ts_event, fresh=True)
            if hit is not None:
                return [self._start_exit(pos, *hit, tick.ts_event, tick.tick_id)]
        return []

    def on_exit_rejected(
        self, position_id: str, ts_event: int, correlation_id: str = ""
    ) -> int | None:
        """Schedule a retry of a rejected exit; returns the event time (ns) it becomes due.

        Backoff doubles per attempt from ``retry_base_ms`` up to ``retry_cap_ms``. A rejection
        for another attempt's ``correlation_id`` (when given), or for a position that is not
        exiting or already has a retry scheduled, is ignored (returns None).
        """
        pos = self._positions.get(position_id)
        if pos is None or not pos.exiting or pos.retry_at_ns is not None:
            return None
        if correlation_id and correlation_id != exit_correlation_id(position_id, pos.exit_attempt):
            return None
        backoff_ms = min(self._retry_base_ms * 2 ** (pos.exit_attempt - 1), self._retry_cap_ms)
        pos.retry_backoff_ms = backoff_ms
        pos.retry_at_ns = ts_event + backoff_ms * 1_000_000
        return pos.retry_at_ns

    # ------------------------------------------------------------------ internals

    def _ordered(self) -> list[_Position]:
        return sorted(self._positions.values(), key=lambda p: (p.ts_entry, p.position_id))

    def _apply_tick(self, pos: _Position, tick: Tick) -> bool:
        """Move the position's LTP and HWM to this tick; False if the tick is not news for it."""
        if tick.security_id != pos.security_id or tick.segment != pos.segment:
            return False
        if tick.ltp_paise <= 0 or tick.ts_event < pos.ts_entry:
            return False
        if pos.entry_tick_id and not _later(
            tick.tick_id, tick.ts_event, pos.entry_tick_id, pos.ts_entry
        ):
            return False
        if pos.last_tick_id and not _later(
            tick.tick_id, tick.ts_event, pos.last_tick_id, pos.ts_last
        ):
            return False
        pos.ltp_paise = tick.ltp_paise
        pos.ts_last = tick.ts_event
        pos.last_tick_id = tick.tick_id
        pos.hwm_ltp_paise = max(pos.hwm_ltp_paise, tick.ltp_paise)
        return True

    def _sweep(self, ts_event: int, tick_id: str, fresh: set[str]) -> list[ExitAction]:
        out: list[ExitAction] = []
        for pos in self._ordered():
            if pos.exiting:
                if pos.retry_at_ns is not None and ts_event >= pos.retry_at_ns:
                    out.append(self._retry_exit(pos, ts_event, tick_id))
                continue
            hit = self._evaluate(pos, ts_event, fresh=pos.position_id in fresh)
            if hit is not None:
                out.append(self._start_exit(pos, *hit, ts_event, tick_id))
        return out

    def _evaluate(self, pos: _Position, ts_event: int, fresh: bool) -> tuple[str, str] | None:
        """The first rule in ``rule_order`` that fires, as (rule, reason); price rules need
        a fresh tick of the position's own instrument."""
        for rule in self.risk.rule_order:
            if rule == "daily_loss":
                breach = self._breaches.get(GLOBAL_SCOPE) or self._breaches.get(pos.index)
                if breach is not None:
                    return breach.rule, f"{breach.reason}; at ltp {_rs(pos.ltp_paise)}"
            elif rule == "time_exit":
                if ist_minute_of_day(ts_event) >= self._time_exit_min:
                    return rule, (
                        f"time_exit: {fmt_ist(ts_event)} IST >= {self.risk.time_exit_hhmm}"
                        f" at ltp {_rs(pos.ltp_paise)}, pnl {_pct(pos.pnl_pct)}"
                    )
            elif fresh and pos.priced:
                reason = self._price_rule(rule, pos)
                if reason is not None:
                    return rule, reason
        return None

    def _trailing_armed(self, pos: _Position) -> bool:
        mode = self.risk.trailing_mode
        if mode == "direct":
            return pos.hwm_pnl_pct >= self.risk.trail_arm_pct
        if mode == "tiered":
            return bool(self._tiers) and pos.hwm_pnl_pct >= self._tiers[0].trigger_pct
        return False

    def _price_rule(self, rule: str, pos: _Position) -> str | None:
        r = self.risk
        pnl, hwm, ltp = pos.pnl_pct, pos.hwm_pnl_pct, _rs(pos.ltp_paise)
        if rule == "emergency_sl" and r.emergency_sl_pct > 0 and pnl <= -r.emergency_sl_pct:
            return f"emergency_sl: pnl {_pct(pnl)} <= {_pct(-r.emergency_sl_pct)} at ltp {ltp}"
        if rule == "stop_loss" and r.sl_pct > 0 and pnl <= -r.sl_pct:
            return f"stop_loss: pnl {_pct(pnl)} <= {_pct(-r.sl_pct)} at ltp {ltp}"
        if rule == "take_profit" and r.tp_pct > 0 and pnl >= r.tp_pct:
            if r.suspend_tp_while_trailing and self._trailing_armed(pos):
                return None
            return f"take_profit: pnl {_pct(pnl)} >= {_pct(r.tp_pct)} at ltp {ltp}"
        if rule == "breakeven":
            be = r.breakeven_after_gain_pct
            if be and hwm >= be and pnl <= 0:
                return (
                    f"breakeven: pnl {_pct(pnl)} <= +0.00% after a high of {_pct(hwm)}"
                    f" (locks from {_pct(be)}) at ltp {ltp}"
                )
        if rule == "trailing":
            return self._trailing_rule(pos)
        return None

    def _trailing_rule(self, pos: _Position) -> str | None:
        r = self.risk
        pnl, hwm, ltp = pos.pnl_pct, pos.hwm_pnl_pct, _rs(pos.ltp_paise)
        if r.trailing_mode == "direct":
            # One exact division of integer paise, so the drop is never negative.
            drop = pos.pct(pos.hwm_ltp_paise - pos.ltp_paise)
            if r.trail_distance_pct > 0 and hwm >= r.trail_arm_pct and drop >= r.trail_distance_pct:
                return (
                    f"trailing: pnl {_pct(pnl)} is {drop * 100:.2f}% below the high {_pct(hwm)}"
                    f" (distance {r.trail_distance_pct * 100:.2f}%, armed at"
                    f" {_pct(r.trail_arm_pct)}) at ltp {ltp}"
                )
        elif r.trailing_mode == "tiered":
            reached = [t for t in self._tiers if hwm >= t.trigger_pct]
            if reached and pnl <= reached[-1].lock_pct:
                tier = reached[-1]
                return (
                    f"trailing: pnl {_pct(pnl)} <= lock {_pct(tier.lock_pct)}"
                    f" (tier {_pct(tier.trigger_pct)} reached, high {_pct(hwm)}) at ltp {ltp}"
                )
        return None

    def _intent(
        self, pos: _Position, reason: str, ts_event: int, tick_id: str, attempt: int
    ) -> OrderIntent:
        parts: tuple[object, ...] = (
            (pos.position_id,) if attempt == 1 else (pos.position_id, attempt)
        )
        return OrderIntent(
            msg_id=make_msg_id("exit", *parts),
            ts_event=ts_event,
            ts_init=self._now_ns(),
            tick_id=tick_id,
            kind="exit",
            correlation_id=exit_correlation_id(pos.position_id, attempt),
            position_id=pos.position_id,
            index=pos.index,
            segment=pos.segment,
            security_id=pos.security_id,
            symbol=pos.symbol,
            side="SELL",
            quantity=pos.quantity,
            lot_size=pos.lot_size,
            ref_price_paise=pos.ltp_paise,
            reason=reason,
        )

    def _start_exit(
        self, pos: _Position, rule: str, reason: str, ts_event: int, tick_id: str
    ) -> ExitAction:
        pos.exit_attempt = 1
        pos.exit_rule = rule
        pos.exit_reason = reason
        intent = self._intent(pos, reason, ts_event, tick_id, 1)
        return ExitAction(
            position_id=pos.position_id, rule=rule, reason=reason, attempt=1, intent=intent
        )

    def _retry_exit(self, pos: _Position, ts_event: int, tick_id: str) -> ExitAction:
        pos.exit_attempt += 1
        pos.retry_at_ns = None
        reason = (
            f"{pos.exit_reason}; retry {pos.exit_attempt} after a rejection"
            f" (backoff {pos.retry_backoff_ms / 1000:g} s), ltp now {_rs(pos.ltp_paise)}"
        )
        intent = self._intent(pos, reason, ts_event, tick_id, pos.exit_attempt)
        return ExitAction(
            position_id=pos.position_id,
            rule=pos.exit_rule,
            reason=reason,
            attempt=pos.exit_attempt,
            intent=intent,
        )

    def _roll_day(self, ts_event: int, tick_id: str) -> None:
        day = ist_day(ts_event).isoformat()
        if day <= self._day:
            return
        if self._day:
            reason = f"new trading day {day}: daily limits reset"
            for scope, breach in sorted(self._breaches.items()):
                self._record(scope, "ACTIVE", breach.rule, reason, ts_event, tick_id)
        self._day = day
        self._realised_paise = 0
        self._realised_by_index = {}
        self._breaches = {}
        oldest = ist_day(ts_event - _CLOSED_KEEP_DAYS * 86_400 * 1_000_000_000).isoformat()
        self._closed = {k: d for k, d in self._closed.items() if d >= oldest}

    def _record(
        self, scope: str, state: TradingState, rule: str, reason: str, ts_event: int, tick_id: str
    ) -> None:
        if state == "REDUCING":
            self._breaches[scope] = _Breach(rule=rule, reason=reason)
        change = TradingStateChange(
            scope=scope, state=state, rule=rule, reason=reason, ts_event=ts_event, tick_id=tick_id
        )
        self.state_changes.append(change)

    def _check_limits(self, ts_event: int, tick_id: str) -> None:
        """Latch the global and per-index daily limits (realised + unrealised, this IST day)."""
        r = self.risk
        if "daily_loss" not in r.rule_order:
            return
        cap = self.starting_capital_paise
        of_cap = f"of {_rs(cap)})"
        if GLOBAL_SCOPE not in self._breaches:
            pnl = self.day_pnl_paise
            limit = round(r.daily_loss_limit_pct * cap)
            lock = round(r.daily_profit_lock_rupees * 100) if r.daily_profit_lock_rupees else 0
            if limit > 0 and pnl <= -limit:
                why = f"day pnl {_rs(pnl)} <= -{_rs(limit)} ({r.daily_loss_limit_pct:.2%} {of_cap}"
                self._record(
                    GLOBAL_SCOPE, "REDUCING", "daily_loss", f"daily_loss: {why}", ts_event, tick_id
                )
            elif lock > 0 and pnl >= lock:
                why = f"daily_profit_lock: day pnl {_rs(pnl)} >= {_rs(lock)}"
                self._record(GLOBAL_SCOPE, "REDUCING", "daily_profit_lock", why, ts_event, tick_id)
        for index, pct in sorted(r.daily_loss_limit_pct_by_index.items()):
            if index in self._breaches:
                continue
            limit = round(pct * cap)
            pnl = self._realised_by_index.get(index, 0) + sum(
                p.pnl_paise for p in self._positions.values() if p.index == index
            )
            if limit > 0 and pnl <= -limit:
                why = f"daily_loss: {index} day pnl {_rs(pnl)} <= -{_rs(limit)} ({pct:.2%} {of_cap}"
                self._record(index, "REDUCING", "daily_loss", why, ts_event, tick_id)
