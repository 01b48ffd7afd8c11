"""Hostile input, round 2 (issue 37), items 5 to 11: job bodies, answers inside the memory budget,
the job store. Each is sent to the real server (make api-start with its job worker; ZeroRPC's
make rpc-start; RabbitMQ and PostgreSQL for the production store), with the memory of the
processes measured from /proc before, at the peak and after (test_hostile.Memory), and the
figures printed at the end of the run (conftest.FIGURES).
"""

import contextlib
import json
import random
import select
import socket
import ssl
import time
import uuid

import pytest
import sqlalchemy as sa
from conftest import TOKEN, job_workers, make_child, running_server, wait_for_workers
from test_hostile import (
    MB,
    Memory,
    call,
    json_error,
    measured,
    report,
    still_serving,
    tls,
)
from test_jobs import postgres, rabbitmq  # noqa: F401 (fixtures)

import model

pytestmark = pytest.mark.slow
OTHER, THIRD = "second-token-0123456789", "third-token-0123456789"
STORE_MAX, TOKEN_SHARE, JOBS_PER_TOKEN = 40_000_000, 20_000_000, 120
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile-jobs")
    with running_server(
        folder,
        API_TOKEN=f"{TOKEN},{OTHER},{THIRD}",
        JOB_STORE_MAX_CHARS=str(STORE_MAX),
        JOB_STORE_MAX_CHARS_PER_TOKEN=str(TOKEN_SHARE),
        JOB_MAX_PER_TOKEN=str(JOBS_PER_TOKEN),
        JOB_MAX_ACTIVE="200",
    ) as started:
        # /health answers once one worker is up; a test that compares the workers before and
        # after it must not count the second one arriving meanwhile as a replacement.
        wait_for_workers(make_child(started), 2)
        yield started


def words():
    """Words the models know: an explanation of a tweet made of them names every one."""
    known = model.default_model().ratios
    return [t for t in known if " " not in t and t.isalpha()][:3000]


def long_tweets(count, chars=5000, seed=0):
    """{id: text}: tweets of `chars` characters of known words, the most an explanation holds."""
    rng, vocabulary = random.Random(seed), words()
    return {f"t{i}": " ".join(rng.choices(vocabulary, k=chars // 3))[:chars] for i in range(count)}


def submit(server, body, content_type="application/json", query="", token=TOKEN):
    headers = {"Authorization": f"Bearer {token}", "Content-Type": content_type}
    status, _, answer = call(server, "POST", f"/api/v1/jobs{query}", body, headers, timeout=180)
    return status, json.loads(answer)


def wait_done(server, job_id, seconds=180, token=TOKEN):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        headers = {"Authorization": f"Bearer {token}"}
        _, _, body = call(server, "GET", f"/api/v1/jobs/{job_id}", headers=headers)
        state = json.loads(body)["status"]
        if state == "done":
            return
        assert state in ("queued", "running"), body
        time.sleep(0.3)
    raise AssertionError(f"job {job_id} not done within {seconds} s")


def store_engine(server):
    return sa.create_engine(
        f"sqlite:///{server['folder'] / 'jobs' / 'jobs.sqlite3'}", poolclass=sa.pool.NullPool
    )


def send_streamed(server, head, pieces, seconds=120):
    """Send a request's head, then its body piece by piece until the server answers (it may
    before the body is whole), then read the answer. Returns (status, body, seconds, bytes of
    the body sent)."""
    sock = tls(server, timeout=5)
    sent, started, answer = 0, time.monotonic(), b""
    with contextlib.suppress(OSError):  # the server may stop reading, or close, once it answers
        sock.sendall(head)
        for piece in pieces:
            if select.select([sock], [], [], 0)[0]:  # perhaps an answer, perhaps TLS's own
                sock.setblocking(False)
                with contextlib.suppress(ssl.SSLWantReadError):
                    answer += sock.recv(65536)
                sock.settimeout(5)
                if answer:
                    break
            sock.sendall(piece)
            sent += len(piece)
    sock.settimeout(seconds)
    with contextlib.suppress(OSError):
        while b"\r\n\r\n" not in answer or len(answer.partition(b"\r\n\r\n")[2]) < length(answer):
            chunk = sock.recv(65536)
            if not chunk:
                break
            answer += chunk
    seconds = time.monotonic() - started
    sock.close()
    head_bytes, _, body = answer.partition(b"\r\n\r\n")
    status = int(head_bytes.split()[1]) if head_bytes else None
    return status, body[: length(answer)], seconds, sent


def length(answer):
    for line in answer.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 1 << 40


def job_head(size, content_type="application/json", token=TOKEN):
    return (
        f"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {size}\r\n\r\n"
    ).encode()


def repeated(prefix, byte, size, suffix, piece=MB):
    """A body of prefix, `size` copies of byte, then suffix, made a piece at a time."""
    yield prefix
    for _ in range(size // piece):
        yield byte * piece
    yield byte * (size % piece) + suffix


# Item 5: one string or number of 120-130 MB in a JSON job.


@pytest.mark.parametrize(
    "what, prefix, byte, suffix, detail",
    [
        ("a 128 MB tweet", b'{"a": "', b"x", b'"}', "a string of more than"),
        ("a 120 MB id", b'{"', b"7", b'": "ok"}', "a string of more than"),
        ("a 64 MB number", b'{"a": ', b"1", b"}", "a number of more than"),
    ],
)
def test_5_a_huge_string_or_number_in_a_json_job_is_refused_as_it_streams(
    server, what, prefix, byte, suffix, detail
):
    size = {"a 128 MB tweet": 128 * MB, "a 120 MB id": 120 * MB, "a 64 MB number": 64 * MB}[what]
    head = job_head(len(prefix) + size + len(suffix))
    with measured(server) as memory:
        status, body, seconds, sent = send_streamed(
            server, head, repeated(prefix, byte, size, suffix)
        )
    figures = {
        "status": status,
        "seconds_to_answer": round(seconds, 2),
        "body_mb_sent_before_the_answer": round(sent / MB, 1),
        **memory.figures(),
        "after": still_serving(server),
    }
    report(f"37.5 jobs: {what} in a JSON job", figures)
    json_error(status, body, 422, detail)
    assert seconds < 10, figures
    memory.check(50, peak_bound_mb=50)


# Item 6: one CSV row of 120 M commas.


def test_6_a_wide_csv_row_is_refused_before_it_is_built(server):
    size = 120 * MB
    prefix, suffix = b"id,text\r\n1,", b"\r\n"
    head = job_head(len(prefix) + size + len(suffix), "text/csv")
    with measured(server) as memory:
        status, body, seconds, sent = send_streamed(
            server, head, repeated(prefix, b",", size, suffix)
        )
    figures = {
        "status": status,
        "seconds_to_answer": round(seconds, 2),
        "body_mb_sent_before_the_answer": round(sent / MB, 1),
        **memory.figures(),
        "after": still_serving(server),
    }
    report("37.6 jobs: a CSV row of 120 M commas", figures)
    json_error(status, body, 400, "a row of more than")
    assert seconds < 10, figures
    memory.check(50, peak_bound_mb=50)


# Item 7: explained answers on every door, inside the memory budget.


def post_json(server, path, tweets, token=TOKEN, timeout=120):
    body = json.dumps(tweets).encode()
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    return call(server, "POST", path, body, headers, timeout=timeout)


def test_7_rest_explained_answers_are_bounded(server):
    tweets = long_tweets(1000, chars=2000)
    body_mb = len(json.dumps(tweets)) / MB
    with measured(server) as memory:
        status, _, answer = post_json(server, "/api/v1/predict?explain=true", tweets)
    assert status == 200, answer[:300]
    explained = json.loads(answer)
    terms = max(len(a["explanation"][s]) for a in explained.values() for s in a["explanation"])
    many = {f"m{i}": "I love it" for i in range(5000)}
    status_many, _, refused = post_json(server, "/api/v1/predict?explain=true", many)
    figures = {
        "body_mb": round(body_mb, 1),
        "answer_mb": round(len(answer) / MB, 1),
        "most_terms_a_side": terms,
        "5000_explained_status": status_many,
        **memory.figures(),
        "after": still_serving(server),
    }
    report("37.7 REST: 1,000 explained 2,000-character tweets", figures)
    json_error(status_many, refused, 413, "at most 1000 tweets per request with explain")
    assert terms <= 10
    assert len(answer) < 2 * MB, figures
    memory.check(60, peak_bound_mb=60)


def test_7_websocket_explained_replies_left_unread_are_bounded(server):
    tweets = long_tweets(1000, chars=1000, seed=1)
    message = json.dumps(
        {"type": "prediction_request", "request_id": "r", "explain": True, "tweets": tweets}
    )
    import websocket

    url = f"wss://127.0.0.1:{server['port']}/api/v1/ws"
    sslopt = {"ca_certs": str(server["folder"] / "server.crt")}
    with measured(server) as memory:
        sockets = []
        for _ in range(4):  # each sends twice and reads nothing
            ws = websocket.create_connection(
                url,
                sslopt=sslopt,
                header=[f"Authorization: Bearer {TOKEN}"],
                timeout=30,
                sockopt=[(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)],
            )
            ws.send(message)
            ws.send(message)
            sockets.append(ws)
        time.sleep(15)  # the worker answers them, and holds what it cannot send
        for ws in sockets:
            ws.close()
    figures = {"sockets": 4, **memory.figures(), "after": still_serving(server)}
    report("37.7 websocket: 4 x 2 explained 1,000-tweet requests, replies unread", figures)
    memory.check(60, peak_bound_mb=100)


def test_7_zerorpc_explained_answers_are_bounded(tmp_path):
    import zerorpc
    from test_rpc import rpc_server

    tweets = long_tweets(1000, chars=2000, seed=2)
    with rpc_server(tmp_path) as started:
        client = zerorpc.Client(timeout=120, heartbeat=None)
        client.connect(started["address"])
        with Memory([make_child(started)]) as memory:
            answer = client.predict(tweets, {"explain": True})
            try:
                client.predict({f"m{i}": "I love it" for i in range(5000)}, {"explain": True})
                refused = "answered"
            except zerorpc.RemoteError as e:
                refused = e.name
        client.close()
    terms = max(len(a["explanation"][s]) for a in answer.values() for s in a["explanation"])
    figures = {"most_terms_a_side": terms, "5000_explained": refused, **memory.figures()}
    report("37.7 ZeroRPC: 1,000 explained 2,000-character tweets", figures)
    assert refused == "TooLarge"
    assert terms <= 10
    memory.check(60, peak_bound_mb=60)


def explained_job(server, count=10_000, token=TOKEN):
    tweets = long_tweets(count, chars=600, seed=3)
    status, answer = submit(server, json.dumps(tweets), query="?explain=true", token=token)
    assert status == 202, answer
    return answer["job_id"], tweets


def test_7_and_8_an_explained_job_and_20_held_downloads_are_bounded(server):
    warm_up, _ = explained_job(server, count=2000)  # the worker's models in its memory
    wait_done(server, warm_up)
    call(server, "DELETE", f"/api/v1/jobs/{warm_up}", headers=AUTH)
    workers_of_jobs = job_workers(server)
    with Memory(workers_of_jobs) as job_memory:
        job_id, tweets = explained_job(server)
        wait_done(server, job_id, seconds=300)
    try:
        downloads_are_bounded(server, job_id, tweets, job_memory)
    finally:
        call(server, "DELETE", f"/api/v1/jobs/{job_id}", headers=AUTH)


def downloads_are_bounded(server, job_id, tweets, job_memory):
    request = (
        f"GET /api/v1/jobs/{job_id}/result HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}"
        "\r\n\r\n"
    ).encode()
    with measured(server) as memory, contextlib.ExitStack() as held:
        for _ in range(20):
            sock = held.enter_context(tls(server, timeout=60, rcvbuf=4096))
            sock.sendall(request)
            assert sock.recv(2048).startswith(b"HTTP/1.1 200")
        time.sleep(5)  # the workers go on as far as the sockets let them, and hold the rest
    status, headers, whole = call(server, "GET", f"/api/v1/jobs/{job_id}/result", headers=AUTH)
    answers = json.loads(whole)
    figures = {
        "job_tweets": len(tweets),
        "result_mb": round(len(whole) / MB, 1),
        "job_worker": job_memory.figures(),
        "downloads_held": 20,
        **memory.figures(),
        "after": still_serving(server),
    }
    report("37.7 and 37.8 jobs: an explained 10,000-tweet job, 20 downloads held", figures)
    assert status == 200 and list(answers) == list(tweets)
    assert all(len(a["explanation"][s]) <= 10 for a in answers.values() for s in a["explanation"])
    job_memory.check(50, peak_bound_mb=50)
    memory.check(60, peak_bound_mb=80)


# Item 9: the store counts answers, and no token takes it whole.


def stored_chars(server):
    """The characters the store really holds: tweets, and answers however they are stored."""
    with store_engine(server).connect() as db:
        tables = set(sa.inspect(db).get_table_names())
        total = db.execute(
            sa.text(
                "SELECT COALESCE(SUM(LENGTH(tweets) + COALESCE(LENGTH(answers), 0)), 0) "
                "FROM sentiment_job_chunks"
            )
        ).scalar()
        if "sentiment_job_answers" in tables:
            total += db.execute(
                sa.text("SELECT COALESCE(SUM(LENGTH(answers)), 0) FROM sentiment_job_answers")
            ).scalar()
    return int(total)


def test_9_the_store_counts_answers_and_no_token_takes_it_whole(server):
    statuses = []
    for _ in range(6):  # explained: answers many times the tweets; the first token's share
        status, answer = submit(
            server, json.dumps(long_tweets(4000, chars=600, seed=9)), query="?explain=true"
        )
        statuses.append(status)
        if status == 202:
            wait_done(server, answer["job_id"], seconds=300)
        else:
            detail = answer["detail"]
            break
    held = stored_chars(server)
    other_status, other = submit(server, json.dumps({"o1": "I love it"}), token=OTHER)
    figures = {
        "first_token_statuses": statuses,
        "refusal": detail if statuses[-1] != 202 else None,
        "stored_chars": held,
        "store_max": STORE_MAX,
        "token_share": TOKEN_SHARE,
        "other_token_status": other_status,
    }
    report("37.9 jobs: explained jobs until a token's share is full", figures)
    assert statuses[-1] == 507 and "JOB_STORE_MAX_CHARS_PER_TOKEN" in detail, figures
    assert held <= STORE_MAX, figures
    assert other_status == 202, other
    wait_done(server, other["job_id"], token=OTHER)


# Item 10: consumed broker messages deleted; a limit on jobs per token.


def test_10_consumed_messages_are_deleted_and_jobs_per_token_are_capped(server):
    broker = sa.create_engine(
        f"sqlite:///{server['folder'] / 'jobs' / 'broker.sqlite3'}", poolclass=sa.pool.NullPool
    )
    statuses = {}
    for i in range(JOBS_PER_TOKEN + 5):
        status, answer = submit(server, json.dumps({f"x{i}": "I love it"}), token=THIRD)
        statuses[status] = statuses.get(status, 0) + 1
        if status == 429:
            refusal = answer["detail"]
    time.sleep(25)  # the jobs are done, and a sweep (every 10 s) has run
    with broker.connect() as db:
        hidden = db.execute(sa.text("SELECT COUNT(*) FROM kombu_message WHERE visible = 0"))
        hidden = hidden.scalar()
        messages = db.execute(sa.text("SELECT COUNT(*) FROM kombu_message")).scalar()
    figures = {
        "jobs_posted": JOBS_PER_TOKEN + 5,
        "statuses": statuses,
        "kombu_message_rows": messages,
        "hidden_rows": hidden,
        "after": still_serving(server),
    }
    report(f"37.10 jobs: {JOBS_PER_TOKEN + 5} one-tweet jobs of a token", figures)
    assert statuses == {202: JOBS_PER_TOKEN, 429: 5}, figures
    assert f"at most {JOBS_PER_TOKEN} jobs per token" in refusal
    assert hidden == 0, figures


# Item 11: the store's total kept as it goes, right across processes; embedded and PostgreSQL.


def usage_is_right(engine):
    """USAGE's total and owners' rows against what the store holds, once every job is done."""
    with engine.connect() as db:
        if "sentiment_job_usage" not in sa.inspect(db).get_table_names():  # before issue 37
            return None, None, None
        rows = dict(db.execute(sa.text("SELECT owner, chars FROM sentiment_job_usage")).all())
        real = db.execute(
            sa.text(
                "SELECT COALESCE(SUM(LENGTH(c.tweets)), 0) + COALESCE((SELECT "
                "SUM(LENGTH(a.answers)) FROM sentiment_job_answers a), 0) "
                "FROM sentiment_job_chunks c"
            )
        ).scalar()
    total = rows.pop("*")
    return total, sum(rows.values()), int(real)


def submission_seconds(server, count=10):
    times = []
    for i in range(count):
        started = time.monotonic()
        status, answer = submit(server, json.dumps({f"s{i}": "fine"}), token=OTHER)
        times.append(time.monotonic() - started)
        assert status == 202, answer
    return sorted(times)[count // 2]


def all_done(engine, seconds=120):
    """Wait until every chunk in the store is labelled: then each charge is what it holds."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with engine.connect() as db:
            left = db.execute(
                sa.text("SELECT COUNT(*) FROM sentiment_job_chunks WHERE NOT done")
            ).scalar()
        if left == 0:
            return
        time.sleep(0.5)
    raise AssertionError(f"{left} chunks still to label after {seconds} s")


def test_11_a_submission_does_not_scan_the_store_and_the_total_is_right(server):
    empty_ish = submission_seconds(server)
    for seed in range(2):  # about 8 M characters more in the store
        status, answer = submit(
            server, json.dumps(long_tweets(800, seed=seed)), token=OTHER, query="?scores=true"
        )
        assert status == 202, answer
        wait_done(server, answer["job_id"], token=OTHER)
    fuller = submission_seconds(server)
    all_done(store_engine(server))
    total, owners, real = usage_is_right(store_engine(server))
    figures = {
        "median_submission_ms_before_filling": round(empty_ish * 1000, 1),
        "median_submission_ms_after": round(fuller * 1000, 1),
        "usage_total": total,
        "usage_owners_sum": owners,
        "really_stored": real,
    }
    report("37.11 jobs: a submission's cost, and the total kept (embedded)", figures)
    assert total == owners == real, figures


def test_11_the_total_is_right_on_postgresql_with_two_workers(
    tmp_path,
    rabbitmq,  # noqa: F811 (test_jobs' fixtures)
    postgres,  # noqa: F811
):
    broker, engine = rabbitmq, postgres
    database = f"sentiment_test_{uuid.uuid4().hex[:12]}"
    with engine.connect() as db:
        db.execute(sa.text(f'CREATE DATABASE "{database}"'))
    url = engine.url.set(database=database).render_as_string(hide_password=False)
    env = {"BROKER_URL": broker, "JOB_STORE_URL": url, "JOB_WORKERS_WITH_API": "2"}
    try:
        with running_server(
            tmp_path, API_TOKEN=f"{TOKEN},{OTHER}", JOB_CHUNK_TWEETS="500", **env
        ) as started:
            ids = []
            for n, (token, query) in enumerate(
                [(TOKEN, "?explain=true"), (OTHER, ""), (TOKEN, "?scores=true"), (OTHER, "")]
            ):
                tweets = long_tweets(1500, chars=300, seed=n)
                status, answer = submit(started, json.dumps(tweets), query=query, token=token)
                assert status == 202, answer
                ids.append((answer["job_id"], token))
            cancelled, token = ids.pop()
            headers = {"Authorization": f"Bearer {token}"}
            call(started, "DELETE", f"/api/v1/jobs/{cancelled}", headers=headers)
            for job_id, token in ids:
                wait_done(started, job_id, token=token)
            store = sa.create_engine(url)
            try:
                all_done(store)
                total, owners, real = usage_is_right(store)
            finally:
                store.dispose()
        figures = {"usage_total": total, "usage_owners_sum": owners, "really_stored": real}
        report("37.11 jobs: the total kept (RabbitMQ + PostgreSQL, 2 workers)", figures)
        assert total == owners == real, figures
    finally:
        with engine.connect() as db:
            db.execute(sa.text(f'DROP DATABASE "{database}" WITH (FORCE)'))


def test_the_server_kept_serving_and_logged_no_token_and_no_traceback(server):
    text = server["log"].read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
    assert "WORKER TIMEOUT" not in text
    assert TOKEN not in text and OTHER not in text and THIRD not in text
    assert still_serving(server) == 200
