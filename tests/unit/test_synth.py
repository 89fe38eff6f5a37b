"""Synthetic session generator: schema, labelling, ordering, prices consistent with the index."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import msgspec
import polars as pl
import pytest

from shared import synth
from shared.clock import NS_PER_S, ist_to_ns
from shared.instruments import nearest_expiry, parse_scrip_master

DAY = date(2026, 12, 1)
SEED = 20261201
WINDOW = ("09:15", "09:45")


def _generate(out: Path, seed: int = SEED) -> synth.SessionSummary:
    return synth.generate_session(
        DAY,
        seed,
        out / "session.parquet",
        out / "instruments.csv",
        start_hhmm=WINDOW[0],
        end_hhmm=WINDOW[1],
    )


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, synth.SessionSummary]:
    out = tmp_path_factory.mktemp("synth")
    print(f"seed={SEED}")
    return out, _generate(out)


@pytest.fixture(scope="module")
def ticks(session: tuple[Path, synth.SessionSummary]) -> pl.DataFrame:
    return pl.read_parquet(session[0] / "session.parquet")


@pytest.fixture(scope="module")
def options(session: tuple[Path, synth.SessionSummary], ticks: pl.DataFrame) -> pl.DataFrame:
    """Option ticks with strike, side, mid, spread and whether the tick was a trade."""
    instruments = parse_scrip_master(session[0] / "instruments.csv")
    meta = pl.DataFrame(
        [
            {"security_id": i.security_id, "strike": i.strike_paise / 100, "side": i.option_type}
            for i in instruments
            if i.instrument == "OPTIDX"
        ]
    )
    return (
        ticks.filter(pl.col("segment") == "NSE_FNO")
        .join(meta, on="security_id", how="left")
        .with_columns(
            mid=(pl.col("bid") + pl.col("ask")) / 2,
            spread=pl.col("ask") - pl.col("bid"),
            trade=pl.col("volume").diff().over("security_id").fill_null(1) > 0,
        )
    )


def test_file_has_the_recorded_session_schema_and_synthetic_metadata(
    session: tuple[Path, synth.SessionSummary], ticks: pl.DataFrame
) -> None:
    assert ticks.schema == pl.Schema(synth.COLUMNS)
    assert set(ticks["segment"].unique()) == {"IDX_I", "NSE_FNO"}
    assert set(ticks["kind"].unique()) == {"full"}
    meta = pl.read_parquet_metadata(session[0] / "session.parquet")
    assert meta["synthetic"] == "true"
    assert meta["label"] == "SYNTHETIC — not real market data"
    assert meta["seed"] == str(SEED) and meta["trading_day"] == "2026-12-01"
    assert meta["generator"].startswith("algo-scalper shared.synth")
    assert session[1].rows == ticks.height and session[1].label == meta["label"]


def test_receive_times_strictly_increase_inside_the_window(ticks: pl.DataFrame) -> None:
    ts = ticks["ts_recv_ns"]
    assert (ts.diff().drop_nulls() > 0).all()
    assert ts.min() >= ist_to_ns(DAY, WINDOW[0])
    assert ts.max() < ist_to_ns(DAY, WINDOW[1]) + NS_PER_S
    assert (ticks["ltt_s"] * NS_PER_S <= ticks["ts_recv_ns"]).all()


def test_tick_rates_prices_and_quantities_are_realistic(
    ticks: pl.DataFrame, options: pl.DataFrame
) -> None:
    seconds = 30 * 60
    index = ticks.filter(pl.col("segment") == "IDX_I")
    assert (index["security_id"] == 13).all()
    assert 0.9 * seconds <= index.height <= seconds
    per_contract = options.group_by("security_id").len()["len"] / seconds
    assert per_contract.len() == 42
    assert 0.1 <= per_contract.min() and per_contract.max() <= 1.2
    # on the ₹0.05 grid, a two-sided quote, lots of 65
    for col in ("ltp", "bid", "ask"):
        prices = ticks[col].to_list()
        assert all(round(p * 100) % 5 == 0 and p == round(p, 2) for p in prices), col
    assert (options["bid"] >= 0.05).all() and (options["spread"] >= 0.0499).all()
    assert (options["ltq"] % 65 == 0).all() and (options["bid_qty"] % 65 == 0).all()
    assert (options["oi"] > 0).all()
    volume_steps = options.select(pl.col("volume").diff().over("security_id")).drop_nulls()
    assert (volume_steps["volume"] >= 0).all()


def test_instruments_file_lists_every_contract_and_a_next_week_expiry(
    session: tuple[Path, synth.SessionSummary], ticks: pl.DataFrame
) -> None:
    instruments = parse_scrip_master(session[0] / "instruments.csv")
    by_id = {i.security_id: i for i in instruments}
    assert set(ticks["security_id"].unique()) <= set(by_id)
    assert by_id[13].segment == "IDX_I" and by_id[13].underlying == "NIFTY"
    options = [i for i in instruments if i.instrument == "OPTIDX"]
    assert {i.expiry for i in options} == {"2026-12-01", "2026-12-08"}
    assert all(i.lot_size == 65 and i.segment == "NSE_FNO" for i in options)
    assert nearest_expiry(instruments, "NIFTY", DAY) == session[1].expiry == "2026-12-01"
    atm = by_id[int(ticks.filter(pl.col("segment") == "NSE_FNO")["security_id"][0])]
    strike = atm.strike_paise // 100
    assert atm.symbol == f"NIFTY-Dec2026-{strike}-{atm.option_type}"
    assert (
        atm.display_name == f"NIFTY 01 DEC {strike} {'CALL' if atm.option_type == 'CE' else 'PUT'}"
    )


def test_calls_and_puts_satisfy_put_call_parity_within_the_spread(
    ticks: pl.DataFrame, options: pl.DataFrame
) -> None:
    # A trade's ltt_s is its second; the index tick of that second carries the level it used.
    index = ticks.filter(pl.col("segment") == "IDX_I").select("ltt_s", spot="ltp")
    trades = options.filter("trade").select("ltt_s", "strike", "side", "mid", "spread")
    calls = trades.filter(pl.col("side") == "CE").drop("side")
    puts = trades.filter(pl.col("side") == "PE").drop("side")
    pairs = calls.join(puts, on=["ltt_s", "strike"], suffix="_pe").join(index, on="ltt_s")
    assert pairs.height > 100

    close_ns = ist_to_ns(DAY, "15:30")
    for row in pairs.iter_rows(named=True):
        t_years = synth.years_to_expiry(close_ns / NS_PER_S - row["ltt_s"], 0)
        model = synth.parity_value(row["spot"], row["strike"], t_years)
        tolerance = (row["spread"] + row["spread_pe"]) / 2 + 0.1
        assert abs(row["mid"] - row["mid_pe"] - model) <= tolerance, row


def test_call_prices_move_with_the_index_and_put_prices_against_it(
    ticks: pl.DataFrame, options: pl.DataFrame
) -> None:
    index = ticks.filter(pl.col("segment") == "IDX_I").select("ltt_s", spot="ltp")
    moves = (
        options.filter("trade")
        .join(index, on="ltt_s")
        .sort("security_id", "ts_recv_ns")
        .with_columns(
            d_mid=pl.col("mid").diff().over("security_id"),
            d_spot=pl.col("spot").diff().over("security_id"),
        )
        .filter((pl.col("d_spot").abs() >= 5) & (pl.col("mid") > 5))
        .with_columns(agree=(pl.col("d_mid") * pl.col("d_spot")) > 0)
    )
    agree = dict(moves.group_by("side").agg(pl.col("agree").mean()).iter_rows())
    assert agree["CE"] > 0.9
    assert agree["PE"] < 0.1
    # deeper in the money → higher call price, at one instant
    first = options.filter(pl.col("side") == "CE").group_by("strike").agg(pl.col("mid").first())
    assert first.sort("strike")["mid"].is_sorted(descending=True)


def test_same_seed_gives_identical_files_and_another_seed_differs(
    session: tuple[Path, synth.SessionSummary], tmp_path: Path
) -> None:
    again = _generate(tmp_path / "again")
    other = _generate(tmp_path / "other", seed=SEED + 1)
    for name in ("session.parquet", "instruments.csv"):
        assert (tmp_path / "again" / name).read_bytes() == (session[0] / name).read_bytes()
    assert again == synth.SessionSummary(
        **{
            **msgspec.structs.asdict(session[1]),
            "parquet_path": again.parquet_path,
            "instruments_path": again.instruments_path,
        }
    )
    first = pl.read_parquet(session[0] / "session.parquet")
    second = pl.read_parquet(tmp_path / "other" / "session.parquet")
    assert not first.equals(second)
    assert other.index_open != session[1].index_open


@pytest.mark.parametrize("seed", [1, 2, 3, 20261201, 99])
def test_full_day_index_path_makes_supertrend_flip_several_times(seed: int) -> None:
    levels = synth.index_path(seed, synth.SESSION_S, 26_000.0)
    flips = synth.supertrend_flips(levels, period=10, multiplier=2.0)
    day_range = (max(levels) - min(levels)) / levels[0]
    assert 5 <= flips <= 30, flips
    assert 0.003 <= day_range <= 0.04, day_range


def test_a_holiday_or_a_window_outside_the_session_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not an NSE trading day"):
        synth.generate_session(date(2026, 11, 24), 1, tmp_path / "a.parquet", tmp_path / "a.csv")
    with pytest.raises(ValueError, match="window"):
        synth.generate_session(
            DAY, 1, tmp_path / "a.parquet", tmp_path / "a.csv", start_hhmm="15:00", end_hhmm="16:00"
        )


def test_cli_writes_both_files_for_a_window(tmp_path: Path, capsys) -> None:
    code = synth.main(
        [
            "--day",
            "2026-12-01",
            "--seed",
            "7",
            "--out",
            str(tmp_path),
            "--from",
            "10:00",
            "--to",
            "10:05",
        ]
    )
    assert code == 0
    assert '"rows":' in capsys.readouterr().out
    df = pl.read_parquet(tmp_path / "session.parquet")
    assert df["ts_recv_ns"].min() >= ist_to_ns(DAY, "10:00")
    assert parse_scrip_master(tmp_path / "instruments.csv")
    assert synth.main(["--day", "2026-11-24", "--out", str(tmp_path)]) == 2
