"""The HTTP API: validate requests, ask model.py for labels, format answers and errors as JSON."""

import functools
import hmac
import json
import logging
import os
import sys
import time
import uuid
from pathlib import Path

import prometheus_client
from flask import Flask, Response, current_app, jsonify, request
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
    UnprocessableEntity,
    UnsupportedMediaType,
)

import model

ROOT = Path(__file__).resolve().parent
OPENAPI_FILE = ROOT / "openapi.json"
DEFAULTS = {
    "API_TOKEN": "",  # comma-separated; empty means: read API_TOKEN_FILE
    "API_TOKEN_FILE": str(ROOT / ".api_token"),
    "ARTIFACTS_DIR": str(model.ARTIFACTS_DIR),
    "MAX_TWEETS": 10_000,
    "MAX_TWEET_CHARS": 5_000,
    "MAX_BODY_BYTES": 8 * 1024 * 1024,
}
OPTIONS = ("scores", "explain")
MAX_IDS_NAMED = 10  # an error names at most this many ids, then says how many more
REQUEST_ID_MAX = 128

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
MODEL_INFO = Gauge(
    "api_model_info",
    "The model being served: 1, labelled with its version",
    ["version"],
    multiprocess_mode="livemax",
)


class Settings(dict):
    """The app's settings: defaults, then the environment, then what the caller passes."""

    @classmethod
    def load(cls, config=None):
        settings = cls(DEFAULTS)
        for key in DEFAULTS.keys() & os.environ.keys():
            value = os.environ[key]
            if isinstance(DEFAULTS[key], int):
                if not value.isdigit() or int(value) < 1:
                    raise RuntimeError(f"{key} must be a whole number above 0, got {value!r}")
                value = int(value)
            settings[key] = value
        settings.update(config or {})
        return settings

    def tokens(self):
        """Return the valid tokens: API_TOKEN, or else the lines or commas of API_TOKEN_FILE."""
        raw = self["API_TOKEN"]
        if not raw:
            path = Path(self["API_TOKEN_FILE"])
            try:
                raw = path.read_text(encoding="utf-8")
            except OSError as e:
                raise RuntimeError(
                    f"no API token: set API_TOKEN or create {path} (make api-start does): "
                    f"{e.strerror}"
                ) from None
        tokens = [t.strip() for t in raw.replace("\n", ",").split(",") if t.strip()]
        if not tokens:
            raise RuntimeError("no API token: API_TOKEN and the token file are empty")
        return [t.encode() for t in tokens]


def create_app(config=None):
    """Build the app: settings, the checked model, the routes and the JSON error handler."""
    app = Flask(__name__)
    app.json.sort_keys = False  # answers keep the request's order
    app.json.compact = True
    settings = Settings.load(config)
    app.config["MAX_CONTENT_LENGTH"] = settings["MAX_BODY_BYTES"]
    app.extensions["settings"] = settings
    reload(app)
    app.extensions["openapi"] = openapi(settings)
    setup_logging()

    app.wsgi_app = Observed(app.wsgi_app)
    app.after_request(note_route)
    app.register_error_handler(HTTPException, http_error)
    app.register_error_handler(Exception, unexpected_error)
    # Another method gets 405 whatever the token, which says nothing about the token.
    app.add_url_rule(
        "/api/v1/<token>/predict",
        view_func=predict_with_path_token,
        methods=["POST"],
        provide_automatic_options=False,
    )
    app.add_url_rule(
        "/api/v1/predict",
        view_func=predict_with_bearer_token,
        methods=["POST"],
        provide_automatic_options=False,
    )
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


def token_is_valid(token):
    """Compare against every valid token in constant time."""
    candidate = token.encode("utf-8", "surrogateescape")
    valid = False
    for known in current_app.extensions["tokens"]:
        valid |= hmac.compare_digest(candidate, known)
    return valid


def predict_with_path_token(token):
    if not token_is_valid(token):
        raise NotFound()  # the same answer as any unknown path
    return predict()


def require_bearer_token():
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token_is_valid(token.strip()):
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
    tweets = parse_body()
    request.environ["api.tweets"] = len(tweets)
    settings = current_app.extensions["settings"]
    check_tweets(tweets, settings)
    classifier = current_app.extensions["model"]
    ids, texts = list(tweets), list(tweets.values())
    scores = classifier.scores(texts)
    labels = [model.postprocess(s) for s in scores]
    TWEETS.observe(len(labels))
    for label in model.LABELS:
        predictions_metric(label).inc(labels.count(label))
    if not any(options.values()):
        return jsonify(dict(zip(ids, labels, strict=True)))
    answer = {}
    for i, text, score, label in zip(ids, texts, scores, labels, strict=True):
        answer[i] = {"label": label}
        if options["scores"]:
            answer[i]["score"] = round(score, 6)
        if options["explain"]:
            answer[i]["explanation"] = {
                side: [{"term": t, "weight": round(w, 6)} for t, w in pulls]
                for side, pulls in classifier.explain(text).items()
            }
    return jsonify(answer)


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


class Pairs(list):
    """A JSON object as its (key, value) pairs, so that duplicate ids can be seen."""


def refuse_constant(name):
    raise ValueError(f"{name} is not valid JSON")


def parse_body():
    """Return the body's JSON object as a dict; 400 for anything else."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    try:
        text = request.get_data(cache=False).decode("utf-8")
    except RequestEntityTooLarge:
        size = request.content_length
        got = f", got {size}" if size else ""
        raise RequestEntityTooLarge(f"the body must be at most {limit} bytes{got}") from None
    except UnicodeDecodeError as e:
        raise BadRequest(f"the body is not valid UTF-8: {e.reason} at byte {e.start}") from None
    try:
        document = json.loads(text, object_pairs_hook=Pairs, parse_constant=refuse_constant)
    except ValueError as e:
        raise BadRequest(f"the body is not valid JSON: {e}") from None
    except RecursionError:
        raise BadRequest("the body is not valid JSON: it is nested too deeply") from None
    if not isinstance(document, Pairs):
        raise BadRequest(
            'the body must be a JSON object of {"id": "tweet text", ...}, '
            f"got {json_type(document)}"
        )
    if not document:
        raise BadRequest('the body must hold at least one tweet: {"id": "tweet text", ...}')
    tweets = dict(document)
    if len(tweets) < len(document):
        seen, repeated = set(), []
        for key, _ in document:
            if key in seen and key not in repeated:
                repeated.append(key)
            seen.add(key)
        raise BadRequest(f"each id must appear once; repeated: {name_ids(repeated)}")
    return tweets


def check_tweets(tweets, settings):
    """Enforce the count limit (413), then string values and the length limit (422)."""
    if len(tweets) > settings["MAX_TWEETS"]:
        raise RequestEntityTooLarge(
            f"at most {settings['MAX_TWEETS']} tweets per request, got {len(tweets)}"
        )
    wrong = {i: json_type(t) for i, t in tweets.items() if not isinstance(t, str)}
    if wrong:
        kinds = sorted(set(wrong.values()))
        raise UnprocessableEntity(
            f"each tweet must be a string; not a string ({', '.join(kinds)}): {name_ids(wrong)}"
        )
    limit = settings["MAX_TWEET_CHARS"]
    long = [i for i, t in tweets.items() if len(t) > limit]
    if long:
        raise UnprocessableEntity(
            f"each tweet must be at most {limit} characters: {name_ids(long)}"
        )


def json_type(value):
    """Return the JSON name of a parsed value's type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "object" if isinstance(value, Pairs) else "array"


def name_ids(ids):
    """Name the first ids, and how many more there are."""
    ids = list(ids)
    named = ", ".join(json.dumps(i, ensure_ascii=False) for i in ids[:MAX_IDS_NAMED])
    more = len(ids) - MAX_IDS_NAMED
    return named + (f" and {more} more" if more > 0 else "")


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
    registry = prometheus_client.REGISTRY
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = prometheus_client.CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    return Response(prometheus_client.generate_latest(registry), mimetype="text/plain")


def openapi(settings):
    """Return the OpenAPI document with this app's limits filled in."""
    document = json.loads(OPENAPI_FILE.read_text(encoding="utf-8"))
    tweets = document["components"]["schemas"]["Tweets"]
    tweets["maxProperties"] = settings["MAX_TWEETS"]
    tweets["additionalProperties"]["maxLength"] = settings["MAX_TWEET_CHARS"]
    return document


# Errors: one JSON shape, {"error": status, "text": reason phrase, "detail": what was wrong}.


def error_response(error):
    response = jsonify(error=error.code, text=error.name, detail=error.description)
    response.status_code = error.code
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
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
        request_id = environ["api.request_id"] = given if valid else uuid.uuid4().hex
        status = []

        def start_response_with_id(status_line, headers, exc_info=None):
            status.append(int(status_line[:3]))
            headers.append(("X-Request-ID", request_id))
            return start_response(status_line, headers, exc_info)

        response = self.wsgi_app(environ, start_response_with_id)
        seconds = time.perf_counter() - start
        rule, method = environ.get("api.route", "<unmatched>"), environ["REQUEST_METHOD"]
        requests, latency = request_metrics(rule, method, status[-1])
        requests.inc()
        latency.observe(seconds)
        if log.isEnabledFor(logging.INFO):
            fields = {
                "request_id": request_id,
                "method": method,
                "route": rule,
                "status": status[-1],
                "latency_ms": round(seconds * 1000, 3),
                "tweets": environ.get("api.tweets", 0),
            }
            sys.stderr.write(json_line("info", "request", fields))
        return response


# The metrics' children, looked up once per label values: prometheus_client's labels() takes a lock
# and checks its arguments on every call, half the metrics' cost per request.


@functools.cache
def request_metrics(rule, method, status):
    method = method if method in METHODS else "other"
    return REQUESTS.labels(rule, method, status), LATENCY.labels(rule)


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


def json_line(level, message, fields):
    """Return a log line: one JSON object with the time, level, message and fields."""
    line = {"time": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "level": level, "message": message}
    line.update(fields)
    return json.dumps(line) + "\n"


class JSONFormatter(logging.Formatter):
    """Format a record as one JSON line with its extra fields, as request lines are written."""

    FIELDS = ("request_id", "route")

    def format(self, record):
        fields = {f: getattr(record, f) for f in self.FIELDS if hasattr(record, f)}
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        return json_line(record.levelname.lower(), record.getMessage(), fields).rstrip("\n")


def setup_logging():
    """Send the api logger's records to standard error as JSON lines, once."""
    if not log.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(JSONFormatter())
        log.addHandler(handler)
        log.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())
        log.propagate = False
