"""What the benchmark modules share: paths, the machine's description, medians, throw-away
namespaces and schemas, and /proc readers.

Every figure in ``BENCHMARKS.md`` is a :class:`Figure`: the per-run values, their median and the
run count, so the report never shows a single lucky run.
"""

from __future__ import annotations

import os
import platform
import re
import statistics
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
for _p in (str(ROOT), str(BENCH)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

SESSION = ROOT / "data" / "sample" / "session.parquet"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


@dataclass
class Figure:
    """One measured quantity over several runs; ``median`` is what the report states."""

    name: str
    unit: str
    values: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def runs(self) -> int:
        return len(self.values)

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def lo(self) -> float:
        return min(self.values) if self.values else float("nan")

    @property
    def hi(self) -> float:
        return max(self.values) if self.values else float("nan")


def env_config() -> Any:
    """The project's environment settings (REDIS_URL, DATABASE_URL with their defaults)."""
    from shared.config import load_env

    return load_env(
        {k: v for k, v in os.environ.items() if k not in ("SCALPER_NAMESPACE", "SCALPER_DB_SCHEMA")}
    )


def throwaway(prefix: str = "bench") -> str:
    """A fresh namespace/schema name, valid for both (lower-case identifier)."""
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def drop_namespace(redis_url: str, namespace: str) -> int:
    """Delete every key of a namespace; returns how many."""
    import redis

    from shared.keys import Keys

    r = redis.Redis.from_url(redis_url)
    n = 0
    try:
        batch = []
        for k in r.scan_iter(match=Keys(namespace).all_pattern(), count=2000):
            batch.append(k)
            if len(batch) >= 500:
                n += r.delete(*batch)
                batch.clear()
        if batch:
            n += r.delete(*batch)
    finally:
        r.close()
    return n


def drop_schema(database_url: str, schema: str) -> None:
    import psycopg

    from shared.store.db import check_schema

    check_schema(schema)
    if schema in ("public", "scalper", "replay"):
        raise ValueError(f"refusing to drop schema {schema}")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


# --------------------------------------------------------------------------- /proc


def proc_status_kb(pid: int) -> dict[str, int]:
    """VmHWM / VmRSS (kB) of a process; empty if it is gone."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    key, val = line.split(":", 1)
                    out[key] = int(val.split()[0])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return {}
    return out


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process so far; None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = raw[raw.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime (fields 14, 15)


def system_cpu_s() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + (parts[4] if len(parts) > 4 else 0)
    total = sum(parts[:8])
    return (total - idle) / CLK_TCK, total / CLK_TCK


# --------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        m = re.search(r"^Model name:\s*(.+)$", out, re.M)
        if m:
            model = m.group(1).strip()
            mhz = re.search(r"^CPU max MHz:\s*(.+)$", out, re.M) or re.search(
                r"^CPU MHz:\s*(.+)$", out, re.M
            )
            return model + (f" ({float(mhz.group(1)):.0f} MHz)" if mhz else "")
    except (OSError, subprocess.SubprocessError):
        pass
    with open("/proc/cpuinfo") as f:
        m = re.search(r"^model name\s*:\s*(.+)$", f.read(), re.M)
    return m.group(1).strip() if m else platform.processor() or "unknown"


def _mem_total_gb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    return float("nan")


def machine(redis_url: str, database_url: str) -> dict[str, str]:
    """CPU, cores, memory, OS, Python, Redis and PostgreSQL versions, library versions."""
    import importlib.metadata as md

    import psycopg
    import redis

    r = redis.Redis.from_url(redis_url)
    info = r.info("server")
    mem = r.info("memory")
    persistence = r.info("persistence")
    r.close()
    with psycopg.connect(database_url, autocommit=True) as conn:
        pg = conn.execute("SHOW server_version").fetchone()[0]

    def ver(name: str) -> str:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return "absent"

    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    return {
        "cpu": _cpu_model(),
        "cores": f"{os.cpu_count()} logical ({len(os.sched_getaffinity(0))} usable by this process)",
        "memory": f"{_mem_total_gb():.1f} GiB",
        "os": f"{platform.system()} {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "redis": f"{info['redis_version']} (AOF {'on' if persistence.get('aof_enabled') else 'off'}, "
        f"maxmemory {mem.get('maxmemory_human', '?')}, {redis_url})",
        "postgresql": f"{pg} ({database_url.split('@')[-1]})",
        "libraries": (
            f"redis-py {ver('redis')}, hiredis {ver('hiredis')}, msgspec {ver('msgspec')}, "
            f"orjson {ver('orjson')}, polars {ver('polars')}, psycopg {ver('psycopg')}, "
            f"supervisor {ver('supervisor')}, py-spy {ver('py-spy')}"
        ),
        "load average at start": load,
    }


def fmt_int(x: float) -> str:
    return f"{x:,.0f}"
