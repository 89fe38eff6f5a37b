"""Config validation: every bad config stops with one line naming the key path and the problem."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from shared.config import load, load_algo, load_env, parse_algo
from shared.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def good() -> dict:
    return yaml.safe_load((ROOT / "config" / "algo.yml").read_text())


def test_bundled_config_loads_with_four_indices():
    cfg = load_algo(ROOT / "config" / "algo.yml")
    assert [ix.key for ix in cfg.indices] == ["NIFTY", "BANKNIFTY", "FINNIFTY", "SENSEX"]
    assert cfg.index("SENSEX").options_segment == "BSE_FNO"
    assert cfg.index("NIFTY").security_id == 13


def _error(raw: dict) -> str:
    with pytest.raises(ConfigError) as exc:
        parse_algo(raw, "algo.yml")
    msg = str(exc.value)
    assert "\n" not in msg, "the error must be one line"
    return msg


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda c: c["risk"].update(stop_loss=0.1), "$.risk: Object contains unknown field `stop_loss`"),
        (lambda c: c["risk"].update(sl_pct="ten"), "$.risk.sl_pct: Expected `float`, got `str`"),
        (lambda c: c["risk"].update(sl_pct=1.5), "$.risk.sl_pct: Expected `float` <= 1.0"),
        (lambda c: c["indices"][1].update(security_id=-25), "$.indices[1].security_id: Expected `int` >= 1"),
        (lambda c: c["indices"][0].update(key="MIDCPNIFTY"), "$.indices[0].key: Invalid enum value 'MIDCPNIFTY'"),
        (lambda c: c["entries"].update(window_start_hhmm="9:20"), "$.entries.window_start_hhmm: Expected `str` matching regex"),
        (lambda c: c["signals"]["ema"].update(fast=30, slow=21), "$.signals.ema.fast: must be below slow (21)"),
        (lambda c: c["indices"].append(dict(c["indices"][0])), "$.indices[4].key: duplicate index 'NIFTY'"),
        (lambda c: c["capital"].update(min_lots=5, max_lots=2), "$.capital.min_lots: above max_lots (2)"),
        (lambda c: c.update(streams={"maxlen": {"tickz": 10}}), "$.streams.maxlen.tickz: unknown stream"),
        (lambda c: c["entries"].update(window_start_hhmm="15:10"), "$.entries.window_start_hhmm: not before window_end_hhmm"),
        (lambda c: c.pop("indices"), "$: Object missing required field `indices`"),
    ],
)
def test_bad_config_names_the_key_path_and_problem(good, mutate, expected):
    raw = copy.deepcopy(good)
    mutate(raw)
    msg = _error(raw)
    assert msg.startswith("algo.yml: "), msg
    assert expected in msg, msg


def test_invalid_yaml_and_missing_file_are_clear(tmp_path):
    bad = tmp_path / "algo.yml"
    bad.write_text("indices: [\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_algo(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_algo(tmp_path / "nope.yml")


def test_env_rejects_bad_mode_and_flag_and_hides_the_token():
    with pytest.raises(ConfigError, match="env SCALPER_MODE"):
        load_env({"SCALPER_MODE": "real"})
    with pytest.raises(ConfigError, match="env SCALPER_ORDERS_ENABLED"):
        load_env({"SCALPER_ORDERS_ENABLED": "maybe"})
    env = load_env({"DHAN_ACCESS_TOKEN": "eyJ-secret-token", "SCALPER_MODE": "live"})
    assert env.access_token == "eyJ-secret-token"
    assert "eyJ-secret-token" not in repr(env) and "eyJ-secret-token" not in str(env)
    assert env.orders_enabled is False  # real orders need an explicit flag


def test_paper_mode_is_the_default():
    cfg = load(ROOT / "config" / "algo.yml", environ={})
    assert cfg.env.mode == "paper" and cfg.env.orders_enabled is False
