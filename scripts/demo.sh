#!/usr/bin/env bash
# The demo: sets up a fresh machine (scripts/setup.sh), then starts two throwaway local
# PostgreSQL clusters. Arguments go to the demo (e.g. --seconds 30).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec cargo run --quiet --example clusters -- "$@"
