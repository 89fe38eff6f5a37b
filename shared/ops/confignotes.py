"""Descriptions of configuration keys and environment variables the schema does not carry yet.

:mod:`shared.ops.configdoc` uses a description from the schema itself first (``Meta(description=
...)``, an attribute docstring, a trailing comment); these are the fallback. Moving a note into
``shared/config.py`` as the field's attribute docstring makes it the source and the note can go.
``tests/unit/test_configdoc.py`` fails when a note names a key the schema does not have.

Keys are the paths the reference shows: ``indices[].key``, ``signals.validation_modes.<name>.x``.
"""

from __future__ import annotations

SECTION_NOTES: dict[str, str] = {
    "": "The whole of `config/algo.yml`. Only `indices` is required; every section has defaults.",
    "indices[]": "One entry per tradable index. Disabled indices are neither signalled nor traded.",
    "signals": "Candles, Supertrend / ADX / EMA and the filters a direction change must pass "
    "to become a signal (services/signals).",
    "signals.supertrend": "Supertrend on the primary (and confirmation) timeframe candles.",
    "signals.adx": "ADX filter: a signal needs the primary timeframe's ADX at least `min_strength`.",
    "signals.ema": "EMA filter: bullish needs fast EMA above slow, bearish below.",
    "signals.validation_modes.<name>": "Thresholds of one validation mode (the original "
    "system's conservative / balanced / aggressive).",
    "signals.scaling": "Repeated same-direction signals raise the signal's lot multiplier.",
    "option_chain": "The option-chain view of entries: which strikes are watched and picked.",
    "risk": "Exit rules (services/exits) and the daily limits. `*_pct` are fractions of the "
    "entry value (0.30 = 30 %); a threshold of 0 turns its rule off.",
    "risk.trailing_tiers[]": "One step of the tiered trailing stop (`trailing_mode: tiered`).",
    "capital": "Position sizing (services/entries/sizing.py).",
    "capital.bands[]": "A capital band: the allocator's fractions for capital up to `upto_rupees`.",
    "paper": "Paper mode: the simulated account and fills.",
    "entries": "The entry guard and the entries service.",
    "executor": "The executor service.",
    "sync": "Reconciliation with the broker.",
    "streams": "Redis stream trimming.",
    "runtime": "The stream runtime shared by every service.",
}

NOTES: dict[str, str] = {
    "indices[].key": "Index name; one entry per key.",
    "indices[].security_id": "DhanHQ security id of the index (IDX_I): NIFTY 13, BANKNIFTY 25, "
    "FINNIFTY 27, SENSEX 51.",
    "indices[].segment": "Exchange segment of the index itself.",
    "indices[].options_segment": "Segment of its options: NSE_FNO (NSE indices) or BSE_FNO (SENSEX).",
    "indices[].exchange": "Exchange of its options, for the holiday calendar.",
    "indices[].enabled": "false: no signals, entries or subscriptions for this index.",
    "indices[].max_same_side": "Open positions allowed on one side (CE or PE) of this index; "
    "above 1 allows pyramiding (see `entries.pyramid_min_age_s`).",
    "indices[].multiplier": "Lot multiplier of this index, applied with the signal's scaling "
    "multiplier (bands sizing).",
    "indices[].cooldown_s": "Event-time seconds after an exit on this index (and on the same "
    "symbol) before a new entry.",
    "indices[].strike_step_paise": "Distance between listed strikes, in paise (5000 = ₹50).",
    "indices[].capital_alloc_pct": "Overrides the capital band's `alloc_pct` for this index "
    "(bands sizing); null: use the band's.",
    "signals.primary_timeframe_min": "Candle length, minutes, whose Supertrend flips are signals.",
    "signals.confirmation_timeframe_min": "Candle length of the confirmation timeframe.",
    "signals.enable_confirmation": "Require the confirmation timeframe's Supertrend to agree.",
    "signals.supertrend.period": "ATR period, candles.",
    "signals.supertrend.multiplier": "ATR multiplier of the bands (the base multiplier when "
    "adaptive).",
    "signals.supertrend.adaptive": "Use the original system's adaptive Supertrend (k-means "
    "volatility regimes choose among `multiplier_candidates`).",
    "signals.supertrend.training_period": "Adaptive: candles in the k-means training window.",
    "signals.supertrend.num_clusters": "Adaptive: number of volatility clusters.",
    "signals.supertrend.performance_alpha": "Adaptive: EMA weight of each candidate's running "
    "performance score.",
    "signals.supertrend.multiplier_candidates": "Adaptive: multipliers to choose from.",
    "signals.adx.period": "ADX period, candles.",
    "signals.adx.enabled": "Turn the ADX filter on.",
    "signals.adx.min_strength": "Minimum primary ADX with the filter on (validation mode off).",
    "signals.adx.confirmation_min_strength": "Minimum confirmation-timeframe ADX with the filter "
    "and confirmation on (validation mode off).",
    "signals.ema.enabled": "Turn the EMA filter on.",
    "signals.ema.fast": "Fast EMA period, candles.",
    "signals.ema.slow": "Slow EMA period, candles.",
    "signals.validation_mode": 'Which entry of `validation_modes` applies; "off" skips validation.',
    "signals.validation_modes": "The validation modes by name.",
    "signals.validation_modes.<name>.adx_min_strength": "Minimum primary ADX (ADX filter on).",
    "signals.validation_modes.<name>.adx_confirmation_min_strength": "Minimum confirmation ADX.",
    "signals.validation_modes.<name>.iv_rank_min": "Lower bound of the IV-rank proxy (mean "
    "absolute return of the last 5 candles x 1000).",
    "signals.validation_modes.<name>.iv_rank_max": "Upper bound of the IV-rank proxy.",
    "signals.validation_modes.<name>.theta_cutoff_hhmm": "No signal from this IST time on "
    "(theta risk).",
    "signals.validation_modes.<name>.require_trend_confirmation": "Of the last 3 closes the "
    "last must be beyond the first.",
    "signals.validation_modes.<name>.require_iv_rank_check": "Apply the IV-rank bounds.",
    "signals.validation_modes.<name>.require_theta_risk_check": "Apply the theta cutoff.",
    "signals.scaling.enabled": "Count repeated same-direction signals.",
    "signals.scaling.max_multiplier": "Cap of the signal's multiplier.",
    "signals.scaling.decay_s": "A repeat counts only within this many event-time seconds.",
    "signals.late_tick_grace_ms": "How long a candle waits for late ticks past its end, event "
    "time; later ticks are dropped and counted.",
    "option_chain.window_strikes": "Strikes each side of ATM whose options the feed subscribes.",
    "option_chain.min_iv_pct100": "Scored selection: minimum implied volatility, percent "
    "(lowered for strikes away from ATM).",
    "option_chain.max_iv_pct100": "Scored selection: maximum implied volatility, percent.",
    "option_chain.min_oi": "Scored selection: minimum open interest, contracts.",
    "option_chain.max_spread_pct100": "Scored selection: maximum (ask − bid) / bid, percent.",
    "option_chain.risk_free_rate": "Black-Scholes rate (0.065 = 6.5 %), for IV and delta.",
    "option_chain.dividend_yield": "Black-Scholes dividend yield.",
    "option_chain.expiry_day_cutoff_hhmm": "On expiry day, from this IST time entries use the "
    "next expiry.",
    "option_chain.selection": '"atm": the ATM strike of the signalled side; "scored": the '
    "original system's analyser (ATM to ATM±3 OTM, filtered and scored).",
    "option_chain.max_picks": "Scored selection: contracts tried per signal, best first (at "
    "most one order).",
    "option_chain.broker_chain": "Live mode only: on a signal, fetch the index's nearest-expiry "
    "chain from DhanHQ (POST /optionchain) and use its OI, IV and delta instead of the tick OI "
    "and Black-Scholes; on any broker error, a stale or missing snapshot or strike, Black-Scholes "
    "from ticks. Replay always uses Black-Scholes.",
    "option_chain.broker_chain_max_age_s": "A broker chain snapshot is used for signals within "
    "this many seconds (event time) of the signal it was fetched for; older: refetched or "
    "Black-Scholes.",
    "option_chain.broker_chain_min_interval_s": "Wall seconds between two option-chain calls, all "
    "indices together (DhanHQ allows one per 3 s per account). A signal that finds no slot is "
    "decided on Black-Scholes at once, never held back.",
    "option_chain.broker_chain_timeout_s": "Hard bound on one option-chain call (no retries); "
    "past it the signal is decided on Black-Scholes.",
    "risk.sl_pct": "Stop-loss: exit when PnL falls to −sl_pct of the entry value.",
    "risk.tp_pct": "Take-profit: exit when PnL reaches +tp_pct.",
    "risk.emergency_sl_pct": "Hard stop checked first in the default rule order.",
    "risk.breakeven_after_gain_pct": "After the high-water PnL reaches this gain, exit at PnL ≤ 0; "
    "null or 0: off.",
    "risk.trailing_mode": '"direct": trail `trail_distance_pct` below the high once armed; '
    '"tiered": lock the PnL of the highest tier reached; "off".',
    "risk.trail_distance_pct": "Direct trailing: exit when the price drops this fraction below "
    "its high since the fill.",
    "risk.trail_arm_pct": "Direct trailing: armed once the high-water PnL reaches this gain.",
    "risk.trailing_tiers": "Tiered trailing steps (required when `trailing_mode` is tiered).",
    "risk.trailing_tiers[].trigger_pct": "High-water PnL that reaches this tier.",
    "risk.trailing_tiers[].lock_pct": "PnL at or below which the position exits once the tier "
    "is reached (may be negative).",
    "risk.suspend_tp_while_trailing": "Do not take profit while the trailing stop is armed.",
    "risk.time_exit_hhmm": "Square-off: every position exits from this IST time (event time).",
    "risk.market_close_hhmm": "Market close, IST. The pre-open check requires the access token to "
    "stay valid until then.",
    "risk.daily_loss_limit_pct": "Day loss (realised + open, fraction of the day's starting "
    "capital) that moves trading to REDUCING and exits everything.",
    "risk.daily_loss_limit_pct_by_index": "The same per index (keys: enabled index names); "
    "exits that index's positions.",
    "risk.daily_profit_lock_rupees": "Day profit in rupees that moves trading to REDUCING and "
    "exits everything; null: off.",
    "risk.rule_order": "Exit rules in the order they are tried; a rule left out is off.",
    "capital.bands": "Capital bands, ascending; the last has `upto_rupees: null`.",
    "capital.bands[].upto_rupees": "Upper bound (inclusive) of available capital, rupees; null: "
    "no bound (the last band).",
    "capital.bands[].alloc_pct": "Fraction of capital one trade may use.",
    "capital.bands[].risk_per_trade_pct": "Fraction of capital one trade may lose at `risk.sl_pct`.",
    "capital.bands[].daily_max_loss_pct": "Realised day loss (fraction of the day's starting "
    "capital) after which entries stop (bands sizing).",
    "capital.min_lots": "Fewest lots a trade is sized to (if capital pays for them).",
    "capital.max_lots": "Most lots of one trade.",
    "capital.sizing": '"one_lot": always one lot; "bands": size from the capital bands.',
    "paper.balance_rupees": "Paper account's starting capital for the day, rupees.",
    "paper.fill_latency_ms": "A paper order fills at the first tick of its option at or after "
    "the intent's tick plus this latency (event time).",
    "paper.slippage_ticks": "Paper fills move this many tick sizes against the order.",
    "entries.window_start_hhmm": "No entry before this IST time.",
    "entries.window_end_hhmm": "No entry from this IST time on.",
    "entries.max_trades_per_day": "Entries per IST day.",
    "entries.max_concurrent_positions": "Open positions at once, all indices.",
    "entries.ltp_max_age_ms": "An option's last tick must be at most this old (event time) to "
    "enter; older: LTP over REST in live mode, else refused.",
    "entries.pyramid_min_age_s": "A second same-side position needs every held one at least this "
    "old (by entry time) and in profit.",
    "entries.replay_wait_timeout_s": "Replay: longest wait for the upstream frontiers before "
    "deciding anyway.",
    "entries.funds_max_age_s": "Live: a signal uses the balance fetched between signals when at "
    "most this old and no entry order was sent since; 0 fetches it at every signal.",
    "executor.max_rejections_before_halt": "Consecutive order rejections that halt trading.",
    "executor.protected_limit_pct": "Reserved: no service reads it yet.",
    "sync.interval_s": "Seconds between reconciliation passes (during market hours).",
    "streams.maxlen": "Approximate MAXLEN per stream (logical names); unlisted: 100000.",
    "runtime.batch_size": "Entries read per XREADGROUP.",
    "runtime.block_ms": "XREADGROUP BLOCK, milliseconds.",
    "runtime.heartbeat_ttl_s": "TTL of each service's heartbeat and metrics keys.",
    "runtime.drain_deadline_s": "On SIGTERM, time to finish in-flight entries (below "
    "supervisord's stopwaitsecs, 15 s).",
    "runtime.claim_idle_ms": "Pending entries idle this long are XAUTOCLAIMed from dead consumers.",
    "runtime.clock_interval_ms": "Interval of the feed's clock heartbeats on `ticks`.",
    "runtime.upstream_wait_s": "Live mode: longest wait for an upstream frontier before "
    "proceeding (and logging it).",
}

ENV_NOTES: dict[str, str] = {
    "SCALPER_CONFIG": "Path of the trading configuration (default `config/algo.yml`).",
    "SCALPER_MODE": "paper (default) or live.",
    "SCALPER_ORDERS_ENABLED": "Live mode sends real orders only when true; otherwise the "
    "executor logs the payload it would have sent (dry run).",
    "SCALPER_REPLAY": "Set by `scalper replay`: stages wait on upstream frontiers.",
    "SCALPER_NAMESPACE": "Redis key namespace, `scalper:{<ns>}:...`.",
    "SCALPER_DB_SCHEMA": "PostgreSQL schema of the ledger.",
    "SCALPER_LOG_LEVEL": "DEBUG, INFO, WARNING or ERROR.",
    "SCALPER_RUN_DIR": "supervisord's run directory (logs, socket); set by the CLI.",
    "DHAN_CLIENT_ID": "DhanHQ client id.",
    "DHAN_ACCESS_TOKEN": "DhanHQ access token. Never logged, streamed, stored or shown.",
    "DHAN_REST_URL": "DhanHQ REST base URL.",
    "DHAN_FEED_URL": "DhanHQ market-feed WebSocket URL.",
    "DHAN_ORDER_WS_URL": "DhanHQ order-update WebSocket URL.",
    "REDIS_URL": "Redis URL.",
    "DATABASE_URL": "PostgreSQL URL (its password never appears in errors).",
    "SCALPER_API_TOKEN": "Bearer token of `scalper api`; required to bind a non-loopback address.",
    "SCALPER_BURST": "Services exit once drained (tests).",
    "SCALPER_EVENT_TIME": "Live feed: `exchange` takes event time from the exchange's last-trade "
    "time, else receive time.",
    "SCALPER_INSTANCE": "Consumer instance name (default: the host name).",
    "SCALPER_RECORD_DIR": "Recorder output directory (default `<run dir>/recordings`).",
    "SCALPER_RECORD_FAULT": "Recorder fault injection (tests).",
    "SCALPER_RECORD_FLUSH_ROWS": "Recorder: rows per part file at most.",
    "SCALPER_RECORD_FLUSH_S": "Recorder: seconds between part files at most.",
    "SCALPER_REPLAY_FILE": "Replay: the session file the feed plays (set by `scalper replay`).",
    "SCALPER_REPLAY_FROM": "Replay: start time, IST HH:MM.",
    "SCALPER_REPLAY_TO": "Replay: end time, IST HH:MM.",
    "SCALPER_REPLAY_SPEED": "Replay: `max` or a multiple of real time.",
    "SCALPER_REPLAY_NAMESPACE": "Default namespace of `scalper replay` (replay).",
    "SCALPER_REPLAY_SCHEMA": "Default schema of `scalper replay` (replay).",
    "SCALPER_SIGNALS_INDICES": "Comma-separated indices this signals process handles (partitions).",
    "SCALPER_WARMUP_FILE": "Previous day's session for indicator warm-up.",
    "SCALPER_WARMUP_DAY": "Live warm-up: the day (YYYY-MM-DD) whose previous trading day's "
    "candles are fetched over REST (default today, IST).",
    "SCALPER_SIM_TOKEN": "`scalper simrun`: the simulator's access token (tests).",
    "SCALPER_CHARGES": "Path of the charges table (default `config/charges.yml`).",
    "SCALPER_REPLAY_FILES": "Replay: several session files, os.pathsep-separated, played in "
    "date order.",
    "SCALPER_SEED": "Seed of the executor's retry jitter.",
    "SCALPER_TEST_CRASH_AT": "Test hook: the executor kills itself at this named point, once.",
    "SCALPER_TEST_CRASH_ONCE": "Test hook: marker file making SCALPER_TEST_CRASH_AT fire once.",
}
