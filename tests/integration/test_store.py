"""The PostgreSQL ledger against a real server: migrations, lifecycles, idempotency, as-of reads."""

from __future__ import annotations

import datetime as dt
import threading
import time
import traceback
import uuid
from typing import TYPE_CHECKING, Any

import pytest

from shared.errors import StoreError
from shared.messages import Signal, SignalSkipped
from shared.models import Instrument, OpenPosition
from shared.store import Ledger, db
from shared.store.ledger import ORDER_TRANSITIONS
from shared.store.migrate import Migration, applied_versions, load_migrations, main, migrate

if TYPE_CHECKING:
    from tests.integration.pg import PgSchema

pytestmark = pytest.mark.integration
pytest_plugins = ["tests.integration.pg"]

NS = 1_000_000_000
SECRET = "s3cr3t-Pa55w0rd"


def _order(ledger: Ledger, cid: str = "c1", **over: Any) -> bool:
    fields: dict[str, Any] = dict(
        correlation_id=cid, intent_msg_id=f"intent-{cid}", position_id=f"pos-{cid}",
        kind="entry", side="BUY", segment="NSE_FNO", security_id=43210,
        symbol="NIFTY-Nov2026-26000-CE", quantity=75, ts_intent=1_700_000_000 * NS,
        intent_tick_id="1700000000000-0",
    )  # fmt: skip
    return ledger.create_order(**{**fields, **over})


def _tracker(ledger: Ledger, pid: str, **over: Any) -> bool:
    fields: dict[str, Any] = dict(
        position_id=pid, index_key="NIFTY", segment="NSE_FNO", security_id=43210,
        symbol="NIFTY-Nov2026-26000-CE", option_type="CE", quantity=75,
    )  # fmt: skip
    return ledger.open_tracker(**{**fields, **over})


def _instrument(security_id: int, **over: Any) -> Instrument:
    fields: dict[str, Any] = dict(
        security_id=security_id, exchange="NSE", segment="NSE_FNO", instrument="OPTIDX",
        underlying="NIFTY", symbol=f"NIFTY-Nov2026-{security_id}-CE",
        display_name=f"NIFTY {security_id} CALL", expiry="2026-11-26", strike_paise=2_600_000,
        option_type="CE", lot_size=75, tick_size_paise=5, expiry_flag="W", freeze_qty=1800,
    )  # fmt: skip
    return Instrument(**{**fields, **over})


# -- migrations ------------------------------------------------------------------------------


def test_migrate_twice_applies_nothing_the_second_time(pg_unmigrated: PgSchema) -> None:
    s = pg_unmigrated
    conn = s.connect()
    try:
        everything = [m.version for m in load_migrations()]
        assert everything[0] == 1
        assert migrate(conn, s.schema) == everything
        assert migrate(conn, s.schema) == []
        assert applied_versions(conn, s.schema) == everything
        names = conn.execute("SELECT name FROM schema_migrations ORDER BY version").fetchall()
        assert names[0] == ("initial",)
    finally:
        conn.close()


def test_concurrent_migrate_runners_apply_each_migration_once(pg_unmigrated: PgSchema) -> None:
    # A slow extra migration keeps the runners overlapping; without the lock, two of them would
    # both create slow_marker (and schema_migrations) and fail.
    slow = Migration(
        version=9001, name="slow", sql="SELECT pg_sleep(0.3); CREATE TABLE slow_marker (id int);"
    )
    todo = [*load_migrations(), slow]
    runners = 5
    barrier = threading.Barrier(runners)
    results: list[list[int]] = []
    errors: list[BaseException] = []

    s = pg_unmigrated

    def run() -> None:
        try:
            conn = s.connect()
            try:
                barrier.wait(timeout=10)
                results.append(migrate(conn, s.schema, todo))
            finally:
                conn.close()
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(runners)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)

    assert errors == []
    assert sorted(results, key=len) == [[]] * (runners - 1) + [[m.version for m in todo]]
    conn = s.connect()
    try:
        assert applied_versions(conn, s.schema) == [m.version for m in todo]
    finally:
        conn.close()


def test_failed_migration_rolls_back_and_is_not_recorded(pg_schema: PgSchema) -> None:
    bad = Migration(version=9002, name="bad", sql="CREATE TABLE half_done (id int); SELECT 1/0;")
    conn = pg_schema.connect()
    try:
        with pytest.raises(StoreError, match="9002_bad"):
            migrate(conn, pg_schema.schema, [*load_migrations(), bad])
        assert 9002 not in applied_versions(conn, pg_schema.schema)
        exists = conn.execute("SELECT to_regclass('half_done') IS NOT NULL").fetchone()
        assert exists == (False,)
        # The lock was released: a later run proceeds.
        assert migrate(conn, pg_schema.schema) == []
    finally:
        conn.close()


def test_migrate_main_reads_environment_and_reports_what_it_applied(
    pg_unmigrated: PgSchema, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", pg_unmigrated.url)
    monkeypatch.setenv("SCALPER_DB_SCHEMA", pg_unmigrated.schema)
    assert main([]) == 0
    assert "applied 0001_initial" in capsys.readouterr().out
    assert main([]) == 0
    assert "nothing to apply" in capsys.readouterr().out


def test_migrate_main_fails_cleanly_without_a_database(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_URL", f"postgresql://postgres:{SECRET}@127.0.0.1:1/test")
    monkeypatch.setenv("SCALPER_DB_SCHEMA", "t_never_created")
    assert main([]) == 1
    err = capsys.readouterr().err
    assert "db migrate failed: cannot connect" in err
    assert SECRET not in err


def test_invalid_schema_name_is_refused(pg_url: str) -> None:
    with pytest.raises(StoreError, match="invalid schema name"):
        db.connect(pg_url, "Robert'); DROP TABLE x;--")


# -- orders and fills ------------------------------------------------------------------------


def test_create_order_is_unique_on_correlation_id_and_intent(ledger: Ledger) -> None:
    assert _order(ledger, "c1") is True
    assert _order(ledger, "c1", quantity=150, intent_msg_id="other") is False
    assert _order(ledger, "c2", intent_msg_id="intent-c1") is False
    row = ledger.get_order("c1")
    assert row is not None and row.quantity == 75 and row.status == "new"
    assert row.intent_tick_key == 1_700_000_000_000 * 1_000_000
    assert ledger.get_order("c2") is None


def test_order_moves_through_legal_statuses_and_records_fill_info(ledger: Ledger) -> None:
    _order(ledger, "c1")
    ledger.set_order_status("c1", "submitting")
    ledger.set_order_status("c1", "pending", broker_order_id="B-1")
    ledger.set_order_status("c1", "part_traded", filled_qty=25, avg_price_paise=10_005)
    ledger.set_order_status("c1", "part_traded", filled_qty=50, avg_price_paise=10_010)
    row = ledger.set_order_status(
        "c1", "traded", filled_qty=75, avg_price_paise=10_015, payload={"a": 1}
    )
    assert (row.status, row.broker_order_id, row.filled_qty, row.avg_price_paise) == (
        "traded", "B-1", 75, 10_015,
    )  # fmt: skip
    assert row.payload == {"a": 1}
    assert [o.correlation_id for o in ledger.orders_in_status(["traded"])] == ["c1"]
    assert ledger.orders_in_status(["new", "pending"]) == []


def test_every_order_transition_outside_the_table_raises_and_changes_nothing(
    ledger: Ledger,
) -> None:
    for src in ORDER_TRANSITIONS:
        for dst in ORDER_TRANSITIONS:
            cid = f"{src}-{dst}"
            _order(ledger, cid, status=src)
            if dst in ORDER_TRANSITIONS[src]:
                assert ledger.set_order_status(cid, dst).status == dst
            else:
                with pytest.raises(StoreError, match=f"illegal status transition {src} -> {dst}"):
                    ledger.set_order_status(cid, dst)
                row = ledger.get_order(cid)
                assert row is not None and row.status == src


def test_order_status_refuses_unknown_order_status_and_field(ledger: Ledger) -> None:
    _order(ledger, "c1")
    with pytest.raises(StoreError, match="no such order"):
        ledger.set_order_status("nope", "submitting")
    with pytest.raises(StoreError, match="unknown status"):
        ledger.set_order_status("c1", "filled")
    with pytest.raises(StoreError, match="cannot set quantity"):
        ledger.set_order_status("c1", "submitting", quantity=1)


def test_two_writers_racing_to_submit_the_same_order_only_one_wins(pg_schema: PgSchema) -> None:
    a, b = pg_schema.ledger(), pg_schema.ledger()
    try:
        _order(a, "c1")
        outcomes: list[str] = []
        barrier = threading.Barrier(2)

        def submit(led: Ledger) -> None:
            barrier.wait(timeout=10)
            try:
                led.set_order_status("c1", "submitting")
                outcomes.append("won")
            except StoreError:
                outcomes.append("refused")

        threads = [threading.Thread(target=submit, args=(led,)) for led in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert sorted(outcomes) == ["refused", "won"]
    finally:
        a.close()
        b.close()


def test_recording_the_same_fill_twice_is_a_no_op(ledger: Ledger) -> None:
    _order(ledger, "c1")
    fill: dict[str, Any] = dict(
        fill_id="c1:B-1:1", correlation_id="c1", broker_order_id="B-1", side="BUY",
        quantity=75, price_paise=10_005, ts_event=5 * NS, tick_id="1700000000500-3",
    )  # fmt: skip
    assert ledger.record_fill(**fill) is True
    assert ledger.record_fill(**{**fill, "price_paise": 99_999}) is False
    fills = ledger.fills_for("c1")
    assert len(fills) == 1 and fills[0].price_paise == 10_005
    assert fills[0].tick_key == 1_700_000_000_500 * 1_000_000 + 3


def test_fill_of_an_unknown_order_raises(ledger: Ledger) -> None:
    with pytest.raises(StoreError, match="record fill f1"):
        ledger.record_fill(
            fill_id="f1", correlation_id="ghost", broker_order_id="B", side="BUY",
            quantity=1, price_paise=1, ts_event=1, tick_id="1-0",
        )  # fmt: skip


# -- outbox and transactions -----------------------------------------------------------------


def test_outbox_ignores_a_duplicate_msg_id_and_hands_out_unpublished_rows(ledger: Ledger) -> None:
    assert ledger.add_outbox("positions", "m1", "position.opened", b'{"a":1}') is True
    assert ledger.add_outbox("positions", "m1", "position.opened", b'{"a":2}') is False
    assert ledger.add_outbox("orders.events", "m2", "order.filled", b"{}") is True
    rows = ledger.unpublished_outbox()
    assert [(r.msg_id, r.data) for r in rows] == [("m1", b'{"a":1}'), ("m2", b"{}")]
    assert ledger.mark_published([rows[0].id]) == 1
    assert ledger.mark_published([rows[0].id]) == 0
    assert [r.msg_id for r in ledger.unpublished_outbox()] == ["m2"]
    assert [r.msg_id for r in ledger.unpublished_outbox(limit=0)] == []


def test_transaction_rolls_back_state_change_and_outbox_together(ledger: Ledger) -> None:
    with pytest.raises(RuntimeError):
        with ledger.transaction():
            _order(ledger, "c1")
            ledger.add_outbox("orders.events", "m1", "order.accepted", b"{}")
            raise RuntimeError("crash before commit")
    assert ledger.get_order("c1") is None
    assert ledger.unpublished_outbox() == []

    with ledger.transaction():
        _order(ledger, "c2")
        with pytest.raises(StoreError):
            with ledger.transaction():  # nested: a savepoint
                ledger.add_outbox("orders.events", "m2", "order.accepted", b"{}")
                ledger.set_order_status("c2", "traded")
                ledger.set_order_status("c2", "pending")  # illegal after traded
    row = ledger.get_order("c2")
    assert row is not None and row.status == "new"
    assert ledger.unpublished_outbox() == []


# -- position trackers -----------------------------------------------------------------------


def test_tracker_lifecycle_pending_active_exited(ledger: Ledger) -> None:
    assert _tracker(ledger, "p1", signal_id="sig-1", meta={"lot_size": 75}) is True
    assert _tracker(ledger, "p1") is False
    assert ledger.update_hwm("p1", 100, {}) is False  # not active yet
    t = ledger.activate_tracker(
        "p1", entry_price_paise=10_000, quantity=75, entry_tick_id="100-0", ts_entry=100 * NS
    )
    assert (t.status, t.entry_tick_key, t.meta) == ("active", 100_000_000, {"lot_size": 75})
    assert ledger.update_hwm("p1", 2_500, {"stage": 1}) is True
    assert ledger.update_tracker_quantity("p1", 50).quantity == 50
    assert [x.position_id for x in ledger.active_trackers()] == ["p1"]
    t = ledger.close_tracker(
        "p1", exit_price_paise=10_300, exit_tick_id="200-0", ts_exit=200 * NS,
        reason="trailing_stop", pnl_paise=15_000, charges_paise=4_000,
    )  # fmt: skip
    assert (t.status, t.exit_reason, t.hwm_pnl_paise, t.trailing_state) == (
        "exited", "trailing_stop", 2_500, {"stage": 1},
    )  # fmt: skip
    assert ledger.active_trackers() == []
    assert ledger.update_hwm("p1", 9_999, {}) is False


@pytest.mark.parametrize(
    ("setup", "move", "message"),
    [
        ("pending", "close", "illegal tracker transition pending -> exited"),
        ("active", "activate", "illegal tracker transition active -> active"),
        ("active", "cancel", "illegal tracker transition active -> cancelled"),
        ("exited", "activate", "illegal tracker transition exited -> active"),
        ("exited", "close", "illegal tracker transition exited -> exited"),
        ("exited", "cancel", "illegal tracker transition exited -> cancelled"),
        ("cancelled", "activate", "illegal tracker transition cancelled -> active"),
        ("cancelled", "close", "illegal tracker transition cancelled -> exited"),
        ("exited", "quantity", "cannot change the quantity of a exited tracker"),
        ("missing", "activate", "no such tracker"),
    ],
)
def test_illegal_tracker_transitions_raise_and_change_nothing(
    ledger: Ledger, setup: str, move: str, message: str
) -> None:
    moves = {
        "activate": lambda: ledger.activate_tracker(
            "p1", entry_price_paise=1, quantity=75, entry_tick_id="300-0", ts_entry=3
        ),
        "close": lambda: ledger.close_tracker(
            "p1", exit_price_paise=1, exit_tick_id="400-0", ts_exit=4, reason="x", pnl_paise=0
        ),
        "cancel": lambda: ledger.cancel_tracker("p1", "entry rejected"),
        "quantity": lambda: ledger.update_tracker_quantity("p1", 1),
    }
    if setup != "missing":
        _tracker(ledger, "p1")
    if setup in ("active", "exited"):
        moves["activate"]()
    if setup == "exited":
        moves["close"]()
    if setup == "cancelled":
        moves["cancel"]()
    before = ledger.get_tracker("p1")
    with pytest.raises(StoreError, match=message):
        moves[move]()
    assert ledger.get_tracker("p1") == before


def test_open_tracker_refuses_active_without_entry_fields(ledger: Ledger) -> None:
    with pytest.raises(StoreError, match="needs its entry"):
        _tracker(ledger, "p1", status="active")
    assert ledger.get_tracker("p1") is None


def test_positions_asof_counts_a_position_from_its_entry_tick_until_before_its_exit_tick(
    ledger: Ledger,
) -> None:
    # A: entered at 1000-0, exited at 2000-5. B: entered at 1500-2, still open.
    # C: pending (no fill yet). D: cancelled. E: entered at 999-7 (orders before 1000-0 as ids).
    _tracker(ledger, "A")
    ledger.activate_tracker(
        "A", entry_price_paise=10_000, quantity=75, entry_tick_id="1000-0", ts_entry=1
    )
    ledger.close_tracker(
        "A",
        exit_price_paise=11_000,
        exit_tick_id="2000-5",
        ts_exit=2,
        reason="tp",
        pnl_paise=75_000,
    )
    _tracker(
        ledger,
        "B",
        status="active",
        entry_price_paise=20_000,
        entry_tick_id="1500-2",
        ts_entry=3,
        option_type="PE",
    )
    _tracker(ledger, "C")
    _tracker(ledger, "D")
    ledger.cancel_tracker("D", "rejected")
    _tracker(
        ledger, "E", status="active", entry_price_paise=5_000, entry_tick_id="999-7", ts_entry=0
    )

    def ids(tick: str) -> list[str]:
        return [p.position_id for p in ledger.positions_asof(tick)]

    assert ids("999-6") == []
    assert ids("999-7") == ["E"]
    assert ids("1000-0") == ["E", "A"]
    assert ids("1500-1") == ["E", "A"]
    assert ids("1500-2") == ["E", "A", "B"]
    assert ids("2000-4") == ["E", "A", "B"]
    assert ids("2000-5") == ["E", "B"]
    assert ids("99999-0") == ["E", "B"]
    b = ledger.positions_asof("1500-2")[2]
    assert b == OpenPosition(
        position_id="B", index="NIFTY", security_id=43210, option_type="PE", quantity=75,
        entry_price_paise=20_000, ts_entry=3, symbol="NIFTY-Nov2026-26000-CE",
    )  # fmt: skip


def test_closed_trades_filters_by_ist_trading_day(ledger: Ledger) -> None:
    # 2026-11-25 00:10 IST is 2026-11-24 18:40 UTC; 23:50 IST is 18:20 UTC the same day.
    ist = dt.timezone(dt.timedelta(hours=5, minutes=30))

    def ns(day: int, hh: int, mm: int) -> int:
        return int(dt.datetime(2026, 11, day, hh, mm, tzinfo=ist).timestamp()) * NS

    for pid, ts_exit in [
        ("early", ns(25, 0, 10)),
        ("late", ns(25, 23, 50)),
        ("next", ns(26, 0, 5)),
    ]:
        _tracker(ledger, pid, status="active", entry_price_paise=1, entry_tick_id="1-0", ts_entry=0)
        ledger.close_tracker(
            pid, exit_price_paise=2, exit_tick_id="2-0", ts_exit=ts_exit, reason="x", pnl_paise=75
        )
    assert [t.position_id for t in ledger.closed_trades("2026-11-25")] == ["early", "late"]
    assert [t.position_id for t in ledger.closed_trades(dt.date(2026, 11, 26))] == ["next"]
    assert len(ledger.closed_trades()) == 3


# -- signals, instruments, trading state, risk -----------------------------------------------


def test_insert_signal_is_idempotent_for_signals_and_skips(ledger: Ledger) -> None:
    sig = Signal(
        msg_id="s1", ts_event=1, ts_init=2, tick_id="100-1", index="NIFTY", direction="bullish",
        timeframe_min=1, candle_ts=60 * NS, close_paise=2_600_000, supertrend_paise=2_590_000,
        adx=24.5, confidence=0.8, multiplier=1, reason="supertrend flip",
    )  # fmt: skip
    skip = SignalSkipped(
        msg_id="s2", ts_event=1, ts_init=2, tick_id="100-1", index="NIFTY", timeframe_min=1,
        candle_ts=60 * NS, reason="adx below 18",
    )  # fmt: skip
    assert ledger.insert_signal(sig) is True
    assert ledger.insert_signal(sig) is False
    assert ledger.insert_signal(skip) is True
    rows = ledger.conn.execute(
        "SELECT msg_id, kind, direction, tick_key, adx FROM signals ORDER BY msg_id"
    ).fetchall()
    assert rows == [
        ("s1", "signal", "bullish", 100_000_001, 24.5),
        ("s2", "skipped", None, 100_000_001, None),
    ]


def test_instruments_round_trip_and_update_on_conflict(ledger: Ledger) -> None:
    index = Instrument(
        security_id=13, exchange="NSE", segment="IDX_I", instrument="INDEX", underlying="NIFTY",
        symbol="NIFTY",
    )  # fmt: skip
    bank = _instrument(50_001, underlying="BANKNIFTY", expiry_flag="M", lot_size=35)
    first = [_instrument(40_001), _instrument(40_002, option_type="PE"), index, bank]
    assert ledger.upsert_instruments(first) == 4
    assert sorted(ledger.load_instruments(), key=lambda i: (i.segment, i.security_id)) == sorted(
        first, key=lambda i: (i.segment, i.security_id)
    )
    assert ledger.load_instruments("BANKNIFTY") == [bank]

    assert ledger.upsert_instruments(first) == 0  # unchanged rows are not rewritten
    changed = _instrument(40_001, lot_size=65, freeze_qty=1755)
    # The same key twice in one batch: the last one wins.
    assert ledger.upsert_instruments([_instrument(40_001, lot_size=1), changed]) == 1
    nifty = {i.security_id: i for i in ledger.load_instruments("NIFTY")}
    assert nifty[40_001] == changed
    assert nifty[40_002].option_type == "PE"
    assert nifty[13].expiry == ""
    # Same security id in another segment is another instrument.
    assert ledger.upsert_instruments([_instrument(40_001, segment="BSE_FNO", exchange="BSE")]) == 1
    assert len(ledger.load_instruments()) == 5


def test_upsert_of_a_full_scrip_master_takes_seconds(ledger: Ledger) -> None:
    rows = [_instrument(i, strike_paise=1_000_000 + i * 5_000) for i in range(250_000)]
    start = time.perf_counter()
    assert ledger.upsert_instruments(rows) == 250_000
    elapsed_s = time.perf_counter() - start
    print(f"upserted 250k instruments in {elapsed_s:.2f}s")
    assert elapsed_s < 10
    assert ledger.conn.execute("SELECT count(*) FROM instruments").fetchone() == (250_000,)


def test_trading_state_starts_active_and_persists_changes(
    pg_schema: PgSchema, ledger: Ledger
) -> None:
    assert ledger.get_trading_state().state == "ACTIVE"
    ledger.set_trading_state("HALTED", "operator: broker outage")
    other = pg_schema.ledger()
    try:
        st = other.get_trading_state()
        assert (st.state, st.reason) == ("HALTED", "operator: broker outage")
    finally:
        other.close()
    with pytest.raises(StoreError, match="unknown trading state"):
        ledger.set_trading_state("PAUSED", "x")
    assert ledger.get_trading_state().state == "HALTED"


def test_daily_risk_state_upserts_per_day_and_scope(ledger: Ledger) -> None:
    day = "2026-11-25"
    assert ledger.get_daily_risk(day) is None
    ledger.upsert_daily_risk(
        day,
        "global",
        realized_pnl_paise=-500,
        trades=1,
        starting_capital_paise=10**7,
        state="ACTIVE",
    )
    ledger.upsert_daily_risk(
        day,
        "NIFTY",
        realized_pnl_paise=-500,
        trades=1,
        starting_capital_paise=10**7,
        state="ACTIVE",
    )
    row = ledger.upsert_daily_risk(
        dt.date(2026, 11, 25), "global", realized_pnl_paise=-90_000, trades=3,
        starting_capital_paise=10**7, state="REDUCING",
    )  # fmt: skip
    assert (row.realized_pnl_paise, row.trades, row.state) == (-90_000, 3, "REDUCING")
    nifty = ledger.get_daily_risk(day, "NIFTY")
    assert nifty is not None and nifty.realized_pnl_paise == -500


def test_sync_report_is_stored(ledger: Ledger) -> None:
    rid = ledger.add_sync_report(
        ts=5 * NS, mode="paper", differences=[{"a": 1}], actions=[], ok=False
    )
    row = ledger.conn.execute(
        "SELECT ts, differences, ok FROM sync_reports WHERE id = %s", (rid,)
    ).fetchone()
    assert row == (5 * NS, [{"a": 1}], False)


# -- secrets ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://postgres:{SECRET}@127.0.0.1:1/test",  # nothing listens on port 1
        f"postgresql://postgres:{SECRET}@127.0.0.1:5432/no_such_database_xyz",
        f"postgresql://postgres:{SECRET}@127.0.0.1:notaport/test",
        f"postgresql://postgres:{SECRET}@127.0.0.1:5432/test?sslmode=bogus{SECRET}",
        f"postgresql://postgres:{SECRET}@[::1/test",  # libpq echoes the whole URL
        f"host=127.0.0.1 port=1 user=postgres password={SECRET} dbname=test",
        f"host=127.0.0.1 port=1 password='{SECRET}' dbname=test bad key",
    ],
)
def test_database_url_password_never_appears_in_a_store_error(url: str) -> None:
    with pytest.raises(StoreError) as info:
        db.connect(url, "t_never_created", connect_timeout_s=2)
    err = info.value
    shown = "".join(traceback.format_exception(err)) + repr(err) + str(err)
    assert SECRET not in shown
    assert url not in shown
    assert "cannot connect to PostgreSQL" in str(err)


def test_connect_sets_search_path_and_creates_the_schema(pg_url: str) -> None:
    schema = f"t_{uuid.uuid4().hex[:16]}"
    conn = db.connect(pg_url, schema)
    try:
        assert conn.execute("SHOW search_path").fetchone() == (schema,)
        conn.execute("RESET ALL")
        assert conn.execute("SHOW search_path").fetchone() == (schema,)
        assert conn.autocommit is True
    finally:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")
        conn.close()
