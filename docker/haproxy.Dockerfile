# HAProxy in front of docker-compose.yml's API replicas, from the Debian base the project builds
# on (no registry here).
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends haproxy \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*

COPY docker/haproxy.cfg /etc/haproxy/sentiment.cfg
COPY docker/haproxy-start.sh /usr/local/bin/haproxy-start
# The package made this user with an id of its choosing: its name is the way to name it.
# hadolint ignore=DL3066
USER haproxy
CMD ["sh", "/usr/local/bin/haproxy-start"]
