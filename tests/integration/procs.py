"""Starting service processes for integration tests (outside supervisord)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def service_env(namespace: str, schema: str, redis_url: str, db_url: str, **extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update({
        "SCALPER_NAMESPACE": namespace, "SCALPER_DB_SCHEMA": schema, "REDIS_URL": redis_url,
        "DATABASE_URL": db_url, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1",
        "SCALPER_MODE": "paper",
    })
    env.update(extra)
    return env


class Proc:
    """A service process whose output goes to a log file (read it on failure)."""

    def __init__(self, module: str, env: dict[str, str], log_dir: Path, name: str | None = None) -> None:
        self.name = name or module.rsplit(".", 1)[-1]
        self.log_path = log_dir / f"{self.name}.log"
        self._log = open(self.log_path, "ab")
        self.p = subprocess.Popen([sys.executable, "-m", module], cwd=ROOT, env=env,
                                  stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait(10)
        self._log.close()

    def terminate(self, timeout: float = 20) -> int:
        if self.p.poll() is None:
            self.p.terminate()
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait(10)
        self._log.close()
        return self.p.returncode
