"""Pure reconciliation: compare the books with the broker's view and list differences and actions.

In paper mode the "broker" is the paper ledger itself, so a pass checks the books' internal
consistency: every active tracker has a traded entry order and no traded exit order; no order is
left in a non-final state once its session is over. Live rules (adopting broker positions,
closing trackers the broker no longer holds, quantity corrections) build on the same shape.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec


class Difference(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    position_id: str = ""
    correlation_id: str = ""
    detail: str = ""


class SyncResult(msgspec.Struct, frozen=True, kw_only=True):
    differences: list[Difference]
    actions: list[str]

    @property
    def ok(self) -> bool:
        return not self.differences


def reconcile_paper(active_trackers: Sequence[Any], orders_by_position: dict[str, Sequence[Any]]) -> SyncResult:
    diffs: list[Difference] = []
    for t in active_trackers:
        orders = orders_by_position.get(t.position_id, [])
        entries = [o for o in orders if o.kind == "entry" and o.status == "traded"]
        exits = [o for o in orders if o.kind == "exit" and o.status == "traded"]
        if not entries and not t.external:
            diffs.append(Difference(kind="active_without_entry_fill", position_id=t.position_id,
                                    detail="active tracker has no traded entry order"))
        if exits:
            diffs.append(Difference(kind="active_with_exit_fill", position_id=t.position_id,
                                    correlation_id=exits[0].correlation_id,
                                    detail="tracker still active although its exit order traded"))
        filled = sum(o.filled_qty for o in entries)
        if entries and filled != t.quantity:
            diffs.append(Difference(kind="quantity_mismatch", position_id=t.position_id,
                                    detail=f"tracker {t.quantity} vs filled {filled}"))
    return SyncResult(differences=diffs, actions=[])
