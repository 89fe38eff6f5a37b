-- 0001: the ledger's tables. Runs with search_path set to the deployment's schema.
-- Money and prices are integer paise (bigint); market times are UTC ns (bigint, ts_*);
-- tick ids are kept as text and as an order-preserving bigint key (shared.streamids.key).
-- *_at columns are wall-clock bookkeeping, never used by decisions.

CREATE TABLE instruments (
    security_id      bigint      NOT NULL,
    segment          text        NOT NULL,
    exchange         text        NOT NULL,
    instrument       text        NOT NULL,
    underlying       text        NOT NULL DEFAULT '',
    symbol           text        NOT NULL,
    display_name     text        NOT NULL DEFAULT '',
    expiry           date,
    strike_paise     bigint      NOT NULL DEFAULT 0,
    option_type      text        NOT NULL DEFAULT 'XX',
    lot_size         integer     NOT NULL DEFAULT 1,
    tick_size_paise  integer     NOT NULL DEFAULT 5,
    expiry_flag      text        NOT NULL DEFAULT '',
    freeze_qty       integer     NOT NULL DEFAULT 0,
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (segment, security_id)
);
CREATE INDEX instruments_underlying_idx ON instruments (underlying, instrument, expiry);

CREATE TABLE signals (
    msg_id            text             PRIMARY KEY,
    index_key         text             NOT NULL,
    direction         text             CHECK (direction IN ('bullish', 'bearish')),
    timeframe_min     integer          NOT NULL,
    candle_ts         bigint           NOT NULL,
    ts_event          bigint           NOT NULL,
    tick_id           text             NOT NULL,
    tick_key          bigint           NOT NULL,
    close_paise       bigint,
    supertrend_paise  bigint,
    adx               double precision,
    confidence        double precision,
    multiplier        integer,
    reason            text             NOT NULL DEFAULT '',
    kind              text             NOT NULL CHECK (kind IN ('signal', 'skipped')),
    created_at        timestamptz      NOT NULL DEFAULT now()
);
CREATE INDEX signals_index_candle_idx ON signals (index_key, timeframe_min, candle_ts);

CREATE TABLE position_trackers (
    position_id        text        PRIMARY KEY,
    index_key          text        NOT NULL,
    segment            text        NOT NULL,
    security_id        bigint      NOT NULL,
    symbol             text        NOT NULL DEFAULT '',
    option_type        text        NOT NULL DEFAULT '',
    status             text        NOT NULL
                       CHECK (status IN ('pending', 'active', 'exited', 'cancelled')),
    quantity           integer     NOT NULL CHECK (quantity >= 0),
    entry_price_paise  bigint,
    exit_price_paise   bigint,
    entry_tick_id      text,
    entry_tick_key     bigint,
    exit_tick_id       text,
    exit_tick_key      bigint,
    ts_entry           bigint,
    ts_exit            bigint,
    exit_reason        text,
    pnl_paise          bigint,
    charges_paise      bigint,
    hwm_pnl_paise      bigint      NOT NULL DEFAULT 0,
    trailing_state     jsonb       NOT NULL DEFAULT '{}'::jsonb,
    external           boolean     NOT NULL DEFAULT false,
    paper              boolean     NOT NULL DEFAULT true,
    signal_id          text        NOT NULL DEFAULT '',
    meta               jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now(),
    CHECK (status = 'pending' OR status = 'cancelled'
           OR (entry_tick_key IS NOT NULL AND entry_price_paise IS NOT NULL)),
    CHECK (status <> 'exited' OR exit_tick_key IS NOT NULL)
);
CREATE INDEX position_trackers_status_idx ON position_trackers (status);
CREATE INDEX position_trackers_entry_key_idx ON position_trackers (entry_tick_key);
CREATE INDEX position_trackers_ts_exit_idx ON position_trackers (ts_exit) WHERE status = 'exited';

CREATE TABLE orders (
    correlation_id     text        PRIMARY KEY,
    intent_msg_id      text        NOT NULL UNIQUE,
    position_id        text        NOT NULL,
    kind               text        NOT NULL CHECK (kind IN ('entry', 'exit')),
    side               text        NOT NULL CHECK (side IN ('BUY', 'SELL')),
    segment            text        NOT NULL,
    security_id        bigint      NOT NULL,
    symbol             text        NOT NULL DEFAULT '',
    quantity           integer     NOT NULL CHECK (quantity > 0),
    order_type         text        NOT NULL DEFAULT 'MARKET',
    limit_price_paise  bigint      NOT NULL DEFAULT 0,
    status             text        NOT NULL CHECK (status IN (
                           'new', 'submitting', 'in_doubt', 'transit', 'pending', 'part_traded',
                           'traded', 'rejected', 'cancelled', 'expired', 'dry_run')),
    broker_order_id    text,
    filled_qty         integer     NOT NULL DEFAULT 0,
    avg_price_paise    bigint      NOT NULL DEFAULT 0,
    reason             text        NOT NULL DEFAULT '',
    ts_intent          bigint      NOT NULL,
    intent_tick_id     text        NOT NULL,
    intent_tick_key    bigint      NOT NULL,
    payload            jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at         timestamptz NOT NULL DEFAULT now(),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX orders_status_idx ON orders (status);
CREATE INDEX orders_position_idx ON orders (position_id);
CREATE INDEX orders_broker_order_idx ON orders (broker_order_id);

CREATE TABLE fills (
    fill_id          text        PRIMARY KEY,
    correlation_id   text        NOT NULL REFERENCES orders (correlation_id),
    broker_order_id  text        NOT NULL DEFAULT '',
    side             text        NOT NULL CHECK (side IN ('BUY', 'SELL')),
    quantity         integer     NOT NULL CHECK (quantity > 0),
    price_paise      bigint      NOT NULL,
    ts_event         bigint      NOT NULL,
    tick_id          text        NOT NULL,
    tick_key         bigint      NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX fills_correlation_idx ON fills (correlation_id);

CREATE TABLE outbox (
    id            bigserial   PRIMARY KEY,
    stream        text        NOT NULL,
    msg_id        text        NOT NULL UNIQUE,
    type          text        NOT NULL,
    data          bytea       NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    published_at  timestamptz
);
CREATE INDEX outbox_unpublished_idx ON outbox (id) WHERE published_at IS NULL;

CREATE TABLE daily_risk_state (
    trading_day             date        NOT NULL,
    scope                   text        NOT NULL,
    realized_pnl_paise      bigint      NOT NULL DEFAULT 0,
    trades                  integer     NOT NULL DEFAULT 0,
    starting_capital_paise  bigint      NOT NULL DEFAULT 0,
    state                   text        NOT NULL DEFAULT 'ACTIVE',
    updated_at              timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (trading_day, scope)
);

CREATE TABLE trading_state (
    id          integer     PRIMARY KEY CHECK (id = 1),
    state       text        NOT NULL CHECK (state IN ('ACTIVE', 'REDUCING', 'HALTED')),
    reason      text        NOT NULL DEFAULT '',
    updated_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO trading_state (id, state, reason) VALUES (1, 'ACTIVE', 'initial');

CREATE TABLE sync_reports (
    id           bigserial   PRIMARY KEY,
    ts           bigint      NOT NULL,
    mode         text        NOT NULL,
    differences  jsonb       NOT NULL DEFAULT '[]'::jsonb,
    actions      jsonb       NOT NULL DEFAULT '[]'::jsonb,
    ok           boolean     NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX sync_reports_ts_idx ON sync_reports (ts);
