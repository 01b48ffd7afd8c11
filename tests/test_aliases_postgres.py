"""The aliases in PostgreSQL (DATABASE_URL, aliases/stores.py), in-process apps against a server
of the test's own: following a change, the faults docs/deploy.md promises, two admins at once,
and replicas making the schema together. The cluster behind HAProxy is tests/test_cluster.py's.
"""

import concurrent.futures
import json
import threading
import time

import psycopg
import pytest
from conftest import ADMIN_TOKEN, FIGURES, OTHER_TOKEN, TOKEN
from postgres import postgres

import aliases
import api
import registry

pytestmark = pytest.mark.slow
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
USER = {"Authorization": f"Bearer {TOKEN}"}
SMALL, OLD = "tweet-sentiment", "tweet-sentiment-2020"
DEFAULT = registry.read_catalogue(registry.MODELS_FILE)["default"]


@pytest.fixture
def database():
    with postgres() as server:
        yield server


def make_app(folder, database, **config):
    return api.create_app(
        {
            "API_TOKEN": f"{TOKEN},{OTHER_TOKEN}",
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "ALIASES_FILE": str(folder / "unused.json"),  # never read: DATABASE_URL is set
            "JOBS_DIR": str(folder / "jobs"),
            "DATABASE_URL": database.url,
            # Jobs on SQLite: these apps come and go, and a PostgreSQL pool left to the garbage
            # collector warns of its open connections (tests/test_cluster.py has jobs there).
            "JOB_STORE_URL": f"sqlite:///{folder / 'jobs.sqlite3'}",
            **config,
        }
    ).test_client()


def served(client):
    response = client.post(f"/api/v1/{TOKEN}/predict", json={"1": "fine"})
    assert response.status_code == 200, response.json
    return response.headers["X-Model-Name"]


def until(check, seconds, what):
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, f"not within {seconds} s: {what}"
        time.sleep(0.01)
    return seconds - (deadline - time.monotonic())


def test_a_change_reaches_every_process_within_a_second(tmp_path, database):
    first, second = make_app(tmp_path, database), make_app(tmp_path, database)
    assert served(first) == served(second) == DEFAULT  # each follows from its first request
    seconds = []
    for model in (SMALL, OLD, SMALL):
        put = first.put("/api/v1/aliases/candidate", headers=ADMIN, json={"model": model})
        assert put.status_code == 200, put.json
        promoted = first.post("/api/v1/aliases/promote", headers=ADMIN, json={"force": True})
        assert promoted.status_code == 200 and served(first) == model
        seconds.append(until(lambda m=model: served(second) == m, 1, f"{model} served"))
    FIGURES.append(("aliases in PostgreSQL: a change seen by another process (s)", seconds))
    assert not (tmp_path / "unused.json").exists()
    with psycopg.connect(database.url) as db:
        version, state = db.execute("SELECT version, state FROM sentiment_aliases").fetchone()
    assert version == 6 and json.loads(state)["stable"]["model"] == SMALL


def test_a_process_answers_what_is_stored_from_its_first_request(tmp_path, database):
    """A gunicorn worker holds what its master read when it started, maybe versions ago: its
    first request waits for its own first read. Before, it answered with the master's aliases
    (a recycled worker served a stable since replaced; test_cluster's session saw a replica's
    new worker at version 0 after a change)."""
    later = make_app(tmp_path, database)  # reads the aliases now: none stored, the default
    admin = make_app(tmp_path, database)
    put = admin.put("/api/v1/aliases/candidate", headers=ADMIN, json={"model": SMALL})
    assert put.status_code == 200, put.json
    promoted = admin.post("/api/v1/aliases/promote", headers=ADMIN, json={"force": True})
    assert promoted.status_code == 200 and served(admin) == SMALL
    assert served(later) == SMALL  # its first request: what is stored, not what it read


def test_postgresql_down_keeps_serving_and_refuses_changes_until_it_is_back(tmp_path, database):
    first, second = make_app(tmp_path, database), make_app(tmp_path, database)
    assert (
        first.put("/api/v1/aliases/candidate", headers=ADMIN, json={"model": SMALL}).status_code
        == 200
    )
    until(lambda: second.get("/ready").json["aliases"]["version"] == 1, 3, "version 1 followed")
    database.stop()
    try:
        assert served(first) == served(second) == DEFAULT  # stable, still shadowed
        ready = first.get("/ready")
        assert ready.status_code == 200, ready.json  # it serves what it last read
        refused = first.post("/api/v1/aliases/promote", headers=ADMIN, json={"force": True})
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "5"
        assert "PostgreSQL (DATABASE_URL) cannot be reached" in refused.json["detail"]
        assert "the aliases were not changed" in refused.json["detail"]
        state = first.get("/api/v1/aliases", headers=USER).json
        assert (
            state["candidate"]["model"] == SMALL and "cannot be reached" in state["home"]["problem"]
        )
        time.sleep(3)
        stale = second.get("/ready").json["aliases"]["seconds_since_read"]
        assert stale >= 2.5, stale  # the follower's last good read is this old
    finally:
        database.start()
    # Back: a change is made at once, and the other process, which lost its connection (and any
    # notification sent meanwhile), reads them whole on reconnecting.
    promoted = first.post("/api/v1/aliases/promote", headers=ADMIN, json={"force": True})
    assert promoted.status_code == 200, promoted.json
    took = until(lambda: served(second) == SMALL, 10, "the promotion followed after the outage")
    FIGURES.append(("aliases in PostgreSQL: followed after a restart of PostgreSQL (s)", took))
    until(lambda: second.get("/ready").json["aliases"]["problem"] is None, 5, "problem cleared")


def test_a_process_started_while_postgresql_is_down_is_not_ready_until_it_has_read_them(
    tmp_path, database
):
    make_app(tmp_path, database).put(
        "/api/v1/aliases/candidate", headers=ADMIN, json={"model": SMALL}
    )
    database.stop()
    try:
        late = make_app(tmp_path, database)
        ready = late.get("/ready")
        assert ready.status_code == 503 and "cannot be reached" in ready.json["detail"]
    finally:
        database.start()
    until(lambda: late.get("/ready").status_code == 200, 10, "ready once PostgreSQL is back")
    assert late.get("/api/v1/aliases", headers=USER).json["candidate"]["model"] == SMALL


def test_two_admins_at_once_leave_one_consistent_state(tmp_path, database):
    """Eight admins on two processes at once: a candidate each, then a promotion each. Every
    change is one transaction on the locked row: the versions run 1, 2, ... with none lost, one
    promotion wins and the others get a 409 naming what changed."""
    apps = [make_app(tmp_path, database) for _ in range(2)]
    for client in apps:
        served(client)
    barrier = threading.Barrier(8)

    def admin(n, method, path, body):
        barrier.wait()
        client = apps[n % 2]
        return getattr(client, method)(path, headers=ADMIN, json=body)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        models = [SMALL, OLD] * 4
        puts = list(
            pool.map(
                lambda n: admin(n, "put", "/api/v1/aliases/candidate", {"model": models[n]}),
                range(8),
            )
        )
        assert all(r.status_code == 200 for r in puts), [r.json for r in puts]
        assert sorted(r.json["version"] for r in puts) == list(range(1, 9))
        promotes = list(
            pool.map(
                lambda n: admin(n, "post", "/api/v1/aliases/promote", {"force": True}), range(8)
            )
        )
    won = [r for r in promotes if r.status_code == 200]
    lost = [r for r in promotes if r.status_code == 409]
    assert len(won) == 1 and len(lost) == 7, [(r.status_code, r.json) for r in promotes]
    assert won[0].json["version"] == 9
    for response in lost:
        assert "no candidate" in response.json["detail"]
        assert "changed meanwhile: version 9" in response.json["detail"], response.json
    last = puts[max(range(8), key=lambda n: puts[n].json["version"])].json["candidate"]
    assert won[0].json["stable"] == aliases.state.alias_of(last)
    for client in apps:
        state = client.get("/api/v1/aliases", headers=USER).json
        assert state["version"] == 9 and state["stable"] == won[0].json["stable"]


def test_replicas_starting_together_make_the_schema_once(tmp_path, database):
    known = {(DEFAULT, registry.load_one().get().version)}
    fallback = next(iter(known))
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        views = list(
            pool.map(
                lambda _: aliases.stores.DatabaseAliases(database.url, known, fallback), range(12)
            )
        )
    assert all(view.ready() and view.problem is None for view in views)
    with psycopg.connect(database.url) as db:
        rows = db.execute("SELECT count(*) FROM sentiment_aliases").fetchone()[0]
    assert rows == 1


def test_a_replica_with_its_jobs_there_too_starts_while_postgresql_is_down(tmp_path, database):
    """DATABASE_URL alone: the aliases and the job store both in PostgreSQL. Started while it is
    down, the app starts (no traceback), is not ready, and answers a job 503; once it is back,
    ready, and the job store is made at first use."""
    database.stop()
    try:
        client = make_app(tmp_path, database, JOB_STORE_URL="")
        assert client.get("/ready").status_code == 503
        assert served(client) == DEFAULT  # predictions need neither
        job = client.post("/api/v1/jobs", headers=USER, json={"1": "fine"})
        assert job.status_code == 503 and job.headers["Retry-After"] == "5", job.json
        assert "job store cannot be reached" in job.json["detail"]
    finally:
        database.start()
    try:
        until(lambda: client.get("/ready").status_code == 200, 10, "ready once it is back")
    except AssertionError:
        raise AssertionError(client.get("/ready").json) from None
    job = client.post("/api/v1/jobs", headers=USER, json={"1": "fine"})
    assert job.status_code == 202, job.json
    client.application.extensions["jobs_store"].engine.dispose()  # its pool's connections
