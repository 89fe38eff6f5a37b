"""Smaller pieces of the live path: indicator warm-up from the intraday charts endpoint (against
the simulator) and `scalper instruments import`."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import orjson
import pytest

from shared.simrun import live_env, start_simulator
from tests.integration.procs import ROOT, Proc, service_env

pytestmark = pytest.mark.integration
SAMPLE = ROOT / "data" / "sample"


def test_signals_warm_up_from_intraday_charts_in_live_mode(pg_schema, namespace, redis_url, tmp_path):
    proc, ready = start_simulator(SAMPLE / "session.parquet", SAMPLE / "instruments.csv",
                                  tmp_path / "dhansim.log", speed="paused")
    try:
        httpx.post(f"{ready['control_url']}/advance", json={"until_ist": "10:00:00"}, timeout=60).raise_for_status()
        env = service_env(namespace, pg_schema.schema, redis_url, pg_schema.url, **live_env(ready),
                          SCALPER_WARMUP_DAY="2026-12-01", SCALPER_BURST="1")
        p = Proc("services.signals", env, tmp_path)
        assert p.p.wait(60) == 0, p.log()[-2000:]
        lines = [orjson.loads(ln) for ln in p.log().splitlines() if '"msg":"warm-up"' in ln]
        nifty = next(ln for ln in lines if ln["index"] == "NIFTY")
        # 09:15-10:00 of the session day is 45 one-minute bars; the forming one is dropped
        assert nifty["source"] == "intraday charts" and 40 <= nifty["candles"] <= 45
    finally:
        proc.terminate()
        proc.wait(20)


def test_instruments_import_from_a_scrip_master_file(pg_schema):
    env = dict(os.environ, DATABASE_URL=pg_schema.url, SCALPER_DB_SCHEMA=pg_schema.schema, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-m", "shared.cli", "instruments", "import", "--file",
                          str(SAMPLE / "instruments.csv")], cwd=ROOT, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "imported 85 instruments" in out.stdout
    led = pg_schema.ledger()
    got = led.load_instruments("NIFTY")
    led.close()
    assert len(got) == 85 and sum(i.option_type in ("CE", "PE") for i in got) == 84
    bad = subprocess.run([sys.executable, "-m", "shared.cli", "instruments", "import"], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--file PATH or --url" in bad.stderr
