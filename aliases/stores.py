"""Where the aliases and the guard's shadow counts live, and how every process follows them.

One machine (no DATABASE_URL): one JSON file, ALIASES_FILE, written whole and renamed into place
under a lock, so a change is durable and every process sees either the old or the new file. Every
process looks at the file's stat at most every REFRESH_SECONDS, on its way to answer a request,
and reads it again when it changed. Each process appends the guard's new shadow keys (shadow.py)
to a file of its own beside it, every COUNTS_SECONDS; the guard counts the distinct keys of every
file.

Several replicas (DATABASE_URL, a postgresql:// URI): the aliases are one row of a PostgreSQL
table. A change is one transaction: it locks the row (so it serialises with any other change),
reads the shadow counts every process wrote for the current candidate's epoch, lets the guard
decide, writes the new aliases with the next version, and notifies. Every process follows with a
thread of its own: LISTEN/NOTIFY wakes it at once, and a poll of the version every FOLLOW_SECONDS
is the net under it (a notification sent while it was disconnected is never replayed, so a
reconnection reads everything again). The same thread inserts the process's new shadow keys
every FOLLOW_SECONDS at most, one statement, a key any process sent before counted once. With
PostgreSQL down every process keeps the aliases it last read and goes on serving; changes are
refused (503).

Either way a process takes a new State only when it has loaded every model and version it names
(all were loaded and checked at start), and a request resolves its model once, so it finishes on
the model it started with.
"""

import contextlib
import dataclasses
import fcntl
import json
import logging
import os
import re
import secrets
import socket
import struct
import threading
import time
import weakref
from pathlib import Path

from prometheus_client import Gauge

from aliases.shadow import Counts
from aliases.state import Invalid, Refused, State, Unavailable, decode, encode, pair

REFRESH_SECONDS = 0.25  # an os.stat four times a second: nothing, next to a request
COUNTS_SECONDS = 2  # a process's shadow counts are written out this often, at most
FOLLOW_SECONDS = 2  # PostgreSQL: the poll of the version under LISTEN/NOTIFY
RETRY_SECONDS = 2  # PostgreSQL: the longest wait before connecting again
FIRST_READ_SECONDS = 1  # PostgreSQL: how long a new process's requests wait for its first read
CHANNEL = "sentiment_aliases"
SCHEMA_LOCK = 0x5E171E47  # pg_advisory_xact_lock's key: replicas starting together, one schema

log = logging.getLogger("aliases")

READ_AT = Gauge(
    "api_aliases_read_timestamp_seconds",
    "When this process last read or confirmed the aliases in PostgreSQL (the oldest across "
    "processes): now minus it is how stale they may be",
    multiprocess_mode="livemin",
)


# This process's id, kept anew by each fork: os.getpid() is a system call, and current() asks it
# on every request (twice for a predict request: 1% of a worker's time on payload.json).
PROCESS = [os.getpid()]
os.register_at_fork(after_in_child=lambda: PROCESS.__setitem__(0, os.getpid()))
VIEWS = weakref.WeakSet()  # every view of the aliases in this process (a reload makes another)


def follow_here():
    """Start following every view in this process, as a gunicorn worker starts
    (gunicorn.conf.py's post_worker_init), rather than on its first request."""
    for view in list(VIEWS):
        view.started()


class Followed:
    """One process's view of the aliases, followed as they change in their home."""

    source = ""

    def __init__(self, known, fallback):
        """known: the (name, version) pairs this process has loaded; fallback: the stable pair
        when none is stored (models.json's default)."""
        self.known = known
        self.fallback = State({"model": fallback[0], "version": fallback[1]})
        self.state, self.problem, self.read_once, self.read_at = self.fallback, None, False, None
        self.counts = Counts(lambda: self.state.epoch)  # this process's, for the candidate
        self.pid, self.saving = None, threading.Lock()  # one writer of the counts at a time
        self.read_here, self.started_at = threading.Event(), 0.0
        VIEWS.add(self)

    def started(self):
        """On the first call in a process (each gunicorn worker forks from the master: at its
        start, follow_here), start the thread that follows the aliases and writes out this
        process's shadow counts. It holds the view weakly, and ends once the view is gone
        (replaced by a reload)."""
        if self.pid != PROCESS[0]:
            self.pid = PROCESS[0]
            # Its name in the stores of counts: a pid is used again after a restart, and by
            # other hosts; and a process may follow twice (a reload keeps the old view a while).
            self.key = f"{socket.gethostname()}-{self.pid}-{secrets.token_hex(4)}"
            # What it holds now, it inherited from the master: read when the master started.
            self.read_here, self.started_at = threading.Event(), time.monotonic()
            keeper = type(self).keep
            threading.Thread(
                target=keeper, args=(weakref.ref(self),), daemon=True, name="aliases"
            ).start()

    def unknown(self, state):
        """Name the aliases whose model and version this process has not loaded, or None."""
        missing = [
            f"{name} {pair(alias)}"
            for name, alias in state.as_dict().items()
            if alias is not None and pair(alias) not in self.known
        ]
        return f"names models not loaded here: {', '.join(missing)}" if missing else None

    def accept(self, state, where):
        """Take a State read from `where`, unless it names a model not loaded here."""
        problem = self.unknown(state)
        if problem:
            self.complain(f"{where} {problem}")
            return
        self.state, self.problem, self.read_once = state, None, True
        self.read_at = time.monotonic()
        self.read_here.set()

    def complain(self, problem):
        """Keep serving what was served, and say why once."""
        if problem != self.problem:
            log.warning("%s; still serving %s", problem, pair(self.state.stable))
        self.problem = problem

    def health(self):
        """What /ready and GET /api/v1/aliases say of the aliases: where they live, their version,
        whether this process has read them, how long ago, and what is wrong, if anything."""
        ago = None  # a file is looked at on the way to each request: never stale
        if self.source != "file" and self.read_at is not None:
            ago = round(time.monotonic() - self.read_at, 3)
        return {
            "source": self.source,
            "version": self.state.version,
            "read": self.read_once,
            "seconds_since_read": ago,
            "problem": self.problem,
        }

    def ready(self):
        """Whether this process can serve what the aliases name: it has read them once, and they
        name no model it lacks (a replica that cannot follow the others leaves the balancer)."""
        return self.read_once and not (self.problem and "not loaded here" in self.problem)

    def change(self, edit):
        """Apply edit(state, totals) -> State in the home's lock or transaction, store it with
        the next version, and return it. edit raises Refused or Invalid to change nothing; a
        Refused says what changed meanwhile if another change came first."""
        self.started()
        seen = self.state  # as this process last followed them, before the request

        def apply(stored, totals):
            stored_problem = self.unknown(stored)
            if stored_problem:  # not the request's fault: what is stored must be mended
                raise Unavailable(
                    f"{self.where} (version {stored.version}) {stored_problem}: mend them"
                )
            try:
                state = edit(stored, totals)
            except Refused as e:
                if stored.version != seen.version:
                    raise Refused(
                        f"{e}; the aliases changed meanwhile: {described(stored)}"
                    ) from None
                raise
            problem = self.unknown(state)
            if problem:
                raise Invalid(problem)
            return dataclasses.replace(state, version=stored.version + 1)

        state = self.store_change(apply)
        self.state, self.problem, self.read_once = state, None, True
        self.read_at = time.monotonic()
        return state

    def totals(self, epoch):
        """The distinct shadow keys of an epoch over every process, this one's to the moment."""
        self.started()
        if epoch is None:
            return {"pairs": 0, "agreeing": 0}
        return self.stored_totals(epoch, save=True)


def described(state):
    """Name what a State holds, for a change refused because another came first."""
    names = ", ".join(
        f"{name} {'none' if alias is None else ' '.join(pair(alias))}"
        for name, alias in state.as_dict().items()
    )
    return f"version {state.version}: {names}"


class FileAliases(Followed):
    """The aliases in ALIASES_FILE, for the processes of one machine."""

    source = "file"

    def __init__(self, path, known, fallback):
        super().__init__(known, fallback)
        self.path = Path(path)
        self.where = f"the aliases file {self.path}"
        self.folder = self.path.with_name(f"{self.path.name}.shadow")  # counts: a file a process
        self.stamp, self.checked = object(), 0.0
        self.refresh()

    def current(self, fresh=False):
        """The aliases now: the file's stat is looked at most every REFRESH_SECONDS, or now if
        fresh (an admin reading them back); this process's shadow counts written out at most
        every COUNTS_SECONDS by a thread of its own."""
        self.started()
        now = time.monotonic()
        if fresh or now - self.checked >= REFRESH_SECONDS:
            self.checked = now
            self.refresh()
        return self.state

    @staticmethod
    def keep(view):
        """Write out the counts of the view (a weak reference) every COUNTS_SECONDS."""
        while True:
            time.sleep(COUNTS_SECONDS)
            aliases = view()
            if aliases is None:
                return
            try:
                aliases.save_counts()
            except Exception:  # a bug: say so, and go on counting
                log.exception("writing the shadow counts failed")
            del aliases

    def refresh(self):
        stamp = file_stamp(self.path)
        if stamp == self.stamp:
            return
        self.stamp = stamp
        try:
            state = read_file(self.path, self.fallback)
        except (OSError, ValueError) as e:
            self.complain(f"the aliases file {self.path} cannot be read: {e}")
            return
        self.accept(state, f"the aliases file {self.path}")

    def store_change(self, apply):
        try:
            with locked(self.path):
                try:
                    stored = read_file(self.path, self.fallback)
                except (OSError, ValueError) as e:
                    raise Unavailable(
                        f"the aliases file {self.path} cannot be read ({e}): mend it, or remove "
                        "it to start again from models.json's default"
                    ) from None
                self.save_counts()
                state = apply(stored, lambda epoch: self.stored_totals(epoch))
                write(self.path, state)
                self.stamp, self.checked = file_stamp(self.path), time.monotonic()
                if state.epoch != stored.epoch:
                    self.forget_counts(state.epoch)
        except OSError as e:
            raise Unavailable(
                f"the aliases file cannot be written ({e.strerror}): set ALIASES_FILE to a path "
                "this server may write"
            ) from None
        return state

    def save_counts(self):
        """Append this process's new keys to its own file beside the aliases file: 9 bytes a key
        (the key, and whether the two models agreed)."""
        with self.saving:
            taken = self.counts.take()
            if taken is None:
                return
            epoch, keys = taken
            try:
                self.folder.mkdir(mode=0o700, exist_ok=True)
                target = self.folder / f"{safe(epoch)}--{safe(self.key)}.keys"
                with open(target, "ab") as f:
                    f.write(b"".join(KEY.pack(key, agree) for key, agree in keys))
            except OSError as e:
                self.counts.give_back(epoch, keys)
                log.warning("cannot write the shadow counts in %s: %s", self.folder, e.strerror)

    def stored_totals(self, epoch, save=False):
        """The distinct keys every process wrote for this epoch, each counted once."""
        if save:
            self.save_counts()
        keys = {}
        for path in self.folder.glob(f"{safe(epoch)}--*.keys"):
            with contextlib.suppress(OSError):
                data = path.read_bytes()
                whole = len(data) - len(data) % KEY.size  # a write cut short: its whole keys
                keys.update(KEY.iter_unpack(data[:whole]))
        return {"pairs": len(keys), "agreeing": sum(keys.values())}

    def forget_counts(self, epoch):
        """Remove the counts of every other epoch: their candidate is gone."""
        for path in self.folder.glob("*--*.keys"):
            if not path.name.startswith(f"{safe(epoch)}--"):
                path.unlink(missing_ok=True)


KEY = struct.Struct("<q?")  # a shadow key and whether the two models agreed on it


def safe(name):
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(name))


def file_stamp(path):
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):  # no file: the fallback
        return None
    return info.st_mtime_ns, info.st_size, info.st_ino


def read_file(path, fallback):
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return fallback
    return decode(text)


def write(path, state):
    """Write the whole file beside it, flush it to disk, and rename it into place."""
    path = Path(path)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(temporary, "w", encoding="utf-8") as f:
        f.write(encode(state))
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@contextlib.contextmanager
def locked(path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f"{path.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# PostgreSQL.

SCHEMA = (
    """CREATE TABLE IF NOT EXISTS sentiment_aliases (
        id integer PRIMARY KEY CHECK (id = 1),
        state text,
        version bigint NOT NULL,
        changed_at double precision
    )""",
    "INSERT INTO sentiment_aliases (id, state, version) VALUES (1, NULL, 0) ON CONFLICT DO NOTHING",
    """CREATE TABLE IF NOT EXISTS sentiment_shadow_keys (
        epoch text NOT NULL,
        key bigint NOT NULL,
        agreeing boolean NOT NULL,
        PRIMARY KEY (epoch, key)
    )""",
    "DROP TABLE IF EXISTS sentiment_shadow_counts",  # counts by process, before distinct keys
)
INSERT_KEYS = """INSERT INTO sentiment_shadow_keys (epoch, key, agreeing) VALUES (%s, %s, %s)
    ON CONFLICT (epoch, key) DO NOTHING"""


class DatabaseAliases(Followed):
    """The aliases in PostgreSQL, for every replica."""

    source, where = "postgresql", "the aliases in PostgreSQL"

    def __init__(self, url, known, fallback):
        super().__init__(known, fallback)
        self.url = libpq_url(url)
        try:  # here, in gunicorn's master before it forks: a connection of its own, closed
            with self.connect() as db:
                create_schema(db)
                self.accept_row(db)
        except Exception as e:  # noqa: BLE001 (psycopg's or the row's: not ready, and why)
            self.complain(unreachable(e))

    def connect(self, autocommit=False):
        import psycopg  # only where DATABASE_URL is set

        return psycopg.connect(
            self.url,
            autocommit=autocommit,
            connect_timeout=3,
            options="-c lock_timeout=5000 -c statement_timeout=10000",
        )

    def current(self, fresh=False):
        """The aliases this process follows; if fresh, read now (an admin reading them back).

        A new process holds what its master read when it started, maybe versions ago: its
        requests wait for its own first read, FIRST_READ_SECONDS at most from its start (a
        recycled worker served the master's aliases otherwise; with PostgreSQL down, it serves
        them after that, as every process serves what it last read)."""
        self.started()
        if not self.read_here.is_set():
            self.read_here.wait(self.started_at + FIRST_READ_SECONDS - time.monotonic())
        if fresh:
            try:
                with self.connect(autocommit=True) as db:
                    self.accept_row(db)
            except Exception as e:  # noqa: BLE001
                self.complain(unreachable(e))
        return self.state

    def accept_row(self, db):
        row = db.execute("SELECT state, version FROM sentiment_aliases WHERE id = 1").fetchone()
        try:
            state = self.fallback if row is None else row_state(row, self.fallback)
        except ValueError as e:
            self.complain(f"the aliases in PostgreSQL cannot be read: {e}")
            return
        self.accept(state, "the aliases in PostgreSQL")
        if self.state.version == state.version:
            READ_AT.set(time.time())

    @staticmethod
    def keep(view):
        """Follow the aliases of the view (a weak reference) while it lives: connect, LISTEN,
        read them whole, then wake on a notification or every FOLLOW_SECONDS to write this
        process's counts and look at the version; on any failure, connect again and read them
        whole again."""
        wait = 0.5
        while (aliases := view()) is not None:
            try:
                with aliases.connect(autocommit=True) as db:
                    create_schema(db)  # once more: it may have been down when this started
                    db.execute(f"LISTEN {CHANNEL}")
                    aliases.accept_row(db)
                    wait, aliases = 0.5, None
                    while True:
                        for _ in db.notifies(timeout=FOLLOW_SECONDS, stop_after=1):
                            pass
                        aliases = view()
                        if aliases is None:
                            return
                        aliases.look(db)
                        aliases = None
            except Exception as e:  # noqa: BLE001 (whatever it was: connect again)
                aliases = view()
                if aliases is None:
                    return
                aliases.complain(unreachable(e))
                aliases = None
                time.sleep(wait)
                wait = min(RETRY_SECONDS, wait * 2)

    def look(self, db):
        """Write this process's counts, and read the aliases again if their version moved."""
        self.save_counts(db)
        version = db.execute("SELECT version FROM sentiment_aliases WHERE id = 1").fetchone()
        if version is None or version[0] != self.state.version or self.problem:
            self.accept_row(db)
        else:
            self.read_at = time.monotonic()
            READ_AT.set(time.time())

    def store_change(self, apply):
        try:
            with self.connect() as db, db.transaction():
                row = db.execute(
                    "SELECT state, version FROM sentiment_aliases WHERE id = 1 FOR UPDATE"
                ).fetchone()
                try:
                    stored = row_state(row, self.fallback)
                except ValueError as e:
                    raise Unavailable(f"the aliases in PostgreSQL cannot be read: {e}") from None
                self.save_counts(db)
                state = apply(stored, lambda epoch: summed(db, epoch))
                db.execute(
                    "UPDATE sentiment_aliases SET state = %s, version = %s, changed_at = %s "
                    "WHERE id = 1",
                    (json.dumps(state.as_dict()), state.version, time.time()),
                )
                if state.epoch != stored.epoch:
                    db.execute(
                        "DELETE FROM sentiment_shadow_keys WHERE epoch IS DISTINCT FROM %s",
                        (state.epoch,),
                    )
                db.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(state.version)))
        except (Refused, Invalid, Unavailable):
            raise
        except Exception as e:  # noqa: BLE001 (psycopg's: nothing was changed)
            raise Unavailable(f"{unreachable(e)}; the aliases were not changed") from None
        return state

    def save_counts(self, db):
        """Insert this process's new keys; a key another process sent first is counted once."""
        with self.saving:
            taken = self.counts.take()
            if taken is None:
                return
            epoch, keys = taken
            try:
                with db.cursor() as cursor:
                    cursor.executemany(INSERT_KEYS, [(epoch, k, a) for k, a in keys])
            except Exception:
                self.counts.give_back(epoch, keys)
                raise

    def stored_totals(self, epoch, save=False):
        try:
            with self.connect(autocommit=True) as db:
                if save:
                    self.save_counts(db)
                return summed(db, epoch)
        except Exception as e:  # noqa: BLE001
            raise Unavailable(unreachable(e)) from None


def create_schema(db):
    """Make the tables once: replicas starting together take turns on an advisory lock."""
    with db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
        for statement in SCHEMA:
            db.execute(statement)


def row_state(row, fallback):
    """The State of the aliases row (version in its column); ValueError if it is damaged."""
    if row is None:
        raise ValueError("the row is missing")
    text, version = row
    if text is None:  # nothing stored yet: models.json's default
        return dataclasses.replace(fallback, version=version)
    return dataclasses.replace(decode(text), version=version)


def summed(db, epoch):
    pairs, agreeing = db.execute(
        "SELECT count(*), count(*) FILTER (WHERE agreeing) FROM sentiment_shadow_keys "
        "WHERE epoch = %s",
        (epoch,),
    ).fetchone()
    return {"pairs": int(pairs), "agreeing": int(agreeing)}


def libpq_url(url):
    """A postgresql:// URI as libpq takes it (SQLAlchemy's postgresql+psycopg:// too)."""
    return re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", url)


def unreachable(error):
    """Name a failure to reach PostgreSQL by its kind and libpq's first line (no password is in
    it: libpq never repeats one)."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"PostgreSQL (DATABASE_URL) cannot be reached: {type(error).__name__}: {first}"


def follow(known, fallback, path=None, database_url=""):
    """The Followed aliases of a process: in PostgreSQL with a database_url, else in the file."""
    if database_url:
        return DatabaseAliases(database_url, known, fallback)
    return FileAliases(path, known, fallback)
