"""A minimal service for runtime tests: each tick becomes one SignalSkipped (msg_id from the tick).

Env: ECHO_DELAY_MS (work per entry), plus the usual SCALPER_* settings.
"""

from __future__ import annotations

import asyncio
import os
import sys

from shared.bus import Batch, Commit
from shared.messages import SignalSkipped, Tick, make_msg_id
from shared.runtime import Service, main_wrapper


class EchoService(Service):
    name = "echo"
    inputs = ("ticks",)

    async def handle(self, batch: Batch) -> Commit:
        delay = int(os.environ.get("ECHO_DELAY_MS", "0")) / 1000
        c = Commit()
        for e in batch.entries:
            if delay:
                await asyncio.sleep(delay)
            m = e.msg
            if isinstance(m, Tick):
                c.emit("signals", SignalSkipped(
                    msg_id=make_msg_id("echo", m.msg_id), ts_event=m.ts_event,
                    ts_init=self.ctx.clock.now_ns(), tick_id=m.tick_id, index="NIFTY",
                    timeframe_min=1, candle_ts=m.ts_event, reason=f"echo of {m.msg_id}",
                ))
            c.ack(e.stream, e.entry_id)
        return c


if __name__ == "__main__":
    sys.exit(main_wrapper(EchoService, "echo"))
