"""End to end: `make api-start` for real (gunicorn, TLS, a free port) and the README's curl."""

import json
import os
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from conftest import running_server

import model

ROOT = Path(__file__).resolve().parent.parent
README_CURL = (
    "curl --cacert server.crt -H 'Content-Type: application/json' -d @payload.json \\\n"
    "    https://localhost:5000/api/v1/$(head -n1 .api_token)/predict"
)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`make api-start` with no API_TOKEN, a fresh certificate and token file, on a free port."""
    with running_server(tmp_path_factory.mktemp("server")) as started:
        yield started


def test_where_the_core_compiles_the_server_parses_http_in_c_too(tmp_path):
    """make builds core/ and gunicorn's C parser (requirements-compiled.txt) where a compiler is:
    the server's environment has both, and gunicorn.conf.py asks gunicorn for the parser."""
    python = str(ROOT / ".venv" / "bin" / "python")
    if subprocess.run([python, "-c", "import sentiment_core"]).returncode != 0:
        pytest.skip("no compiled core in .venv: no C compiler here")
    asked = "import runpy; print(runpy.run_path('gunicorn.conf.py')['http_parser'])"
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}  # else the conf makes one
    result = subprocess.run(
        [python, "-c", asked], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert result.stdout.strip() == "fast", result.stderr[-2000:]


def curl(*args, cwd=None):
    return subprocess.run(["curl", "-sS", *args], capture_output=True, text=True, cwd=cwd)


def test_readme_curl_gets_the_eight_labels(server):
    readme = (ROOT / "README.md").read_text()
    assert README_CURL in readme
    printed = server["log"].read_text()
    assert README_CURL.replace("5000", str(server["port"])) in printed.replace(
        str(server["folder"]) + "/", ""
    )
    folder = server["folder"]
    command = (
        README_CURL.replace("5000", str(server["port"]))
        .replace("server.crt", str(folder / "server.crt"))
        .replace(".api_token", str(folder / ".api_token"))
    )
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    payload = json.loads((ROOT / "payload.json").read_text())
    answer = json.loads(result.stdout)
    assert list(answer) == [str(i) for i in range(1, 9)]
    assert list(answer.values()) == model.run(list(payload.values()))
    assert list(answer.values()) == ["Positive", "Negative"] * 4


def test_certificate_verifies_for_localhost_and_127_0_0_1(server):
    for host in ("localhost", "127.0.0.1"):
        url = f"https://{host}:{server['port']}/ready"
        result = curl("--cacert", str(server["folder"] / "server.crt"), url)
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["status"] == "ready"


def test_plain_http_is_refused(server):
    result = curl("--max-time", "5", f"http://127.0.0.1:{server['port']}/health")
    assert result.returncode != 0
    assert '"status"' not in result.stdout


def tls_client(version):
    """A client willing to speak exactly one protocol version, old ones included."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    context.minimum_version = context.maximum_version = version
    return context


def handshake(port, version):
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        tls_client(version).wrap_socket(raw) as tls,
    ):
        return tls.version()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # ssl.TLSVersion.TLSv1_1 itself
def test_tls_older_than_1_2_is_refused_by_the_server(server):
    assert handshake(server["port"], ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
    assert handshake(server["port"], ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
    for old in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION|protocol version"):
            handshake(server["port"], old)


def test_key_and_token_file_are_readable_by_their_owner_only(server):
    for name in ("server.key", ".api_token"):
        mode = (server["folder"] / name).stat().st_mode & 0o777
        assert mode == 0o600, f"{name} has mode {oct(mode)}"
    assert len((server["folder"] / ".api_token").read_text().strip()) == 64


def test_server_output_holds_neither_token_nor_tweets(server):
    token = (server["folder"] / ".api_token").read_text().strip()
    payload = json.loads((ROOT / "payload.json").read_text())
    url = f"https://127.0.0.1:{server['port']}/api/v1/{token}/predict"
    curl("-k", "-H", "Content-Type: application/json", "-d", json.dumps(payload), url)
    curl("-k", "-H", "Content-Type: application/json", "-d", "[1]", url)
    curl("-k", url)
    time.sleep(0.5)
    output = server["log"].read_text()
    assert '"route": "/api/v1/<token>/predict"' in output
    assert token not in output
    for tweet in payload.values():
        assert tweet not in output


def test_the_date_header_is_now_on_every_answer(server):
    """gunicorn.conf.py makes the Date header's text once a second: it still moves on."""
    import email.utils
    import http.client

    context = ssl.create_default_context(cafile=str(server["folder"] / "server.crt"))
    connection = http.client.HTTPSConnection("127.0.0.1", server["port"], context=context)
    dates = []
    for _ in range(3):  # on one kept-alive connection: one worker
        connection.request("GET", "/health")
        response = connection.getresponse()
        response.read()
        dates.append(email.utils.parsedate_to_datetime(response.headers["Date"]).timestamp())
        assert abs(dates[-1] - time.time()) < 2, response.headers["Date"]
        time.sleep(1.1)
    connection.close()
    assert dates[0] < dates[1] < dates[2], dates


def test_request_ids_made_by_the_workers_are_all_different(server):
    """Each worker makes its own ids (random reseeds after the fork); 16 clients on fresh
    connections reach both workers."""
    import concurrent.futures
    import urllib.request

    context = ssl.create_default_context(cafile=str(server["folder"] / "server.crt"))
    url = f"https://127.0.0.1:{server['port']}/health"

    def request_id(_):
        with urllib.request.urlopen(url, context=context, timeout=10) as response:
            return response.headers["X-Request-ID"]

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(request_id, range(64)))
    assert len(set(ids)) == 64
    assert all(len(i) == 32 and set(i) <= set("0123456789abcdef") for i in ids)


@pytest.mark.slow
def test_metrics_and_log_lines_held_in_memory_are_all_written_at_term(tmp_path):
    """A worker holds its metrics and request lines up to METRICS_FLUSH_MS; a stop loses none of
    them. Held for a minute here, so that only the flush on the way out can write them: every
    request is counted in the metrics' files and logged."""
    import http.client
    import os

    from conftest import stop
    from prometheus_client import CollectorRegistry, multiprocess

    metrics = tmp_path / "metrics"
    metrics.mkdir()
    sent = 0
    held = {"PROMETHEUS_MULTIPROC_DIR": str(metrics), "METRICS_FLUSH_MS": "60000"}
    with running_server(tmp_path, **held) as started:
        token = (tmp_path / ".api_token").read_text().split()[0]
        context = ssl.create_default_context(cafile=str(tmp_path / "server.crt"))
        body = Path(__file__).resolve().parent.parent.joinpath("payload.json").read_bytes()
        connections = [
            http.client.HTTPSConnection("127.0.0.1", started["port"], context=context)
            for _ in range(4)
        ]
        for _ in range(100):
            for connection in connections:
                connection.request(
                    "POST", f"/api/v1/{token}/predict", body, {"Content-Type": "application/json"}
                )
                assert connection.getresponse().read()
                sent += 1
        for connection in connections:
            connection.close()
        stop(started["process"])  # at once: what is held must be written on the way out
        log = started["log"].read_text()
    collector = CollectorRegistry()
    multiprocess.MultiProcessCollector(collector, path=str(metrics))
    counted = sum(
        sample.value
        for family in collector.collect()
        if family.name == "api_requests"
        for sample in family.samples
        if sample.name == "api_requests_total" and sample.labels["route"].endswith("/predict")
    )
    logged = [
        line
        for line in log.splitlines()
        if '"message": "request"' in line and '"route": "/api/v1/<token>/predict"' in line
    ]
    assert (counted, len(logged)) == (sent, sent) == (400, 400)
    assert os.listdir(metrics), "the metrics' files are where the test put them"
