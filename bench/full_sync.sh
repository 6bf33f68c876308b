#!/usr/bin/env bash
# bench/full_sync.sh [SCALE ...] -- pgsync full sync (schema + rows + indexes) of a pgbench
# database into an empty destination, side by side with the peers measured by the shared
# bench kit in the same run:
#   (a) native logical replication initial copy      ../shared/bench/native_oneway.sh (STEPS=a)
#   (b) pglogical initial sync                        ../shared/bench/pglogical.sh     (STEPS=a)
#   (c) raw binary COPY pipe without PK + ADD PK      ../shared/bench/copy_limit.sh
# The machine is shared and noisy, so (c) is also measured *paired* with pgsync inside this
# script: every rep runs pgsync's full sync and the raw pipe back to back on the same two
# clusters (order alternating between reps), which gives a per-rep ratio.
# Prints every sample, the medians and the ratios.
#
# Env: REPS (3) runs per measurement; PEER_SCALES ("20") scales at which all PEERS ("copy
# native pglogical") run too; at the other scales only OTHER_PEERS ("") run;
# WORKERS (4); CHUNK_MB (32); PORT_A/PORT_B (55450/55451; the peers use +2, +4, +6 so that
# they never meet the kit's default ports another run may hold);
# PGBIN (server build, default /usr/lib/postgresql/15/bin); KIT (../shared/bench).
# pglogical needs: apt-get update && apt-get install -y postgresql-15-pglogical
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
KIT=${KIT:-$ROOT/../shared/bench}
SCALES=${*:-20}
export REPS=${REPS:-3}
PEER_SCALES=${PEER_SCALES:-20}
PEERS=${PEERS-copy native pglogical}
OTHER_PEERS=${OTHER_PEERS-}
WORKERS=${WORKERS:-4}
CHUNK_MB=${CHUNK_MB:-32}
PORT_A=${PORT_A:-55450}
PORT_B=${PORT_B:-55451}
# shellcheck source=/dev/null
source "$KIT/lib.sh"

(cd "$ROOT" && cargo build --release --example full_sync)
SYNC_BIN=$ROOT/target/release/examples/full_sync
OUT=$(mktemp -d /tmp/pgsync-full-sync-bench.XXXXXX)
export RESULTS_DIR=$OUT/peers

median() { tr ' ' '\n' | grep -E '^[0-9.]+$' | sort -g | awk '{a[NR]=$1} END {if (NR==0) print "nan"; else if (NR%2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }
samples_of() { { grep -h -F "$2" "$1" 2>/dev/null || true; } | awk '{print $NF}' | tr '\n' ' '; }   # FILE LABEL

ours_rep() {   # ours_rep REP: pgsync into a fresh database -> LAST_OURS
  qdb "$B" postgres "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
  qdb "$B" postgres "CREATE DATABASE $DB"
  checkpoint_all "$A" "$B"
  local t0 t1 line
  t0=$(now)
  line=$("$SYNC_BIN" --source "$(dsn "$A")" --destination "$(dsn "$B")" \
           --workers "$WORKERS" --chunk-mb "$CHUNK_MB" --task "bench$1" | tail -1)
  t1=$(now)
  LAST_OURS=$(fsub "$t1" "$t0")
  res "r$1 pgsync full sync, wall (s)" "$LAST_OURS"
  res "r$1 pgsync phases" "$line"
}

pipe_rep() {   # pipe_rep REP: copy_limit.sh's step 3 (binary pipe, no PK, + ADD PK) -> LAST_PIPE
  local bin t0 t1 t2; bin=$(cl_bin "$A")
  qdb "$B" postgres "DROP DATABASE IF EXISTS nopk WITH (FORCE)"
  qdb "$B" postgres "CREATE DATABASE nopk"
  pgb "$B" -i -q -I dt -s "$SCALE_NOW" nopk > /dev/null 2>&1
  checkpoint_all "$A" "$B"
  t0=$(now)
  "$bin/psql" -h 127.0.0.1 -p "$(cl_port "$A")" -U postgres -X -q -d "$DB" \
      -c 'COPY pgbench_accounts TO STDOUT (FORMAT binary)' \
    | "$bin/psql" -h 127.0.0.1 -p "$(cl_port "$B")" -U postgres -X -q -d nopk \
      -c 'COPY pgbench_accounts FROM STDIN (FORMAT binary)'
  t1=$(now)
  qdb "$B" nopk "ALTER TABLE pgbench_accounts ADD PRIMARY KEY (aid)"
  t2=$(now)
  LAST_PIPE=$(fsub "$t2" "$t0")
  res "r$1 paired raw pipe: COPY no-PK + ADD PK total (s)" "$LAST_PIPE"
  res "r$1 paired raw pipe: COPY / ADD PK (s)" "$(fsub "$t1" "$t0") / $(fsub "$t2" "$t1")"
}

run_ours() {   # run_ours SCALE -> $OUT/ours-sSCALE.txt (one line per rep)
  local scale=$1
  SCALE_NOW=$scale
  kit_init_run "pgsync_full_sync-s$scale"
  A=$RUN/A; B=$RUN/B
  kit_cluster A "$PORT_A"
  kit_cluster B "$PORT_B"
  qdb "$A" postgres "CREATE DATABASE $DB"
  pgb "$A" -i -q -s "$scale" "$DB" > "$RUN/pgbench-init.log" 2>&1
  local rows; rows=$(q "$A" "SELECT count(*) FROM pgbench_accounts")
  note "pgsync full sync; scale $scale ($rows accounts rows); reps $REPS; workers $WORKERS; chunk ${CHUNK_MB}MB; $(date -Is)"
  res "host" "$(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
  qdb "$B" postgres "CREATE DATABASE $DB"
  for rep in $(seq 1 "$REPS"); do
    if [ $((rep % 2)) = 1 ]; then ours_rep "$rep"; pipe_rep "$rep"; else pipe_rep "$rep"; ours_rep "$rep"; fi
    res "r$rep paired ratio pgsync / raw pipe" \
      "$(awk -v a="$LAST_OURS" -v b="$LAST_PIPE" 'BEGIN{printf "%.2f", a/b}')"
    [ "$(accounts_md5 "$A")" = "$(accounts_md5 "$B")" ] || { echo "accounts differ after rep $rep" >&2; exit 1; }
    [ "$(q "$A" "SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'")" = \
      "$(q "$B" "SELECT count(*) FROM pg_indexes WHERE schemaname = 'public'")" ] \
      || { echo "indexes differ after rep $rep" >&2; exit 1; }
  done
  res "accounts md5 and index count equal to A after every rep" "yes"
  cp "$SUMMARY" "$OUT/ours-s$scale.txt"
  kit_cleanup; CLUSTERS=()
}

for scale in $SCALES; do
  run_ours "$scale"
  peers=$OTHER_PEERS
  [[ " $PEER_SCALES " == *" $scale "* ]] && peers=$PEERS
  if [ -n "$peers" ]; then
    for peer in $peers; do
      case $peer in
        copy) PORT_A=$((PORT_A + 2)) PORT_B=$((PORT_B + 2)) REPS=$REPS bash "$KIT/copy_limit.sh" "$scale" > "$OUT/copy-s$scale.log" 2>&1 || echo "copy_limit.sh failed: $OUT/copy-s$scale.log" ;;
        native) PORT_A=$((PORT_A + 4)) PORT_B=$((PORT_B + 4)) STEPS=a REPS=$REPS bash "$KIT/native_oneway.sh" "$scale" > "$OUT/native-s$scale.log" 2>&1 || echo "native_oneway.sh failed: $OUT/native-s$scale.log" ;;
        pglogical) PORT_A=$((PORT_A + 6)) PORT_B=$((PORT_B + 6)) STEPS=a REPS=$REPS bash "$KIT/pglogical.sh" "$scale" > "$OUT/pglogical-s$scale.log" 2>&1 || echo "pglogical.sh failed: $OUT/pglogical-s$scale.log" ;;
      esac
    done
  fi
done

echo
echo "== full sync of pgbench, seconds (all samples; medians; ratio = method / pgsync)"
printf '%-7s %-58s %-32s %8s %8s\n' scale method samples median ratio
for scale in $SCALES; do
  ours=$(samples_of "$OUT/ours-s$scale.txt" "pgsync full sync, wall (s)")
  m_ours=$(echo "$ours" | median)
  printf '%-7s %-58s %-32s %8s %8s\n' "$scale" "pgsync full sync (schema + rows + indexes)" "$ours" "$m_ours" "1.00"
  pipe=$(samples_of "$OUT/ours-s$scale.txt" "paired raw pipe: COPY no-PK + ADD PK total (s)")
  m_pipe=$(echo "$pipe" | median)
  printf '%-7s %-58s %-32s %8s %8s\n' "$scale" "(c') raw pipe no PK + ADD PK, paired with pgsync" "$pipe" "$m_pipe" \
    "$(awk -v a="$m_pipe" -v b="$m_ours" 'BEGIN{printf "%.2f", a/b}')"
  paired=$(samples_of "$OUT/ours-s$scale.txt" "paired ratio pgsync / raw pipe")
  printf '%-7s %-58s %-32s %8s\n' "$scale" "per-rep ratio pgsync / (c') (target <= 1.2)" "$paired" "$(echo "$paired" | median)"
  row() {   # LABEL FILE-GLOB PATTERN
    local label=$1 files=$2 pattern=$3 s m
    # shellcheck disable=SC2086
    s=$(samples_of "$( (ls $files 2>/dev/null || true) | tail -1)" "$pattern")
    [ -n "$s" ] || return 0
    m=$(echo "$s" | median)
    printf '%-7s %-58s %-32s %8s %8s\n' "$scale" "$label" "$s" "$m" "$(awk -v a="$m" -v b="$m_ours" 'BEGIN{printf "%.2f", a/b}')"
  }
  row "(c) COPY pipe binary, no PK, + ADD PK (copy_limit.sh)" "$RESULTS_DIR/copy_limit-*s$scale-*.txt" "COPY no-PK + ADD PK total (s)"
  row "(a) native initial copy (native_oneway.sh STEPS=a)" "$RESULTS_DIR/native_oneway-*s$scale-*.txt" "initial copy until all tables 'r' (s)"
  row "(b) pglogical initial sync (pglogical.sh STEPS=a)" "$RESULTS_DIR/pglogical-*s$scale-*.txt" "initial sync until replicating + all 'r' (s)"
done
echo "raw summaries: $OUT"
