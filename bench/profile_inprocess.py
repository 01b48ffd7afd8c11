"""Where a 1,000-tweet request's time goes in-process, by layer: no network, TLS or gunicorn.

    .venv-dev/bin/python bench/profile_inprocess.py                  # this checkout, 3 rounds
    .venv-dev/bin/python bench/profile_inprocess.py --door v2-json   # the V2 door's JSON
    .venv-dev/bin/python bench/profile_inprocess.py --checkout ../other --rounds 3
    .venv-dev/bin/python bench/profile_inprocess.py --checkout ../other \
        --python ../other/.venv/bin/python --checkout . --python .venv/bin/python  # own cores

Each round starts a process from the server's environment (.venv) that builds the app as
`make api-start` does (api.create_app, its WSGI callable with the fast path) from the checkout
named, and sends it the same request again and again: POST /api/v1/TOKEN/predict with the data's
first 1,000 tweets, as `make bench` sends them. py-spy (from .venv-bench, as `make profile`)
samples it meanwhile, and the samples are given to bench/profile_workers.py's layers. --door
v2-json sends the same tweets to the Open Inference Protocol's REST route, POST
/v2/models/stable/infer, as JSON asking for every output (labels and scores); v2-binary in
Triton's binary tensor form both ways, as tritonclient does (bench/v2.py's bodies). The share
outside the model is everything but the model's layer: parsing, the contract's checks, answering,
metrics, log lines, Flask and api.py. `--checkout` runs another checkout's code the same way (an
export of main, say), so that two versions are compared by one script, round by round in turn.
"""

import argparse
import collections
import contextlib
import csv
import io
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = ROOT.parent / "shared" / "data" / "tweet_sentiment_10K.csv"
TOKEN = "profile-" + os.urandom(8).hex()
MODEL = "the model (model.py and its compiled core)"


def request_of(door, tweets, token=TOKEN):
    """(path, body, headers) of the request of these tweets a door is sent."""
    if door == "rest":
        body = json.dumps({str(i): t for i, t in enumerate(tweets)}).encode()
        return f"/api/v1/{token}/predict", body, {}
    # As bench/v2.py's v2_json and v2_binary make them (imported, its name would hide v2/).
    infer, headers = "/v2/models/stable/infer", {"Authorization": f"Bearer {token}"}
    tensor = {"name": "text", "datatype": "BYTES", "shape": [len(tweets)]}
    if door == "v2-json":
        return infer, json.dumps({"inputs": [{**tensor, "data": tweets}]}).encode(), headers
    data = b"".join(struct.pack("<I", len(t.encode())) + t.encode() for t in tweets)
    tensor["parameters"] = {"binary_data_size": len(data)}
    head = json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}}).encode()
    body, length = head + data, len(head)
    return infer, body, {**headers, "Inference-Header-Content-Length": str(length)}


def serve_loop(checkout, seconds, tweets, door):
    """In the child: build the app from checkout, say "ready", then answer the request again and
    again for a number of seconds; print the requests made and the µs a request."""
    path, body, headers = request_of(door, tweets)
    os.chdir(checkout)
    os.environ.setdefault("NLTK_DATA", str(ROOT.parent / "shared" / "nltk_data"))  # as make sets
    sys.path.insert(0, str(checkout))
    with tempfile.TemporaryDirectory() as tmp, open(os.devnull, "w", buffering=1) as log:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tmp  # as under gunicorn
        from werkzeug.test import EnvironBuilder

        import api

        config = {"API_TOKEN": TOKEN, "ALIASES_FILE": str(Path(tmp) / "aliases.json")}
        app = api.create_app(config).wsgi_app
        environ = EnvironBuilder(
            path=path, method="POST", data=body, content_type="application/json", headers=headers
        ).get_environ()

        def start_response(status, headers, exc_info=None):
            if not status.startswith("200"):
                raise RuntimeError(f"the 1,000-tweet request got {status}")

        def request():
            response = app({**environ, "wsgi.input": io.BytesIO(body)}, start_response)
            answer = b"".join(response)
            if hasattr(response, "close"):  # as a WSGI server does
                response.close()
            return answer

        with contextlib.redirect_stderr(log):  # the service's log lines, written as in service
            if door == "rest" and len(json.loads(request())) != len(tweets):
                raise RuntimeError("the answer does not label every tweet")
            for _ in range(50):  # warm: the model's token cache, as a running service's is
                request()
            print("ready", flush=True)
            count, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                request()
                count += 1
            elapsed = time.perf_counter() - start
    print(json.dumps({"requests": count, "us_per_request": elapsed / count * 1e6}), flush=True)


def one_round(checkout, seconds, rate, python, folder, door):
    """Profile one process serving from checkout; return (layers, leaves, samples, µs a request)."""
    import profile_workers  # bench/: the layers and py-spy (it imports bench.py: the dev venv)

    child = subprocess.Popen(
        [python, __file__, "--child", "--checkout", str(checkout), "--seconds", str(seconds),
         "--door", door],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the app in {checkout} did not start")
        output = folder / f"{child.pid}.txt"
        profile_workers.sample(child.pid, output, seconds, rate).wait(timeout=seconds + 30)
        figures = json.loads(child.stdout.readline())
    finally:
        child.wait(timeout=seconds + 30)
    layers, leaves, total = request_shares(output)
    return layers, leaves, total, figures["us_per_request"]


def request_shares(path):
    """Return {layer: share}, the innermost frames' shares and the sample count, of the samples
    taken inside a request: the process's other threads (the aliases' follower, the metrics'
    flusher), asleep most of the time, are left out."""
    import profile_workers

    layers, leaves = collections.Counter(), collections.Counter()
    for stack, count in profile_workers.read_samples(path):
        if any(frame.startswith("serve_loop.<locals>.request (") for frame in stack):
            layers[profile_workers.layer_of(stack)] += count
            leaves[stack[-1]] += count
    total = sum(layers.values()) or 1
    return (
        {k: v / total for k, v in layers.most_common()},
        {k: v / total for k, v in leaves.most_common(15)},
        total,
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    help = "a checkout to profile (again for several, in turn); default: this one"
    parser.add_argument("--checkout", type=Path, action="append", help=help)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=10, help="of sampling, each round")
    parser.add_argument("--rate", type=int, default=250, help="samples a second")
    parser.add_argument("--python", action="append",
                        help="the server's environment (default: make's .venv); again for each "
                        "--checkout, in turn, where each needs its own compiled core")  # fmt: skip
    parser.add_argument("--door", choices=("rest", "v2-json", "v2-binary"), default="rest",
                        help="the route sent the request (default: our REST)")  # fmt: skip
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not DATA.is_file():
        sys.exit(f"the tweets are needed: {DATA}")
    with DATA.open(newline="", encoding="utf-8") as f:
        tweets = [row["text"] for row in csv.DictReader(f)][:1000]
    checkouts = [c.resolve() for c in args.checkout or [ROOT]]
    pythons = args.python or [str(ROOT / ".venv" / "bin" / "python")]
    if len(pythons) not in (1, len(checkouts)):
        parser.error("give --python once, or once for each --checkout")
    python_of = dict(zip(checkouts, pythons * len(checkouts) if len(pythons) == 1 else pythons,
                         strict=True))  # fmt: skip
    if args.child:
        return serve_loop(checkouts[0], args.seconds, tweets, args.door)

    results = {c: [] for c in checkouts}
    with tempfile.TemporaryDirectory() as tmp:
        for number in range(1, args.rounds + 1):
            first = (number - 1) % len(checkouts)  # each first in turn: a slow spell falls on each
            for checkout in checkouts[first:] + checkouts[:first]:
                python = python_of[checkout]
                layers, _, total, us = one_round(
                    checkout, args.seconds, args.rate, python, Path(tmp), args.door
                )
                results[checkout].append(layers)
                outside = 1 - layers.get(MODEL, 0)
                print(f"round {number}, {checkout}: {us:,.0f} µs a request, {total:,} samples, "
                      f"outside the model {outside:.1%}", flush=True)  # fmt: skip
    # One table: a column for each checkout's round, a row for each layer.
    columns = [(c.name, n + 1, layers) for c, rounds in results.items() for n, layers in
               enumerate(rounds)]  # fmt: skip
    names = sorted({name for *_, layers in columns for name in layers},
                   key=lambda name: -columns[0][2].get(name, 0))  # fmt: skip
    print(f"\n| Layer | {' | '.join(f'{c} {n}' for c, n, _ in columns)} |")
    print(f"| --- |{' --: |' * len(columns)}")
    for name in names:
        print(f"| {name} | {' | '.join(f'{layers.get(name, 0):.1%}' for *_, layers in columns)} |")
    outside = " | ".join(f"{1 - layers.get(MODEL, 0):.1%}" for *_, layers in columns)
    print(f"| **outside the model** | {outside} |")


if __name__ == "__main__":
    main()
