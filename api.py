"""The HTTP API: validate requests, ask model.py for labels, format answers and errors as JSON."""

import contextlib
import functools
import hmac
import io
import json
import logging
import os
import random
import sys
import time

import prometheus_client
from flask import Flask, Response, current_app, jsonify, render_template, request
from flask_sock import Sock
from prometheus_client import Counter, Gauge, Histogram, multiprocess
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import (
    BadRequest,
    HTTPException,
    InternalServerError,
    NotFound,
    RequestEntityTooLarge,
    ServiceUnavailable,
    Unauthorized,
    UnsupportedMediaType,
)

import contract
import jobs
import model
import service

ROOT = service.ROOT
OPENAPI_FILE = ROOT / "openapi.json"
DEFAULTS = {
    **jobs.DEFAULTS,  # the settings every door shares, and the jobs door's
    "WS_MAX_CONNECTIONS": 500,  # open websockets per worker; gunicorn's pool is 1,000 connections
    "WS_AUTH_SECONDS": 5,  # a browser's first message must authenticate within this
    "WS_PING_SECONDS": 25,  # a silent websocket is pinged; no pong by the next ping closes it
}
OPTIONS = contract.OPTIONS
REQUEST_ID_MAX = 128
PATH_TOKEN_ROUTE, BEARER_ROUTE = "/api/v1/<token>/predict", "/api/v1/predict"
# The web page's policy: nothing from another host, no inline script or style.
PAGE_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

log = logging.getLogger("api")

# Metrics. Under gunicorn, PROMETHEUS_MULTIPROC_DIR (gunicorn.conf.py sets it) makes them add up
# across workers. Routes are rules ("/api/v1/<token>/predict"): a token is never a label.
REQUESTS = Counter(
    "api_requests", "Requests answered, by route, method and status", ["route", "method", "status"]
)
LATENCY = Histogram(
    "api_request_duration_seconds",
    "Seconds from request to response, by route",
    ["route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
TWEETS = Histogram(
    "api_tweets_per_request",
    "Tweets in each predict request",
    buckets=(1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000),
)
PREDICTIONS = Counter("api_predictions", "Labels given, by label", ["label"])
# Metric labels take few values, so that a client cannot grow the metrics: routes are rules,
# statuses the app's own, and methods outside this set are counted as "other".
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
WS_OPEN = Gauge("api_websockets_open", "Websockets open", multiprocess_mode="livesum")
WS_MESSAGES = Counter("api_websocket_messages", "Websocket replies, by type", ["type"])
WS_LATENCY = Histogram(
    "api_websocket_message_seconds",
    "Seconds from a websocket message to its reply",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
MODEL_INFO = Gauge(
    "api_model_info",
    "The model being served: 1, labelled with its version",
    ["version"],
    multiprocess_mode="livemax",
)


def create_app(config=None):
    """Build the app: settings, the checked model, the routes and the JSON error handler."""
    app = Flask(__name__)
    app.json.sort_keys = False  # answers keep the request's order
    app.json.compact = True
    settings = jobs.settings_of(config, DEFAULTS)
    app.config["MAX_CONTENT_LENGTH"] = settings["MAX_BODY_BYTES"]
    app.config["SOCK_SERVER_OPTIONS"] = {
        "max_message_size": settings["MAX_BODY_BYTES"],  # over it: closed with 1009
        "ping_interval": settings["WS_PING_SECONDS"],
        # One read takes a whole TLS record (16 KiB at most), so that no decrypted data waits in
        # the TLS layer where the reader's select() cannot see it.
        "receive_bytes": 65536,
    }
    app.extensions["settings"] = settings
    reload(app)
    app.extensions["openapi"] = openapi(settings)
    service.setup_logging(log)

    app.wsgi_app = Observed(FastPredict(app))
    app.before_request(before_upgrade)
    app.after_request(note_route)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(contract.PredictionError, prediction_error)
    app.register_error_handler(Exception, unexpected_error)
    # Another method gets 405 whatever the token, which says nothing about the token.
    app.add_url_rule(
        PATH_TOKEN_ROUTE,
        view_func=predict_with_path_token,
        methods=["POST"],
        provide_automatic_options=False,
    )
    app.add_url_rule(
        BEARER_ROUTE,
        view_func=predict_with_bearer_token,
        methods=["POST"],
        provide_automatic_options=False,
    )
    app.add_url_rule("/api/v1/model", view_func=model_metadata)
    blueprint, app.extensions["jobs_metrics"] = jobs.routes(
        require_bearer_token, parse_options, settings
    )
    app.register_blueprint(blueprint)
    Sock(app).route("/api/v1/ws")(websocket)
    app.add_url_rule("/", view_func=page)
    app.add_url_rule("/health", view_func=health)
    app.add_url_rule("/ready", view_func=ready)
    app.add_url_rule("/openapi.json", view_func=lambda: current_app.extensions["openapi"])
    app.add_url_rule("/metrics", view_func=metrics)
    return app


def reload(app):
    """Load the tokens and the model afresh; both or neither replace the current ones."""
    settings = app.extensions["settings"]
    tokens = settings.tokens()
    loaded = model.load(settings["ARTIFACTS_DIR"])
    loaded.run(["a model that cannot answer does not replace the one in service"])
    app.extensions["tokens"], app.extensions["model"] = tokens, loaded


def token_is_valid(token, extensions=None):
    """Compare against every valid token in constant time."""
    candidate = token.encode("utf-8", "surrogateescape")
    valid = False
    for known in (extensions or current_app.extensions)["tokens"]:
        valid |= hmac.compare_digest(candidate, known)
    return valid


def predict_with_path_token(token):
    if not token_is_valid(token):
        raise NotFound()  # the same answer as any unknown path
    return predict()


def bearer_token(authorization):
    """Return the token of an 'Authorization: Bearer <token>' header's value, or None."""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def require_bearer_token():
    token = bearer_token(request.headers.get("Authorization", ""))
    if token is None or not token_is_valid(token):
        raise Unauthorized(
            "send a valid token as 'Authorization: Bearer <token>'",
            www_authenticate=WWWAuthenticate("bearer"),
        )


def predict_with_bearer_token():
    require_bearer_token()
    return predict()


def predict():
    """Label each tweet of a JSON object {"id": "tweet", ...}, keeping the ids and their order."""
    options = parse_options()
    if request.mimetype != "application/json":
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, got {request.mimetype or 'none'}"
        )
    tweets = contract.batch(contract.parse_json(read_body()))
    request.environ["api.tweets"] = len(tweets)
    return jsonify(answer(current_app.extensions, tweets, **options))


def answer(extensions, tweets, scores=False, explain=False):
    """Ask the contract with the app's model and settings, and count the tweets and labels."""
    predictions = contract.predict(
        extensions["model"], tweets, extensions["settings"], scores=scores, explain=explain
    )
    labels = contract.labels_of(predictions)
    TWEETS.observe(len(labels))
    for label in model.LABELS:
        predictions_metric(label).inc(labels.count(label))
    return predictions


def parse_options():
    """Return the query options, each true or false; refuse unknown ones."""
    if not request.query_string:
        return dict.fromkeys(OPTIONS, False)
    unknown = sorted(set(request.args) - set(OPTIONS))
    if unknown:
        raise BadRequest(f"unknown query parameter(s) {unknown}; allowed: {list(OPTIONS)}")
    options = {}
    for name in OPTIONS:
        value = request.args.get(name, "false")
        if value not in ("true", "false", "1", "0"):  # as openapi.json says
            raise BadRequest(f"query parameter {name} must be true or false, got {value!r}")
        options[name] = value in ("true", "1")
    return options


def read_body():
    """Return the body as text; 413 over the size limit, 400 unless UTF-8."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    try:
        return request.get_data(cache=False).decode("utf-8")
    except RequestEntityTooLarge:
        size = request.content_length
        got = f", got {size}" if size else ""
        raise RequestEntityTooLarge(f"the body must be at most {limit} bytes{got}") from None
    except UnicodeDecodeError as e:
        raise BadRequest(f"the body is not valid UTF-8: {e.reason} at byte {e.start}") from None


def model_metadata():
    """The model's version, labels, limits, input schema, training data and figures."""
    require_bearer_token()
    settings = current_app.extensions["settings"]
    classifier = current_app.extensions["model"]
    return contract.metadata(classifier, settings, settings["MAX_BODY_BYTES"])


def page():
    """The web page: try the model in a browser. It loads without a token."""
    response = Response(render_template("index.html"))
    response.headers["Content-Security-Policy"] = PAGE_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    return response


def health():
    """The process is up."""
    return {"status": "ok"}


def ready():
    """The model is loaded, checked against its manifest, and answers."""
    loaded = current_app.extensions.get("model")
    if loaded is None or loaded.run([""])[0] not in model.LABELS:
        raise ServiceUnavailable("the model is not loaded")
    return {"status": "ready", "model_version": loaded.version}


def metrics():
    """The Prometheus metrics of every worker; the token is needed, as a Bearer token."""
    require_bearer_token()
    MODEL_INFO.labels(current_app.extensions["model"].version).set(1)
    registry = prometheus_client.CollectorRegistry()
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = prometheus_client.REGISTRY
    text = prometheus_client.generate_latest(registry)
    text += prometheus_client.generate_latest(current_app.extensions["jobs_metrics"])
    return Response(text, mimetype="text/plain")


def openapi(settings):
    """Return the OpenAPI document with this app's limits filled in."""
    document = json.loads(OPENAPI_FILE.read_text(encoding="utf-8"))
    schemas = document["components"]["schemas"]
    for name, most in (("Tweets", "MAX_TWEETS"), ("JobTweets", "MAX_JOB_TWEETS")):
        schemas[name]["maxProperties"] = settings[most]
        schemas[name]["additionalProperties"]["maxLength"] = settings["MAX_TWEET_CHARS"]
    return document


# The websocket door: {"type": "prediction_request", ...} in, prediction_response or
# prediction_error out, one connection for many requests. The contract does the rest.

WS_FIELDS = {"type", "request_id", "tweets", *OPTIONS}
WS_POLL_SECONDS = 0.5  # how often an idle handler looks whether the worker is stopping
WS_DRAIN_SECONDS = 2  # how long a stopping worker answers a client that goes on sending


class Websockets:
    """This worker's count of open websockets, and whether it is stopping (gunicorn.conf.py)."""

    open = 0
    stopping = False


def websocket(ws):
    """Authenticate, then answer each message until the client leaves or the worker stops."""
    settings = current_app.extensions["settings"]
    Websockets.open += 1
    WS_OPEN.inc()
    try:
        if authenticate(ws, settings["WS_AUTH_SECONDS"]):
            converse(ws)
    finally:
        Websockets.open -= 1
        WS_OPEN.dec()


def before_upgrade():
    """Refuse a websocket with a bad token, or over the bound, with an HTTP error."""
    if request.endpoint != "websocket":
        return
    if "Authorization" in request.headers:
        require_bearer_token()
    if (
        Websockets.stopping
        or Websockets.open >= current_app.extensions["settings"]["WS_MAX_CONNECTIONS"]
    ):
        raise ServiceUnavailable("this worker has too many open websockets; try again")


def authenticate(ws, seconds):
    """A valid Bearer token on the upgrade, or a first message {"type": "auth", "token": ...}."""
    if "Authorization" in request.headers:
        return True  # checked by before_upgrade
    first = ws.receive(timeout=seconds)
    document = None
    with contextlib.suppress(ValueError, TypeError):
        document = json.loads(first)
    if not isinstance(document, dict) or document.get("type") != "auth":
        ws.close(1008, f'send {{"type": "auth", "token": ...}} first, within {seconds} s')
        return False
    token = document.get("token")
    if not isinstance(token, str) or not token_is_valid(token):
        ws.close(1008, "invalid token")
        return False
    ws.send(
        json.dumps({"type": "auth_ok", "model_version": current_app.extensions["model"].version})
    )
    ws_message_done("auth", 0, 0.0)
    return True


def converse(ws):
    """Answer every message; when the worker stops, answer what has arrived, then close 1001.

    A client that goes on sending while the worker stops gets WS_DRAIN_SECONDS of answers, so
    that it cannot hold the old worker until gunicorn's graceful time-out kills it.
    """
    drain_until = None
    while True:
        if Websockets.stopping and drain_until is None:
            drain_until = time.monotonic() + WS_DRAIN_SECONDS
        message = ws.receive(timeout=0 if drain_until else WS_POLL_SECONDS)
        if message is None or (drain_until and time.monotonic() > drain_until):
            if drain_until:
                ws.close(1001, "the server is restarting; reconnect")
                return
            continue
        start = time.perf_counter()
        try:
            kind, reply, tweets = ws_reply(message)
        except Exception as error:  # a bug: say so, log it, and keep the connection
            request_id = request.environ.get("api.request_id", "-")
            log.error("unexpected error", exc_info=error, extra={"request_id": request_id})
            detail = f"an unexpected error; request id {request_id}"
            kind, tweets = "prediction_error", 0
            reply = {"type": kind, "request_id": None, "error": 500}
            reply.update(text="Internal Server Error", detail=detail)
        ws.send(json.dumps(reply, ensure_ascii=False))
        ws_message_done(kind, tweets, time.perf_counter() - start)


def ws_reply(message):
    """Return the kind of message (for metrics and logs), the reply and the number of tweets."""
    request_id = None
    try:
        if not isinstance(message, str):
            raise contract.BadInput("messages must be JSON text, got a binary message")
        document = contract.parse_json(message, "the message")
        if not isinstance(document, contract.Pairs):
            raise contract.BadInput(
                f"the message must be a JSON object, got {contract.json_type(document)}"
            )
        fields = dict(document)
        request_id = fields.get("request_id")
        kind = fields.get("type")
        if kind != "prediction_request":
            raise contract.BadInput(
                'missing field "type"'
                if kind is None
                else f"unknown message type {kind!r}; expected prediction_request"
            )
        unknown = sorted(set(fields) - WS_FIELDS)
        if unknown:
            raise contract.BadInput(f"unknown field(s) {unknown}; allowed: {sorted(WS_FIELDS)}")
        if not isinstance(request_id, str) or not 0 < len(request_id) <= REQUEST_ID_MAX:
            raise contract.BadInput(
                f'field "request_id" must be a string of 1 to {REQUEST_ID_MAX} characters'
                + ("" if "request_id" in fields else "; it is missing")
            )
        options = {}
        for name in OPTIONS:
            value = fields.get(name, False)
            if not isinstance(value, bool):
                raise contract.BadInput(
                    f'field "{name}" must be true or false, got {contract.json_type(value)}'
                )
            options[name] = value
        if "tweets" not in fields:
            raise contract.BadInput('missing field "tweets": {"id": "tweet text", ...}')
        tweets = contract.batch(fields["tweets"], 'field "tweets"')
        predictions = answer(current_app.extensions, tweets, **options)
    except contract.PredictionError as e:
        reply = {"type": "prediction_error", "request_id": request_id, **e.as_dict()}
        return "prediction_error", reply, 0
    reply = {"type": "prediction_response", "request_id": request_id, "predictions": predictions}
    return "prediction_response", reply, len(predictions)


def ws_message_done(kind, tweets, seconds):
    """Count, time and log one message: its kind and size, never its token or tweets."""
    ws_metrics(kind).inc()
    WS_LATENCY.observe(seconds)
    if log.isEnabledFor(logging.INFO):
        fields = {
            "request_id": request.environ.get("api.request_id", "-"),
            "route": "/api/v1/ws",
            "reply": kind,
            "latency_ms": round(seconds * 1000, 3),
            "tweets": tweets,
        }
        sys.stderr.write(service.json_line("info", "websocket message", fields))


# Errors: one JSON shape, {"error": status, "text": reason phrase, "detail": what was wrong}.


def error_response(error):
    response = jsonify(error=error.code, text=error.name, detail=error.description)
    response.status_code = error.code
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def prediction_error(error):
    response = jsonify(error.as_dict())
    response.status_code = error.status
    return response


def http_error(error):
    if error.code is None or error.code < 400:
        return error  # a redirect, not an error
    return error_response(error)


def unexpected_error(error):
    request_id = request.environ.get("api.request_id", "-")
    log.error(
        "unexpected error", exc_info=error, extra={"request_id": request_id, "route": route()}
    )
    return error_response(InternalServerError(f"an unexpected error; request id {request_id}"))


# The REST predict routes' hot path. A predict request that is well formed is answered here,
# straight from the WSGI environ, without Flask's request context, routing, hooks and response
# objects, which cost more than the model and the contract together. Every other request, and
# any predict request this path does not take as it stands (an error, a query string, another
# content type), goes to Flask: its view and error handlers stay the reference, and
# tests/test_api.py checks that both give the same bytes.

PREDICT_PREFIX, PREDICT_SUFFIX = PATH_TOKEN_ROUTE.split("<token>")


class FastPredict:
    """WSGI: answer well-formed predict requests; hand everything else to the Flask app."""

    def __init__(self, app):
        self.app, self.flask = app, app.wsgi_app

    def __call__(self, environ, start_response):
        body = self.answer(environ)
        if body is None:
            return self.flask(environ, start_response)
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return [body]

    def answer(self, environ):
        """Return the answer's bytes; or None for Flask to answer, the body put back to be read."""
        route, token = self.route_and_token(environ)
        if (
            route is None
            or environ.get("QUERY_STRING")
            or environ.get("CONTENT_TYPE") != "application/json"
        ):
            return None
        length = environ.get("CONTENT_LENGTH", "")
        length = int(length) if length.isdigit() else None
        if length is None or length > self.app.config["MAX_CONTENT_LENGTH"]:  # Flask's limit
            return None
        data = environ["wsgi.input"].read(length)
        answered = None
        if len(data) == length and token_is_valid(token, self.app.extensions):
            answered = self.labels(environ, route, data)
        if answered is None:
            environ["wsgi.input"] = io.BytesIO(data)
        return answered

    def labels(self, environ, route, data):
        """Return the labels of a body's tweets as JSON bytes, or None if Flask must answer."""
        try:
            tweets = contract.batch(contract.parse_json(data.decode("utf-8")))
            predictions = answer(self.app.extensions, tweets)
        except Exception:  # bad input, or a bug: Flask answers either as it always does
            return None
        environ["api.route"], environ["api.tweets"] = route, len(tweets)
        return f"{self.app.json.dumps(predictions, separators=(',', ':'))}\n".encode()

    @staticmethod
    def route_and_token(environ):
        """Return the predict route a POST asks for and the token it carries, or (None, None)."""
        path = environ.get("PATH_INFO", "")
        if environ["REQUEST_METHOD"] != "POST" or not path.isascii():
            return None, None
        if path == BEARER_ROUTE:
            token = bearer_token(environ.get("HTTP_AUTHORIZATION", ""))
            if token is not None and token.isascii():
                return BEARER_ROUTE, token
        elif path.startswith(PREDICT_PREFIX) and path.endswith(PREDICT_SUFFIX):
            token = path[len(PREDICT_PREFIX) : -len(PREDICT_SUFFIX)]
            if token and "/" not in token:
                return PATH_TOKEN_ROUTE, token
        return None, None


# Request ids, metrics and one JSON log line per request: never the token (routes are logged as
# their rule), never a tweet.


class Observed:
    """WSGI middleware: give each request an id, and count, time and log it once answered."""

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        start = time.perf_counter()
        given = environ.get("HTTP_X_REQUEST_ID", "")
        valid = 0 < len(given) <= REQUEST_ID_MAX and given.isascii() and given.isprintable()
        # A new id: 128 random bits, as uuid4 gives, without its system call (random reseeds in
        # each forked worker; an id is not a secret).
        request_id = environ["api.request_id"] = (
            given if valid else f"{random.getrandbits(128):032x}"
        )
        status = []

        def start_response_with_id(status_line, headers, exc_info=None):
            status.append(int(status_line[:3]))
            headers.append(("X-Request-ID", request_id))
            return start_response(status_line, headers, exc_info)

        try:
            response = self.wsgi_app(environ, start_response_with_id)
        except StopIteration:  # a websocket has ended (flask-sock under gunicorn): 101, its life
            self.observe(environ, request_id, 101, start)
            raise
        self.observe(environ, request_id, status[-1], start)
        return response

    @staticmethod
    def observe(environ, request_id, status, start):
        seconds = time.perf_counter() - start
        rule, method = environ.get("api.route", "<unmatched>"), environ["REQUEST_METHOD"]
        requests, latency = request_metrics(rule, method, status)
        requests.inc()
        latency.observe(seconds)
        if log.isEnabledFor(logging.INFO):
            fields = {
                "request_id": request_id,
                "method": method,
                "route": rule,
                "status": status,
                "latency_ms": round(seconds * 1000, 3),
                "tweets": environ.get("api.tweets", 0),
            }
            sys.stderr.write(service.json_line("info", "request", fields))


# The metrics' children, looked up once per label values: prometheus_client's labels() takes a lock
# and checks its arguments on every call, half the metrics' cost per request.


@functools.cache
def request_metrics(rule, method, status):
    method = method if method in METHODS else "other"
    return REQUESTS.labels(rule, method, status), LATENCY.labels(rule)


@functools.cache
def ws_metrics(kind):
    return WS_MESSAGES.labels(kind)


@functools.cache
def predictions_metric(label):
    return PREDICTIONS.labels(label)


def note_route(response):
    """Keep the route for the log line and metrics."""
    request.environ["api.route"] = route()
    return response


def route():
    """The matched route's rule, which names the token as <token>; never the raw path."""
    rule = request.url_rule
    return rule.rule if rule else "<unmatched>"
