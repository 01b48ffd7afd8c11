"""Batch jobs at scale: a 1,000,000-tweet job from POST to done, with one worker and with two.

    make bench-jobs         # minutes; make bench runs it too. Writes bench/jobs.json

For each backend (the embedded default; RabbitMQ and PostgreSQL when they answer here) and each
number of workers, `make api-start` serves with that many supervised workers; the job is a CSV
of the 10,000 tweets of the data set repeated (ids unique), posted over HTTPS. Measured: the
seconds from POST to 202 (the upload, checked and stored) and to done, tweets/s, the peak RSS of
the gunicorn worker that took the upload, and, on the embedded default with one worker,
predict's latency for payload.json (wrk, 4 connections) with no job running and while this job
runs.
"""

import csv
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from bench import (  # noqa: E402
    PAYLOAD,
    TOKEN,
    Server,
    children,
    is_gunicorn,
    load_tweets,
    status_kb,
    wrk,
)

ROWS = 1_000_000
SECTION = "## Batch jobs"


def postgres_url():
    """A PostgreSQL server to make a database on, or None."""
    import sqlalchemy as sa

    url = os.environ.get("TEST_POSTGRES_URL", "postgresql+psycopg:///postgres")
    try:
        engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
        with engine.connect() as db:
            db.execute(sa.text("SELECT 1"))
        return engine
    except Exception:
        return None


def rabbitmq_answers():
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", 5672)) == 0


class Peak:
    """The largest RSS of any gunicorn worker, sampled every 20 ms while running."""

    def __init__(self, master):
        self.master, self.peak, self.running = master, 0, True
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def sample(self):
        while self.running:
            for pid in children(self.master):
                try:
                    if is_gunicorn(pid):
                        self.peak = max(self.peak, status_kb(pid, "VmRSS"))
                except (OSError, KeyError):
                    pass
            time.sleep(0.02)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *_):
        self.running = False
        self.thread.join()


def master_of(server):
    return next(p for p in children(server.process.pid) if is_gunicorn(p))


def request(server, path, body=None, content_type=None):
    headers = {"Authorization": f"Bearer {TOKEN}"}
    if content_type:
        headers["Content-Type"] = content_type
    url = f"https://127.0.0.1:{server.port}{path}"
    req = urllib.request.Request(url, data=body, headers=headers, method="POST" if body else "GET")
    if body is not None and hasattr(body, "read"):
        req.add_header("Content-Length", str(os.fstat(body.fileno()).st_size))
    with urllib.request.urlopen(req, context=server.context, timeout=300) as response:
        return json.loads(response.read())


def run_job(server, path):
    """POST the CSV; return (seconds to 202, seconds to done, the job id)."""
    start = time.perf_counter()
    with path.open("rb") as body:
        job = request(server, "/api/v1/jobs", body, "text/csv")
    accepted = time.perf_counter() - start
    while request(server, f"/api/v1/jobs/{job['job_id']}")["status"] != "done":
        time.sleep(0.2)
    return accepted, time.perf_counter() - start, job["job_id"]


def measure(name, env, workers, folder, csv_path, latency=False):
    env = {**env, "JOB_WORKERS_WITH_API": str(workers), "WORKERS": "2"}
    env["JOBS_DIR"] = str(folder / f"jobs-{uuid.uuid4().hex[:8]}")
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        server = Server(f"jobs-{name}-{workers}", ["make", "--no-print-directory", "api-start"],
                        folder)  # fmt: skip
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    figures = {}
    try:
        time.sleep(4)  # the workers connect to the broker
        if latency:
            figures["predict_idle"] = wrk(server.url, PAYLOAD, 4, 5)
        with Peak(master_of(server)) as peak:
            accepted, done, _ = run_job(server, csv_path)
        figures.update(
            seconds_to_202=accepted,
            seconds_to_done=done,
            tweets_per_s=ROWS / done,
            upload_peak_rss_mb=peak.peak / 1024,
        )
        if latency:  # a second job, and predict loaded while its worker labels it
            with csv_path.open("rb") as body:
                job = request(server, "/api/v1/jobs", body, "text/csv")["job_id"]
            time.sleep(2)
            figures["predict_during_job"] = wrk(server.url, PAYLOAD, 4, 5)
            state = request(server, f"/api/v1/jobs/{job}")
            figures["job_running_throughout"] = state["status"] == "running"
            while request(server, f"/api/v1/jobs/{job}")["status"] != "done":
                time.sleep(0.2)
    finally:
        server.stop()
    print(
        f"  {name}, {workers} worker(s): POST to 202 {figures['seconds_to_202']:.1f} s, to done "
        f"{figures['seconds_to_done']:.1f} s, {figures['tweets_per_s']:,.0f} tweets/s",
        flush=True,
    )
    return figures


def main():
    tweets, source = load_tweets()
    backends = ["embedded"]
    engine = postgres_url()
    if engine is not None and rabbitmq_answers():
        backends.append("rabbitmq+postgresql")
    else:
        print("RabbitMQ or PostgreSQL does not answer here: the embedded default only", flush=True)
    figures = {"rows": ROWS, "tweets": source, "cores": os.cpu_count(), "backends": {}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = {**os.environ, "TLS_CERT": str(folder / "server.crt"),
               "TLS_KEY": str(folder / "server.key")}  # fmt: skip
        subprocess.run(["make", "-s", "certs"], cwd=ROOT, env=env, check=True)
        csv_path = folder / "tweets.csv"
        with csv_path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(["id", "text"])
            for i in range(ROWS):
                writer.writerow([f"t{i}", tweets[i % len(tweets)]])
        print(f"{ROWS:,} rows of {source} ({csv_path.stat().st_size / 1e6:.0f} MB)", flush=True)
        for name in backends:
            results = {}
            for workers in (1, 2):
                env = {}
                database = None
                if name != "embedded":
                    import sqlalchemy as sa

                    database = f"sentiment_bench_{uuid.uuid4().hex[:10]}"
                    with engine.connect() as db:
                        db.execute(sa.text(f'CREATE DATABASE "{database}"'))
                    env = {
                        "BROKER_URL": "amqp://guest@127.0.0.1:5672//",
                        "JOB_STORE_URL": engine.url.set(database=database).render_as_string(
                            hide_password=False
                        ),
                    }
                try:
                    results[workers] = measure(
                        name, env, workers, folder, csv_path,
                        latency=(name == "embedded" and workers == 1),
                    )  # fmt: skip
                finally:
                    if database:
                        with engine.connect() as db:
                            db.execute(sa.text(f'DROP DATABASE "{database}" WITH (FORCE)'))
            figures["backends"][name] = results
    (ROOT / "bench" / "jobs.json").write_text(json.dumps(figures, indent=2) + "\n")
    text = table(figures)
    print("\n" + text)
    write_section(text, figures)


def table(figures):
    rows = [
        f"| {ROWS:,} tweets, CSV | POST to 202 (s) | POST to done (s) | tweets/s | x one worker "
        "| upload peak RSS (MB) |",
        "| --- | --: | --: | --: | --: | --: |",
    ]
    for name, results in figures["backends"].items():
        one = results[1]["tweets_per_s"]
        for workers, r in results.items():
            rows.append(
                f"| {name}, {workers} worker{'s' * (workers > 1)} | {r['seconds_to_202']:.1f} | "
                f"{r['seconds_to_done']:.1f} | {r['tweets_per_s']:,.0f} | "
                f"{r['tweets_per_s'] / one:.2f} | {r['upload_peak_rss_mb']:.0f} |"
            )
    embedded = figures["backends"]["embedded"][1]
    idle, busy = embedded["predict_idle"], embedded["predict_during_job"]
    rows += [
        "",
        "| `payload.json` on predict, wrk, 4 connections, 5 s | requests/s | p50 (ms) | p99 (ms) |",
        "| --- | --: | --: | --: |",
        f"| no job running | {idle['requests_per_s']:,.0f} | {idle['p50_ms']:.1f} | "
        f"{idle['p99_ms']:.1f} |",
        f"| while a 1,000,000-tweet job runs (embedded, 1 worker) | "
        f"{busy['requests_per_s']:,.0f} | {busy['p50_ms']:.1f} | {busy['p99_ms']:.1f} |",
    ]
    if not embedded["job_running_throughout"]:
        rows.append("\nThe job was done before the load ended: the second row is partly idle.")
    return "\n".join(rows)


def write_section(table_text, figures):
    """Put the table in bench/RESULTS.md under its own heading, which make bench keeps."""
    path = ROOT / "bench" / "RESULTS.md"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    before, _, after = text.partition(SECTION)
    rest = after.partition("\n## ")
    tail = ("\n## " + rest[2]) if rest[1] else ""
    section = f"""{SECTION}

Latest `make bench-jobs`: {date.today()}, {figures["cores"]} cores, {figures["tweets"]}. A CSV of
{ROWS:,} rows posted over HTTPS to `make api-start` with 1 and then 2 supervised workers; POST to
202 is the upload streamed, checked by the contract and stored; POST to done adds the labelling.
The upload's peak RSS is the largest gunicorn worker's, sampled every 20 ms. The two cores are
shared by the API, the workers, the broker, the store and the client.

{table_text}
"""
    path.write_text(before.rstrip("\n") + "\n\n" + section + tail)


if __name__ == "__main__":
    main()
