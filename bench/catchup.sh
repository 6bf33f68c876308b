#!/usr/bin/env bash
# bench/catchup.sh [SCALE] -- pgsync catch-up: a backlog is built on A while the forward task
# is stopped, then pgsync is started again and timed until B has all of it. Side by side, in
# the same run, with native logical replication on PostgreSQL 15 and 18 draining the same
# backlogs (subscription disabled, load, enabled, timed), as the shared kit's step (d) does.
#
#   (a) DURATION s of pgbench -N -n (CLIENTS clients)      native: native_oneway.sh step d
#   (b) SINGLE_ROWS single-row INSERT transactions          native: this script (same method)
#   (c) one BULK_ROWS-row INSERT ... SELECT                 native: native_oneway.sh step c
#       (live, time after COMMIT: the figure of BASELINE.md §5) and, as a backlog, this script
#
# pgsync's resident memory (VmRSS sampled every 0.2 s, and VmHWM) is recorded for the whole
# life of every pgsync process: the initial sync and each drain.
# Prints every sample, the medians, the ratios (native time / pgsync time: > 1 means pgsync
# is faster) and the peak RSS.
#
# Env: REPS (2) runs per measurement; WORKLOADS ("a b c"); PEERS ("native15 native18");
# PGSYNC_PG (15) the PostgreSQL version of pgsync's own pair of clusters (15 or 18);
# DURATION (30); CLIENTS (4); SINGLE_ROWS (1000000); BULK_ROWS (1000000);
# PORT_BASE (55470: pgsync uses +0/+1, PG15 peers +2/+3, PG18 peers +4/+5);
# PG18_BIN (default: what scripts/install-pg18.sh prints); KIT (../shared/bench);
# PGSYNC_BIN (default: target/release/pgsync, built first) runs that pgsync binary instead;
# WAIT_MAX (900) bounds every wait; PGSYNC_LOG (info) RUST_LOG of pgsync; PGSYNC_PERF=1 records
# a CPU profile (perf record -e cpu-clock) of each pgsync process into the output directory;
# PGSYNC_PERF=all profiles the whole host during each drain instead (walsender and the
# destination's backends too: LABEL.pids lists pgsync's, its walsenders' and its backends'
# pids, in that order, for `perf report --pids`).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
KIT=${KIT:-$ROOT/../shared/bench}
SCALE=${1:-20}
export REPS=${REPS:-2}
export DURATION=${DURATION:-30}
export BULK_ROWS=${BULK_ROWS:-1000000}
SINGLE_ROWS=${SINGLE_ROWS:-1000000}
WORKLOADS=${WORKLOADS:-a b c}
PEERS=${PEERS-native15 native18}
PORT_BASE=${PORT_BASE:-55470}
PGSYNC_LOG=${PGSYNC_LOG:-info}
PG15_BIN=/usr/lib/postgresql/15/bin
export PGBIN=$PG15_BIN
# shellcheck source=/dev/null
source "$KIT/lib.sh"

if [ -z "${PGSYNC_BIN:-}" ]; then
  (cd "$ROOT" && cargo build --release -p pgsync)
  PGSYNC_BIN=$ROOT/target/release/pgsync
fi
PGSYNC_PG=${PGSYNC_PG:-15}
if [[ " $PEERS " == *" native18 "* || $PGSYNC_PG = 18 ]]; then
  PG18_BIN=${PG18_BIN:-$("$ROOT/scripts/install-pg18.sh")}
fi
OUT=$(mktemp -d /tmp/pgsync-catchup-bench.XXXXXX)
export RESULTS_DIR=$OUT/peers

median() { tr ' ' '\n' | { grep -E '^[0-9.]+$' || true; } | sort -g | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }
samples_of() { { grep -h -F "$2" "$1" 2>/dev/null || true; } | awk '{print $NF}' | tr '\n' ' '; }   # FILE LABEL
maxcol() { awk -v c="$1" 'BEGIN{m=0} $c+0>m{m=$c+0} END{printf "%.0f", m/1024}'; }             # kB -> MB

# ------------------------------------------------------------------ pgsync process control
PGSYNC_PID=
SAMPLER_PID=
SOURCE_SAMPLER_PID=
# rss_sampler PID FILE: "epoch VmRSS_kB VmHWM_kB" every 0.2 s while PID lives
rss_sampler() {
  local pid=$1 out=$2 line
  while line=$(awk '/^VmRSS/{r=$2} /^VmHWM/{h=$2} END{if (r != "") print r, h}' "/proc/$pid/status" 2>/dev/null) && [ -n "$line" ]; do
    echo "$(now) $line" >> "$out"
    sleep 0.2
  done
}
# source_sampler PID FILE: "pid cpu_ticks" of every client backend and walsender of the
# postmaster PID (A), every 0.2 s while pgsync lives: its sessions on A, including a catch-up
# session that ends before the drain does
source_sampler() {
  local pm=$1 out=$2 p
  while kill -0 "$PGSYNC_PID" 2>/dev/null; do
    for p in $(pgrep -P "$pm"); do
      case "$(tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null)" in
        "postgres: walsender"*|"postgres: postgres "*) awk -v p="$p" '{print p, $14 + $15}' "/proc/$p/stat" 2>/dev/null >> "$out" ;;
      esac
    done
    sleep 0.2
  done
}
pgsync_start() {   # pgsync_start LABEL -> PGSYNC_PID, log $RUN/LABEL.pgsync.log, RSS in LABEL.rss
  local label=$1
  PGSYNC_LOGFILE=$RUN/$label.pgsync.log
  NO_COLOR=1 RUST_LOG=$PGSYNC_LOG "$PGSYNC_BIN" run --config "$TASK" 2> "$PGSYNC_LOGFILE" &
  PGSYNC_PID=$!
  rss_sampler "$PGSYNC_PID" "$RUN/$label.rss" &
  SAMPLER_PID=$!
  source_sampler "$(head -1 "$A/data/postmaster.pid")" "$RUN/$label.srccpu" &
  SOURCE_SAMPLER_PID=$!
  if [ "${PGSYNC_PERF:-}" = all ]; then   # the whole host, with call graphs
    perf record -q -a -g -e cpu-clock -F 999 -o "$OUT/$label.perf.data" >/dev/null 2>&1 &
    PERF_PID=$!
  elif [ -n "${PGSYNC_PERF:-}" ]; then   # a CPU profile of every pgsync run (perf, software clock)
    perf record -q -e cpu-clock -F 999 -p "$PGSYNC_PID" -o "$OUT/$label.perf.data" >/dev/null 2>&1 &
  fi
}
pgsync_stop() {    # SIGTERM, bounded wait for a clean exit (SIGKILL after 120 s)
  [ -n "$PGSYNC_PID" ] || return 0
  kill -TERM "$PGSYNC_PID" 2>/dev/null || true
  local i
  for i in $(seq 1 1200); do kill -0 "$PGSYNC_PID" 2>/dev/null || break; sleep 0.1; done
  perf_stop
  if kill -0 "$PGSYNC_PID" 2>/dev/null; then
    echo "pgsync did not stop within 120 s; killing it" >&2
    kill -KILL "$PGSYNC_PID" 2>/dev/null || true
  fi
  wait "$PGSYNC_PID" 2>/dev/null || true
  if [ -n "$SAMPLER_PID" ]; then
    kill "$SAMPLER_PID" "$SOURCE_SAMPLER_PID" 2>/dev/null || true
    wait "$SAMPLER_PID" "$SOURCE_SAMPLER_PID" 2>/dev/null || true
  fi
  cp "$PGSYNC_LOGFILE" "$OUT/" 2>/dev/null || true   # kept with the results
  PGSYNC_PID=; SAMPLER_PID=
}
perf_stop() { if [ -n "${PERF_PID:-}" ]; then kill -INT "$PERF_PID" 2>/dev/null || true; wait "$PERF_PID" 2>/dev/null || true; PERF_PID=; fi; }
pgsync_alive() { [ -n "$PGSYNC_PID" ] && kill -0 "$PGSYNC_PID" 2>/dev/null; }
log_has() { grep -q -F "$1" "$PGSYNC_LOGFILE" 2>/dev/null; }
cleanup() {
  pgsync_stop
  kit_cleanup
}
init_run() {       # kit_init_run + our own EXIT trap (pgsync first, then the kit's clusters)
  kit_init_run "$1"
  trap cleanup EXIT
}

# ------------------------------------------------------------------ workloads on A
single_row_load() {  # SINGLE_ROWS transactions of one INSERT each, from one session
  # synchronous_commit = off only makes the load faster to build; the WAL is the same.
  cl_psql "$1" -d "$DB" -Atq -v ON_ERROR_STOP=1 -c "SET synchronous_commit = off" -c "
    DO \$\$ BEGIN
      FOR i IN 1..$SINGLE_ROWS LOOP
        INSERT INTO bulk_t VALUES (i, i % 1000, md5(i::text));
        COMMIT;
      END LOOP;
    END \$\$"
}
bulk_load() { q "$1" "INSERT INTO bulk_t SELECT g, g % 1000, md5(g::text) FROM generate_series(1, $BULK_ROWS) g"; }
bulk_has() { [ "$(q "$1" "SELECT count(*) FROM bulk_t WHERE id = $2")" = 1 ]; }   # DIR ID
bulk_sig() { q "$1" "SELECT count(*) || ':' || coalesce(sum(v), 0) || ':' || coalesce(md5(string_agg(payload, ',' ORDER BY id)), '-') FROM bulk_t"; }
slot_behind() { q "$1" "SELECT pg_size_pretty(max(pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn))) FROM pg_replication_slots WHERE slot_type = 'logical'"; }

# ------------------------------------------------------------------ pgsync runs
run_pgsync() {
  if [ "$PGSYNC_PG" = 18 ]; then export PGBIN=$PG18_BIN; fi
  init_run "pgsync_catchup-s$SCALE"
  A=$RUN/A; B=$RUN/B
  kit_cluster A "$PORT_BASE"
  kit_cluster B "$((PORT_BASE + 1))"
  qdb "$A" postgres "CREATE DATABASE $DB"
  qdb "$B" postgres "CREATE DATABASE $DB"
  pgb "$A" -i -q -s "$SCALE" "$DB" > "$RUN/pgbench-init.log" 2>&1
  q "$A" "ALTER TABLE pgbench_history REPLICA IDENTITY FULL"
  q "$A" "CREATE TABLE bulk_t (id bigint PRIMARY KEY, v int NOT NULL, payload text NOT NULL)"
  TASK=$RUN/task.toml
  cat > "$TASK" <<EOF
name = "catchup"
[source]
dsn = "$(dsn "$A")"
[destination]
dsn = "$(dsn "$B")"
EOF
  note "pgsync catch-up; scale $SCALE; reps $REPS; workloads $WORKLOADS; $(date -Is)"
  res "host" "$(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
  res "servers" "$("$PGBIN/postgres" --version)"
  res "pgsync" "$(git -C "$ROOT" rev-parse --short HEAD)$(git -C "$ROOT" diff --quiet -- crates || echo '+changes')"

  # initial sync, until streaming and B has every row
  local t0; t0=$(now)
  pgsync_start initial
  wait_for "$WAIT_MAX" 0.2 log_has "streaming changes" \
    || { tail -20 "$PGSYNC_LOGFILE" >&2; echo "pgsync did not reach streaming" >&2; exit 1; }
  res "initial sync until streaming (s)" "$(fsub "$(now)" "$t0")"
  compare_tables "initial" "$A" "$B"
  local rep w
  for rep in $(seq 1 "$REPS"); do
    for w in $WORKLOADS; do
      drain_pgsync "$w" "$rep"
    done
  done
  pgsync_stop
  res "initial sync: max VmRSS / VmHWM (MB)" "$(maxcol 2 < "$RUN/initial.rss") / $(maxcol 3 < "$RUN/initial.rss")"
  cp "$SUMMARY" "$OUT/pgsync.txt"
  cleanup; CLUSTERS=()
  export PGBIN=$PG15_BIN
}

# cpu_of PID: user + system CPU seconds the process has used so far
cpu_of() { awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$1/stat" 2>/dev/null || echo 0; }
# drain_cpu: CPU used since pgsync started, by pgsync, its walsender and sessions on A (the
# source sampler's last figure per process, plus a last look now) and its sessions on B (all
# started with this pgsync process), to tell where a drain's time goes.
drain_cpu() {
  local p ws bs=0
  for p in $(pgrep -P "$(head -1 "$A/data/postmaster.pid")"); do
    case "$(tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null)" in
      "postgres: walsender"*|"postgres: postgres "*) awk -v p="$p" '{print p, $14 + $15}' "/proc/$p/stat" 2>/dev/null >> "$RUN/$DRAIN_LABEL.srccpu" ;;
    esac
  done
  ws=$(awk -v hz="$(getconf CLK_TCK)" '{t[$1] = $2} END {for (p in t) s += t[p]; printf "%.2f", s / hz}' "$RUN/$DRAIN_LABEL.srccpu" 2>/dev/null || echo 0)
  for p in $(q "$B" "SELECT pid FROM pg_stat_activity WHERE application_name LIKE 'pgsync%'"); do bs=$(fadd "$bs" "$(cpu_of "$p")"); done
  # for `perf report --pids` of a PGSYNC_PERF=all profile
  echo "$PGSYNC_PID $(q "$A" "SELECT string_agg(pid::text, ',') FROM pg_stat_replication") $(q "$B" "SELECT string_agg(pid::text, ',') FROM pg_stat_activity WHERE application_name LIKE 'pgsync%'")" > "$OUT/$DRAIN_LABEL.pids"
  echo "$(cpu_of "$PGSYNC_PID") / $ws / $bs"
}
# ctxsw_of PID: voluntary + involuntary context switches of the process so far
ctxsw_of() { awk '/ctxt_switches/{n+=$2} END{print n+0}' "/proc/$1/status" 2>/dev/null || echo 0; }
# walsenders_ctxsw: context switches of A's walsenders, summed
walsenders_ctxsw() {
  local p n=0
  for p in $(q "$A" "SELECT pid FROM pg_stat_replication"); do n=$((n + $(ctxsw_of "$p"))); done
  echo "$n"
}
fadd() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.2f", a + b}'; }

# drain_done: B has the whole backlog (or pgsync died: DRAIN_DEAD=1); notes when pgsync
# logged that it streams (T_STREAM).
drain_done() {
  if [ -z "$T_STREAM" ] && log_has "streaming changes"; then T_STREAM=$(now); fi
  pgsync_alive || { DRAIN_DEAD=1; return 0; }
  case $DRAIN_W in
    a) [ "$(hist_count "$B")" = "$DRAIN_TARGET" ] ;;
    *) bulk_has "$B" "$DRAIN_TARGET" ;;
  esac
}

# drain_pgsync W REP: with pgsync running and caught up, reset, stop it, build backlog W,
# start it again and time until B has everything.
drain_pgsync() {
  local w=$1 rep=$2 label="$1_rep$2" target done_check
  pgsync_alive || pgsync_start "before_$label"
  case $w in
    a) oneway_reset "$A" "$B" ;;
    b|c) q "$A" "TRUNCATE bulk_t"
         wait_for "$WAIT_MAX" 0.2 bulk_dst_empty "$B" || { res "$label" "TRUNCATE did not replicate"; exit 1; } ;;
  esac
  pgsync_stop
  local tl0; tl0=$(now)
  case $w in
    a) pgb "$A" -c "$CLIENTS" -j "$THREADS" -T "$DURATION" -N -n -P 5 "$DB" > "$RUN/$label.pgbench.log" 2>&1
       target=$(hist_count "$A")
       res "$label backlog: pgbench -N TPS on A" "$(tps_of "$RUN/$label.pgbench.log")" ;;
    b) single_row_load "$A"; target=$SINGLE_ROWS ;;
    c) bulk_load "$A"; target=$BULK_ROWS ;;
  esac
  res "$label backlog built in (s)" "$(fsub "$(now)" "$tl0")"
  res "$label backlog: transactions or rows" "$target"
  res "$label backlog: WAL behind the slot" "$(slot_behind "$A")"
  checkpoint_all "$A" "$B"
  local t0 t1=
  T_STREAM=; DRAIN_W=$w; DRAIN_TARGET=$target; DRAIN_DEAD=; DRAIN_LABEL=$label
  t0=$(now)
  pgsync_start "$label"
  if wait_for "$WAIT_MAX" 0.1 drain_done && [ -z "$DRAIN_DEAD" ]; then t1=$(now); fi
  perf_stop
  local rss; rss=$(tail -1 "$RUN/$label.rss" 2>/dev/null || echo "0 0 0")
  if [ -n "$t1" ]; then
    res "$label drain time from restart (s)" "$(fsub "$t1" "$t0")"
    [ -n "$T_STREAM" ] && res "$label drain time from streaming start (s)" "$(fsub "$t1" "$T_STREAM")"
    [ "$w" = c ] || res "$label drain rate from restart (txn/s)" "$(fdiv "$target" "$(fsub "$t1" "$t0")")"
  else
    res "$label drain time from restart (s)" "TIMEOUT >${WAIT_MAX}s or pgsync exited"
    tail -20 "$PGSYNC_LOGFILE" >&2
  fi
  res "$label max VmRSS / VmHWM during the drain (MB)" "$(maxcol 2 < "$RUN/$label.rss") / $(echo "$rss" | maxcol 3)"
  res "$label CPU seconds: pgsync / walsender and sessions on A / pgsync's backends on B" "$(drain_cpu)"
  res "$label context switches: pgsync / walsender on A" "$(ctxsw_of "$PGSYNC_PID") / $(walsenders_ctxsw)"
  case $w in
    a) compare_tables "$label" "$A" "$B" ;;
    *) local sa sb; sa=$(bulk_sig "$A"); sb=$(bulk_sig "$B")
       res "$label bulk_t equal on A and B" "$([ "$sa" = "$sb" ] && echo yes || echo "NO: A $sa B $sb")" ;;
  esac
}

# native_cpu: CPU used by the subscription's walsender on A and its apply worker on B, since
# they started (at ENABLE)
native_cpu() {
  local p ws=0 aw=0
  for p in $(q "$A" "SELECT pid FROM pg_stat_replication"); do ws=$(fadd "$ws" "$(cpu_of "$p")"); done
  for p in $(q "$B" "SELECT pid FROM pg_stat_subscription WHERE pid IS NOT NULL"); do aw=$(fadd "$aw" "$(cpu_of "$p")"); done
  echo "$ws / $aw"
}

# ------------------------------------------------------------------ native (b), (c) as backlogs
# native_backlogs VER BIN PORT_A PORT_B: PUBLICATION/SUBSCRIPTION (defaults of that version)
# on bulk_t; per rep: TRUNCATE, DISABLE, load, ENABLE, time until B has the last row.
native_backlogs() {
  local ver=$1 bin=$2 pa=$3 pb=$4
  PGBIN=$bin init_run "native_catchup-pg$ver-s$SCALE"
  A=$RUN/A; B=$RUN/B
  PGBIN=$bin kit_cluster A "$pa"
  PGBIN=$bin kit_cluster B "$pb"
  local d
  for d in "$A" "$B"; do
    qdb "$d" postgres "CREATE DATABASE $DB"
    q "$d" "CREATE TABLE bulk_t (id bigint PRIMARY KEY, v int NOT NULL, payload text NOT NULL)"
  done
  q "$A" "CREATE PUBLICATION kit_pub FOR TABLE bulk_t"
  q "$B" "CREATE SUBSCRIPTION kit_sub CONNECTION '$(dsn "$A")' PUBLICATION kit_pub WITH (copy_data = false)"
  note "native catch-up of single-row and bulk backlogs; $("$bin/postgres" --version); $(date -Is)"
  res "subscription options (substream, subsynccommit)" "$(q "$B" "SELECT substream::text || ', ' || subsynccommit FROM pg_subscription")"
  local rep w label target t0 t1
  for rep in $(seq 1 "$REPS"); do
    for w in b c; do
      [[ " $WORKLOADS " == *" $w "* ]] || continue
      label="${w}_rep$rep"
      q "$A" "TRUNCATE bulk_t"
      wait_for "$WAIT_MAX" 0.2 bulk_dst_empty "$B" || { res "$label" "TRUNCATE did not replicate"; exit 1; }
      q "$B" "ALTER SUBSCRIPTION kit_sub DISABLE"
      sleep 2
      if [ "$w" = b ]; then single_row_load "$A"; target=$SINGLE_ROWS; else bulk_load "$A"; target=$BULK_ROWS; fi
      res "$label backlog: transactions or rows / WAL behind the slot" "$target / $(slot_behind "$A")"
      checkpoint_all "$A" "$B"
      t0=$(now); t1=
      q "$B" "ALTER SUBSCRIPTION kit_sub ENABLE"
      if wait_for "$WAIT_MAX" 0.1 bulk_has "$B" "$target"; then t1=$(now); fi
      if [ -n "$t1" ]; then
        res "$label drain time after ENABLE (s)" "$(fsub "$t1" "$t0")"
        res "$label CPU seconds: walsender on A / apply worker on B" "$(native_cpu)"
        res "$label context switches: walsender on A" "$(walsenders_ctxsw)"
      else
        res "$label drain time after ENABLE (s)" "TIMEOUT >${WAIT_MAX}s"
      fi
      local sa sb; sa=$(bulk_sig "$A"); sb=$(bulk_sig "$B")
      res "$label bulk_t equal on A and B" "$([ "$sa" = "$sb" ] && echo yes || echo "NO: A $sa B $sb")"
    done
  done
  cp "$SUMMARY" "$OUT/native$ver.txt"
  cleanup; CLUSTERS=()
}

run_peer() {   # run_peer VER BIN PORT_A PORT_B
  local ver=$1 bin=$2 pa=$3 pb=$4 steps=
  [[ " $WORKLOADS " == *" a "* ]] && steps="$steps d"
  [[ " $WORKLOADS " == *" c "* ]] && steps="$steps c"
  if [ -n "$steps" ]; then
    PGBIN=$bin PORT_A=$pa PORT_B=$pb STEPS="$steps" bash "$KIT/native_oneway.sh" "$SCALE" \
      > "$OUT/native_oneway-pg$ver.log" 2>&1 || echo "native_oneway.sh failed: $OUT/native_oneway-pg$ver.log"
    cp "$(ls "$RESULTS_DIR"/native_oneway-pg"$ver"-*.txt | tail -1)" "$OUT/kit$ver.txt" 2>/dev/null || true
  fi
  if [[ " $WORKLOADS " == *" b "* || " $WORKLOADS " == *" c "* ]]; then
    native_backlogs "$ver" "$bin" "$pa" "$pb"
  fi
}

run_pgsync
for peer in $PEERS; do
  case $peer in
    native15) run_peer 15 "$PG15_BIN" "$((PORT_BASE + 2))" "$((PORT_BASE + 3))" ;;
    native18) run_peer 18 "$PG18_BIN" "$((PORT_BASE + 4))" "$((PORT_BASE + 5))" ;;
  esac
done

# ------------------------------------------------------------------ table
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b+0==0 || a=="nan" || b=="nan") print "-"; else printf "%.2f", a/b}'; }
of() { { grep -h -E "^$2_rep[0-9]+ $3" "$1" 2>/dev/null || true; } | awk '{print $NF}' | tr '\n' ' '; }  # FILE W LABEL-REGEX
line() {   # line WORKLOAD METHOD SAMPLES UNIT [PGSYNC_MEDIAN time|rate]
  local m r=-; m=$(echo "$3" | median)
  if [ -n "${5:-}" ] && [ "$m" != nan ]; then
    if [ "$6" = rate ]; then r=$(ratio "$5" "$m"); else r=$(ratio "$m" "$5"); fi
  fi
  printf '%-2s %-54s %-34s %9s %-6s %6s\n' "$1" "$2" "$3" "$m" "$4" "$r"
}
echo
echo "== catch-up of a backlog: all samples, medians; ratio = how many times faster pgsync is"
echo "   (native time / pgsync time; for (a) pgsync rate / native rate, the backlogs differ)"
printf '%-2s %-54s %-34s %9s %-6s %6s\n' "" method samples median unit ratio
for w in $WORKLOADS; do
  case $w in
    a) ours=$(of "$OUT/pgsync.txt" a "drain rate from restart"); m_ours=$(echo "$ours" | median)
       line a "pgsync, pgbench -N backlog, drain rate from restart" "$ours" txn/s
       line a "pgsync, same, drain time from restart" "$(of "$OUT/pgsync.txt" a "drain time from restart")" s
       line a "pgsync, same, backlog transactions" "$(of "$OUT/pgsync.txt" a "backlog: transactions")" txns
       for v in 15 18; do
         [ -f "$OUT/kit$v.txt" ] || continue
         line a "native PG$v, step d drain rate (native_oneway.sh)" "$(of "$OUT/kit$v.txt" d "drain rate")" txn/s "$m_ours" rate
       done ;;
    b) ours=$(of "$OUT/pgsync.txt" b "drain time from restart"); m_ours=$(echo "$ours" | median)
       line b "pgsync, $SINGLE_ROWS single-row txns, from restart" "$ours" s
       for v in 15 18; do
         [ -f "$OUT/native$v.txt" ] || continue
         line b "native PG$v, same backlog, after ENABLE" "$(of "$OUT/native$v.txt" b "drain time after ENABLE")" s "$m_ours" time
       done ;;
    c) ours=$(of "$OUT/pgsync.txt" c "drain time from restart"); m_ours=$(echo "$ours" | median)
       line c "pgsync, one $BULK_ROWS-row INSERT backlog, from restart" "$ours" s
       for v in 15 18; do
         if [ -f "$OUT/kit$v.txt" ]; then line c "native PG$v, live, after COMMIT (native_oneway.sh c)" "$(of "$OUT/kit$v.txt" c "dst has all rows, after source COMMIT")" s "$m_ours" time; fi
         if [ -f "$OUT/native$v.txt" ]; then line c "native PG$v, same backlog, after ENABLE" "$(of "$OUT/native$v.txt" c "drain time after ENABLE")" s "$m_ours" time; fi
       done ;;
  esac
done
echo
echo "pgsync peak resident memory (MB): initial sync $(samples_of "$OUT/pgsync.txt" "initial sync: max VmRSS / VmHWM (MB)" | awk '{print $NF}');" \
  "drains (VmHWM) $(grep -h 'during the drain' "$OUT/pgsync.txt" | awk '{print $NF}' | tr '\n' ' ')"
echo "raw summaries: $OUT"
