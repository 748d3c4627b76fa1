#!/bin/sh
# Start PostgreSQL as the postgres user; on an empty PGDATA, make the cluster first with
# the password of $POSTGRES_PASSWORD (scram over TCP, peer on the local socket) and the
# database $POSTGRES_DB (default pesto).
set -eu
bin=/usr/lib/postgresql/15/bin
db=${POSTGRES_DB:-pesto}
# A fresh volume is root's: hand it to postgres, then drop root for good.
if [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA"
    chown postgres:postgres "$PGDATA"
    chmod 0700 "$PGDATA"
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi
# The marker is written last: a first start cut short (the pod killed mid-way) is redone.
if [ ! -e "$PGDATA/.pesto-initialized" ]; then
    find "$PGDATA" -mindepth 1 -delete
    : "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
    pwfile=$(mktemp)
    printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    "$bin/initdb" -D "$PGDATA" -U postgres --pwfile="$pwfile" -E UTF8 \
        --auth-local=peer --auth-host=scram-sha-256
    rm -f "$pwfile"
    echo "host all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
    echo "host all all ::/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
    "$bin/pg_ctl" -D "$PGDATA" -o "-c listen_addresses='' -k /tmp" -w start
    "$bin/psql" -h /tmp -U postgres -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$db\""
    "$bin/pg_ctl" -D "$PGDATA" -m fast -w stop
    touch "$PGDATA/.pesto-initialized"
fi
# Each Pesto node keeps a pool of up to 10 connections plus one that LISTENs.
exec "$bin/postgres" -D "$PGDATA" -k /tmp -c listen_addresses='*' -c max_connections=200
