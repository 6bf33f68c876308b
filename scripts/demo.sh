#!/usr/bin/env bash
# The demo: sets up a fresh machine (scripts/setup.sh), then `pgsync demo`: two throwaway
# local PostgreSQL clusters, a small shop schema with data, the task syncing them while a
# light load writes orders, and a live view. Arguments go to `pgsync demo` (e.g.
# --duration 30).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo run --quiet --release -p pgsync -- demo "$@"
