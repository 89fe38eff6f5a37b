"""The recorder on real Redis, as a process: every tick on disk exactly once, through crashes and
trims; acks only after the part is on disk; raw captures through the real DhanHQ decoder."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path

import msgspec
import orjson
import polars as pl
import pytest

from services.feed.core import Recorded, session_messages
from services.feed.replay import load_session, read_metadata
from services.recorder import core
from services.recorder.service import RawRecorder, raw_to_parquet, raw_to_ticks
from shared import wire
from shared.clock import ist_to_ns
from shared.dhan import codec
from shared.dhan.codec import DepthLevel, Full, OpenInterest, PrevClose, Quote, Ticker
from shared.keys import Keys
from shared.messages import Message, Tick
from tests.helpers import eventually
from tests.integration.procs import ROOT, Proc

pytestmark = pytest.mark.integration

DAY = "2026-01-06"


def recorder_env(namespace: str, redis_url: str, record_dir: Path, **extra: str) -> dict[str, str]:
    import os

    env = dict(os.environ)
    env.update({"SCALPER_NAMESPACE": namespace, "REDIS_URL": redis_url, "PYTHONPATH": str(ROOT),
                "PYTHONUNBUFFERED": "1", "SCALPER_RECORD_DIR": str(record_dir),
                "SCALPER_INSTANCE": "rec-1", "SCALPER_RECORD_FLUSH_S": "0.2"})
    env.pop("SCALPER_REPLAY_FILE", None)
    env.update(extra)
    return env


def start(tmp_path: Path, env: dict[str, str], name: str) -> Proc:
    return Proc("services.recorder", env, tmp_path, name=name)


def session(rng, n: int) -> list[tuple[str, Message]]:
    """A recorded-session stream as the feed writes it: ticks, Clock every second, SessionEnd."""
    t0 = ist_to_ns(date.fromisoformat(DAY), "09:15")
    ts, cols = t0, {c: [] for c in Recorded.COLUMNS}
    for _ in range(n):
        ts += rng.choice([0, 0, 1, 250_000, 3_000_000, 40_000_000, 300_000_000])  # same-ms bursts too
        sid = rng.choice([13, 25, 40001, 40002])
        ltp_paise = rng.randrange(500, 2_600_000)
        cols["ts_recv_ns"].append(ts)
        cols["segment"].append("IDX_I" if sid < 100 else "NSE_FNO")
        cols["security_id"].append(sid)
        cols["ltp"].append(ltp_paise / 100)
        cols["ltq"].append(rng.randrange(0, 2000))
        cols["ltt_s"].append(ts // 10**9)
        cols["volume"].append(rng.randrange(0, 10**8))
        cols["oi"].append(rng.randrange(0, 10**7))
        cols["bid"].append((ltp_paise - rng.randrange(0, 50)) / 100)
        cols["ask"].append((ltp_paise + rng.randrange(0, 50)) / 100)
        cols["bid_qty"].append(rng.randrange(0, 5000))
        cols["ask_qty"].append(rng.randrange(0, 5000))
        cols["kind"].append(rng.choice(["full", "quote", "ticker"]))
    rec = Recorded(cols, DAY)
    return list(session_messages(rec, lambda: 7, clock_interval_ms=1000, tick_paise=lambda s, i: 1))


def write(sync_redis, keys: Keys, msgs: list[tuple[str, Message]]) -> None:
    """As the feed does: explicit, deterministic ids."""
    pipe = sync_redis.pipeline(transaction=False)
    for tid, m in msgs:
        pipe.xadd(keys.stream("ticks"), wire.encode(m), id=tid)
    pipe.execute()


def only_ticks(msgs: list[tuple[str, Message]]) -> list[Tick]:
    return [m for _, m in msgs if isinstance(m, Tick)]


def replayed(path: Path) -> list[Tick]:
    """The ticks a replay of ``path`` publishes (1-paisa ticks: no rounding), ts_init zeroed."""
    msgs = session_messages(load_session(path), lambda: 7, tick_paise=lambda s, i: 1)
    return [m for _, m in msgs if isinstance(m, Tick)]


def status(sync_redis, keys: Keys) -> dict:
    raw = sync_redis.get(core.status_key(keys))
    return orjson.loads(raw) if raw else {}


def group(sync_redis, keys: Keys) -> dict:
    for g in sync_redis.xinfo_groups(keys.stream("ticks")):
        if g["name"] == b"recorder":
            return g
    return {}


def parts(record_dir: Path) -> list[Path]:
    d = record_dir / DAY
    return sorted(d.glob("part-*.parquet")) if d.is_dir() else []


def same_ticks(got: list[Tick], want: list[Tick]) -> None:
    assert len(got) == len(want), f"{len(got)} ticks read back, {len(want)} written"
    for g, w in zip(got, want, strict=True):
        assert g == msgspec.structs.replace(w, ts_init=7), (g, w)


def test_recorded_session_replays_exactly_the_ticks_written(namespace, redis_url, sync_redis, tmp_path, rng):
    keys = Keys(namespace)
    rec_dir = tmp_path / "rec"
    msgs = session(rng, 3000)
    write(sync_redis, keys, msgs)
    env = recorder_env(namespace, redis_url, rec_dir, SCALPER_RECORD_FLUSH_ROWS="700")
    p = start(tmp_path, env, "recorder")
    try:
        # SessionEnd compacts the day automatically, then is acked last.
        eventually(lambda: (rec_dir / f"{DAY}.parquet").exists() and group(sync_redis, keys).get("pending") == 0,
                   30, message="compacted day and nothing pending")
        st = eventually(lambda: (s := status(sync_redis, keys)).get("compacted") and s, 10)
        hb = eventually(lambda: sync_redis.get(keys.heartbeat("recorder", "rec-1")), 10)
        assert p.terminate() == 0, p.log()[-3000:]
    finally:
        p.kill()
    ticks = only_ticks(msgs)
    same_ticks(replayed(rec_dir / f"{DAY}.parquet"), ticks)
    assert st["compacted"] == {DAY: len(ticks)}
    assert st["last_written_tick_id"] == ticks[-1].tick_id and st["buffered_rows"] == 0
    assert st["parts_written"] >= 4, "rotation by rows: several parts merged into the day"
    assert {"buffered_rows", "last_written_tick_id", "lag"} <= set(orjson.loads(hb))
    df = pl.read_parquet(rec_dir / f"{DAY}.parquet")
    assert df["tick_id"].to_list() == [t.tick_id for t in ticks]
    assert [round(x * 100) for x in df["ltp"].to_list()] == [t.ltp_paise for t in ticks]
    meta = read_metadata(rec_dir / f"{DAY}.parquet")
    assert meta["trading_day"] == DAY and meta["synthetic"] == "false" and meta["recorder"] == "1"
    assert not (rec_dir / DAY).exists(), "parts are removed after compaction"
    assert group(sync_redis, keys)["lag"] == 0


def test_sigkill_with_rows_buffered_loses_no_tick_and_acks_nothing_early(namespace, redis_url, sync_redis, tmp_path, rng):
    keys = Keys(namespace)
    rec_dir = tmp_path / "rec"
    msgs = session(rng, 2000)
    first, rest = msgs[:1200], msgs[1200:]
    write(sync_redis, keys, first)
    slow = {"SCALPER_RECORD_FLUSH_S": "3600", "SCALPER_RECORD_FLUSH_ROWS": "1000000"}
    p = start(tmp_path, recorder_env(namespace, redis_url, rec_dir, **slow), "victim")
    try:
        eventually(lambda: status(sync_redis, keys).get("buffered_entries") == len(first), 30,
                   message="everything read and buffered")
        g = group(sync_redis, keys)
        assert g["pending"] == len(first), "an entry was acked before it was on disk"
        assert parts(rec_dir) == []
        p.kill()  # SIGKILL: the buffer dies with the process
    finally:
        p.kill()
    write(sync_redis, keys, rest)
    p2 = start(tmp_path, recorder_env(namespace, redis_url, rec_dir), "restarted")
    try:
        eventually(lambda: (rec_dir / f"{DAY}.parquet").exists() and group(sync_redis, keys).get("pending") == 0,
                   30, message="recovered and compacted")
        assert p2.terminate() == 0, p2.log()[-3000:]
    finally:
        p2.kill()
    same_ticks(replayed(rec_dir / f"{DAY}.parquet"), only_ticks(msgs))


def test_sigterm_writes_and_acks_the_buffer_before_exiting(namespace, redis_url, sync_redis, tmp_path, rng):
    keys = Keys(namespace)
    rec_dir = tmp_path / "rec"
    msgs = session(rng, 800)[:-1]
    write(sync_redis, keys, msgs)
    slow = {"SCALPER_RECORD_FLUSH_S": "3600", "SCALPER_RECORD_FLUSH_ROWS": "1000000"}
    p = start(tmp_path, recorder_env(namespace, redis_url, rec_dir, **slow), "graceful")
    try:
        eventually(lambda: status(sync_redis, keys).get("buffered_entries") == len(msgs), 30)
        assert parts(rec_dir) == []
        assert p.terminate() == 0, p.log()[-3000:]
    finally:
        p.kill()
    assert group(sync_redis, keys)["pending"] == 0
    written = pl.concat([pl.read_parquet(x) for x in parts(rec_dir)])
    assert written["tick_id"].to_list() == [t.tick_id for t in only_ticks(msgs)]


def test_crash_after_part_rename_before_ack_duplicates_on_disk_and_compaction_removes_them(
        namespace, redis_url, sync_redis, tmp_path, rng):
    keys = Keys(namespace)
    rec_dir = tmp_path / "rec"
    msgs = session(rng, 1500)
    body, end = msgs[:-1], msgs[-1:]  # hold the SessionEnd back: compact by hand
    write(sync_redis, keys, body)
    crash = recorder_env(namespace, redis_url, rec_dir, SCALPER_RECORD_FAULT="exit_after_write",
                         SCALPER_RECORD_FLUSH_ROWS="400")
    p = start(tmp_path, crash, "crasher")
    try:
        assert p.p.wait(30) == 70, p.log()[-3000:]
    finally:
        p.kill()
    written = parts(rec_dir)
    assert len(written) == 1
    on_disk = pl.read_parquet(written[0])["tick_id"].to_list()
    assert on_disk, "the crashed flush wrote its part"
    assert group(sync_redis, keys)["pending"] >= len(on_disk), "the written part was not acked"
    p2 = start(tmp_path, recorder_env(namespace, redis_url, rec_dir, SCALPER_BURST="1"), "burst")
    assert p2.p.wait(60) == 0, p2.log()[-3000:]
    p2.kill()
    assert group(sync_redis, keys)["pending"] == 0
    rows = pl.concat([pl.read_parquet(x) for x in parts(rec_dir)])
    assert rows.height == len(only_ticks(body)) + len(on_disk), "the crashed part's ticks are on disk twice"
    out = subprocess.run([sys.executable, "-m", "services.recorder", "--compact", DAY, "--dir", str(rec_dir)],
                         cwd=ROOT, capture_output=True, text=True, timeout=60,
                         env=recorder_env(namespace, redis_url, rec_dir))
    assert out.returncode == 0, out.stderr
    assert f"{len(on_disk)} duplicates removed" in out.stdout
    same_ticks(replayed(rec_dir / f"{DAY}.parquet"), only_ticks(msgs))
    # The held-back SessionEnd still arrives later: compaction of an already compacted day is a no-op.
    write(sync_redis, keys, end)
    p3 = start(tmp_path, recorder_env(namespace, redis_url, rec_dir, SCALPER_BURST="1"), "end")
    assert p3.p.wait(60) == 0, p3.log()[-3000:]
    p3.kill()
    same_ticks(replayed(rec_dir / f"{DAY}.parquet"), only_ticks(msgs))
    assert group(sync_redis, keys)["pending"] == 0 and group(sync_redis, keys)["lag"] == 0


def _plain_ticks(start: int, n: int) -> list[tuple[str, Tick]]:
    t0 = ist_to_ns(date.fromisoformat(DAY), "10:00")
    out = []
    for i in range(start, start + n):
        ts = t0 + i * 1_000_000
        tid = f"{ts // 1_000_000}-0"
        out.append((tid, Tick(msg_id=f"tick-{tid}", ts_event=ts, ts_init=ts, tick_id=tid,
                              segment="NSE_FNO", security_id=40001, ltp_paise=10_000 + i)))
    return out


def test_trim_while_stopped_loses_only_unwritten_ticks_and_never_one_that_was_acked(
        namespace, redis_url, sync_redis, tmp_path):
    """Pending entries survive a trim only as ids. The recorder acks nothing before it is on disk,
    so what a trim takes from its pending list is exactly what was never written: those ids come
    back as dead letters, and ticks trimmed before it read them are counted in its status."""
    keys = Keys(namespace)
    rec_dir = tmp_path / "rec"
    read_first = _plain_ticks(0, 500)
    write(sync_redis, keys, read_first)
    slow = {"SCALPER_RECORD_FLUSH_S": "3600", "SCALPER_RECORD_FLUSH_ROWS": "1000000"}
    p = start(tmp_path, recorder_env(namespace, redis_url, rec_dir, **slow), "victim")
    try:
        eventually(lambda: status(sync_redis, keys).get("buffered_rows") == 500, 30)
        assert group(sync_redis, keys)["pending"] == 500 and parts(rec_dir) == []
        p.kill()  # SIGKILL
    finally:
        p.kill()
    never_read = _plain_ticks(500, 300)
    write(sync_redis, keys, never_read)
    sync_redis.xtrim(keys.stream("ticks"), maxlen=100, approximate=False)  # 700 entries gone
    p2 = start(tmp_path, recorder_env(namespace, redis_url, rec_dir, SCALPER_BURST="1"), "after-trim")
    assert p2.p.wait(60) == 0, p2.log()[-3000:]
    p2.kill()
    on_disk = pl.concat([pl.read_parquet(x) for x in parts(rec_dir)])["tick_id"].to_list()
    assert on_disk == [tid for tid, _ in never_read[200:]], "only the ticks still in the stream"
    dead = [wire.StreamDecoder("deadletter").decode(f)
            for _, f in sync_redis.xrange(keys.stream("deadletter"))]
    assert sorted((d.entry_id for d in dead), key=lambda s: int(s.split("-")[0])) == [
        tid for tid, _ in read_first], "every pending id the trim took is dead-lettered, not silently acked"
    assert all("no longer exists" in d.error for d in dead)
    assert group(sync_redis, keys)["pending"] == 0
    st = status(sync_redis, keys)
    assert st["trimmed_unread"] == 200 and st["trim_gaps"][0]["after_id"] == read_first[-1][0]
    assert '"count":200' in p2.log(), "the loss is logged"


# --------------------------------------------------------------------------- raw capture


def _depth(bid: float, ask: float) -> tuple[DepthLevel, ...]:
    return tuple(DepthLevel(300 + i, 450 + i, 3, 4, bid - 0.05 * i, ask + 0.05 * i) for i in range(5))


def test_raw_capture_round_trips_through_the_real_decoder_into_a_replayable_session(tmp_path, rng):
    t0 = ist_to_ns(date.fromisoformat(DAY), "09:15")
    ltt = codec.utc_s_to_ltt(t0 // 10**9)
    expected: list[dict] = []
    frames: list[tuple[int, bytes]] = []
    for i in range(400):
        recv = t0 + i * 137_000_000
        ltp = rng.randrange(2000, 40000) * 0.25  # float32-exact rupees, multiples of 5 paise
        kind = rng.choice(["full", "quote", "ticker"])
        sid = 40000 + rng.randrange(5)
        if kind == "full":
            pkt = Full(2, sid, ltp, 75, ltt + i, ltp, 1000 + i, 10, 20, 5000 + i, 6000, 4000,
                       ltp, ltp, ltp, ltp, _depth(ltp - 0.25, ltp + 0.25))
            exp = dict(ltq=75, volume=1000 + i, oi=5000 + i, bid=ltp - 0.25, ask=ltp + 0.25,
                       bid_qty=300, ask_qty=450)
        elif kind == "quote":
            pkt = Quote(2, sid, ltp, 50, ltt + i, ltp, 2000 + i, 1, 2, ltp, ltp, ltp, ltp)
            exp = dict(ltq=50, volume=2000 + i, oi=0, bid=0.0, ask=0.0, bid_qty=0, ask_qty=0)
        else:
            pkt = Ticker(0, 13, ltp, ltt + i)
            sid = 13
            exp = dict(ltq=0, volume=0, oi=0, bid=0.0, ask=0.0, bid_qty=0, ask_qty=0)
        extra = [OpenInterest(2, sid, 1), PrevClose(2, sid, 1.0, 2)] if i % 7 == 0 else []
        frame = codec.encode_message([pkt, *extra])
        if i % 50 == 0:
            frame += bytes([99, 12, 0]) + bytes(9)  # an unknown packet code: skipped, counted
        frames.append((recv, frame))
        expected.append(dict(ts_recv_ns=recv, segment="IDX_I" if sid == 13 else "NSE_FNO",
                             security_id=sid, ltp=ltp, ltt_s=t0 // 10**9 + i, kind=kind, **exp))
    with RawRecorder(tmp_path / "rec") as raw:
        for recv, frame in frames:
            raw.append(frame, recv)
    raw_path = tmp_path / "rec" / "raw" / f"{DAY}.dhanraw"
    assert raw_path.read_bytes()[:8] == core.RAW_MAGIC

    ticks = list(raw_to_ticks(raw_path))
    assert [t.ts_event for t in ticks] == [e["ts_recv_ns"] for e in expected]
    assert ticks[0].tick_id == f"{t0 // 10**6}-0" and ticks[0].msg_id == f"tick-{ticks[0].tick_id}"

    out = subprocess.run([sys.executable, "-m", "services.recorder", "--raw-to-parquet", str(raw_path),
                          str(tmp_path / "from_raw.parquet")], cwd=ROOT, capture_output=True, text=True,
                         timeout=60, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert "400 ticks, 8 malformed packets skipped" in out.stdout
    rec = load_session(tmp_path / "from_raw.parquet")
    assert rec.trading_day == DAY and rec.n == 400
    for i, e in enumerate(expected):
        got = {k: rec.c[k][i] for k in e}
        assert got == e, (i, got, e)
    res = raw_to_parquet(raw_path, tmp_path / "again.parquet")
    assert pl.read_parquet(tmp_path / "again.parquet").equals(pl.read_parquet(tmp_path / "from_raw.parquet"))
    assert res.rows == 400 and res.packet_errors == 8
