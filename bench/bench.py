"""Measure the model in-process, and the HTTPS service against the bare server stack, in one run.

    make bench                  # or: .venv-dev/bin/python bench/bench.py --rounds 6 --seconds 3

Prints a table and writes it to bench/results.json and bench/RESULTS.md. The service is started as
`make api-start` starts it; the floor is the same gunicorn configuration and certificate serving a
Flask app that answers the predict route with a constant (bench/floor.py), the bare floor the same
answer from a WSGI callable with no framework, and "model only" a WSGI callable serving the model
with no API around it (bench/model_only.py). They run side by side and are loaded in turn, round
after round, so that a slow spell of the machine falls on all of them.
Beside them run three peers, what a user might stand up instead, each serving the same model (the
registry's default) from an environment of its own (requirements-bench.txt, .venv-bench): FastAPI
on uvicorn with a plain def endpoint (bench/peer_fastapi.py) and with an async def endpoint
answering ORJSONResponse (bench/peer_fastapi_async.py), and BentoML (bench/peer_bentoml.py). Load
comes from wrk.
"""

import argparse
import contextlib
import csv
import io
import json
import os
import platform
import random
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import doors  # noqa: E402  (bench/ is on the path: this script's folder)

import model  # noqa: E402
import registry  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "tweet_sentiment_10K.csv"
PAYLOAD = ROOT / "payload.json"
TOKEN = "bench-" + os.urandom(8).hex()
ADMIN_TOKEN = "bench-admin-" + os.urandom(8).hex()


def load_tweets():
    """Return 10,000 tweets: the real data if present, else a generated set; and which it is."""
    if DATA.is_file():
        with DATA.open(newline="", encoding="utf-8") as f:
            return [row["text"] for row in csv.DictReader(f)], f"real tweets from {DATA.name}"
    rng = random.Random(0)
    words = [t for t in registry.load_one().get().model.ratios if " " not in t]
    tweets = [" ".join(rng.choices(words, k=rng.randint(4, 20))) for _ in range(10_000)]
    return tweets, "GENERATED tweets (the data set is absent): random model words"


def in_process(tweets):
    """Time model.run in this process (one core): one tweet, then batches."""
    cold = registry.load_one().get().model
    start = time.perf_counter()
    cold.run(tweets[:10_000])
    cold_rate = 10_000 / (time.perf_counter() - start)

    m = registry.load_one().get().model
    m.run(tweets)  # warm the token cache, as a running service's is
    singles = []
    for tweet in tweets[:5_000]:
        start = time.perf_counter()
        m.run([tweet])
        singles.append(time.perf_counter() - start)
    figures = {
        "single_us_p50": statistics.median(singles) * 1e6,
        "single_us_p99": statistics.quantiles(singles, n=100)[98] * 1e6,
    }
    for size in (8, 1_000, 10_000):
        batch = tweets[:size]
        best = min(timed(m.run, batch) for _ in range(max(3, 20_000 // size)))
        figures[f"batch_{size}_tweets_per_s"] = size / best
    figures["batch_10000_cold_tweets_per_s"] = cold_rate
    return figures


def wsgi_costs(rounds=10, calls=1_000):
    """Time one payload.json request through each app's WSGI callable, in this process: what each
    app costs per request without network, TLS or gunicorn. Best of the rounds, in µs."""
    from werkzeug.test import EnvironBuilder

    body = PAYLOAD.read_bytes()
    environ = EnvironBuilder(
        path=f"/api/v1/{TOKEN}/predict", method="POST", data=body, content_type="application/json"
    ).get_environ()

    def start_response(status, headers, exc_info=None):
        if not status.startswith("200"):
            raise RuntimeError(f"payload.json got {status} in-process")

    def requests(app):
        for _ in range(calls):
            response = app({**environ, "wsgi.input": io.BytesIO(body)}, start_response)
            b"".join(response)
            if hasattr(response, "close"):  # as a WSGI server does
                response.close()

    with tempfile.TemporaryDirectory() as metrics, open(os.devnull, "w", buffering=1) as log:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics  # as under gunicorn
        import floor
        import model_only

        import api

        apps = {
            "service": api.create_app({"API_TOKEN": TOKEN}),
            "model_only": model_only.app,
            "floor": floor.app,
            "bare": floor.bare,
        }
        best = dict.fromkeys(apps, float("inf"))
        with contextlib.redirect_stderr(log):  # the service's log lines, written as in service
            for _ in range(rounds):
                for name, app in apps.items():
                    best[name] = min(best[name], timed(requests, app) / calls)
        del os.environ["PROMETHEUS_MULTIPROC_DIR"]
    return {name: seconds * 1e6 for name, seconds in best.items()}


def timed(function, argument):
    start = time.perf_counter()
    function(argument)
    return time.perf_counter() - start


def big_request(tweets, size=1000):
    """The body of a request of `size` tweets (the data's first ones; 10,000 is the limit)."""
    return {str(i): t for i, t in enumerate(tweets[:size])}


def prepare(folder, tweets):
    """Make a certificate in folder (make certs) and the bodies of big requests; return their
    paths by size, {1000: path, 10000: path}."""
    env = {**os.environ, "TLS_CERT": str(folder / "server.crt")}
    env["TLS_KEY"] = str(folder / "server.key")
    subprocess.run(["make", "-s", "certs"], cwd=ROOT, env=env, check=True)
    bodies = {}
    for size in BIG_SIZES:
        bodies[size] = folder / f"tweets{size}.json"
        bodies[size].write_text(json.dumps(big_request(tweets, size)))
    return bodies


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A gunicorn server on a free port, started by a command, timed to its first 200 answer."""

    def __init__(self, name, command, folder, path=None, body=PAYLOAD, big_bodies=None):
        self.name, self.port = name, free_port()
        self.url = f"https://127.0.0.1:{self.port}{path or f'/api/v1/{TOKEN}/predict'}"
        self.body, self.big_bodies = body, big_bodies or {}
        command = command(self.port) if callable(command) else command
        env = {
            **os.environ,
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "TLS_CERT": str(folder / "server.crt"),
            "TLS_KEY": str(folder / "server.key"),
            "API_TOKEN": TOKEN,
            "ADMIN_TOKEN": ADMIN_TOKEN,  # never the project's .admin_token
            "ALIASES_FILE": str(folder / f"{name}-aliases.json"),  # nor its aliases
            "PYTHONPATH": str(ROOT),  # the peers import model.py and bench/ from here
            # The V2 door's gRPC processes (make api-start): a free port, so servers side by side
            # do not contend for 8001.
            "GRPC_PORT": os.environ.get("GRPC_PORT") or str(free_port()),
        }
        self.log = (folder / f"{name}.log").open("wb")
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.context = ssl.create_default_context(cafile=folder / "server.crt")
        self.seconds_to_first_answer = self.wait()

    def wait(self, seconds=120):
        body = self.body.read_bytes()
        headers = {"Content-Type": "application/json"}
        while time.perf_counter() - self.started < seconds:
            if self.process.poll() is not None:
                sys.exit(f"{self.name} exited; see its log")
            try:
                request = urllib.request.Request(self.url, data=body, headers=headers)
                with urllib.request.urlopen(request, context=self.context, timeout=2) as r:
                    if r.status == 200:
                        return time.perf_counter() - self.started
            except OSError:
                time.sleep(0.01)
        sys.exit(f"{self.name} did not answer within {seconds} s")

    def workers(self):
        """Return the pids of the gunicorn workers (not the master, nor the job worker the service
        supervises)."""
        masters = [p for p in descendants(self.process.pid) if is_gunicorn(p)]
        master = next(p for p in masters if not is_gunicorn(parent(p)))
        return [w for w in children(master) if is_gunicorn(w)]

    def worker_memory(self):
        """Return the RSS and PSS, in MB, of each gunicorn worker."""
        return [
            {"rss_mb": status_kb(w, "VmRSS") / 1024, "pss_mb": pss_kb(w) / 1024}
            for w in self.workers()
        ]

    def stop(self):
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(timeout=30)
        self.log.close()


def children(pid):
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def descendants(pid):
    found = [pid]
    for child in children(pid):
        found += descendants(child)
    return found


def parent(pid):
    return int(status_kb(pid, "PPid"))


def is_gunicorn(pid):
    return b"gunicorn" in Path(f"/proc/{pid}/cmdline").read_bytes()


def status_kb(pid, field):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def pss_kb(pid):
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def wrk(url, body_file, connections, seconds, headers=()):
    """Run wrk with keep-alive connections, POSTing a file (with headers, "Name: value" each);
    return requests/s, errors and latency percentiles."""
    command = [
        "wrk",
        f"-t{min(connections, 2)}",
        f"-c{connections}",
        f"-d{seconds}s",
        "-s",
        str(ROOT / "bench" / "post.lua"),
        *[x for h in headers for x in ("-H", h)],
        url,
    ]
    env = {**os.environ, "BODY_FILE": str(body_file)}
    out = subprocess.run(command, capture_output=True, text=True, env=env, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("BENCH "))
    requests, errors, duration_us, p50, p99, mean, _ = map(float, line.split()[1:])
    return {
        "requests": int(requests),
        "errors": int(errors),
        "requests_per_s": requests / (duration_us / 1e6),
        "p50_ms": p50 / 1000,
        "p99_ms": p99 / 1000,
        "mean_ms": mean / 1000,
    }


GUNICORN = [str(ROOT / ".venv" / "bin" / "gunicorn"), "--config", "gunicorn.conf.py"]
# The servers started here: the service as make api-start starts it, the others in its gunicorn.
COMMANDS = {
    "service": ["make", "--no-print-directory", "api-start"],
    "model_only": [*GUNICORN, "bench.model_only:app"],
    "floor": [*GUNICORN, "bench.floor:app"],
    "bare": [*GUNICORN, "bench.floor:bare"],
}
SERVERS = tuple(COMMANDS)
# Issue #26: the service's own code on gunicorn's `asgi` worker (bench/asgi_probe.py, a probe: only
# the predict path), and that worker's floor, from the service's runtime environment.
ASGI = {
    "asgi_probe": [*GUNICORN, "--worker-class", "asgi", "bench.asgi_probe:app"],
    "asgi_bare": [*GUNICORN, "--worker-class", "asgi", "bench.floor:bare_asgi"],
}
GUNICORN_SERVERS = {**COMMANDS, **ASGI}  # every gunicorn server make bench starts, by name
PEERS = ("fastapi", "fastapi_async", "bentoml")
PEER_TITLES = {
    "fastapi": "FastAPI, def",
    "fastapi_async": "FastAPI, async + ORJSON",
    "bentoml": "BentoML",
}
BIG_SIZES = (1000, 10000)  # tweets a big request holds: what batch users send, and the limit
BENCH_BIN = ROOT / ".venv-bench" / "bin"  # make bench installs requirements-bench.txt there


def stale_cores():
    """The environments whose compiled core is another version than model.py's (one built
    before a change to core/): what runs there scores in pure Python, warning only in its log.
    An environment with no core at all (no C compiler) is not stale: everything is Python."""
    show = "import sentiment_core; print(sentiment_core.VERSION)"
    stale = []
    for folder in (ROOT / ".venv", BENCH_BIN.parent):
        python = folder / "bin" / "python"
        if python.exists():
            found = subprocess.run([str(python), "-c", show], capture_output=True, text=True)
            if found.returncode == 0 and found.stdout.strip() != str(model.CORE_VERSION):
                stale.append(folder.name)
    return stale


def peer_commands(folder, tweets):
    """The peers' commands (by port) and request shapes, if their environment is installed."""
    if not (BENCH_BIN / "bentoml").exists():
        print("the peers' environment .venv-bench is absent: peers NOT measured", flush=True)
        return {}
    tls = [
        "--ssl-certfile",
        str(folder / "server.crt"),
        "--ssl-keyfile",
        str(folder / "server.key"),
    ]
    # BentoML takes the method's argument by name in the body.
    bento_payload = folder / "bento_payload.json"
    bento_payload.write_text(json.dumps({"tweets": json.loads(PAYLOAD.read_text())}))
    bento_big = {size: folder / f"bento_tweets{size}.json" for size in BIG_SIZES}
    for size, path in bento_big.items():
        path.write_text(json.dumps({"tweets": big_request(tweets, size)}))
    big = {size: folder / f"tweets{size}.json" for size in BIG_SIZES}
    return {
        "fastapi": (
            lambda port: [str(BENCH_BIN / "uvicorn"), "bench.peer_fastapi:app", "--host",
                          "127.0.0.1", "--port", str(port), "--workers", "2", "--loop", "uvloop",
                          "--http", "httptools", "--no-access-log", *tls],
            {"big_bodies": big},
        ),
        "fastapi_async": (
            lambda port: [str(BENCH_BIN / "uvicorn"), "bench.peer_fastapi_async:app", "--host",
                          "127.0.0.1", "--port", str(port), "--workers", "2", "--loop", "uvloop",
                          "--http", "httptools", "--no-access-log", *tls],
            {"big_bodies": big},
        ),
        "bentoml": (
            lambda port: [str(BENCH_BIN / "bentoml"), "serve", "bench.peer_bentoml:Sentiment",
                          "--host", "127.0.0.1", "--port", str(port), *tls],
            {"path": "/predict", "body": bento_payload, "big_bodies": bento_big},
        ),
    }  # fmt: skip


def peers_table(results):
    """The service beside what a user would run instead, as Markdown."""
    names = [n for n in ("service", *PEERS) if n in results]
    if len(names) == 1:
        return "(The peers were not measured: `.venv-bench` is absent.)"
    peers = names[1:]

    def ratio(key, field, peer):
        x, y = results["service"][key][field], results[peer][key][field]
        return f"{x / y:.2f}"

    rows = []
    for key, label in (("payload_c1", "1 connection"), ("payload_c16", "16 connections")):
        rows.append(
            (
                f"`payload.json`, {label}: requests/s",
                *(f"{results[n][key]['requests_per_s']:,.0f}" for n in names),
                *(ratio(key, "requests_per_s", p) for p in peers),
            )
        )
        rows.append(
            (
                f"`payload.json`, {label}: p50 / p99 (ms)",
                *(
                    f"{results[n][key]['p50_ms']:.2f} / {results[n][key]['p99_ms']:.2f}"
                    for n in names
                ),
            )
        )
        rows.append(
            (
                f"`payload.json`, {label}: failed requests",
                *(f"{results[n][key]['errors']} of {results[n][key]['requests']:,}" for n in names),
            )
        )
    for size in BIG_SIZES:
        key = f"tweets{size}_c8"
        rows.append(
            (
                f"{size:,}-tweet requests, 8 connections: tweets/s",
                *(f"{results[n][key]['tweets_per_s']:,.0f}" for n in names),
                *(ratio(key, "tweets_per_s", p) for p in peers),
            )
        )
    rows.append(("Start to first 200 answer (s)",
                 *(f"{results[n]['seconds_to_first_answer']:.2f}" for n in names)))  # fmt: skip
    columns = 1 + len(names) + len(peers)
    titles = [PEER_TITLES[p] for p in peers]
    lines = [
        "| Measure | Service | "
        + " | ".join(titles)
        + " | "
        + " | ".join(f"Service / {t}" for t in titles)
        + " |",
        "| --- |" + " --: |" * (columns - 1),
    ]
    lines += [f"| {' | '.join(row + ('',) * (columns - len(row)))} |" for row in rows]
    return "\n".join(lines)


def asgi_table(results):
    """The service, the probe of its code on gunicorn's asgi worker and that worker's floor, beside
    the async FastAPI peer, with each round's ratio to the peer: as Markdown."""
    peer = "fastapi_async"
    if peer not in results:
        return "(Not measured: `.venv-bench` is absent.)"
    names = ("service", "asgi_probe", "asgi_bare", peer)
    titles = ("Service (gevent worker)", "Service's code, `asgi` worker (probe)", "`asgi` floor",
              "FastAPI, async + ORJSON")  # fmt: skip

    def versus(name, key, field):
        runs, peers = results[name][key]["rounds"], results[peer][key]["rounds"]
        each = ", ".join(f"{a[field] / b[field]:.2f}" for a, b in zip(runs, peers, strict=True))
        median = results[name][key][field] / results[peer][key][field]
        return f"{median:.2f} (rounds: {each})"

    key = "payload_c16"
    rows = [
        ("`payload.json`, 16 connections: requests/s",
         *(f"{results[n][key]['requests_per_s']:,.0f}" for n in names)),
        ("`payload.json`, 16 connections: p50 / p99 (ms)",
         *(f"{results[n][key]['p50_ms']:.2f} / {results[n][key]['p99_ms']:.2f}" for n in names)),
        ("`payload.json`, 16 connections: failed requests",
         *(f"{results[n][key]['errors']} of {results[n][key]['requests']:,}" for n in names)),
        ("`payload.json`, 16 connections: / FastAPI, async",
         *(versus(n, key, "requests_per_s") for n in names[:3])),
    ]  # fmt: skip
    for size in BIG_SIZES:
        big = f"tweets{size}_c8"
        rows += [
            (f"{size:,}-tweet requests, 8 connections: tweets/s",
             f"{results['service'][big]['tweets_per_s']:,.0f}",
             f"{results['asgi_probe'][big]['tweets_per_s']:,.0f}", "",
             f"{results[peer][big]['tweets_per_s']:,.0f}"),
            (f"{size:,}-tweet requests: / FastAPI, async",
             *(versus(n, big, "requests_per_s") for n in names[:2])),
        ]  # fmt: skip
    lines = ["| Measure | " + " | ".join(titles) + " |", "| --- |" + " --: |" * len(titles)]
    lines += [f"| {' | '.join(row + ('',) * (len(titles) + 1 - len(row)))} |" for row in rows]
    return "\n".join(lines)


def big_requests(servers, rounds, seconds):
    """Load the service, the model alone and the peers with 1,000-tweet requests in turn, then
    with 10,000-tweet ones, round after round; return each one's medians by key ("tweets1000_c8",
    "tweets10000_c8"), with tweets/s.

    8 connections: a worker's accept loop takes a burst of new connections at once, and with 4 it
    held all of them now and then, leaving the other worker idle. Each round opens them anew, so
    the median is not one round's luck in how the workers shared them (uvicorn's vary too)."""
    names = [n for n in ("service", "model_only", "asgi_probe", *PEERS) if n in servers]
    runs = {name: {size: [] for size in BIG_SIZES} for name in names}
    for _ in range(rounds):
        for size in BIG_SIZES:
            for name in names:
                body = servers[name].big_bodies[size]
                runs[name][size].append(wrk(servers[name].url, body, 8, seconds))
    summaries = {name: {} for name in names}
    for name, sizes in runs.items():
        for size, done in sizes.items():
            summary = summaries[name][f"tweets{size}_c8"] = median_run(done)
            summary["tweets_per_s"] = summary["requests_per_s"] * size
            for run in done:
                run["tweets_per_s"] = run["requests_per_s"] * size
    return summaries


def load_in_rounds(servers, rounds, seconds):
    """Load each server in turn with payload.json, round after round; keep every round's figures."""
    figures = {name: {"payload_c1": [], "payload_c16": []} for name in servers}
    for round_number in range(1, rounds + 1):
        print(f"  round {round_number} of {rounds}", flush=True)
        for connections in (1, 16):
            for name, server in servers.items():
                run = wrk(server.url, server.body, connections, seconds)
                figures[name][f"payload_c{connections}"].append(run)
    return figures


def median_run(runs):
    """Return the median of each figure over the rounds, and the totals of requests and errors."""
    keys = ("requests_per_s", "p50_ms", "p99_ms", "mean_ms")
    summary = {k: statistics.median(r[k] for r in runs) for k in keys}
    summary["requests"] = sum(r["requests"] for r in runs)
    summary["errors"] = sum(r["errors"] for r in runs)
    summary["rounds"] = runs
    return summary


def table(results):
    """Return the results as a Markdown table."""
    m, s, o, f, b = (results[k] for k in ("in_process", *SERVERS))

    def ratio(x, y):
        """x's requests/s over y's: the medians', then each round's."""
        rounds = ", ".join(
            f"{a['requests_per_s'] / b['requests_per_s']:.0%}"
            for a, b in zip(x["rounds"], y["rounds"], strict=True)
        )
        return f"{x['requests_per_s'] / y['requests_per_s']:.0%} (rounds: {rounds})"

    servers = (s, o, f, b)

    def load_rows(key, label):
        runs = [x[key] for x in servers]
        return [
            (f"{label}: requests/s", *(f"{r['requests_per_s']:,.0f}" for r in runs),
             ratio(s[key], f[key]), ratio(s[key], b[key])),
            (f"{label}: p50 / p99 latency (ms)",
             *(f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f}" for r in runs)),
            (f"{label}: failed requests", *(f"{r['errors']} of {r['requests']:,}" for r in runs)),
        ]  # fmt: skip

    big, huge = s["tweets1000_c8"], s["tweets10000_c8"]

    def memory(key):
        return [", ".join(f"{w[key]:.0f}" for w in x["workers"]) for x in servers]

    rows = [
        ("In-process `model.run`, one tweet: p50 / p99 (µs)",
         f"{m['single_us_p50']:.1f} / {m['single_us_p99']:.1f}"),
        ("In-process, batch of 8: tweets/s", f"{m['batch_8_tweets_per_s']:,.0f}"),
        ("In-process, batch of 1,000: tweets/s", f"{m['batch_1000_tweets_per_s']:,.0f}"),
        ("In-process, batch of 10,000: tweets/s", f"{m['batch_10000_tweets_per_s']:,.0f}"),
        ("In-process, batch of 10,000, cold token cache: tweets/s",
         f"{m['batch_10000_cold_tweets_per_s']:,.0f}"),
        ("In-process, one `payload.json` request through the app, no server (µs)",
         *(f"{x['wsgi_us']:.0f}" for x in servers)),
        *load_rows("payload_c1", "`payload.json`, 1 connection"),
        *load_rows("payload_c16", "`payload.json`, 16 connections"),
        ("1,000-tweet requests, 8 connections: tweets/s", f"{big['tweets_per_s']:,.0f}",
         f"{o['tweets1000_c8']['tweets_per_s']:,.0f}"),
        ("1,000-tweet requests: p50 / p99 latency (ms)",
         f"{big['p50_ms']:.1f} / {big['p99_ms']:.1f}"),
        ("10,000-tweet requests, 8 connections: tweets/s", f"{huge['tweets_per_s']:,.0f}",
         f"{o['tweets10000_c8']['tweets_per_s']:,.0f}"),
        ("10,000-tweet requests: p50 / p99 latency (ms)",
         f"{huge['p50_ms']:.1f} / {huge['p99_ms']:.1f}"),
        ("Worker RSS after load (MB)", *memory("rss_mb")),
        ("Worker PSS after load (MB)", *memory("pss_mb")),
        ("Start to first 200 answer (s)",
         *(f"{x['seconds_to_first_answer']:.2f}" for x in servers)),
    ]  # fmt: skip
    d = results["doors"]

    def door_rows(name, label, unit):
        x = d[name]
        return [
            (f"{label}: p50 / p99 (ms)", f"{x['p50_ms']:.3f} / {x['p99_ms']:.3f}"),
            (f"{label}, 16 connections: {unit}/s", f"{x['per_s']:,.0f} ({x['errors']} errors)"),
        ]

    rows += [
        *door_rows("rest_one_tweet", "One tweet, REST on a kept-alive connection", "requests"),
        *door_rows("websocket_one_tweet", "One tweet, websocket message", "messages"),
        *door_rows("rest_payload", "`payload.json`, REST (Python client)", "requests"),
        *door_rows("rpc_payload", "`payload.json`, ZeroRPC call", "calls"),
    ]
    for count in (1, 2):
        x = results["stream"][f"processors_{count}"]
        rss = ", ".join(f"{r:.0f}" for r in x["rss_mb"])
        rows.append((f"Kafka, 100,000 messages end to end, {count} processor(s): messages/s "
                     f"(processor RSS, MB)", f"{x['messages_per_s']:,.0f} ({rss})"))  # fmt: skip
    lines = [
        "| Measure | Service | Model only | Floor | Bare floor | Service / floor "
        "| Service / bare floor |",
        "| --- | --: | --: | --: | --: | --: | --: |",
    ]
    lines += [f"| {' | '.join(row + ('',) * (7 - len(row)))} |" for row in rows]
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6, help="rounds of load on each server")
    parser.add_argument("--seconds", type=int, default=3, help="seconds of load per measure")
    args = parser.parse_args(argv)
    if not shutil.which("wrk"):
        sys.exit("wrk is needed: apt-get install -y wrk (make bench installs it as root)")
    stale = stale_cores()
    if stale:  # a server there would score in pure Python, at a tenth of its speed or less
        sys.exit(
            f"the compiled core in {', '.join(stale)} is not the one model.py reads "
            f"(CORE_VERSION {model.CORE_VERSION}): run make bench, which rebuilds it"
        )

    tweets, source = load_tweets()
    print(f"in-process model on {source} ...", flush=True)
    results = {"in_process": in_process(tweets), "tweets": source}

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        big_bodies = prepare(folder, tweets)
        servers = {}
        try:
            for name, command in GUNICORN_SERVERS.items():
                print(f"starting {name} ...", flush=True)
                # The floor and the model alone are not the service: no job worker beside them.
                os.environ["JOB_WORKERS_WITH_API"] = "1" if name == "service" else "0"
                servers[name] = Server(name, command, folder, big_bodies=big_bodies)
            os.environ.pop("JOB_WORKERS_WITH_API")
            for name, (command, extra) in peer_commands(folder, tweets).items():
                print(f"starting the peer {name} ...", flush=True)
                servers[name] = Server(name, command, folder, **extra)
            print(f"payload.json, 1 and 16 connections, {args.seconds} s each ...", flush=True)
            loads = load_in_rounds(servers, args.rounds, args.seconds)
            print(
                "1,000- and 10,000-tweet requests: the service, the model alone, the peers ...",
                flush=True,
            )
            bigs = big_requests(servers, args.rounds, args.seconds)
            print("the websocket and ZeroRPC beside REST, the same Python client ...", flush=True)
            cafile = str(folder / "server.crt")
            results["doors"] = doors.measure(servers["service"].port, TOKEN, cafile, args.seconds)
            for name, server in servers.items():
                results[name] = {
                    "seconds_to_first_answer": server.seconds_to_first_answer,
                    **{key: median_run(runs) for key, runs in loads[name].items()},
                    "workers": server.worker_memory() if name in GUNICORN_SERVERS else [],
                }
                results[name].update(bigs.get(name, {}))
        finally:
            for server in servers.values():
                server.stop()
    print("Kafka: 100,000 messages end to end, 1 and 2 processors ...", flush=True)
    results["stream"] = doors.stream_throughput()
    print("one payload.json request through each app, in-process ...", flush=True)
    for name, microseconds in wsgi_costs().items():
        results[name]["wsgi_us"] = microseconds

    results["machine"] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "cores": os.cpu_count(),
        "cpu": cpu_name(),
        "python": platform.python_version(),
        "load_generator": subprocess.run(["wrk", "-v"], capture_output=True, text=True)
        .stdout.splitlines()[0]
        .split(" [")[0],
        "seconds_per_measure": args.seconds,
        "rounds": args.rounds,
    }
    text = (
        table(results)
        + "\n\n### Beside what a user would run instead\n\n"
        + peers_table(results)
        + "\n\n### On gunicorn's `asgi` worker (issue #26)\n\n"
        + asgi_table(results)
    )
    print()
    print(text)
    (ROOT / "bench" / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_results_md(results, text)


def cpu_name():
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def write_results_md(results, text):
    machine = results["machine"]
    rounds, seconds = machine["rounds"], machine["seconds_per_measure"]
    path = ROOT / "bench" / "RESULTS.md"
    # The profile (make profile), make bench-jobs and make bench-files keep their own sections at
    # the end, carried over.
    old = path.read_text() if path.exists() else ""
    sections = (
        "## The V2 door beside MLServer",
        "## Each model in-process",
        "## The shadow's cost",
        "## Where a worker's time goes",
        "## Batch jobs",
        "## Files at scale",
    )
    starts = [old.find(s) for s in sections if s in old]
    files = old[min(starts) :] if starts else ""
    path.write_text(
        f"""# Benchmark results

Latest `make bench`: {machine["date"]}, {machine["cores"]} cores ({machine["cpu"]}), Python
{machine["python"]}, load from {machine["load_generator"]} (keep-alive connections, HTTPS).
`payload.json` and 1,000-tweet figures are medians of {rounds} rounds of {seconds} s per server; in
each round the servers, running side by side, are loaded in turn. In-process figures use
{results["tweets"]}.

{text}

The peers (last table) are what a user might stand up instead, loaded in the same rounds: FastAPI on
uvicorn with uvloop and httptools, 2 workers, the token check and no limits or metrics, with a
plain `def` endpoint whose `dict[str, str]` answer pydantic validates (`bench/peer_fastapi.py`) and
with the `async def` endpoint answering `ORJSONResponse` that FastAPI's documentation points
performance-minded users to, no access log (`bench/peer_fastapi_async.py`), and BentoML 1.4 as a
service of 2 workers with its default access log (`bench/peer_bentoml.py`), all serving the
service's default model with the same certificate, from their own environment
(`requirements-bench.txt`, installed by `make bench` into `.venv-bench`).

The floor is the same gunicorn configuration, workers and certificate serving a Flask app that
answers the predict route with a constant (`bench/floor.py`): what the server stack and Flask cost
with an instant model. The bare floor answers the same from a WSGI callable with no framework: what
gunicorn, gevent and TLS cost alone. The service answers a well-formed predict request without
Flask's per-request work (`api.FastPredict`), so it can come close to the floor, even pass it; the
bare floor is the one it cannot pass. "Model only" is a WSGI callable that parses the body and
answers with `model.run`, with no framework, token check, validation, request id, log line or
metrics (`bench/model_only.py`): the gap between it and the bare floor is the model's own cost,
the gap between the service and it the API's.
The `asgi` table (issue #26) runs the service's own code, unchanged, on gunicorn's own `asgi` worker
(asyncio, no gevent), in the service's runtime environment: `bench/asgi_probe.py` calls the
service's WSGI app inline from an ASGI shim that serves the predict path alone, with none of the
guarantees for slow or hostile clients, websockets or the other routes, so it is a measure of what
moving the service to that worker would be worth, not a door. The `asgi` floor answers a constant
there, as the bare floor does on the gevent worker.
The load generator shares the machine's cores with the servers, equally for all of them. On a small
virtual machine the speed of the cores drifts by up to half within a minute: read the ratios, and
each round's ratio, rather than the absolute figures. 1,000-tweet requests use 8 connections:
a gunicorn worker accepts a burst of new connections at once, and with 4 it sometimes held all of
them while the other worker stood idle, halving the figure. RSS counts pages shared with the
gunicorn master (the preloaded app); PSS divides them among the processes that share them.
The last rows compare the doors on equal terms, with the same Python client (`bench/doors.py`):
one tweet per websocket message or REST request, and `payload.json` per ZeroRPC call or REST
request, one at a time on one kept-alive connection, then over 16 connections from 2 client
processes; that client costs more CPU than wrk, so those throughputs are lower than wrk's and are to
be read against each other. ZeroRPC is one process (one core), REST two workers. Kafka: 100,000
one-tweet messages produced to a 4-partition topic on a tansu broker, timed until every label is
read back from the output topic, with 1 and then 2 processors in one group.

Reproduce: `make bench` (installs wrk as root if absent; needs the runtime `.venv`, which
`make api-start` makes). Figures go to `bench/results.json` too.

"""
        + files
    )


if __name__ == "__main__":
    main()
