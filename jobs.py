"""The batch-jobs door: submit up to a million tweets, get a job id at once, fetch the labels later.

    make api-start                          # serves /api/v1/jobs and supervises a local worker
    make worker-start                       # one more worker, here or on another machine

The API streams a job's tweets into the job store in chunks, checking each with the shared
contract, then sends one Celery task per chunk to the broker. Workers label a chunk with the same
contract and model, store its answers (a chunk done twice is stored once), and the job is done when
every chunk is. The jobs table is ours: Celery reports an unknown task as PENDING, and answers
must outlive the broker.

Production: RabbitMQ as the broker (BROKER_URL=amqp://...) and PostgreSQL as the store
(JOB_STORE_URL=postgresql+psycopg://...), so every API replica and worker sees the same jobs. The
embedded default needs no server: both on SQLite files in JOBS_DIR, one machine only.

A chunk is leased when it is sent and when a worker takes it. RabbitMQ gives a dead worker's
chunk to another worker at once; the embedded broker cannot, so a worker starting on it sends
again every chunk not done, and every worker sends again the chunks of running jobs whose lease
ran out.
"""

import contextlib
import csv
import functools
import io
import json
import logging
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import celery
import ijson
import prometheus_client
import sqlalchemy as sa
from celery import signals
from flask import Blueprint, Response, jsonify, request
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from werkzeug.exceptions import (
    Conflict,
    HTTPException,
    NotFound,
    ServiceUnavailable,
    TooManyRequests,
    UnsupportedMediaType,
)

import contract
import model
import registry
import service

JOBS_DIR = service.ROOT / ".jobs"
DEFAULTS = {
    **service.SHARED,
    # Embedded default: a broker and a store on SQLite files in JOBS_DIR.
    "JOBS_DIR": str(JOBS_DIR),
    "BROKER_URL": "",  # empty: sqla+sqlite:///JOBS_DIR/broker.sqlite3
    "JOB_STORE_URL": "",  # empty: sqlite:///JOBS_DIR/jobs.sqlite3
    "MAX_JOB_TWEETS": 1_000_000,
    "MAX_JOB_BODY_BYTES": 256 * 1024 * 1024,
    "JOB_TTL_HOURS": 24,  # a job and its answers are removed this long after submission
    "JOB_CHUNK_TWEETS": 10_000,  # the unit of work, at most this many tweets
    "JOB_CHUNK_CHARS": 2 * 1024 * 1024,  # and at most this many characters of text
    "JOB_MAX_ACTIVE": 4,  # unfinished jobs one token may have at once (429 beyond)
    "JOB_STORE_MAX_CHARS": 512 * 1024 * 1024,  # text the store may hold, tweets and answers (507)
    "JOB_UPLOAD_STALE_SECONDS": 600,  # an upload silent this long is taken for dead and removed
    "JOB_LEASE_SECONDS": 300,  # a chunk sent or taken this long ago and not done is sent again
    "JOB_MAX_ATTEMPTS": 3,  # a chunk taken this often without finishing fails its job
    "JOB_WORKERS_WITH_API": 1,  # workers `make api-start` starts and supervises; 0 for none
    "WORKER_METRICS_PORT": 9252,  # a worker's Prometheus metrics, on WORKER_METRICS_HOST
    "WORKER_METRICS_HOST": "127.0.0.1",
}
ZERO_ALLOWED = {"JOB_WORKERS_WITH_API"}
QUEUE = "tweet-sentiment-jobs"
STATES = ("queued", "running", "done", "failed", "cancelled")
UNFINISHED = ("queued", "running")
ACTIVE = ("receiving", *UNFINISHED)  # what counts against a token's JOB_MAX_ACTIVE
SWEEP_SECONDS = 10  # how often a worker looks for chunks to send again and jobs to remove
MAX_DEPTH = 64  # a job's JSON nested deeper is refused; a tweet is a string, at depth 1
log = logging.getLogger("jobs")

CHUNKS_LABELLED = Counter("jobs_chunks", "Chunks taken by this worker, by outcome", ["outcome"])
TWEETS_LABELLED = Counter("jobs_tweets", "Tweets labelled by this worker")
CHUNK_SECONDS = Histogram(
    "jobs_chunk_seconds",
    "Seconds to label and store one chunk",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SENT_AGAIN = Counter("jobs_chunks_sent_again", "Chunks sent again after their lease ran out")
WORKER_MODEL = Gauge(
    "jobs_model_info", "Each model version this worker labels with", ["model", "version"]
)


def settings_of(config=None, defaults=DEFAULTS):
    """The settings: defaults, the environment, then config; the embedded URLs filled in."""
    settings = service.Settings.load(defaults, config, zero_allowed=ZERO_ALLOWED)
    folder = Path(settings["JOBS_DIR"])
    if not settings["BROKER_URL"]:
        settings["BROKER_URL"] = f"sqla+sqlite:///{folder / 'broker.sqlite3'}"
    if not settings["JOB_STORE_URL"] and settings["DATABASE_URL"]:  # several replicas: theirs
        settings["JOB_STORE_URL"] = re.sub(
            r"^postgres(ql)?(\+\w+)?://", "postgresql+psycopg://", settings["DATABASE_URL"]
        )
    if not settings["JOB_STORE_URL"]:
        settings["JOB_STORE_URL"] = f"sqlite:///{folder / 'jobs.sqlite3'}"
    return settings


def embedded(settings):
    return settings["BROKER_URL"].startswith("sqla+sqlite")


# The store: our own jobs table, and a job's tweets and answers by chunk.

METADATA = sa.MetaData()
JOBS = sa.Table(
    "sentiment_jobs",
    METADATA,
    sa.Column("id", sa.String(32), primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),  # STATES, or "receiving" while uploading
    sa.Column("tweets", sa.Integer, nullable=False),
    sa.Column("chunks", sa.Integer, nullable=False),
    sa.Column("options", sa.String(64), nullable=False),  # {"scores": ..., "explain": ...}
    sa.Column("reason", sa.Text),
    sa.Column("created_at", sa.Float, nullable=False),  # seconds since the epoch
    sa.Column("started_at", sa.Float),
    sa.Column("finished_at", sa.Float),
    sa.Column("expires_at", sa.Float, nullable=False),
    # Whose job: the start of its token's SHA-256 (never the token); another token gets 404.
    sa.Column("owner", sa.String(64)),
    # The model and version that label it, pinned when it was submitted.
    sa.Column("model", sa.String(128)),
    sa.Column("model_version", sa.String(64)),
)
CHUNKS = sa.Table(
    "sentiment_job_chunks",
    METADATA,
    sa.Column("job_id", sa.String(32), primary_key=True),
    sa.Column("number", sa.Integer, primary_key=True),
    sa.Column("size", sa.Integer, nullable=False),
    sa.Column("tweets", sa.Text, nullable=False),  # JSON [[id, text], ...], as UTF-8
    sa.Column("answers", sa.Text),  # JSON [[id, label, score, explanation?], ...] once done
    sa.Column("done", sa.Boolean, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("lease_until", sa.Float, nullable=False),
)


class Store:
    """The job store, on SQLAlchemy: PostgreSQL, or SQLite for the embedded default.

    Its engine is made in the process that first uses it: gunicorn loads the app before forking,
    and a database connection must not be shared across a fork.
    """

    def __init__(self, url):
        self.url, self._engine, self._pid = url, None, None

    @property
    def engine(self):
        if self._pid != os.getpid():
            self._engine = sa.create_engine(self.url, pool_pre_ping=True)
            if self._engine.dialect.name == "sqlite":
                sa.event.listen(self._engine, "connect", _sqlite_pragmas)
            self._pid = os.getpid()
        return self._engine

    def create(self):
        """Make the tables if absent, and add what an older store lacks; a second process making
        them at once is no error."""
        if self.url.startswith("sqlite:///"):
            private_folder(Path(self.url.removeprefix("sqlite:///")).parent)
        try:
            METADATA.create_all(self.engine)
        except sa.exc.DBAPIError:
            time.sleep(0.5)
            METADATA.create_all(self.engine)
        columns = {c["name"] for c in sa.inspect(self.engine).get_columns(JOBS.name)}
        # A store made before jobs had owners, or pinned models: add the column (NULL: none).
        for column in ("owner", "model", "model_version"):
            if column not in columns:
                kind = JOBS.c[column].type.compile(self.engine.dialect)
                with contextlib.suppress(sa.exc.DBAPIError), self.begin() as db:
                    db.execute(sa.text(f"ALTER TABLE {JOBS.name} ADD COLUMN {column} {kind}"))

    def size(self):
        """The characters of text the store holds: tweets and answers."""
        with self.begin() as db:
            return db.execute(
                sa.select(
                    sa.func.coalesce(
                        sa.func.sum(
                            sa.func.length(CHUNKS.c.tweets)
                            + sa.func.coalesce(sa.func.length(CHUNKS.c.answers), 0)
                        ),
                        0,
                    )
                )
            ).scalar_one()

    def active(self, owner):
        """How many jobs of this owner are being received, queued or running."""
        with self.begin() as db:
            return db.execute(
                sa.select(sa.func.count()).where(JOBS.c.owner == owner, JOBS.c.status.in_(ACTIVE))
            ).scalar_one()

    def begin(self):
        return self.engine.begin()

    def job(self, job_id, owner=None, now=None):
        """Return the job's row as a dict, or None if unknown, expired, still being received or
        another owner's."""
        with self.begin() as db:
            row = db.execute(sa.select(JOBS).where(JOBS.c.id == job_id)).mappings().first()
            if row is None or row["status"] not in STATES:
                return None
            if owner is not None and row["owner"] not in (None, owner):
                return None
            if row["expires_at"] <= (now or time.time()):
                remove(db, [job_id])
                return None
            done = db.execute(
                sa.select(sa.func.coalesce(sa.func.sum(CHUNKS.c.size), 0)).where(
                    CHUNKS.c.job_id == job_id, CHUNKS.c.done
                )
            ).scalar_one()
        return {**row, "done_tweets": int(done)}

    def answers(self, job_id):
        """Yield the answers of a done job, chunk by chunk, in the order they were submitted;
        service.CutShort if the job is deleted or expires meanwhile, so that the download ends as
        a broken transfer, never as a complete-looking one."""
        with self.begin() as db:
            numbers = db.execute(
                sa.select(CHUNKS.c.number).where(CHUNKS.c.job_id == job_id).order_by("number")
            ).scalars()
            numbers = list(numbers)
        for number in numbers:
            with self.begin() as db:
                text = db.execute(
                    sa.select(CHUNKS.c.answers).where(
                        CHUNKS.c.job_id == job_id, CHUNKS.c.number == number
                    )
                ).scalar_one_or_none()
            if text is None:  # deleted meanwhile
                raise service.CutShort(f"job {job_id} was removed while its result was sent")
            yield json.loads(text)

    def cancel(self, job_id):
        """Cancel a job and delete its tweets and answers; its record says "cancelled" until it
        expires. Return False if there is no such job."""
        with self.begin() as db:
            db.execute(sa.delete(CHUNKS).where(CHUNKS.c.job_id == job_id))
            updated = db.execute(
                sa.update(JOBS)
                .where(JOBS.c.id == job_id, JOBS.c.status.in_(STATES))
                .values(status="cancelled", finished_at=time.time())
            )
            return updated.rowcount > 0

    def counts(self):
        """Jobs by state, and the chunks and tweets not yet labelled of unfinished jobs."""
        with self.begin() as db:
            states = dict(
                db.execute(
                    sa.select(JOBS.c.status, sa.func.count())
                    .where(JOBS.c.status.in_(STATES))
                    .group_by(JOBS.c.status)
                ).all()
            )
            chunks, tweets = db.execute(
                sa.select(sa.func.count(), sa.func.coalesce(sa.func.sum(CHUNKS.c.size), 0))
                .select_from(CHUNKS.join(JOBS, JOBS.c.id == CHUNKS.c.job_id))
                .where(JOBS.c.status.in_(UNFINISHED), ~CHUNKS.c.done)
            ).one()
        return {s: states.get(s, 0) for s in STATES}, chunks, int(tweets)


def private_folder(folder):
    """Make a folder only its owner can enter: the embedded store and broker hold tweets."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)


def _sqlite_pragmas(connection, _record):
    """SQLite shared by the API's workers and the job workers: readers do not block the writer,
    and a writer waits its turn instead of failing."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def remove(db, job_ids):
    db.execute(sa.delete(CHUNKS).where(CHUNKS.c.job_id.in_(job_ids)))
    db.execute(sa.delete(JOBS).where(JOBS.c.id.in_(job_ids)))


# Celery: one task per chunk. Late acknowledgement on the solo pool, one message at a time: a
# worker killed mid-chunk never acknowledged it, so RabbitMQ gives it to another worker.

app = celery.Celery("sentiment", set_as_current=False)


def configure(settings):
    """Point the Celery app at the broker in the settings."""
    app.conf.update(
        broker_url=settings["BROKER_URL"],
        broker_connection_retry_on_startup=True,
        task_default_queue=QUEUE,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        worker_redirect_stdouts=False,
        worker_send_task_events=False,
    )
    if embedded(settings):
        private_folder(Path(settings["JOBS_DIR"]))


def send(chunks):
    """Send a task for each (job id, chunk number); raise ServiceUnavailable if the broker fails."""
    try:
        with app.producer_or_acquire() as producer:
            for job_id, number in chunks:
                label_chunk.apply_async(
                    (job_id, number), producer=producer, retry=True, retry_policy={"max_retries": 3}
                )
    except Exception as e:  # kombu raises its own and the transport's errors
        log.error("cannot send to the broker: %s", e)
        raise ServiceUnavailable("the job queue is unavailable; try again later") from None


@app.task(name="sentiment.label_chunk")
def label_chunk(job_id, number):
    Worker.current.label(job_id, number)


class Worker:
    """What a worker process holds: its settings, the store and the models, loaded once."""

    current = None

    def __init__(self, settings):
        self.settings, self.store = settings, Store(settings["JOB_STORE_URL"])
        self.models = registry.load(
            settings["MODELS_FILE"],
            aliases_file=settings["ALIASES_FILE"],
            database_url=settings["DATABASE_URL"],
        )
        self.limits = {**settings, "MAX_TWEETS": settings["JOB_CHUNK_TWEETS"]}
        for name, version in self.models.known:
            WORKER_MODEL.labels(name, version).set(1)

    def label(self, job_id, number):
        """Take a chunk, label it, store its answers; finish or fail its job."""
        start, now = time.perf_counter(), time.time()
        lease = self.settings["JOB_LEASE_SECONDS"]
        with self.store.begin() as db:
            taken = db.execute(
                sa.update(CHUNKS)
                .where(
                    CHUNKS.c.job_id == job_id,
                    CHUNKS.c.number == number,
                    ~CHUNKS.c.done,
                    sa.exists().where(JOBS.c.id == job_id, JOBS.c.status.in_(UNFINISHED)),
                )
                .values(attempts=CHUNKS.c.attempts + 1, lease_until=now + lease)
            )
            if taken.rowcount == 0:  # done already, or its job cancelled, failed or removed
                CHUNKS_LABELLED.labels("skipped").inc()
                return
            tweets, attempts = db.execute(
                sa.select(CHUNKS.c.tweets, CHUNKS.c.attempts).where(
                    CHUNKS.c.job_id == job_id, CHUNKS.c.number == number
                )
            ).one()
            options, name, version = db.execute(
                sa.select(JOBS.c.options, JOBS.c.model, JOBS.c.model_version).where(
                    JOBS.c.id == job_id
                )
            ).one()
            options = json.loads(options)
            db.execute(
                sa.update(JOBS)
                .where(JOBS.c.id == job_id, JOBS.c.status == "queued")
                .values(status="running", started_at=now)
            )
        if attempts > self.settings["JOB_MAX_ATTEMPTS"]:
            self.fail(job_id, f"chunk {number} was taken {attempts - 1} times and never finished")
            return
        try:
            try:  # a job made before models were pinned has none: the default labels it
                served = self.models.get(name, version)
            except contract.PredictionError as e:  # models.json changed since it was submitted
                self.fail(job_id, f"its model is not served by this worker: {e.detail}")
                return
            batch = dict(json.loads(tweets))
            explain = options["explain"]
            answer = contract.predict(
                served.model, batch, self.limits, scores=True, explain=explain
            )
            rows = [
                [i, a["label"], a["score"], *([a["explanation"]] if explain else [])]
                for i, a in answer.items()
            ]
            answers = json.dumps(rows, ensure_ascii=True)
        except Exception as e:  # a chunk that cannot be labelled fails its job, and is not retried
            log.exception("chunk %s of a job failed", number)
            CHUNKS_LABELLED.labels("failed").inc()
            self.fail(job_id, f"chunk {number} could not be labelled: {type(e).__name__}: {e}")
            return
        with self.store.begin() as db:
            db.execute(
                sa.update(CHUNKS)
                .where(CHUNKS.c.job_id == job_id, CHUNKS.c.number == number)
                .values(answers=answers, done=True)
            )
        with self.store.begin() as db:  # after the commit above: the last chunk sees all done
            left = db.execute(
                sa.select(sa.func.count()).where(CHUNKS.c.job_id == job_id, ~CHUNKS.c.done)
            ).scalar_one()
            if left == 0:
                db.execute(
                    sa.update(JOBS)
                    .where(JOBS.c.id == job_id, JOBS.c.status.in_(UNFINISHED))
                    .values(status="done", finished_at=time.time())
                )
        seconds = time.perf_counter() - start
        CHUNKS_LABELLED.labels("done").inc()
        TWEETS_LABELLED.inc(len(rows))
        CHUNK_SECONDS.observe(seconds)
        if log.isEnabledFor(logging.INFO):
            fields = {
                "job_id": job_id,
                "chunk": number,
                "tweets": len(rows),
                "attempt": attempts,
                "seconds": round(seconds, 3),
                "job_done": left == 0,
            }
            sys.stderr.write(service.json_line("info", "chunk labelled", fields))

    def fail(self, job_id, reason):
        with self.store.begin() as db:
            db.execute(
                sa.update(JOBS)
                .where(JOBS.c.id == job_id, JOBS.c.status.in_(UNFINISHED))
                .values(status="failed", reason=reason, finished_at=time.time())
            )

    def sweep(self, at_start=False):
        """Send again the chunks of running jobs whose lease ran out; remove expired jobs.

        RabbitMQ holds a chunk's message until a worker has finished it, so this is only a net
        under it, for a worker that hangs. The embedded broker forgets a message once a worker
        has taken it: at_start, on the embedded broker, every chunk not done of an unfinished job
        is sent again at once (the worker that held it died), and a chunk done twice is stored
        once.
        """
        now = time.time()
        with self.store.begin() as db:
            expired = db.execute(sa.select(JOBS.c.id).where(JOBS.c.expires_at <= now)).scalars()
            expired = list(expired)
            if expired:
                remove(db, expired)
            dead = at_start and embedded(self.settings)
            if dead:
                late = JOBS.c.status.in_(UNFINISHED)
            else:
                late = (JOBS.c.status == "running") & (CHUNKS.c.lease_until <= now)
            chunks = db.execute(
                sa.select(CHUNKS.c.job_id, CHUNKS.c.number)
                .select_from(CHUNKS.join(JOBS, JOBS.c.id == CHUNKS.c.job_id))
                .where(~CHUNKS.c.done, late)
            ).all()
            for job_id, number in chunks:
                db.execute(
                    sa.update(CHUNKS)
                    .where(CHUNKS.c.job_id == job_id, CHUNKS.c.number == number)
                    .values(lease_until=now + self.settings["JOB_LEASE_SECONDS"])
                )
        if chunks:
            log.warning(
                "sending %d chunks again: %s",
                len(chunks),
                "a worker died holding them" if dead else "their lease ran out",
            )
            send(chunks)
            SENT_AGAIN.inc(len(chunks))
        if expired:
            log.info("removed %d expired jobs", len(expired))

    def sweep_forever(self):
        while True:
            time.sleep(SWEEP_SECONDS)
            try:
                self.sweep()
            except Exception:
                log.exception("sweep failed; trying again in %s s", SWEEP_SECONDS)


@signals.setup_logging.connect
def _logging(**_):
    """Celery's own log lines as JSON lines too (it logs task ids and arguments: no tweet text).

    Its loggers carry a NullHandler and pass their records up: a worker is its own process, so
    the root logger takes them. A line per task received and succeeded is left out: the worker
    writes its own per chunk."""
    service.setup_logging(logging.getLogger())
    for name in ("celery.app.trace", "celery.worker.strategy"):
        logging.getLogger(name).setLevel(logging.WARNING)


def quiet_celery():
    """Celery's worker without its two lines that are not ours to print: "worker: Warm shutdown"
    at every TERM (a stop here is silent unless something is wrong), and the SecurityWarning for
    root, which the mounted Docker way is by design (the image's own way runs as user 10001);
    the worker takes JSON only, never pickle, which is what that warning is about."""
    import celery.apps.worker as celery_worker
    from celery.exceptions import SecurityWarning

    celery_worker.install_worker_term_handler = functools.partial(
        celery_worker._shutdown_handler, sig="SIGTERM", how="Warm", verbose=False
    )
    warnings.filterwarnings("ignore", "You're running the worker with superuser", SecurityWarning)


def main(config=None):
    """Run a worker: make worker-start, or the one make api-start supervises."""
    service.setup_logging(log)
    settings = settings_of(config)
    configure(settings)
    Worker.current = worker = Worker(settings)
    worker.store.create()
    port = service.serve_metrics(
        settings["WORKER_METRICS_HOST"], settings["WORKER_METRICS_PORT"], "WORKER_METRICS_PORT"
    )
    worker.sweep(at_start=True)
    threading.Thread(target=worker.sweep_forever, daemon=True, name="sweep").start()
    log.info(
        "worker for queue %s, models %s, metrics on %s:%s",
        QUEUE,
        ", ".join(f"{n} {v}" for n, v in sorted(worker.models.known)),
        settings["WORKER_METRICS_HOST"],
        port,
    )
    quiet_celery()
    # solo: the task runs in this process, so killing it loses no acknowledged work. TERM is a
    # warm shutdown: the chunk in hand is finished first.
    app.worker_main(
        [
            "--quiet",  # no banner in the log
            "worker",
            "--pool=solo",
            f"--queues={QUEUE}",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            f"--loglevel={os.environ.get('LOG_LEVEL', 'INFO')}",
            f"--hostname=sentiment-{os.getpid()}@%h",
        ]
    )


# The HTTP routes, registered by api.create_app on the same token rules as predict.


class InsufficientStorage(HTTPException):
    code, description = 507, "the job store is full; try again later"


def routes(require_token, parse_options, body_stream, settings, resolve):
    """The jobs API as a blueprint, and a registry of its metrics.

    require_token refuses a request without a valid token, and leaves its holder's id (a hash of
    the token) in the environ as "api.client"; parse_options reads the query options as the
    predict route does; body_stream(environ, limit) is the body as a stream that refuses to go
    past limit bytes; resolve(name, version) is the registry.Served a job pins (the default
    for None).
    """
    configure(settings)
    store = Store(settings["JOB_STORE_URL"])
    store.create()
    collector = prometheus_client.CollectorRegistry()
    collector.register(Metrics(store))
    jobs = Blueprint("jobs", __name__)
    jobs.before_request(require_token)

    @jobs.post("/api/v1/jobs")
    def submit():
        """Store a job's tweets (JSON object or CSV) chunk by chunk, then queue them: 202."""
        options = parse_options(("model", "version"))
        served = resolve(request.args.get("model"), request.args.get("version"))
        reader = {"application/json": json_parts, "text/csv": csv_parts}.get(request.mimetype)
        if reader is None:
            raise UnsupportedMediaType(
                "Content-Type must be application/json or text/csv, "
                f"got {request.mimetype or 'none'}"
            )
        owner = request.environ["api.client"]
        if store.active(owner) >= settings["JOB_MAX_ACTIVE"]:
            raise TooManyRequests(
                f"at most {settings['JOB_MAX_ACTIVE']} unfinished jobs per token: wait for one to "
                "finish, or cancel one",
                retry_after=10,
            )
        room = settings["JOB_STORE_MAX_CHARS"] - store.size()
        body = io.BufferedReader(body_stream(request.environ, settings["MAX_JOB_BODY_BYTES"]))
        job_id, now = secrets.token_hex(16), time.time()
        stale = settings["JOB_UPLOAD_STALE_SECONDS"]
        with store.begin() as db:
            db.execute(
                sa.insert(JOBS).values(
                    id=job_id,
                    status="receiving",
                    tweets=0,
                    chunks=0,
                    options=json.dumps(options),
                    created_at=now,
                    expires_at=now + stale,  # moved on with each chunk while it is received
                    owner=owner,
                    model=served.name,
                    model_version=served.version,
                )
            )
        try:
            count, number = 0, 0
            lease = now + settings["JOB_LEASE_SECONDS"]
            parts = reader(body, settings["JOB_CHUNK_TWEETS"], settings["JOB_CHUNK_CHARS"])
            for part in checked(parts, settings):
                text = json.dumps(list(part.items()), ensure_ascii=False)
                room -= len(text)
                if room < 0:
                    raise InsufficientStorage()
                with store.begin() as db:
                    db.execute(
                        sa.insert(CHUNKS).values(
                            job_id=job_id,
                            number=number,
                            size=len(part),
                            tweets=text,
                            done=False,
                            attempts=0,
                            lease_until=lease,
                        )
                    )
                    db.execute(
                        sa.update(JOBS)
                        .where(JOBS.c.id == job_id)
                        .values(expires_at=time.time() + stale)
                    )
                count, number = count + len(part), number + 1
                time.sleep(0)  # under gevent, let the worker's other requests run between chunks
            if count == 0:
                raise contract.BadInput('the job must hold at least one tweet: {"id": "text"}')
            with store.begin() as db:
                db.execute(
                    sa.update(JOBS)
                    .where(JOBS.c.id == job_id)
                    .values(
                        status="queued",
                        tweets=count,
                        chunks=number,
                        expires_at=now + settings["JOB_TTL_HOURS"] * 3600,
                    )
                )
            send([(job_id, n) for n in range(number)])
        except BaseException:
            with store.begin() as db:
                remove(db, [job_id])
            raise
        request.environ["api.tweets"] = count
        response = jsonify(
            job_id=job_id,
            status="queued",
            tweets=count,
            model=served.name,
            model_version=served.version,
        )
        response.status_code = 202
        response.headers["Location"] = f"/api/v1/jobs/{job_id}"
        return response

    def found(job_id):
        job = store.job(job_id, request.environ["api.client"])
        if job is None:
            raise NotFound(f"no job {job_id!r}: it is unknown, or it expired and was removed")
        return job

    @jobs.get("/api/v1/jobs/<job_id>")
    def status(job_id):
        """A job's state, progress and times; for a failure, its reason."""
        job = found(job_id)
        answer = {
            "job_id": job_id,
            "status": job["status"],
            "tweets": job["tweets"],
            "done_tweets": job["done_tweets"],
            "options": json.loads(job["options"]),
            "model": job["model"],
            "model_version": job["model_version"],
        }
        for moment in ("created_at", "started_at", "finished_at", "expires_at"):
            answer[moment] = iso(job[moment])
        if job["status"] == "failed":
            answer["reason"] = job["reason"]
        return answer

    @jobs.get("/api/v1/jobs/<job_id>/result")
    def result(job_id):
        """The labels, streamed: the predict route's JSON shape, or CSV (id,label,score)."""
        job = found(job_id)
        if job["status"] != "done":
            raise Conflict(f"the job is {job['status']}, not done: its result is not ready")
        options = json.loads(job["options"])
        wants_csv = request.accept_mimetypes.best_match(["application/json", "text/csv"])
        if wants_csv == "text/csv":
            return Response(csv_result(store.answers(job_id)), mimetype="text/csv")
        return Response(json_result(store.answers(job_id), options), mimetype="application/json")

    @jobs.delete("/api/v1/jobs/<job_id>")
    def cancel(job_id):
        """Cancel the job and delete its tweets and answers at once."""
        found(job_id)
        store.cancel(job_id)
        return {"job_id": job_id, "status": "cancelled"}

    return jobs, collector


def iso(moment):
    return None if moment is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


def checked(parts, settings):
    """Check each part of a job with the contract as it arrives; ids must be unique in the job."""
    seen, count = set(), 0
    for part in parts:
        contract.check_part(part, settings, seen, count, settings["MAX_JOB_TWEETS"])
        count += len(part)
        yield part


NESTED = {"start_map": contract.Pairs, "start_array": list}  # no tweet: json_type names it
FIRST = {"start_array": "array", "string": "string", "boolean": "boolean", "null": "null"}


def json_parts(stream, size, chars):
    """Yield {id: value} parts of a JSON object read from a stream, of at most `size` tweets and
    about `chars` characters, without holding it whole: a value that is no string is kept as an
    empty one of its type (the contract names it), never built, and is nested at most MAX_DEPTH
    deep."""
    events = ijson.basic_parse(stream, use_float=True, buf_size=65536)
    try:
        try:
            first, _ = next(events, (None, None))
        except ijson.IncompleteJSONError:  # an empty body
            first = None
        if first != "start_map":
            got = "nothing" if first is None else FIRST.get(first, "a number")
            raise contract.BadInput(
                f'the body must be a JSON object of {{"id": "tweet text", ...}}, got {got}'
            )
        part, held, key, depth = {}, 0, None, 0
        for event, value in events:
            if depth:  # within a value that is no string: pass over it
                depth += (event in NESTED) - (event in ("end_map", "end_array"))
                if depth > MAX_DEPTH:
                    raise contract.BadInput(f"the body is nested more than {MAX_DEPTH} deep")
                continue
            if event == "map_key":
                key = value
                continue
            if event == "end_map":
                break
            if key in part:
                raise contract.BadInput(f"each id must appear once; repeated: {json.dumps(key)}")
            if event in NESTED:
                value, depth = NESTED[event](), 1
            part[key] = value
            held += len(value) if isinstance(value, str) else 0
            if len(part) == size or held >= chars:
                yield part
                part, held = {}, 0
        for _ in events:  # whatever follows the object: nothing, or an error
            pass
    except ijson.IncompleteJSONError as e:
        raise contract.BadInput(f"the body is not valid JSON: {e}") from None
    except (ijson.JSONError, UnicodeDecodeError) as e:
        raise contract.BadInput(f"the body is not valid JSON: {e}") from None
    if part:
        yield part


def csv_parts(stream, size, chars):
    """Yield {id: text} parts of a CSV with a header row naming id and text columns, of at most
    `size` tweets and about `chars` characters. Every row has as many fields as the header."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    rows = csv.reader(text)
    try:
        header = next(rows, None)
        if header is None or "id" not in header or "text" not in header:
            raise contract.BadInput(
                f"the CSV's first row must name an id and a text column, got {header or 'nothing'}"
            )
        id_at, text_at = header.index("id"), header.index("text")
        part, lines, held = {}, {}, 0
        for row in rows:
            line = rows.line_num
            if len(row) != len(header):
                raise contract.BadInput(
                    f"line {line} has {len(row)} fields, the header {len(header)}"
                )
            tweet_id = row[id_at]
            if not tweet_id:
                raise contract.BadInput(f"line {line} has an empty id")
            if tweet_id in part:
                raise contract.BadInput(
                    f"each id must appear once; {json.dumps(tweet_id)} is on lines "
                    f"{lines[tweet_id]} and {line}"
                )
            part[tweet_id], lines[tweet_id] = row[text_at], line
            held += len(row[text_at])
            if len(part) == size or held >= chars:
                yield part
                part, lines, held = {}, {}, 0
        if part:
            yield part
    except UnicodeDecodeError as e:
        raise contract.BadInput(f"the body is not valid UTF-8: {e.reason}") from None
    except csv.Error as e:
        raise contract.BadInput(f"the CSV is malformed at line {rows.line_num}: {e}") from None


def json_result(chunks, options):
    """The answers as the predict route gives them, one chunk at a time."""
    yield "{"
    first = True
    for rows in chunks:
        out = io.StringIO()
        for tweet_id, label, score, *explanation in rows:
            if options["scores"] or options["explain"]:
                answer = {"label": label}
                if options["scores"]:
                    answer["score"] = score
                if explanation:
                    answer["explanation"] = explanation[0]
            else:
                answer = label
            out.write(("" if first else ",") + json.dumps(tweet_id, ensure_ascii=False) + ":")
            out.write(json.dumps(answer, ensure_ascii=False, separators=(",", ":")))
            first = False
        yield out.getvalue()
    yield "}"


def csv_result(chunks):
    """The answers as CSV, id,label,score; ids that a spreadsheet would run are neutralised."""
    yield "id,label,score\r\n"
    for rows in chunks:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerows((contract.csv_cell(i), label, score) for i, label, score, *_ in rows)
        yield out.getvalue()


class Metrics:
    """Prometheus collector: jobs by state and the backlog, read from the store at each scrape."""

    def __init__(self, store):
        self.store = store

    def collect(self):
        states, chunks, tweets = self.store.counts()
        jobs = GaugeMetricFamily("api_jobs", "Jobs in the store, by state", labels=["state"])
        for state, count in states.items():
            jobs.add_metric([state], count)
        yield jobs
        yield GaugeMetricFamily("api_jobs_queue_chunks", "Chunks not yet labelled", value=chunks)
        yield GaugeMetricFamily("api_jobs_queue_tweets", "Tweets not yet labelled", value=tweets)


# The workers make api-start supervises (gunicorn.conf.py): started with the API, started again
# when one dies, stopped with it, restarted on HUP so that they load the new model.


class LocalWorkers:
    """Supervise JOB_WORKERS_WITH_API worker processes beside the API."""

    def __init__(self, settings):
        self.count = settings["JOB_WORKERS_WITH_API"]
        self.port = settings["WORKER_METRICS_PORT"]
        self.processes, self.stopping = {}, False
        self.restarting = set()  # TERMed on HUP: their exit is expected
        self.failures = {}  # index: exits in a row that were not asked for, for the back-off
        self.lock = threading.Lock()

    def start(self):
        for index in range(self.count):
            self.spawn(index)
        if self.count:
            threading.Thread(target=self.watch, daemon=True, name="job-workers").start()

    def spawn(self, index):
        # The API's own metrics files are not the worker's: it serves its metrics on its port.
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PROMETHEUS_MULTIPROC_DIR", "METRICS_DIR_MADE_HERE")
        }
        env["WORKER_METRICS_PORT"] = str(self.port + index)
        command = [sys.executable, str(Path(__file__).resolve())]
        process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL)  # noqa: S603
        process.started = time.monotonic()
        self.processes[index] = process
        log.info("started job worker %d (pid %d)", index, process.pid)

    def watch(self):
        """Start again a worker that exited: at once after a HUP, else after a back-off that
        doubles with each exit in a row (1 s to a minute), so a worker that cannot start says why
        a few times, not in a loop."""
        due = {}
        while not self.stopping:
            time.sleep(0.5)
            with self.lock:
                for index, process in list(self.processes.items()):
                    if self.stopping or process.poll() is None:
                        continue
                    if index in self.restarting:
                        self.restarting.discard(index)
                        log.info("job worker %d stopped to load the new model", index)
                        self.spawn(index)
                        continue
                    if index not in due:
                        code = process.returncode
                        how = f"killed by signal {-code}" if code < 0 else f"exited with {code}"
                        self.failures[index] = self.failures.get(index, 0) + 1
                        wait = min(60, 2 ** (self.failures[index] - 1))
                        log.warning("job worker %d %s; starting it again in %d s", index, how, wait)
                        due[index] = time.monotonic() + wait
                    elif time.monotonic() >= due[index]:
                        del due[index]
                        self.spawn(index)
                for index, process in self.processes.items():  # up a minute: no longer failing
                    if process.poll() is None and time.monotonic() - process.started > 60:
                        self.failures.pop(index, None)

    def restart(self):
        """TERM each worker (it finishes its chunk); the watcher starts new ones."""
        with self.lock:
            for index, process in self.processes.items():
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
                    self.restarting.add(index)

    def stop(self, seconds=8):
        self.stopping = True
        with self.lock:
            for process in self.processes.values():
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + seconds
            for process in self.processes.values():
                try:
                    process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


if __name__ == "__main__":
    try:
        main()
    except (RuntimeError, model.ArtifactError) as e:
        sys.exit(f"jobs: {e}")
