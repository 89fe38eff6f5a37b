"""Market state as of the session clock: per-instrument running values and their feed packets.

Prices are rupees (floats, as recorded and as the feed sends them); the order book converts to
paise at its edge. Times are UTC ns; the feed's last-trade time is IST-shifted by
:func:`shared.dhan.codec.utc_s_to_ltt`.
"""

from __future__ import annotations

from collections.abc import Sequence

from services.feed.core import Recorded
from shared.dhan.codec import (
    DEPTH_LEVELS,
    DepthLevel,
    Full,
    OpenInterest,
    Packet,
    PrevClose,
    Quote,
    Ticker,
    encode,
    utc_s_to_ltt,
)
from shared.models import Instrument
from shared.types import SEGMENT_CODES

from .decisions import FEED_OI_SEGMENTS

Key = tuple[str, int]
"""``(segment, security_id)``, the segment as DhanHQ spells it in JSON (``"NSE_FNO"``)."""

_U16 = 0xFFFF
_U32 = 0xFFFF_FFFF
_EMPTY_LEVEL = DepthLevel(0, 0, 0, 0, 0.0, 0.0)


class InstrumentState:
    """Running values of one instrument over the released ticks."""

    __slots__ = (
        "key",
        "segment_code",
        "ticks",
        "last_i",
        "ltp",
        "ltq",
        "ltt_s",
        "volume",
        "oi",
        "bid",
        "ask",
        "bid_qty",
        "ask_qty",
        "open",
        "high",
        "low",
        "oi_high",
        "oi_low",
        "turnover",
        "traded_qty",
        "prev_close",
        "prev_oi",
    )

    def __init__(self, key: Key, prev_close: float, prev_oi: int) -> None:
        self.key = key
        self.segment_code = SEGMENT_CODES[key[0]]
        self.ticks: list[int] = []
        """Indices (into the session) of this instrument's ticks, released or not."""
        self.last_i = -1
        self.ltp = self.bid = self.ask = 0.0
        self.ltq = self.ltt_s = self.volume = self.oi = self.bid_qty = self.ask_qty = 0
        self.open = self.high = self.low = 0.0
        self.oi_high = self.oi_low = 0
        self.turnover = 0.0
        self.traded_qty = 0
        self.prev_close = prev_close
        self.prev_oi = prev_oi

    @property
    def has_data(self) -> bool:
        return self.last_i >= 0

    @property
    def atp(self) -> float:
        return self.turnover / self.traded_qty if self.traded_qty else self.ltp

    def apply(self, i: int, c: dict[str, list]) -> None:
        ltp = float(c["ltp"][i])
        if self.last_i < 0:
            self.open = self.high = self.low = ltp
        else:
            self.high = max(self.high, ltp)
            self.low = min(self.low, ltp)
        self.last_i = i
        self.ltp = ltp
        self.ltq = int(c["ltq"][i])
        self.ltt_s = int(c["ltt_s"][i])
        self.volume = int(c["volume"][i])
        oi = int(c["oi"][i])
        if oi:
            self.oi_high = max(self.oi_high, oi)
            self.oi_low = min(self.oi_low, oi) if self.oi_low else oi
        self.oi = oi
        self.bid, self.ask = float(c["bid"][i]), float(c["ask"][i])
        self.bid_qty, self.ask_qty = int(c["bid_qty"][i]), int(c["ask_qty"][i])
        if self.ltq > 0:
            self.turnover += ltp * self.ltq
            self.traded_qty += self.ltq

    # -------------------------------------------------------------------- packets

    def _ltt(self) -> int:
        return utc_s_to_ltt(self.ltt_s) & _U32

    def depth(self) -> tuple[DepthLevel, ...]:
        top = DepthLevel(
            min(self.bid_qty, _U32),
            min(self.ask_qty, _U32),
            1 if self.bid_qty else 0,
            1 if self.ask_qty else 0,
            self.bid,
            self.ask,
        )
        return (top,) + (_EMPTY_LEVEL,) * (DEPTH_LEVELS - 1)

    def packets(self, mode: str) -> list[Packet]:
        """The packets one tick of this instrument produces in ``mode`` (ticker/quote/full)."""
        seg, sid = self.segment_code, self.key[1]
        if mode == "ticker":
            return [Ticker(segment_code=seg, security_id=sid, ltp=self.ltp, ltt=self._ltt())]
        ltq, volume = min(self.ltq, _U16), min(self.volume, _U32)
        sell_qty, buy_qty = min(self.ask_qty, _U32), min(self.bid_qty, _U32)
        if mode == "quote":
            quote = Quote(
                segment_code=seg,
                security_id=sid,
                ltp=self.ltp,
                ltq=ltq,
                ltt=self._ltt(),
                atp=self.atp,
                volume=volume,
                total_sell_qty=sell_qty,
                total_buy_qty=buy_qty,
                day_open=self.open,
                day_close=0.0,
                day_high=self.high,
                day_low=self.low,
            )
            if self.key[0] not in FEED_OI_SEGMENTS:
                return [quote]
            return [quote, OpenInterest(segment_code=seg, security_id=sid, oi=min(self.oi, _U32))]
        full = Full(
            segment_code=seg,
            security_id=sid,
            ltp=self.ltp,
            ltq=ltq,
            ltt=self._ltt(),
            atp=self.atp,
            volume=volume,
            total_sell_qty=sell_qty,
            total_buy_qty=buy_qty,
            oi=min(self.oi, _U32),
            oi_day_high=min(self.oi_high, _U32),
            oi_day_low=min(self.oi_low, _U32),
            day_open=self.open,
            day_close=0.0,
            day_high=self.high,
            day_low=self.low,
            depth=self.depth(),
        )
        return [full]

    def prev_close_packet(self) -> bytes:
        return encode(
            PrevClose(self.segment_code, self.key[1], self.prev_close, min(self.prev_oi, _U32))
        )


class Market:
    """All instruments of the session and the scrip master, updated tick by tick."""

    def __init__(self, rec: Recorded, instruments: Sequence[Instrument]) -> None:
        self.rec = rec
        self.c = rec.c
        self.instruments: dict[Key, Instrument] = {
            (i.segment, i.security_id): i for i in instruments
        }
        seg_col, sid_col = self.c["segment"], self.c["security_id"]
        self.tick_keys: list[Key] = [(str(seg_col[i]), int(sid_col[i])) for i in range(rec.n)]
        self.states: dict[Key, InstrumentState] = {}
        for i, key in enumerate(self.tick_keys):
            state = self.states.get(key)
            if state is None:
                if key[0] not in SEGMENT_CODES:
                    raise ValueError(f"session tick {i}: unknown segment {key[0]!r}")
                state = InstrumentState(key, float(self.c["ltp"][i]), int(self.c["oi"][i]))
                self.states[key] = state
            state.ticks.append(i)
        for key in self.instruments:
            if key not in self.states and key[0] in SEGMENT_CODES:
                self.states[key] = InstrumentState(key, 0.0, 0)

    def on_tick(self, i: int) -> None:
        self.states[self.tick_keys[i]].apply(i, self.c)

    def state(self, segment: str, security_id: int) -> InstrumentState | None:
        return self.states.get((segment, security_id))

    def instrument(self, segment: str, security_id: int) -> Instrument | None:
        return self.instruments.get((segment, security_id))

    def index_ids(self) -> dict[int, Instrument]:
        """IDX_I instruments by security id."""
        return {k[1]: i for k, i in self.instruments.items() if k[0] == "IDX_I"}
