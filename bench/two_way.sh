#!/usr/bin/env bash
# bench/two_way.sh [SCALE] -- pgsync two-way under pgbench on both sides at once, measured
# exactly as the shared kit measures PostgreSQL 18 native bidirectional replication
# (pg18_bidi.sh, BASELINE.md section 7): the same update script on A and on B for DURATION s,
#   disjoint keys (A: first half of aid, B: second half)      REPS times
#   hot overlapping keys (aid 1..HOT on both)                  REPS times
# each: TPS per side, apply rate and lag per direction, catch-up after the load, and whether
# both sides ended equal (accounts md5, history) with sum(abalance) = sum(history.delta).
# pgsync runs with conflict_policy = last_write_wins (DELTA=1: abalance as a delta column,
# which needs REPLICA IDENTITY FULL on pgbench_accounts), changes only (both sides start
# from the same pgbench -i data). Conflicts logged per side are printed per case.
#
# Env: REPS (2), DURATION (60), CLIENTS (4), THREADS (2), HOT (1000), DELTA (0),
# PGSYNC_PG (15 or 18: the servers' version), PORT_A/PORT_B (55480/55481), WAIT_MAX (600),
# KIT (../shared/bench), PG18_BIN (default: what scripts/install-pg18.sh prints).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
KIT=${KIT:-$ROOT/../shared/bench}
SCALE=${1:-20}
export REPS=${REPS:-2}
export DURATION=${DURATION:-60}
export CLIENTS=${CLIENTS:-4}
export THREADS=${THREADS:-2}
export WAIT_MAX=${WAIT_MAX:-600}
HOT=${HOT:-1000}
DELTA=${DELTA:-0}
PORT_A=${PORT_A:-55480}
PORT_B=${PORT_B:-55481}
PGSYNC_PG=${PGSYNC_PG:-15}
if [ "$PGSYNC_PG" = 18 ]; then
  PGBIN=${PG18_BIN:-$("$ROOT/scripts/install-pg18.sh")}
else
  PGBIN=/usr/lib/postgresql/15/bin
fi
export PGBIN
# shellcheck source=/dev/null
source "$KIT/lib.sh"

(cd "$ROOT" && cargo build --release -p pgsync)
PGSYNC_BIN=$ROOT/target/release/pgsync

kit_init_run "pgsync_two_way-pg$PGSYNC_PG-s$SCALE"
A=$RUN/A; B=$RUN/B
note "pgsync two-way A<->B, last_write_wins$([ "$DELTA" = 1 ] && echo ', abalance as a delta column'); scale $SCALE; reps $REPS; $(date -Is)"
res "server" "$("$PGBIN/postgres" --version)"
res "host" "$(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for side in A B; do
  port=$PORT_A; [ "$side" = B ] && port=$PORT_B
  kit_cluster "$side" "$port" wal_level=logical track_commit_timestamp=on \
    max_replication_slots=16 max_wal_senders=16
done
for d in "$A" "$B"; do
  qdb "$d" postgres "CREATE DATABASE $DB"
  pgb "$d" -i -q -s "$SCALE" "$DB" > "$d/log/pgbench-init.log" 2>&1
  q "$d" "ALTER TABLE pgbench_history REPLICA IDENTITY FULL"
  if [ "$DELTA" = 1 ]; then q "$d" "ALTER TABLE pgbench_accounts REPLICA IDENTITY FULL"; fi
done
res "identical initial data (accounts md5 A = B)" \
  "$([ "$(accounts_md5 "$A")" = "$(accounts_md5 "$B")" ] && echo yes || echo NO)"

TASK=$RUN/task.toml
{
  echo "name = \"bench\""
  echo "[source]"; echo "dsn = \"$(dsn "$A")\""
  echo "[destination]"; echo "dsn = \"$(dsn "$B")\""
  echo "[sync]"
  echo "two_way = true"; echo "schema = false"; echo "full = false"; echo "ddl = false"
  echo "conflict_policy = \"last_write_wins\""
  if [ "$DELTA" = 1 ]; then
    echo "[sync.delta_columns]"; echo "\"public.pgbench_accounts\" = [\"abalance\"]"
  fi
  echo "[objects]"; echo "include = [\"public.*\"]"
} > "$TASK"
NO_COLOR=1 RUST_LOG=info "$PGSYNC_BIN" run --config "$TASK" 2> "$RUN/pgsync.log" &
PGSYNC_PID=$!
BG_PIDS+=("$PGSYNC_PID")
streaming() { [ "$(q "$A" "SELECT count(*) FROM pg_replication_slots WHERE active AND slot_name LIKE 'pgsync_bench_%'")" -ge 1 ] \
  && [ "$(q "$B" "SELECT count(*) FROM pg_replication_slots WHERE active AND slot_name LIKE 'pgsync_bench_%'")" -ge 1 ]; }
wait_for 120 0.5 streaming || { res "setup" "pgsync did not stream both ways (see $RUN/pgsync.log)"; exit 1; }

conflicts() { q "$1" "SELECT coalesce(string_agg(kind || '=' || n, ' ' ORDER BY kind), 'none') FROM (SELECT kind, count(*) n FROM pgsync.conflicts GROUP BY kind) k" 2>/dev/null || echo none; }
run_case() {     # run_case LABEL LO_A HI_A LO_B HI_B
  local label=$1; shift
  q "$A" "TRUNCATE pgsync.conflicts" 2>/dev/null || true
  q "$B" "TRUNCATE pgsync.conflicts" 2>/dev/null || true
  bidi_reset "$A" "$B"
  sleep 2
  bidi_steady "$label" "$A" "$B" "$@"
  res "$label sum(abalance) vs sum(delta) on A" "$(balance_vs_delta "$A")"
  res "$label sum(abalance) vs sum(delta) on B" "$(balance_vs_delta "$B")"
  res "$label conflicts logged on A (applying B's changes)" "$(conflicts "$A")"
  res "$label conflicts logged on B (applying A's changes)" "$(conflicts "$B")"
}
ROWS=$(q "$A" "SELECT count(*) FROM pgbench_accounts")
HALF=$((ROWS / 2))
for rep in $(seq 1 "$REPS"); do run_case "two_way_disjoint_rep$rep" 1 "$HALF" $((HALF + 1)) "$ROWS"; done
for rep in $(seq 1 "$REPS"); do run_case "two_way_hot${HOT}_rep$rep" 1 "$HOT" 1 "$HOT"; done

kill -TERM "$PGSYNC_PID" 2>/dev/null || true
wait "$PGSYNC_PID" 2>/dev/null || true
res "pgsync errors in its log" "$(grep -c ' ERROR ' "$RUN/pgsync.log" || true)"
kit_save_summary
