"""The jobs door's own settings, added to the ones every door shares (service.SHARED)."""

import re
from pathlib import Path

import service

JOBS_DIR = service.ROOT / ".jobs"
OWN = {
    # Embedded default: a broker and a store on SQLite files in JOBS_DIR.
    "JOBS_DIR": str(JOBS_DIR),
    "BROKER_URL": "",  # empty: sqla+sqlite:///JOBS_DIR/broker.sqlite3
    "JOB_STORE_URL": "",  # empty: DATABASE_URL's database, or sqlite:///JOBS_DIR/jobs.sqlite3
    "MAX_JOB_TWEETS": 1_000_000,
    "MAX_JOB_BODY_BYTES": 256 * 1024 * 1024,
    "JOB_TTL_HOURS": 24,  # a job and its answers are removed this long after submission
    "JOB_CHUNK_TWEETS": 10_000,  # the unit of work, at most this many tweets
    "JOB_CHUNK_CHARS": 2 * 1024 * 1024,  # and at most this many characters of text
    "JOB_MAX_ACTIVE": 4,  # unfinished jobs one token may have at once (429 beyond)
    "JOB_MAX_PER_TOKEN": 1_000,  # jobs one token may have in the store, whatever their state (429)
    # Text the store may hold, tweets and answers (507), and the most one token's jobs may hold
    # of it: no token takes the whole store from the others.
    "JOB_STORE_MAX_CHARS": 512 * 1024 * 1024,
    "JOB_STORE_MAX_CHARS_PER_TOKEN": 256 * 1024 * 1024,
    "JOB_UPLOAD_STALE_SECONDS": 600,  # an upload silent this long is taken for dead and removed
    "JOB_LEASE_SECONDS": 300,  # a chunk sent or taken this long ago and not done is sent again
    "JOB_MAX_ATTEMPTS": 3,  # a chunk taken this often without finishing fails its job
    "JOB_WORKERS_WITH_API": 1,  # workers `make api-start` starts and supervises; 0 for none
    "WORKER_METRICS_PORT": 9252,  # a worker's Prometheus metrics, on WORKER_METRICS_HOST
    "WORKER_METRICS_HOST": "127.0.0.1",
}


def embedded_urls(settings):
    """Fill in the store's URL (DATABASE_URL's database, for several replicas) and the embedded
    broker's and store's where none is set."""
    folder = Path(settings["JOBS_DIR"])
    if not settings["BROKER_URL"]:
        settings["BROKER_URL"] = f"sqla+sqlite:///{folder / 'broker.sqlite3'}"
    if not settings["JOB_STORE_URL"] and settings["DATABASE_URL"]:
        settings["JOB_STORE_URL"] = re.sub(
            r"^postgres(ql)?(\+\w+)?://", "postgresql+psycopg://", settings["DATABASE_URL"]
        )
    if not settings["JOB_STORE_URL"]:
        settings["JOB_STORE_URL"] = f"sqlite:///{folder / 'jobs.sqlite3'}"


DOOR = service.Door(OWN, frozenset({"JOB_WORKERS_WITH_API"}), embedded_urls)
DEFAULTS = service.defaults(DOOR)  # what a job worker reads


def settings_of(config=None):
    """A job worker's settings: the shared ones and the door's, the environment, then config."""
    return service.load(DOOR, config=config)


def embedded(settings):
    return settings["BROKER_URL"].startswith("sqla+sqlite")
