"""A job worker: the Celery app, one task per chunk, and the sweep that sends late chunks again
and removes expired jobs.

    make worker-start                       # python -m jobs: one worker, here or elsewhere

A chunk is leased when it is sent and when a worker takes it. RabbitMQ gives a dead worker's
chunk to another worker at once; the embedded broker cannot, so a worker starting on it sends
again every chunk not done, and every worker sends again the chunks of running jobs whose lease
ran out.
"""

import functools
import json
import logging
import os
import sys
import threading
import time
import warnings
from pathlib import Path

import celery
import sqlalchemy as sa
from celery import signals
from prometheus_client import Counter, Gauge, Histogram
from werkzeug.exceptions import ServiceUnavailable

import contract
import registry
import service
from jobs.settings import embedded, settings_of
from jobs.store import (
    ANSWERS,
    CHUNKS,
    JOBS,
    UNFINISHED,
    Store,
    add_usage,
    delete_consumed_messages,
    pieces,
    private_folder,
    remove,
)

QUEUE = "tweet-sentiment-jobs"
SWEEP_SECONDS = 10  # how often a worker looks for chunks to send again and jobs to remove
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
            tweets, attempts, charge = db.execute(
                sa.select(CHUNKS.c.tweets, CHUNKS.c.attempts, CHUNKS.c.charge).where(
                    CHUNKS.c.job_id == job_id, CHUNKS.c.number == number
                )
            ).one()
            options, name, version, owner = db.execute(
                sa.select(JOBS.c.options, JOBS.c.model, JOBS.c.model_version, JOBS.c.owner).where(
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
            batch = json.loads(tweets)
            held = len(tweets)
            del tweets
            answers = list(pieces(self.rows(served.model, batch, options["explain"])))
        except Exception as e:  # a chunk that cannot be labelled fails its job, and is not retried
            log.exception("chunk %s of a job failed", number)
            CHUNKS_LABELLED.labels("failed").inc()
            self.fail(job_id, f"chunk {number} could not be labelled: {type(e).__name__}: {e}")
            return
        stored = held + sum(map(len, answers))
        with self.store.begin() as db:
            finished = db.execute(
                sa.update(CHUNKS)
                .where(CHUNKS.c.job_id == job_id, CHUNKS.c.number == number, ~CHUNKS.c.done)
                .values(done=True, charge=stored)
            )
            if finished.rowcount:  # not done by another worker meanwhile: stored once
                db.execute(
                    sa.insert(ANSWERS),
                    [
                        {"job_id": job_id, "number": number, "piece": n, "answers": text}
                        for n, text in enumerate(answers)
                    ],
                )
                add_usage(db, owner, stored - (charge or 0))
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
        TWEETS_LABELLED.inc(len(batch))
        CHUNK_SECONDS.observe(seconds)
        if log.isEnabledFor(logging.INFO):
            fields = {
                "job_id": job_id,
                "chunk": number,
                "tweets": len(batch),
                "attempt": attempts,
                "seconds": round(seconds, 3),
                "job_done": left == 0,
            }
            sys.stderr.write(service.json_line("info", "chunk labelled", fields))

    def rows(self, classifier, batch, explain):
        """Yield a chunk's answers as rows [id, label, score, explanation?], labelled in parts of
        at most MAX_EXPLAINED_TWEETS with explain (the contract's bound on what an answer
        holds), so that the worker holds one part's explanations at a time."""
        step = self.limits["MAX_EXPLAINED_TWEETS"] if explain else max(1, len(batch))
        for start in range(0, len(batch), step):
            part = dict(batch[start : start + step])
            answer = contract.predict(classifier, part, self.limits, scores=True, explain=explain)
            for i, a in answer.items():
                yield [i, a["label"], a["score"], *([a["explanation"]] if explain else [])]

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
        if embedded(self.settings):
            delete_consumed_messages(self.settings["BROKER_URL"])

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
