"""The websocket against the real server (`make api-start`, 2 workers) over verified TLS."""

import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import time
import urllib.request

import pytest
import websocket
from conftest import ROOT, TOKEN, make_child, running_server, served_default, wait_for_workers

pytestmark = pytest.mark.slow
PAYLOAD = json.loads((ROOT / "payload.json").read_text())
MAX_BYTES = 64 * 1024
DEFAULT = served_default()  # the model that answers when a message names none
REQUEST = '{"type": "prediction_request", "request_id": "x", '  # the start of a message


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("ws")
    with running_server(
        folder,
        API_TOKEN=TOKEN,
        MAX_BODY_BYTES=str(MAX_BYTES),
        MAX_TWEETS="100",
        WS_AUTH_SECONDS="1",
    ) as started:
        started["url"] = f"wss://127.0.0.1:{started['port']}/api/v1/ws"
        started["sslopt"] = {"ca_certs": str(folder / "server.crt")}
        yield started


OPENED = []  # every test's websockets, closed after it


@pytest.fixture(autouse=True)
def close_websockets():
    yield
    while OPENED:
        ws = OPENED.pop()
        with contextlib.suppress(Exception):
            ws.close(timeout=1)
        ws.shutdown()  # close() leaves the socket open once the server has closed


def connect(server, token=TOKEN):
    headers = [f"Authorization: Bearer {token}"] if token else []
    ws = websocket.create_connection(
        server["url"], sslopt=server["sslopt"], header=headers, timeout=10
    )
    OPENED.append(ws)
    return ws


def ask(ws, tweets, request_id="r1", **options):
    ws.send(
        json.dumps(
            {"type": "prediction_request", "request_id": request_id, "tweets": tweets, **options}
        )
    )
    return json.loads(ws.recv())


def close_frame(ws):
    """Read until the server's close frame; return its code and reason."""
    while True:
        opcode, frame = ws.recv_data_frame(True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return int.from_bytes(frame.data[:2], "big"), frame.data[2:].decode()


def rest(server, tweets, query="", route=f"/api/v1/{TOKEN}/predict", answered=None):
    """REST's answer; the answering model's name and version in `answered` if a dict is given."""
    context = ssl.create_default_context(cafile=server["sslopt"]["ca_certs"])
    request = urllib.request.Request(
        f"https://127.0.0.1:{server['port']}{route}{query}",
        data=json.dumps(tweets).encode(),
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
    )
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        if answered is not None:
            answered.update(
                model=response.headers["X-Model-Name"],
                model_version=response.headers["X-Model-Version"],
            )
        return json.loads(response.read())


@pytest.mark.parametrize(
    "options, query",
    [
        ({}, ""),
        ({"scores": True}, "?scores=true"),
        ({"scores": True, "explain": True}, "?scores=true&explain=true"),
    ],
)
def test_predictions_equal_rests_for_the_same_input(server, options, query):
    ws = connect(server)
    reply = ask(ws, PAYLOAD, "same-as-rest", **options)
    answered = {}
    assert reply == {
        "type": "prediction_response",
        "request_id": "same-as-rest",
        "predictions": rest(server, PAYLOAD, query, answered=answered),
        **answered,
    }
    ws.close()


def test_each_model_answers_as_its_rest_route_does(server):
    """A request may name a model, and a version; the reply says which answered."""
    ws = connect(server)
    listing = rest_get(server, "/api/v1/models")["models"]
    for item in listing:
        name, version = item["name"], item["version"]
        expected = rest(server, PAYLOAD, "?scores=true", f"/api/v1/models/{name}/predict")
        for fields in ({"model": name}, {"model": name, "version": version}):
            reply = ask(ws, PAYLOAD, "named", scores=True, **fields)
            assert reply["predictions"] == expected
            assert (reply["model"], reply["model_version"]) == (name, version)
    ws.close()


def rest_get(server, route):
    context = ssl.create_default_context(cafile=server["sslopt"]["ca_certs"])
    request = urllib.request.Request(
        f"https://127.0.0.1:{server['port']}{route}", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        return json.loads(response.read())


def test_a_browser_authenticates_with_a_first_message(server):
    ws = connect(server, token=None)
    ws.send(json.dumps({"type": "auth", "token": TOKEN}))
    assert json.loads(ws.recv())["type"] == "auth_ok"
    assert ask(ws, {"1": "I love it"})["predictions"] == {"1": "Positive"}
    ws.close()


@pytest.mark.parametrize(
    "first, reason",
    [
        ({"type": "auth", "token": "wrong"}, "invalid token"),
        ({"type": "auth"}, "invalid token"),
        ({"type": "prediction_request", "request_id": "1", "tweets": {"1": "a"}}, "first"),
        ("not json", "first"),
        (None, "within 1 s"),  # nothing sent: the server gives up after WS_AUTH_SECONDS
    ],
)
def test_failed_or_missing_authentication_closes_with_1008(server, first, reason):
    ws = connect(server, token=None)
    if first is not None:
        ws.send(first if isinstance(first, str) else json.dumps(first))
    code, text = close_frame(ws)
    assert code == 1008 and reason in text


def test_a_wrong_bearer_token_is_refused_before_the_upgrade(server):
    with pytest.raises(websocket.WebSocketBadStatusException) as caught:
        connect(server, token="wrong")
    assert caught.value.status_code == 401


@pytest.mark.parametrize(
    "message, status, detail",
    [
        ("{bad json", 400, "the message is not valid JSON"),
        ("[1, 2]", 400, "the message must be a JSON object, got array"),
        ('{"request_id": "x", "tweets": {"1": "a"}}', 400, 'missing field "type"'),
        ('{"type": "hello", "request_id": "x"}', 400, "unknown message type 'hello'"),
        (
            '{"type": "prediction_request", "tweets": {"1": "a"}}',
            400,
            '"request_id" must be a string',
        ),
        (
            '{"type": "prediction_request", "request_id": 5, "tweets": {"1": "a"}}',
            400,
            '"request_id" must be a string',
        ),
        ('{"type": "prediction_request", "request_id": "x"}', 400, 'missing field "tweets"'),
        (
            '{"type": "prediction_request", "request_id": "x", "tweets": ["a"]}',
            400,
            'field "tweets" must be a JSON object',
        ),
        (
            '{"type": "prediction_request", "request_id": "x", "tweets": {}}',
            400,
            "at least one tweet",
        ),
        (
            '{"type": "prediction_request", "request_id": "x", "tweets": {"1": "a", "1": "b"}}',
            400,
            'repeated: "1"',
        ),
        (
            REQUEST + '"tweets": {"1": "a"}, "scores": "yes"}',
            400,
            '"scores" must be true or false, got string',
        ),
        (
            REQUEST + '"tweets": {"1": "a"}, "explian": true}',
            400,
            "unknown field(s) ['explian']",
        ),
        (
            '{"type": "prediction_request", "request_id": "x", "tweets": {"1": 7}}',
            422,
            'not a string (number): "1"',
        ),
        (
            '{"type": "prediction_request", "request_id": "x", "tweets": {"1": "'
            + "a" * 5001
            + '"}}',
            422,
            'at most 5000 characters: "1"',
        ),
        (
            '{"type": "prediction_request", "request_id": "x", "tweets": {'
            + ",".join(f'"{i}": ""' for i in range(101))
            + "}}",
            413,
            "at most 100 tweets per request, got 101",
        ),
        (b"\x00binary", 400, "messages must be JSON text, got a binary message"),
        (REQUEST + '"tweets": {"1": "a"}, "model": "nope"}', 404, "no model 'nope'; known"),
        (
            REQUEST + '"tweets": {"1": "a"}, "model": "tweet-sentiment", "version": "0"}',
            404,
            "model 'tweet-sentiment' has no version '0'; its versions:",
        ),
        (REQUEST + '"tweets": {"1": "a"}, "version": "0"}', 404, "has no version '0'"),
        (REQUEST + '"tweets": {"1": "a"}, "model": 5}', 400, '"model" must be a string'),
    ],
)
def test_every_bad_message_gets_a_prediction_error_and_the_connection_stays_open(
    server, message, status, detail
):
    ws = connect(server)
    ws.send_binary(message) if isinstance(message, bytes) else ws.send(message)
    reply = json.loads(ws.recv())
    assert reply["type"] == "prediction_error"
    assert reply["error"] == status
    assert detail in reply["detail"]
    assert set(reply) == {"type", "request_id", "error", "text", "detail"}
    assert ask(ws, {"1": "still here"}, "after")["request_id"] == "after"
    ws.close()


def test_a_message_over_the_size_limit_closes_with_1009(server):
    ws = connect(server)
    ws.send("x" * (MAX_BYTES + 1))
    assert close_frame(ws)[0] == 1009


def test_fifty_concurrent_connections_over_two_workers(server):
    errors, answered = [], []

    def client(n):
        try:
            ws = connect(server)
            for i in range(20):
                tweet = "I love it" if (n + i) % 2 else "I hate this, worst day ever"
                reply = ask(ws, {"t": tweet}, f"{n}-{i}")
                expected = "Positive" if (n + i) % 2 else "Negative"
                assert reply == {
                    "type": "prediction_response",
                    "request_id": f"{n}-{i}",
                    "predictions": {"t": expected},
                    "model": DEFAULT.name,
                    "model_version": DEFAULT.version,
                }
                answered.append(1)
            ws.close()
        except Exception as e:  # reported below
            errors.append(repr(e))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(50)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(answered) == 50 * 20


def test_hup_answers_what_was_sent_then_closes_with_1001(server):
    """Each client sends requests without waiting; after a HUP every one sent is answered or the
    connection closes with 1001, and a reconnection is served by the new workers."""
    sockets = [connect(server) for _ in range(10)]
    sent = {i: 0 for i in range(10)}
    for i, ws in enumerate(sockets):
        for n in range(5):
            ws.send(
                json.dumps(
                    {"type": "prediction_request", "request_id": str(n), "tweets": {"1": "ok"}}
                )
            )
            sent[i] += 1
    master = make_child(server)
    old_workers = wait_for_workers(master, 2)
    os.kill(master, signal.SIGHUP)
    for i, ws in enumerate(sockets):
        replies = []
        while True:
            opcode, frame = ws.recv_data_frame(True)
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                code = int.from_bytes(frame.data[:2], "big")
                break
            replies.append(json.loads(frame.data))
        assert code == 1001
        assert [r["request_id"] for r in replies] == [str(n) for n in range(sent[i])]
    wait_for_workers(master, 2, exclude=old_workers)
    ws = connect(server)
    assert ask(ws, {"1": "I love it"})["predictions"] == {"1": "Positive"}
    ws.close()


def test_metrics_and_logs_count_messages_without_token_or_tweet(server):
    ws = connect(server)
    ask(ws, {"1": "a secret tweet about zebras"}, "logged")
    ws.close()
    context = ssl.create_default_context(cafile=server["sslopt"]["ca_certs"])
    request = urllib.request.Request(
        f"https://127.0.0.1:{server['port']}/metrics", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        text = response.read().decode()
    assert 'api_websocket_messages_total{type="prediction_response"}' in text
    assert "api_websockets_open" in text
    assert "api_websocket_message_seconds_bucket" in text
    time.sleep(0.3)
    log = server["log"].read_text()
    assert '"message": "websocket message"' in log
    assert TOKEN not in log and "zebras" not in log


def test_readme_python_example_prints_what_the_readme_says(server, tmp_path):
    readme = (ROOT / "docs" / "websocket.md").read_text()
    section = readme.split("<!-- websocket example: tests/test_websocket.py runs it -->", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    printed = section.split("```json\n", 1)[1].split("```", 1)[0]
    (tmp_path / ".api_token").write_text(TOKEN + "\n")
    shutil.copy(server["sslopt"]["ca_certs"], tmp_path / "server.crt")
    script = code.replace("localhost:5000", f"localhost:{server['port']}")
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == printed
