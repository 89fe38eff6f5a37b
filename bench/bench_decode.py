"""Decode throughput of the DhanHQ feed codec, in packets per second on one core.

Usage: ``.venv/bin/python bench/bench_decode.py [--quick] [--seed N]``. Prints, for each
scenario, the median over several runs of (packets decoded / CPU seconds of this process), measured
with ``time.process_time`` over seeded synthetic packets: "per second on one core" means per
second of CPU, so a busy shared machine (other processes taking turns on the cores) changes the
figure far less than wall-clock time would.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from shared.dhan import codec  # noqa: E402
from shared.dhan.codec import DepthLevel, Full, PrevClose, Quote, Ticker  # noqa: E402


def _price(rng: random.Random) -> float:
    return round(rng.uniform(0.05, 2_000.0), 2)


def make_full(rng: random.Random) -> Full:
    """A plausible Full packet for a NIFTY option (values rounded to float32 by encoding)."""
    ltp = _price(rng)
    depth = tuple(
        DepthLevel(
            bid_qty=rng.randrange(0, 50_000),
            ask_qty=rng.randrange(0, 50_000),
            bid_orders=rng.randrange(0, 500),
            ask_orders=rng.randrange(0, 500),
            bid_price=max(ltp - 0.05 * (i + 1), 0.05),
            ask_price=ltp + 0.05 * (i + 1),
        )
        for i in range(codec.DEPTH_LEVELS)
    )
    return Full(
        segment_code=2,
        security_id=rng.randrange(35_000, 90_000),
        ltp=ltp,
        ltq=rng.choice((75, 150, 225, 750)),
        ltt=1_750_000_000 + rng.randrange(0, 22_500),
        atp=_price(rng),
        volume=rng.randrange(0, 50_000_000),
        total_sell_qty=rng.randrange(0, 5_000_000),
        total_buy_qty=rng.randrange(0, 5_000_000),
        oi=rng.randrange(0, 20_000_000),
        oi_day_high=rng.randrange(0, 20_000_000),
        oi_day_low=rng.randrange(0, 20_000_000),
        day_open=_price(rng),
        day_close=0.0,
        day_high=_price(rng),
        day_low=_price(rng),
        depth=depth,
    )


def make_mixed(rng: random.Random) -> codec.Packet:
    """Mostly Full, some Ticker / Quote / Prev Close, as a mixed subscription would see."""
    roll = rng.random()
    if roll < 0.7:
        return make_full(rng)
    sid = rng.randrange(35_000, 90_000)
    if roll < 0.85:
        return Ticker(2, sid, _price(rng), 1_750_000_000 + rng.randrange(0, 22_500))
    if roll < 0.97:
        return Quote(
            2,
            sid,
            _price(rng),
            75,
            1_750_000_000,
            _price(rng),
            10,
            20,
            30,
            _price(rng),
            0.0,
            _price(rng),
            _price(rng),
        )
    return PrevClose(2, sid, _price(rng), rng.randrange(0, 20_000_000))


def measure(name: str, runs: int, count: int, body: Callable[[], object]) -> float:
    rates = []
    for _ in range(runs):
        start = time.process_time()
        body()
        rates.append(count / max(time.process_time() - start, 1e-9))
    median = statistics.median(rates)
    print(
        f"{name:<44} {median:>12,.0f} packets/s  (median of {runs}, min {min(rates):,.0f}, "
        f"max {max(rates):,.0f})"
    )
    return median


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer packets and runs (smoke)")
    parser.add_argument("--seed", type=int, default=20250714)
    args = parser.parse_args(argv)

    distinct, repeat, runs = (2_000, 5, 3) if args.quick else (10_000, 20, 7)
    rng = random.Random(args.seed)
    print(
        f"seed={args.seed} python={sys.version.split()[0]} distinct={distinct} "
        f"repeat={repeat} runs={runs}"
    )
    fulls = [codec.encode(make_full(rng)) for _ in range(distinct)] * repeat
    mixed = [codec.encode(make_mixed(rng)) for _ in range(distinct)] * repeat
    stacked = [b"".join(fulls[i : i + 10]) for i in range(0, len(fulls), 10)]
    n = len(fulls)

    decode_message = codec.decode_message
    decode_messages = codec.decode_messages

    def one_by_one(messages: list[bytes]) -> Callable[[], object]:
        def body() -> None:
            for m in messages:
                decode_message(m)

        return body

    gc.collect()
    headline = measure("Full, decode_message per message", runs, n, one_by_one(fulls))
    batches = [fulls[i : i + 100] for i in range(0, n, 100)]

    def batched() -> None:
        for batch in batches:
            decode_messages(batch)

    measure("Full, decode_messages in batches of 100", runs, n, batched)
    lenient = codec.decode_message_lenient

    def one_by_one_lenient() -> None:
        for m in fulls:
            lenient(m)

    measure("Full, decode_message_lenient per message", runs, n, one_by_one_lenient)
    measure("Full, 10 packets per message", runs, n, one_by_one(stacked))
    measure("mixed 70% Full, decode_message", runs, len(mixed), one_by_one(mixed))
    unpack = codec._FULL.unpack_from

    def unpack_only() -> None:
        for m in fulls:
            unpack(m, 0)

    measure("ceiling: struct unpack_from alone (Full)", runs, n, unpack_only)
    print(f"HEADLINE Full packets/s (decode_message, one core): {headline:,.0f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
