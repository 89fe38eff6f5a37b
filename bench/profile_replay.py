"""Where the time goes: one extra replay with py-spy attached to every supervised program.

Not one of the timed runs: py-spy (``record --rate 100 --nonblocking --format raw``, one per
program, attached as soon as the pids are known) costs CPU of its own. Each raw file holds
collapsed stacks of the samples where a thread was running (py-spy leaves idle threads out);
:func:`summarise` ranks them by package, by the project function that owns them and by leaf
function (see :class:`ProgramProfile`). Percentages are of the program's busy samples; the CPU
seconds come from ``/proc`` in the same run.

    .venv/bin/python bench/profile_replay.py [--out DIR]     # needs py-spy: .venv/bin/pip install py-spy
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from replay_throughput import ReplayRun, run_replay

RATE_HZ = 100
_FRAME_RE = re.compile(r"^(?P<func>.+?) \((?P<file>[^()]*)\)$")
# Leaf frames that mean "waiting for something", not computing (py-spy without --idle drops most
# idle samples itself; these catch the rest).
_WAIT_LEAVES = {
    "select",
    "EpollSelector.select",
    "poll",
    "epoll",
    "_worker",
    "Condition.wait",
    "Event.wait",
}
_PACKAGES = (
    ("redis/", "redis-py"),
    ("asyncio/", "asyncio"),
    ("psycopg", "psycopg"),
    ("polars/", "polars"),
    ("logging/", "logging"),
    ("services/", "project"),
    ("shared/", "project"),
    ("msgspec", "msgspec"),
)


def py_spy() -> str | None:
    exe = Path(sys.executable).parent / "py-spy"
    return str(exe) if exe.exists() else shutil.which("py-spy")


def package_of(file: str) -> str:
    for prefix, name in _PACKAGES:
        if file.startswith(prefix):
            return name
    return "stdlib/other"


@dataclass
class ProgramProfile:
    """Busy samples of one program, three ways.

    ``self_time``: the leaf frame (where the CPU was); ``owner``: the deepest frame of the
    project's own code (``services/``, ``shared/``) on the stack, so library time is charged to
    the project function that called it and the shares add up to 100 %; ``packages``: the leaf
    frame's package.
    """

    samples: int = 0
    waiting: int = 0
    startup: int = 0  # samples inside an import (start-up, not replay work): left out
    self_time: Counter[str] = field(default_factory=Counter)
    owner: Counter[str] = field(default_factory=Counter)
    packages: Counter[str] = field(default_factory=Counter)
    error: str = ""

    @property
    def busy(self) -> int:
        return self.samples - self.waiting - self.startup

    def top(self, which: str, n: int) -> list[tuple[str, float]]:
        counter = {"self": self.self_time, "owner": self.owner, "packages": self.packages}[which]
        busy = max(self.busy, 1)
        return [(name, 100 * c / busy) for name, c in counter.most_common(n)]


def _frame_name(frame: str) -> tuple[str, str]:
    m = _FRAME_RE.match(frame.strip())
    if not m:
        return frame.strip(), ""
    return m.group("func"), m.group("file")


def summarise(raw: Path) -> ProgramProfile:
    prof = ProgramProfile()
    for line in raw.read_text().splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        frames = [_frame_name(f) for f in stack.split(";") if f]
        frames = [f for f in frames if not f[0].startswith(("process ", "thread "))]
        if not frames:
            continue
        prof.samples += count
        func, file = frames[-1]
        if func in _WAIT_LEAVES:
            prof.waiting += count
            continue
        if any(f.startswith("<frozen importlib") for _, f in frames):
            prof.startup += count
            continue
        prof.self_time[f"{func} ({file})"] += count
        prof.packages[package_of(file)] += count
        owner = next(
            (f"{f} ({p})" for f, p in reversed(frames) if p.startswith(("services/", "shared/"))),
            "(no project frame)",
        )
        prof.owner[owner] += count
    return prof


def profile_replay(out_dir: Path) -> tuple[ReplayRun, dict[str, ProgramProfile]]:
    """One replay with py-spy on every program; returns the run and each program's profile."""
    exe = py_spy()
    if exe is None:
        raise RuntimeError("py-spy is not installed (.venv/bin/pip install py-spy)")
    out_dir.mkdir(parents=True, exist_ok=True)
    spies: dict[str, subprocess.Popen[bytes]] = {}

    def attach(pids: dict[str, int]) -> None:
        for name, pid in pids.items():
            spies[name] = subprocess.Popen(
                [
                    exe,
                    "record",
                    "--pid",
                    str(pid),
                    "--rate",
                    str(RATE_HZ),
                    "--nonblocking",
                    "--nolineno",
                    "--format",
                    "raw",
                    "-o",
                    str(out_dir / f"{name}.txt"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=open(out_dir / f"{name}.py-spy.log", "wb"),
            )

    run = run_replay(on_pids=attach, keep_dir=out_dir / "logs")
    profiles: dict[str, ProgramProfile] = {}
    deadline = time.monotonic() + 60
    for name, proc in spies.items():
        try:
            proc.wait(max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            proc.terminate()
            proc.wait(10)
        raw = out_dir / f"{name}.txt"
        if raw.exists() and raw.stat().st_size:
            profiles[name] = summarise(raw)
        else:
            err = (out_dir / f"{name}.py-spy.log").read_text(errors="replace")[-500:]
            profiles[name] = ProgramProfile(error=err or "py-spy wrote nothing")
    return run, profiles


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("/tmp/scalper-bench-profile"))
    p.add_argument("--top", type=int, default=12)
    a = p.parse_args(argv)
    run, profiles = profile_replay(a.out)
    print(
        f"profiled replay: {run.ticks_per_s:,.0f} ticks/s (py-spy attached); raw stacks in {a.out}"
    )
    for name, prof in profiles.items():
        if prof.error:
            print(f"\n== {name}: {prof.error}")
            continue
        print(
            f"\n== {name}: {prof.samples} samples, {prof.waiting / max(prof.samples, 1):.0%} waiting, "
            f"CPU {run.cpu_s.get(name, 0):.1f}s"
        )
        for which in ("packages", "owner", "self"):
            print(f"  top {which}:")
            for fn, pct in prof.top(which, a.top):
                print(f"    {pct:5.1f}%  {fn}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
