"""The V2 door with the protocol's own clients, unchanged: tritonclient[http,grpc] and the KServe
SDK's InferenceRESTClient and InferenceGRPCClient, against `make api-start` over HTTPS and gRPC,
every model of models.json, every answer compared with POST /api/v1/models/<name>/predict's.

Runs from .venv-clients (requirements-clients.txt), where these clients are: `make test` runs it
after the rest; by hand, `.venv-clients/bin/python -m pytest tests/test_v2_clients.py`.
"""

import json
import ssl
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from conftest import ROOT, TOKEN, free_port, running_server
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.slow
MODELS = [m["name"] for m in json.loads((ROOT / "models.json").read_text())["models"]]
DEFAULT = json.loads((ROOT / "models.json").read_text())["default"]
# payload.json's tweets and some a client may send: empty, blank, emoji, accents, markup.
TWEETS = [
    *json.loads((ROOT / "payload.json").read_text()).values(),
    "",
    "   ",
    "🙂🙂 so good",
    "naïve café, très bien",
    "<b>not</b> bad &amp; not great",
]
LIMITS = {"MAX_TWEETS": "20", "MAX_TWEET_CHARS": "280", "MAX_BODY_BYTES": "65536"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder, port = tmp_path_factory.mktemp("v2"), free_port()
    (folder / ".api_token").write_text(f"{TOKEN}\n")  # the token file, as docs/v2.md reads it
    with running_server(folder, GRPC_PORT=str(port), **LIMITS) as started:
        started["cafile"] = str(folder / "server.crt")
        started["grpc"] = f"localhost:{port}"
        wait_for_grpc(started)
        yield started


def wait_for_grpc(server, seconds=60):
    """The gRPC door starts beside gunicorn, a second or two after its first answer."""
    client = triton_grpc.InferenceServerClient(
        server["grpc"], ssl=True, root_certificates=server["cafile"]
    )
    deadline = time.monotonic() + seconds
    while True:
        try:
            if client.is_server_live():
                return
        except InferenceServerException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def auth(module=triton_http):
    """The token for a client module: a fresh dict each call (tritonclient's HTTP client writes
    into the one it gets); gRPC's metadata keys are lower case."""
    return {"authorization" if module is triton_grpc else "Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def http(server):
    return triton_http.InferenceServerClient(
        f"localhost:{server['port']}", ssl=True, ssl_options={"ca_certs": server["cafile"]}
    )


@pytest.fixture(scope="module")
def grpc_client(server):
    return triton_grpc.InferenceServerClient(
        server["grpc"], ssl=True, root_certificates=server["cafile"]
    )


def rest(server, name, tweets, version=None):
    """Our own route's answer for the same tweets: ([labels], [scores]), model and version."""
    path = f"/api/v1/models/{name}" + (f"/versions/{version}" if version else "") + "/predict"
    body = json.dumps({str(i): t for i, t in enumerate(tweets)}).encode()
    request = urllib.request.Request(
        f"https://localhost:{server['port']}{path}?scores=true",
        data=body,
        headers={"Content-Type": "application/json", **auth()},
    )
    context = ssl.create_default_context(cafile=server["cafile"])
    with urllib.request.urlopen(request, context=context) as response:
        answer = json.loads(response.read())
        served = response.headers["X-Model-Name"], response.headers["X-Model-Version"]
    return [a["label"] for a in answer.values()], [a["score"] for a in answer.values()], served


def text_input(module, tweets, shape=None, binary=True, declared=None):
    """The input `text` of a tritonclient module, shaped as `shape` ([N] by default); declared:
    a shape to claim afterwards instead (the clients check a shape only against the data set)."""
    tensor = module.InferInput("text", shape or [len(tweets)], "BYTES")
    data = np.array([t.encode() for t in tweets], dtype=np.object_).reshape(tensor.shape())
    if module is triton_http:
        tensor.set_data_from_numpy(data, binary_data=binary)
    else:
        tensor.set_data_from_numpy(data)
    if declared is not None:
        tensor.set_shape(declared)
    return tensor


def same_as_rest(result, expected, shape):
    """as_numpy on both outputs gives REST's labels and, as FP32, its scores."""
    labels, scores, _ = expected
    label, score = result.as_numpy("label"), result.as_numpy("score")
    assert label.shape == score.shape == tuple(shape)
    got = [x.decode() if isinstance(x, bytes) else x for x in label.ravel()]
    assert got == labels
    assert score.dtype == np.float32
    assert score.ravel().tolist() == np.array(scores, dtype=np.float32).tolist()


# tritonclient over HTTPS: binary by default, JSON when asked, a version path, TLS with the CA.


@pytest.mark.parametrize("name", MODELS)
def test_tritonclient_http_binary_answers_as_rest(server, http, name):
    expected = rest(server, name, TWEETS)
    result = http.infer(name, [text_input(triton_http, TWEETS)], headers=auth(), request_id="r1")
    response = result.get_response()
    assert (response["model_name"], response["model_version"]) == expected[2]
    assert response["id"] == "r1"
    assert all("binary_data_size" in o["parameters"] for o in response["outputs"])
    same_as_rest(result, expected, [len(TWEETS)])


@pytest.mark.parametrize("name", MODELS)
def test_tritonclient_http_json_answers_as_rest(server, http, name):
    expected = rest(server, name, TWEETS)
    outputs = [triton_http.InferRequestedOutput(n, binary_data=False) for n in ("label", "score")]
    shape = [len(TWEETS), 1]
    result = http.infer(
        name,
        [text_input(triton_http, TWEETS, shape, binary=False)],
        outputs=outputs,
        headers=auth(),
    )
    assert all("data" in o for o in result.get_response()["outputs"])
    same_as_rest(result, expected, shape)


def test_tritonclient_http_version_path_and_one_output(server, http):
    metadata = http.get_model_metadata(DEFAULT, headers=auth())
    version = metadata["versions"][0]
    expected = rest(server, DEFAULT, TWEETS, version)
    outputs = [triton_http.InferRequestedOutput("score")]
    result = http.infer(
        DEFAULT, [text_input(triton_http, TWEETS)], model_version=version, outputs=outputs,
        headers=auth(),
    )  # fmt: skip
    assert result.get_response()["model_version"] == version
    assert [o["name"] for o in result.get_response()["outputs"]] == ["score"]
    assert result.as_numpy("label") is None
    assert result.as_numpy("score").tolist() == np.array(expected[1], np.float32).tolist()


def test_tritonclient_http_health_and_metadata(server, http):
    assert http.is_server_live() and http.is_server_ready()  # no token: probes
    assert all(http.is_model_ready(name) for name in MODELS)
    assert not http.is_model_ready("no-such-model")
    assert http.get_server_metadata(headers=auth())["extensions"] == ["binary_tensor_data"]
    metadata = http.get_model_metadata("tweet-sentiment", headers=auth())
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert [(o["name"], o["datatype"]) for o in metadata["outputs"]] == [
        ("label", "BYTES"),
        ("score", "FP32"),
    ]


# tritonclient over gRPC: raw_input_contents in, raw_output_contents out, TLS with the CA.


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("shape", ["flat", "column"])
def test_tritonclient_grpc_answers_as_rest(server, grpc_client, name, shape):
    expected = rest(server, name, TWEETS)
    dims = [len(TWEETS)] if shape == "flat" else [len(TWEETS), 1]
    result = grpc_client.infer(
        name, [text_input(triton_grpc, TWEETS, dims)], headers=auth(triton_grpc), request_id="g1"
    )
    response = result.get_response()
    assert (response.model_name, response.model_version) == expected[2]
    assert response.id == "g1" and len(response.raw_output_contents) == 2
    same_as_rest(result, expected, dims)


def test_tritonclient_grpc_version_health_and_metadata(server, grpc_client):
    assert grpc_client.is_server_live() and grpc_client.is_server_ready()  # no token
    assert all(grpc_client.is_model_ready(name) for name in MODELS)
    metadata = grpc_client.get_model_metadata(DEFAULT, headers=auth(triton_grpc), as_json=True)
    version = metadata["versions"][0]
    assert grpc_client.is_model_ready(DEFAULT, version)
    expected = rest(server, DEFAULT, TWEETS, version)
    result = grpc_client.infer(
        DEFAULT, [text_input(triton_grpc, TWEETS)], model_version=version, headers=auth(triton_grpc)
    )
    same_as_rest(result, expected, [len(TWEETS)])
    server_metadata = grpc_client.get_server_metadata(headers=auth(triton_grpc), as_json=True)
    assert server_metadata["extensions"] == ["binary_tensor_data"]


# The stable alias: a client reaches what stable serves without knowing its name.


def test_stable_reaches_the_default_on_both_doors(server, http, grpc_client):
    expected = rest(server, DEFAULT, TWEETS)
    for client, module in ((http, triton_http), (grpc_client, triton_grpc)):
        result = client.infer("stable", [text_input(module, TWEETS)], headers=auth(module))
        response = result.get_response(**({"as_json": True} if module is triton_grpc else {}))
        assert (response["model_name"], response["model_version"]) == expected[2]
        same_as_rest(result, expected, [len(TWEETS)])


# The KServe SDK's clients (asyncio), unchanged. In a process of their own: the SDK's stubs and
# tritonclient's both define inference.ServerLiveRequest, and protobuf's default pool takes one.


@pytest.mark.parametrize("door", ["rest", "grpc"])
def test_kserve_clients_answer_as_rest(server, door):
    call = {
        "door": door, "models": MODELS, "tweets": TWEETS, "token": TOKEN,
        "url": f"https://localhost:{server['port']}" if door == "rest" else server["grpc"],
        "cafile": server["cafile"],
    }  # fmt: skip
    script = ROOT / "tests" / "kserve_calls.py"
    done = subprocess.run(
        [sys.executable, str(script)], input=json.dumps(call), capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    answers = json.loads(done.stdout)
    for name in MODELS:
        labels, scores, served = rest(server, name, TWEETS)
        answer = answers[name]
        assert answer["ready"] and answer["id"] == f"kserve-{door}"
        assert (answer["model_name"], answer["model_version"]) == served
        assert answer["label"] == labels
        assert answer["score"] == np.array(scores, np.float32).tolist()


# Errors: each a clear answer naming what was wrong, in each door's own form; the server goes on.


def error_of(call):
    with pytest.raises(InferenceServerException) as caught:
        call()
    return caught.value.status(), caught.value.message()


def raw_request(server, path, body, headers):
    """POST a hand-made body (what no client would send); return the status and JSON answer."""
    request = urllib.request.Request(
        f"https://localhost:{server['port']}{path}", data=body, headers=headers
    )
    context = ssl.create_default_context(cafile=server["cafile"])
    try:
        with urllib.request.urlopen(request, context=context) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def bytes_tensor(elements):
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


ERRORS = {  # name: (tweets, shape, shape declared, HTTP status, gRPC code, words of the message)
    "a shape that does not match the data": (
        ["a", "b"], None, [3], "400", "INVALID_ARGUMENT",
        "input 'text' has shape [3], which is 3 elements, but it holds 2",
    ),
    "a shape of rank 3": (
        ["a"], [1, 1, 1], None, "400", "INVALID_ARGUMENT",
        "input 'text' must have shape [N] or [N, 1], got [1, 1, 1]",
    ),
    "over the tweet limit": (
        ["a"] * 21, None, None, "413", "INVALID_ARGUMENT",
        "input 'text' (its elements named by index): at most 20 tweets per request, got 21",
    ),
    "over the character limit": (
        ["ok", "x" * 281], None, None, "422", "INVALID_ARGUMENT",
        "input 'text' (its elements named by index): each tweet must be at most 280 characters: "
        '"1"',
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", ERRORS)
def test_errors_on_both_doors(server, http, grpc_client, case):
    tweets, shape, declared, status, code, words = ERRORS[case]
    for module, client, expected in ((triton_http, http, status), (triton_grpc, grpc_client, code)):
        got, message = error_of(
            lambda c=client, m=module: c.infer(
                "tweet-sentiment", [text_input(m, tweets, shape, declared=declared)],
                headers=auth(m),
            )
        )  # fmt: skip
        assert got.endswith(expected) and message == words, (module.__name__, got, message)


def test_no_token(server, http, grpc_client):
    status, message = error_of(
        lambda: http.infer("tweet-sentiment", [text_input(triton_http, ["a"])])
    )
    assert (status, message) == ("401", "send a valid token as 'Authorization: Bearer <token>'")
    wrong = {"authorization": "Bearer not-the-token"}
    for headers in (None, wrong):
        status, message = error_of(
            lambda h=headers: grpc_client.infer(
                "tweet-sentiment", [text_input(triton_grpc, ["a"])], headers=h
            )
        )
        assert status == "StatusCode.UNAUTHENTICATED" and "authorization: Bearer" in message
    assert error_of(lambda: http.get_model_metadata("tweet-sentiment"))[0] == "401"


def test_unknown_model_or_version(server, http, grpc_client):
    for call, expected in (
        (lambda: http.infer("nope", [text_input(triton_http, ["a"])], headers=auth()), "404"),
        (
            lambda: grpc_client.infer(
                "nope", [text_input(triton_grpc, ["a"])], headers=auth(triton_grpc)
            ),
            "StatusCode.NOT_FOUND",
        ),
    ):
        status, message = error_of(call)
        assert status == expected and "no model 'nope'; known models: 'tweet-sentiment" in message
    status, message = error_of(
        lambda: grpc_client.infer(
            "tweet-sentiment",
            [text_input(triton_grpc, ["a"])],
            model_version="v9",
            headers=auth(triton_grpc),
        )
    )
    assert status == "StatusCode.NOT_FOUND" and "has no version 'v9'; its versions:" in message
    status, message = error_of(
        lambda: http.infer(
            "tweet-sentiment", [text_input(triton_http, ["a"])], model_version="v9", headers=auth()
        )
    )
    assert status == "404" and "has no version 'v9'" in message


def test_not_bytes_and_missing_input(server, http, grpc_client):
    for module, client in ((triton_http, http), (triton_grpc, grpc_client)):
        numbers = module.InferInput("text", [2], "FP32")
        numbers.set_data_from_numpy(np.array([1.0, 2.0], dtype=np.float32))
        status, message = error_of(
            lambda c=client, n=numbers, m=module: c.infer("tweet-sentiment", [n], headers=auth(m))
        )
        assert status in ("400", "StatusCode.INVALID_ARGUMENT")
        assert message == "input 'text' must be BYTES (UTF-8 text), got datatype \"FP32\""
        renamed = module.InferInput("tweets", [1], "BYTES")
        renamed.set_data_from_numpy(np.array([b"a"], dtype=np.object_))
        status, message = error_of(
            lambda c=client, r=renamed, m=module: c.infer("tweet-sentiment", [r], headers=auth(m))
        )
        assert message == "unknown input \"tweets\": the model takes one input, 'text' (BYTES)"


def test_bytes_that_are_not_utf8(server, http, grpc_client):
    tweets = [b"fine", b"caf\xe9"]  # Latin-1, not UTF-8
    for module, client in ((triton_http, http), (triton_grpc, grpc_client)):
        tensor = module.InferInput("text", [2], "BYTES")
        tensor.set_data_from_numpy(np.array(tweets, dtype=np.object_))
        status, message = error_of(
            lambda c=client, t=tensor, m=module: c.infer("tweet-sentiment", [t], headers=auth(m))
        )
        assert status in ("400", "StatusCode.INVALID_ARGUMENT")
        assert message.startswith("input 'text': element 1 is not valid UTF-8 (")


def test_over_the_byte_limit(server, http, grpc_client):
    big = ["x" * 200] * 20 * 20  # 400 tweets of 200 bytes: over 64 KiB, and the tweet limit
    status, message = error_of(
        lambda: http.infer("tweet-sentiment", [text_input(triton_http, big)], headers=auth())
    )
    assert status == "413" and message.startswith("the body must be at most 65536 bytes, got ")
    status, message = error_of(
        lambda: grpc_client.infer(
            "tweet-sentiment", [text_input(triton_grpc, big)], headers=auth(triton_grpc)
        )
    )
    assert status == "StatusCode.RESOURCE_EXHAUSTED" and "larger than max" in message


def test_hand_made_requests(server):
    """What no client here sends: malformed JSON, a binary size past the body, a missing input."""
    path = "/v2/models/tweet-sentiment/infer"
    headers = auth()
    assert raw_request(server, path, b"{", headers) == (
        400,
        {"error": "the inference request is not valid JSON: Expecting property name enclosed "
         "in double quotes: line 1 column 2 (char 1)"},
    )  # fmt: skip
    assert raw_request(server, path, b'{"inputs": []}', headers) == (
        400,
        {"error": "missing input 'text': \"inputs\" must hold one, BYTES, of shape [N]"},
    )
    data = bytes_tensor([b"hi"])
    head = json.dumps(
        {"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1],
                     "parameters": {"binary_data_size": len(data) + 4}}]}
    ).encode()  # fmt: skip
    status, answer = raw_request(
        server, path, head + data, {**headers, "Inference-Header-Content-Length": str(len(head))}
    )
    assert status == 400 and answer == {
        "error": "input 'text' says \"binary_data_size\" 10, but 6 bytes follow the JSON"
    }


def test_the_server_keeps_serving_after_the_errors(server, http, grpc_client):
    expected = rest(server, "tweet-sentiment", TWEETS)
    for module, client in ((triton_http, http), (triton_grpc, grpc_client)):
        result = client.infer("tweet-sentiment", [text_input(module, TWEETS)], headers=auth(module))
        same_as_rest(result, expected, [len(TWEETS)])


# docs/v2.md's examples, run as a user runs them: from the server's folder, its token file and
# certificate there, printing what the page says.


@pytest.mark.parametrize("door", ["https", "grpc"])
def test_the_pages_examples_print_what_it_says(server, door):
    page = (ROOT / "docs" / "v2.md").read_text()
    section = page.split(f"<!-- v2 example {door}: tests/test_v2_clients.py runs it -->", 1)[1]
    code = section.split("```python\n", 1)[1].split("```", 1)[0]
    printed = section.split("```text\n", 1)[1].split("```", 1)[0]
    code = code.replace("localhost:5000", f"localhost:{server['port']}")
    code = code.replace("localhost:8001", server["grpc"])
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=server["folder"], capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout == printed
