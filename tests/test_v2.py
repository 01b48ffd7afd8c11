"""The V2 door (v2/): its REST routes in-process, request by request, the rules no client here
breaks; its gRPC service in-process with grpc's stock client; then the gRPC processes beside the
real server (`make api-start`): HUP, a crash, TERM, a lost parent, a port in use, metrics and logs.
tritonclient's and the KServe SDK's calls are tests/test_v2_clients.py's (.venv-clients).
"""

import contextlib
import io
import json
import os
import random
import signal
import socket
import ssl
import struct
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from conftest import ADMIN_TOKEN, ROOT, TOKEN, evidence, free_port, make_child, running_server
from werkzeug.test import EnvironBuilder, run_wsgi_app

import aliases
import api
import contract
import registry
import service
import v2
from v2 import grpc_predict_v2_pb2 as pb2
from v2 import grpc_predict_v2_pb2_grpc as pb2_grpc
from v2 import grpc_server, protocol, rest

USER = {"Authorization": f"Bearer {TOKEN}"}
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
SMALL = "tweet-sentiment"
DEFAULT = registry.read_catalogue(registry.MODELS_FILE)["default"]  # stable when none is set
TWEETS = ["I love it", "not good at all", "", "naïve café"]
INFER = f"/v2/models/{SMALL}/infer"


def body(texts=TWEETS, shape=None, **fields):
    tensor = {"name": "text", "datatype": "BYTES", "shape": shape or [len(texts)], "data": texts}
    return {"inputs": [tensor], **fields}


def bytes_tensor(elements):
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


def binary_body(elements, shape=None, size=None, **fields):
    """A request in the binary tensor extension: its JSON, then the input's bytes."""
    data = bytes_tensor(elements)
    tensor = {"name": "text", "datatype": "BYTES", "shape": shape or [len(elements)]}
    tensor["parameters"] = {"binary_data_size": len(data) if size is None else size}
    head = json.dumps({"inputs": [tensor], **fields}).encode()
    return head + data, {**USER, rest.HEADER_LENGTH: str(len(head))}


def rest_answer(client, texts, name=SMALL):
    """Our own route's labels and scores for the same tweets, and which model answered."""
    tweets = {str(i): t for i, t in enumerate(texts)}
    answer = client.post(f"/api/v1/models/{name}/predict?scores=true", json=tweets, headers=USER)
    assert answer.status_code == 200, answer.json
    values = answer.json.values()
    served = answer.headers["X-Model-Name"], answer.headers["X-Model-Version"]
    return [a["label"] for a in values], [a["score"] for a in values], served


# REST, in-process: the protocol's JSON, the binary extension both ways, and every refusal.


def test_json_in_and_out_answers_as_rest(client):
    labels, scores, served = rest_answer(client, TWEETS)
    answer = client.post(INFER, json=body(id="42"), headers=USER)
    assert answer.status_code == 200 and answer.mimetype == "application/json"
    assert (answer.headers["X-Model-Name"], answer.headers["X-Model-Version"]) == served
    assert answer.json == {
        "model_name": served[0],
        "model_version": served[1],
        "id": "42",
        "outputs": [
            {"name": "label", "datatype": "BYTES", "shape": [4], "data": labels},
            {"name": "score", "datatype": "FP32", "shape": [4], "data": scores},
        ],
    }


def test_a_column_shape_nested_or_flat_and_the_outputs_asked_for(client):
    labels, scores, _ = rest_answer(client, TWEETS)
    nested = [[t] for t in TWEETS]
    for data in (nested, TWEETS):
        outputs = [{"name": "score"}, {"name": "label"}]
        answer = client.post(INFER, json=body(data, [4, 1], outputs=outputs), headers=USER).json
        assert [(o["name"], o["shape"]) for o in answer["outputs"]] == [
            ("score", [4, 1]),
            ("label", [4, 1]),
        ]
        assert answer["outputs"][0]["data"] == scores and answer["outputs"][1]["data"] == labels
        assert "id" not in answer  # none was given


def test_binary_in_and_out_as_triton_lays_it(client):
    labels, scores, served = rest_answer(client, TWEETS)
    data, headers = binary_body(
        [t.encode() for t in TWEETS], parameters={"binary_data_output": True}
    )
    answer = client.post(INFER, data=data, headers=headers)
    assert answer.status_code == 200 and answer.mimetype == "application/octet-stream"
    length = int(answer.headers[rest.HEADER_LENGTH])
    head, tail = json.loads(answer.data[:length]), answer.data[length:]
    sizes = [o["parameters"]["binary_data_size"] for o in head["outputs"]]
    assert head["model_name"] == served[0] and sum(sizes) == len(tail)
    assert tail[: sizes[0]] == bytes_tensor([label.encode() for label in labels])
    assert tail[sizes[0] :] == struct.pack("<4f", *scores)


def test_binary_for_one_output_json_for_the_other(client):
    labels, _, _ = rest_answer(client, TWEETS)
    outputs = [{"name": "label", "parameters": {"binary_data": True}}, {"name": "score"}]
    answer = client.post(INFER, json=body(outputs=outputs), headers=USER)
    length = int(answer.headers[rest.HEADER_LENGTH])
    head = json.loads(answer.data[:length])
    assert "data" not in head["outputs"][0] and len(head["outputs"][1]["data"]) == 4
    assert answer.data[length:] == bytes_tensor([label.encode() for label in labels])


REFUSED = [  # (what is sent, status, the error's words)
    (b"[1, 2]", 400, "the inference request must be a JSON object, got array"),
    (b'{"inputs": NaN}', 400, "the inference request is not valid JSON: NaN is not valid JSON"),
    (b"\xff{}", 400, "the inference request is not valid UTF-8: invalid start byte at byte 0"),
    ({"inputs": {}}, 400, "field 'inputs' must be a list, got object"),
    ({"id": 7, **body()}, 400, "field 'id' must be a string, got number"),
    ({"inputs": [body()["inputs"][0]] * 2}, 400, "the model takes one input, 'text' (BYTES)"),
    (body(shape=[0], texts=[]), 400, "input 'text' must hold at least one tweet"),
    (body(shape=[4, 2]), 400, "input 'text' must have shape [N] or [N, 1], got [4, 2]"),
    (body(shape=[-1]), 400, "input 'text' must have shape [N] or [N, 1], got [-1]"),
    (body(shape=[True]), 400, "must have shape [N] or [N, 1], got [true]"),
    ({"inputs": [{"name": "text", "datatype": "BYTES", "shape": [1]}]}, 400, 'needs "data"'),
    (body(["a", 3, None, "b"]), 422, 'not a string (null, number): "1", "2"'),
    (body(["\ud800"], shape=[1]), 400, "element 0 is not valid Unicode: a lone surrogate"),
    (body(outputs=[{"name": "explanation"}]), 400, 'unknown output "explanation"; the model'),
    (body(outputs=[{"name": "label"}] * 2), 400, "each output may be asked for once"),
    (body(outputs=["label"]), 400, 'each of "outputs" must be an object with a "name"'),
    (body(parameters={"binary_data_output": 1}), 400, "parameter 'binary_data_output' must be"),
    (body(parameters=[]), 400, "field 'parameters' must be an object, got array"),
]


@pytest.mark.parametrize("sent, status, words", REFUSED, ids=[w for _, _, w in REFUSED])
def test_each_refusal_names_what_was_wrong(client, sent, status, words):
    if isinstance(sent, dict):
        answer = client.post(INFER, json=sent, headers=USER)
    else:
        answer = client.post(INFER, data=sent, headers=USER)
    assert answer.status_code == status and set(answer.json) == {"error"}, answer.json
    assert words in answer.json["error"]
    assert answer.mimetype == "application/json"


BINARY_REFUSED = [  # (elements, shape, binary_data_size, header length, words)
    ([b"a", b"b"], [1], None, None, "has shape [1], which is 1 elements, but it holds more"),
    ([b"a"], [2], None, None, "input 'text' has shape [2], which is 2 elements, but it holds 1"),
    ([b"caf\xc3"], [1], None, None, "input 'text': element 0 is not valid UTF-8 (unexpected end"),
    ([b"a"], [1], 2, None, "says \"binary_data_size\" 2, but 5 bytes follow the JSON"),
    ([b"a"], [1], None, "x", "Inference-Header-Content-Length must be the JSON's length in bytes"),
    ([b"a"], [1], None, "99999", "Inference-Header-Content-Length must be the JSON's length"),
]  # fmt: skip


@pytest.mark.parametrize(
    "elements, shape, size, length, words", BINARY_REFUSED, ids=[c[-1] for c in BINARY_REFUSED]
)
def test_each_binary_refusal_names_what_was_wrong(client, elements, shape, size, length, words):
    data, headers = binary_body(elements, shape, size)
    if length is not None:
        headers[rest.HEADER_LENGTH] = length
    answer = client.post(INFER, data=data, headers=headers)
    assert answer.status_code == 400 and answer.json == {"error": answer.json["error"]}
    assert words in answer.json["error"], answer.json


def test_binary_data_cut_short_or_without_its_size(client):
    whole = bytes_tensor([b"hello"])
    for data, words in (
        (whole[:5], "element 0 says 5 bytes, but only 1 are left"),
        (whole[:2], "its binary data ends inside the length of element 0"),
    ):
        tensor = {"name": "text", "datatype": "BYTES", "shape": [1]}
        tensor["parameters"] = {"binary_data_size": len(data)}
        head = json.dumps({"inputs": [tensor]}).encode()
        headers = {**USER, rest.HEADER_LENGTH: str(len(head))}
        answer = client.post(INFER, data=head + data, headers=headers)
        assert answer.status_code == 400 and words in answer.json["error"], answer.json
    plain = json.dumps(body()).encode()
    headers = {**USER, rest.HEADER_LENGTH: str(len(plain))}
    assert client.post(INFER, data=plain + b"zz", headers=headers).json == {
        "error": 'the body has 2 bytes after the JSON, but no input has "binary_data_size"'
    }


def test_tokens_limits_and_encodings_as_our_rest(client):
    assert client.post(INFER, json=body()).status_code == 401
    assert client.post(INFER, json=body()).json == {
        "error": "send a valid token as 'Authorization: Bearer <token>'"
    }
    assert (
        client.post(INFER, json=body(), headers={"Authorization": "Bearer no"}).status_code == 401
    )
    too_many = client.post(INFER, json=body(["a"] * 51), headers=USER)  # the app's limit: 50
    assert too_many.status_code == 413
    assert too_many.json["error"] == (
        "input 'text' (its elements named by index): at most 50 tweets per request, got 51"
    )
    too_big = client.post(INFER, json=body(["x" * 200] * 400), headers=USER)  # over 64 KiB
    assert too_big.status_code == 413 and too_big.json["error"].startswith(
        "the body must be at most 65536 bytes"
    )
    gzip = client.post(INFER, json=body(), headers={**USER, "Content-Encoding": "gzip"})
    assert gzip.status_code == 415 and "send the body uncompressed" in gzip.json["error"]
    for path, words in (
        ("/v2/models/nope/infer", f"no model 'nope'; known models: '{DEFAULT}'"),
        (f"/v2/models/{SMALL}/versions/v0/infer", f"model {SMALL!r} has no version 'v0'"),
    ):
        answer = client.post(path, json=body(), headers=USER)
        assert answer.status_code == 404 and words in answer.json["error"]


def test_health_metadata_and_readiness(client, app):
    assert client.get("/v2/health/live").json == {"live": True}
    assert client.get("/v2/health/ready").json == {"ready": True}
    assert client.get("/v2").status_code == 401
    assert client.get("/v2", headers=USER).json == {
        "name": "tweet-sentiment",
        "version": "1.0.0",
        "extensions": ["binary_tensor_data"],
    }
    served = app.extensions["registry"].get(SMALL)
    expected = protocol.model_metadata(served)
    assert client.get(f"/v2/models/{SMALL}", headers=USER).json == expected
    version = f"/v2/models/{SMALL}/versions/{served.version}"
    assert client.get(version, headers=USER).json == expected
    assert client.get(f"{version}/ready").json == {"name": SMALL, "ready": True}
    assert client.get("/v2/models/nope/ready").status_code == 404
    assert client.get(f"/v2/models/{SMALL}/versions/v0").status_code == 401  # token first


def test_a_model_that_failed_to_load_is_not_ready(tmp_path):
    catalogue = json.loads((ROOT / "models.json").read_text())
    broken = {**catalogue["models"][1], "name": "broken", "required": False}
    broken["versions"] = [str(tmp_path / "nothing-here")]
    catalogue["models"] = [{**m, "versions": [str(ROOT / v) for v in m["versions"]]}
                           for m in catalogue["models"]] + [broken]  # fmt: skip
    (tmp_path / "models.json").write_text(json.dumps(catalogue))
    app = api.create_app(
        {"API_TOKEN": TOKEN, "MODELS_FILE": str(tmp_path / "models.json"),
         "ALIASES_FILE": str(tmp_path / "aliases.json"), "JOBS_DIR": str(tmp_path / "jobs")}
    )  # fmt: skip
    client = app.test_client()
    ready = client.get("/v2/models/broken/ready")
    assert ready.status_code == 503 and ready.json["ready"] is False
    assert ready.json["name"] == "broken" and "nothing-here" in ready.json["error"]
    assert client.get("/v2/health/ready").json == {"ready": True}  # it is not required
    infer = client.post("/v2/models/broken/infer", json=body(), headers=USER)
    assert infer.status_code == 503 and "failed to load" in infer.json["error"]


def test_counted_and_logged_as_rest_never_the_tweets(client, capfd):
    texts = ["secret words", *TWEETS[1:]]
    labels = rest_answer(client, texts)[0]
    requests = metric(client, "api_requests_total", route="/v2/models/<name>/infer", status="200")
    positives = metric(client, "api_predictions_total", label="Positive", model=SMALL)
    assert client.post(INFER, json=body(texts), headers=USER).status_code == 200
    assert (
        metric(client, "api_requests_total", route="/v2/models/<name>/infer", status="200")
        == requests + 1
    )
    assert metric(
        client, "api_predictions_total", label="Positive", model=SMALL
    ) == positives + labels.count("Positive")
    logged = capfd.readouterr().err
    line = next(x for x in logged.splitlines() if '"route": "/v2/models/<name>/infer"' in x)
    assert json.loads(line)["tweets"] == 4
    assert "secret words" not in logged and TOKEN not in logged


def metric(client, name, **labels):
    """A sample of /metrics summed over the other labels, or 0."""
    text = client.get("/metrics", headers=USER).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


# The stable alias: `stable` is whatever it serves, with the canary and the shadow of our REST.


@pytest.fixture
def own(tmp_path):
    """A client of an app of its own: these tests move its aliases, which the session's app, that
    other test files share, must keep as they are."""
    settings = {"API_TOKEN": TOKEN, "ADMIN_TOKEN": ADMIN_TOKEN, "JOBS_DIR": str(tmp_path / "jobs")}
    settings["ALIASES_FILE"] = str(tmp_path / "aliases.json")
    return api.create_app(settings).test_client()


def put_candidate(client, **fields):
    response = client.put("/api/v1/aliases/candidate", headers=ADMIN, json=fields)
    assert response.status_code == 200, response.json


def test_stable_follows_the_alias_and_its_canary(own):
    client = own
    answer = client.post("/v2/models/stable/infer", json=body(), headers=USER).json
    assert answer["model_name"] == DEFAULT
    assert client.get("/v2/models/stable", headers=USER).json["name"] == DEFAULT
    assert client.get("/v2/models/stable/ready").json == {"name": DEFAULT, "ready": True}
    put_candidate(client, model=SMALL, canary_percent=20)
    names = {}
    for i in range(200):
        request_id = f"req-{i}"
        answer = client.post("/v2/models/stable/infer", json=body(id=request_id), headers=USER)
        names[request_id] = answer.json["model_name"]
        assert answer.headers["X-Model-Name"] == names[request_id]
    for request_id, name in names.items():  # the id chooses, as X-Request-ID does on REST
        assert name == (SMALL if aliases.canary_share(request_id) < 20 else DEFAULT)
    assert 20 <= list(names.values()).count(SMALL) <= 60
    named = client.post(f"/v2/models/{DEFAULT}/infer", json=body(id="req-0"), headers=USER)
    assert named.json["model_name"] == DEFAULT  # a named model is never the canary's


def test_stable_is_shadowed_as_our_rest_default(own):
    client = own
    put_candidate(client, model=SMALL, shadow_percent=100)
    before = client.get("/api/v1/aliases", headers=USER).json["shadow"]["pairs"]
    plain = client.post(f"/v2/models/{DEFAULT}/infer", json=body(), headers=USER).json
    shadowed = client.post("/v2/models/stable/infer", json=body(), headers=USER).json
    assert shadowed == plain  # the shadow never changes an answer
    after = client.get("/api/v1/aliases", headers=USER).json["shadow"]["pairs"]
    # Both asked for stable's model and version: the guard counts each tweet once.
    assert after == before + evidence(DEFAULT, SMALL, TWEETS)["pairs"]


# The protocol's pieces.


# The hot path (api.FastPredict, rest.fast_infer) answers the well-formed requests without Flask;
# the view is the reference, and answers every other.


def v2_environ(path, data, headers):
    environ = EnvironBuilder(path=path, method="POST", data=data, headers=headers).get_environ()
    return environ


def both_ways(app, path, data, headers):
    """(whether the hot path took it, its answer, the view's): status, headers sorted, bytes."""
    fast = app.wsgi_app.wsgi_app  # Observed(FastPredict(app))
    environ = v2_environ(path, data, headers)
    taken = fast.answer({**environ, "wsgi.input": io.BytesIO(data)}) is not None
    answers = []
    for wsgi_app in (fast, fast.flask):
        body, status, response_headers = run_wsgi_app(
            wsgi_app, {**environ, "wsgi.input": io.BytesIO(data)}
        )
        answers.append((status, sorted(response_headers.to_wsgi_list()), b"".join(body)))
    return taken, *answers


ESCAPED = ['say "hi"\n\\ é 😀 &amp; \u2028', "</script>", " ", "\x00", "naïve café", "&lt;3 :)"]
OUTPUTS = [
    {},
    {"outputs": [{"name": "label"}]},
    {"outputs": [{"name": "score"}, {"name": "label", "parameters": {"binary_data": True}}]},
    {"outputs": [{"name": "label", "parameters": {"binary_data": False}}],
     "parameters": {"binary_data_output": True}},
    {"parameters": {"binary_data_output": True}},
]  # fmt: skip


@pytest.mark.parametrize(
    "texts", [TWEETS, ESCAPED, [f"tweet {i} {'not ' * (i % 3)}good" for i in range(50)]]
)
@pytest.mark.parametrize("fields", OUTPUTS)
def test_the_hot_path_answers_with_the_views_bytes(app, texts, fields):
    version = app.extensions["registry"].get(SMALL).version
    cases = [
        (INFER, json.dumps(body(texts, **fields)).encode(), USER),
        (INFER, json.dumps(body(texts, **fields), ensure_ascii=False).encode(), USER),
        (INFER, json.dumps(body(texts, [len(texts), 1], id="ü 7", **fields)).encode(), USER),
        (f"/v2/models/{protocol.STABLE}/infer", json.dumps(body(texts, **fields)).encode(), USER),
        (
            f"/v2/models/{SMALL}/versions/{version}/infer",
            json.dumps(body(texts, **fields)).encode(),
            USER,
        ),
        (INFER, *binary_body([t.encode() for t in texts], id="x", **fields)),
    ]
    for path, data, headers in cases:
        taken, fast, view = both_ways(app, path, data, headers)
        assert taken and fast == view and fast[0] == "200 OK", (path, data[:200])


@pytest.mark.parametrize(
    "fields",
    [
        {"id": "a", "priority": 1},  # a field the protocol has and the model reads not
        {"inputs": [{**body()["inputs"][0], "parameters": {"content_type": "str"}}]},
        {"inputs": [{**body()["inputs"][0], "data": [[t] for t in TWEETS]}]},  # nested
        {"outputs": [{"name": "label", "parameters": {"binary_data": None}}]},
    ],
)
def test_the_view_answers_what_the_hot_path_leaves(app, fields):
    taken, fast, view = both_ways(app, INFER, json.dumps({**body(), **fields}).encode(), USER)
    assert not taken and fast == view


HEAD = '"name":"text","datatype":"BYTES","shape":[2]'
LAID_OUT = [  # (a request's JSON, whether without_data reads its "data" where it is, the hot
    # path takes it)
    ('{"inputs":[{@,"data":["a b","good"]}]}', True, True),
    ('{"inputs":[{"data" :\n [ "a b" ,\t"good" ] ,@}]}', True, True),  # data first
    ('{"id":"data","inputs":[{@,"data":["data","\\"data\\": 1"]}]}', True, True),
    ('{"inputs":[{@,"data":["é \\u00e9","\\ud83d\\ude00"]}],"id":"x"}', True, True),
    ('{"id":"\\u0041","inputs":[{@,"data":["a","b"]}]}', False, True),  # escaped
    ('{"inputs":[{@,"data":["a","b"],"data":["c","d"]}]}', False, True),  # the last
    ('{"inputs":[{@,"data":["a","b"],"d\\u0061ta":["c","d"]}]}', False, True),  # too
    (
        '{"inputs":[{@,"data":["a","b"]}],"outputs":[{"name":"label","data":1}]}',
        False,
        False,
    ),  # the view ignores the field
    ('{"inputs":[{@,"data":["a","b"]},{@,"data":["c","d"]}]}', False, False),
    ('{"inputs":[{@,"data":[["a"],["b"]]}]}', False, False),  # nested: the view
    ('{"inputs":[{@,"data":["a","b"]]}', True, False),  # not JSON: read, refused
    ('{"inputs":[{@,"parameters":{"data":["a","b"]}}]}', True, False),  # no such
]


@pytest.mark.parametrize("data, located, hot", LAID_OUT, ids=[d for d, _, _ in LAID_OUT])
def test_data_read_where_it_is_only_where_it_is_the_inputs(app, data, located, hot):
    """without_data: the first "data" key's array read in place, msgspec given the rest, only
    where that array can be nothing but the one input's data; every answer the view's."""
    data = data.replace("@", HEAD)
    assert (rest.without_data(data.encode(), contract.LIMITS) is not None) == located
    taken, fast, view = both_ways(app, INFER, data.encode(), USER)
    assert fast == view, (fast, view)
    assert taken == hot and (fast[0] == "200 OK") >= hot


def test_data_read_in_place_reaches_a_model_that_reads_texts(own):
    """A shadowed stable reads each tweet as a str: those left in place are given it."""
    client = own
    put_candidate(client, model=SMALL, shadow_percent=100)
    texts = ["I love it", "not good at all", "naïve café", 'say "hi"']
    plain = client.post(f"/v2/models/{DEFAULT}/infer", json=body(texts), headers=USER)
    shadowed = client.post("/v2/models/stable/infer", json=body(texts), headers=USER)
    assert plain.status_code == shadowed.status_code == 200
    assert shadowed.json == plain.json


@pytest.mark.parametrize("sent, status, words", REFUSED, ids=[w for _, _, w in REFUSED])
def test_the_hot_path_leaves_every_refusal_to_the_view(app, sent, status, words):
    data = json.dumps(sent).encode() if isinstance(sent, dict) else sent
    taken, fast, view = both_ways(app, INFER, data, USER)
    assert not taken and fast == view and fast[0].startswith(str(status))


def test_random_requests_get_the_views_bytes(app):
    rng = random.Random(36)
    alphabet = 'ab é😀"\\\n\x00&;<>:)' + "".join(map(chr, range(0x20, 0x7F)))
    for _ in range(150):
        texts = [
            "".join(rng.choices(alphabet, k=rng.randint(0, 30))) for _ in range(rng.randint(1, 8))
        ]
        fields = rng.choice(OUTPUTS)
        if rng.random() < 0.5:
            fields = {**fields, "id": rng.choice(["", "42", "é", "a\x7f", "\n"])}
        if rng.random() < 0.5:
            path, data, headers = INFER, *binary_body([t.encode() for t in texts], **fields)
        else:
            data, headers = json.dumps(body(texts, **fields), ensure_ascii=rng.random() < 0.5), USER
            path, data = INFER, data.encode()
        taken, fast, view = both_ways(app, path, data, headers)
        assert fast == view and (taken or fast[0] != "200 OK"), (data[:300], fast, view)


def test_scores_are_written_as_json_writes_them():
    """msgspec writes a score as json does but under 0.0001 (1e-6 for 1e-06): encode() writes
    the scores with contract.write_floats (tests/test_contract.py holds it to json)."""
    served = registry.Served("m", "1", None, None)
    inference = protocol.Inference(None, [3], ["score"], {"score": False}, "")
    for scores in ([0.5, 5e-05, 0.25], [1e-06, 0.0, 1.0], [9.9e-05, 0.000123, 0.999999]):
        expected = rest.ENCODE(rest_header(served, scores)).encode() + b"\n"
        assert rest.encode(inference, served, ["Positive"] * 3, scores)[0] == expected
        assert rest.ENCODER.encode(scores) != json.dumps(scores, separators=(",", ":")).encode()


def rest_header(served, scores):
    tensor = {"name": "score", "datatype": "FP32", "shape": [3], "data": scores}
    return {"model_name": served.name, "model_version": served.version, "outputs": [tensor]}


def test_flatten_keeps_row_major_order():
    assert protocol.flatten([["a"], ["b"], ["c"]]) == ["a", "b", "c"]
    assert protocol.flatten(["a", ["b", ["c"]], "d"]) == ["a", "b", "c", "d"]
    assert protocol.flatten([]) == []


def test_the_committed_stubs_are_what_the_proto_makes(tmp_path):
    """make v2-stubs, into a scratch folder: byte for byte the committed files."""
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2" / "grpc_predict_v2.proto").write_bytes(
        (ROOT / "v2" / "grpc_predict_v2.proto").read_bytes()
    )
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-I.", "--python_out=.",
         "--grpc_python_out=.", "v2/grpc_predict_v2.proto"],
        cwd=tmp_path, check=True,
    )  # fmt: skip
    for name in ("grpc_predict_v2_pb2.py", "grpc_predict_v2_pb2_grpc.py"):
        assert (tmp_path / "v2" / name).read_bytes() == (ROOT / "v2" / name).read_bytes(), name


# gRPC in-process: the service on a local port, called with grpc's stock client and our stubs.


@pytest.fixture(scope="module")
def door():
    """The gRPC service with the test tokens and small limits, on a loopback port, no TLS."""
    settings = service.Settings.load(
        v2.DEFAULTS,
        {"API_TOKEN": TOKEN, "MAX_TWEETS": 50, "MAX_TWEET_CHARS": 280, "MAX_BODY_BYTES": 65536},
    )
    server = grpc.server(
        ThreadPoolExecutor(max_workers=2),
        options=[("grpc.max_receive_message_length", settings["MAX_BODY_BYTES"])],
    )
    pb2_grpc.add_GRPCInferenceServiceServicer_to_server(grpc_server.Door(settings), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield pb2_grpc.GRPCInferenceServiceStub(channel)
    channel.close()
    server.stop(None)


GRPC_AUTH = (("authorization", f"Bearer {TOKEN}"),)


def infer_request(texts=TWEETS, raw=True, shape=None, **fields):
    request = pb2.ModelInferRequest(**{"model_name": SMALL, **fields})
    tensor = request.inputs.add(name="text", datatype="BYTES", shape=shape or [len(texts)])
    encoded = [t.encode() for t in texts]
    if raw:
        request.raw_input_contents.append(bytes_tensor(encoded))
    else:
        tensor.contents.bytes_contents.extend(encoded)
    return request


@pytest.mark.parametrize("raw", [True, False], ids=["raw_input_contents", "bytes_contents"])
def test_grpc_answers_in_raw_output_contents_as_rest(client, door, raw):
    labels, scores, served = rest_answer(client, TWEETS)
    answer = door.ModelInfer(infer_request(raw=raw, id="g"), metadata=GRPC_AUTH)
    assert (answer.model_name, answer.model_version, answer.id) == (*served, "g")
    assert [(o.name, o.datatype, list(o.shape)) for o in answer.outputs] == [
        ("label", "BYTES", [4]),
        ("score", "FP32", [4]),
    ]
    assert answer.raw_output_contents[0] == bytes_tensor([label.encode() for label in labels])
    assert answer.raw_output_contents[1] == struct.pack("<4f", *scores)
    assert not answer.outputs[0].HasField("contents")


@pytest.mark.parametrize(
    "texts", [TWEETS, ESCAPED, [f"tweet {i} {'not ' * (i % 3)}good" for i in range(50)]]
)
def test_grpc_reads_raw_contents_in_place_as_it_reads_them_otherwise(door, texts, monkeypatch):
    """infer_in_place answers as read() and contract.predict answer: the same response, every
    output asked for or one, the id kept; and it leaves typed contents and errors to them."""
    score = pb2.ModelInferRequest.InferRequestedOutputTensor(name="score")
    requests = [
        infer_request(texts, id="g"),
        infer_request(texts, shape=[len(texts), 1]),
        infer_request(texts, outputs=[score]),
    ]
    in_place, taken = grpc_server.Door.infer_in_place, []

    def spied(self, request, request_id):
        taken.append(in_place(self, request, request_id))
        return taken[-1]

    monkeypatch.setattr(grpc_server.Door, "infer_in_place", spied)
    answers = [door.ModelInfer(r, metadata=GRPC_AUTH) for r in requests]
    assert len(taken) == len(requests) and None not in taken  # answered in place
    monkeypatch.setattr(grpc_server.Door, "infer_in_place", lambda self, r, i: None)
    assert [door.ModelInfer(r, metadata=GRPC_AUTH) for r in requests] == answers


def test_grpc_in_place_takes_only_well_formed_raw_contents():
    settings = service.Settings.load(v2.DEFAULTS, {"API_TOKEN": TOKEN, "MAX_TWEETS": 50})
    servicer = grpc_server.Door(settings)
    assert servicer.infer_in_place(infer_request(), "r") is not None
    for request in (
        infer_request(raw=False),
        infer_request(shape=[5]),
        infer_request([t for t in TWEETS for _ in range(20)]),  # over MAX_TWEETS
        infer_request(outputs=[pb2.ModelInferRequest.InferRequestedOutputTensor(name="x")]),
        pb2.ModelInferRequest(model_name="no-such-model", inputs=infer_request().inputs,
                              raw_input_contents=infer_request().raw_input_contents),
    ):  # fmt: skip
        assert servicer.infer_in_place(request, "r") is None


GRPC_REFUSED = [  # (request, code, the details' words)
    (pb2.ModelInferRequest(model_name=SMALL), "INVALID_ARGUMENT", "missing input 'text'"),
    (infer_request(shape=[5]), "INVALID_ARGUMENT", "which is 5 elements, but it holds 4"),
    (infer_request(["é"] * 51), "INVALID_ARGUMENT", "at most 50 tweets per request, got 51"),
    (infer_request(["x" * 281]), "INVALID_ARGUMENT", 'at most 280 characters: "0"'),
    (infer_request(model_name="nope"), "NOT_FOUND", "no model 'nope'"),
    (infer_request(model_name=""), "NOT_FOUND", "no model ''"),
    (infer_request(model_version="v0"), "NOT_FOUND", "has no version 'v0'"),
]  # fmt: skip


@pytest.mark.parametrize("request_, code, words", GRPC_REFUSED, ids=[c[2] for c in GRPC_REFUSED])
def test_grpc_refusals_are_status_codes_naming_what_was_wrong(door, request_, code, words):
    with pytest.raises(grpc.RpcError) as caught:
        door.ModelInfer(request_, metadata=GRPC_AUTH)
    assert caught.value.code().name == code and words in caught.value.details()


def test_grpc_refuses_raw_and_typed_contents_together_and_two_raw_entries(door):
    both = infer_request()
    both.inputs[0].contents.bytes_contents.append(b"a")
    twice = infer_request()
    twice.raw_input_contents.append(b"")
    for request in (both, twice):
        with pytest.raises(grpc.RpcError) as caught:
            door.ModelInfer(request, metadata=GRPC_AUTH)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "raw_input_contents must hold one entry" in caught.value.details()


def test_grpc_tokens_health_and_metadata(door):
    for metadata in ((), (("authorization", "Bearer wrong"),), (("authorization", TOKEN),)):
        with pytest.raises(grpc.RpcError) as caught:
            door.ModelInfer(infer_request(), metadata=metadata)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert door.ServerLive(pb2.ServerLiveRequest()).live  # no token: probes
    assert door.ServerReady(pb2.ServerReadyRequest()).ready
    assert door.ModelReady(pb2.ModelReadyRequest(name="stable")).ready
    with pytest.raises(grpc.RpcError) as caught:
        door.ModelReady(pb2.ModelReadyRequest(name="nope"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    metadata = door.ModelMetadata(pb2.ModelMetadataRequest(name="stable"), metadata=GRPC_AUTH)
    assert metadata.name == DEFAULT and [t.name for t in metadata.outputs] == ["label", "score"]
    with pytest.raises(grpc.RpcError) as caught:
        door.ServerMetadata(pb2.ServerMetadataRequest())
    assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_grpc_message_over_the_limit_is_refused_by_grpc(door):
    with pytest.raises(grpc.RpcError) as caught:
        door.ModelInfer(infer_request(["x" * 280] * 300), metadata=GRPC_AUTH)
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


# The gRPC processes beside the real server.


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    folder, port = tmp_path_factory.mktemp("v2-real"), free_port()
    (folder / ".api_token").write_text(f"{TOKEN}\n")
    with running_server(folder, GRPC_PORT=str(port), GRPC_WORKERS="2") as started:
        started["grpc"] = f"localhost:{port}"
        yield started


def channel(server):
    credentials = grpc.ssl_channel_credentials((server["folder"] / "server.crt").read_bytes())
    return grpc.secure_channel(server["grpc"], credentials)


def call_until(server, method, request, metadata=GRPC_AUTH, seconds=30):
    """Call a method over TLS until the door answers (it may be starting): the answer or error."""
    deadline = time.monotonic() + seconds
    while True:
        with channel(server) as ch:
            stub = pb2_grpc.GRPCInferenceServiceStub(ch)
            try:
                return getattr(stub, method)(request, metadata=metadata, timeout=5)
            except grpc.RpcError as e:
                if e.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                    return e
            time.sleep(0.2)


def grpc_processes(server):
    """The gRPC processes' pids: children of gunicorn's master."""
    master = make_child(server)
    pids = []
    for children in Path(f"/proc/{master}/task").glob("*/children"):
        for pid in children.read_text().split():
            try:
                if b"v2.grpc_server" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    pids.append(int(pid))
            except OSError:
                continue
    return sorted(pids)


@pytest.mark.slow
def test_the_real_door_answers_over_tls_as_rest(served):
    answer = call_until(served, "ModelInfer", infer_request())
    assert isinstance(answer, pb2.ModelInferResponse), answer
    assert answer.model_name == SMALL and len(grpc_processes(served)) == 2
    refused = call_until(served, "ModelInfer", infer_request(), metadata=())
    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.slow
def test_calls_are_counted_in_the_servers_metrics_and_logged_without_tweets(served):
    call_until(served, "ModelInfer", infer_request(["a secret tweet"]))
    context = ssl.create_default_context(cafile=str(served["folder"] / "server.crt"))
    request = urllib.request.Request(f"https://localhost:{served['port']}/metrics", headers=USER)
    deadline = time.monotonic() + 10
    while True:
        with urllib.request.urlopen(request, context=context) as r:
            text = r.read().decode()
        if 'v2_grpc_requests_total{code="OK",method="ModelInfer"}' in text:
            break
        assert time.monotonic() < deadline, "no gRPC call in /metrics"
        time.sleep(0.2)
    assert "v2_grpc_predictions_total{label=" in text
    log = served["log"].read_text()
    assert '"message": "grpc call"' in log and '"method": "ModelInfer"' in log
    assert "a secret tweet" not in log and TOKEN not in log


def answered(server, token=TOKEN):
    """Whether ModelInfer answers with this token."""
    metadata = (("authorization", f"Bearer {token}"),)
    return isinstance(
        call_until(server, "ModelInfer", infer_request(), metadata), pb2.ModelInferResponse
    )


def eventually(condition, seconds=30, what="the condition"):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"{what} did not come within {seconds} s"
        time.sleep(0.2)


@pytest.mark.slow
def grpc_reloads(served):
    """How many times a gRPC process has read the tokens and models again (its log line)."""
    return served["log"].read_text().count("reloaded the API tokens and the models, default")


def test_hup_reads_the_tokens_again(served):
    token_file = served["folder"] / ".api_token"
    for token, old in (("a-new-token-for-v2", TOKEN), (TOKEN, "a-new-token-for-v2")):
        token_file.write_text(f"{token}\n")
        before = grpc_reloads(served)
        os.kill(make_child(served), signal.SIGHUP)
        # Each of the two processes reads them again on its own, in a second or so, serving the
        # old ones meanwhile (all or none): the new token may be answered by one while the other
        # still takes the old (CI once saw that). Once both have read them, only the new.
        eventually(lambda n=before + 2: grpc_reloads(served) >= n, what="both processes' reload")
        assert answered(served, token)
        assert not any(answered(served, old) for _ in range(4))  # UNAUTHENTICATED in each


@pytest.mark.slow
def test_a_process_that_dies_is_started_again(served):
    first = grpc_processes(served)
    os.kill(first[0], signal.SIGKILL)
    eventually(lambda: len(set(grpc_processes(served)) - set(first)) == 1, what="a new process")
    assert "starting it again in 1 s" in served["log"].read_text()  # gunicorn reaps its status
    assert answered(served) and len(grpc_processes(served)) == 2


@pytest.mark.slow
def test_a_port_in_use_leaves_rest_serving_and_says_so(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with running_server(tmp_path, API_TOKEN=TOKEN, GRPC_PORT=str(port)) as started:
            deadline = time.monotonic() + 10
            while "is in use: no gRPC door" not in started["log"].read_text():
                assert time.monotonic() < deadline, started["log"].read_text()[-2000:]
                time.sleep(0.1)
            assert grpc_processes(started) == []


@pytest.mark.slow
def test_a_lost_parent_stops_them(tmp_path):
    port = free_port()
    with running_server(tmp_path, API_TOKEN=TOKEN, GRPC_PORT=str(port)) as started:
        started["grpc"] = f"localhost:{port}"
        assert answered(started)
        (orphan,) = grpc_processes(started)
        os.kill(make_child(started), signal.SIGKILL)  # the master: no hook of it runs
        eventually(lambda: not alive(orphan), seconds=10, what="the orphan's exit")
        # The job worker, orphaned too, stays in make's process group: stop it, as the fixture's
        # stop() no longer does once make has exited.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(started["process"].pid, signal.SIGTERM)


@pytest.mark.slow
def test_term_stops_them_after_their_calls(tmp_path):
    port = free_port()
    with running_server(tmp_path, API_TOKEN=TOKEN, GRPC_PORT=str(port)) as started:
        started["grpc"] = f"localhost:{port}"
        assert answered(started)
        (pid,) = grpc_processes(started)
        os.kill(make_child(started), signal.SIGTERM)  # as kill -TERM $(cat run/api-PORT.pid)
        assert started["process"].wait(timeout=30) == 0
        assert not alive(pid)
        assert '"message": "stopped"' in started["log"].read_text()


def alive(pid):
    """Whether a process runs (a zombie does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().split(b" ")[2] != b"Z"
    except OSError:
        return False
