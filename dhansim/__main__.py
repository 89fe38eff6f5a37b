"""``python -m dhansim --session PATH --instruments CSV [--speed N|R/s|max|paused] …``

Prints one JSON line ``{"event": "ready", "ports": {...}, ...}`` once every server listens,
then JSON log lines; SIGTERM / SIGINT stop it (exit 0).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import signal
import sys
import time

from .clock import parse_speed, speed_label
from .decisions import SOD_LIMIT_RUPEES
from .faults import parse_spec
from .server import DEFAULT_CLIENT_ID, DEFAULT_TOKEN, SimConfig, Simulator


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m dhansim",
        description="DhanHQ v2 simulator on loopback: REST, market feed and order-update "
        "WebSockets serving a recorded session.",
    )
    p.add_argument("--session", required=True, help="recorded session (Parquet)")
    p.add_argument("--instruments", required=True, help="scrip master CSV (compact or detailed)")
    p.add_argument("--speed", default="1", help="N (× real time), R/s (a steady R ticks per second, e.g. 2000/s), 'max' or 'paused' (default 1)")
    p.add_argument("--host", default="127.0.0.1", help="loopback address to bind")
    p.add_argument("--rest-port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--feed-port", type=int, default=0)
    p.add_argument("--order-ws-port", type=int, default=0)
    p.add_argument("--token", default=DEFAULT_TOKEN, help="expected access token")
    p.add_argument("--client-id", default=DEFAULT_CLIENT_ID, help="expected client id")
    p.add_argument("--faults", default="", metavar="SPEC", help="e.g. http_429=3,delay_ms=200")
    p.add_argument("--funds", type=float, default=SOD_LIMIT_RUPEES, help="sodLimit in rupees")
    p.add_argument("--no-rate-limits", action="store_true", help="do not enforce rate limits")
    p.add_argument("--from", dest="from_hhmm", metavar="HH:MM", help="replay from (IST)")
    p.add_argument("--to", dest="to_hhmm", metavar="HH:MM", help="replay until (IST)")
    p.add_argument("--log-level", default="INFO")
    return p


async def _serve(config: SimConfig) -> None:
    sim = Simulator(config)
    await sim.start()
    ready = {
        "event": "ready",
        "ports": sim.ports,
        "rest_url": sim.rest_url,
        "feed_url": sim.feed_base_url,
        "order_ws_url": sim.order_ws_url,
        "control_url": sim.control_url,
        "speed": speed_label(sim.clock.speed),
        "ticks": sim.clock.n,
        "trading_day": sim.trading_day,
    }
    print(json.dumps(ready), flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await sim.stop()


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_JsonFormatter())
    logging.basicConfig(level=args.log_level.upper(), handlers=[handler])
    logging.getLogger("websockets").setLevel(logging.WARNING)
    try:
        parse_spec(args.faults)
        config = SimConfig(
            session=args.session,
            instruments=args.instruments,
            speed=parse_speed(args.speed),
            host=args.host,
            rest_port=args.rest_port,
            feed_port=args.feed_port,
            order_ws_port=args.order_ws_port,
            token=args.token,
            client_id=args.client_id,
            faults=args.faults,
            funds_rupees=args.funds,
            rate_limits=not args.no_rate_limits,
            from_hhmm=args.from_hhmm,
            to_hhmm=args.to_hhmm,
        )
        asyncio.run(_serve(config))
    except (ValueError, OSError) as exc:
        print(f"dhansim: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
