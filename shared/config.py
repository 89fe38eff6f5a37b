"""Configuration: one frozen struct tree, loaded once in ``__main__``.

``config/algo.yml`` holds the trading configuration; secrets and endpoints come from the
environment (see ``.env.example``). Unknown keys, wrong types and out-of-range values stop the
process with one line naming the key path and the problem, e.g.::

    config error: $.risk.sl_pct: Expected `float` <= 1.0

Percentages named ``*_pct`` are fractions (0.30 = 30 %) unless the name says ``*_pct100``.
Times of day are ``"HH:MM"`` in IST.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

import msgspec
import yaml

from shared.errors import ConfigError

Fraction = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
PosInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegInt = Annotated[int, msgspec.Meta(ge=0)]
NonNegFloat = Annotated[float, msgspec.Meta(ge=0.0)]
HHMM = Annotated[str, msgspec.Meta(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")]


class _Section(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class IndexConfig(_Section, frozen=True, kw_only=True):
    key: Literal["NIFTY", "BANKNIFTY", "FINNIFTY", "SENSEX"]
    security_id: PosInt
    segment: Literal["IDX_I"] = "IDX_I"
    options_segment: Literal["NSE_FNO", "BSE_FNO"]
    exchange: Literal["NSE", "BSE"]
    enabled: bool = True
    max_same_side: PosInt = 1
    multiplier: Annotated[int, msgspec.Meta(ge=1, le=10)] = 1
    cooldown_s: NonNegInt = 180
    strike_step_paise: PosInt = 5000
    capital_alloc_pct: Fraction | None = None


class SupertrendConfig(_Section, frozen=True, kw_only=True):
    period: Annotated[int, msgspec.Meta(ge=2, le=200)] = 10
    multiplier: Annotated[float, msgspec.Meta(gt=0.0, le=10.0)] = 2.0
    adaptive: bool = False
    training_period: Annotated[int, msgspec.Meta(ge=10, le=1000)] = 50
    num_clusters: Annotated[int, msgspec.Meta(ge=2, le=10)] = 3
    performance_alpha: Fraction = 0.1
    multiplier_candidates: list[float] = msgspec.field(
        default_factory=lambda: [1.5, 2.0, 2.5, 3.0, 3.5]
    )


class AdxConfig(_Section, frozen=True, kw_only=True):
    period: Annotated[int, msgspec.Meta(ge=2, le=200)] = 14
    enabled: bool = False
    min_strength: Annotated[float, msgspec.Meta(ge=0.0, le=100.0)] = 18.0
    confirmation_min_strength: Annotated[float, msgspec.Meta(ge=0.0, le=100.0)] = 20.0


class EmaConfig(_Section, frozen=True, kw_only=True):
    enabled: bool = False
    fast: Annotated[int, msgspec.Meta(ge=1, le=500)] = 9
    slow: Annotated[int, msgspec.Meta(ge=2, le=1000)] = 21


class ValidationMode(_Section, frozen=True, kw_only=True):
    adx_min_strength: Annotated[float, msgspec.Meta(ge=0.0, le=100.0)]
    adx_confirmation_min_strength: Annotated[float, msgspec.Meta(ge=0.0, le=100.0)]
    iv_rank_min: Fraction
    iv_rank_max: Fraction
    theta_cutoff_hhmm: HHMM
    require_trend_confirmation: bool
    require_iv_rank_check: bool
    require_theta_risk_check: bool


def _default_modes() -> dict[str, ValidationMode]:
    return {
        "conservative": ValidationMode(
            adx_min_strength=25, adx_confirmation_min_strength=30, iv_rank_min=0.15,
            iv_rank_max=0.6, theta_cutoff_hhmm="14:00", require_trend_confirmation=True,
            require_iv_rank_check=True, require_theta_risk_check=True,
        ),
        "balanced": ValidationMode(
            adx_min_strength=18, adx_confirmation_min_strength=20, iv_rank_min=0.10,
            iv_rank_max=0.8, theta_cutoff_hhmm="14:30", require_trend_confirmation=True,
            require_iv_rank_check=True, require_theta_risk_check=True,
        ),
        "aggressive": ValidationMode(
            adx_min_strength=15, adx_confirmation_min_strength=18, iv_rank_min=0.05,
            iv_rank_max=0.9, theta_cutoff_hhmm="15:00", require_trend_confirmation=False,
            require_iv_rank_check=True, require_theta_risk_check=False,
        ),
    }


class ScalingConfig(_Section, frozen=True, kw_only=True):
    enabled: bool = True
    max_multiplier: Annotated[int, msgspec.Meta(ge=1, le=10)] = 3
    decay_s: NonNegInt = 900


class SignalsConfig(_Section, frozen=True, kw_only=True):
    primary_timeframe_min: Literal[1, 3, 5, 15] = 1
    confirmation_timeframe_min: Literal[1, 3, 5, 15] = 5
    enable_confirmation: bool = False
    supertrend: SupertrendConfig = msgspec.field(default_factory=SupertrendConfig)
    adx: AdxConfig = msgspec.field(default_factory=AdxConfig)
    ema: EmaConfig = msgspec.field(default_factory=EmaConfig)
    validation_mode: Literal["conservative", "balanced", "aggressive", "off"] = "off"
    validation_modes: dict[str, ValidationMode] = msgspec.field(default_factory=_default_modes)
    scaling: ScalingConfig = msgspec.field(default_factory=ScalingConfig)
    late_tick_grace_ms: NonNegInt = 0


class OptionChainConfig(_Section, frozen=True, kw_only=True):
    window_strikes: Annotated[int, msgspec.Meta(ge=1, le=50)] = 10
    min_iv_pct100: NonNegFloat = 10.0
    max_iv_pct100: NonNegFloat = 60.0
    min_oi: NonNegInt = 50_000
    max_spread_pct100: NonNegFloat = 3.0
    risk_free_rate: Annotated[float, msgspec.Meta(ge=0.0, le=0.5)] = 0.065
    dividend_yield: Annotated[float, msgspec.Meta(ge=0.0, le=0.5)] = 0.0
    expiry_day_cutoff_hhmm: HHMM = "14:30"
    selection: Literal["atm", "scored"] = "atm"
    max_picks: Annotated[int, msgspec.Meta(ge=1, le=4)] = 1
    broker_chain: bool = True
    broker_chain_max_age_s: Annotated[float, msgspec.Meta(gt=0.0, le=300.0)] = 10.0
    broker_chain_min_interval_s: Annotated[float, msgspec.Meta(ge=3.0, le=600.0)] = 3.0
    broker_chain_timeout_s: Annotated[float, msgspec.Meta(gt=0.0, le=30.0)] = 2.0


class TrailingTier(_Section, frozen=True, kw_only=True):
    trigger_pct: NonNegFloat
    lock_pct: float


class RiskConfig(_Section, frozen=True, kw_only=True):
    sl_pct: Fraction = 0.30
    tp_pct: Annotated[float, msgspec.Meta(ge=0.0, le=10.0)] = 0.60
    emergency_sl_pct: Fraction = 0.50
    breakeven_after_gain_pct: Annotated[float, msgspec.Meta(ge=0.0, le=10.0)] | None = None
    trailing_mode: Literal["off", "direct", "tiered"] = "off"
    trail_distance_pct: Fraction = 0.05
    trail_arm_pct: Annotated[float, msgspec.Meta(ge=0.0, le=10.0)] = 0.10
    trailing_tiers: list[TrailingTier] = msgspec.field(default_factory=list)
    suspend_tp_while_trailing: bool = False
    time_exit_hhmm: HHMM = "15:20"
    market_close_hhmm: HHMM = "15:30"
    daily_loss_limit_pct: Fraction = 0.06
    daily_loss_limit_pct_by_index: dict[str, Fraction] = msgspec.field(default_factory=dict)
    daily_profit_lock_rupees: NonNegFloat | None = None
    rule_order: list[
        Literal[
            "emergency_sl", "stop_loss", "take_profit", "breakeven", "trailing",
            "time_exit", "daily_loss",
        ]
    ] = msgspec.field(
        default_factory=lambda: [
            "daily_loss", "emergency_sl", "stop_loss", "take_profit", "breakeven",
            "trailing", "time_exit",
        ]
    )


class CapitalBand(_Section, frozen=True, kw_only=True):
    upto_rupees: NonNegFloat | None
    alloc_pct: Fraction
    risk_per_trade_pct: Fraction
    daily_max_loss_pct: Fraction


def _default_bands() -> list[CapitalBand]:
    return [
        CapitalBand(upto_rupees=75_000, alloc_pct=0.30, risk_per_trade_pct=0.05, daily_max_loss_pct=0.05),
        CapitalBand(upto_rupees=150_000, alloc_pct=0.25, risk_per_trade_pct=0.035, daily_max_loss_pct=0.06),
        CapitalBand(upto_rupees=300_000, alloc_pct=0.20, risk_per_trade_pct=0.03, daily_max_loss_pct=0.06),
        CapitalBand(upto_rupees=None, alloc_pct=0.20, risk_per_trade_pct=0.025, daily_max_loss_pct=0.05),
    ]


class CapitalConfig(_Section, frozen=True, kw_only=True):
    bands: list[CapitalBand] = msgspec.field(default_factory=_default_bands)
    min_lots: PosInt = 1
    max_lots: PosInt = 100
    sizing: Literal["one_lot", "bands"] = "one_lot"


class PaperConfig(_Section, frozen=True, kw_only=True):
    balance_rupees: NonNegFloat = 100_000.0
    fill_latency_ms: NonNegInt = 250
    slippage_ticks: NonNegInt = 0


class EntriesConfig(_Section, frozen=True, kw_only=True):
    window_start_hhmm: HHMM = "09:20"
    window_end_hhmm: HHMM = "15:00"
    max_trades_per_day: NonNegInt = 20
    max_concurrent_positions: PosInt = 3
    ltp_max_age_ms: PosInt = 10_000
    pyramid_min_age_s: NonNegInt = 300
    replay_wait_timeout_s: Annotated[float, msgspec.Meta(gt=0)] = 120.0
    funds_max_age_s: Annotated[float, msgspec.Meta(ge=0.0, le=60.0)] = 5.0
    """Live mode: a signal uses the available balance fetched between signals when it is at most
    this old and no entry order was sent since (services/entries/funds.py); 0 fetches it at
    every signal."""


def _default_freeze_qty() -> dict[str, int]:
    # The lowest NSE/BSE value of 2025-26 per index (reference/market-calendar-and-charges.md
    # §3.2-3.3): BANKNIFTY and FINNIFTY flip month to month, and a slice sized for the lower
    # limit is accepted under the higher one, never the reverse. UNCONFIRMED beyond Aug 2026.
    return {"NIFTY": 1800, "BANKNIFTY": 600, "FINNIFTY": 1200, "SENSEX": 1000}


class ExecutorConfig(_Section, frozen=True, kw_only=True):
    max_rejections_before_halt: PosInt = 3
    protected_limit_pct: Fraction = 0.0
    default_freeze_qty: dict[str, NonNegInt] = msgspec.field(default_factory=_default_freeze_qty)
    """Freeze limit (max units per order) per index, used when the instrument master gives none
    (``SM_FREEZE_QTY`` absent or 0, e.g. the compact scrip master); an index not listed, or 0,
    is never sliced."""


class SyncConfig(_Section, frozen=True, kw_only=True):
    interval_s: PosInt = 30


class StreamsConfig(_Section, frozen=True, kw_only=True):
    maxlen: dict[str, PosInt] = msgspec.field(
        default_factory=lambda: {
            "ticks": 3_000_000,
            "signals": 100_000,
            "entries.decisions": 100_000,
            "orders.requests": 100_000,
            "orders.events": 100_000,
            "positions": 100_000,
            "feed.control": 10_000,
            "deadletter": 100_000,
        }
    )


class RuntimeConfig(_Section, frozen=True, kw_only=True):
    batch_size: Annotated[int, msgspec.Meta(ge=1, le=10_000)] = 500
    block_ms: Annotated[int, msgspec.Meta(ge=1, le=60_000)] = 200
    heartbeat_ttl_s: Annotated[int, msgspec.Meta(ge=1, le=3600)] = 15
    drain_deadline_s: Annotated[float, msgspec.Meta(gt=0, le=60)] = 8.0
    claim_idle_ms: Annotated[int, msgspec.Meta(ge=100)] = 30_000
    clock_interval_ms: Annotated[int, msgspec.Meta(ge=100)] = 1000
    upstream_wait_s: Annotated[float, msgspec.Meta(gt=0)] = 5.0


class AlgoConfig(_Section, frozen=True, kw_only=True):
    """The whole of ``config/algo.yml``."""

    indices: list[IndexConfig]
    signals: SignalsConfig = msgspec.field(default_factory=SignalsConfig)
    option_chain: OptionChainConfig = msgspec.field(default_factory=OptionChainConfig)
    risk: RiskConfig = msgspec.field(default_factory=RiskConfig)
    capital: CapitalConfig = msgspec.field(default_factory=CapitalConfig)
    paper: PaperConfig = msgspec.field(default_factory=PaperConfig)
    entries: EntriesConfig = msgspec.field(default_factory=EntriesConfig)
    executor: ExecutorConfig = msgspec.field(default_factory=ExecutorConfig)
    sync: SyncConfig = msgspec.field(default_factory=SyncConfig)
    streams: StreamsConfig = msgspec.field(default_factory=StreamsConfig)
    runtime: RuntimeConfig = msgspec.field(default_factory=RuntimeConfig)

    def index(self, key: str) -> IndexConfig:
        for ix in self.indices:
            if ix.key == key:
                return ix
        raise ConfigError(f"$.indices: no index {key!r}")


class EnvConfig(msgspec.Struct, frozen=True, kw_only=True):
    """Settings from the environment. The access token is kept out of ``repr``."""

    mode: Literal["paper", "live"] = "paper"
    orders_enabled: bool = False
    replay: bool = False
    namespace: str = "paper"
    redis_url: str = "redis://127.0.0.1:6379/0"
    database_url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    db_schema: str = "scalper"
    log_level: str = "INFO"
    dhan_client_id: str = ""
    dhan_rest_url: str = "https://api.dhan.co/v2"
    dhan_feed_url: str = "wss://api-feed.dhan.co"
    dhan_order_ws_url: str = "wss://api-order-update.dhan.co"
    run_dir: str = "run"
    _token: str = ""

    def __repr__(self) -> str:  # never show the token
        return f"EnvConfig(mode={self.mode!r}, namespace={self.namespace!r}, orders_enabled={self.orders_enabled})"

    @property
    def access_token(self) -> str:
        return self._token


class Config(msgspec.Struct, frozen=True, kw_only=True):
    algo: AlgoConfig
    env: EnvConfig


_BOOL_TRUE = {"1", "true", "yes", "on"}
_BOOL_FALSE = {"0", "false", "no", "off", ""}
_NAMESPACE_RE = re.compile(r"^[A-Za-z0-9_.-]{1,40}$")
_SCHEMA_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _env_bool(environ: dict[str, str], name: str, default: bool) -> bool:
    raw = environ.get(name)
    if raw is None:
        return default
    val = raw.strip().lower()
    if val in _BOOL_TRUE:
        return True
    if val in _BOOL_FALSE:
        return False
    raise ConfigError(f"env {name}: expected true/false, got {raw!r}")


def load_env(environ: dict[str, str] | None = None) -> EnvConfig:
    """Read the environment (``SCALPER_*``, ``DHAN_*``, ``REDIS_URL``, ``DATABASE_URL``)."""
    e = dict(os.environ if environ is None else environ)
    mode = e.get("SCALPER_MODE", "paper").strip().lower()
    if mode not in ("paper", "live"):
        raise ConfigError(f"env SCALPER_MODE: expected 'paper' or 'live', got {mode!r}")
    namespace = e.get("SCALPER_NAMESPACE", mode)
    if not _NAMESPACE_RE.match(namespace):
        raise ConfigError(f"env SCALPER_NAMESPACE: invalid namespace {namespace!r}")
    schema = e.get("SCALPER_DB_SCHEMA", "scalper")
    if not _SCHEMA_RE.match(schema):
        raise ConfigError(f"env SCALPER_DB_SCHEMA: invalid schema name {schema!r}")
    level = e.get("SCALPER_LOG_LEVEL", "INFO").upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(f"env SCALPER_LOG_LEVEL: invalid level {level!r}")
    return EnvConfig(
        mode=mode,  # type: ignore[arg-type]
        orders_enabled=_env_bool(e, "SCALPER_ORDERS_ENABLED", False),
        replay=_env_bool(e, "SCALPER_REPLAY", False),
        namespace=namespace,
        redis_url=e.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
        database_url=e.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres"),
        db_schema=schema,
        log_level=level,
        dhan_client_id=e.get("DHAN_CLIENT_ID", ""),
        dhan_rest_url=e.get("DHAN_REST_URL", "https://api.dhan.co/v2"),
        dhan_feed_url=e.get("DHAN_FEED_URL", "wss://api-feed.dhan.co"),
        dhan_order_ws_url=e.get("DHAN_ORDER_WS_URL", "wss://api-order-update.dhan.co"),
        run_dir=e.get("SCALPER_RUN_DIR", "run"),
        _token=e.get("DHAN_ACCESS_TOKEN", "").strip(),  # a CRLF .env would leave a '\r'
    )


def parse_algo(raw: object, source: str = "config") -> AlgoConfig:
    """Validate a parsed YAML document; errors name the key path."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: $: expected a mapping at the top level")
    try:
        cfg = msgspec.convert(raw, AlgoConfig, strict=True)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{source}: {_path_first(str(exc))}") from None
    _check_semantics(cfg, source)
    return cfg


def _path_first(msg: str) -> str:
    """Turn msgspec's "Problem - at `$.a.b`" into "$.a.b: Problem"."""
    m = re.match(r"^(.*) - at `(\$[^`]*)`$", msg)
    if m:
        return f"{m.group(2)}: {m.group(1)}"
    return f"$: {msg}"


def _check_semantics(cfg: AlgoConfig, source: str) -> None:
    keys = [ix.key for ix in cfg.indices]
    for i, key in enumerate(keys):
        if key in keys[:i]:
            raise ConfigError(f"{source}: $.indices[{i}].key: duplicate index {key!r}")
    if not cfg.indices:
        raise ConfigError(f"{source}: $.indices: at least one index is required")
    if cfg.signals.ema.fast >= cfg.signals.ema.slow:
        raise ConfigError(f"{source}: $.signals.ema.fast: must be below slow ({cfg.signals.ema.slow})")
    if cfg.signals.validation_mode not in ("off", *cfg.signals.validation_modes):
        raise ConfigError(
            f"{source}: $.signals.validation_mode: no entry {cfg.signals.validation_mode!r} in validation_modes"
        )
    if cfg.option_chain.min_iv_pct100 > cfg.option_chain.max_iv_pct100:
        raise ConfigError(f"{source}: $.option_chain.min_iv_pct100: above max_iv_pct100")
    if cfg.capital.min_lots > cfg.capital.max_lots:
        raise ConfigError(f"{source}: $.capital.min_lots: above max_lots ({cfg.capital.max_lots})")
    bands = cfg.capital.bands
    if not bands or bands[-1].upto_rupees is not None:
        raise ConfigError(f"{source}: $.capital.bands: the last band must have upto_rupees: null")
    for i in range(1, len(bands)):
        prev, cur = bands[i - 1].upto_rupees, bands[i].upto_rupees
        if prev is None or (cur is not None and cur <= prev):
            raise ConfigError(f"{source}: $.capital.bands[{i}].upto_rupees: bands must ascend")
    for ix_key in cfg.risk.daily_loss_limit_pct_by_index:
        if ix_key not in keys:
            raise ConfigError(f"{source}: $.risk.daily_loss_limit_pct_by_index.{ix_key}: unknown index")
    known_indices = ", ".join(sorted(_default_freeze_qty()))
    for ix_key in cfg.executor.default_freeze_qty:
        if ix_key not in _default_freeze_qty():
            raise ConfigError(f"{source}: $.executor.default_freeze_qty.{ix_key}: unknown index "
                              f"(known: {known_indices})")
    from shared.keys import LOGICAL_STREAMS

    for stream in cfg.streams.maxlen:
        if stream not in LOGICAL_STREAMS:
            raise ConfigError(f"{source}: $.streams.maxlen.{stream}: unknown stream")
    if cfg.entries.window_start_hhmm >= cfg.entries.window_end_hhmm:
        raise ConfigError(f"{source}: $.entries.window_start_hhmm: not before window_end_hhmm")
    if cfg.risk.trailing_mode == "tiered" and not cfg.risk.trailing_tiers:
        raise ConfigError(f"{source}: $.risk.trailing_tiers: required when trailing_mode is tiered")


def load_algo(path: str | Path) -> AlgoConfig:
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: invalid YAML: {str(exc).splitlines()[0]}") from None
    return parse_algo(raw, str(p))


def default_config_path() -> Path:
    return Path(os.environ.get("SCALPER_CONFIG", Path(__file__).resolve().parent.parent / "config" / "algo.yml"))


def load(path: str | Path | None = None, environ: dict[str, str] | None = None) -> Config:
    """Load and validate the whole configuration."""
    return Config(algo=load_algo(path or default_config_path()), env=load_env(environ))
