"""The broker's option chain in live mode: its legs, the call gate, and the on-demand fetch.

Entries decides on a chain view built from ticks (``services.entries.chain``); in live mode the
shell also merges the broker's chain of the selected expiry into that view for OI, IV and delta
(:class:`BrokerChainFeed`, fetched on demand with a cache, see ``services.entries.service``).
:class:`ChainCallGate` spaces the calls: DhanHQ allows one option-chain call per 3 s per account.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgspec

from shared.config import OptionChainConfig
from shared.dhan.rest import DhanRest, OptionChain
from shared.errors import BrokerError
from shared.messages import Signal
from shared.types import NS_PER_S

if TYPE_CHECKING:
    from services.entries.chain import ChainView

log = logging.getLogger("entries")


class BrokerLeg(msgspec.Struct, frozen=True, kw_only=True):
    """One option in the broker's chain: OI in contracts, IV in percent (DhanHQ sends 9.789 for
    9.789 %, reference §3.11), delta per ₹1 of spot."""

    oi: int
    iv_pct100: float
    delta: float


class BrokerChain(msgspec.Struct, frozen=True, kw_only=True):
    """The broker's chain of one expiry as merged: legs by security id, as of ``ts_asof`` (event
    time, UTC ns, of the signal it was fetched for)."""

    expiry: str
    ts_asof: int
    legs: dict[int, BrokerLeg]


class ChainCallGate:
    """At most one broker option-chain call per ``min_interval_s`` of wall time, all indices
    together (DhanHQ counts one per 3 s per account). ``now_ns`` is the shell's wall clock: the
    broker counts real seconds, so this is the one place here that is not event time. Never
    waits; a refused caller goes on without the chain.

    The interval runs from the end of the previous call, not its start: the broker counts a
    request when it arrives, somewhere between the two, so spacing starts by the interval could
    still land two arrivals closer than it (a slow first call, then a fast one)."""

    def __init__(self, min_interval_s: float, now_ns: Callable[[], int]) -> None:
        self._interval_ns = round(min_interval_s * NS_PER_S)
        self._now_ns = now_ns
        self._last_ns: int | None = None
        self._busy = False

    def wait_s(self) -> float:
        """Seconds until the next call is allowed (0.0: now; the interval while one is running)."""
        if self._busy:
            return self._interval_ns / NS_PER_S
        if self._last_ns is None:
            return 0.0
        return max(0, self._last_ns + self._interval_ns - self._now_ns()) / NS_PER_S

    def try_take(self) -> bool:
        """Take the slot if it is free now. Every taken slot must be followed by :meth:`done`
        when the call has ended, whatever its outcome."""
        now = self._now_ns()
        if self._busy or (self._last_ns is not None and now - self._last_ns < self._interval_ns):
            return False
        self._busy = True
        self._last_ns = now
        return True

    def done(self) -> None:
        """The call ended (answer, error or timeout): the next one may start an interval later."""
        self._busy = False
        self._last_ns = self._now_ns()


def chain_legs(chain: OptionChain) -> dict[tuple[int, str], BrokerLeg]:
    """The broker's chain as legs keyed by (strike paise, "CE"/"PE")."""
    out: dict[tuple[int, str], BrokerLeg] = {}
    for strike, row in chain.strikes.items():
        for option_type, leg in (("CE", row.ce), ("PE", row.pe)):
            if leg is not None:
                out[(strike, option_type)] = BrokerLeg(
                    oi=leg.oi, iv_pct100=leg.implied_volatility, delta=leg.delta
                )
    return out


class BrokerChainFeed:
    """Live mode: the broker's option chain merged into a chain view when a signal needs it.

    ``rest`` should not retry (a failed call is retried by a later signal, after the gate's
    interval). Counters go to the heartbeat; each call and each failure is logged.
    """

    def __init__(self, rest: DhanRest, cfg: OptionChainConfig, now_ns: Callable[[], int]) -> None:
        self.rest = rest
        self.cfg = cfg
        self.gate = ChainCallGate(cfg.broker_chain_min_interval_s, now_ns)
        self.counts = {"calls": 0, "merged": 0, "errors": 0, "rate_skipped": 0, "fresh": 0}

    async def refresh(self, view: ChainView, signal: Signal) -> str:
        """Fetch and merge the chain ``signal`` wants, if due and the slot is free. Returns the
        outcome: "fresh", "merged", "rate_skipped", "error" or "no_expiry". Never raises a
        broker error or waits for the slot."""
        expiry = view.broker_chain_due(signal.ts_event)
        if not expiry:
            outcome = "fresh" if view.expiry_for(signal.ts_event) else "no_expiry"
            if outcome == "fresh":
                self.counts["fresh"] += 1
            return outcome
        fields: dict[str, Any] = {"signal_id": signal.msg_id, "index": signal.index, "expiry": expiry}
        if not self.gate.try_take():
            self.counts["rate_skipped"] += 1
            log.info("option chain not fetched: call slot busy; Black-Scholes from ticks",
                     extra={"fields": {**fields, "slot_free_in_s": round(self.gate.wait_s(), 3)}})
            return "rate_skipped"
        self.counts["calls"] += 1
        ix = view.index
        try:
            async with asyncio.timeout(self.cfg.broker_chain_timeout_s):
                chain = await self.rest.option_chain(ix.security_id, ix.segment, expiry)
        except (BrokerError, TimeoutError) as exc:
            self.counts["errors"] += 1
            code = exc.code if isinstance(exc, BrokerError) else "TIMEOUT"
            error = str(exc) or f"no answer within {self.cfg.broker_chain_timeout_s:g}s"
            log.warning("option chain failed; Black-Scholes from ticks", extra={"fields": {
                **fields, "code": code, "error": error, "errors": self.counts["errors"]}})
            return "error"
        finally:
            self.gate.done()  # the interval runs from the end of this call
        kept = view.merge_broker_chain(expiry, signal.ts_event, chain_legs(chain))
        self.counts["merged"] += 1
        log.info("option chain merged", extra={"fields": {
            **fields, "strikes": len(chain.strikes), "legs_kept": kept, "ts_asof": signal.ts_event}})
        return "merged"
