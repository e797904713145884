#!/usr/bin/env bash
# Makes sure PostgreSQL answers on 127.0.0.1:5432, then (re)creates a database holding the
# MessageDB schema, installed by @eventide/message-db's own install scripts.
#
#   tools/postgres.sh [database]        # default database: impel_test
#
# Safe to repeat: the database is dropped and recreated each time, the message_store role is
# created only if absent. Run it as root in CI (it may start or install the server) or as any
# user who can reach an already running server. Connection settings follow libpq's PGHOST,
# PGPORT, PGUSER (defaults 127.0.0.1, 5432, postgres).
#
# The database's search_path is set to `message_store, public` because MessageDB's server
# functions name their table and helpers unqualified (Eventide's deployments set the same on the
# role or the connection); impel's MessageDB adapters rely on it.
set -euo pipefail

db="${1:-impel_test}"
if [[ ! "$db" =~ ^[a-z_][a-z0-9_]{0,62}$ ]]; then
  echo "postgres.sh: database name must match [a-z_][a-z0-9_]*, got '$db'" >&2
  exit 2
fi

export PGHOST="${PGHOST:-127.0.0.1}" PGPORT="${PGPORT:-5432}" PGUSER="${PGUSER:-postgres}"
export PGOPTIONS="${PGOPTIONS:--c client_min_messages=warning}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

ready() { pg_isready -q -h "$PGHOST" -p "$PGPORT" 2>/dev/null; }

wait_ready() {
  for _ in $(seq 1 60); do
    ready && return 0
    sleep 0.5
  done
  echo "postgres.sh: PostgreSQL did not become ready on $PGHOST:$PGPORT" >&2
  return 1
}

# Starts every stopped cluster of the Debian packaging (normally just one).
start_clusters() {
  pg_lsclusters --no-header | while read -r version cluster port status _; do
    if [[ "$status" != online* ]]; then
      echo "postgres.sh: starting cluster $version/$cluster (port $port)"
      pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" start
    fi
  done
}

if ! ready; then
  if ! command -v pg_lsclusters >/dev/null 2>&1; then
    if [[ "$(id -u)" != 0 ]]; then
      echo "postgres.sh: PostgreSQL is not installed; run as root to install it from apt" >&2
      exit 1
    fi
    echo "postgres.sh: installing PostgreSQL from apt"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql postgresql-client >/dev/null
    # A fresh cluster only accepts password logins over TCP; a throwaway CI server is trusted
    # from the loopback address so the tests need no secrets.
    for hba in /etc/postgresql/*/main/pg_hba.conf; do
      if ! grep -q "impel: trust loopback" "$hba"; then
        sed -i '1i host all all 127.0.0.1/32 trust # impel: trust loopback' "$hba"
      fi
    done
    pg_lsclusters --no-header | while read -r version cluster _; do
      pg_ctlcluster --skip-systemctl-redirect "$version" "$cluster" restart || true
    done
  fi
  if ! ready; then
    if [[ "$(id -u)" != 0 ]]; then
      echo "postgres.sh: PostgreSQL is stopped; run as root (or start it) first" >&2
      exit 1
    fi
    start_clusters
  fi
  wait_ready
fi

schema_dir="$root/node_modules/@eventide/message-db/database"
if [[ ! -f "$schema_dir/install.sh" ]]; then
  echo "postgres.sh: installing npm packages for @eventide/message-db"
  (cd "$root" && npm install --no-audit --no-fund >/dev/null)
fi

psql -q -v ON_ERROR_STOP=1 -d postgres -c "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)"
# install.sh creates the role and the database, then runs the schema, function, index, view and
# privilege scripts in the order the package defines.
DATABASE_NAME="$db" CREATE_DATABASE=on bash "$schema_dir/install.sh" >/dev/null
psql -q -v ON_ERROR_STOP=1 -d postgres \
  -c "ALTER DATABASE \"$db\" SET search_path TO message_store, public"
version="$(psql -qAt -d "$db" -c "SELECT message_store.message_store_version()")"
echo "postgres.sh: database $db ready on $PGHOST:$PGPORT with MessageDB $version"
