# The tweet sentiment API over HTTPS on port 5000. README.md, "Docker", shows both ways to run it.
ARG BASE_IMAGE=python:3.12-slim

# The model's scorer and the contract's helpers in C (core/), and gunicorn's HTTP parser in C
# (requirements-compiled.txt), built as wheels in a stage of their own: the compiler and the Python
# headers stay out of the image. python3-dev only where the base's Python lacks headers.
FROM ${BASE_IMAGE} AS core
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && python3 -c "import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))" \
       || apt-get install -y --no-install-recommends python3-dev \
    && rm -rf /var/lib/apt/lists/*
COPY core /core
COPY requirements-compiled.txt /tmp/requirements-compiled.txt
RUN python3 -m venv /tmp/build \
    && /tmp/build/bin/pip wheel --no-cache-dir --wheel-dir /wheels /core \
       -r /tmp/requirements-compiled.txt

FROM ${BASE_IMAGE}

# INSTALL=no and VENV: inside the image `make api-start` uses the packages installed below, never
# reinstalls them, and ignores any .venv a host leaves in a mounted project folder. JOBS_DIR: the
# jobs door's embedded broker and store, where the user can write even on a read-only root.
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VENV=/opt/venv \
    INSTALL=no \
    IN_DOCKER=1 \
    JOBS_DIR=/tmp/jobs \
    PATH=/opt/venv/bin:$PATH

# make and openssl: `make api-start` makes a certificate and a token when none are given.
# tini: PID 1, passes `docker stop` on (see ENTRYPOINT).
# DL3008 (pin apt versions) is ignored: Debian stable's versions change only for security fixes,
# and a pinned version disappears from the mirror when the next fix lands, breaking the build.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends make openssl tini \
    && apt-get clean \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*

# The dependencies, in a layer of their own: a change of code does not reinstall them.
COPY requirements.txt /tmp/requirements.txt
COPY --from=core /wheels /tmp/wheels
RUN python3 -m venv /opt/venv \
    && /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt /tmp/wheels/*.whl \
    && /opt/venv/bin/pip uninstall --yes --quiet pip \
    && rm -r /tmp/requirements.txt /tmp/wheels

# The service runs as this user; /run/api holds the certificate and token made at start.
RUN useradd --system --uid 10001 --user-group --home-dir /app --shell /usr/sbin/nologin api \
    && mkdir -p /run/api \
    && chown api:api /run/api \
    && chmod 700 /run/api

# The working directory stays /: the 2020 command is `sh -c 'cd external_lib && make api-start'`.
COPY . /app

# HTTPS (REST, the websocket, V2's REST routes) and the V2 door's gRPC (GRPC_PORT, docs/v2.md).
EXPOSE 5000 8001

# Over HTTPS on loopback; the certificate may be self-signed, so it is not verified here.
HEALTHCHECK --interval=5s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, ssl, urllib.request as u; u.urlopen('https://127.0.0.1:%s/health' % os.environ.get('PORT', '5000'), context=ssl._create_unverified_context(), timeout=2)"]

# docker stop sends SIGTERM to PID 1 only. tini -g passes it to the whole process group; the
# shell and make between tini and gunicorn ignore it (`trap ''` is inherited through exec), so
# gunicorn alone acts on it, finishes the requests in flight, and they exit after it.
ENTRYPOINT ["tini", "-g", "--", "sh", "-c", "trap '' TERM INT; exec \"$@\"", "sh"]

# Self-contained: as the non-root user, with the certificate, the tokens and the aliases in /run/api
# (made at start unless mounted there, or the tokens passed as API_TOKEN and ADMIN_TOKEN).
CMD ["setpriv", "--reuid=api", "--regid=api", "--init-groups", \
     "make", "-C", "/app", "--no-print-directory", "api-start", \
     "TLS_CERT=/run/api/server.crt", "TLS_KEY=/run/api/server.key", \
     "API_TOKEN_FILE=/run/api/.api_token", "ADMIN_TOKEN_FILE=/run/api/.admin_token", \
     "ALIASES_FILE=/run/api/aliases.json"]
