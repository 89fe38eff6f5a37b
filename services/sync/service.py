"""Sync shell: a reconciliation pass on start and every ``sync.interval_s`` (wall time)."""

from __future__ import annotations

import logging
from typing import Any

import msgspec

from services.sync.core import reconcile_paper
from shared.runtime import Context, Service
from shared.store.db import connect
from shared.store.ledger import Ledger

log = logging.getLogger("sync")


class SyncService(Service):
    name = "sync"
    inputs = ()

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        env = ctx.config.env
        self.ledger = Ledger(connect(env.database_url, env.db_schema, application_name="sync"))
        self.passes = 0
        self.last_ok: bool | None = None

    def run_pass(self) -> Any:
        active = self.ledger.active_trackers()
        orders = {t.position_id: self.ledger.orders_for_position(t.position_id) for t in active}
        result = reconcile_paper(active, orders)
        mode = self.ctx.config.env.mode
        self.ledger.add_sync_report(ts=self.ctx.clock.now_ns(), mode=mode,
                                    differences=msgspec.to_builtins(result.differences),
                                    actions=result.actions, ok=result.ok)
        self.passes += 1
        self.last_ok = result.ok
        level = logging.INFO if result.ok else logging.WARNING
        log.log(level, "sync pass", extra={"fields": {"mode": mode, "active": len(active),
                                                      "differences": len(result.differences),
                                                      "outcome": "ok" if result.ok else "differences"}})
        for d in result.differences:
            log.warning("sync difference", extra={"fields": msgspec.to_builtins(d)})
        return result

    async def idle(self) -> None:
        self.run_pass()
        if not self.ctx.burst:
            await self.ctx.sleep(self.ctx.config.algo.sync.interval_s)

    def info(self) -> dict[str, Any]:
        return {"passes": self.passes, "last_ok": self.last_ok}

    async def stop(self) -> None:
        self.ledger.close()
