"""Several replicas for real (issue #34): three `make api-start`s, each in a folder of its own as a
pod would be, sharing one PostgreSQL (DATABASE_URL: the aliases, the guard's counts and the jobs)
and one RabbitMQ, behind Debian's HAProxy with health checks on /ready. Figures are printed at the
end of the run.
"""

import collections
import contextlib
import csv
import http.client
import json
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import threading
import time

import pytest
import test_docs
from conftest import (
    ROOT,
    TOKEN,
    absent,
    evidence,
    free_port,
    make_child,
    reporter,
    server_environment,
    start_make,
    stop,
    wait_for_health,
)
from postgres import postgres

pytestmark = pytest.mark.slow
ADMIN_TOKEN = "cluster-admin-token-0123456789"
LARGE, SMALL, OLD = "tweet-sentiment-large", "tweet-sentiment", "tweet-sentiment-2020"
PAYLOAD = (ROOT / "payload.json").read_text()
DRAIN_SECONDS = 2  # STOP_DRAIN_SECONDS: HAProxy's check takes a failing server out within 0.9 s
MIN_PAIRS = 400  # PROMOTE_MIN_PAIRS: more than any one replica is sent


report = reporter("cluster: ")


class Replica:
    """One `make api-start` in a folder of its own, started and stopped again on its port."""

    def __init__(self, folder, **env):
        self.folder, self.port = folder, free_port()
        folder.mkdir()
        self.environment = server_environment(folder, self.port, **env)
        self.process = None

    def start(self):
        self.process = start_make("api-start", self.environment, self.folder / "server.log")

    def wait(self):
        wait_for_health(f"https://127.0.0.1:{self.port}", self.folder / "server.crt", self.process)

    def terminate(self):
        """TERM to gunicorn's master, as `kill -TERM $(cat run/api-PORT.pid)`; wait for it."""
        os.kill(make_child({"process": self.process}), signal.SIGTERM)
        self.process.wait(timeout=60)

    def close(self):
        if self.process is not None:
            stop(self.process)


class HAProxy:
    """Debian's haproxy in front of the replicas: TLS in front, TLS to each, a health check of
    /ready every 300 ms (2 failures take a server out, 2 successes put it back)."""

    def __init__(self, folder, replicas):
        if not shutil.which("haproxy"):
            absent("haproxy is absent: apt-get install haproxy (.ci/run installs it)")
        self.port, self.folder = free_port(), folder
        pem = folder / "haproxy.pem"
        pem.write_bytes((folder / "server.crt").read_bytes() + (folder / "server.key").read_bytes())
        pem.chmod(0o600)
        servers = "\n".join(f"    server r{i} 127.0.0.1:{r.port}" for i, r in enumerate(replicas))
        checked = (
            f"ssl ca-file {folder}/server.crt verify required check check-ssl inter 300ms "
            "fall 2 rise 2"
        )
        config = folder / "haproxy.cfg"
        config.write_text(
            f"""global
    maxconn 2000
    stats socket {folder}/haproxy.sock mode 600 level admin
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    retries 3
    option redispatch
    option http-server-close
frontend api
    bind 127.0.0.1:{self.port} ssl crt {pem}
    default_backend replicas
backend replicas
    balance roundrobin
    option httpchk GET /ready
    http-check expect status 200
    default-server {checked}
{servers}
"""
        )
        with open(folder / "haproxy.log", "wb") as log:
            self.process = subprocess.Popen(
                ["haproxy", "-f", str(config), "-db"], stdout=log, stderr=subprocess.STDOUT
            )

    def states(self):
        """Each server's state as HAProxy sees it: {"r0": "UP", ...}."""
        with socket.socket(socket.AF_UNIX) as s:
            s.connect(str(self.folder / "haproxy.sock"))
            s.sendall(b"show stat\n")
            data = b""
            while chunk := s.recv(65536):
                data += chunk
        rows = [
            line.split(",") for line in data.decode().splitlines() if line.startswith("replicas,")
        ]
        return {row[1]: row[17].split(" ")[0] for row in rows if row[1].startswith("r")}

    def wait_up(self, count, seconds=60):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                if list(self.states().values()).count("UP") == count:
                    return
            time.sleep(0.1)
        raise AssertionError(f"HAProxy: not {count} servers UP: {self.states()}")

    def close(self):
        self.process.terminate()
        self.process.wait(timeout=20)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with socket.socket() as s:
        s.settimeout(2)
        if s.connect_ex(("127.0.0.1", 5672)) != 0:
            absent("RabbitMQ does not answer on 127.0.0.1:5672; .ci/run installs and starts it")
    root = tmp_path_factory.mktemp("cluster")
    subprocess.run(  # one certificate for every replica and HAProxy, as a Secret would give
        [
            "make",
            "--no-print-directory",
            "certs",
            f"TLS_CERT={root}/server.crt",
            f"TLS_KEY={root}/server.key",
        ],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    with postgres() as database:
        env = {
            "API_TOKEN": TOKEN,
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "DATABASE_URL": database.url,
            "BROKER_URL": "amqp://guest@127.0.0.1:5672//",
            "STOP_DRAIN_SECONDS": str(DRAIN_SECONDS),
            "PROMOTE_MIN_PAIRS": str(MIN_PAIRS),
            "JOB_CHUNK_TWEETS": "500",
        }
        replicas = []
        for i in range(3):
            folder = root / f"replica-{i}"
            replicas.append(Replica(folder, **env))
            for name in ("server.crt", "server.key"):
                shutil.copy(root / name, folder / name)
        balancer = None
        try:
            for replica in replicas:
                replica.start()
            for replica in replicas:
                replica.wait()
            balancer = HAProxy(root, replicas)
            balancer.wait_up(3)
            yield {"replicas": replicas, "haproxy": balancer, "database": database, "root": root}
        finally:
            if balancer is not None:
                balancer.close()
            for replica in replicas:
                replica.close()


def call(port, cafile, method, path, body=None, token=TOKEN, timeout=30):
    """One request on a connection of its own: (status, headers, parsed body)."""
    context = ssl.create_default_context(cafile=str(cafile))
    connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=timeout)
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        connection.request(
            method, path, body if isinstance(body, str | None) else json.dumps(body), headers
        )
        response = connection.getresponse()
        data = response.read()
        kind = response.headers.get("Content-Type", "")
        return response.status, response.headers, json.loads(data) if "json" in kind else data
    finally:
        connection.close()


def through(cluster, method, path, body=None, token=TOKEN):
    return call(cluster["haproxy"].port, cluster["root"] / "server.crt", method, path, body, token)


def admin(cluster, method, path, body=None, status=200):
    got, headers, answer = through(cluster, method, f"/api/v1/aliases{path}", body, ADMIN_TOKEN)
    assert got == status, answer
    return answer


def followed(replica, root, version, times=4):
    """Whether `times` fresh connections in a row (either worker) report this aliases version."""
    for _ in range(times):
        status, _, body = call(replica.port, root / "server.crt", "GET", "/ready", token=None)
        if status != 200 or body["aliases"]["version"] < version:
            return False
    return True


def test_the_guides_promotion_across_replicas_prints_what_it_shows(cluster):
    """docs/deploy.md's session, first (the database is new: its versions start at 1), with this
    cluster's ports for the page's 8443 (HAProxy) and 5001 to 5003 (the replicas)."""
    root, replicas = cluster["root"], cluster["replicas"]
    (root / ".api_token").write_text(TOKEN + "\n")
    (root / ".admin_token").write_text(ADMIN_TOKEN + "\n")
    shutil.copy(ROOT / "payload.json", root / "payload.json")
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    env.update(TLS_CERT=str(root / "server.crt"), ADMIN_TOKEN_FILE=str(root / ".admin_token"))
    ports = " ".join(str(r.port) for r in replicas)
    ran = 0
    for page, line, command, expected in test_docs.sessions([ROOT / "docs/deploy.md"], "cluster"):
        command = command.replace("8443", str(cluster["haproxy"].port))
        command = command.replace("5001 5002 5003", ports)
        cwd = ROOT if command.startswith("make ") else root
        result = subprocess.run(
            ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, f"{page}:{line}: {result.stderr}"
        assert test_docs.matches(expected, result.stdout), (
            f"{page}:{line} printed\n{result.stdout}\nnot\n{expected}"
        )
        time.sleep(1)  # every replica follows within about a second, as the page says
        ran += 1
    assert ran == 5


def test_a_promotion_and_a_rollback_through_haproxy_reach_every_replica(cluster):
    """20 changes made through HAProxy: the time from the change's answer until every replica,
    asked on its own port, serves it (the promise: about a second)."""
    root, replicas = cluster["root"], cluster["replicas"]
    seconds = []
    for n in range(10):
        admin(cluster, "PUT", "/candidate", {"model": SMALL, "shadow_percent": 0})
        promoted = admin(cluster, "POST", "/promote", {"force": True})
        back = None
        for change in (promoted, "rollback"):
            if change == "rollback":
                change = back = admin(cluster, "POST", "/rollback")
            start = time.monotonic()
            while not all(followed(r, root, change["version"]) for r in replicas):
                assert time.monotonic() - start < 10, f"change {n} not followed within 10 s"
                time.sleep(0.02)
            seconds.append(round(time.monotonic() - start, 3))
        assert back["stable"] == promoted["previous"]
    figures = {
        "changes": len(seconds),
        "median_s": statistics.median(seconds),
        "slowest_s": max(seconds),
    }
    report("a change through HAProxy seen by all three replicas", {**figures, "each": seconds})
    assert max(seconds) < 2, seconds
    # And what each serves is what the aliases say: the stable model, on every replica.
    stable = admin(cluster, "GET", "")["stable"]["model"]
    for replica in replicas:
        _, headers, _ = call(replica.port, root / "server.crt", "POST", "/api/v1/predict", PAYLOAD)
        assert headers["X-Model-Name"] == stable


def test_the_guard_sees_the_pairs_of_every_replica(cluster):
    root, replicas = cluster["root"], cluster["replicas"]
    # Against the default, tweet-sentiment-people, tweet-sentiment is refused on the labelled
    # tweets (balanced accuracy 0.6659 against 0.8165); against tweet-sentiment-large (0.6611) it
    # passes them, so that what is left to decide is the live pairs, summed over the replicas.
    admin(cluster, "PUT", "/candidate", {"model": LARGE, "shadow_percent": 0})
    admin(cluster, "POST", "/promote", {"force": True})
    admin(cluster, "PUT", "/candidate", {"model": SMALL})
    time.sleep(1)
    texts = seed_tweets(450)
    for i, replica in enumerate(replicas):  # 150 different tweets straight to each replica
        for batch in range(150 * i, 150 * i + 150, 50):
            tweets = {str(n): texts[n] for n in range(batch, batch + 50)}
            status, _, body = call(
                replica.port, root / "server.crt", "POST", "/api/v1/predict", tweets
            )
            assert status == 200, body
    expected = evidence(LARGE, SMALL, texts)
    one_replica = max(
        evidence(LARGE, SMALL, texts[150 * i : 150 * i + 150])["pairs"] for i in range(3)
    )
    deadline = time.monotonic() + 10
    while (state := admin(cluster, "GET", ""))["shadow"]["pairs"] < expected["pairs"]:
        assert time.monotonic() < deadline, state["shadow"]
        time.sleep(0.25)
    report("the guard's pairs, summed over the replicas", state["shadow"])
    shadow = state["shadow"]
    assert (shadow["pairs"], shadow["agreeing"]) == (expected["pairs"], expected["agreeing"])
    assert shadow["pairs"] >= MIN_PAIRS > one_replica
    promoted = admin(cluster, "POST", "/promote")  # no force: tweet-sentiment passes
    assert promoted["stable"]["model"] == SMALL, promoted
    admin(cluster, "POST", "/rollback")


def test_a_job_posted_through_one_replica_is_fetched_through_each_other(cluster):
    root, (first, second, third) = cluster["root"], cluster["replicas"]
    tweets = {f"t{n}": f"job tweet {n} {'good' if n % 2 else 'bad'}" for n in range(2_000)}
    status, _, job = call(
        first.port, root / "server.crt", "POST", "/api/v1/jobs?scores=true", tweets
    )
    assert status == 202, job
    deadline = time.monotonic() + 60
    while True:
        status, _, state = call(
            second.port, root / "server.crt", "GET", f"/api/v1/jobs/{job['job_id']}"
        )
        assert status == 200, state
        if state["status"] == "done":
            break
        assert state["status"] in ("queued", "running") and time.monotonic() < deadline, state
        time.sleep(0.2)
    results = [
        call(r.port, root / "server.crt", "GET", f"/api/v1/jobs/{job['job_id']}/result")[2]
        for r in (second, third)
    ]
    assert results[0] == results[1] and len(results[0]) == len(tweets)
    report("a job posted on one replica", {"tweets": state["tweets"], "done": state["done_tweets"]})


def seed_tweets(count):
    """The first tweets of the seed's data, or a skip naming it (the guard needs ../shared's
    labelled reference set too, to promote without force)."""
    import train

    if not train.DEFAULT_DATA.is_file():
        absent(f"the seed's tweets are absent: {train.DEFAULT_DATA} (see shared/data)")
    with open(train.DEFAULT_DATA, newline="", encoding="utf-8") as f:
        return [row["text"] for _, row in zip(range(count), csv.DictReader(f), strict=False)]


class Load:
    """Clients posting payload.json through HAProxy until stopped: every answer counted by status,
    and every failure (no answer, or not 200) kept."""

    def __init__(self, cluster, clients=4):
        self.cluster, self.stopping = cluster, threading.Event()
        self.statuses, self.failures, self.models = collections.Counter(), [], collections.Counter()
        self.threads = [threading.Thread(target=self.run) for _ in range(clients)]

    def run(self):
        context = ssl.create_default_context(cafile=str(self.cluster["root"] / "server.crt"))
        port = self.cluster["haproxy"].port
        connection = None
        while not self.stopping.is_set():
            try:
                if connection is None:
                    connection = http.client.HTTPSConnection(
                        "127.0.0.1", port, context=context, timeout=30
                    )
                connection.request(
                    "POST",
                    "/api/v1/predict",
                    PAYLOAD,
                    {"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
                )
                response = connection.getresponse()
                response.read()
                self.statuses[response.status] += 1
                self.models[response.headers.get("X-Model-Name")] += 1
                if response.status != 200:
                    self.failures.append(response.status)
            except (OSError, http.client.HTTPException) as e:
                self.failures.append(type(e).__name__)
                connection.close()
                connection = None
        if connection is not None:
            connection.close()

    def __enter__(self):
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_):
        self.stopping.set()
        for thread in self.threads:
            thread.join()


def test_load_through_haproxy_survives_restarts_and_alias_moves_with_no_failure(cluster):
    """Each replica stopped (TERM) and started again in turn, and the aliases moved meanwhile,
    under load through HAProxy: no request fails."""
    balancer, replicas = cluster["haproxy"], cluster["replicas"]
    with Load(cluster) as load:
        time.sleep(1)
        for i, replica in enumerate(replicas):
            replica.terminate()  # /ready 503 for 2 s while it serves, then a graceful stop
            admin(cluster, "PUT", "/candidate", {"model": SMALL if i % 2 else OLD})
            replica.start()
            replica.wait()
            balancer.wait_up(3)
            admin(cluster, "POST", "/promote", {"force": True})
            time.sleep(0.5)
            admin(cluster, "POST", "/rollback")
        time.sleep(1)
    figures = {"requests": sum(load.statuses.values()), "statuses": dict(load.statuses)}
    report(
        "load through 3 restarts and 6 alias moves",
        {**figures, "models": dict(load.models), "failed": load.failures},
    )
    assert load.failures == [] and figures["requests"] > 100


def test_postgresql_stopped_and_started_with_predictions_answered_throughout(cluster):
    database, root, replicas = cluster["database"], cluster["root"], cluster["replicas"]
    with Load(cluster) as load:
        time.sleep(0.5)
        database.stop()
        try:
            time.sleep(3)  # every follower has lost its connection
            status, headers, body = through(
                cluster, "POST", "/api/v1/aliases/rollback", token=ADMIN_TOKEN
            )
            assert status == 503 and headers["Retry-After"] == "5", body
            assert "cannot be reached" in body["detail"]
            for replica in replicas:  # each still ready: it serves the aliases it last read
                status, _, ready = call(
                    replica.port, root / "server.crt", "GET", "/ready", token=None
                )
                assert status == 200 and "cannot be reached" in ready["aliases"]["problem"], ready
                stale = ready["aliases"]["seconds_since_read"]
                assert stale >= 2, ready
        finally:
            database.start()
        changed = admin(cluster, "PUT", "/candidate", {"model": SMALL, "shadow_percent": 0})
        start = time.monotonic()
        while not all(followed(r, root, changed["version"]) for r in replicas):
            assert time.monotonic() - start < 15, "not followed after PostgreSQL came back"
            time.sleep(0.05)
        after = time.monotonic() - start
        admin(cluster, "DELETE", "/candidate")
    report(
        "PostgreSQL stopped for 3 s under load",
        {
            "requests": sum(load.statuses.values()),
            "failed": load.failures,
            "followed_after_s": round(after, 3),
        },
    )
    assert load.failures == []
