#!/bin/sh
# The job store of docker-compose.yml: a cluster whose one role, "sentiment", has the password
# from the environment (SCRAM), a database "sentiment", on 127.0.0.1:POSTGRES_PORT.
set -eu
: "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
bin=$(ls -d /usr/lib/postgresql/*/bin | tail -n 1)
data=/var/lib/postgresql/compose
if [ ! -s "$data/PG_VERSION" ]; then
    password=$(mktemp)
    printf '%s' "$POSTGRES_PASSWORD" > "$password"
    "$bin/initdb" --pgdata="$data" --username=sentiment --pwfile="$password" \
        --auth=scram-sha-256 >/dev/null
    rm -f "$password"
    echo "CREATE DATABASE sentiment" | "$bin/postgres" --single -D "$data" postgres >/dev/null
fi
exec "$bin/postgres" -D "$data" -p "${POSTGRES_PORT:-5433}" -c listen_addresses=127.0.0.1 \
    -c unix_socket_directories=/tmp
