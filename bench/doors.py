"""The websocket beside REST, measured with the same Python client on the same running service.

Both doors get one tweet per message or request: round trips one at a time on one kept-alive
connection (p50 / p99), then messages per second over 16 connections, spread over 2 client
processes of 8 threads (the client shares the machine's cores with the server, alike for both).
"""

import http.client
import json
import multiprocessing
import ssl
import statistics
import threading
import time

import websocket

TWEET = {"1": "I love this new song, it made my whole day :)"}


class Door:
    """One connection to the service: send one tweet, wait for the answer."""

    def __init__(self, kind, port, token, cafile):
        self.kind = kind
        if kind == "websocket":
            self.ws = websocket.create_connection(
                f"wss://127.0.0.1:{port}/api/v1/ws",
                header=[f"Authorization: Bearer {token}"],
                sslopt={"ca_certs": cafile},
            )
            self.message = json.dumps(
                {"type": "prediction_request", "request_id": "b", "tweets": TWEET}
            )
        else:
            context = ssl.create_default_context(cafile=cafile)
            self.http = http.client.HTTPSConnection("127.0.0.1", port, context=context)
            self.path, self.body = f"/api/v1/{token}/predict", json.dumps(TWEET)
            self.headers = {"Content-Type": "application/json"}

    def ask(self):
        if self.kind == "websocket":
            self.ws.send(self.message)
            return json.loads(self.ws.recv())["predictions"]
        self.http.request("POST", self.path, self.body, self.headers)
        return json.loads(self.http.getresponse().read())

    def close(self):
        (self.ws if self.kind == "websocket" else self.http).close()


def round_trips(kind, port, token, cafile, count=3_000):
    """Time one-tweet round trips one after another on one connection; return p50 and p99 (ms)."""
    door = Door(kind, port, token, cafile)
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
    kind, port, token, cafile, threads, seconds = args
    doors = [Door(kind, port, token, cafile) for _ in range(threads)]
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

    workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    for door in doors:
        door.close()
    return sum(counts), errors[0]


def throughput(kind, port, token, cafile, connections=16, seconds=5, processes=2):
    """Messages (or requests) per second over `connections`, one tweet each."""
    args = (kind, port, token, cafile, connections // processes, seconds)
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        results = pool.map(_client_process, [args] * processes)
    done = sum(r[0] for r in results)
    return {"per_s": done / seconds, "done": done, "errors": sum(r[1] for r in results)}


def measure(port, token, cafile, seconds):
    """Both doors, side by side: round trips, then throughput, REST and websocket in turn."""
    figures = {}
    for kind in ("rest", "websocket"):
        figures[kind] = round_trips(kind, port, token, cafile)
    for kind in ("rest", "websocket"):
        figures[kind].update(throughput(kind, port, token, cafile, seconds=seconds))
    return figures
