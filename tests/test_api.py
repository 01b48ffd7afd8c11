"""The HTTP API in-process: answers, options, every row of the error table, and the OpenAPI spec."""

import io
import json
import logging
import re
from pathlib import Path

import jsonschema_rs
import pytest
from conftest import OTHER_TOKEN, TOKEN
from werkzeug.test import EnvironBuilder, run_wsgi_app

import api
import contract
import model
import registry

PREDICT = f"/api/v1/{TOKEN}/predict"
PAYLOAD = json.loads((Path(api.ROOT) / "payload.json").read_text())
SPEC = json.loads(api.OPENAPI_FILE.read_text())
CATALOGUE = json.loads(registry.MODELS_FILE.read_text())


def post(client, body, path=PREDICT, content_type="application/json", **kwargs):
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post(path, data=data, content_type=content_type, **kwargs)


def check_schema(body, ref):
    """Validate a body against a schema of openapi.json."""
    schema = {"$ref": ref, "components": SPEC["components"]}
    errors = [e.message for e in jsonschema_rs.validator_for(schema).iter_errors(body)]
    assert not errors, errors


# Answers


def test_payload_gets_the_models_labels_in_order(client, default_model):
    response = post(client, PAYLOAD)
    assert response.status_code == 200
    assert response.content_type == "application/json"
    assert list(response.json) == list(PAYLOAD)
    assert list(response.json.values()) == default_model.run(list(PAYLOAD.values()))
    check_schema(response.json, "#/components/schemas/Labels")


def test_ids_of_any_form_keep_their_order(client):
    ids = ["b", "a", "10", "2", "", "ü id", "1.5", "-"]
    response = post(client, {i: "I love it" for i in ids})
    assert list(response.json) == ids
    assert set(response.json.values()) == {"Positive"}


@pytest.mark.parametrize(
    "path, headers",
    [
        (PREDICT, {}),
        (f"/api/v1/{OTHER_TOKEN}/predict", {}),
        ("/api/v1/predict", {"Authorization": f"Bearer {TOKEN}"}),
        ("/api/v1/predict", {"Authorization": f"bearer {OTHER_TOKEN}"}),
    ],
)
def test_every_token_and_way_of_sending_it_works(client, path, headers):
    response = post(client, {"1": "I hate mondays"}, path=path, headers=headers)
    assert (response.status_code, response.json) == (200, {"1": "Negative"})


@pytest.mark.parametrize(
    "query, keys",
    [
        ("?scores=true", {"label", "score"}),
        ("?scores=1", {"label", "score"}),
        ("?explain=true", {"label", "explanation"}),
        ("?scores=true&explain=true", {"label", "score", "explanation"}),
    ],
)
def test_options_add_scores_and_explanations(client, default_model, query, keys):
    response = post(client, PAYLOAD, path=PREDICT + query)
    assert response.status_code == 200
    check_schema(response.json, "#/components/schemas/Details")
    labels = default_model.run(list(PAYLOAD.values()))
    for (tweet_id, answer), label in zip(response.json.items(), labels, strict=True):
        assert set(answer) == keys
        assert answer["label"] == label, tweet_id
        if "score" in answer:
            assert (answer["score"] >= 0.5) == (label == "Positive")
        if "explanation" in answer:
            pulls = answer["explanation"]
            assert all(t["weight"] > 0 for t in pulls["Positive"])
            assert all(t["weight"] < 0 for t in pulls["Negative"])


def test_explanation_names_the_words(client, default_model):
    response = post(client, {"x": "I hate rainy mondays"}, path=PREDICT + "?explain=true")
    negative = [t["term"] for t in response.json["x"]["explanation"]["Negative"]]
    assert "hate" in negative[:2]  # with "raini": April's rain, in the larger model's data
    assert negative == [t for t, _ in default_model.explain("I hate rainy mondays")["Negative"]]


@pytest.mark.parametrize("query", ["", "?scores=false", "?scores=0&explain=false"])
def test_options_off_give_plain_labels(client, query):
    assert post(client, {"1": "I love it"}, path=PREDICT + query).json == {"1": "Positive"}


def test_empty_blank_and_odd_tweets_get_the_documented_answer(client, default_model):
    prior = model.postprocess(model.sigmoid(default_model.intercept))
    odd = {
        "empty": "",
        "blank": " \t\n ",
        "nul": "\u0000",
        "rtl": "\u200f\u202e",
        "emoji": "\U0001f600\U0001f525",
        "cjk": "今日はとても楽しかった",
    }
    response = post(client, odd, path=PREDICT + "?scores=true")
    assert response.status_code == 200
    for tweet_id, answer in response.json.items():
        assert answer == {
            "label": prior,
            "score": round(model.sigmoid(default_model.intercept), 6),
        }, tweet_id


def test_a_tweet_of_only_a_url_and_a_mention_gets_the_prior_and_those_flags(client, default_model):
    response = post(client, {"u": "http://t.co/x @someone"}, path=PREDICT + "?scores=true")
    logit = default_model.intercept + default_model.dense["URL"] + default_model.dense["@mention"]
    assert response.json["u"]["score"] == round(model.sigmoid(logit), 6)


def test_charset_in_content_type_is_fine(client):
    response = post(client, {"1": "great"}, content_type="application/json; charset=utf-8")
    assert response.status_code == 200


# The fast path (api.FastPredict) answers well-formed predict requests without Flask; Flask's view
# is the reference and answers the rest.


def wsgi_environ(path, body, headers=(), query="", content_type="application/json"):
    environ = EnvironBuilder(
        path=path, method="POST", data=body, content_type=content_type, query_string=query
    ).get_environ()
    environ.update(headers)
    return environ


def wsgi_answer(wsgi_app, environ):
    """Return the status, headers and body a WSGI app answers, from a copy of the environ."""
    environ = {**environ, "wsgi.input": io.BytesIO(environ["wsgi.input"].getvalue())}
    body, status, headers = run_wsgi_app(wsgi_app, environ)
    return status, headers.to_wsgi_list(), b"".join(body)


# Tweets json.dumps escapes, under ids contract_core writes back as they are.
ESCAPED = {"a": 'say "hi"\n\\ é 😀 &amp; \u2028', "b": "</script>", "": " ", "~x y": "\x00"}


@pytest.mark.parametrize("tweets", [PAYLOAD, ESCAPED])
def test_the_fast_path_reads_common_bodies_with_contract_core(app, tweets):
    pytest.importorskip("contract_core")
    for body in (json.dumps(tweets).encode(), json.dumps(tweets, ensure_ascii=False).encode()):
        scanned = contract.scanned_batch(body, app.extensions["settings"])
        assert scanned is not None and scanned.texts == list(tweets.values())


@pytest.mark.parametrize(
    "path, headers, tweets",
    [
        (PREDICT, {}, PAYLOAD),
        ("/api/v1/predict", {"HTTP_AUTHORIZATION": f"Bearer {TOKEN}"}, PAYLOAD),
        (f"/api/v1/{OTHER_TOKEN}/predict", {}, {"1": "I hate mondays"}),
        (PREDICT, {}, {'ü "id"': "café &amp; crème brûlée 😀", "": "", "x": "don't :("}),
        (PREDICT, {}, {str(i): f"tweet {i}: {'not ' * (i % 3)}good" for i in range(50)}),
        (PREDICT, {}, ESCAPED),
    ],
)
def test_the_fast_path_answers_well_formed_requests_with_flasks_bytes(app, path, headers, tweets):
    fast = app.wsgi_app.wsgi_app  # Observed(FastPredict(app))
    environ = wsgi_environ(path, json.dumps(tweets).encode(), headers)
    assert fast.answer({**environ, "wsgi.input": io.BytesIO(environ["wsgi.input"].getvalue())})
    status, headers, body = wsgi_answer(fast, environ)
    assert (status, headers, body) == wsgi_answer(fast.flask, environ)
    assert status == "200 OK" and json.loads(body).keys() == tweets.keys()


JSON = "application/json"


@pytest.mark.parametrize(
    "ids",
    [
        [chr(c) for c in range(127)] + ["", "a b", '\\"', "x" * 256],  # ASCII, escapes: msgspec
        ["a\x7f", "b"],  # DEL: json's ensure_ascii escapes it, msgspec does not
        ["ü", "😀", "\u2028", "\ud800"],  # not ASCII
    ],
)
def test_labels_are_written_as_the_json_provider_writes_them(app, ids):
    predictions = {i: ("Positive", "Negative")[n % 2] for n, i in enumerate(ids)}
    expected = app.json.response(predictions).get_data()
    assert app.extensions["labels_json"](predictions) == expected


def test_a_named_models_big_request_gets_the_default_paths_bytes(app, client):
    tweets = {f"id {i}": f'tweet {i}: {"not " * (i % 3)}good \\ " é' for i in range(50)}
    body = json.dumps(tweets).encode()
    served = app.extensions["registry"].get()
    named = client.post(
        f"/api/v1/models/{served.name}/predict",
        data=body,
        content_type=JSON,
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    default = client.post(PREDICT, data=body, content_type=JSON)
    assert named.status_code == default.status_code == 200
    assert named.get_data() == default.get_data() == app.json.response(default.json).get_data()


@pytest.mark.parametrize(
    "path, body, headers, query, content_type",
    [
        ("/api/v1/wrong-token/predict", b'{"1": "hi"}', {}, "", JSON),
        ("/api/v1/predict", b'{"1": "hi"}', {"HTTP_AUTHORIZATION": "Basic x"}, "", JSON),
        (PREDICT, b'{"1": "hi"}', {}, "scores=true", JSON),
        (PREDICT, b'{"1": "hi"}', {}, "", JSON + "; charset=utf-8"),
        (PREDICT, b'{"1": 7}', {}, "", JSON),
        (PREDICT, b'{"1": "a", "1": "b"}', {}, "", JSON),
        (PREDICT, b"\xff", {}, "", JSON),
        (PREDICT, b"[]", {}, "", JSON),
        (PREDICT, json.dumps({str(i): "hi" for i in range(51)}).encode(), {}, "", JSON),
    ],
)
def test_what_the_fast_path_does_not_take_goes_to_flask_with_its_body(
    app, path, body, headers, query, content_type
):
    fast = app.wsgi_app.wsgi_app
    environ = wsgi_environ(path, body, headers, query, content_type)
    taken = {**environ, "wsgi.input": io.BytesIO(body)}
    assert fast.answer(taken) is None
    # What it read is left for Flask's view, which reads nothing twice; else it read nothing.
    assert taken.get("api.body", taken["wsgi.input"].read()) == body
    assert wsgi_answer(fast, environ) == wsgi_answer(fast.flask, environ)


@pytest.mark.parametrize(
    "given, echoed",
    [("abc-123", True), ("x" * 128, True), ("x" * 129, False), ("bad\tid", False), ("é", False)],
)
def test_request_id_is_echoed_or_made(client, given, echoed):
    response = client.get("/health", headers={"X-Request-ID": given})
    assert (response.headers["X-Request-ID"] == given) == echoed
    assert 0 < len(response.headers["X-Request-ID"]) <= 128


def test_health_ready_and_openapi(client, default_model):
    assert client.get("/health").json == {"status": "ok"}
    assert client.get("/ready").json == {
        "status": "ready",
        "model_version": default_model.version,
        "models": {m["name"]: "loaded" for m in CATALOGUE["models"]},
        "aliases": {
            "source": "file",
            "version": 0,
            "read": True,
            "seconds_since_read": None,
            "problem": None,
        },
    }
    spec = client.get("/openapi.json").json
    tweets = spec["components"]["schemas"]["Tweets"]
    assert (tweets["maxProperties"], tweets["additionalProperties"]["maxLength"]) == (50, 280)


def test_ready_is_503_without_a_model(app):
    loaded = app.extensions.pop("registry")
    try:
        response = app.test_client().get("/ready")
    finally:
        app.extensions["registry"] = loaded
    assert response.status_code == 503
    assert response.json["detail"] == "no model is loaded"


# Errors: one row per case of the error table.

TOO_MANY = {str(i): "ok" for i in range(51)}
ERRORS = [
    # (name, method, path, body, content type, headers, status, words in the detail)
    ("malformed JSON", "POST", PREDICT, '{"1": "a",', None, {}, 400, "not valid JSON"),
    ("invalid UTF-8", "POST", PREDICT, b'{"1": "\xff\xfe"}', None, {}, 400, "not valid UTF-8"),
    ("UTF-8 BOM", "POST", PREDICT, b'\xef\xbb\xbf{"1": "a"}', None, {}, 400, "not valid JSON"),
    ("array body", "POST", PREDICT, '["a", "b"]', None, {}, 400, "got array"),
    ("string body", "POST", PREDICT, '"a tweet"', None, {}, 400, "got string"),
    ("null body", "POST", PREDICT, "null", None, {}, 400, "got null"),
    ("empty body", "POST", PREDICT, "", None, {}, 400, "not valid JSON"),
    ("empty object", "POST", PREDICT, "{}", None, {}, 400, "at least one tweet"),
    (
        "repeated id",
        "POST",
        PREDICT,
        '{"1": "a", "2": "b", "1": "c"}',
        None,
        {},
        400,
        'repeated: "1"',
    ),
    ("NaN", "POST", PREDICT, '{"1": NaN}', None, {}, 400, "NaN is not valid JSON"),
    ("deep nesting", "POST", PREDICT, "[" * 50_000, None, {}, 400, "nested too deeply"),
    ("unknown option", "POST", PREDICT + "?score=true", "{}", None, {}, 400, "unknown query"),
    ("bad option", "POST", PREDICT + "?scores=yes", "{}", None, {}, 400, "true, false, 1 or 0"),
    ("text/plain", "POST", PREDICT, '{"1": "a"}', "text/plain", {}, 415, "got text/plain"),
    (
        "form",
        "POST",
        PREDICT,
        "a=b",
        "application/x-www-form-urlencoded",
        {},
        415,
        "application/json",
    ),
    ("no content type", "POST", PREDICT, '{"1": "a"}', "", {}, 415, "got none"),
    ("number", "POST", PREDICT, '{"1": "ok", "7": 7}', None, {}, 422, '(number): "7"'),
    ("null", "POST", PREDICT, '{"a": null}', None, {}, 422, '(null): "a"'),
    ("object", "POST", PREDICT, '{"a": {"t": "x"}}', None, {}, 422, '(object): "a"'),
    ("array", "POST", PREDICT, '{"a": ["x"]}', None, {}, 422, '(array): "a"'),
    (
        "boolean",
        "POST",
        PREDICT,
        '{"a": true, "b": 1}',
        None,
        {},
        422,
        '(boolean, number): "a", "b"',
    ),
    (
        "many wrong",
        "POST",
        PREDICT,
        json.dumps({str(i): i for i in range(15)}),
        None,
        {},
        422,
        '"9" and 5 more',
    ),
    (
        "tweet too long",
        "POST",
        PREDICT,
        json.dumps({"x": "a" * 281, "y": "ok"}),
        None,
        {},
        422,
        'at most 280 characters: "x"',
    ),
    (
        "too many tweets",
        "POST",
        PREDICT,
        json.dumps(TOO_MANY),
        None,
        {},
        413,
        "at most 50 tweets per request, got 51",
    ),
    (
        "body too big",
        "POST",
        PREDICT,
        json.dumps({"1": "a" * 70_000}),
        None,
        {},
        413,
        "at most 65536 bytes",
    ),
    (
        "lone surrogate",
        "POST",
        PREDICT,
        '{"1": "ok", "2": "\\ud800 alone"}',
        None,
        {},
        400,
        'a lone surrogate (\\ud800-\\udfff with no partner) in id "2"',
    ),
    ("GET predict", "GET", PREDICT, None, None, {}, 405, "method is not allowed"),
    ("PUT predict", "PUT", PREDICT, '{"1": "a"}', None, {}, 405, "method is not allowed"),
    ("wrong token", "POST", "/api/v1/wrong/predict", '{"1": "a"}', None, {}, 404, "not found"),
    ("GET, wrong token", "GET", "/api/v1/wrong/predict", None, None, {}, 405, "not allowed"),
    ("unknown path", "GET", "/nothing/here", None, None, {}, 404, "not found"),
    ("old path", "POST", "/predict", '{"1": "a"}', None, {}, 404, "not found"),
    ("no bearer", "POST", "/api/v1/predict", '{"1": "a"}', None, {}, 401, "Bearer"),
    (
        "wrong bearer",
        "POST",
        "/api/v1/predict",
        '{"1": "a"}',
        None,
        {"Authorization": "Bearer nope"},
        401,
        "Bearer",
    ),
    (
        "basic auth",
        "POST",
        "/api/v1/predict",
        '{"1": "a"}',
        None,
        {"Authorization": f"Basic {TOKEN}"},
        401,
        "Bearer",
    ),
    (
        "non-ASCII token",
        "POST",
        "/api/v1/t\u00f6ken/predict",
        '{"1": "a"}',
        None,
        {},
        404,
        "not found",
    ),
]


@pytest.mark.parametrize(
    "method, path, body, content_type, headers, status, detail",
    [row[1:] for row in ERRORS],
    ids=[row[0] for row in ERRORS],
)
def test_error_table(client, method, path, body, content_type, headers, status, detail):
    content_type = "application/json" if content_type is None else content_type
    response = client.open(
        path, method=method, data=body, content_type=content_type or None, headers=headers
    )
    assert response.status_code == status
    assert response.content_type == "application/json"
    assert set(response.json) == {"error", "text", "detail"}
    assert response.json["error"] == status
    assert response.json["text"].lower() == response.status.split(" ", 1)[1].lower()
    assert detail.lower() in response.json["detail"].lower()
    check_schema(response.json, "#/components/schemas/Error")
    operation = spec_operation(path, method)
    if operation:
        assert str(status) in operation["responses"], f"{status} is not in openapi.json"


def spec_operation(path, method):
    """Return openapi.json's operation for a request, if the path is one of its routes."""
    for template, operations in SPEC["paths"].items():
        parts, given = template.split("/"), path.split("?")[0].split("/")
        if len(parts) == len(given) and all(
            p == g or p.startswith("{") for p, g in zip(parts, given, strict=True)
        ):
            return operations.get(method.lower(), operations.get("post"))
    return None


def test_wrong_token_is_indistinguishable_from_an_unknown_path(client):
    wrong = post(client, {"1": "a"}, path="/api/v1/wrong/predict")
    unknown = post(client, {"1": "a"}, path="/api/v1/wrong/nothing")
    assert (wrong.status_code, wrong.json) == (unknown.status_code, unknown.json)


def test_405_and_401_say_what_is_allowed(client):
    assert client.get(PREDICT).headers["Allow"] == "POST"
    assert post(client, {"1": "a"}, path="/api/v1/predict").headers["WWW-Authenticate"] == "Bearer"


def test_unexpected_error_is_a_json_500_and_the_server_keeps_serving(app, client, monkeypatch):
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    api.log.addHandler(handler)
    loaded = app.extensions["registry"].get().model
    monkeypatch.setattr(loaded, "scores", lambda tweets: 1 / 0)
    monkeypatch.setattr(loaded, "scores_in", lambda *body: 1 / 0)  # the fast path's
    try:
        response = post(client, {"1": "secret tweet text"}, headers={"X-Request-ID": "req-500"})
    finally:
        api.log.removeHandler(handler)
    assert response.status_code == 500
    assert response.json == {
        "error": 500,
        "text": "Internal Server Error",
        "detail": "an unexpected error; request id req-500",
    }
    assert "Traceback" not in response.get_data(as_text=True)
    errors = [r for r in records if r.levelno == logging.ERROR]
    assert errors and errors[0].request_id == "req-500" and errors[0].exc_info
    monkeypatch.undo()
    assert post(client, {"1": "I love it"}).status_code == 200


def test_log_lines_name_the_route_never_the_token_or_the_tweet(client, capfd):
    api.TALLY.flush()  # lines are held, and written within METRICS_FLUSH_MS
    capfd.readouterr()
    post(client, {"1": "my secret tweet"}, headers={"X-Request-ID": "logged-1"})
    post(client, {"1": "x"}, path="/api/v1/wrong-token-xyz/predict")
    client.get("/wrong-token-xyz/elsewhere")
    api.TALLY.flush()
    out, err = capfd.readouterr()
    lines = [json.loads(line) for line in err.splitlines()]
    assert len(lines) == 3
    assert lines[0]["request_id"] == "logged-1"
    assert lines[0]["route"] == "/api/v1/<token>/predict"
    assert (lines[0]["status"], lines[0]["tweets"], lines[0]["method"]) == (200, 1, "POST")
    assert (lines[1]["route"], lines[1]["status"]) == ("/api/v1/<token>/predict", 404)
    assert (lines[2]["route"], lines[2]["status"]) == ("<unmatched>", 404)
    assert all(line["level"] == "info" and line["message"] == "request" for line in lines)
    assert lines[1]["request_id"] != lines[2]["request_id"]
    for secret in (TOKEN, "wrong-token-xyz", "my secret tweet"):
        assert secret not in out + err


def test_a_log_line_is_what_json_dumps_writes_for_any_field(monkeypatch):
    """service.json_line writes the common kinds itself: byte for byte what json.dumps would."""
    import service

    fields = {
        "request_id": 'a "quoted" \\ id\t',
        "route": "/api/v1/<token>/predict",
        "note": "café ☕ 🙂 \u2028",
        "status": 200,
        "latency_ms": 0.123,
        "big": 10**30,
        "seconds": 1e-07,
        "not_a_number": float("nan"),
        "infinite": float("inf"),
        "done": True,
        "nothing": None,
        "kinds": ["Positive", 1, 2.5],
    }
    line = service.json_line("info", "request", fields)
    stamp = json.loads(line)["time"]
    expected = {"time": stamp, "level": "info", "message": "request", **fields}
    assert line == json.dumps(expected) + "\n"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}", stamp)
    then = 946_684_799.5  # the time is the line's own second's, not one kept from before
    monkeypatch.setattr(service.time, "time", lambda: then)
    local = service.time.strftime("%Y-%m-%dT%H:%M:%S%z", service.time.localtime(then))
    assert json.loads(service.json_line("info", "x", {}))["time"] == local
    with pytest.raises(ValueError, match="time, level or message"):
        service.json_line("info", "request", {"level": "debug"})


def test_log_level_above_info_silences_request_lines(client, capfd):
    level = api.log.level
    api.log.setLevel(logging.WARNING)
    try:
        api.TALLY.flush()
        capfd.readouterr()
        assert post(client, {"1": "a"}).status_code == 200
        api.TALLY.flush()
        assert capfd.readouterr().err == ""
    finally:
        api.log.setLevel(level)


# Settings and start-up


def test_tokens_come_from_the_token_file(tmp_path):
    token_file = tmp_path / "tokens"
    token_file.write_text("first-token\nsecond-token, third-token\n")
    app = api.create_app({"API_TOKEN_FILE": str(token_file)})
    client = app.test_client()
    for token in ("first-token", "second-token", "third-token"):
        assert post(client, {"1": "a"}, path=f"/api/v1/{token}/predict").status_code == 200


@pytest.mark.parametrize(
    "config, message",
    [
        ({"API_TOKEN_FILE": "/nonexistent/token"}, "no API token: set API_TOKEN or create"),
        ({"API_TOKEN": " , "}, "no API token"),
    ],
)
def test_start_up_without_a_token_fails_clearly(config, message):
    with pytest.raises(RuntimeError, match=message):
        api.create_app(config)


def test_start_up_with_a_bad_limit_fails_clearly(monkeypatch):
    monkeypatch.setenv("MAX_TWEETS", "lots")
    with pytest.raises(RuntimeError, match="MAX_TWEETS must be a whole number above 0, got 'lots'"):
        api.create_app({"API_TOKEN": TOKEN})


def catalogue(tmp_path, folder):
    """A models.json in tmp_path whose default model's one version is in `folder`."""
    path = tmp_path / "models.json"
    document = json.loads(registry.MODELS_FILE.read_text())
    default = next(m for m in document["models"] if m["name"] == document["default"])
    document["models"] = [{**default, "versions": [str(folder)]}]
    path.write_text(json.dumps(document))
    return path


def test_start_up_with_broken_artifacts_fails_naming_the_file(tmp_path):
    path = catalogue(tmp_path, tmp_path)  # no artifacts there
    with pytest.raises(
        RuntimeError, match="'tweet-sentiment[a-z-]*' cannot load: .*MANIFEST.sha256"
    ):
        api.create_app({"API_TOKEN": TOKEN, "MODELS_FILE": str(path)})


def test_reload_swaps_tokens_and_keeps_them_if_the_model_breaks(tmp_path):
    token_file = tmp_path / "tokens"
    token_file.write_text("old-token")
    app = api.create_app({"API_TOKEN_FILE": str(token_file)})
    client = app.test_client()
    token_file.write_text("new-token")
    api.reload(app)
    assert post(client, {"1": "a"}, path="/api/v1/new-token/predict").status_code == 200
    assert post(client, {"1": "a"}, path="/api/v1/old-token/predict").status_code == 404
    token_file.write_text("third-token")
    app.extensions["settings"]["MODELS_FILE"] = str(catalogue(tmp_path, tmp_path))  # no artifacts
    with pytest.raises(RuntimeError, match="MANIFEST.sha256"):
        api.reload(app)
    assert post(client, {"1": "a"}, path="/api/v1/new-token/predict").status_code == 200


# The OpenAPI document against the app


def test_openapi_lists_every_route_and_only_those(app):
    routes = {
        re.sub(r"<(\w+)>", r"{\1}", rule.rule)
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
    }
    assert routes == set(SPEC["paths"])


def metric(client, name, **labels):
    """Return one sample's value from /metrics, or 0 when it has none yet."""
    text = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith(f"{name}{{{wanted}}} ") or (not labels and line.startswith(name + " ")):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_requests_tweets_and_labels(client, default_model):
    route = "/api/v1/<token>/predict"
    served = {"model": CATALOGUE["default"], "version": default_model.version}
    before = {
        "ok": metric(client, "api_requests_total", route=route, method="POST", status="200"),
        "bad": metric(client, "api_requests_total", route=route, method="POST", status="422"),
        "positive": metric(client, "api_predictions_total", **served, label="Positive"),
        "negative": metric(client, "api_predictions_total", **served, label="Negative"),
        "tweets": metric(client, "api_tweets_per_request_sum"),
    }
    post(client, PAYLOAD)
    post(client, {"1": 7})
    assert metric(client, "api_requests_total", route=route, method="POST", status="200") == (
        before["ok"] + 1
    )
    assert metric(client, "api_requests_total", route=route, method="POST", status="422") == (
        before["bad"] + 1
    )
    positive = metric(client, "api_predictions_total", **served, label="Positive")
    assert positive == before["positive"] + 4
    negative = metric(client, "api_predictions_total", **served, label="Negative")
    assert negative == before["negative"] + 4
    assert metric(client, "api_tweets_per_request_sum") == before["tweets"] + 8
    assert metric(client, "api_model_info", **served) == 1
    text = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    assert 'api_request_duration_seconds_bucket{le="0.01",route="/api/v1/<token>/predict"}' in text
    assert TOKEN not in text


def test_metrics_count_unknown_methods_as_other(client):
    """A client inventing methods must not grow the metrics by a label value each."""
    before = metric(client, "api_requests_total", route="<unmatched>", method="other", status="405")
    for method in ("BREW", "WHEN", "XYZZY"):
        assert client.open("/health", method=method).status_code == 405
    text = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text
    assert "BREW" not in text and "XYZZY" not in text
    after = metric(client, "api_requests_total", route="<unmatched>", method="other", status="405")
    assert after == before + 3


def test_metrics_need_the_token(client):
    response = client.get("/metrics")
    assert response.status_code == 401
    assert response.json["error"] == 401


# Model metadata and the web page


def test_model_metadata_matches_the_spec_and_the_apps_limits(client, default_model):
    response = client.get("/api/v1/model", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    check_schema(response.json, "#/components/schemas/ModelMetadata")
    assert response.json["version"] == default_model.version
    assert response.json["limits"] == {
        "max_tweets": 50,
        "max_tweet_chars": 280,
        "max_body_bytes": 64 * 1024,
    }
    assert response.json["figures"] == default_model.evaluation["figures"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}])
def test_model_metadata_needs_the_token(client, headers):
    response = client.get("/api/v1/model", headers=headers)
    assert response.status_code == 401
    assert response.json["error"] == 401


def test_page_loads_without_a_token_under_a_strict_policy(client):
    response = client.get("/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    policy = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "default-src 'none'" in policy
    assert "unsafe-inline" not in policy
    html = response.text
    assert "<script>" not in html and " on" + "click=" not in html  # no inline script
    for asset in ("/static/app.js", "/static/app.css"):
        assert f'"{asset}"' in html
        asset_response = client.get(asset)
        asset_response.close()  # a file: close it, or it warns
        assert asset_response.status_code == 200


def test_page_script_inserts_text_never_html():
    script = (Path(api.ROOT) / "static" / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script


def test_websocket_path_without_an_upgrade_is_a_json_400(client):
    response = client.get("/api/v1/ws")
    assert response.status_code == 400
    assert response.json["error"] == 400
