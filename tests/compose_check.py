"""Bring up docker-compose.yml, move the aliases and run a 100,000-tweet job across its two
replicas, take it down.

    python tests/compose_check.py BASE_IMAGE          # make compose-test runs it

The six containers (two API replicas, HAProxy, a worker, RabbitMQ, PostgreSQL) get fresh random
passwords, tokens, a certificate and free ports for this run. A candidate set, promoted and rolled
back through HAProxy must reach both replicas, each asked on its own port. The job is a CSV posted
over verified HTTPS to one replica and fetched from the other; its answers must equal the model's.
Prints the figures. Exits 0 without testing, saying so, when Docker or docker-compose is absent.
"""

import csv
import io
import json
import os
import random
import secrets
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import contract  # noqa: E402
import registry  # noqa: E402

PROJECT = "sentiment-compose-check"
TWEETS = 100_000


def outgoing_low():
    """The lowest port the kernel gives outgoing connections (32768 unless set otherwise)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


TAKEN = set()  # the ports given out for this run


def free_port(above=0):
    """A port free now, below the ports the kernel gives outgoing connections, and not given out
    before: a port the kernel chose (bind to 0) is one it may hand to a connection meanwhile,
    before the service meant for it binds it minutes later, as it once did HAProxy's gRPC
    frontend's ("Address already in use"). above: a port that many above it must be free too."""
    for port in random.sample(range(10_000, outgoing_low() - above), 500):
        pair = {port, port + above}
        if not pair & TAKEN and all(bindable(p) for p in pair):
            TAKEN.update(pair)
            return port
    raise AssertionError("no free port below the outgoing connections' range")


def bindable(port):
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def rabbitmq_port():
    """A free port for RabbitMQ whose distribution port, 20,000 above it, is free too."""
    return free_port(above=20_000)


def compose(*args, env, check=True):
    command = ["docker-compose", "-p", PROJECT, "-f", str(ROOT / "docker-compose.yml"), *args]
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=check)


def request(url, cafile, token, body=None, content_type=None, method=None):
    context = ssl.create_default_context(cafile=cafile)
    headers = {"Authorization": f"Bearer {token}"}
    if content_type:
        headers["Content-Type"] = content_type
    req = urllib.request.Request(url, data=body, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, context=context, timeout=120) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def ready(port, cafile):
    try:
        return request(f"https://localhost:{port}/ready", cafile, "-")[0] == 200
    except OSError:
        return False


def following(port, cafile, version):
    """Whether 4 fresh connections in a row (either worker) follow this aliases version."""
    for _ in range(4):
        status, body = request(f"https://localhost:{port}/ready", cafile, "-")
        if status != 200 or json.loads(body)["aliases"]["version"] < version:
            return False
    return True


def tweets():
    data = ROOT.parent / "shared" / "data" / "tweet_sentiment_10K.csv"
    if data.is_file():
        with data.open(newline="", encoding="utf-8") as f:
            texts = [row["text"] for row in csv.DictReader(f)]
    else:
        texts = [f"tweet {i}: what a lovely day, or not" for i in range(100)]
    return {f"c{i}": texts[i % len(texts)] for i in range(TWEETS)}


def main(base_image):
    if (
        not shutil.which("docker-compose")
        or subprocess.run(["docker", "info"], capture_output=True).returncode
    ):
        print("compose-test: no docker-compose or no Docker engine here: NOTHING WAS TESTED")
        return 0
    port, replicas = free_port(), [free_port(), free_port()]
    folder = Path(tempfile.mkdtemp(prefix="compose-check-"))
    subprocess.run(  # the replicas' certificate, readable by the containers' users
        ["make", "--no-print-directory", "certs", f"TLS_CERT={folder}/server.crt",
         f"TLS_KEY={folder}/server.key"],
        cwd=ROOT, check=True, capture_output=True,
    )  # fmt: skip
    folder.chmod(0o755)
    (folder / "server.key").chmod(0o644)
    token, admin = secrets.token_hex(32), secrets.token_hex(32)
    env = {
        **os.environ,
        "BASE_IMAGE": base_image,
        "RABBITMQ_PASSWORD": secrets.token_hex(16),
        "POSTGRES_PASSWORD": secrets.token_hex(16),
        "API_TOKEN": token,
        "ADMIN_TOKEN": admin,
        "TLS_DIR": str(folder),
        "API_PORT": str(port),
        "API1_PORT": str(replicas[0]),
        "API2_PORT": str(replicas[1]),
        "RABBITMQ_PORT": str(rabbitmq_port()),
        "POSTGRES_PORT": str(free_port()),
        "WORKER_METRICS_PORT": str(free_port()),
        "GRPC_PORT": str(free_port()),
        "API1_GRPC_PORT": str(free_port()),
        "API2_GRPC_PORT": str(free_port()),
    }
    cafile = str(folder / "server.crt")
    figures, started = {}, time.monotonic()
    compose("down", "-v", "--remove-orphans", env=env, check=False)
    try:
        up = compose("up", "-d", "--build", env=env, check=False)
        if up.returncode:
            raise AssertionError(f"docker-compose up failed:\n{up.stdout}\n{up.stderr}")
        figures["seconds_to_build_and_start"] = round(time.monotonic() - started, 1)
        deadline = time.monotonic() + 180
        while not all(ready(p, cafile) for p in (port, *replicas)):  # through HAProxy, and each
            if time.monotonic() > deadline:
                raise AssertionError("HAProxy and both replicas did not answer /ready in 180 s")
            time.sleep(1)
        # HAProxy's own view settled: its checks from before the replicas listened can take one
        # out just after an answer through it (CI once saw the next request's 503, "no server
        # is available"). Six answers in a row, a quarter second apart, outlast two failed checks.
        in_a_row = 0
        while in_a_row < 6:
            if time.monotonic() > deadline:
                raise AssertionError("HAProxy did not answer /ready six times in a row in 180 s")
            in_a_row = in_a_row + 1 if ready(port, cafile) else 0
            time.sleep(0.25)
        figures["seconds_to_ready"] = round(time.monotonic() - started, 1)

        # The aliases, moved through HAProxy, reach both replicas (PostgreSQL, LISTEN/NOTIFY).
        seconds = []
        for method, path, body in (
            ("PUT", "/candidate", {"model": "tweet-sentiment", "shadow_percent": 0}),
            ("POST", "/promote", {"force": True}),
            ("POST", "/rollback", None),
        ):
            status, answer = request(
                f"https://localhost:{port}/api/v1/aliases{path}",
                cafile,
                admin,
                None if body is None else json.dumps(body).encode(),
                "application/json",
                method,
            )
            assert status == 200, answer
            version, moved = json.loads(answer)["version"], time.monotonic()
            while not all(following(p, cafile, version) for p in replicas):
                assert time.monotonic() - moved < 10, f"{path}: not on both replicas in 10 s"
                time.sleep(0.05)
            seconds.append(round(time.monotonic() - moved, 3))
        figures["aliases_seen_by_both_replicas_s"] = seconds

        batch = tweets()
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["id", "text"])
        writer.writerows(batch.items())
        job_started = time.monotonic()
        status, body = request(  # on one replica; its status and result from the other
            f"https://localhost:{replicas[0]}/api/v1/jobs?scores=true",
            cafile,
            token,
            out.getvalue().encode(),
            "text/csv",
        )
        assert status == 202, body
        job_id = json.loads(body)["job_id"]
        while True:
            status, body = request(
                f"https://localhost:{replicas[1]}/api/v1/jobs/{job_id}", cafile, token
            )
            state = json.loads(body)
            assert state["status"] in ("queued", "running", "done"), state
            if state["status"] == "done":
                break
            if time.monotonic() - job_started > 300:
                raise AssertionError(f"the job is not done after 300 s: {state}")
            time.sleep(0.5)
        figures["job_seconds_post_to_done"] = round(time.monotonic() - job_started, 1)
        status, body = request(
            f"https://localhost:{replicas[1]}/api/v1/jobs/{job_id}/result", cafile, token
        )
        answer = json.loads(body)
        shipped, expected = registry.load_one().get().model, {}  # what the default serves
        ids = list(batch)
        for start in range(0, len(ids), 10_000):
            part = {i: batch[i] for i in ids[start : start + 10_000]}
            expected.update(contract.predict(shipped, part, contract.LIMITS, scores=True))
        assert answer == expected, "the job's answers differ from the model's"
        figures["tweets"] = len(answer)
        figures["tweets_per_second"] = round(TWEETS / figures["job_seconds_post_to_done"])
        services = compose("ps", "--services", "--filter", "status=running", env=env).stdout
        figures["containers"] = sorted(services.split())
        expected_containers = ["api1", "api2", "haproxy", "postgres", "rabbitmq", "worker"]
        assert figures["containers"] == expected_containers, figures
        logs = compose("logs", "--no-color", env=env).stdout
        assert env["RABBITMQ_PASSWORD"] not in logs and env["POSTGRES_PASSWORD"] not in logs
        assert token not in logs and admin not in logs and batch["c1"] not in logs
    except BaseException:
        print(compose("logs", "--no-color", "--tail", "40", env=env, check=False).stdout)
        raise
    finally:
        compose("down", "-v", "--remove-orphans", env=env, check=False)
    print("compose-test:", json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "python:3.12-slim"))
