"""Operating a deployment: ``scalper status``, ``scalper tail``, the HTTP API, metrics, reports.

Everything here only reads: Redis keys and streams (:mod:`shared.keys`), the ledger and
supervisord. Nothing in this package publishes, acks or changes the trading state.

- :mod:`shared.ops.status`     one snapshot of a deployment (services, streams, state, positions)
- :mod:`shared.ops.tail`       pretty-printing a stream as entries arrive
- :mod:`shared.ops.api`        the read-only HTTP API (health, positions, Prometheus metrics)
- :mod:`shared.ops.metrics`    Prometheus text exposition and the per-service histogram format
- :mod:`shared.ops.htmlreport` report figures (win rate, drawdown, per index), PNG and HTML

Secrets (the DhanHQ access token, the API token) are redacted from every output.
"""
