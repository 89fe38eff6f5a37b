#!/usr/bin/env bash
# Set up, then replay the bundled synthetic session through all six services (paper mode) and
# print the report. Extra arguments go to `scalper replay` (e.g. --speed 20 --from 09:15 --to 11:00).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/scalper replay data/sample/session.parquet --speed max "$@"
