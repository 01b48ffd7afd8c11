#!/bin/sh
# The broker of docker-compose.yml: one user, "sentiment", whose password comes from the
# environment; on RABBITMQ_PORT under its own node name, apart from any RabbitMQ on the host
# (the containers share the host's network).
set -eu
: "${RABBITMQ_PASSWORD:?set RABBITMQ_PASSWORD}"
port=${RABBITMQ_PORT:-5673}
config=$(mktemp -d)/rabbitmq
umask 077
cat > "$config.conf" <<CONF
listeners.tcp.default = 127.0.0.1:$port
default_user = sentiment
default_pass = $RABBITMQ_PASSWORD
default_permissions.configure = .*
default_permissions.read = .*
default_permissions.write = .*
loopback_users = none
CONF
export RABBITMQ_CONFIG_FILE="$config" RABBITMQ_NODENAME="compose$port@localhost"
export RABBITMQ_DIST_PORT=$((port + 20000)) RABBITMQ_MNESIA_BASE=/var/lib/rabbitmq/compose
exec rabbitmq-server
