"""The V2 door (Open Inference Protocol) beside our own REST route and beside MLServer.

    make bench-v2      # or: .venv-dev/bin/python bench/v2.py --rounds 6 --seconds 3 [--profile]

Starts the service as `make api-start` starts it (2 gunicorn workers, GRPC_WORKERS gRPC processes,
no job worker: it has no part here) and MLServer 1.7 serving the same default model through a
custom runtime (bench/peer_mlserver.py, from .venv-mlserver), each on free ports. Checks every
door's answer to each body, then loads the doors in turn, round after round, the first door of each
round moving on by one, so that a slow spell of the machine falls on all of them: payload.json's 8
tweets at 16 connections, then 1,000 tweets a request at 8. HTTPS doors are loaded by wrk, gRPC
doors by h2load (Debian's nghttp2-client) sending one ModelInfer message, as tritonclient builds it
(raw_input_contents), on every request. Our doors speak TLS and check the token; MLServer has
neither (it serves plain HTTP and plain gRPC). A gRPC failure is an HTTP 200 with a status in the
trailers, which h2load does not read: each server's own count of calls by status says how many
failed. With --profile, py-spy (.venv-bench) then samples each door's processes under load and
the busy time is split by layer.
"""

import argparse
import collections
import json
import os
import re
import shutil
import signal
import ssl
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from datetime import date
from pathlib import Path

import profile_workers

import bench  # bench/bench.py: this script's folder is first on the path
import registry
from v2 import grpc_predict_v2_pb2 as pb2

ROOT = bench.ROOT
TOKEN = bench.TOKEN
MLSERVER = ROOT / ".venv-mlserver" / "bin" / "mlserver"
SECTION = "## The V2 door beside MLServer"
DOORS = {  # name: title
    "rest": "Our REST, `/api/v1/predict`",
    "v2_rest": "V2 REST, JSON",
    "v2_rest_binary": "V2 REST, binary tensors",
    "v2_grpc": "V2 gRPC",
    "mlserver_rest": "MLServer REST, JSON",
    "mlserver_grpc": "MLServer gRPC",
}
PAIRS = (
    ("v2_rest", "mlserver_rest"),
    ("v2_rest_binary", "mlserver_rest"),
    ("v2_grpc", "mlserver_grpc"),
)
LOADS = (("payload", 16), ("big", 8))  # body, connections
INFER_CALL = "/inference.GRPCInferenceService/ModelInfer"


# Bodies: the same tweets in each door's form.


def v2_json(tweets):
    tensor = {"name": "text", "datatype": "BYTES", "shape": [len(tweets)], "data": tweets}
    return json.dumps({"inputs": [tensor]}).encode()


def bytes_tensor(tweets):
    return b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in tweets)


def v2_binary(tweets):
    """The binary tensor extension, as tritonclient sends by default: (body, JSON's length)."""
    data = bytes_tensor(tweets)
    tensor = {"name": "text", "datatype": "BYTES", "shape": [len(tweets)]}
    tensor["parameters"] = {"binary_data_size": len(data)}
    head = json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}}).encode()
    return head + data, len(head)


def grpc_message(name, tweets):
    request = pb2.ModelInferRequest(model_name=name)
    request.inputs.add(name="text", datatype="BYTES", shape=[len(tweets)])
    request.raw_input_contents.append(bytes_tensor(tweets))
    return request


def grpc_frame(message):
    """A gRPC message on the wire: not compressed, its length, its bytes."""
    data = message.SerializeToString()
    return b"\x00" + struct.pack(">I", len(data)) + data


# Load generators.


def h2load(url, body_file, connections, seconds, headers=()):
    """h2load: one stream at a time on each connection, as wrk's keep-alive connections."""
    command = [
        "h2load",
        "-c",
        str(connections),
        "-m",
        "1",
        "-t",
        str(min(connections, 2)),
        "-D",
        str(seconds),
        "-d",
        str(body_file),
        "-H",
        "content-type: application/grpc",
        "-H",
        "te: trailers",
        *[x for h in headers for x in ("-H", h)],
        url,
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    done = re.search(r"requests: (\d+) total, \d+ started, (\d+) done, (\d+) succeeded", out)
    took = re.search(r"finished in ([\d.]+)(m?s)", out)
    timing = re.search(
        r"time for request:\s+([\d.]+)(m?s|us)\s+([\d.]+)(m?s|us)\s+([\d.]+)(m?s|us)", out
    )
    seconds_taken = float(took[1]) / (1000 if took[2] == "ms" else 1)

    def ms(value, unit):
        return float(value) * {"s": 1000, "ms": 1, "us": 0.001}[unit]

    return {
        "requests": int(done[2]),
        "errors": int(done[2]) - int(done[3]),
        "requests_per_s": int(done[2]) / seconds_taken,
        "mean_ms": ms(timing[5], timing[6]),
        "max_ms": ms(timing[3], timing[4]),
        "p50_ms": None,
        "p99_ms": None,
    }


# The servers.


class MLServer:
    """MLServer on free ports, serving bench/peer_mlserver.py, ready once its model is."""

    def __init__(self, folder, name, version, workers):
        self.http, self.grpc, self.metrics = (bench.free_port() for _ in range(3))
        repository = folder / "mlserver"
        (repository / name).mkdir(parents=True)
        settings = {
            "host": "127.0.0.1",
            "http_port": self.http,
            "grpc_port": self.grpc,
            "metrics_port": self.metrics,
            "parallel_workers": workers,
            "debug": False,
        }
        (repository / "settings.json").write_text(json.dumps(settings))
        model_settings = {
            "name": name,
            "implementation": "bench.peer_mlserver.Sentiment",
            "parameters": {"version": version},
        }
        (repository / name / "model-settings.json").write_text(json.dumps(model_settings))
        self.log = (folder / "mlserver.log").open("wb")
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [str(MLSERVER), "start", str(repository)],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{self.http}/v2/models/{name}/ready"
        while time.perf_counter() - self.started < 120:
            if self.process.poll() is not None:
                sys.exit("MLServer exited:\n" + (folder / "mlserver.log").read_text()[-3000:])
            try:
                with urllib.request.urlopen(url, timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.2)
        else:
            sys.exit("MLServer did not get ready within 120 s")
        self.seconds_to_ready = time.perf_counter() - self.started

    def pids(self):
        return bench.descendants(self.process.pid)

    def grpc_calls(self):
        """MLServer's own count of ModelInfer calls, by status (py-grpc-prometheus's metric)."""
        url = f"http://127.0.0.1:{self.metrics}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        return calls_by_code(text, "grpc_server_handled_total", "grpc_method", "grpc_code")

    def stop(self):
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()


def calls_by_code(text, metric, method_label, code_label):
    """{code: count} of ModelInfer calls in Prometheus text."""
    counts = collections.Counter()
    for line in text.splitlines():
        if line.startswith(metric + "{") and f'{method_label}="ModelInfer"' in line:
            code = re.search(rf'{code_label}="(\w+)"', line)[1]
            counts[code] += float(line.rsplit(" ", 1)[1])
    return counts


def service_grpc_calls(server, cafile):
    request = urllib.request.Request(
        f"https://127.0.0.1:{server.port}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, context=ssl.create_default_context(cafile=cafile)) as r:
        return calls_by_code(r.read().decode(), "v2_grpc_requests_total", "method", "code")


# Checking each door's answer before the load.


def check_answers(doors, tweets, expected, cafile):
    """Every door's labels for each body are the model's: before any load."""
    import grpc

    from v2 import grpc_predict_v2_pb2_grpc as pb2_grpc

    context = ssl.create_default_context(cafile=cafile)
    for name, door in doors.items():
        for body in tweets:
            if door["kind"] == "wrk":
                headers = dict(h.split(": ", 1) for h in door["headers"][body])
                headers["Content-Type"] = "application/json"
                data = door[f"{body}_file"].read_bytes()
                request = urllib.request.Request(door["url"], data=data, headers=headers)
                with urllib.request.urlopen(request, context=context, timeout=30) as r:
                    answer, length = r.read(), r.headers.get("Inference-Header-Content-Length")
                labels = labels_of(name, answer, length)
            else:
                target = door["url"].split("//")[1].split("/")[0]
                if door["url"].startswith("https"):
                    credentials = grpc.ssl_channel_credentials(Path(cafile).read_bytes())
                    channel = grpc.secure_channel(target, credentials)
                else:
                    channel = grpc.insecure_channel(target)
                with channel:
                    stub = pb2_grpc.GRPCInferenceServiceStub(channel)
                    answer = stub.ModelInfer(door["message"][body], metadata=door["metadata"])
                labels = grpc_labels(answer)
            if labels != expected[body]:
                sys.exit(f"{name} answers {body} wrongly: {labels[:8]}")


def labels_of(name, answer, length):
    if name == "rest":
        return list(json.loads(answer).values())
    if length is None:
        return json.loads(answer)["outputs"][0]["data"]
    head = json.loads(answer[: int(length)])
    size = head["outputs"][0]["parameters"]["binary_data_size"]
    return split(answer[int(length) : int(length) + size])


def split(data):
    labels, offset = [], 0
    while offset < len(data):
        (size,) = struct.unpack_from("<I", data, offset)
        labels.append(data[offset + 4 : offset + 4 + size].decode())
        offset += 4 + size
    return labels


def grpc_labels(answer):
    if answer.raw_output_contents:
        return split(answer.raw_output_contents[0])
    return [x.decode() for x in answer.outputs[0].contents.bytes_contents]


# The rounds.


def load_in_rounds(doors, rounds, seconds):
    runs = {name: {body: [] for body, _ in LOADS} for name in doors}
    names = list(doors)
    for number in range(rounds):
        order = names[number % len(names) :] + names[: number % len(names)]
        print(f"  round {number + 1} of {rounds}: {', '.join(order)}", flush=True)
        for body, connections in LOADS:
            for name in order:
                door = doors[name]
                load = bench.wrk if door["kind"] == "wrk" else h2load
                headers = door["headers"][body]
                runs[name][body].append(
                    load(door["url"], door[f"{body}_file"], connections, seconds, headers)
                )
    return runs


def median(runs, key="requests_per_s"):
    return statistics.median(r[key] for r in runs)


def table(runs, calls):
    """The doors' figures as Markdown: medians, every round, and the ratios to MLServer."""
    lines = [
        "| Door | payload.json, 16 connections: requests/s | latency (ms) | failed "
        "| 1,000-tweet requests, 8 connections: tweets/s | latency (ms) | failed |",
        "| --- | --: | --: | --: | --: | --: | --: |",
    ]
    for name, title in DOORS.items():
        cells = []
        for body, _ in LOADS:
            done = runs[name][body]
            rate = median(done) * (1000 if body == "big" else 1)
            if done[0]["p50_ms"] is not None:
                latency = f"p50 {median(done, 'p50_ms'):.2f}, p99 {median(done, 'p99_ms'):.2f}"
            else:
                latency = f"mean {median(done, 'mean_ms'):.2f}, max {median(done, 'max_ms'):.1f}"
            failed = sum(r["errors"] for r in done)
            cells += [f"{rate:,.0f}", latency, f"{failed} of {sum(r['requests'] for r in done):,}"]
        lines.append(f"| {title} | {' | '.join(cells)} |")
    lines += ["", "Each round's requests/s, and the ratios (medians of the rounds' ratios):", ""]
    for body, connections in LOADS:
        what = "payload.json" if body == "payload" else "1,000-tweet requests"
        lines.append(f"{what}, {connections} connections:")
        lines.append("")
        for name, title in DOORS.items():
            rounds = ", ".join(f"{r['requests_per_s']:,.0f}" for r in runs[name][body])
            lines.append(f"- {title}: {rounds}")
        for ours, peer in (*PAIRS, ("v2_rest", "rest"), ("v2_grpc", "rest")):
            each = [
                a["requests_per_s"] / b["requests_per_s"]
                for a, b in zip(runs[ours][body], runs[peer][body], strict=True)
            ]
            lines.append(
                f"- {DOORS[ours]} / {DOORS[peer]}: **{statistics.median(each):.2f}** "
                f"(rounds: {', '.join(f'{x:.2f}' for x in each)})"
            )
        lines.append("")
    lines.append(
        "gRPC calls by status, as each server counted them over all rounds: "
        + "; ".join(f"{who}: {dict(counts)}" for who, counts in calls.items())
    )
    return "\n".join(lines)


# Where each door spends its time.

LAYERS = (
    ("the model (model.py, its compiled core)", ("model.py", "model_2020.py")),
    ("the contract (contract.py)", ("contract.py",)),
    ("the V2 door's code (v2/)", ("v2/protocol.py", "v2/rest.py", "v2/grpc_server.py")),
    ("protobuf", ("google/protobuf/",)),
    ("gRPC's Python and Cython (grpc)", ("grpc/",)),
    ("JSON (json, orjson)", ("json/", "orjson/")),
    ("metrics (prometheus_client)", ("prometheus_client/",)),
    ("log lines (service.py, logging)", ("service.py", "logging/")),
    ("our REST app (api.py)", ("api.py", "aliases.py", "registry.py")),
    ("Flask and Werkzeug", ("flask/", "werkzeug/")),
    ("MLServer", ("mlserver/",)),
    ("pydantic", ("pydantic/", "pydantic_core/")),
    ("FastAPI, Starlette, uvicorn", ("fastapi/", "starlette/", "uvicorn/", "starlette_exporter/")),
    ("numpy", ("numpy/",)),
    ("TLS (ssl, gevent's ssl)", ("ssl.py", "gevent/_ssl3.py")),
    ("gunicorn", ("gunicorn/", "gunicorn.conf.py")),
    ("gevent", ("gevent/",)),
    (
        "asyncio, multiprocessing, threads",
        ("asyncio/", "multiprocessing/", "concurrent/", "threading.py", "queue.py", "uvloop/"),
    ),
)


def layer_of(stack):
    for frame in reversed(stack):
        path = "/" + frame[frame.rfind("(") + 1 : frame.rfind(":")]
        for layer, places in LAYERS:
            if any(f"/{p}" in path if p.endswith("/") else path.endswith(f"/{p}") for p in places):
                return layer
    return "other"


def sample(pid, path, seconds):
    """py-spy on a process: only samples holding the GIL (Python's own work: threads waiting on a
    lock, a queue or the event loop's select hold none), and never pausing it, so that a process
    of many threads (MLServer's) is not slowed by the sampling itself."""
    command = [str(profile_workers.PY_SPY), "record", "--pid", str(pid), "--rate", "200",
               "--duration", str(seconds), "--gil", "--nonblocking", "--format", "raw",
               "--output", str(path)]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def profile(doors, pids, seconds, folder):
    """Each door loaded with payload.json while py-spy samples its processes: layer shares."""
    if not profile_workers.PY_SPY.exists():
        return "(Not profiled: py-spy, from .venv-bench, is absent.)"
    results = {}
    for name in ("v2_rest", "v2_grpc", "mlserver_rest", "mlserver_grpc"):
        door = doors[name]
        files = [folder / f"{name}-{pid}.txt" for pid in pids[name]()]
        samplers = [sample(int(f.stem.split("-")[-1]), f, seconds) for f in files]
        load = bench.wrk if door["kind"] == "wrk" else h2load
        headers = door["headers"]["payload"]
        figures = load(door["url"], door["payload_file"], 16, seconds, headers)
        for sampler in samplers:
            sampler.wait(timeout=seconds + 30)
        layers, total = collections.Counter(), 0
        for path in files:
            if path.exists():
                for stack, count in profile_workers.read_samples(path):
                    layers[layer_of(stack)] += count
                    total += count
        results[name] = (figures["requests_per_s"], total, layers)
    names = list(results)
    every = sorted(
        {layer for _, _, layers in results.values() for layer in layers},
        key=lambda x: -sum(r[2][x] / max(r[1], 1) for r in results.values()),
    )
    lines = [
        "| Layer | " + " | ".join(DOORS[n] for n in names) + " |",
        "| --- |" + " --: |" * len(names),
    ]
    for layer in every:
        shares = [f"{results[n][2][layer] / max(results[n][1], 1):.1%}" for n in names]
        lines.append(f"| {layer} | {' | '.join(shares)} |")
    lines.append(
        "| samples holding the GIL (requests/s while sampled) | "
        + " | ".join(f"{results[n][1]:,} ({results[n][0]:,.0f})" for n in names)
        + " |"
    )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--grpc-workers", type=int, default=1, help="GRPC_WORKERS")
    parser.add_argument(
        "--mlserver-workers",
        type=int,
        default=1,
        help="MLServer's parallel_workers (its default, 1)",
    )
    parser.add_argument("--profile", action="store_true", help="then sample each door (py-spy)")
    parser.add_argument("--profile-only", action="store_true", help="sample, with no rounds")
    args = parser.parse_args(argv)
    for tool, package in (("wrk", "wrk"), ("h2load", "nghttp2-client")):
        if not shutil.which(tool):
            sys.exit(f"{tool} is needed: apt-get install -y {package}")
    if not MLSERVER.exists():
        sys.exit(f"MLServer is needed: {MLSERVER} (make bench-v2 installs .venv-mlserver)")
    all_tweets, source = bench.load_tweets()
    tweets = {
        "payload": list(json.loads(bench.PAYLOAD.read_text()).values()),
        "big": all_tweets[:1000],
    }
    served = registry.load_one().get()
    expected = {k: served.model.run(v) for k, v in tweets.items()}
    print(f"V2 doors and MLServer; 1,000-tweet bodies of {source}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        bench.prepare(folder, all_tweets)
        cafile = str(folder / "server.crt")
        grpc_port = bench.free_port()
        os.environ.update(
            GRPC_PORT=str(grpc_port), GRPC_WORKERS=str(args.grpc_workers), JOB_WORKERS_WITH_API="0"
        )
        servers = {}
        try:
            print("starting the service (make api-start) ...", flush=True)
            service = servers["service"] = bench.Server(
                "service", bench.COMMANDS["service"], folder
            )
            print("starting MLServer ...", flush=True)
            mlserver = servers["mlserver"] = MLServer(
                folder, served.name, served.version, args.mlserver_workers
            )
            doors = make_doors(folder, tweets, service.port, grpc_port, mlserver, served.name)
            time.sleep(2)  # the gRPC process starts a moment after gunicorn answers
            check_answers(doors, tweets, expected, cafile)
            calls_before = {
                "V2 gRPC": service_grpc_calls(service, cafile),
                "MLServer gRPC": mlserver.grpc_calls(),
            }
            text, runs = "", None
            if not args.profile_only:
                print(f"{args.rounds} rounds of {args.seconds} s per door and body ...", flush=True)
                runs = load_in_rounds(doors, args.rounds, args.seconds)
                calls = {
                    "V2 gRPC": service_grpc_calls(service, cafile) - calls_before["V2 gRPC"],
                    "MLServer gRPC": mlserver.grpc_calls() - calls_before["MLServer gRPC"],
                }
                text = table(runs, calls) + "\n\n"
            if args.profile or args.profile_only:
                print("profiling each door ...", flush=True)
                grpc_pids = [
                    p
                    for p in bench.descendants(service.process.pid)
                    if b"v2.grpc_server" in Path(f"/proc/{p}/cmdline").read_bytes()
                ]
                pids = {
                    "v2_rest": service.workers,
                    "v2_grpc": lambda: grpc_pids,
                    "mlserver_rest": mlserver.pids,
                    "mlserver_grpc": mlserver.pids,
                }
                text += (
                    "Where each door's processes spend their time (py-spy, samples holding the "
                    f"GIL, payload.json at 16 connections, {max(args.seconds, 10)} s):\n\n"
                )
                text += profile(doors, pids, max(args.seconds, 10), folder)
        finally:
            for server in servers.values():
                server.stop()
    print()
    print(text)
    if args.profile_only:
        return  # a look, not the benchmark: RESULTS.md keeps the last full run
    results = {"runs": runs, "args": vars(args), "date": str(date.today())}
    (ROOT / "bench" / "results-v2.json").write_text(json.dumps(results, indent=2) + "\n")
    write_section(text, args, source)


def make_doors(folder, tweets, port, grpc_port, mlserver, name):
    """Each door's URL, headers and bodies: files for the load, messages for the checks."""
    auth = f"Authorization: Bearer {TOKEN}"
    ours, stable = f"https://127.0.0.1:{port}", "/v2/models/stable/infer"
    theirs = f"http://127.0.0.1:{mlserver.http}/v2/models/{name}/infer"
    doors = {
        "rest": {"url": f"{ours}/api/v1/predict", "encode": rest_json},
        "v2_rest": {"url": ours + stable, "encode": v2_json},
        "v2_rest_binary": {"url": ours + stable, "encode": v2_binary},
        "v2_grpc": {"url": f"https://127.0.0.1:{grpc_port}{INFER_CALL}", "model": "stable"},
        "mlserver_rest": {"url": theirs, "encode": v2_json},
        "mlserver_grpc": {"url": f"http://127.0.0.1:{mlserver.grpc}{INFER_CALL}", "model": name},
    }
    for door_name, door in doors.items():
        grpc_door = "model" in door
        door["kind"] = "h2load" if grpc_door else "wrk"
        mine = not door_name.startswith("mlserver")
        door["headers"] = {}
        door["message"] = {}
        for body, texts in tweets.items():
            path = door[f"{body}_file"] = folder / f"{door_name}-{body}.bin"
            headers = [auth] if mine else []
            if grpc_door:
                door["message"][body] = grpc_message(door["model"], texts)
                path.write_bytes(grpc_frame(door["message"][body]))
                headers = [h.lower() for h in headers]  # gRPC's metadata keys are lower case
            else:
                data = door["encode"](texts)
                if isinstance(data, tuple):  # binary: the JSON's length in a header of its own
                    data, length = data
                    headers.append(f"Inference-Header-Content-Length: {length}")
                path.write_bytes(data)
            door["headers"][body] = tuple(headers)
        door["metadata"] = (("authorization", f"Bearer {TOKEN}"),) if mine else ()
    return doors


def rest_json(tweets):
    return json.dumps({str(i): t for i, t in enumerate(tweets)}).encode()


def write_section(text, args, source):
    """Put the table in bench/RESULTS.md under its own heading, which make bench keeps."""
    path = ROOT / "bench" / "RESULTS.md"
    old = path.read_text() if path.exists() else "# Benchmark results\n"
    before, _, after = old.partition(SECTION)
    rest = after.partition("\n## ")
    tail = ("\n## " + rest[2]) if rest[1] else ""
    section = f"""{SECTION}

Latest `make bench-v2`: {date.today()}, {os.cpu_count()} cores, {args.rounds} rounds of
{args.seconds} s per door and body, the doors loaded in turn (the first moving on each round).
The service as `make api-start` starts it (2 gunicorn workers, GRPC_WORKERS={args.grpc_workers},
no job worker), every request naming `stable`; MLServer 1.7 with `parallel_workers`
{args.mlserver_workers} and `debug` off (no access log), serving the same model through
`bench/peer_mlserver.py`. Ours over TLS with the token checked; MLServer in plain text with no token
(it has neither). wrk loads the HTTPS doors (latency p50 and p99), h2load the gRPC doors (one
stream per connection; it gives mean and max latency). 1,000-tweet bodies: {source}.

{text}
"""
    path.write_text(before.rstrip("\n") + "\n\n" + section + tail)


if __name__ == "__main__":
    main()
