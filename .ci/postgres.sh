#!/usr/bin/env bash
# Install (if needed) and start a PostgreSQL server on 127.0.0.1 for the distributed search
# tests, create a user and a database, and print the URL to export as
# NETSCULPT_TEST_POSTGRES_URL:
#
#   export NETSCULPT_TEST_POSTGRES_URL="$(.ci/postgres.sh)"
#
# Uses Debian's postgresql package and its pg_ctlcluster wrapper; needs root (apt-get, su).
# Progress goes to stderr so that stdout is only the URL. Safe to run twice.
set -euo pipefail

PGUSER_NAME="${NETSCULPT_PG_USER:-netsculpt}"
PGPASS="${NETSCULPT_PG_PASSWORD:-netsculpt}"
PGDB="${NETSCULPT_PG_DB:-netsculpt_test}"
PGPORT="${NETSCULPT_PG_PORT:-5432}"

log() { echo "[postgres.sh] $*" >&2; }

if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    log "installing the postgresql package"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2
    apt-get install -y -qq postgresql >&2
fi

VERSION="$(ls /usr/lib/postgresql | sort -V | tail -n 1)"
if ! pg_lsclusters -h | awk '{print $1" "$2}' | grep -q "^${VERSION} main$"; then
    log "creating cluster ${VERSION}/main"
    pg_createcluster "${VERSION}" main --port "${PGPORT}" >&2
fi
CONF_DIR="/etc/postgresql/${VERSION}/main"
# listen on the loopback address only, on the chosen port
sed -i "s/^#\?listen_addresses.*/listen_addresses = '127.0.0.1'/" "${CONF_DIR}/postgresql.conf"
sed -i "s/^#\?port = .*/port = ${PGPORT}/" "${CONF_DIR}/postgresql.conf"

if ! pg_lsclusters -h | awk -v v="${VERSION}" '$1==v && $2=="main" {print $4}' | grep -q online; then
    log "starting cluster ${VERSION}/main on 127.0.0.1:${PGPORT}"
    pg_ctlcluster "${VERSION}" main start >&2
fi

for _ in $(seq 1 30); do
    if su postgres -c "pg_isready -q -h 127.0.0.1 -p ${PGPORT}"; then break; fi
    sleep 1
done
su postgres -c "pg_isready -h 127.0.0.1 -p ${PGPORT}" >&2

psql_admin() { su postgres -c "psql -v ON_ERROR_STOP=1 -q -p ${PGPORT} -d postgres -tAc \"$1\""; }
if [ "$(psql_admin "SELECT 1 FROM pg_roles WHERE rolname='${PGUSER_NAME}'")" != "1" ]; then
    log "creating user ${PGUSER_NAME}"
    psql_admin "CREATE ROLE ${PGUSER_NAME} LOGIN PASSWORD '${PGPASS}'"
fi
if [ "$(psql_admin "SELECT 1 FROM pg_database WHERE datname='${PGDB}'")" != "1" ]; then
    log "creating database ${PGDB}"
    psql_admin "CREATE DATABASE ${PGDB} OWNER ${PGUSER_NAME}"
fi

echo "postgresql://${PGUSER_NAME}:${PGPASS}@127.0.0.1:${PGPORT}/${PGDB}"
