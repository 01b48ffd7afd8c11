"""Fixtures shared by the tests: the shipped model, the real data, the app and its client."""

import contextlib
import functools
import importlib.util
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest
from hypothesis import settings

# In CI, property-based tests replay the same examples every run, so a merge is never blocked by
# an example drawn for the first time; run locally they keep exploring.
settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    settings.load_profile("ci")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
# Every app and process a test starts keeps its aliases here, never in the project's
# .aliases.json, unless the test names a file of its own.
os.environ["ALIASES_FILE"] = os.path.join(
    tempfile.mkdtemp(prefix="sentiment-test-"), "aliases.json"
)

# tests/test_v2_clients.py runs in an environment of its own (.venv-clients: tritonclient and the
# KServe SDK, requirements-clients.txt), where this file is loaded too: so model and train (numpy,
# scikit-learn, ...) are imported where used, and that file is left out of every other run.
collect_ignore = [] if importlib.util.find_spec("tritonclient") else ["test_v2_clients.py"]


def pytest_report_header(config):
    if collect_ignore:
        return "tests/test_v2_clients.py: not here; make test runs it from .venv-clients"


@pytest.fixture(scope="session")
def shipped():
    """The model in artifacts/: tweet-sentiment, model.py's own."""
    import model

    return model.load()


@pytest.fixture(scope="session")
def default_model():
    """The model every door answers with when none is named: models.json's default."""
    return served_default().model


def served_default():
    """The registry.Served of models.json's default model."""
    import registry

    return registry.load_one().get()


@pytest.fixture(scope="session")
def data_path():
    """The 10K tweet data set; absent (a skip naming where it was looked for, outside CI)."""
    import train

    return shared_file(train.DEFAULT_DATA)


@pytest.fixture(scope="session")
def extra_data_path():
    """The 80K file of Sentiment140 tweets, as data_path."""
    import train

    return shared_file(train.LARGE_DATA)


@pytest.fixture(scope="session")
def semeval_path():
    """The SemEval file of tweets people labelled, as data_path."""
    import reference

    return shared_file(reference.REFERENCE_FILE)


def guard_refusal(reason):
    """What the guard's refusal names: `reason` where the labelled reference set is (../shared),
    and where a clone has none beside it, that there is no labelled evidence (it refuses then)."""
    import reference

    return reason if reference.REFERENCE_FILE.is_file() else "there is no labelled evidence"


def shared_file(path):
    """A file of ../shared (which a fresh clone lacks): its path, or absent() naming it."""
    if not path.is_file():
        absent(f"{path} is absent (the team's data, ../shared/data: see docs/testing.md)")
    return path


# Figures the reliability suite measured, printed at the end of every run (CI's output included).
FIGURES = []


def reporter(prefix=""):
    """A module's report(name, figures): its figures, named with the module's prefix, among
    those printed at the end of the run."""

    def report(name, figures):
        FIGURES.append((f"{prefix}{name}", json.dumps(figures)))

    return report


def pytest_terminal_summary(terminalreporter):
    if FIGURES:
        terminalreporter.section("reliability figures")
        for name, figures in FIGURES:
            terminalreporter.write_line(f"{name}: {figures}")


TOKEN = "test-token-0123456789"
OTHER_TOKEN = "rotated-token-abcdef"
ADMIN_TOKEN = "admin-token-fedcba987654"


@pytest.fixture(scope="session")
def app(tmp_path_factory):
    """The app with two valid tokens and small limits, as a test would configure it; the jobs
    door's embedded broker and store in a folder of its own."""
    import api

    return api.create_app(
        {
            "API_TOKEN": f"{TOKEN},{OTHER_TOKEN}",
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "ALIASES_FILE": str(tmp_path_factory.mktemp("aliases") / "aliases.json"),
            "MAX_TWEETS": 50,
            "MAX_TWEET_CHARS": 280,
            "MAX_BODY_BYTES": 64 * 1024,
            "JOBS_DIR": str(tmp_path_factory.mktemp("jobs")),
            "MAX_JOB_TWEETS": 100,
            "JOB_CHUNK_TWEETS": 10,
            "MAX_JOB_BODY_BYTES": 256 * 1024,
            "JOB_MAX_ACTIVE": 1000,  # jobs stay queued here: no worker takes them
            "AUTH_FAILURES": 1_000_000,  # the tests' wrong tokens all come from one address
        }
    )


@pytest.fixture
def client(app):
    return app.test_client()


# The real server, started as `make api-start` starts it.


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_health(url, cafile, process, seconds=180):
    """Poll /health until it answers 200; fail with the server's output if it dies."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"the server exited with {process.returncode}")
        try:
            context = ssl.create_default_context(cafile=str(cafile))  # once make has made it
            with urllib.request.urlopen(url + "/health", context=context, timeout=2) as r:
                if r.status == 200:
                    return
        except (OSError, ssl.SSLError):
            time.sleep(0.2)
    raise AssertionError(f"no answer from {url}/health within {seconds} s")


def stop(process):
    """Send SIGTERM to the server's process group and wait for it to exit."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def start_make(target, env, log_path):
    """`make <target>` in a session of its own (its group can be signalled), output to a log.

    The server's environment (.venv) is made first, once, here: make api-start makes it when it
    is missing, and three replicas started together (tests/test_cluster.py) on a fresh clone each
    made it at once, one failing as another replaced it (CI, 2026-12-07)."""
    environment_made()
    with log_path.open("wb") as log:
        return subprocess.Popen(
            ["make", "--no-print-directory", target],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )


@functools.cache
def environment_made():
    """Make the server's environment (make .venv/.installed) once a session; fail naming why."""
    made = subprocess.run(
        ["make", "--no-print-directory", ".venv/.installed"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    assert made.returncode == 0, f"make .venv/.installed failed:\n{made.stdout}{made.stderr}"


@contextlib.contextmanager
def running_server(folder, **env):
    """`make api-start` on a free port with its certificate, token file and jobs folder in folder.

    With no API_TOKEN, make api-start makes the token file. Yields a dict: port, folder, log (the
    server's whole output), process (make's).
    """
    port = free_port()
    environment = server_environment(folder, port, **env)
    log_path = folder / "server.log"
    process = start_make("api-start", environment, log_path)
    try:
        wait_for_health(f"https://127.0.0.1:{port}", folder / "server.crt", process)
        yield {"port": port, "folder": folder, "log": log_path, "process": process}
    finally:
        stop(process)


def server_environment(folder, port, **env):
    """The environment of `make api-start` on a port, its files in folder, as running_server
    starts it."""
    environment = {k: v for k, v in os.environ.items() if k not in ("API_TOKEN", "ADMIN_TOKEN")}
    environment.update(
        PORT=str(port),
        HOST="127.0.0.1",
        TLS_CERT=str(folder / "server.crt"),
        TLS_KEY=str(folder / "server.key"),
        API_TOKEN_FILE=str(folder / ".api_token"),
        ADMIN_TOKEN_FILE=str(folder / ".admin_token"),
        ALIASES_FILE=str(folder / "aliases.json"),
        WORKERS="2",
        JOBS_DIR=str(folder / "jobs"),  # the jobs door's embedded broker and store
        WORKER_METRICS_PORT=str(free_port()),
        **{"GRPC_PORT": str(free_port()), **env},  # the V2 door's gRPC processes' port
    )
    return environment


def absent(reason):
    """A peer a test needs is missing: skip on a developer's machine, fail in CI."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}; CI must have it")
    pytest.skip(reason)


def make_child(server):
    """The process `make ...-start` runs: gunicorn's master, rpc.py. Signals go to it, not make."""
    children = Path(f"/proc/{server['process'].pid}/task/{server['process'].pid}/children")
    return int(children.read_text().split()[0])


def job_workers(server):
    """The job workers' pids: children of the gunicorn master, of any of its threads (the
    supervisor's thread starts them again), run as `python -m jobs`."""
    master, pids = make_child(server), []
    for children in Path(f"/proc/{master}/task").glob("*/children"):
        for pid in children.read_text().split():
            with contextlib.suppress(OSError):
                if Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[1:3] == [b"-m", b"jobs"]:
                    pids.append(int(pid))
    return sorted(pids)


def workers(master):
    """The gunicorn workers of a master: its children but the job workers it supervises."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    return sorted(int(p) for p in children if is_gunicorn_worker(p))


def is_gunicorn_worker(pid):
    try:
        return b"gunicorn" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:  # it has just exited
        return False


def wait_for_workers(master, count, exclude=(), seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        current = [w for w in workers(master) if w not in exclude]
        if len(current) == count and len(workers(master)) == count:
            return current
        time.sleep(0.1)
    raise AssertionError(f"workers did not settle: {workers(master)}")


def evidence(stable, candidate, texts):
    """The guard's shadow figures for these tweets, as aliases/shadow.py keys them (the pair of
    scores): {"pairs": distinct keys, "agreeing": those both models label alike}. stable and
    candidate are model names."""
    import aliases

    ours = catalogue().get(stable).model.scores(list(texts))
    theirs = catalogue().get(candidate).model.scores(list(texts))
    keys = {
        aliases.evidence_key(a, b): (a >= 0.5) == (b >= 0.5)
        for a, b in zip(ours, theirs, strict=True)
    }
    return {"pairs": len(keys), "agreeing": sum(keys.values())}


@functools.cache
def catalogue():
    """Every model of models.json, loaded once for the tests that score beside the server."""
    import registry

    return registry.load()
