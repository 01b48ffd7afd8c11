"""The job store: our own jobs table, and a job's tweets and answers by chunk, on SQLAlchemy.

The jobs table is ours: Celery reports an unknown task as PENDING, and answers must outlive the
broker.
"""

import contextlib
import json
import os
import time
from pathlib import Path

import sqlalchemy as sa

import service

STATES = ("queued", "running", "done", "failed", "cancelled")
UNFINISHED = ("queued", "running")
ACTIVE = ("receiving", *UNFINISHED)  # what counts against a token's JOB_MAX_ACTIVE

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
