"""Peak memory (VmHWM) and CPU time of each supervised program during a replay, and the floor.

:class:`ServiceSampler` finds the programs' pids with ``supervisorctl status`` (one call for all
seven; again only when a pid disappears, so a restart is noticed and counted) and reads
``/proc/<pid>/status`` (VmHWM: the process's peak resident set, kept by the kernel, so sampling
late loses nothing) and ``/proc/<pid>/stat`` (user + system CPU seconds) every few hundred ms.

The floor (:func:`floor_rss_kb`): the peak RSS of a bare interpreter, and of one that has only
imported what the services import (redis, msgspec, psycopg, polars and the project), measured in
child processes of the same venv.

    .venv/bin/python bench/memory.py          # prints the floor
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import ROOT, proc_cpu_s, proc_status_kb

PROGRAMS = ("feed", "signals", "entries", "executor", "exits", "sync", "recorder")
_STATUS_RE = re.compile(r"^scalper:(\S+)\s+(\S+)\s+pid (\d+)", re.M)


@dataclass
class ProgramStats:
    pids: list[int] = field(default_factory=list)
    hwm_kb: int = 0
    rss_kb: int = 0
    cpu_s: dict[int, float] = field(default_factory=dict)  # pid -> last CPU seconds read
    timeline: list[tuple[float, int, float]] = field(default_factory=list)
    """(wall epoch s, VmRSS kB, CPU seconds of all this program's pids so far) per sample."""
    hwm_at: float = 0.0  # wall epoch s of the first sample that saw the final VmHWM

    @property
    def restarts(self) -> int:
        return max(len(self.pids) - 1, 0)

    @property
    def cpu_total_s(self) -> float:
        return sum(self.cpu_s.values())


class ServiceSampler:
    """Tracks the seven programs of one supervisord (by its run directory)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.stats = {name: ProgramStats() for name in PROGRAMS}
        self.current: dict[str, int] = {}
        self._last_lookup = 0.0

    def lookup(self) -> dict[str, int]:
        """Current pids of the running programs, from ``supervisorctl status``."""
        from shared.supervise import supervisorctl

        if not (self.run_dir / "supervisor.sock").exists():
            return {}
        try:
            out = supervisorctl(self.run_dir, "status").stdout
        except subprocess.SubprocessError:
            return {}
        return {
            m.group(1): int(m.group(3)) for m in _STATUS_RE.finditer(out) if m.group(2) == "RUNNING"
        }

    def sample(self) -> None:
        """Read every known pid; look the pids up again (at most once a second) when needed."""
        now, wall = time.monotonic(), time.time()
        missing = len(self.current) < len(PROGRAMS) or any(
            not Path(f"/proc/{pid}").exists() for pid in self.current.values()
        )
        if missing and now - self._last_lookup >= 1.0:
            self._last_lookup = now
            for name, pid in self.lookup().items():
                if name in self.stats:
                    self.current[name] = pid
                    if pid not in self.stats[name].pids:
                        self.stats[name].pids.append(pid)
        for name, pid in self.current.items():
            st = self.stats[name]
            kb = proc_status_kb(pid)
            if kb:
                if kb.get("VmHWM", 0) > st.hwm_kb:
                    st.hwm_kb, st.hwm_at = kb["VmHWM"], wall
                st.rss_kb = kb.get("VmRSS", 0)
            cpu = proc_cpu_s(pid)
            if cpu is not None:
                st.cpu_s[pid] = cpu
            if kb and cpu is not None:
                st.timeline.append((wall, st.rss_kb, st.cpu_total_s))


_FLOOR_CODE = """
import sys
{imports}
with open('/proc/self/status') as f:
    print([l.split()[1] for l in f if l.startswith('VmHWM:')][0])
"""
_SERVICE_IMPORTS = (
    "import redis, redis.asyncio, msgspec, orjson, psycopg, polars\n"
    "import shared.runtime, shared.config, shared.store.ledger\n"
    "import services.feed.service, services.signals.service, services.entries.service\n"
    "import services.executor.service, services.exits.service, services.sync.service\n"
    "import services.recorder.service"
)


def floor_rss_kb() -> dict[str, int]:
    """Peak RSS (kB) of a bare interpreter and of one with the services' imports done."""
    out = {}
    for name, imports in (
        ("bare interpreter", ""),
        ("interpreter + service imports", _SERVICE_IMPORTS),
    ):
        res = subprocess.run(
            [sys.executable, "-c", _FLOOR_CODE.format(imports=imports)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=120,
            check=True,
        )
        out[name] = int(res.stdout.strip())
    return out


# Where the feed's and the recorder's peaks come from: each big step run alone in a fresh
# interpreter (after what it needs is prepared), with the peak reset just before it
# (``5 > /proc/self/clear_refs``); prints [RSS before, peak during] in kB as JSON.
_STEP_CODE = r"""
import gc, json, sys, tempfile
from pathlib import Path
import polars as pl
import services.feed.service, services.recorder.service
from services.feed.replay import load_session
from services.recorder import core
from services.recorder.service import Recordings
from shared.messages import Tick
step, session = sys.argv[1], sys.argv[2]
def status():
    with open('/proc/self/status') as f:
        d = {l.split(':')[0]: int(l.split()[1]) for l in f if l.startswith(('VmHWM', 'VmRSS'))}
    return d['VmRSS'], d['VmHWM']
FLUSH_ROWS = core.FlushPolicy().flush_rows
def ticks_of(n):
    return [(f"{r['ts_recv_ns'] // 1_000_000}-{i}", Tick(
        msg_id="t", ts_event=r["ts_recv_ns"], ts_init=0, tick_id="", segment=r["segment"],
        security_id=r["security_id"], ltp_paise=round(r["ltp"] * 100), ltq=r["ltq"],
        ltt_s=r["ltt_s"], volume=r["volume"], oi=r["oi"], bid_paise=round(r["bid"] * 100),
        ask_paise=round(r["ask"] * 100), bid_qty=r["bid_qty"], ask_qty=r["ask_qty"],
        kind=r["kind"])) for i, r in enumerate(pl.read_parquet(session, n_rows=n).iter_rows(named=True))]
def buffer_of(ticks):
    buf = core.RowBuffer()
    for eid, t in ticks:
        buf.add_tick(eid, t, 0.0)
    return buf
def write_flush(fl):  # as RecorderService._write_parts
    for d, cols in fl.days.items():
        df = core.frame(cols)
        store.write_part(d, df, {**core.file_metadata(d), **core.span_metadata(fl.spans.get(d), df.height)})
def replay(rec):  # what the feed converts to Python values, a chunk at a time
    for _ in rec.chunks():
        pass
tmp = Path(tempfile.mkdtemp())
store = Recordings(tmp)
from services.feed.replay import read_metadata
day = read_metadata(session)["trading_day"]
if step == "read_parquet":
    run = lambda: pl.read_parquet(session)
elif step == "load_session":
    run = lambda: replay(load_session(session))
elif step == "buffer":
    ticks = ticks_of(FLUSH_ROWS)
    run = lambda: buffer_of(ticks)
elif step == "write_part":
    buf = buffer_of(ticks_of(FLUSH_ROWS))
    run = lambda: write_flush(buf.take())
elif step == "compact":
    df = pl.read_parquet(session).with_columns(
        pl.col("ts_recv_ns").alias("ts_init"),
        ((pl.col("ts_recv_ns") // 1_000_000).cast(pl.String) + "-"
         + pl.int_range(0, pl.len()).cast(pl.String)).alias("tick_id"))
    for off in range(0, df.height, FLUSH_ROWS):  # parts as the recorder writes them
        part = df.slice(off, FLUSH_ROWS).select(list(core.SCHEMA))
        meta = core.span_metadata(core.key_span(part.lazy()), part.height)
        store.write_part(day, part, {**core.file_metadata(day), **meta})
    del df, part
    run = lambda: store.compact(day)
else:
    run = lambda: None
gc.collect()
before = status()[0] if step != "imports" else 0
if step != "imports":
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')
result = run()
print(json.dumps([before, status()[1]]))
import shutil; shutil.rmtree(tmp, ignore_errors=True)
"""
STEPS = (
    ("imports", "imports of the feed and recorder modules"),
    ("read_parquet", "feed: polars read_parquet of the session"),
    ("load_session", "feed: load_session, chunks read + converted one at a time"),
    ("buffer", "recorder: RowBuffer of one flush (flush_rows ticks)"),
    ("write_part", "recorder: a one-flush buffer written as a part"),
    ("compact", "recorder: compaction of the whole day's parts (at SessionEnd)"),
)


def peak_stages_kb(session: Path) -> list[tuple[str, int, int]]:
    """(step, RSS before, peak during) in kB for the feed's and recorder's big steps."""
    import json

    out = []
    for step, label in STEPS:
        res = subprocess.run(
            [sys.executable, "-c", _STEP_CODE, step, str(session)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=300,
        )
        if res.returncode != 0:
            raise RuntimeError(f"memory step {step} failed:\n{res.stderr[-2000:]}")
        before, peak = json.loads(res.stdout)
        out.append((label, int(before), int(peak)))
    return out


def main() -> int:
    from common import SESSION

    for name, kb in floor_rss_kb().items():
        print(f"{name:<50} {kb / 1024:8.1f} MiB")
    for name, before, peak in peak_stages_kb(SESSION):
        print(f"{name:<66} before {before / 1024:6.1f} MiB, peak {peak / 1024:6.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
