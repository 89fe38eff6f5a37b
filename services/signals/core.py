"""Signals core: index ticks -> candles -> Supertrend / ADX / EMA -> Signal or SignalSkipped.

Pure and deterministic: no I/O, no wall clock in decisions (``now_ns`` only stamps ``ts_init``).
One engine per enabled index; engines share nothing, so cores given disjoint subsets of the
indices produce together exactly what one core given all of them produces.

Per index and timeframe (the primary one, plus the confirmation one when enabled) a
:class:`~shared.candles.CandleBuilder` closes candles in event time (see its module for the
closing and late-tick rules); each closed candle updates the Supertrend (classic, or adaptive
when ``supertrend.adaptive``), ADX/+DI/-DI and the fast/slow EMAs. Candles closed by one message
are processed in order of their end, a longer timeframe before a shorter one ending at the same
instant, so the primary candle ending 09:20 sees the 5-minute candle 09:15-09:20.

A primary candle whose Supertrend direction differs from the previous candle's is evaluated;
nothing else is. The evaluation applies, in order, every enabled check and lists every failure:

1. ADX filter (``adx.enabled``): primary ADX >= ``adx.min_strength``.
2. EMA filter (``ema.enabled``): fast EMA above slow for bullish, below for bearish.
3. Confirmation (``enable_confirmation``): the confirmation timeframe's Supertrend agrees and,
   with the ADX filter on, its ADX >= the mode's ``adx_confirmation_min_strength`` (the
   ``adx.confirmation_min_strength`` when the mode is "off").
4. Validation (``validation_mode`` other than "off"), the original's checks with its thresholds:
   IV-rank proxy (mean |close-to-close return| of the last 5 candles x 1000, capped at 1, within
   ``[iv_rank_min, iv_rank_max]``); theta risk (candle end before ``theta_cutoff_hhmm`` IST);
   ADX >= ``adx_min_strength`` (only with the ADX filter on, as in the original); trend
   confirmation (of the last 3 closes the last is beyond the first in the signal's direction).
   The original's "market timing" check was dead code and the entry window belongs to entries.

All pass -> :class:`Signal`; otherwise -> :class:`SignalSkipped` whose reason names each failed
check. The first direction after the Supertrend becomes ready outside warm-up also yields a
SignalSkipped (state changed, nothing to trade). Warm-up yields nothing.

Scaling (``scaling.enabled``): a Signal in the same direction as the previous Signal of the
index, at most ``decay_s`` of event time (candle end to candle end) after it, gets count + 1;
otherwise count restarts at 1; ``multiplier = min(count, max_multiplier)``. Skips neither reset
nor advance the count: with signals only on direction changes, a repeat is exactly a flip back
after a rejected opposite flip, which is what the multiplier should reward.

``Signal.adx`` is the primary timeframe's ADX (0.0 while it is not yet defined); confidence, as
the original: 0.5 + ADX bonus (0.3 if >= 30, 0.2 if >= 20, 0.1 if >= 15) + 0.2
when the confirmation timeframe agreed + 0.1 when validation ran and passed + min(Supertrend in
rupees / 1000, 0.1), capped at 1.0.

Ids: ``Signal.msg_id = make_msg_id("sig", index, timeframe_min, candle_ts, direction)``,
``SignalSkipped.msg_id = make_msg_id("sigskip", index, timeframe_min, candle_ts, direction)``;
``candle_ts`` is the candle's start (UTC ns); ``ts_event``/``tick_id`` are those of the tick or
Clock message that closed the candle. A tick whose ``tick_id`` is not after the last one
processed for its index is a duplicate (a re-delivery) and is ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import msgspec

from shared.candles import Candle, CandleBuilder
from shared.clock import NS_PER_S, fmt_ist, hhmm_to_minutes, ist_minute_of_day
from shared.config import IndexConfig, SignalsConfig, ValidationMode
from shared.errors import ConfigError, DecodeError
from shared.indicators import BULLISH, AdaptiveSupertrend, Adx, Ema, Supertrend
from shared.messages import Clock, Direction, Signal, SignalSkipped, Tick, make_msg_id

Out = Signal | SignalSkipped

SNAPSHOT_VERSION = 1
_CLOSES_KEPT = 6  # 5 returns for the IV-rank proxy
_NO_PRICE_KINDS = frozenset({"prev_close", "oi"})


def _dir_name(d: int) -> Direction:
    return "bullish" if d == BULLISH else "bearish"


def _rupees(paise: float) -> str:
    return f"{paise / 100:.2f}"


class Frame(msgspec.Struct, kw_only=True):
    """One timeframe of one index: its candle builder and indicator state."""

    timeframe_min: int
    builder: CandleBuilder
    adx: Adx
    ema_fast: Ema
    ema_slow: Ema
    st: Supertrend | None = None
    ast: AdaptiveSupertrend | None = None
    closes: list[int] = msgspec.field(default_factory=list)
    candles: int = 0

    @property
    def trend(self) -> Supertrend | AdaptiveSupertrend:
        return self.st if self.st is not None else self.ast  # type: ignore[return-value]

    def update(self, c: Candle) -> tuple[int, int]:
        """Feed a closed candle; returns the Supertrend direction before and after it."""
        h, lo, cl = float(c.high_paise), float(c.low_paise), float(c.close_paise)
        trend = self.trend
        before = trend.direction
        after = trend.update(h, lo, cl)
        self.adx.update(h, lo, cl)
        self.ema_fast.update(cl)
        self.ema_slow.update(cl)
        self.closes.append(c.close_paise)
        if len(self.closes) > _CLOSES_KEPT:
            del self.closes[0]
        self.candles += 1
        return before, after


class IndexState(msgspec.Struct, kw_only=True):
    """Everything one index's engine remembers (what a snapshot holds)."""

    key: str
    fingerprint: str
    frames: dict[int, Frame]
    scale_direction: int = 0
    scale_count: int = 0
    scale_ts_ns: int = 0
    last_tick_ms: int = -1
    last_tick_seq: int = -1
    duplicate_ticks: int = 0
    warmup_candles: int = 0


class Snapshot(msgspec.Struct, kw_only=True):
    version: int
    indices: list[IndexState]


def _fingerprint(cfg: SignalsConfig, ix: IndexConfig) -> str:
    """Id of the settings that shape indicator state; a snapshot only fits the same ones."""
    return make_msg_id(
        "fp",
        ix.security_id,
        cfg.primary_timeframe_min,
        cfg.confirmation_timeframe_min if cfg.enable_confirmation else 0,
        msgspec.json.encode(cfg.supertrend).decode(),
        cfg.adx.period,
        cfg.ema.fast,
        cfg.ema.slow,
        cfg.late_tick_grace_ms,
    )


def _new_frame(cfg: SignalsConfig, tf: int) -> Frame:
    s = cfg.supertrend
    frame = Frame(
        timeframe_min=tf,
        builder=CandleBuilder(timeframe_min=tf, grace_ns=cfg.late_tick_grace_ms * 1_000_000),
        adx=Adx(period=cfg.adx.period),
        ema_fast=Ema(period=cfg.ema.fast),
        ema_slow=Ema(period=cfg.ema.slow),
    )
    if s.adaptive:
        frame.ast = AdaptiveSupertrend.new(
            s.period,
            s.multiplier,
            s.training_period,
            s.num_clusters,
            s.performance_alpha,
            s.multiplier_candidates,
        )
    else:
        frame.st = Supertrend.new(s.period, s.multiplier)
    return frame


def _new_state(cfg: SignalsConfig, ix: IndexConfig) -> IndexState:
    tfs = {cfg.primary_timeframe_min}
    if cfg.enable_confirmation:
        tfs.add(cfg.confirmation_timeframe_min)
    return IndexState(
        key=ix.key,
        fingerprint=_fingerprint(cfg, ix),
        frames={tf: _new_frame(cfg, tf) for tf in sorted(tfs)},
    )


class _Engine:
    """Decision logic for one index over its :class:`IndexState`."""

    __slots__ = ("cfg", "ix", "s", "now_ns", "grace_ns", "primary", "mode")

    def __init__(
        self, cfg: SignalsConfig, ix: IndexConfig, state: IndexState, now_ns: Callable[[], int]
    ) -> None:
        self.cfg, self.ix, self.s, self.now_ns = cfg, ix, state, now_ns
        self.grace_ns = cfg.late_tick_grace_ms * 1_000_000
        self.primary = cfg.primary_timeframe_min
        self.mode: ValidationMode | None = (
            None if cfg.validation_mode == "off" else cfg.validation_modes[cfg.validation_mode]
        )

    # ------------------------------------------------------------------ input

    def on_tick(self, tick: Tick) -> list[Out]:
        s = self.s
        ms, _, seq_s = tick.tick_id.partition("-")
        try:
            key = (int(ms), int(seq_s or 0))
        except ValueError:
            key = None
        if key is not None:
            if key <= (s.last_tick_ms, s.last_tick_seq):
                s.duplicate_ticks += 1
                return []
            s.last_tick_ms, s.last_tick_seq = key
        if tick.ltp_paise <= 0 or tick.kind in _NO_PRICE_KINDS:
            return self.on_time(tick.ts_event, tick.tick_id)
        ts, price = tick.ts_event, tick.ltp_paise
        closed: list[Candle] = []
        for frame in s.frames.values():
            closed.extend(frame.builder.on_tick(ts, price))
        return self._process(closed, ts, tick.tick_id, live=True) if closed else []

    def on_time(self, ts_event: int, tick_id: str) -> list[Out]:
        closed: list[Candle] = []
        wm = ts_event - self.grace_ns
        for frame in self.s.frames.values():
            closed.extend(frame.builder.advance(wm))
        return self._process(closed, ts_event, tick_id, live=True) if closed else []

    def warm_up(self, candles: Iterable[Candle]) -> int:
        used = 0
        for c in candles:
            if c.timeframe_min != 1:
                raise ValueError(f"warm-up needs 1-minute candles, got {c.timeframe_min}-minute")
            closed: list[Candle] = []
            for frame in self.s.frames.values():
                closed.extend(frame.builder.on_candle(c))
            self._process(closed, c.ts_end, "", live=False)
            used += 1
        self.s.warmup_candles += used
        return used

    def _process(self, closed: list[Candle], ts_event: int, tick_id: str, live: bool) -> list[Out]:
        if len(closed) > 1:
            closed.sort(key=lambda c: (c.ts_end, -c.timeframe_min))
        out: list[Out] = []
        frames = self.s.frames
        for c in closed:
            frame = frames[c.timeframe_min]
            before, after = frame.update(c)
            if live and c.timeframe_min == self.primary and after != before and after != 0:
                out.append(self._evaluate(frame, c, before, after, ts_event, tick_id))
        return out

    # ------------------------------------------------------------------ decision

    def _evaluate(
        self, frame: Frame, c: Candle, before: int, after: int, ts_event: int, tick_id: str
    ) -> Out:
        cfg = self.cfg
        direction = _dir_name(after)
        where = f"{c.timeframe_min}m candle {fmt_ist(c.ts_start)[:5]} IST"
        if before == 0:
            return self._skip(
                c,
                direction,
                ts_event,
                tick_id,
                f"supertrend ready on {where}: initial direction {direction}; "
                "a signal needs a change of direction",
            )
        fails: list[str] = []
        adx = frame.adx.value
        if cfg.adx.enabled:
            if adx is None:
                fails.append(f"ADX({cfg.adx.period}) not ready")
            elif adx < cfg.adx.min_strength:
                fails.append(f"ADX {adx:.1f} < min {cfg.adx.min_strength:g}")
        if cfg.ema.enabled:
            fails.extend(self._ema_check(frame, after))
        agreed = False
        if cfg.enable_confirmation:
            conf_fails = self._confirmation_check(after)
            fails.extend(conf_fails)
            agreed = not conf_fails
        validated = False
        if self.mode is not None:
            val_fails = self._validate(frame, c, after, adx)
            fails.extend(val_fails)
            validated = not val_fails
        if fails:
            return self._skip(
                c,
                direction,
                ts_event,
                tick_id,
                f"{direction} flip on {where} not traded: " + "; ".join(fails),
            )
        return self._signal(frame, c, after, adx, agreed, validated, ts_event, tick_id, where)

    def _ema_check(self, frame: Frame, after: int) -> list[str]:
        fast, slow = frame.ema_fast.value, frame.ema_slow.value
        e = self.cfg.ema
        if fast is None or slow is None:
            return [f"EMA {e.fast}/{e.slow} not ready"]
        if (fast > slow) if after == BULLISH else (fast < slow):
            return []
        rel = "<=" if after == BULLISH else ">="
        return [
            f"EMA {e.fast}/{e.slow} against {_dir_name(after)} "
            f"(fast {_rupees(fast)} {rel} slow {_rupees(slow)})"
        ]

    def _confirmation_check(self, after: int) -> list[str]:
        cfg = self.cfg
        tf = cfg.confirmation_timeframe_min
        cf = self.s.frames[tf]
        cdir = cf.trend.direction
        if cdir == 0:
            return [f"confirmation {tf}m supertrend not ready"]
        fails = []
        if cdir != after:
            fails.append(f"confirmation {tf}m supertrend is {_dir_name(cdir)}")
        if cfg.adx.enabled:
            need = (
                self.mode.adx_confirmation_min_strength
                if self.mode is not None
                else cfg.adx.confirmation_min_strength
            )
            cadx = cf.adx.value
            if cadx is None:
                fails.append(f"confirmation {tf}m ADX not ready")
            elif cadx < need:
                fails.append(f"confirmation {tf}m ADX {cadx:.1f} < min {need:g}")
        return fails

    def _validate(self, frame: Frame, c: Candle, after: int, adx: float | None) -> list[str]:
        mode = self.mode
        assert mode is not None
        name = self.cfg.validation_mode
        fails = []
        closes = frame.closes
        if mode.require_iv_rank_check:
            if len(closes) < _CLOSES_KEPT:
                fails.append(
                    f"{name}: IV-rank proxy needs 5 returns, have {max(len(closes) - 1, 0)}"
                )
            else:
                moves = [abs(closes[i] / closes[i - 1] - 1.0) for i in range(1, len(closes))]
                proxy = min(sum(moves) / len(moves) * 1000.0, 1.0)
                if not mode.iv_rank_min <= proxy <= mode.iv_rank_max:
                    fails.append(
                        f"{name}: IV-rank proxy {proxy:.3f} outside "
                        f"[{mode.iv_rank_min:g}, {mode.iv_rank_max:g}]"
                    )
        if mode.require_theta_risk_check:
            if ist_minute_of_day(c.ts_end) >= hhmm_to_minutes(mode.theta_cutoff_hhmm):
                fails.append(f"{name}: theta risk at/after {mode.theta_cutoff_hhmm} IST")
        if self.cfg.adx.enabled and (adx is None or adx < mode.adx_min_strength):
            shown = "n/a" if adx is None else f"{adx:.1f}"
            fails.append(f"{name}: ADX {shown} < {mode.adx_min_strength:g}")
        if mode.require_trend_confirmation:
            last3 = closes[-3:]
            ok = len(last3) == 3 and (
                last3[-1] > last3[0] if after == BULLISH else last3[-1] < last3[0]
            )
            if not ok:
                fails.append(f"{name}: last 3 closes do not confirm {_dir_name(after)}")
        return fails

    def _signal(
        self,
        frame: Frame,
        c: Candle,
        after: int,
        adx: float | None,
        agreed: bool,
        validated: bool,
        ts_event: int,
        tick_id: str,
        where: str,
    ) -> Signal:
        s, sc = self.s, self.cfg.scaling
        end = c.ts_end
        if sc.enabled:
            same = s.scale_direction == after and end - s.scale_ts_ns <= sc.decay_s * NS_PER_S
            s.scale_count = s.scale_count + 1 if same else 1
            s.scale_direction, s.scale_ts_ns = after, end
            multiplier = min(s.scale_count, sc.max_multiplier)
        else:
            multiplier = 1
        st_value = frame.trend.value or 0.0
        adx_v = adx if adx is not None else 0.0
        conf = 0.5
        if adx_v >= 30:
            conf += 0.3
        elif adx_v >= 20:
            conf += 0.2
        elif adx_v >= 15:
            conf += 0.1
        if agreed:
            conf += 0.2
        if validated:
            conf += 0.1
        conf += min(st_value / 100.0 / 1000.0, 0.1)
        direction = _dir_name(after)
        return Signal(
            msg_id=make_msg_id("sig", s.key, c.timeframe_min, c.ts_start, direction),
            ts_event=ts_event,
            ts_init=self.now_ns(),
            tick_id=tick_id,
            index=s.key,
            direction=direction,
            timeframe_min=c.timeframe_min,
            candle_ts=c.ts_start,
            close_paise=c.close_paise,
            supertrend_paise=int(round(st_value)),
            adx=adx_v,
            confidence=round(min(conf, 1.0), 6),
            multiplier=multiplier,
            reason=(
                f"supertrend flipped {direction} on {where}: close {_rupees(c.close_paise)}, "
                f"line {_rupees(st_value)}, ADX {adx_v:.1f}, x{multiplier}"
            ),
        )

    def _skip(
        self, c: Candle, direction: str, ts_event: int, tick_id: str, reason: str
    ) -> SignalSkipped:
        return SignalSkipped(
            msg_id=make_msg_id("sigskip", self.s.key, c.timeframe_min, c.ts_start, direction),
            ts_event=ts_event,
            ts_init=self.now_ns(),
            tick_id=tick_id,
            index=self.s.key,
            timeframe_min=c.timeframe_min,
            candle_ts=c.ts_start,
            reason=reason,
        )


class SignalsCore:
    """Signals for the enabled indices among ``indices``; see the module docstring."""

    def __init__(
        self,
        cfg: SignalsConfig,
        indices: list[IndexConfig],
        now_ns: Callable[[], int],
        _states: dict[str, IndexState] | None = None,
    ) -> None:
        self.cfg = cfg
        self._engines: list[_Engine] = []
        self._by_sid: dict[int, _Engine] = {}
        for ix in indices:
            if not ix.enabled:
                continue
            state = (_states or {}).get(ix.key) or _new_state(cfg, ix)
            eng = _Engine(cfg, ix, state, now_ns)
            self._engines.append(eng)
            self._by_sid[ix.security_id] = eng

    @property
    def index_keys(self) -> list[str]:
        return [e.s.key for e in self._engines]

    def on_tick(self, tick: Tick) -> list[Out]:
        """Feed one tick; ticks other than an enabled index's (segment and id) are ignored."""
        eng = self._by_sid.get(tick.security_id)
        if eng is None or tick.segment != eng.ix.segment:
            return []
        return eng.on_tick(tick)

    def on_clock(self, msg: Clock) -> list[Out]:
        """Advance event time for every index (closes candles when no tick arrives)."""
        out: list[Out] = []
        for eng in self._engines:
            out.extend(eng.on_time(msg.ts_event, msg.tick_id))
        return out

    def warm_up(self, index_key: str, candles: Iterable[Candle]) -> int:
        """Feed historical 1-minute candles (oldest first) of one index; emits nothing.

        Candles at or before what the index has already seen are ignored. Returns how many
        candles were fed.
        """
        for eng in self._engines:
            if eng.s.key == index_key:
                return eng.warm_up(candles)
        raise KeyError(f"index {index_key!r} is not enabled in this core")

    def counters(self) -> dict[str, dict[str, int]]:
        """Per index: duplicate ticks, and per timeframe late and outside-session ticks."""
        out: dict[str, dict[str, int]] = {}
        for eng in self._engines:
            d = {"duplicate_ticks": eng.s.duplicate_ticks, "warmup_candles": eng.s.warmup_candles}
            for tf, f in eng.s.frames.items():
                d[f"late_ticks_{tf}m"] = f.builder.late_ticks
                d[f"outside_session_ticks_{tf}m"] = f.builder.outside_session_ticks
                d[f"candles_{tf}m"] = f.candles
            out[eng.s.key] = d
        return out

    def snapshot(self) -> bytes:
        """All state as msgpack; :meth:`restore` with the same config continues identically."""
        return msgspec.msgpack.encode(
            Snapshot(version=SNAPSHOT_VERSION, indices=[e.s for e in self._engines])
        )

    @classmethod
    def restore(
        cls,
        cfg: SignalsConfig,
        indices: list[IndexConfig],
        now_ns: Callable[[], int],
        data: bytes,
    ) -> SignalsCore:
        """A core from a :meth:`snapshot`.

        Indices in the snapshot but not enabled here are dropped; enabled indices missing from
        it start empty (warm them up). Raises DecodeError for an unreadable snapshot and
        ConfigError when an index's state was built with different indicator settings.
        """
        try:
            snap = msgspec.msgpack.decode(data, type=Snapshot)
        except msgspec.DecodeError as exc:
            raise DecodeError(f"signals snapshot: {exc}") from None
        if snap.version != SNAPSHOT_VERSION:
            raise DecodeError(
                f"signals snapshot: version {snap.version}, expected {SNAPSHOT_VERSION}"
            )
        states = {st.key: st for st in snap.indices}
        for ix in indices:
            st = states.get(ix.key)
            if ix.enabled and st is not None and st.fingerprint != _fingerprint(cfg, ix):
                raise ConfigError(
                    f"signals snapshot: {ix.key} state was built with other indicator settings "
                    "(timeframes, supertrend, adx/ema periods or grace); discard it and warm up"
                )
        return cls(cfg, indices, now_ns, _states=states)
