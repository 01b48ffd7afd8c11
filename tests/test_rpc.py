"""The ZeroRPC door: `make rpc-start` for real, called by the stock zerorpc 0.6.3 client."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import gevent
import pytest
import zerorpc
from conftest import ROOT, TOKEN, free_port, make_child, start_make

import contract

pytestmark = pytest.mark.slow
PAYLOAD = json.loads((ROOT / "payload.json").read_text())


@contextlib.contextmanager
def rpc_server(folder, **env):
    """`make rpc-start` on free ports; yields a dict: address, metrics port, log, process."""
    port, metrics = free_port(), free_port()
    environment = {
        **os.environ,
        "RPC_BIND": f"tcp://127.0.0.1:{port}",
        "RPC_METRICS_PORT": str(metrics),
        **env,
    }
    log_path = folder / "rpc.log"
    process = start_make("rpc-start", environment, log_path)
    address = f"tcp://127.0.0.1:{port}"
    started = {"address": address, "metrics": metrics, "log": log_path, "process": process}
    try:
        deadline = time.monotonic() + 60
        while "serving ZeroRPC" not in log_path.read_text():
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, "rpc-start did not start"
            time.sleep(0.1)
        yield started
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with rpc_server(tmp_path_factory.mktemp("rpc")) as started:
        yield started


@pytest.fixture
def rpc(server):
    client = zerorpc.Client(timeout=10)
    client.connect(server["address"])
    yield client
    client.close()


@pytest.mark.parametrize(
    "query, options", [("", None), ("?scores=true&explain=true", {"scores": True, "explain": True})]
)
def test_predict_answers_as_rest_does(rpc, client, query, options):
    rest = client.post(f"/api/v1/{TOKEN}/predict{query}", json=PAYLOAD).json
    assert rpc.predict(PAYLOAD, options) == rest
    assert list(rpc.predict(PAYLOAD, options)) == list(PAYLOAD)


def test_get_model_and_health(rpc, app, default_model):
    served = app.extensions["registry"].get()
    assert rpc.get_model() == contract.metadata(served, contract.LIMITS, 8 * 1024 * 1024)
    assert rpc.get_model_metadata(served.name) == rpc.get_model()
    health = rpc.health()
    assert (health["status"], health["model_version"]) == ("ok", default_model.version)
    assert health["models"] == {m["name"]: "loaded" for m in rpc.get_models()}


def test_every_model_is_addressable(rpc, app, client):
    """get_models lists what REST lists; each model answers through predict's "model" option,
    its own <name>_predict method and predict_with_model, as REST answers for it."""
    listing = client.get("/api/v1/models", headers={"Authorization": f"Bearer {TOKEN}"}).json
    assert rpc.get_models() == listing["models"]
    for item in listing["models"]:
        name, version = item["name"], item["version"]
        path = f"/api/v1/models/{name}/versions/{version}/predict?scores=true"
        rest = client.post(path, json=PAYLOAD, headers={"Authorization": f"Bearer {TOKEN}"}).json
        options = {"scores": True, "model": name}
        assert rpc.predict(PAYLOAD, options) == rest
        assert getattr(rpc, f"{name.replace('-', '_')}_predict")(PAYLOAD, {"scores": True}) == rest
        answer = rpc.predict_with_model(PAYLOAD, {**options, "version": version})
        assert answer == {"model": name, "model_version": version, "predictions": rest}


@pytest.mark.parametrize(
    "options, name, message",
    [
        ({"model": "nope"}, "UnknownModel", "404 Not Found: no model 'nope'; known models:"),
        ({"model": "tweet-sentiment", "version": "0"}, "UnknownModel", "has no version '0'"),
        ({"version": "0"}, "UnknownModel", "has no version '0'"),
        ({"model": 5}, "BadInput", "option model must be a string, got number"),
    ],
)
def test_unknown_models_are_named(rpc, options, name, message):
    with pytest.raises(zerorpc.RemoteError) as raised:
        rpc.predict(PAYLOAD, options)
    assert raised.value.name == name and message in raised.value.msg


@pytest.mark.parametrize(
    "args, name, message",
    [
        (([1, 2],), "BadInput", "400 Bad Request: tweets must be a JSON object"),
        (("one tweet",), "BadInput", "got string"),
        (({},), "BadInput", "must hold at least one tweet"),
        (({"1": 5, "2": None},), "Unprocessable", 'not a string (null, number): "1", "2"'),
        (({"1": "a" * 5001},), "Unprocessable", 'at most 5000 characters: "1"'),
        (
            ({str(i): "" for i in range(10_001)},),
            "TooLarge",
            "413 Request Entity Too Large: at most 10000 tweets",
        ),
        (({"1": "a"}, [True]), "BadInput", "options must be a map"),
        (({"1": "a"}, {"explian": True}), "BadInput", "unknown option(s) ['explian']"),
        (
            ({"1": "a"}, {"scores": 1}),
            "BadInput",
            "option scores must be true or false, got number",
        ),
    ],
)
def test_every_contract_error_is_a_remote_error_naming_its_kind(rpc, args, name, message):
    with pytest.raises(zerorpc.RemoteError) as caught:
        rpc.predict(*args)
    assert caught.value.name == name
    assert message in caught.value.msg
    assert not caught.value.traceback  # no stack trace leaves the server
    assert rpc.health()["status"] == "ok"


def test_an_unknown_method_is_a_remote_error(rpc):
    with pytest.raises(zerorpc.RemoteError) as caught:
        rpc.lookup("x")
    assert caught.value.name == "NameError" and "lookup" in caught.value.msg


def test_eight_concurrent_clients(server):
    def calls(n):
        client = zerorpc.Client(timeout=20)
        client.connect(server["address"])
        try:
            for i in range(25):
                tweet = "I love it" if (n + i) % 2 else "I hate this, worst day ever"
                assert client.predict({"t": tweet}) == {
                    "t": "Positive" if (n + i) % 2 else "Negative"
                }
            return 25
        finally:
            client.close()

    jobs = [gevent.spawn(calls, n) for n in range(8)]
    gevent.joinall(jobs, timeout=60, raise_error=True)
    assert [j.value for j in jobs] == [25] * 8


def test_metrics_and_log_lines_name_calls_never_tweets(rpc, server):
    rpc.predict({"1": "a secret about zebras"})
    with urllib.request.urlopen(f"http://127.0.0.1:{server['metrics']}/metrics", timeout=5) as r:
        text = r.read().decode()
    assert 'rpc_calls_total{method="predict",outcome="ok"}' in text
    assert "rpc_call_seconds_bucket" in text
    log = server["log"].read_text()
    assert '"message": "rpc call"' in log and "zebras" not in log


def test_term_answers_the_call_in_flight_and_exits_0(tmp_path):
    tweets = {str(i): f"tweet number {i}, quite happy :)" for i in range(10_000)}
    with rpc_server(tmp_path) as started:
        client = zerorpc.Client(timeout=30)
        client.connect(started["address"])
        pending = client.predict(tweets, **{"async": True})  # 0.6.3 spells it so
        gevent.sleep(0.05)  # the call has left; the server is labelling
        os.kill(make_child(started), signal.SIGTERM)
        answer = pending.get(timeout=30)
        assert list(answer) == list(tweets)
        assert started["process"].wait(timeout=20) == 0
        client.close()
    assert '"message": "stopped"' in started["log"].read_text()


def test_hup_loads_the_artifacts_again(server, rpc):
    os.kill(make_child(server), signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "reloaded the model" not in server["log"].read_text():
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert rpc.health()["status"] == "ok"


@pytest.mark.parametrize("bind", ["tcp://0.0.0.0:4299", "tcp://*:4299", "tcp://192.0.2.1:4299"])
def test_a_network_address_is_refused_without_the_opt_in(bind):
    result = subprocess.run(
        [sys.executable, "rpc.py"],
        cwd=ROOT,
        env={**os.environ, "RPC_BIND": bind},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert "RPC_ALLOW_UNAUTHENTICATED_NETWORK=yes" in result.stderr
    assert "Traceback" not in result.stderr


def test_readme_example_and_listing_print_what_the_readme_says(server):
    readme = (ROOT / "docs" / "rpc.md").read_text()
    section = readme.split("<!-- rpc example: tests/test_rpc.py runs it -->", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    printed = section.split("```text\n", 1)[1].split("```", 1)[0]
    listing = readme.split("<!-- rpc listing -->", 1)[1].split("```text\n", 1)[1].split("```")[0]
    script = code.replace("tcp://127.0.0.1:4242", server["address"])
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == printed
    command = [os.path.join(os.path.dirname(sys.executable), "zerorpc"), server["address"]]
    assert subprocess.run(command, capture_output=True, text=True, timeout=30).stdout == listing
