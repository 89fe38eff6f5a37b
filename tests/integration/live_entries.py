"""Live entries alone against a paused DhanHQ simulator: the set-up the live entries tests share.

The simulator is advanced to ``until_hhmm``; the ticks it has released are written to the ticks
stream as the feed would have written them; the instruments are imported; entries starts in live
mode with the bundled config plus ``config`` (exits and the executor are not running, so the
upstream wait is short). Signals are NIFTY signals at chosen index ticks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import redis
import yaml

from services.feed.core import session_messages
from services.feed.replay import load_session
from shared import wire
from shared.instruments import parse_scrip_master
from shared.keys import Keys
from shared.messages import EntryDecision, Signal, Tick
from shared.simrun import live_env, start_simulator
from tests.integration.procs import ROOT, Proc, service_env

SAMPLE = ROOT / "data" / "sample"


class LiveEntries:
    def __init__(self, pg_schema: Any, namespace: str, redis_url: str, tmp_path: Path, *,
                 until_hhmm: str, config: dict[str, dict[str, Any]]) -> None:
        self.sim, self.ready = start_simulator(SAMPLE / "session.parquet", SAMPLE / "instruments.csv",
                                               tmp_path / "dhansim.log", speed="paused")
        self.control = self.ready["control_url"]
        self.r = redis.Redis.from_url(redis_url)
        self.keys = Keys(namespace)
        self.led = pg_schema.ledger()
        self.entries: Proc | None = None
        self.index_ticks: list[Tick] = []
        self._dec = wire.StreamDecoder("entries.decisions")
        try:
            httpx.post(f"{self.control}/advance", json={"until_ist": f"{until_hhmm}:00"},
                       timeout=60).raise_for_status()
            self.led.upsert_instruments(parse_scrip_master(SAMPLE / "instruments.csv"))
            cfg = yaml.safe_load((ROOT / "config" / "algo.yml").read_text())
            cfg["runtime"]["upstream_wait_s"] = 0.05  # exits/executor are not running here
            for section, values in config.items():
                cfg[section].update(values)
            cfg_path = tmp_path / "algo.yml"
            cfg_path.write_text(yaml.safe_dump(cfg))
            rec = load_session(SAMPLE / "session.parquet", from_hhmm="09:15", to_hhmm=until_hhmm)
            pipe = self.r.pipeline(transaction=False)
            for tid, msg in session_messages(rec, lambda: 0):
                pipe.xadd(self.keys.stream("ticks"), wire.encode(msg), id=tid)
                if isinstance(msg, Tick) and msg.segment == "IDX_I" and msg.security_id == 13:
                    self.index_ticks.append(msg)
            pipe.execute()
            env = service_env(namespace, pg_schema.schema, redis_url, pg_schema.url, **live_env(self.ready),
                              SCALPER_CONFIG=str(cfg_path))
            self.entries = Proc("services.entries", env, tmp_path)
        except BaseException:
            self.close()
            raise

    def signal(self, msg_id: str, t: Tick) -> None:
        """Publish a bullish NIFTY signal caused by index tick ``t``."""
        sig = Signal(msg_id=msg_id, ts_event=t.ts_event, ts_init=0, tick_id=t.tick_id,
                     index="NIFTY", direction="bullish", timeframe_min=1, candle_ts=t.ts_event,
                     close_paise=t.ltp_paise, supertrend_paise=t.ltp_paise - 2000, adx=20.0,
                     confidence=0.7, multiplier=1, reason="test signal")
        self.r.xadd(self.keys.stream("signals"), wire.encode(sig))

    def decisions(self) -> list[EntryDecision]:
        return [self._dec.decode(f) for _, f in self.r.xrange(self.keys.stream("entries.decisions"))]

    def stop_entries(self) -> None:
        if self.entries is not None:
            self.entries.terminate()
            self.entries = None

    def close(self) -> None:
        self.stop_entries()
        self.sim.terminate()
        self.sim.wait(20)
        self.r.close()
        self.led.close()
