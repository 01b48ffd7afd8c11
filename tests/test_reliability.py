"""Reliability: arbitrary input in-process, the OpenAPI spec, and the real server under attack.

The in-process parts are quick; the real-server parts (marked slow) run `make api-start`, and
their figures are printed at the end of the run (the README's Reliability table quotes them).
"""

import collections
import http.client
import json
import os
import signal
import socket
import ssl
import tempfile
import threading
import time
from pathlib import Path

import pytest
import schemathesis
from conftest import ADMIN_TOKEN, TOKEN, make_child, reporter, running_server, wait_for_workers
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

import api

ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = json.loads((ROOT / "payload.json").read_text())
PREDICT = f"/api/v1/{TOKEN}/predict"
DOCUMENTED = {200, 400, 413, 415, 422}
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# Property-based: whatever the body, a documented status and the error shape, never a 5xx.


def check_answer(response, ids=None):
    assert response.status_code in DOCUMENTED, response.get_data(as_text=True)[:300]
    assert response.content_type == "application/json"
    body = response.json
    if response.status_code == 200:
        assert ids is None or list(body) == ids
        assert all(label in ("Positive", "Negative") for label in body.values())
    else:
        assert set(body) == {"error", "text", "detail"}
        assert body["error"] == response.status_code and body["detail"]


json_documents = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(), inner, max_size=5),
    max_leaves=30,
)


@FAST
@given(document=json_documents)
def test_any_json_document(app, document):
    response = app.test_client().post(PREDICT, json=document)
    check_answer(response)


@FAST
@given(body=st.binary(max_size=300))
def test_any_bytes(app, body):
    client = app.test_client()
    check_answer(client.post(PREDICT, data=body, content_type="application/json"))


@FAST
@given(tweets=st.dictionaries(st.text(), st.text(), min_size=1, max_size=60))
def test_any_strings(app, tweets):
    response = app.test_client().post(PREDICT, json=tweets)
    check_answer(response, ids=list(tweets))
    too_long = any(len(t) > 280 for t in tweets.values())
    assert response.status_code == (413 if len(tweets) > 50 else 422 if too_long else 200)


@FAST
@given(depth=st.integers(1, 20_000), opener=st.sampled_from(["[", '{"a":']))
def test_any_nesting(app, depth, opener):
    closer = "]" if opener == "[" else "}"
    body = '{"x": ' + opener * depth + "1" + closer * depth + "}"
    response = app.test_client().post(PREDICT, data=body, content_type="application/json")
    check_answer(response)
    assert response.status_code in (400, 413, 422)


@FAST
@given(
    content_type=st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=40),
    method=st.sampled_from(["GET", "PUT", "DELETE", "POST"]),
)
def test_any_method_and_content_type(app, content_type, method):
    response = app.test_client().open(
        PREDICT, method=method, data='{"1": "ok"}', headers={"Content-Type": content_type}
    )
    assert response.status_code in (200, 405, 415, 400)
    assert set(response.json) <= {"1", "error", "text", "detail"}


# Schemathesis: every response of the app in-process matches openapi.json.

# Its jobs stay queued (no worker takes them): no cap on how many a token has, so that every
# example is checked for what it is, not refused for the ones before it.
SPEC_APP = api.create_app(
    {
        "API_TOKEN": TOKEN,
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "ALIASES_FILE": str(Path(tempfile.mkdtemp()) / "aliases.json"),
        "MAX_TWEETS": 50,
        "MAX_TWEET_CHARS": 280,
        "JOBS_DIR": tempfile.mkdtemp(),
        "JOB_MAX_ACTIVE": 1_000_000,
        # Its examples send wrong tokens by the hundred, all from one address: no 429 for them.
        "AUTH_FAILURES": 1_000_000,
    }
)
# Data the schema forbids must be refused: with any 4xx the spec documents, 413 included (more
# tweets than maxProperties), which schemathesis does not count by default.
REFUSALS = [400, 401, 404, 405, 413, 415, 422]
CONFIG = schemathesis.config.SchemathesisConfig.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": REFUSALS}}}
)
# The websocket's upgrade is not an HTTP exchange: tests/test_websocket.py covers it for real.
schema = schemathesis.openapi.from_wsgi("/openapi.json", SPEC_APP, config=CONFIG).exclude(
    path="/api/v1/ws"
)


@schema.parametrize()
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_response_matches_the_spec(case):
    if "token" in case.path_parameters:
        case.path_parameters["token"] = TOKEN
    # A CSV body is a string to JSON Schema: that any string is valid CSV of tweets cannot be
    # said there, so only its responses are checked (tests/test_jobs.py has the CSV rules).
    # Nor can it say that a V2 request's shape must count its data, or that "binary_data_size"
    # must be the bytes after the JSON (tests/test_v2.py has those rules).
    unsayable = case.media_type == "text/csv" or case.path.endswith("/infer")
    excluded = [positive_data_acceptance] if unsayable else []
    # The routes that move aliases take the admin token (a prediction token's 403 is tested in
    # tests/test_aliases.py): here, what they answer to any body.
    moves = case.path.startswith("/api/v1/aliases/")
    token = ADMIN_TOKEN if moves else TOKEN
    case.call_and_validate(headers={"Authorization": f"Bearer {token}"}, excluded_checks=excluded)


# The real server under load and attack.


class Load:
    """Clients POSTing payload.json until stopped; each has at most one request in flight."""

    def __init__(self, port, token, clients=6, fresh=False):
        self.port, self.path, self.fresh = port, f"/api/v1/{token}/predict", fresh
        self.context = ssl.create_default_context()
        self.context.check_hostname, self.context.verify_mode = False, ssl.CERT_NONE
        self.body = json.dumps(PAYLOAD)
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.ok, self.failed, self.latencies = 0, collections.Counter(), []
        self.threads = [threading.Thread(target=self.client) for _ in range(clients)]

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        for thread in self.threads:
            thread.join()

    def client(self):
        headers = {"Content-Type": "application/json"}
        connection = None
        while not self.stopping.is_set():
            try:
                if connection is None:
                    connection = http.client.HTTPSConnection(
                        "127.0.0.1", self.port, context=self.context, timeout=10
                    )
                started = time.perf_counter()
                connection.request("POST", self.path, self.body, headers)
                response = connection.getresponse()
                answer = response.read()
                seconds = time.perf_counter() - started
                good = response.status == 200 and list(json.loads(answer)) == list(PAYLOAD)
                with self.lock:
                    self.latencies.append(seconds)
                    if good:
                        self.ok += 1
                    else:
                        self.failed[f"status {response.status}"] += 1
                if self.fresh or response.will_close:
                    connection.close()
                    connection = None
            except (OSError, http.client.HTTPException) as e:
                with self.lock:
                    self.failed[type(e).__name__] += 1
                if connection is not None:
                    connection.close()
                connection = None
        if connection is not None:
            connection.close()

    def summary(self):
        latencies = sorted(self.latencies) or [0]
        return {
            "sent": self.ok + sum(self.failed.values()),
            "ok": self.ok,
            "failed": dict(self.failed),
            "p50_ms": round(latencies[len(latencies) // 2] * 1000, 1),
            "p99_ms": round(latencies[int(len(latencies) * 0.99)] * 1000, 1),
            "max_ms": round(latencies[-1] * 1000, 1),
        }


report = reporter("")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("reliability")
    (folder / ".api_token").write_text("first-token\n")
    (folder / ".api_token").chmod(0o600)
    with running_server(folder) as started:
        yield started


def https_status(port, path, token_header=None, timeout=5):
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if token_header:
        headers["Authorization"] = f"Bearer {token_header}"
    body = json.dumps(PAYLOAD) if "predict" in path else None
    try:
        connection.request("POST" if body else "GET", path, body, headers)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


@pytest.mark.slow
def test_metrics_add_up_across_workers(server):
    def predicted():
        status, text = https_status(server["port"], "/metrics", token_header="first-token")
        assert status == 200
        wanted = 'api_requests_total{method="POST",route="/api/v1/<token>/predict",status="200"} '
        for line in text.decode().splitlines():
            if line.startswith(wanted):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    before = predicted()
    for _ in range(40):  # a fresh connection each: both workers answer some
        assert https_status(server["port"], "/api/v1/first-token/predict")[0] == 200
    # The scraped worker's own requests are counted to the moment, the other's within
    # METRICS_FLUSH_MS (100 ms; CI at a933e6f scraped inside it and saw 39): wait 20 times that.
    sent = time.monotonic()
    while (seen := predicted()) < before + 40 and time.monotonic() - sent < 2:
        time.sleep(0.02)
    report(
        "metrics across workers",
        {"seen": seen - before, "sent": 40, "seconds": round(time.monotonic() - sent, 3)},
    )
    assert seen == before + 40


@pytest.mark.slow
@pytest.mark.parametrize("fresh", [False, True], ids=["keep-alive", "connection-per-request"])
def test_hup_under_load_fails_no_request_and_rotates_the_token(server, fresh):
    master = make_child(server)
    old_workers = wait_for_workers(master, 2)
    token_file = server["folder"] / ".api_token"
    with Load(server["port"], "first-token", clients=6, fresh=fresh) as load:
        time.sleep(2)
        token_file.write_text("first-token,second-token\n")
        os.kill(master, signal.SIGHUP)
        time.sleep(4)
    figures = load.summary()
    report(f"HUP under load ({'fresh connections' if fresh else 'keep-alive'})", figures)
    assert figures["failed"] == {}, figures
    assert figures["ok"] > 200
    new_workers = wait_for_workers(master, 2, exclude=old_workers)
    assert not set(new_workers) & set(old_workers)
    assert https_status(server["port"], "/api/v1/second-token/predict")[0] == 200
    token_file.write_text("first-token\n")
    os.kill(master, signal.SIGHUP)
    wait_for_workers(master, 2, exclude=new_workers)
    assert https_status(server["port"], "/api/v1/second-token/predict")[0] == 404


@pytest.mark.slow
def test_a_killed_worker_is_replaced_and_loses_at_most_its_requests_in_flight(server):
    master = make_child(server)
    before = wait_for_workers(master, 2)
    clients = 6
    with Load(server["port"], "first-token", clients=clients) as load:
        time.sleep(1.5)
        os.kill(before[0], signal.SIGKILL)
        time.sleep(3)
    figures = load.summary()
    after = wait_for_workers(master, 2, exclude=[before[0]])
    figures["workers_before"], figures["workers_after"] = before, after
    report("SIGKILL of a worker under load", figures)
    assert before[0] not in after and before[1] in after
    assert sum(figures["failed"].values()) <= clients, figures
    assert figures["ok"] > 200


class SlowClients:
    """Connections that send a request's headers one byte at a time, reconnecting when cut."""

    REQUEST = b"POST /api/v1/x/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"

    def __init__(self, port, count):
        self.port, self.count = port, count
        self.context = ssl.create_default_context()
        self.context.check_hostname, self.context.verify_mode = False, ssl.CERT_NONE
        self.stopping = threading.Event()
        self.connected = 0
        self.thread = threading.Thread(target=self.run)

    def connect(self):
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self.connected += 1
        return [self.context.wrap_socket(raw), 0]

    def run(self):
        sockets = [self.connect() for _ in range(self.count)]
        self.ready.set()
        while not self.stopping.is_set():
            for entry in sockets:
                try:
                    entry[0].send(self.REQUEST[entry[1] % len(self.REQUEST) :][:1])
                    entry[1] += 1
                except OSError:
                    entry[0].close()
                    entry[:] = self.connect()
            time.sleep(0.2)
        for entry in sockets:
            entry[0].close()

    def __enter__(self):
        self.ready = threading.Event()
        self.thread.start()
        assert self.ready.wait(60), "the slow clients could not connect"
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join()


@pytest.mark.slow
def test_slow_clients_do_not_keep_a_normal_client_waiting(server):
    latencies = []
    with SlowClients(server["port"], 200) as slow:
        time.sleep(1)
        for _ in range(20):
            started = time.perf_counter()
            status, _ = https_status(server["port"], "/api/v1/first-token/predict", timeout=10)
            latencies.append(time.perf_counter() - started)
            assert status == 200
            time.sleep(0.25)
    figures = {
        "slow_connections": slow.count,
        "slow_connects_total": slow.connected,
        "normal_requests": len(latencies),
        "normal_max_ms": round(max(latencies) * 1000, 1),
        "normal_median_ms": round(sorted(latencies)[len(latencies) // 2] * 1000, 1),
    }
    report("200 slow clients", figures)
    assert max(latencies) < 1.0, figures


@pytest.mark.slow
def test_server_output_never_holds_a_token_or_a_tweet(server):
    output = server["log"].read_text()
    assert '"route": "/api/v1/<token>/predict"' in output
    for secret in ("first-token", "second-token", *PAYLOAD.values()):
        assert secret not in output


@pytest.mark.slow
def test_term_finishes_the_request_in_flight_and_exits(server):
    big = json.dumps({str(i): f"tweet {i}: what a lovely day" for i in range(10_000)})
    answer = {}

    def send():
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        connection = http.client.HTTPSConnection("127.0.0.1", server["port"], context=context)
        connection.request(
            "POST", "/api/v1/first-token/predict", big, {"Content-Type": "application/json"}
        )
        response = connection.getresponse()
        answer["status"], answer["tweets"] = response.status, len(json.loads(response.read()))
        connection.close()

    sender = threading.Thread(target=send)
    sender.start()
    time.sleep(0.05)
    master = make_child(server)
    started = time.monotonic()
    os.kill(master, signal.SIGTERM)
    sender.join(15)
    server["process"].wait(15)
    figures = {"seconds_to_exit": round(time.monotonic() - started, 2), **answer}
    report("SIGTERM with a 10,000-tweet request in flight", figures)
    assert answer == {"status": 200, "tweets": 10_000}
    assert server["process"].returncode == 0
