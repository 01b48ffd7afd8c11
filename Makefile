# The project's interface: `make api-start` serves, `make test` tests. See README.md.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
# Two environments: the server's holds the runtime packages only (requirements.txt); tests,
# training and tools have their own (requirements-dev.txt). nltk imports scikit-learn, scipy
# and pandas when they are installed, which would cost every server process 150 MB.
VENV ?= .venv
DEV_VENV ?= .venv-dev
BIN := $(VENV)/bin
DEV_BIN := $(DEV_VENV)/bin
# INSTALL=no uses the packages already in $(VENV) as they are (the Docker image sets it).
INSTALL ?= yes
DATA ?= ../shared/data/tweet_sentiment_10K.csv
BASE_IMAGE ?= python:3.12-slim
IMAGE ?= model_api

export HOST ?= 0.0.0.0
export PORT ?= 5000
export TLS_CERT ?= server.crt
export TLS_KEY ?= server.key
export API_TOKEN_FILE ?= .api_token
export ADMIN_TOKEN_FILE ?= .admin_token
export NLTK_DATA ?= $(abspath ../shared/nltk_data)

# The V2 door's test clients (tritonclient, the KServe SDK): requirements-clients.txt says why apart.
CLIENTS_VENV ?= .venv-clients

ifeq ($(INSTALL),no)
RUNTIME :=
DEV :=
CLIENTS :=
else
RUNTIME := $(VENV)/.installed
DEV := $(DEV_VENV)/.installed
CLIENTS := $(CLIENTS_VENV)/.installed
endif

.PHONY: help api-start worker-start rpc-start stream-start score spark-score bench-files bench-jobs bench-models bench-shadow bench-v2 bench-speed profile certs token candidate promote rollback test lint format train bench docker-build docker-run \
	docker-test compose-test clean v2-stubs

help:
	@echo "make api-start   serve HTTPS on $(HOST):$(PORT) (installs, makes a certificate and token)"
	@echo "make worker-start run a batch-jobs worker (BROKER_URL, JOB_STORE_URL; embedded by default)"
	@echo "make rpc-start   serve the model over ZeroRPC on RPC_BIND (default tcp://127.0.0.1:4242)"
	@echo "make stream-start label tweets from Kafka (KAFKA_BOOTSTRAP_SERVERS, KAFKA_INPUT_TOPIC, ...)"
	@echo "make candidate MODEL=name | promote | rollback  move the aliases of the server here"
	@echo "make score IN=tweets.csv OUT=labels.csv         label a file on every core"
	@echo "make spark-score IN=tweets.csv OUT=labels.parquet  the same on Spark"
	@echo "make test        install the dev tools and run every test"
	@echo "make v2-stubs    generate v2/*_pb2*.py from v2/grpc_predict_v2.proto"
	@echo "make lint        ruff check and format check"
	@echo "make train       retrain every shipped model; MODEL=<name>: one (CHOICE=recorded: no CV)"
	@echo "make train DATA=my.csv MODEL=my-model  a model of our kind on your CSV (id,text,label)"
	@echo "make bench       measure the model and the running service"
	@echo "make bench-v2    the V2 door (REST, gRPC) beside our REST and MLServer"
	@echo "make profile     where a worker's time goes under load (PROFILE=\"--server floor\")"
	@echo "make certs       make a self-signed server.crt/server.key if absent"
	@echo "make docker-build | docker-run | docker-test | compose-test"

CHECK_PYTHON := $(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
	|| { echo "Python 3.11 or newer is needed: set PYTHON=python3.11"; exit 1; }
PIP_INSTALL := pip install --quiet --disable-pip-version-check

# The model's scorer in C (core/): built where a C compiler and Python's headers are at hand;
# elsewhere model.py scores in pure Python, the reference, with the same answers.
CORE := $(wildcard core/*.c core/*.h) core/setup.py core/pyproject.toml
INSTALL_CORE = $(1)/bin/$(PIP_INSTALL) ./core 2>/dev/null \
	|| echo "the compiled core did not build here (no C compiler?): model.py scores in pure Python"

$(VENV)/.installed: requirements.txt requirements-compiled.txt $(CORE)
	@$(CHECK_PYTHON)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/$(PIP_INSTALL) -r requirements.txt
	$(call INSTALL_CORE,$(VENV))
	$(BIN)/$(PIP_INSTALL) -r requirements-compiled.txt 2>/dev/null \
		|| echo "gunicorn's C HTTP parser did not build here (no C compiler?): it parses in Python"
	touch $@

$(DEV_VENV)/.installed: requirements.txt requirements-dev.txt $(CORE)
	@$(CHECK_PYTHON)
	$(PYTHON) -m venv $(DEV_VENV)
	$(DEV_BIN)/$(PIP_INSTALL) -r requirements-dev.txt
	$(call INSTALL_CORE,$(DEV_VENV))
	touch $@

$(CLIENTS_VENV)/.installed: requirements-clients.txt
	@$(CHECK_PYTHON)
	$(PYTHON) -m venv $(CLIENTS_VENV)
	$(CLIENTS_VENV)/bin/$(PIP_INSTALL) -r requirements-clients.txt
	touch $@

# The V2 door's gRPC stubs, generated from its .proto and committed: the server's environment
# needs no code generator (docs/v2.md); tests/test_v2.py checks they are what this makes.
v2-stubs: $(DEV)
	$(DEV_BIN)/python -m grpc_tools.protoc -I. --python_out=. --grpc_python_out=. \
		v2/grpc_predict_v2.proto

# A self-signed certificate for localhost and 127.0.0.1, key readable by its owner only. An
# ECDSA P-256 key makes TLS handshakes several times cheaper than RSA 2048.
certs:
	@if [ ! -f "$(TLS_CERT)" ] || [ ! -f "$(TLS_KEY)" ]; then \
		echo "making a self-signed certificate: $(TLS_CERT), $(TLS_KEY)"; \
		(umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
			-nodes -days 365 -subj "/CN=localhost" \
			-addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
			-keyout "$(TLS_KEY)" -out "$(TLS_CERT)" 2>/dev/null) && chmod 644 "$(TLS_CERT)"; \
	fi

# A random token, once, in a file readable by its owner only; unless API_TOKEN is set. The same
# for the admin token, which moves aliases (docs/models.md) and never asks for predictions.
token:
	@if [ -z "$$API_TOKEN" ] && [ ! -s "$(API_TOKEN_FILE)" ]; then \
		(umask 077 && openssl rand -hex 32 > "$(API_TOKEN_FILE)"); \
		echo "made a new API token in $(API_TOKEN_FILE)"; \
	fi
	@if [ -z "$$ADMIN_TOKEN" ] && [ ! -s "$(ADMIN_TOKEN_FILE)" ]; then \
		(umask 077 && openssl rand -hex 32 > "$(ADMIN_TOKEN_FILE)"); \
		echo "made a new admin token in $(ADMIN_TOKEN_FILE)"; \
	fi

# Move the aliases of the server on this machine (docs/models.md), with the admin token: sent on
# standard input, so that no process list shows it. A refusal (409: the guard) fails the target.
#   make candidate MODEL=tweet-sentiment [SHADOW=100] [CANARY=0]
#   make promote [FORCE=1]      make rollback
ADMIN_CURL = token=$${ADMIN_TOKEN%%,*}; [ -n "$$token" ] || token=$$(head -n1 "$(ADMIN_TOKEN_FILE)"); \
	printf 'Authorization: Bearer %s\n' "$$token" | curl -sS --fail-with-body -w '\n' \
	--cacert "$(TLS_CERT)" -H @- -H 'Content-Type: application/json'
ALIASES_URL = https://localhost:$(PORT)/api/v1/aliases
candidate:
	@[ -n "$(MODEL)" ] || { echo "usage: make candidate MODEL=name [VERSION=] [SHADOW=100] [CANARY=0]"; exit 2; }
	@$(ADMIN_CURL) -X PUT $(ALIASES_URL)/candidate -d '{"model": "$(MODEL)"$(if $(VERSION),$(COMMA) "version": "$(VERSION)")$(if $(SHADOW),$(COMMA) "shadow_percent": $(SHADOW))$(if $(CANARY),$(COMMA) "canary_percent": $(CANARY))}'
promote:
	@$(ADMIN_CURL) -X POST $(ALIASES_URL)/promote $(if $(FORCE),-d '{"force": true}')
rollback:
	@$(ADMIN_CURL) -X POST $(ALIASES_URL)/rollback
COMMA := ,

api-start: $(RUNTIME) certs token
	@if [ -n "$$API_TOKEN" ]; then token='$$API_TOKEN'; else token='$$(head -n1 $(API_TOKEN_FILE))'; fi; \
	echo "Try it:"; \
	echo "  curl --cacert $(TLS_CERT) -H 'Content-Type: application/json' -d @payload.json \\"; \
	echo "    https://localhost:$(PORT)/api/v1/$$token/predict"; \
	echo "The web page: https://localhost:$(PORT)/ (self-signed: trust $(TLS_CERT) or pass the browser's warning;"; \
	if [ -n "$$API_TOKEN" ]; then echo "  the token is the API_TOKEN you set)"; \
	else echo "  the token is the first line of $(API_TOKEN_FILE))"; fi; \
	echo "Stop it with Ctrl-C, or kill -TERM \$$(cat run/api-$(PORT).pid); HUP reloads the tokens and models."; \
	if [ -n "$$IN_DOCKER" ] && [ -z "$$API_TOKEN" ]; then \
		echo "From the host (the token is never printed; it stays in the container):"; \
		echo "  docker cp <container>:$(abspath $(TLS_CERT)) server.crt"; \
		echo "  token=\$$(docker exec <container> cat $(abspath $(API_TOKEN_FILE)))"; \
	fi
	exec $(BIN)/gunicorn --config gunicorn.conf.py wsgi:app

# The ZeroRPC door (rpc.py): RPC_BIND=tcp://127.0.0.1:4242 by default, loopback only.
rpc-start: $(RUNTIME)
	exec $(BIN)/python rpc.py

# The jobs door's worker (jobs/, python -m jobs): BROKER_URL and JOB_STORE_URL, or the embedded
# default in JOBS_DIR. make api-start already supervises JOB_WORKERS_WITH_API of them (1).
worker-start: $(RUNTIME)
	exec $(BIN)/python -m jobs

# The Kafka door (stream.py): KAFKA_BOOTSTRAP_SERVERS=localhost:9092 by default.
stream-start: $(RUNTIME)
	exec $(BIN)/python stream.py

# Files: score a CSV or JSON Lines file on every core; or on Spark (local[*] unless SPARK_MASTER).
# MODEL= names a model of models.json; empty: its default.
SPARK_MASTER ?= local[*]
MODEL_FLAG = $(if $(MODEL),--model "$(MODEL)")
score: $(RUNTIME)
	@[ -n "$(IN)" ] && [ -n "$(OUT)" ] || { echo "usage: make score IN=tweets.csv OUT=labels.csv"; exit 2; }
	$(BIN)/python -m score "$(IN)" "$(OUT)" $(MODEL_FLAG)

spark-score: $(DEV)
	@[ -n "$(IN)" ] && [ -n "$(OUT)" ] || { echo "usage: make spark-score IN=in.csv OUT=out.parquet"; exit 2; }
	PYSPARK_PYTHON=$(abspath $(DEV_BIN)/python) $(DEV_BIN)/spark-submit --master "$(SPARK_MASTER)" \
		spark_score.py "$(IN)" "$(OUT)" $(MODEL_FLAG)

# Docker: the image, the self-contained container, and the check of both ways to run it.
# Here containers have no bridge network: make docker-run DOCKER_RUN_ARGS=--network=host
DOCKER_RUN_ARGS ?= -p $(PORT):5000

docker-build:
	docker build --network=host --build-arg BASE_IMAGE=$(BASE_IMAGE) -t $(IMAGE) .

docker-run: docker-build
	docker run --rm -it $(DOCKER_RUN_ARGS) $(IMAGE)

docker-test: $(DEV)
	@if ! docker info >/dev/null 2>&1; then \
		echo "docker-test: no Docker engine answers here (docker info failed): NOTHING WAS TESTED"; \
		exit 0; \
	fi; \
	$(MAKE) --no-print-directory docker-build && $(DEV_BIN)/python tests/docker_check.py $(IMAGE)

# docker-compose.yml for real: two API replicas behind HAProxy, a worker, RabbitMQ, PostgreSQL; the
# aliases moved through HAProxy; a 100,000-tweet job across the replicas; down.
compose-test: $(DEV)
	@if ! docker info >/dev/null 2>&1 || ! command -v docker-compose >/dev/null; then \
		echo "compose-test: no Docker engine or docker-compose here: NOTHING WAS TESTED"; \
		exit 0; \
	fi; \
	$(DEV_BIN)/python tests/compose_check.py $(BASE_IMAGE)

# Two runs: every test from .venv-dev, then the V2 door's with the protocol's own clients from
# .venv-clients (tests/conftest.py leaves that file out of the first); both always run.
test: $(DEV) $(CLIENTS)
	@$(DEV_BIN)/python -m pytest; first=$$?; \
	$(CLIENTS_VENV)/bin/python -m pytest tests/test_v2_clients.py; second=$$?; \
	exit $$(( first || second ))

lint: $(DEV)
	$(DEV_BIN)/ruff check .
	$(DEV_BIN)/ruff format --check .
	$(DEV_BIN)/hadolint Dockerfile docker/*.Dockerfile

format: $(DEV)
	$(DEV_BIN)/ruff check --fix .
	$(DEV_BIN)/ruff format .

# Every shipped model (tweet-sentiment-people last: its card compares it with the others), or
# MODEL=<name>: a shipped one, or any other name, a model of our kind trained on DATA (a CSV of
# id, text and label) into artifacts/<name>/ (or OUT=folder).
SHIPPED_MODELS := tweet-sentiment tweet-sentiment-large tweet-sentiment-people
train: $(DEV)
	@for name in $(or $(MODEL),$(SHIPPED_MODELS)); do \
		(set -x; $(DEV_BIN)/python train.py --data "$(DATA)" --model "$$name" \
			$(if $(CHOICE),--choice $(CHOICE)) $(if $(OUT),--out "$(OUT)")) || exit 1; \
	done

# The benchmark's peers (FastAPI, BentoML) in an environment of their own.
BENCH_VENV ?= .venv-bench
$(BENCH_VENV)/.installed: requirements.txt requirements-bench.txt $(CORE)
	@$(CHECK_PYTHON)
	$(PYTHON) -m venv $(BENCH_VENV)
	$(BENCH_VENV)/bin/$(PIP_INSTALL) -r requirements-bench.txt
	$(call INSTALL_CORE,$(BENCH_VENV))
	touch $@

# The V2 door's peer, MLServer, in one more of its own (requirements-mlserver.txt says why).
MLSERVER_VENV ?= .venv-mlserver
$(MLSERVER_VENV)/.installed: requirements-mlserver.txt $(CORE)
	@$(CHECK_PYTHON)
	$(PYTHON) -m venv $(MLSERVER_VENV)
	$(MLSERVER_VENV)/bin/$(PIP_INSTALL) -r requirements-mlserver.txt
	$(call INSTALL_CORE,$(MLSERVER_VENV))
	touch $@

# h2load (Debian's nghttp2-client) loads the gRPC doors as wrk loads the HTTPS ones.
NEED_H2LOAD = command -v h2load >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq \
	&& DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client >/dev/null; } \
	|| { echo "the V2 benchmark needs h2load: apt-get install -y nghttp2-client"; exit 1; }

bench: $(DEV) $(VENV)/.installed $(BENCH_VENV)/.installed $(MLSERVER_VENV)/.installed
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && apt-get update -qq \
		&& DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null; } \
		|| { echo "make bench needs wrk: apt-get install -y wrk"; exit 1; }
	@$(NEED_H2LOAD)
	$(DEV_BIN)/python bench/bench.py
	$(DEV_BIN)/python bench/shadow.py
	$(DEV_BIN)/python bench/jobs.py
	$(DEV_BIN)/python bench/models_speed.py
	$(DEV_BIN)/python bench/v2.py

# The V2 door (REST and gRPC) beside our REST and MLServer; BENCH_V2="--rounds 8" for its options.
bench-v2: $(DEV) $(VENV)/.installed $(BENCH_VENV)/.installed $(MLSERVER_VENV)/.installed
	@command -v wrk >/dev/null || { echo "make bench-v2 needs wrk: apt-get install -y wrk"; exit 1; }
	@$(NEED_H2LOAD)
	$(DEV_BIN)/python bench/v2.py $(BENCH_V2)

# Where a gunicorn worker's time goes under load, by layer (py-spy from .venv-bench): see
# bench/profile_workers.py for its options, e.g. PROFILE="--server floor --body big".
profile: $(DEV) $(VENV)/.installed $(BENCH_VENV)/.installed
	@command -v wrk >/dev/null || { echo "make profile needs wrk: apt-get install -y wrk"; exit 1; }
	$(DEV_BIN)/python bench/profile_workers.py $(PROFILE)

# Batch jobs: a 1,000,000-tweet job with 1 and 2 workers; predict's latency while one runs.
bench-jobs: $(DEV) $(VENV)/.installed
	$(DEV_BIN)/python bench/jobs.py

# The shadow's cost: payload.json with no candidate and with one at 100% shadow.
bench-shadow: $(DEV) $(VENV)/.installed
	@command -v wrk >/dev/null || { echo "make bench-shadow needs wrk: apt-get install -y wrk"; exit 1; }
	$(DEV_BIN)/python bench/shadow.py

# Each model's in-process tweets/s, cold and warm (one core, no server; part of make bench).
bench-speed: $(DEV)
	$(DEV_BIN)/python bench/models_speed.py

# Memory per worker with one, two, ... of models.json's models.
bench-models: $(DEV) $(VENV)/.installed
	$(DEV_BIN)/python bench/models_memory.py

# The command line and Spark on 1,000,000 rows, by cores (minutes).
bench-files: $(DEV) $(VENV)/.installed
	$(DEV_BIN)/python bench/files.py

clean:
	rm -rf $(VENV) $(DEV_VENV) $(BENCH_VENV) $(CLIENTS_VENV) $(MLSERVER_VENV) .pytest_cache .ruff_cache .hypothesis bench/results.json \
		core/build core/*.egg-info
	find . -name __pycache__ -prune -exec rm -rf {} +
