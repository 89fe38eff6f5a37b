"""Live entries against the DhanHQ simulator: the available balance is fetched between signals,
so a signal is decided on a current balance without a funds call on its path."""

from __future__ import annotations

import orjson
import pytest

from shared.clock import hhmm_to_minutes, ist_minute_of_day
from tests.helpers import eventually
from tests.integration.live_entries import LiveEntries

pytestmark = pytest.mark.integration


def test_live_entries_fetch_funds_between_signals_and_a_signal_uses_them(pg_schema, namespace, redis_url, tmp_path):
    live = LiveEntries(pg_schema, namespace, redis_url, tmp_path, until_hhmm="09:30", config={
        "option_chain": {"broker_chain": False},
        "entries": {"funds_max_age_s": 30.0},  # a fetch between signals stays usable for the test
    })
    r, keys, entries = live.r, live.keys, live.entries
    assert entries is not None
    try:
        t = next(t for t in live.index_ticks if ist_minute_of_day(t.ts_event) >= hhmm_to_minutes("09:25"))

        def funds_counts():
            for k in r.scan_iter(match=keys.heartbeat("entries", "*")):
                hb = orjson.loads(r.get(k) or b"{}")
                if "funds" in hb:
                    return hb["funds"]
            return None

        # no signal yet: the balance is fetched between signals
        idle = eventually(lambda: (c := funds_counts()) and c["idle_fetches"] >= 1 and c, timeout=30,
                          message=f"an idle funds fetch; see {entries.log_path}")
        assert idle["idle_errors"] == 0 and idle["on_path"] == 0 and idle["cached"] == 0
        live.signal("sig-funds-0", t)
        eventually(lambda: live.decisions(), timeout=30, message=f"a decision; see {entries.log_path}")
        ds = live.decisions()
        assert ds and all(d.rule != "funds_unknown" for d in ds), [d.reason for d in ds]  # a known balance
        after = eventually(lambda: (c := funds_counts()) and c["cached"] + c["on_path"] >= 1 and c, timeout=10,
                           message="the signal's funds outcome in the heartbeat")
        assert after["cached"] == 1 and after["on_path"] == 0  # decided on the balance fetched between signals
    finally:
        live.close()
