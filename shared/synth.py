"""A seeded, realistic — and clearly SYNTHETIC — NIFTY trading day as a recorded-session file.

What it generates (DESIGN §7, "recorded sessions"):

- an index path for NIFTY (``IDX_I`` / 13), one value per second: geometric Brownian motion with a
  U-shaped intraday volatility (``INDEX_VOL_ANNUAL`` ≈ 13 % on a 252 × 6.25 h trading-time year),
  occasional 3σ shocks, and a regime-switching drift (up / down / flat regimes of 10–90 min,
  biased back towards the open) so a 1-minute Supertrend(10, 2.0) flips some 8–30 times a day;
- CE and PE contracts of the nearest weekly expiry (Tuesday, moved by ``config/holidays.csv``)
  for ATM ± ``strikes_each_side`` strikes 50 apart, priced by Black-Scholes on the same index path
  (trading-time years, ``RISK_FREE_RATE`` and ``DIV_YIELD`` carry) with a volatility smile and
  an ATM vol that rises when the index falls; bids and asks on the ₹0.05 grid around the model
  price, trades at the bid or ask, cumulative volume and open interest in units (lot 65);
- index ticks about once a second (second ``i``'s level, published early in that second, is
  the one the options trade on during it); option ticks as Poisson processes
  (``option_rate_hz`` at the money, falling to 25 % of it far from the money); receive
  timestamps are the event time plus a feed latency, made strictly increasing by nanosecond
  offsets.

Output: one Parquet file, one row per tick, sorted by ``ts_recv_ns`` (see ``COLUMNS``), with the
key-value metadata ``synthetic=true`` and a ``label``; plus the matching compact scrip master
(index row, every contract in the file and the next weekly expiry's contracts).

Randomness: only ``random.Random(seed).random()`` is used (the one stream Python guarantees across
versions); normals and exponentials are derived from it here, so a seed reproduces a session
(bit for bit on one platform and polars version).
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path

import msgspec
import polars as pl

from shared.calendar import TradingCalendar, load_calendar
from shared.clock import NS_PER_S, hhmm_to_minutes, ist_to_ns
from shared.instruments import option_display_name, option_symbol, write_compact_csv
from shared.models import Instrument
from shared.sessionfile import SESSION_SCHEMA

GENERATOR = "algo-scalper shared.synth v1 (regime-switching GBM index; Black-Scholes with smile)"
LABEL = "SYNTHETIC — not real market data"
DEFAULT_DAY = date(2026, 12, 1)  # a Tuesday and a NIFTY weekly expiry day (no holiday)
DEFAULT_SEED = 20261201
DEFAULT_OPTION_RATE_HZ = 0.8  # keeps a full day near 275k rows / 5 MB of Parquet

UNDERLYING = "NIFTY"
INDEX_SECURITY_ID = 13
LOT_SIZE = 65
FREEZE_QTY = 1800
STRIKE_STEP_RUPEES = 50
TICK_PAISE = 5
SESSION_OPEN, SESSION_CLOSE = "09:15", "15:30"
SESSION_S = 22_500  # 09:15-15:30
TRADING_YEAR_S = 252 * SESSION_S  # option time is trading time, like the index's volatility

INDEX_VOL_ANNUAL = 0.13
ATM_IV_PREMIUM = 1.05  # implied over realised
SPOT_VOL_BETA = 8.0  # ATM vol rises 8 % (relative) per 1 % fall of the index from its open
SMILE_SKEW, SMILE_CURVATURE = -0.08, 0.05  # in standardised moneyness ln(K/F) / (σ√T)
RISK_FREE_RATE, DIV_YIELD = 0.065, 0.012  # continuously compounded, per year
MIN_T_S = 60.0
TICK_RATE_FLOOR = 0.25  # far-from-the-money tick rate as a fraction of the ATM rate
TICK_RATE_WIDTH_STRIKES = 1.8  # how fast the tick rate falls away from the money
ITM_TICK_RATE_FACTOR = 0.85  # in-the-money contracts tick less
OI_REFRESH_S = (20.0, 40.0)  # the exchange publishes OI periodically, not per trade
SPREAD_FRAC = 0.0008  # typical spread as a fraction of the option price (min one tick)

COLUMNS = SESSION_SCHEMA  # the recorded-session format (shared/sessionfile.py)


class SessionSummary(msgspec.Struct, frozen=True, kw_only=True):
    """What :func:`generate_session` wrote. Prices in rupees."""

    trading_day: str
    seed: int
    expiry: str
    next_expiry: str
    window_ist: str
    rows: int
    index_rows: int
    option_rows: int
    contracts: int
    index_open: float
    index_high: float
    index_low: float
    index_close: float
    supertrend_flips: int  # 1-minute Supertrend(10, 2.0) on the index path
    parquet_path: str
    parquet_bytes: int
    instruments_path: str
    label: str = LABEL


class _Rng:
    """Version-stable draws built only on ``random.Random.random``."""

    def __init__(self, seed: int) -> None:
        self._r = random.Random(seed)
        self.random = self._r.random
        self._spare: float | None = None

    def uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * self.random()

    def exponential(self, mean: float) -> float:
        return -mean * math.log(1.0 - self.random())

    def normal(self) -> float:
        if self._spare is not None:
            value, self._spare = self._spare, None
            return value
        radius = math.sqrt(-2.0 * math.log(1.0 - self.random()))
        angle = 2.0 * math.pi * self.random()
        self._spare = radius * math.sin(angle)
        return radius * math.cos(angle)


# ------------------------------------------------------------------------------- index path


def index_path(seed: int, n_seconds: int, open_level: float, *, offset_s: int = 0) -> list[float]:
    """Index level (rupees, unrounded) for each second of a window starting ``offset_s`` seconds
    after 09:15, the first value close to ``open_level``."""
    rng = _Rng(seed)
    sigma_s = INDEX_VOL_ANNUAL / math.sqrt(TRADING_YEAR_S) * 0.92  # 0.92: mean of the U shape
    levels: list[float] = []
    level, drift, regime_left = open_level, 0.0, 0
    for i in range(offset_s, offset_s + n_seconds):
        if regime_left <= 0:
            up_p = 0.4 - 0.3 * math.tanh(math.log(level / open_level) / 0.006)
            magnitude = rng.uniform(0.4, 1.1) * 1e-4 / 60  # 0.4-1.1 bp per minute
            draw = rng.random()
            drift = magnitude if draw < up_p else (-magnitude if draw < 0.8 else 0.0)
            regime_left = int(60 * (10 + rng.exponential(40.0)))
        regime_left -= 1
        u_shape = 1 + 0.8 * math.exp(-i / 1200) + 0.3 * math.exp(-(SESSION_S - i) / 1800)
        shock = rng.normal() * (3.0 if rng.random() < 0.01 else 1.0)
        level *= math.exp(drift + sigma_s * u_shape * shock)
        levels.append(level)
    return levels


def supertrend_flips(levels: list[float], period: int = 10, multiplier: float = 2.0) -> int:
    """Direction changes of a Supertrend on 1-minute candles built from per-second levels."""
    bars = [
        (max(chunk), min(chunk), chunk[-1])
        for chunk in (levels[k : k + 60] for k in range(0, len(levels), 60))
    ]
    flips, atr, prev_close = 0, 0.0, 0.0
    upper = lower = 0.0
    direction = 0
    for n, (high, low, close) in enumerate(bars):
        tr = (
            high - low if n == 0 else max(high - low, abs(high - prev_close), abs(low - prev_close))
        )
        atr = atr + tr / period if n < period else (atr * (period - 1) + tr) / period
        if n >= period - 1:
            mid = (high + low) / 2
            band_up, band_low = mid + multiplier * atr, mid - multiplier * atr
            if direction == 0:
                upper, lower, direction = band_up, band_low, (1 if close > mid else -1)
            else:
                upper = band_up if band_up < upper or prev_close > upper else upper
                lower = band_low if band_low > lower or prev_close < lower else lower
                new = -1 if direction == 1 and close < lower else direction
                new = 1 if direction == -1 and close > upper else new
                flips += new != direction
                direction = new
        prev_close = close
    return flips


# --------------------------------------------------------------------------- option pricing


def _norm_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def bs_price(spot: float, strike: float, t_years: float, vol: float, option_type: str) -> float:
    """Black-Scholes value (rupees) with ``RISK_FREE_RATE`` and ``DIV_YIELD`` carry.

    ``t_years`` is trading time (see ``TRADING_YEAR_S``), the clock the index volatility runs on.
    """
    disc_r, disc_q = math.exp(-RISK_FREE_RATE * t_years), math.exp(-DIV_YIELD * t_years)
    sd = vol * math.sqrt(t_years)
    d1 = (math.log(spot / strike) + (RISK_FREE_RATE - DIV_YIELD) * t_years) / sd + sd / 2
    d2 = d1 - sd
    if option_type == "CE":
        return spot * disc_q * _norm_cdf(d1) - strike * disc_r * _norm_cdf(d2)
    return strike * disc_r * _norm_cdf(-d2) - spot * disc_q * _norm_cdf(-d1)


def parity_value(spot: float, strike: float, t_years: float) -> float:
    """Model ``call - put`` for one strike (put-call parity), rupees."""
    return spot * math.exp(-DIV_YIELD * t_years) - strike * math.exp(-RISK_FREE_RATE * t_years)


def smile_vol(atm_vol: float, spot: float, strike: float, t_years: float) -> float:
    """Implied vol at ``strike``: skewed (puts dearer) and curved in standardised moneyness."""
    forward = spot * math.exp((RISK_FREE_RATE - DIV_YIELD) * t_years)
    x = math.log(strike / forward) / (atm_vol * math.sqrt(t_years))
    x = max(-3.0, min(3.0, x))
    return atm_vol * (1.0 + SMILE_SKEW * x + SMILE_CURVATURE * x * x)


def years_to_expiry(seconds_to_close: float, sessions_after_today: int) -> float:
    """Trading-time years left: the rest of today's session plus whole sessions up to expiry."""
    return max(seconds_to_close + sessions_after_today * SESSION_S, MIN_T_S) / TRADING_YEAR_S


# ------------------------------------------------------------------------------- contracts


def _expiries(trading_day: date, calendar: TradingCalendar) -> tuple[date, date]:
    expiry = calendar.scheduled_expiry(UNDERLYING, trading_day)
    return expiry, calendar.scheduled_expiry(UNDERLYING, expiry + timedelta(days=1))


def _contracts(
    expiries: tuple[date, date], strikes: list[int], seed: int, calendar: TradingCalendar
) -> list[Instrument]:
    rng = _Rng(seed * 7 + 1)
    out = [
        Instrument(
            security_id=INDEX_SECURITY_ID,
            exchange="NSE",
            segment="IDX_I",
            instrument="INDEX",
            underlying=UNDERLYING,
            symbol=UNDERLYING,
            display_name="Nifty 50",
            tick_size_paise=TICK_PAISE,
        )
    ]
    next_id = 40_000 + int(rng.uniform(0, 20_000))
    for expiry in expiries:
        monthly = calendar.scheduled_expiry(UNDERLYING, expiry, monthly=True) == expiry
        for strike in strikes:
            for side in ("CE", "PE"):
                out.append(
                    Instrument(
                        security_id=next_id,
                        exchange="NSE",
                        segment="NSE_FNO",
                        instrument="OPTIDX",
                        underlying=UNDERLYING,
                        symbol=option_symbol(UNDERLYING, expiry, strike, side),
                        display_name=option_display_name(UNDERLYING, expiry, strike, side),
                        expiry=expiry.isoformat(),
                        strike_paise=strike * 100,
                        option_type=side,
                        lot_size=LOT_SIZE,
                        tick_size_paise=TICK_PAISE,
                        expiry_flag="M" if monthly else "W",
                        freeze_qty=FREEZE_QTY,
                    )
                )
                next_id += 1 + (rng.random() < 0.25)
        next_id += 1_000 + int(rng.uniform(0, 4_000))
    return out


# ------------------------------------------------------------------------------------ ticks


Tick = tuple[int, int, str, int, float, int, int, int, int, float, float, int, int]
"""(event ns, latency ns, segment, security id, ltp, ltq, ltt s, volume, oi, bid, ask, bid qty,
ask qty): one tick before receive times are assigned. Prices are rupees made as ``paise / 100``
in Python (the nearest double to the 2-decimal price; polars' division is not always)."""

_TICK_SCHEMA = {
    "_ts_event_ns": pl.Int64,
    "_latency_ns": pl.Int64,
    "segment": pl.String,
    "security_id": pl.Int64,
    "ltp": pl.Float64,
    "ltq": pl.Int64,
    "ltt_s": pl.Int64,
    "volume": pl.Int64,
    "oi": pl.Int64,
    "bid": pl.Float64,
    "ask": pl.Float64,
    "bid_qty": pl.Int64,
    "ask_qty": pl.Int64,
}


def _latency_ns(rng: _Rng) -> int:
    return int(0.004 * NS_PER_S + rng.exponential(0.020 * NS_PER_S)) // 1_000 * 1_000


def _index_ticks(rng: _Rng, levels: list[float], start_ns: int) -> list[Tick]:
    ticks: list[Tick] = []
    for i, level in enumerate(levels):
        if rng.random() < 0.03:  # the feed skips an occasional second
            continue
        # Published early in its second: option ticks in second i are priced off levels[i].
        event_ns = start_ns + i * NS_PER_S + int(rng.uniform(0.0, 0.2) * NS_PER_S) // 1_000 * 1_000
        ltp_p = round(level * 100 / TICK_PAISE) * TICK_PAISE
        ltt = event_ns // NS_PER_S
        ticks.append((event_ns, _latency_ns(rng), "IDX_I", INDEX_SECURITY_ID, ltp_p / 100, 0,
                      ltt, 0, 0, 0.0, 0.0, 0, 0))  # fmt: skip
    return ticks


def _quote_paise(theo: float, rng: _Rng) -> tuple[int, int]:
    """Bid and ask on the tick grid with ``bid <= theo <= ask`` (bid at least one tick)."""
    spread_ticks = 1 + int(theo * SPREAD_FRAC / 0.05 * rng.uniform(0.5, 1.5))
    bid = int((theo - spread_ticks * 0.025) * 100 // TICK_PAISE) * TICK_PAISE
    bid = max(bid, TICK_PAISE)
    ask = max(bid + spread_ticks * TICK_PAISE, math.ceil(theo * 100 / TICK_PAISE) * TICK_PAISE)
    return bid, ask


def _option_ticks(
    rng: _Rng,
    contract: Instrument,
    levels: list[float],
    start_ns: int,
    years_left: Callable[[float], float],
    rate_hz: float,
) -> list[Tick]:
    """One contract's ticks: Poisson (thinned from ``rate_hz``), 60 % of them trades."""
    ticks: list[Tick] = []
    strike, side, sid = contract.strike_paise / 100, contract.option_type, contract.security_id
    open_level, atm_vol_open = levels[0], INDEX_VOL_ANNUAL * ATM_IV_PREMIUM
    distance0 = abs(strike - open_level) / STRIKE_STEP_RUPEES
    roundness = 1.5 if strike % 500 == 0 else (1.2 if strike % 100 == 0 else 1.0)
    oi_lots = 150_000 * (0.15 + math.exp(-((distance0 / 5) ** 2))) * roundness
    oi = int(oi_lots * rng.uniform(0.7, 1.3)) * LOT_SIZE
    volume, ltq, ltt, ltp_p, oi_pending = 0, 0, 0, 0, 0
    t, oi_refresh_t = 0.0, rng.uniform(*OI_REFRESH_S)
    while True:
        t += rng.exponential(1.0 / rate_hz)
        if t >= len(levels):
            return ticks
        spot = levels[int(t)]
        distance = (strike - spot) / STRIKE_STEP_RUPEES
        itm = distance < 0 if side == "CE" else distance > 0
        near_money = math.exp(-((distance / TICK_RATE_WIDTH_STRIKES) ** 2))
        rate = TICK_RATE_FLOOR + (1 - TICK_RATE_FLOOR) * near_money
        if rng.random() > rate * (ITM_TICK_RATE_FACTOR if itm else 1.0):
            continue
        t_years = years_left(t)
        atm_vol = atm_vol_open * (1 - SPOT_VOL_BETA * math.log(spot / open_level))
        vol = smile_vol(max(atm_vol, 0.05), spot, strike, t_years)
        theo = bs_price(spot, strike, t_years, vol, side)
        bid_p, ask_p = _quote_paise(theo, rng)
        event_ns = start_ns + int(t * NS_PER_S) // 1_000 * 1_000
        if ltt == 0 or rng.random() < 0.6:  # a trade (the first tick always is one)
            ltp_p = ask_p if rng.random() < 0.5 else bid_p
            ltq = (1 + int(rng.exponential(2.0 + 6.0 * math.exp(-theo / 30)))) * LOT_SIZE
            volume += ltq
            oi_pending += ltq if rng.random() < (0.45 if itm else 0.55) else -ltq
            ltt = event_ns // NS_PER_S
        if t >= oi_refresh_t:
            oi, oi_pending = max(oi + oi_pending, 0), 0
            oi_refresh_t = t + rng.uniform(*OI_REFRESH_S)
        bid_q = (1 + int(rng.exponential(8.0))) * LOT_SIZE
        ask_q = (1 + int(rng.exponential(8.0))) * LOT_SIZE
        ticks.append((event_ns, _latency_ns(rng), contract.segment, sid, ltp_p / 100, ltq, ltt,
                      volume, oi, bid_p / 100, ask_p / 100, bid_q, ask_q))  # fmt: skip


def _frame(ticks: list[Tick]) -> pl.DataFrame:
    """Ticks in receive order. The feed is one FIFO pipe (a WebSocket): a tick never overtakes an
    earlier one, so receive time is the running maximum of event time + latency, and order per
    instrument is event order. Ties get nanosecond offsets: y_i = max_{j<=i}(ts_j - j) + i."""
    df = pl.DataFrame(ticks, schema=_TICK_SCHEMA, orient="row")
    df = df.sort("_ts_event_ns", "security_id", maintain_order=True)
    idx = pl.int_range(pl.len(), dtype=pl.Int64)
    recv = (pl.col("_ts_event_ns") + pl.col("_latency_ns")).cum_max()
    return df.select(
        ts_recv_ns=(recv - idx).cum_max() + idx,
        segment="segment",
        security_id="security_id",
        ltp="ltp",
        ltq="ltq",
        ltt_s="ltt_s",
        volume="volume",
        oi="oi",
        bid="bid",
        ask="ask",
        bid_qty="bid_qty",
        ask_qty="ask_qty",
        kind=pl.lit("full"),
    )


# ---------------------------------------------------------------------------------- session


def generate_session(
    trading_day: date,
    seed: int,
    out_parquet: Path,
    out_instruments_csv: Path,
    *,
    strikes_each_side: int = 10,
    start_hhmm: str = SESSION_OPEN,
    end_hhmm: str = SESSION_CLOSE,
    option_rate_hz: float = DEFAULT_OPTION_RATE_HZ,
    calendar: TradingCalendar | None = None,
) -> SessionSummary:
    """Write a synthetic session (Parquet) and its instruments (compact CSV) for ``trading_day``.

    ``option_rate_hz`` is the at-the-money tick rate of one contract. Raises ValueError when the
    day is not an NSE trading day or the window is empty or outside 09:15-15:30.
    """
    calendar = calendar or load_calendar()
    if not calendar.is_trading_day(trading_day, "NSE"):
        raise ValueError(f"{trading_day} is not an NSE trading day")
    open_min, close_min = hhmm_to_minutes(SESSION_OPEN), hhmm_to_minutes(SESSION_CLOSE)
    start_min, end_min = hhmm_to_minutes(start_hhmm), hhmm_to_minutes(end_hhmm)
    if not open_min <= start_min < end_min <= close_min:
        raise ValueError(f"window {start_hhmm}-{end_hhmm} is not inside the 09:15-15:30 session")
    if option_rate_hz <= 0 or strikes_each_side < 0:
        raise ValueError("option_rate_hz must be > 0 and strikes_each_side >= 0")

    rng = _Rng(seed)
    open_level = round((26_000 + 300 * rng.normal()) * 20) / 20
    levels = index_path(
        seed + 1, (end_min - start_min) * 60, open_level, offset_s=(start_min - open_min) * 60
    )
    atm = round(open_level / STRIKE_STEP_RUPEES) * STRIKE_STEP_RUPEES
    strikes = [
        atm + k * STRIKE_STEP_RUPEES for k in range(-strikes_each_side, strikes_each_side + 1)
    ]
    expiries = _expiries(trading_day, calendar)
    instruments = _contracts(expiries, strikes, seed, calendar)
    traded = [i for i in instruments if i.expiry == expiries[0].isoformat()]
    sessions_after = _sessions_between(trading_day, expiries[0], calendar)

    start_ns = ist_to_ns(trading_day, start_hhmm)
    close_offset_s = (close_min - start_min) * 60.0
    ticks = _index_ticks(rng, levels, start_ns)
    index_rows = len(ticks)

    def years_left(t_s: float) -> float:
        return years_to_expiry(close_offset_s - t_s, sessions_after)

    for contract in traded:
        ticks += _option_ticks(rng, contract, levels, start_ns, years_left, option_rate_hz)
    df = _frame(ticks)

    out_parquet, out_instruments_csv = Path(out_parquet), Path(out_instruments_csv)
    out_parquet.parent.mkdir(parents=True, exist_ok=True)
    out_instruments_csv.parent.mkdir(parents=True, exist_ok=True)
    window = f"{start_hhmm}-{end_hhmm}"
    df.write_parquet(
        out_parquet,
        compression="zstd",
        compression_level=19,
        metadata={
            "synthetic": "true",
            "generator": GENERATOR,
            "seed": str(seed),
            "trading_day": trading_day.isoformat(),
            "label": LABEL,
            "underlying": UNDERLYING,
            "expiry": expiries[0].isoformat(),
            "window_ist": window,
        },
    )
    write_compact_csv(instruments, out_instruments_csv)
    return SessionSummary(
        trading_day=trading_day.isoformat(),
        seed=seed,
        expiry=expiries[0].isoformat(),
        next_expiry=expiries[1].isoformat(),
        window_ist=window,
        rows=df.height,
        index_rows=index_rows,
        option_rows=df.height - index_rows,
        contracts=len(traded),
        index_open=open_level,
        index_high=round(max(levels), 2),
        index_low=round(min(levels), 2),
        index_close=round(levels[-1], 2),
        supertrend_flips=supertrend_flips(levels),
        parquet_path=str(out_parquet),
        parquet_bytes=out_parquet.stat().st_size,
        instruments_path=str(out_instruments_csv),
    )


def _sessions_between(day: date, expiry: date, calendar: TradingCalendar) -> int:
    """Trading sessions after ``day`` up to and including ``expiry``."""
    count, current = 0, day
    while current < expiry:
        current = calendar.next_trading_day(current, "NSE")
        count += current <= expiry
    return count


def main(argv: list[str] | None = None) -> int:
    """``scalper synth --day YYYY-MM-DD --seed N --out DIR [--from HH:MM --to HH:MM]``."""
    parser = argparse.ArgumentParser(
        prog="scalper synth",
        description=f"Generate a {LABEL} NIFTY session: DIR/session.parquet, DIR/instruments.csv.",
    )
    parser.add_argument("--day", type=date.fromisoformat, default=DEFAULT_DAY)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument("--out", type=Path, default=Path("data/sample"))
    parser.add_argument("--from", dest="start", default=SESSION_OPEN, metavar="HH:MM")
    parser.add_argument("--to", dest="end", default=SESSION_CLOSE, metavar="HH:MM")
    parser.add_argument("--strikes-each-side", type=int, default=10)
    parser.add_argument("--option-rate-hz", type=float, default=DEFAULT_OPTION_RATE_HZ)
    args = parser.parse_args(argv)
    began = time.perf_counter()
    try:
        summary = generate_session(
            args.day,
            args.seed,
            args.out / "session.parquet",
            args.out / "instruments.csv",
            strikes_each_side=args.strikes_each_side,
            start_hhmm=args.start,
            end_hhmm=args.end,
            option_rate_hz=args.option_rate_hz,
        )
    except ValueError as exc:
        print(f"scalper synth: {exc}", file=sys.stderr)
        return 2
    out = msgspec.to_builtins(summary) | {"elapsed_s": round(time.perf_counter() - began, 2)}
    print(msgspec.json.encode(out).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
