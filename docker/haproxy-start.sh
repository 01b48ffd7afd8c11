#!/bin/sh
# The balancer of docker-compose.yml: its certificate is the replicas' (the folder TLS_DIR mounts
# at /run/api/tls), key and certificate in one file as HAProxy reads them, made readable by this
# user only.
set -eu
umask 077
pem=$(mktemp -d)/haproxy.pem
cat /run/api/tls/server.crt /run/api/tls/server.key > "$pem"
export HAPROXY_PEM="$pem"
exec haproxy -db -f /etc/haproxy/sentiment.cfg
