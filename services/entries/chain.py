"""Option-chain view of one index, built from ticks, and strike selection.

The view keeps the latest tick of every option of the index (and of the index itself) and
derives implied volatility and delta from those recorded prices with Black-Scholes: spot is the
latest index tick, time to expiry runs to 15:30 IST of expiry day, rate and dividend yield come
from ``OptionChainConfig``. Nothing here reads the wall clock; every time is an argument.

Strike selection (``OptionChainConfig.selection``):

- ``"atm"``: the ATM strike of the signalled side (bullish -> CE, bearish -> PE).
- ``"scored"``: the original system's analyser (reference §4): ATM to ATM±3 strike steps on the
  OTM side (the first three that exist), filtered on LTP, IV (floor by distance from ATM), OI,
  spread and |delta| (floor by time of day), scored on ATM preference, liquidity, delta, IV and
  price efficiency, sorted by score then distance from spot.

Strikes are paise; the strike step is ``IndexConfig.strike_step_paise``. IV is in percent
(``*_pct100``) like the config thresholds; spread is (ask − bid) / bid in percent.

Broker chain (live mode only): the shell may merge the broker's option chain of one expiry
(:meth:`ChainView.merge_broker_chain`, stamped with the event time of the signal it was fetched
for). A quote then takes OI, IV and delta from it when the snapshot is within
``broker_chain_max_age_s`` of the quote's event time and has the strike; otherwise the tick's OI
and Black-Scholes, as in replay, which never merges a chain. :class:`ChainCallGate` spaces the
shell's calls (DhanHQ allows one per 3 s per account); both live in ``services.entries.brokerchain``.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Mapping

import msgspec

from services.entries.brokerchain import BrokerChain, BrokerLeg
from shared.blackscholes import bs_delta, implied_vol, years_to_expiry
from shared.clock import hhmm_to_minutes, ist_day, ist_minute_of_day
from shared.config import IndexConfig, OptionChainConfig
from shared.messages import Direction, Tick
from shared.models import Instrument
from shared.types import NS_PER_S, paise_to_rupees_str

_OPTION_TYPES = ("CE", "PE")
_MAX_OTM_STEPS = 3
_MAX_TARGETS = 3
_ATM_RANGE_FRACTION = (15, 1000)
"""The original's ATM range: 1.5 % of the ATM strike (its fixed IV rank 0.5 bucket)."""


class OptionQuote(msgspec.Struct, frozen=True, kw_only=True):
    """One option as of an instant: its latest tick and the greeks derived from it.

    ``ts_chain`` is set (the snapshot's event time) when OI, IV and delta come from the broker's
    option chain; ``None``: OI from the tick, IV and delta by Black-Scholes.
    """

    security_id: int
    ltp_paise: int
    bid_paise: int
    ask_paise: int
    oi: int
    ts_tick: int
    iv_pct100: float | None
    delta: float | None
    spread_pct100: float | None
    ts_chain: int | None = None


class StrikeScore(msgspec.Struct, frozen=True, kw_only=True):
    """The original's score, part by part (maximum about 215)."""

    atm: float
    liquidity: float
    delta: float
    iv: float
    efficiency: float

    @property
    def total(self) -> float:
        return self.atm + self.liquidity + self.delta + self.iv + self.efficiency


class Pick(msgspec.Struct, frozen=True, kw_only=True):
    """A selected option contract with the numbers that chose it."""

    instrument: Instrument
    expiry: str
    atm_strike_paise: int
    spot_paise: int
    quote: OptionQuote | None
    score: StrikeScore | None = None

    @property
    def security_id(self) -> int:
        return self.instrument.security_id

    @property
    def ltp_paise(self) -> int:
        return self.quote.ltp_paise if self.quote else 0

    def describe(self) -> str:
        inst = self.instrument
        parts = [
            f"{inst.symbol} (sid {inst.security_id}, exp {self.expiry}, "
            f"strike {paise_to_rupees_str(inst.strike_paise)}, "
            f"ATM {paise_to_rupees_str(self.atm_strike_paise)}, "
            f"spot {paise_to_rupees_str(self.spot_paise)})"
        ]
        q = self.quote
        if q is not None:
            parts.append(
                f"ltp {paise_to_rupees_str(q.ltp_paise)} iv {_fmt(q.iv_pct100, unit='%')} "
                f"delta {_fmt(q.delta, 3)} oi {q.oi} spread {_fmt(q.spread_pct100, unit='%')}"
                + (" (oi/iv/delta: broker chain)" if q.ts_chain is not None else "")
            )
        if self.score is not None:
            s = self.score
            parts.append(
                f"score {s.total:.1f} = atm {s.atm:g} + liq {s.liquidity:g} + delta {s.delta:g}"
                f" + iv {s.iv:g} + eff {s.efficiency:g}"
            )
        return "; ".join(parts)


class Selection(msgspec.Struct, frozen=True, kw_only=True):
    """Outcome of strike selection: picks in preference order, or a refusal."""

    picks: list[Pick]
    rule: str = ""
    reason: str = ""
    rejected: list[str] = msgspec.field(default_factory=list)


def _fmt(x: float | None, digits: int = 2, unit: str = "") -> str:
    return "n/a" if x is None else f"{x:.{digits}f}{unit}"


# --------------------------------------------------------------------------- pure rules


def atm_strike_paise(spot_paise: int, step_paise: int) -> int:
    """Spot rounded half-up to the strike step (the original's ``(spot / step).round * step``)."""
    return (2 * spot_paise + step_paise) // (2 * step_paise) * step_paise


def side_for(direction: Direction) -> str:
    return "CE" if direction == "bullish" else "PE"


def target_strikes(atm: int, step: int, option_type: str, available: Iterable[int]) -> list[int]:
    """ATM, then 1..3 steps on the OTM side; the first three that exist in the chain."""
    have = set(available)
    sign = 1 if option_type == "CE" else -1
    wanted = [atm + sign * k * step for k in range(_MAX_OTM_STEPS + 1)]
    return [s for s in wanted if s in have][:_MAX_TARGETS]


def iv_floor_pct100(strike: int, atm: int, step: int, min_iv_pct100: float) -> float:
    """Minimum IV: relaxed at the ATM strike and one step either side of it."""
    if strike == atm:
        return max(5.0, 0.6 * min_iv_pct100)
    if abs(strike - atm) <= step:
        return max(7.0, 0.8 * min_iv_pct100)
    return min_iv_pct100


def min_abs_delta(ts_event: int) -> float:
    """|delta| floor by IST hour of the event: 0.08, from 11:00 0.10, 13:00 0.12, 14:00 0.15."""
    hour = ist_minute_of_day(ts_event) // 60
    if hour >= 14:
        return 0.15
    if hour >= 13:
        return 0.12
    if hour >= 11:
        return 0.10
    return 0.08


def spread_pct100(bid_paise: int, ask_paise: int) -> float | None:
    """(ask − bid) / bid in percent; ``None`` without both sides of the book."""
    if bid_paise <= 0 or ask_paise <= 0:
        return None
    return (ask_paise - bid_paise) / bid_paise * 100.0


def score_strike(
    *,
    strike: int,
    atm: int,
    option_type: str,
    ltp_paise: int,
    iv_pct100: float,
    oi: int,
    spread: float | None,
    abs_delta: float,
) -> StrikeScore:
    """The original's strike score (reference §4 step 7), distances compared exactly in paise."""
    dist = abs(strike - atm)
    num, den = _ATM_RANGE_FRACTION
    # dist <= k/10 * atm * 1.5 %  <=>  dist * 10 * den <= k * atm * num
    if dist * 10 * den <= 1 * atm * num:
        atm_score = 100.0
    elif dist * 10 * den <= 3 * atm * num:
        atm_score = 80.0
    elif dist * 10 * den <= 6 * atm * num:
        atm_score = 50.0
    else:
        atm_score = 20.0
    itm = strike < atm if option_type == "CE" else strike > atm
    if itm:
        atm_score *= 0.7

    if oi >= 1_000_000:
        liq = 50.0
    elif oi >= 500_000:
        liq = 40.0
    elif oi >= 100_000:
        liq = 30.0
    else:
        liq = 20.0
    spr = spread if spread is not None else 0.0
    if spr > 2.0:
        liq *= 0.8
    elif spr > 1.0:
        liq *= 0.9

    if abs_delta >= 0.5:
        delta_score = 30.0
    elif abs_delta >= 0.4:
        delta_score = 25.0
    elif abs_delta >= 0.3:
        delta_score = 20.0
    else:
        delta_score = 10.0

    if 15.0 <= iv_pct100 <= 25.0:
        iv_score = 20.0
    elif 10.0 <= iv_pct100 <= 30.0:
        iv_score = 15.0
    elif 5.0 <= iv_pct100 <= 40.0:
        iv_score = 10.0
    else:
        iv_score = 5.0
    # within 0.5 % of the ATM strike: dist <= atm * 5 / 1000
    if dist * 1000 <= atm * 5 and 5.0 <= iv_pct100 < 10.0:
        iv_score += 5.0

    ltp = ltp_paise / 100.0
    per_delta = ltp / abs_delta if abs_delta > 0 else ltp
    if per_delta <= 200:
        eff = 10.0
    elif per_delta <= 300:
        eff = 8.0
    elif per_delta <= 500:
        eff = 6.0
    else:
        eff = 4.0
    return StrikeScore(atm=atm_score, liquidity=liq, delta=delta_score, iv=iv_score, efficiency=eff)


# --------------------------------------------------------------------------- the view


class ChainView:
    """Latest ticks of one index and its options, with expiry, window and strike selection."""

    def __init__(
        self, index: IndexConfig, instruments: list[Instrument], cfg: OptionChainConfig
    ) -> None:
        self.index = index
        self.cfg = cfg
        self._by_sid: dict[int, Instrument] = {}
        self._chain: dict[str, dict[int, dict[str, Instrument]]] = {}
        for inst in instruments:
            if (
                inst.underlying != index.key
                or inst.segment != index.options_segment
                or inst.option_type not in _OPTION_TYPES
                or not inst.expiry
            ):
                continue
            self._by_sid[inst.security_id] = inst
            by_strike = self._chain.setdefault(inst.expiry, {})
            by_strike.setdefault(inst.strike_paise, {})[inst.option_type] = inst
        self._expiries = sorted(self._chain)
        self._strikes = {e: sorted(s) for e, s in self._chain.items()}
        self._ticks: dict[int, Tick] = {}
        self._spot: Tick | None = None
        self._broker: BrokerChain | None = None

    # ---- ticks

    def on_tick(self, tick: Tick) -> bool:
        """Remember ``tick`` if it belongs to this index or its options; True if it did."""
        if tick.segment == self.index.segment and tick.security_id == self.index.security_id:
            if self._spot is None or tick.ts_event >= self._spot.ts_event:
                self._spot = tick
            return True
        if tick.segment == self.index.options_segment and tick.security_id in self._by_sid:
            prev = self._ticks.get(tick.security_id)
            if prev is None or tick.ts_event >= prev.ts_event:
                self._ticks[tick.security_id] = tick
            return True
        return False

    @property
    def spot(self) -> Tick | None:
        return self._spot

    def latest_tick(self, security_id: int) -> Tick | None:
        return self._ticks.get(security_id)

    def ticks(self) -> list[Tick]:
        """Every remembered tick (index first), for snapshots."""
        out = [self._spot] if self._spot is not None else []
        return out + [self._ticks[sid] for sid in sorted(self._ticks)]

    def option_ids(self) -> list[int]:
        """Security ids of every listed option of the index (all expiries)."""
        return sorted(self._by_sid)

    def instrument(self, security_id: int) -> Instrument | None:
        return self._by_sid.get(security_id)

    # ---- expiry and window

    def expiry_for(self, ts_event: int) -> str:
        """Nearest expiry on or after the IST day of ``ts_event`` ("" if none).

        On expiry day from ``expiry_day_cutoff_hhmm`` the next expiry is used instead.
        """
        day = ist_day(ts_event).isoformat()
        i = bisect.bisect_left(self._expiries, day)
        if i >= len(self._expiries):
            return ""
        if self._expiries[i] == day and ist_minute_of_day(ts_event) >= hhmm_to_minutes(
            self.cfg.expiry_day_cutoff_hhmm
        ):
            i += 1
        return self._expiries[i] if i < len(self._expiries) else ""

    def strikes(self, expiry: str) -> list[int]:
        return self._strikes.get(expiry, [])

    def contract(self, expiry: str, strike_paise: int, option_type: str) -> Instrument | None:
        return self._chain.get(expiry, {}).get(strike_paise, {}).get(option_type)

    def nearest_strike(self, expiry: str, price_paise: int) -> int | None:
        """The listed strike closest to ``price_paise`` (the lower one on a tie)."""
        strikes = self.strikes(expiry)
        if not strikes:
            return None
        i = bisect.bisect_left(strikes, price_paise)
        near = strikes[max(0, i - 1) : i + 1]
        return min(near, key=lambda s: (abs(s - price_paise), s))

    def window(self, spot_paise: int, ts_event: int | None = None) -> list[int]:
        """Security ids (CE and PE) of ``window_strikes`` listed strikes each side of ATM,
        for the expiry selected at ``ts_event`` (default: the latest tick seen)."""
        if ts_event is None:
            ts_event = self._latest_ts()
            if ts_event is None:
                return []
        expiry = self.expiry_for(ts_event)
        strikes = self.strikes(expiry)
        if not strikes:
            return []
        atm = self.nearest_strike(
            expiry, atm_strike_paise(spot_paise, self.index.strike_step_paise)
        )
        assert atm is not None
        i = strikes.index(atm)
        w = self.cfg.window_strikes
        ids = [
            inst.security_id
            for s in strikes[max(0, i - w) : i + w + 1]
            for inst in self._chain[expiry][s].values()
        ]
        return sorted(ids)

    def _latest_ts(self) -> int | None:
        stamps = [t.ts_event for t in self._ticks.values()]
        if self._spot is not None:
            stamps.append(self._spot.ts_event)
        return max(stamps) if stamps else None

    # ---- broker chain (live mode)

    def merge_broker_chain(
        self, expiry: str, ts_asof: int, legs: Mapping[tuple[int, str], BrokerLeg]
    ) -> int:
        """Keep the broker's legs of ``expiry`` (keyed by (strike paise, "CE"/"PE")) as of event
        time ``ts_asof``, replacing the previous snapshot. Legs with no listed contract here, or
        with no IV (DhanHQ sends 0 when it has none), are left out: those strikes stay on
        Black-Scholes. Returns the number of legs kept."""
        kept: dict[int, BrokerLeg] = {}
        for (strike, option_type), leg in legs.items():
            inst = self.contract(expiry, strike, option_type)
            if inst is not None and leg.iv_pct100 > 0:
                kept[inst.security_id] = leg
        self._broker = BrokerChain(expiry=expiry, ts_asof=ts_asof, legs=kept)
        return len(kept)

    @property
    def broker_chain(self) -> BrokerChain | None:
        return self._broker

    def broker_chain_due(self, ts_event: int) -> str:
        """The expiry whose broker chain a decision at ``ts_event`` wants fetched: the selected
        expiry when no snapshot of it is within the max age; "" when fresh or no expiry."""
        expiry = self.expiry_for(ts_event)
        if not expiry:
            return ""
        snap = self._broker
        if snap is not None and snap.expiry == expiry and self._fresh(snap, ts_event):
            return ""
        return expiry

    def _fresh(self, snap: BrokerChain, ts_event: int) -> bool:
        max_age_ns = round(self.cfg.broker_chain_max_age_s * NS_PER_S)
        return abs(ts_event - snap.ts_asof) <= max_age_ns

    def _broker_leg(self, security_id: int, ts_event: int) -> BrokerLeg | None:
        snap = self._broker
        if snap is None or security_id not in snap.legs or not self._fresh(snap, ts_event):
            return None
        return snap.legs[security_id]

    # ---- quotes

    def quote(self, security_id: int, ts_event: int) -> OptionQuote | None:
        """The option's latest tick with IV and delta as of ``ts_event`` (None if no tick).

        OI, IV and delta come from a fresh broker chain snapshot with this contract, else OI
        from the tick and IV and delta by Black-Scholes from the recorded prices."""
        tick = self._ticks.get(security_id)
        inst = self._by_sid.get(security_id)
        if tick is None or inst is None:
            return None
        leg = self._broker_leg(security_id, ts_event)
        iv: float | None
        delta: float | None
        if leg is not None and self._broker is not None:
            oi, iv, delta, ts_chain = leg.oi, leg.iv_pct100, leg.delta, self._broker.ts_asof
        else:
            oi, ts_chain = tick.oi, None
            iv, delta = self._bs_iv_delta(inst, tick, ts_event)
        return OptionQuote(
            security_id=security_id,
            ltp_paise=tick.ltp_paise,
            bid_paise=tick.bid_paise,
            ask_paise=tick.ask_paise,
            oi=oi,
            ts_tick=tick.ts_event,
            iv_pct100=iv,
            delta=delta,
            spread_pct100=spread_pct100(tick.bid_paise, tick.ask_paise),
            ts_chain=ts_chain,
        )

    def _bs_iv_delta(
        self, inst: Instrument, tick: Tick, ts_event: int
    ) -> tuple[float | None, float | None]:
        """IV (percent) and delta by Black-Scholes from the tick and the latest spot."""
        if self._spot is None or self._spot.ltp_paise <= 0 or tick.ltp_paise <= 0:
            return None, None
        t_years = years_to_expiry(ts_event, inst.expiry)
        spot = self._spot.ltp_paise / 100.0
        strike = inst.strike_paise / 100.0
        kind, price = inst.option_type, tick.ltp_paise / 100.0
        rate, dividend = self.cfg.risk_free_rate, self.cfg.dividend_yield
        vol = implied_vol(kind, price, spot, strike, t_years, rate=rate, dividend=dividend)
        if vol is None:
            return None, None
        delta = bs_delta(kind, spot, strike, t_years, vol, rate=rate, dividend=dividend)
        return vol * 100.0, delta

    # ---- selection

    def select(
        self, direction: Direction, ts_event: int, spot_paise: int | None = None
    ) -> Selection:
        """Picks for a signal at ``ts_event``, best first, at most ``max_picks``.

        ``spot_paise`` defaults to the latest index tick.
        """
        if spot_paise is None:
            spot_paise = self._spot.ltp_paise if self._spot is not None else 0
        if spot_paise <= 0:
            return Selection(picks=[], rule="no_spot", reason=f"no {self.index.key} spot price")
        expiry = self.expiry_for(ts_event)
        if not expiry:
            return Selection(
                picks=[],
                rule="no_expiry",
                reason=f"no {self.index.key} expiry on or after the trading day",
            )
        option_type = side_for(direction)
        atm = atm_strike_paise(spot_paise, self.index.strike_step_paise)
        if self.cfg.selection == "atm":
            return self._select_atm(expiry, atm, option_type, spot_paise, ts_event)
        return self._select_scored(expiry, atm, option_type, spot_paise, ts_event)

    def _select_atm(
        self, expiry: str, atm: int, option_type: str, spot_paise: int, ts_event: int
    ) -> Selection:
        strike = self.nearest_strike(expiry, atm)
        inst = self.contract(expiry, strike, option_type) if strike is not None else None
        if strike is None or inst is None:
            return Selection(
                picks=[],
                rule="no_strike",
                reason=f"no {option_type} listed near ATM {paise_to_rupees_str(atm)} for {expiry}",
            )
        pick = Pick(
            instrument=inst,
            expiry=expiry,
            atm_strike_paise=strike,
            spot_paise=spot_paise,
            quote=self.quote(inst.security_id, ts_event),
        )
        return Selection(picks=[pick])

    def _select_scored(
        self, expiry: str, atm: int, option_type: str, spot_paise: int, ts_event: int
    ) -> Selection:
        cfg, step = self.cfg, self.index.strike_step_paise
        min_delta = min_abs_delta(ts_event)
        rejected: list[str] = []
        scored: list[tuple[float, int, Pick]] = []
        for strike in target_strikes(atm, step, option_type, self.strikes(expiry)):
            inst = self.contract(expiry, strike, option_type)
            label = f"{paise_to_rupees_str(strike)} {option_type}"
            if inst is None:
                rejected.append(f"{label}: not listed")
                continue
            q = self.quote(inst.security_id, ts_event)
            why = self._filter(q, strike, atm, min_delta)
            if why:
                rejected.append(f"{label}: {why}")
                continue
            assert q is not None and q.iv_pct100 is not None and q.delta is not None
            score = score_strike(
                strike=strike,
                atm=atm,
                option_type=option_type,
                ltp_paise=q.ltp_paise,
                iv_pct100=q.iv_pct100,
                oi=q.oi,
                spread=q.spread_pct100,
                abs_delta=abs(q.delta),
            )
            pick = Pick(
                instrument=inst,
                expiry=expiry,
                atm_strike_paise=atm,
                spot_paise=spot_paise,
                quote=q,
                score=score,
            )
            scored.append((score.total, abs(strike - spot_paise), pick))
        scored.sort(key=lambda x: (-x[0], x[1]))
        picks = [p for _, _, p in scored[: cfg.max_picks]]
        if not picks:
            return Selection(
                picks=[],
                rule="no_strike",
                rejected=rejected,
                reason=(
                    f"no {option_type} strike passed the filters (ATM {paise_to_rupees_str(atm)},"
                    f" exp {expiry}): " + ("; ".join(rejected) or "none listed")
                ),
            )
        return Selection(picks=picks, rejected=rejected)

    def _filter(self, q: OptionQuote | None, strike: int, atm: int, min_delta: float) -> str:
        """Why the leg fails the original's filters ("" if it passes)."""
        cfg = self.cfg
        if q is None or q.ltp_paise <= 0:
            return "no LTP"
        if q.iv_pct100 is None or q.delta is None:
            return f"IV not solvable from ltp {paise_to_rupees_str(q.ltp_paise)}"
        floor = iv_floor_pct100(strike, atm, self.index.strike_step_paise, cfg.min_iv_pct100)
        if not floor <= q.iv_pct100 <= cfg.max_iv_pct100:
            return f"iv {q.iv_pct100:.2f}% outside [{floor:g}, {cfg.max_iv_pct100:g}]"
        if q.oi < cfg.min_oi:
            return f"oi {q.oi} < min {cfg.min_oi}"
        if q.spread_pct100 is not None and q.spread_pct100 > cfg.max_spread_pct100:
            return f"spread {q.spread_pct100:.2f}% > max {cfg.max_spread_pct100:g}%"
        if abs(q.delta) < min_delta:
            return f"|delta| {abs(q.delta):.3f} < floor {min_delta:g}"
        return ""
