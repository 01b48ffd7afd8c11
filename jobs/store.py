"""The job store: our own jobs table, and a job's tweets and answers by chunk, on SQLAlchemy.

The jobs table is ours: Celery reports an unknown task as PENDING, and answers must outlive the
broker. What the store holds is kept as it changes (USAGE: the total and each token's), in the
same transaction as the change, so that every API worker and job worker on one store sees the
same figures without summing the store (150 ms a submission with 99 MB stored, issue 37).
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
TOTAL, NOBODY = "*", "-"  # USAGE's row of the whole store, and of jobs made before owners
PIECE_CHARS = 256 * 1024  # a chunk's answers are stored, and downloaded, in pieces of about this
# What a chunk's answers are reckoned to take before they exist: per tweet, beside its id, a
# label and score ('["id","Negative",0.123456],' is 26 characters and the id's), and with
# explain an explanation of at most 2 x contract.EXPLAIN_TERMS terms (30 characters each and
# the term's: 700 to 800 seen for tweets of 600 characters of known words). The real figure
# replaces it when the answers are stored, whether more or less.
ANSWER_CHARS, EXPLANATION_CHARS = 32, 800

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
    # JSON [[id, label, score, explanation?], ...] once done, in stores made before ANSWERS
    sa.Column("answers", sa.Text),
    sa.Column("done", sa.Boolean, nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("lease_until", sa.Float, nullable=False),
    # Characters the chunk takes in the store: its tweets, and its answers (reckoned until done)
    sa.Column("charge", sa.BigInteger),
)
OWNER_INDEX = sa.Index("sentiment_jobs_owner", JOBS.c.owner)  # counted at each submission
# A done chunk's answers, in pieces of about PIECE_CHARS: a download holds one piece at a time.
ANSWERS = sa.Table(
    "sentiment_job_answers",
    METADATA,
    sa.Column("job_id", sa.String(32), primary_key=True),
    sa.Column("number", sa.Integer, primary_key=True),
    sa.Column("piece", sa.Integer, primary_key=True),
    sa.Column("answers", sa.Text, nullable=False),  # JSON [[id, label, score, explanation?], ...]
)
# Characters held: the whole store's (owner TOTAL) and each token's.
USAGE = sa.Table(
    "sentiment_job_usage",
    METADATA,
    sa.Column("owner", sa.String(64), primary_key=True),
    sa.Column("chars", sa.BigInteger, nullable=False),
)


SCHEMA_LOCK = 0x5E171E48  # pg_advisory_xact_lock's key: replicas starting together, one schema


class Store:
    """The job store, on SQLAlchemy: PostgreSQL, or SQLite for the embedded default.

    Its engine is made in the process that first uses it: gunicorn loads the app before forking,
    and a database connection must not be shared across a fork.
    """

    def __init__(self, url):
        self.url, self._engine, self._pid, self.created = url, None, None, False

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
        them at once is no error (PostgreSQL: they take turns on an advisory lock)."""
        if self.url.startswith("sqlite:///"):
            private_folder(Path(self.url.removeprefix("sqlite:///")).parent)
        try:
            with self.engine.begin() as db:
                if db.dialect.name == "postgresql":
                    db.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK})
                METADATA.create_all(db)
        except sa.exc.DBAPIError:
            time.sleep(0.5)
            METADATA.create_all(self.engine)
        columns = {c["name"] for c in sa.inspect(self.engine).get_columns(JOBS.name)}
        # A store made before jobs had owners, or pinned models: add the column (NULL: none).
        for column in ("owner", "model", "model_version"):
            if column not in columns:
                add_column(self, JOBS, column)
        with contextlib.suppress(sa.exc.DBAPIError):
            OWNER_INDEX.create(self.engine, checkfirst=True)
        if "charge" not in {c["name"] for c in sa.inspect(self.engine).get_columns(CHUNKS.name)}:
            add_column(self, CHUNKS, "charge")
        self.count_usage()
        self.created = True

    def ready(self):
        """Make the tables unless done: the store may have been unreachable at start (a replica
        that starts while PostgreSQL is down starts all the same)."""
        if not self.created:
            self.create()

    def count_usage(self):
        """In a store made before USAGE (or the charge column), reckon what each chunk holds and
        each token's total, once: from then on they are kept as they change. Two processes
        doing it at once: one does, the other's insert fails and changes nothing."""
        held = sa.func.length(CHUNKS.c.tweets) + sa.func.coalesce(
            sa.func.length(CHUNKS.c.answers), 0
        )
        with self.engine.begin() as db:  # within create(): begin() would create again
            db.execute(sa.update(CHUNKS).where(CHUNKS.c.charge.is_(None)).values(charge=held))
        with contextlib.suppress(sa.exc.IntegrityError), self.engine.begin() as db:
            if db.execute(sa.select(USAGE.c.chars).where(USAGE.c.owner == TOTAL)).first():
                return
            owners = db.execute(
                sa.select(JOBS.c.owner, sa.func.sum(CHUNKS.c.charge))
                .select_from(CHUNKS.join(JOBS, JOBS.c.id == CHUNKS.c.job_id))
                .group_by(JOBS.c.owner)
            ).all()
            rows = [{"owner": owner_key(o), "chars": int(c or 0)} for o, c in owners]
            rows.append({"owner": TOTAL, "chars": sum(r["chars"] for r in rows)})
            db.execute(sa.insert(USAGE), rows)

    def size(self, owner=TOTAL):
        """The characters of text the store holds, tweets and answers: in all, or one owner's."""
        with self.begin() as db:
            held = db.execute(sa.select(USAGE.c.chars).where(USAGE.c.owner == owner)).scalar()
        return int(held or 0)

    def jobs(self, owner):
        """How many jobs of this owner the store holds, whatever their state."""
        with self.begin() as db:
            return db.execute(sa.select(sa.func.count()).where(JOBS.c.owner == owner)).scalar_one()

    def make_usage(self, owner):
        """The owner's USAGE row, made if absent (two processes making it at once: no error)."""
        with self.begin() as db:
            if db.execute(sa.select(USAGE.c.owner).where(USAGE.c.owner == owner)).first():
                return
        with contextlib.suppress(sa.exc.IntegrityError), self.begin() as db:
            db.execute(sa.insert(USAGE).values(owner=owner, chars=0))

    def active(self, owner):
        """How many jobs of this owner are being received, queued or running."""
        with self.begin() as db:
            return db.execute(
                sa.select(sa.func.count()).where(JOBS.c.owner == owner, JOBS.c.status.in_(ACTIVE))
            ).scalar_one()

    def begin(self):
        self.ready()
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
        """Yield the answers of a done job, a piece (about PIECE_CHARS) at a time, in the order
        they were submitted; service.CutShort if the job is deleted or expires meanwhile, so that
        the download ends as a broken transfer, never as a complete-looking one."""
        with self.begin() as db:
            numbers = db.execute(
                sa.select(CHUNKS.c.number).where(CHUNKS.c.job_id == job_id).order_by("number")
            ).scalars()
            numbers = list(numbers)
        gone = service.CutShort(f"job {job_id} was removed while its result was sent")
        for number in numbers:
            with self.begin() as db:
                row = db.execute(
                    sa.select(CHUNKS.c.answers).where(
                        CHUNKS.c.job_id == job_id, CHUNKS.c.number == number
                    )
                ).first()
                pieces = db.execute(
                    sa.select(ANSWERS.c.piece)
                    .where(ANSWERS.c.job_id == job_id, ANSWERS.c.number == number)
                    .order_by(ANSWERS.c.piece)
                ).scalars()
                pieces = list(pieces)
            if row is None or (row.answers is None and not pieces):  # deleted meanwhile
                raise gone
            if row.answers is not None:  # stored whole, before ANSWERS
                rows, row = json.loads(row.answers), None
                yield rows
            for piece in pieces:
                with self.begin() as db:
                    text = db.execute(
                        sa.select(ANSWERS.c.answers).where(
                            ANSWERS.c.job_id == job_id,
                            ANSWERS.c.number == number,
                            ANSWERS.c.piece == piece,
                        )
                    ).scalar_one_or_none()
                if text is None:
                    raise gone
                rows, text = json.loads(text), None  # held no more while the piece is sent
                yield rows
                rows = None

    def cancel(self, job_id):
        """Cancel a job and delete its tweets and answers; its record says "cancelled" until it
        expires. Return False if there is no such job."""
        with self.begin() as db:
            release(db, [job_id])
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


def add_column(store, table, column):
    """Add a column an older store lacks (NULL in its rows); a second process adding it at once
    is no error."""
    kind = table.c[column].type.compile(store.engine.dialect)
    with contextlib.suppress(sa.exc.DBAPIError), store.engine.begin() as db:
        db.execute(sa.text(f"ALTER TABLE {table.name} ADD COLUMN {column} {kind}"))


def owner_key(owner):
    return NOBODY if owner is None else owner


def add_usage(db, owner, chars):
    """Add chars (taken off when negative) to what the store and the owner hold; return both
    totals. The total's row first, then the owner's, in every transaction: no deadlock."""
    totals = []
    for key in (TOTAL, owner_key(owner)):
        db.execute(sa.update(USAGE).where(USAGE.c.owner == key).values(chars=USAGE.c.chars + chars))
        totals.append(db.execute(sa.select(USAGE.c.chars).where(USAGE.c.owner == key)).scalar())
    return [int(t or 0) for t in totals]


def release(db, job_ids):
    """Delete the tweets and answers of these jobs, and take what they held off the usage of the
    store and of their owners."""
    charges = db.execute(
        sa.delete(CHUNKS)
        .where(CHUNKS.c.job_id.in_(job_ids))
        .returning(CHUNKS.c.job_id, CHUNKS.c.charge)
    ).all()
    db.execute(sa.delete(ANSWERS).where(ANSWERS.c.job_id.in_(job_ids)))
    if not charges:
        return
    owners = dict(
        db.execute(
            sa.select(JOBS.c.id, JOBS.c.owner).where(JOBS.c.id.in_({j for j, _ in charges}))
        ).all()
    )
    by_owner = {}
    for job_id, charge in charges:
        owner = owners.get(job_id)
        by_owner[owner] = by_owner.get(owner, 0) + (charge or 0)
    for owner, chars in by_owner.items():
        add_usage(db, owner, -chars)


def remove(db, job_ids):
    release(db, job_ids)
    db.execute(sa.delete(JOBS).where(JOBS.c.id.in_(job_ids)))


def reckoned(part, explain):
    """The characters a chunk's answers are reckoned to take before they exist."""
    ids = len(json.dumps(list(part)))  # as the answers write them: ASCII, escaped
    return ids + len(part) * (ANSWER_CHARS + (EXPLANATION_CHARS if explain else 0))


def pieces(rows):
    """A chunk's answers as JSON texts of about PIECE_CHARS each."""
    piece, held = [], 0
    for row in rows:
        text = json.dumps(row, ensure_ascii=True)
        piece.append(text)
        held += len(text) + 1
        if held >= PIECE_CHARS:
            yield "[" + ",".join(piece) + "]"
            piece, held = [], 0
    if piece:
        yield "[" + ",".join(piece) + "]"


def delete_consumed_messages(broker_url):
    """Delete the messages the embedded broker has handed out: kombu's SQLAlchemy transport keeps
    each with visible=false for good (300 one-tweet jobs left 300 rows, issue 37). A message
    handed out is never handed out again (a chunk's lease sends it again), so none is lost."""
    engine = sa.create_engine(broker_url.removeprefix("sqla+"))
    sa.event.listen(engine, "connect", _sqlite_pragmas)
    try:
        with engine.begin() as db:
            return db.execute(sa.text("DELETE FROM kombu_message WHERE visible = 0")).rowcount
    except sa.exc.OperationalError:  # no such table yet: nothing was sent
        return 0
    finally:
        engine.dispose()
