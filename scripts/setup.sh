#!/usr/bin/env bash
# Installs what pgsync's demo, tests and benches need on a fresh Debian/Ubuntu machine that
# has only Rust: PostgreSQL 15 server packages (with pgbench and contrib), and PostgreSQL 18
# server binaries (scripts/install-pg18.sh). Idempotent: installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else echo "setup: need root to run: $*" >&2; exit 1
  fi
}

apt_updated=0
apt_install() {
  if [ "$apt_updated" = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "$@"
}

need=()
# The server packages; the tests start their own clusters, so Debian's default one is not
# wanted (postgresql-common reads createcluster.d before creating it).
if [ -z "${PGSYNC_PG_BIN:-}" ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  as_root mkdir -p /etc/postgresql-common/createcluster.d
  echo "create_main_cluster = false" | as_root tee /etc/postgresql-common/createcluster.d/pgsync.conf >/dev/null
  need+=(postgresql-15 postgresql-contrib-15 postgresql-client-15)
fi
command -v python3 >/dev/null || need+=(python3 python3-pip)
python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
command -v runuser >/dev/null || need+=(util-linux)
# pgsync-ddl builds PostgreSQL's parser (libpg_query) through bindgen, which needs libclang.
ls /usr/lib/llvm-*/lib/libclang*.so* >/dev/null 2>&1 || ls /usr/lib/*/libclang*.so* >/dev/null 2>&1 \
  || need+=(libclang-dev)
if [ ${#need[@]} -gt 0 ]; then
  echo "setup: installing ${need[*]}" >&2
  apt_install "${need[@]}"
fi

pg18=$(scripts/install-pg18.sh)
echo "setup: PostgreSQL 15 in $(ls -d /usr/lib/postgresql/15/bin 2>/dev/null || echo "${PGSYNC_PG_BIN:-?}"), PostgreSQL 18 in $pg18" >&2
