"""A model's life on the real server (`make api-start`, 2 workers): candidate, promotion, rollback.

Load through a forced promotion and a rollback, on REST's kept-alive connections and on
websockets: no request fails, every answer is the old or the new stable's, and 5 s after a change
only the new stable answers, on both workers. The guard refusing a poor candidate on real traffic,
the canary's share, aliases surviving a restart, and the Makefile's targets. The in-process rules
of each route are tests/test_aliases.py's. Figures are printed at the end of the run.
"""

import collections
import contextlib
import csv
import http.client
import json
import os
import random
import ssl
import subprocess
import threading
import time
from pathlib import Path

import pytest
import websocket
from conftest import (
    ROOT,
    TOKEN,
    evidence,
    guard_refusal,
    make_child,
    reporter,
    running_server,
    stop,
    wait_for_workers,
)

import aliases

pytestmark = pytest.mark.slow
LARGE, SMALL, OLD = "tweet-sentiment-large", "tweet-sentiment", "tweet-sentiment-2020"
PAYLOAD = json.loads((ROOT / "payload.json").read_text())
BODY = json.dumps(PAYLOAD)
PREDICT = f"/api/v1/{TOKEN}/predict"
SETTLE = 5  # seconds after a change from which only the new stable may answer
REFRESH = aliases.REFRESH_SECONDS + 0.5  # every worker has looked at the file again by then
MIN_PAIRS = 200  # the module server's PROMOTE_MIN_PAIRS


report = reporter("")


def tls_context(folder):
    return ssl.create_default_context(cafile=str(folder / "server.crt"))


def start(folder, **env):
    """running_server with the test's prediction token; the admin token is the file make made."""
    return running_server(folder, API_TOKEN=TOKEN, **env)


def prepare(started):
    started["admin"] = (started["folder"] / ".admin_token").read_text().strip()
    started["context"] = tls_context(started["folder"])
    started["master"] = make_child(started)
    return started


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # No worker is replaced by MAX_REQUESTS meanwhile (a test asserts none is): on a fast machine
    # a worker passed the default's 50,000 within the module, and closed a connection for it.
    folder = tmp_path_factory.mktemp("lifecycle")
    with start(folder, PROMOTE_MIN_PAIRS=str(MIN_PAIRS), MAX_REQUESTS="10000000") as started:
        yield prepare(started)


def call(server, method, path, body=None, token=TOKEN, headers=None):
    """One request on a fresh connection: (status, raw body, headers)."""
    connection = http.client.HTTPSConnection(
        "127.0.0.1", server["port"], context=server["context"], timeout=30
    )
    sent = {"Content-Type": "application/json", **(headers or {})}
    if token:
        sent["Authorization"] = f"Bearer {token}"
    data = body if body is None or isinstance(body, str) else json.dumps(body)
    try:
        connection.request(method, path, data, sent)
        response = connection.getresponse()
        return response.status, response.read(), response.headers
    finally:
        connection.close()


def admin(server, method, path, body=None, status=200):
    """An admin change of the aliases; the state it answers."""
    got, data, _ = call(server, method, f"/api/v1/aliases{path}", body, token=server["admin"])
    assert got == status, data
    return json.loads(data)


def state(server):
    status, data, _ = call(server, "GET", "/api/v1/aliases")
    assert status == 200, data
    return json.loads(data)


def reset(server):
    """Back to stable large with no candidate; wait until every worker has seen it."""
    current = state(server)
    changed = False
    if current["stable"]["model"] != LARGE:
        if (current["previous"] or {}).get("model") == LARGE:
            current = admin(server, "POST", "/rollback")
        else:
            admin(server, "PUT", "/candidate", {"model": LARGE, "shadow_percent": 0})
            current = admin(server, "POST", "/promote", {"force": True})
        changed = True
    if current["candidate"] is not None:
        current = admin(server, "DELETE", "/candidate")
        changed = True
    assert current["stable"]["model"] == LARGE and current["candidate"] is None, current
    if changed:
        time.sleep(REFRESH)


@pytest.fixture
def fresh(server):
    reset(server)
    yield server
    reset(server)


def answers(server):
    """Each model's exact answer to payload.json, labels and scores, from its own route, and its
    version: {"versions": {name: version}, (name, scored): body bytes}."""
    expected = {"versions": {}}
    for name in (LARGE, SMALL):
        for scored in (False, True):
            query = "?scores=true" if scored else ""
            route = f"/api/v1/models/{name}/predict{query}"
            status, data, headers = call(server, "POST", route, BODY)
            assert status == 200 and headers["X-Model-Name"] == name, data
            expected[(name, scored)] = data
            expected["versions"][name] = headers["X-Model-Version"]
    assert json.loads(expected[(LARGE, True)]) != json.loads(expected[(SMALL, True)])
    return expected


# Which worker serves a connection: the server's end of it in /proc/net/tcp, and the worker that
# holds that socket.


def worker_of(client_port, server):
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                local, remote = (int(a.rsplit(":", 1)[1], 16) for a in fields[1:3])
                if local == server["port"] and remote == client_port:
                    inodes.add(f"socket:[{fields[9]}]")
    for pid in wait_for_workers(server["master"], 2):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) in inodes:
                    return pid
    return None


def spread(server, connect, count):
    """`count` connections, half on each worker: opened a few at a time, concurrently (one after
    the other, the same worker takes them all), each asked once so that a worker has it; the
    extra ones closed. Returns [(connection, pid)]."""
    workers = wait_for_workers(server["master"], 2)
    kept = {pid: [] for pid in workers}
    for _ in range(20):
        opened = []
        threads = [
            threading.Thread(target=opened_into, args=(opened, connect)) for _ in range(count)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for connection, port in opened:
            pid = worker_of(port, server)
            if pid in kept and len(kept[pid]) < count // 2:
                kept[pid].append((connection, pid))
            else:
                connection.close()
        if all(len(v) == count // 2 for v in kept.values()):
            return [c for pid in workers for c in kept[pid]]
    raise AssertionError(f"could not open {count // 2} connections on each worker: {kept}")


def opened_into(opened, connect):
    opened.append(connect())


def rest_connection(server):
    def connect():
        connection = http.client.HTTPSConnection(
            "127.0.0.1", server["port"], context=server["context"], timeout=30
        )
        connection.request("POST", PREDICT, BODY, {"Content-Type": "application/json"})
        response = connection.getresponse()
        response.read()
        assert response.status == 200
        return connection, connection.sock.getsockname()[1]

    return connect


def ws_connection(server):
    def connect():
        ws = websocket.create_connection(
            f"wss://127.0.0.1:{server['port']}/api/v1/ws",
            sslopt={"ca_certs": str(server["folder"] / "server.crt")},
            header=[f"Authorization: Bearer {TOKEN}"],
            timeout=30,
        )
        ws.send(json.dumps({"type": "prediction_request", "request_id": "0", "tweets": PAYLOAD}))
        assert json.loads(ws.recv())["type"] == "prediction_response"
        return ws, ws.sock.getsockname()[1]

    return connect


class Traffic:
    """Clients asking on their connections until stopped, one request in flight each; every
    answer recorded: (client, pid, started, finished, model, version, body, scored)."""

    def __init__(self, connections, ask):
        self.connections, self.ask = connections, ask
        self.stopping, self.lock = threading.Event(), threading.Lock()
        self.records, self.failures = [], []
        self.threads = [
            threading.Thread(target=self.client, args=(i,)) for i in range(len(connections))
        ]

    def __enter__(self):
        self.began = time.monotonic()
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        for thread in self.threads:
            thread.join(60)
        for connection, _ in self.connections:
            with contextlib.suppress(Exception):
                connection.close()

    def client(self, i):
        connection, pid = self.connections[i]
        scored = i % 2 == 1  # half the clients ask for scores too, which tell the models apart
        n = 0
        while not self.stopping.is_set():
            n += 1
            started = time.monotonic()
            try:
                problem, answered = self.ask(connection, scored, f"c{i}-{n}")
            except Exception as e:  # a connection error: counted, and the test fails
                problem, answered = repr(e), None
            finished = time.monotonic()
            with self.lock:
                if problem:
                    self.failures.append((i, finished, problem))
                else:
                    self.records.append((i, pid, started, finished, *answered, scored))
            if problem:
                return  # a client stops at its first failure; the test reports it


def ask_rest(connection, scored, _request_id):
    connection.request(
        "POST",
        PREDICT + ("?scores=true" if scored else ""),
        BODY,
        {"Content-Type": "application/json"},
    )
    response = connection.getresponse()
    data = response.read()
    if response.status != 200 or response.will_close:
        return f"status {response.status}, will_close {response.will_close}: {data[:200]}", None
    return None, (response.headers["X-Model-Name"], response.headers["X-Model-Version"], data)


def ask_ws(ws, scored, request_id):
    message = {"type": "prediction_request", "request_id": request_id, "tweets": PAYLOAD}
    if scored:
        message["scores"] = True
    ws.send(json.dumps(message))
    reply = json.loads(ws.recv())
    if reply.get("type") != "prediction_response" or reply.get("request_id") != request_id:
        return f"reply {json.dumps(reply)[:300]}", None
    return None, (reply["model"], reply["model_version"], reply["predictions"])


def through_a_promotion_and_a_rollback(server, traffic):
    """Candidate set (shadowed), a forced promotion, a rollback; the times of each change."""
    changes = {}

    def change(name, method, path, body=None):
        sent = time.monotonic()
        moved = admin(server, method, path, body)
        changes[name] = (sent, time.monotonic())
        return moved

    with traffic:
        time.sleep(2)
        change("candidate", "PUT", "/candidate", {"model": SMALL})
        time.sleep(3)
        promoted = change("promote", "POST", "/promote", {"force": True})
        assert promoted["stable"]["model"] == SMALL and promoted["previous"]["model"] == LARGE
        time.sleep(SETTLE + 3)
        rolled = change("rollback", "POST", "/rollback")
        assert rolled["stable"]["model"] == LARGE and rolled["previous"]["model"] == SMALL
        time.sleep(SETTLE + 3)
        changes["end"] = (time.monotonic(),) * 2
    return changes


def check_lifecycle(name, server, traffic, changes, same_answer):
    """Every answer the old or the new stable's, matching the model it names; 5 s after each
    change only the new stable, on both workers. Reports the figures."""
    records, workers = traffic.records, set(wait_for_workers(server["master"], 2))
    candidate_sent, candidate_done = changes["candidate"]
    promote_sent, promote_done = changes["promote"]
    rollback_sent, rollback_done = changes["rollback"]
    end = changes["end"][0]
    figures = {
        "requests": len(records) + len(traffic.failures),
        "failed": len(traffic.failures),
        "clients": len(traffic.connections),
        "answered_by": dict(collections.Counter(r[4] for r in records)),
    }
    assert traffic.failures == [], traffic.failures[:5]
    wrong = [r[:6] for r in records if not same_answer(r)]
    assert wrong == [], f"{len(wrong)} answers are not their model's: {wrong[:5]}"
    # Until the promotion, candidate or not, only stable answers.
    before = collections.Counter(r[4] for r in records if r[3] <= promote_sent)
    assert set(before) == {LARGE}, f"before the promotion: {dict(before)}"
    phases = {  # name: (from, to, the only model that may answer)
        "stable alone": (traffic.began, candidate_sent, LARGE),
        "candidate shadowed": (candidate_done + REFRESH, promote_sent, LARGE),
        "5 s after the promotion": (promote_done + SETTLE, rollback_sent, SMALL),
        "5 s after the rollback": (rollback_done + SETTLE, end, LARGE),
    }
    for phase, (begin, until, stable) in phases.items():
        inside = [r for r in records if r[2] >= begin and r[3] <= until]
        models = collections.Counter(r[4] for r in inside)
        served = collections.Counter(r[1] for r in inside)
        figures[phase] = {
            "requests": len(inside),
            "per_s": round(len(inside) / (until - begin)),
            "by_worker": sorted(served.values()),
        }
        assert set(models) == {stable}, f"{phase}: {dict(models)}"
        assert set(served) == workers, f"{phase}: answered by workers {dict(served)} of {workers}"
        assert len(inside) >= 100, f"{phase}: only {len(inside)} requests"
    # How long the old stable went on answering after a change was answered (the other worker
    # reads the file again within REFRESH_SECONDS).
    for change, old, until in (("promote", LARGE, rollback_sent), ("rollback", SMALL, end)):
        done = changes[change][1]
        late = [r[3] - done for r in records if done < r[3] <= until and r[4] == old]
        figures[f"old_answers_after_{change}"] = len(late)
        figures[f"last_old_answer_after_{change}_s"] = round(max(late, default=0), 3)
    report(name, figures)


def test_rest_keeps_answering_through_a_promotion_and_a_rollback(fresh):
    server = fresh
    expected = answers(server)
    versions = expected["versions"]
    before = wait_for_workers(server["master"], 2)
    connections = spread(server, rest_connection(server), 6)
    traffic = Traffic(connections, ask_rest)
    changes = through_a_promotion_and_a_rollback(server, traffic)

    def same_answer(record):
        _, _, _, _, model, version, body, scored = record
        return (
            model in (LARGE, SMALL)
            and version == versions[model]
            and (body == expected[(model, scored)])
        )

    check_lifecycle(
        "REST through a promotion and a rollback", server, traffic, changes, same_answer
    )
    assert wait_for_workers(server["master"], 2) == before  # no worker was lost or replaced


def test_websockets_keep_answering_through_a_promotion_and_a_rollback(fresh):
    server = fresh
    expected = answers(server)
    versions = expected["versions"]
    connections = spread(server, ws_connection(server), 4)
    traffic = Traffic(connections, ask_ws)
    changes = through_a_promotion_and_a_rollback(server, traffic)

    def same_answer(record):
        _, _, _, _, model, version, predictions, scored = record
        return (
            model in (LARGE, SMALL)
            and version == versions[model]
            and (predictions == json.loads(expected[(model, scored)]))
        )

    check_lifecycle(
        "websockets through a promotion and a rollback", server, traffic, changes, same_answer
    )


def test_only_the_admin_token_moves_aliases_on_the_real_server(fresh):
    server = fresh
    body = {"model": SMALL}
    assert call(server, "PUT", "/api/v1/aliases/candidate", body, token=None)[0] == 401
    status, data, _ = call(server, "PUT", "/api/v1/aliases/candidate", body)
    assert status == 403 and "admin token" in json.loads(data)["detail"]
    assert call(server, "POST", "/api/v1/aliases/promote", token=None)[0] == 401
    assert call(server, "POST", "/api/v1/aliases/rollback")[0] == 403
    assert call(server, "GET", "/api/v1/aliases", token=None)[0] == 401
    assert call(server, "GET", "/api/v1/aliases", token=server["admin"])[0] == 200
    assert call(server, "POST", f"/api/v1/{server['admin']}/predict", BODY, token=None)[0] == 404
    assert state(server)["candidate"] is None


# The guard, on traffic: the seed's tweets, scored by stable with the candidate beside it.


@pytest.fixture(scope="module")
def tweets(data_path):
    """400 of the seed's tweets, as 4 batches of 100."""
    with open(data_path, newline="", encoding="utf-8") as f:
        rows = [row["text"] for _, row in zip(range(400), csv.DictReader(f), strict=False)]
    return [{str(i): t for i, t in enumerate(rows[b : b + 100], b)} for b in range(0, 400, 100)]


def labels(server, route, batches):
    result = []
    for batch in batches:
        status, data, headers = call(server, "POST", route, batch)
        assert status == 200, data
        result.extend(json.loads(data).values())
    return result, headers


def settled_shadow(server, pairs):
    """The shadow figures once every worker has written out its counts (within 2 s)."""
    deadline = time.monotonic() + 10
    while (shadow := state(server)["shadow"])["pairs"] < pairs and time.monotonic() < deadline:
        time.sleep(0.25)
    return shadow


def test_the_guard_judges_on_labelled_tweets_then_on_distinct_live_ones(fresh, tweets):
    server = fresh
    # The 2020 model: refused on the labelled reference set before any traffic, both figures
    # named.
    admin(server, "PUT", "/candidate", {"model": OLD})
    time.sleep(REFRESH)
    refused = admin(server, "POST", "/promote", status=409)
    labelled = state(server)["labelled"]
    ours, theirs = labelled["stable"], labelled["candidate"]
    report("the guard: the 2020 model against large on the labelled reference set", labelled)
    assert "labelled tweets of the reference set" in refused["detail"], refused
    for figure in (theirs["balanced_accuracy"], ours["balanced_accuracy"]):
        assert f"{figure:.4f}" in refused["detail"], refused
    assert call(server, "POST", PREDICT, BODY)[2]["X-Model-Name"] == LARGE

    # tweet-sentiment, as good as large on the labels: promoted once PROMOTE_MIN_PAIRS distinct
    # tweets of live traffic, summed over both workers, agree often enough.
    texts = [t for batch in tweets for t in batch.values()]
    expected = evidence(LARGE, SMALL, texts)
    pairs = expected["pairs"]
    assert pairs >= MIN_PAIRS
    admin(server, "DELETE", "/candidate")
    admin(server, "PUT", "/candidate", {"model": SMALL})
    time.sleep(REFRESH)  # both workers shadow it
    early = admin(server, "POST", "/promote", status=409)
    assert (
        f"0 distinct shadowed tweets, fewer than PROMOTE_MIN_PAIRS ({MIN_PAIRS})" in early["detail"]
    ), early
    _, headers = labels(server, PREDICT, tweets)  # 4 batches of 100, over both workers
    assert headers["X-Model-Name"] == LARGE
    shadow = settled_shadow(server, pairs)
    report("the guard: tweet-sentiment's live evidence", shadow)
    assert (shadow["pairs"], shadow["agreeing"]) == (pairs, expected["agreeing"]), shadow
    assert state(server)["guard"] == {"promotable": True, "reason": None}
    promoted = admin(server, "POST", "/promote")
    assert promoted["stable"]["model"] == SMALL and promoted["previous"]["model"] == LARGE
    assert promoted["candidate"] is None
    time.sleep(REFRESH)
    for _ in range(10):  # fresh connections: either worker
        assert call(server, "POST", PREDICT, BODY)[2]["X-Model-Name"] == SMALL


def test_a_canary_answers_its_share_and_the_same_request_id_the_same_model(fresh):
    server = fresh
    expected = answers(server)
    admin(server, "PUT", "/candidate", {"model": SMALL, "canary_percent": 20, "shadow_percent": 0})
    time.sleep(REFRESH)
    results, failures, lock = [], [], threading.Lock()

    def client(count, seed):
        ids = random.Random(seed)  # the same 2,000 ids every run: the share cannot flake
        connection = http.client.HTTPSConnection(
            "127.0.0.1", server["port"], context=server["context"], timeout=30
        )
        try:
            for _ in range(count):
                request_id = f"{ids.getrandbits(128):032x}"
                headers = {"Content-Type": "application/json", "X-Request-ID": request_id}
                connection.request("POST", PREDICT, BODY, headers)
                response = connection.getresponse()
                data = response.read()
                name = response.headers["X-Model-Name"]
                with lock:
                    if response.status != 200 or data != expected.get((name, False)):
                        failures.append((response.status, name, data[:200]))
                    results.append((request_id, name, response.headers["X-Request-ID"]))
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(500, seed)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert failures == [] and len(results) == 2000, failures[:5]
    assert all(sent == echoed for sent, _, echoed in results)
    canary = [r for r in results if r[1] == SMALL]
    share = len(canary) / len(results)
    report("a 20% canary", {"requests": len(results), "canary": len(canary), "share": share})
    assert 0.17 <= share <= 0.23, share
    # The share is the request id's hash: the same one routes each id.
    assert all((name == SMALL) == (aliases.canary_share(i) < 20) for i, name, _ in results)

    chosen = [r[:2] for r in canary[:10]] + [r[:2] for r in results if r[1] == LARGE][:10]
    ws = ws_connection(server)()[0]
    try:
        for request_id, name in chosen:
            for _ in range(4):  # fresh connections, on either worker
                headers = {"X-Request-ID": request_id}
                assert (
                    call(server, "POST", PREDICT, BODY, headers=headers)[2]["X-Model-Name"] == name
                ), request_id
            ws.send(
                json.dumps(
                    {"type": "prediction_request", "request_id": request_id, "tweets": PAYLOAD}
                )
            )
            assert json.loads(ws.recv())["model"] == name, request_id
    finally:
        ws.close()


def test_aliases_survive_a_restart(tmp_path):
    with start(tmp_path) as first:
        first = prepare(first)
        admin(first, "PUT", "/candidate", {"model": SMALL})
        promoted = admin(first, "POST", "/promote", {"force": True})
        assert promoted["stable"]["model"] == SMALL
        stop(first["process"])
        assert first["process"].poll() is not None
    stored = json.loads((tmp_path / "aliases.json").read_text())
    assert stored["stable"] == promoted["stable"] and stored["previous"] == promoted["previous"]
    with start(tmp_path) as second:
        second = prepare(second)
        again = state(second)
        assert again["stable"] == promoted["stable"], again
        assert again["previous"] == promoted["previous"] and again["candidate"] is None
        version = promoted["stable"]["version"]
        for _ in range(10):  # fresh connections: either worker
            status, _, headers = call(second, "POST", PREDICT, BODY)
            assert status == 200
            assert (headers["X-Model-Name"], headers["X-Model-Version"]) == (SMALL, version)
        ws = ws_connection(second)()[0]
        try:
            ws.send(
                json.dumps({"type": "prediction_request", "request_id": "1", "tweets": PAYLOAD})
            )
            assert json.loads(ws.recv())["model"] == SMALL
        finally:
            ws.close()
        listing = json.loads(call(second, "GET", "/api/v1/models")[1])["models"]
        assert [m["name"] for m in listing if m["default"]] == [SMALL]


def make(server, *args):
    """A Makefile target from a shell, as an operator on the server's machine runs it."""
    env = {k: v for k, v in os.environ.items() if k not in ("API_TOKEN", "ADMIN_TOKEN")}
    env.update(
        PORT=str(server["port"]),
        TLS_CERT=str(server["folder"] / "server.crt"),
        ADMIN_TOKEN_FILE=str(server["folder"] / ".admin_token"),
    )
    return subprocess.run(
        ["make", "--no-print-directory", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_make_candidate_promote_and_rollback_move_the_aliases(fresh):
    server = fresh
    outputs = []

    def run(*args):
        result = make(server, *args)
        outputs.append(result.stdout + result.stderr)
        return result

    usage = run("candidate")
    assert usage.returncode == 2 and "usage: make candidate MODEL=" in usage.stdout

    result = run("candidate", f"MODEL={SMALL}", "CANARY=5")
    assert result.returncode == 0, result.stdout + result.stderr
    shown = json.loads(result.stdout)
    # GET answers the view of the worker it reaches, which reads the file again within 1 s.
    time.sleep(REFRESH)
    assert shown == state(server) | {"shadow": shown["shadow"]}
    assert shown["candidate"]["model"] == SMALL and shown["canary_percent"] == 5
    assert shown["candidate"]["shadow_percent"] == 100

    # Too few pairs: the 409 is printed and the target fails.
    refused = run("promote")
    assert refused.returncode != 0
    answer = json.loads(refused.stdout)
    assert answer["error"] == 409, answer
    assert guard_refusal(f"fewer than PROMOTE_MIN_PAIRS ({MIN_PAIRS})") in answer["detail"]
    assert state(server)["stable"]["model"] == LARGE

    result = run("promote", "FORCE=1")
    assert result.returncode == 0, result.stdout + result.stderr
    promoted = json.loads(result.stdout)
    assert promoted["stable"]["model"] == SMALL and promoted["previous"]["model"] == LARGE
    time.sleep(REFRESH)
    assert state(server)["stable"]["model"] == SMALL
    assert call(server, "POST", PREDICT, BODY)[2]["X-Model-Name"] == SMALL

    result = run("rollback")
    assert result.returncode == 0, result.stdout + result.stderr
    rolled = json.loads(result.stdout)
    assert rolled["stable"]["model"] == LARGE and rolled["previous"]["model"] == SMALL
    time.sleep(REFRESH)
    assert state(server) == rolled
    assert call(server, "POST", PREDICT, BODY)[2]["X-Model-Name"] == LARGE

    again = run("rollback")  # and back: the rollback can be undone
    assert again.returncode == 0 and json.loads(again.stdout)["stable"]["model"] == SMALL

    time.sleep(0.5)  # the log is written
    for text in (*outputs, server["log"].read_text()):
        assert server["admin"] not in text
    assert server["admin"] != TOKEN and len(server["admin"]) == 64
