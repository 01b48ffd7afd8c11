"""Where a worker's time goes under load, by layer: a sampling profile of the running server.

    make profile                                  # the service, payload.json at 16 connections
    .venv-dev/bin/python bench/profile_workers.py --server floor --body big --seconds 20
    .venv-dev/bin/python bench/profile_workers.py --door v2-json --body big  # the V2 REST infer

Starts a server as `make bench` does (the service as `make api-start` starts it, or the floor, or
the model alone, or the service's code on gunicorn's asgi worker, `--server asgi_probe`), loads it
with wrk, and samples each of its gunicorn workers with py-spy (from the
benchmark's environment, .venv-bench) while the load runs. Each sample is given to the layer of
the innermost frame that belongs to one (a call into the standard library counts for the layer
that made it), and the table gives each layer's share of the workers' busy samples: idle time,
waiting for the network, is not sampled. Code in C (the model's core, the json module's scanner,
OpenSSL) counts for the Python frame that called it.
"""

import argparse
import collections
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import profile_inprocess

import bench  # bench/bench.py: this script's folder is first on the path

PY_SPY = bench.BENCH_BIN / "py-spy"

# (layer, the files or folders its frames come from), most specific first.
LAYERS = (
    ("the model (model.py and its compiled core)", ("model.py",)),
    ("the contract's checks (contract.py)", ("contract.py",)),
    ("JSON in and out (json)", ("json/",)),
    ("metrics (prometheus_client)", ("prometheus_client/",)),
    ("log lines (service.py, logging)", ("service.py", "logging/")),
    (
        "the app's own code (api.py, v2/, a bench app)",
        ("api.py", "v2/", "floor.py", "model_only.py", "asgi_probe.py"),
    ),
    ("Flask and Werkzeug", ("flask/", "werkzeug/", "blinker/", "flask_sock/")),
    ("TLS (ssl, gevent's ssl)", ("ssl.py", "gevent/_ssl3.py", "gevent/ssl.py")),
    ("gunicorn (HTTP parsing, the WSGI server)", ("gunicorn/", "gunicorn.conf.py")),
    ("gevent (sockets, the event loop)", ("gevent/",)),
    ("asyncio (the asgi worker's event loop)", ("asyncio/",)),
)
OTHER = "other"


def layer_of(stack):
    """Return the layer of a sample: that of its innermost frame that has one."""
    for frame in reversed(stack):
        # A frame is "function (path/to/file.py:line)"; match whole parts of the path.
        path = "/" + frame[frame.rfind("(") + 1 : frame.rfind(":")]
        for layer, places in LAYERS:
            if any(f"/{p}" in path if p.endswith("/") else path.endswith(f"/{p}") for p in places):
                return layer
    return OTHER


def read_samples(path):
    """Return (stack as a list of frames, count) from py-spy's raw (collapsed) output."""
    for line in Path(path).read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack:
            yield stack.split(";"), int(count)


def shares(paths):
    """Return {layer: share of samples}, the innermost frames' shares, and the sample count."""
    layers, leaves = collections.Counter(), collections.Counter()
    for path in paths:
        for stack, count in read_samples(path):
            layers[layer_of(stack)] += count
            leaves[stack[-1]] += count
    total = sum(layers.values()) or 1
    return (
        {k: v / total for k, v in layers.most_common()},
        {k: v / total for k, v in leaves.most_common(15)},
        total,
    )


def sample(pid, path, seconds, rate):
    """Start py-spy on a process for a number of seconds, writing collapsed stacks to path."""
    command = [str(PY_SPY), "record", "--pid", str(pid), "--rate", str(rate), "--duration",
               str(seconds), "--format", "raw", "--output", str(path)]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def profile(name, body, connections, seconds, rate, folder, door="rest"):
    """Load one server with wrk and sample its workers; return the raw profile files and wrk's
    figures. door: our REST predict, or the same tweets to the Open Inference Protocol's REST
    infer as JSON or in the binary form (profile_inprocess.request_of's bodies), the service's."""
    bigs = bench.prepare(folder, bench.load_tweets()[0])
    server = bench.Server(name, bench.GUNICORN_SERVERS[name], folder, big_bodies=bigs)
    body = {"payload": server.body, "big": bigs[1000], "big10000": bigs[10000]}[body]
    url, headers = server.url, ()
    if door != "rest":
        tweets = list(json.loads(Path(body).read_bytes()).values())
        path, data, fields = profile_inprocess.request_of(door, tweets, bench.TOKEN)
        body = folder / f"{door}.bin"
        body.write_bytes(data)
        url = server.url[: server.url.index("/api/")] + path
        headers = tuple(f"{k}: {v}" for k, v in fields.items())
    try:
        bench.wrk(url, body, connections, 2, headers)  # warm up
        outputs = [folder / f"{name}-{pid}.txt" for pid in server.workers()]
        samplers = [sample(int(path.stem.split("-")[-1]), path, seconds, rate) for path in outputs]
        load = bench.wrk(url, body, connections, seconds, headers)
        for sampler in samplers:
            sampler.wait(timeout=seconds + 30)
    finally:
        server.stop()
    return outputs, load


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", choices=tuple(bench.GUNICORN_SERVERS), default="service")
    parser.add_argument("--body", choices=("payload", "big", "big10000"), default="payload",
                        help="payload.json, or 1,000 or 10,000 real tweets a request")  # fmt: skip
    parser.add_argument("--door", choices=("rest", "v2-json", "v2-binary"), default="rest",
                        help="our REST predict, or the V2 REST infer (service)")  # fmt: skip
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--seconds", type=int, default=15)
    parser.add_argument("--rate", type=int, default=250, help="samples a second, per worker")
    args = parser.parse_args(argv)
    if not PY_SPY.exists():
        sys.exit(f"py-spy is needed: {PY_SPY} (make profile installs .venv-bench)")
    if args.door != "rest" and args.server != "service":
        sys.exit("--door v2-json and v2-binary are the service's: --server service")
    with tempfile.TemporaryDirectory() as tmp:
        files, load = profile(args.server, args.body, args.connections, args.seconds, args.rate,
                              Path(tmp), args.door)  # fmt: skip
        layers, leaves, total = shares(files)
    print(f"{args.server}, {args.door} {args.body} at {args.connections} connections for "
          f"{args.seconds} s: {load['requests_per_s']:,.0f} requests/s, {total:,} busy samples, "
          f"{load['errors']} errors")  # fmt: skip
    print("\n| Layer | Share of the workers' busy time |\n| --- | --: |")
    for layer, share in layers.items():
        print(f"| {layer} | {share:.1%} |")
    print("\nInnermost frames:")
    for frame, share in leaves.items():
        print(f"  {share:6.1%}  {frame}")


if __name__ == "__main__":
    main()
