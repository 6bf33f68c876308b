#!/usr/bin/env bash
# Runs every test of pgsync against real PostgreSQL servers (the test kit starts them):
#   1. the whole workspace on PostgreSQL 15 (Debian's packages);
#   2. the version-dependent suites (replication protocol, end-to-end) again on PostgreSQL 18;
#   3. when run as root, the test kit's own suite once more as an unprivileged user, to
#      show that both ways of running servers work.
# Set-up of a fresh machine is included (scripts/setup.sh). Extra arguments go to cargo test.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
pg18=$(scripts/install-pg18.sh)
pg15=${PGSYNC_PG15_BIN:-/usr/lib/postgresql/15/bin}

# Packages whose tests depend on the server version.
PG18_PACKAGES=(pgsync-testkit pgsync-wal pgsync-apply pgsync-ddl pgsync-task pgsync pgsync-workspace)

echo "== all tests, PostgreSQL 15 ($pg15)"
PGSYNC_PG_BIN=$pg15 cargo test --workspace "$@"

echo "== version-dependent tests, PostgreSQL 18 ($pg18)"
PGSYNC_PG_BIN=$pg18 cargo test "${PG18_PACKAGES[@]/#/--package=}" "$@"

if [ "$(id -u)" = 0 ]; then
  echo "== test kit as an unprivileged user"
  user=${PGSYNC_TEST_NONROOT_USER:-pgsyncci}
  id -u "$user" >/dev/null 2>&1 || useradd --system --no-create-home --shell /usr/sbin/nologin "$user"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  cargo test -p pgsync-testkit --tests --no-run --message-format=json 2>/dev/null \
    | python3 -c 'import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["profile"]["test"] and m.get("executable"):
        print(m["executable"])' | sort -u > "$work/bins"
  chmod 755 "$work"
  mkdir -m 1777 "$work/tmp"
  while read -r bin; do
    case "$bin" in *missing_binaries*) continue ;; esac
    cp "$bin" "$work/"
    chmod 755 "$work/$(basename "$bin")"
    runuser -u "$user" -- env TMPDIR="$work/tmp" PGSYNC_PG_BIN="$pg15" "$work/$(basename "$bin")"
  done < "$work/bins"
fi
