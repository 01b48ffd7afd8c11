"""The HTTP API: validate requests, ask the registry's models for labels, answer in JSON."""

import functools
import hmac
import io
import ipaddress
import json
import logging
import math
import mmap
import os
import random
import re
import struct
import sys
import time

import gevent
import msgspec
import prometheus_client
from flask import Flask, Response, current_app, jsonify, render_template, request
from gunicorn.http.errors import ParseException
from prometheus_client import Counter, Gauge, Histogram, multiprocess
from prometheus_client.core import GaugeMetricFamily
from werkzeug.datastructures import WWWAuthenticate
from werkzeug.exceptions import (
    BadRequest,
    Conflict,
    Forbidden,
    HTTPException,
    InternalServerError,
    NotFound,
    RequestEntityTooLarge,
    RequestTimeout,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    UnsupportedMediaType,
)

import aliases
import contract
import jobs
import model
import pace
import reference
import registry
import service
import v2.rest
import ws

ROOT = service.ROOT
OPENAPI_FILE = ROOT / "openapi.json"
# The API's own settings; it serves the jobs door too, so a process reads service.SHARED, the
# jobs door's and these (DEFAULTS, every one).
OWN = {
    # Bytes of request bodies and websocket messages one worker holds at once, read and not yet
    # answered: past it, a new upload gets 503 and a websocket that would go past it is cut off.
    "MAX_INFLIGHT_BYTES": 32 * 1024 * 1024,
    # A body may take CLIENT_TIMEOUT seconds (gunicorn.conf.py's too), and a second more for every
    # BODY_MIN_BYTES_PER_SECOND bytes that arrive: past it, 408. A body or websocket message on
    # its way, and an answer or reply being sent, must move CLIENT_TIMEOUT times
    # CLIENT_MIN_BYTES_PER_SECOND bytes every CLIENT_TIMEOUT until it ends (pace.py): a 408 or
    # the connection cut off otherwise. A reader at 40 kB/s is well above it.
    "CLIENT_TIMEOUT": 30,
    "BODY_MIN_BYTES_PER_SECOND": 64 * 1024,
    "CLIENT_MIN_BYTES_PER_SECOND": 16 * 1024,
    # Wrong tokens from one client address, per worker: past AUTH_FAILURES within
    # AUTH_FAILURES_SECONDS, the address gets 429 until that window ends (Guesses).
    "AUTH_FAILURES": 50,
    "AUTH_FAILURES_SECONDS": 60,
    "WS_MAX_CONNECTIONS": 500,  # websockets with a token, per worker; the pool is 1,000
    # Of them, one token's at most: a burst of one token took every slot (issue 37, round 3).
    # One client with one token raises it to WS_MAX_CONNECTIONS.
    "WS_MAX_CONNECTIONS_PER_TOKEN": 250,
    "WS_MAX_UNAUTHENTICATED": 50,  # websockets still to send their auth message, per worker
    "WS_AUTH_SECONDS": 5,  # a browser's first message must authenticate within this
    "WS_AUTH_MAX_BYTES": 4096,  # the most a websocket may send before it has authenticated
    "WS_PING_SECONDS": 25,  # a silent websocket is pinged; no pong by the next ping closes it
    # The credential that moves aliases (aliases/), never one that asks for predictions.
    "ADMIN_TOKEN": "",  # comma-separated; empty means: read ADMIN_TOKEN_FILE
    "ADMIN_TOKEN_FILE": str(ROOT / ".admin_token"),
    # The promotion guard (aliases/guard.py): labelled evidence, then live traffic.
    "GUARD_REFERENCE_FILE": str(reference.REFERENCE_FILE),
    "GUARD_REFERENCE_IDS": ",".join(reference.REFERENCE_PREFIXES),  # its held-out sources
    "PROMOTE_MAX_DROP": "0.01",  # balanced accuracy on them at most this far below stable's
    "PROMOTE_MIN_PAIRS": 1000,  # distinct shadowed tweets a candidate needs
    "PROMOTE_MIN_AGREEMENT": "0.9",  # live agreement needed (lower with labels: guard.py)
    "METRICS_FLUSH_MS": 100,  # metrics and request log lines held at most this long (Tally)
}
DOOR = service.Door(OWN)
DOORS = (jobs.DOOR, DOOR)
DEFAULTS = service.defaults(*DOORS)
OPTIONS = contract.OPTIONS
RETRY_AFTER_SECONDS = 5  # a 503 of the aliases' home: try again then
REQUEST_ID_MAX = ws.REQUEST_ID_MAX
PATH_TOKEN_ROUTE, BEARER_ROUTE = "/api/v1/<token>/predict", "/api/v1/predict"
MODEL_ROUTE = "/api/v1/models/<name>/predict"
VERSION_ROUTE = "/api/v1/models/<name>/versions/<version>/predict"
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
PREDICTIONS = Counter(
    "api_predictions", "Labels given, by model, version and label", ["model", "version", "label"]
)
# Metric labels take few values, so that a client cannot grow the metrics: routes are rules,
# statuses the app's own, and methods outside this set are counted as "other".
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
MODEL_INFO = Gauge(
    "api_model_info",
    "Each model version loaded: 1, labelled with its name and version",
    ["model", "version"],
    multiprocess_mode="livemax",
)


def create_app(config=None):
    """Build the app: settings, the checked model, the routes and the JSON error handler."""
    # The page's files without the OPTIONS Flask would add to their route (text/html, 200).
    app = Flask(__name__, static_folder=None)
    app.static_folder = "static"
    app.add_url_rule(
        f"{app.static_url_path}/<path:filename>",
        endpoint="static",
        view_func=app.send_static_file,
        provide_automatic_options=False,
    )
    app.json.sort_keys = False  # answers keep the request's order
    app.json.compact = True
    # Answers {id: label} as the app's JSON provider writes them, by a writer chosen here.
    app.extensions["labels_json"] = labels_writer(app.json)
    # OPTIONS gets 405 in JSON, naming the methods allowed, where Flask would answer an empty
    # text/html 200; no redirect from a path with "//" to one built from the Host header (a 308
    # to any host a client names): such a path is an unknown one, 404.
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    app.url_map.merge_slashes = False
    settings = service.load(*DOORS, config=config)
    app.config["MAX_CONTENT_LENGTH"] = settings["MAX_BODY_BYTES"]
    app.extensions["settings"] = settings
    app.extensions["guesses"] = Guesses(
        settings["AUTH_FAILURES"], settings["AUTH_FAILURES_SECONDS"]
    )
    IN_FLIGHT.limit = settings["MAX_INFLIGHT_BYTES"]
    BodyStream.rate = settings["BODY_MIN_BYTES_PER_SECOND"]
    pace.configure(settings["CLIENT_TIMEOUT"], settings["CLIENT_MIN_BYTES_PER_SECOND"])
    TALLY.interval = settings["METRICS_FLUSH_MS"] / 1000
    for name in ("PROMOTE_MIN_AGREEMENT", "PROMOTE_MAX_DROP"):
        settings[name] = share(name, settings[name])
    app.extensions["reference"] = aliases.Reference(
        settings["GUARD_REFERENCE_FILE"], settings["GUARD_REFERENCE_IDS"]
    )
    reload(app)
    app.extensions["openapi"] = openapi(settings)
    service.setup_logging(log)

    app.wsgi_app = Observed(FastPredict(app))
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
    for rule in (MODEL_ROUTE, VERSION_ROUTE):
        app.add_url_rule(
            rule, view_func=predict_named, methods=["POST"], provide_automatic_options=False
        )
    app.add_url_rule("/api/v1/model", view_func=model_metadata)
    app.add_url_rule("/api/v1/models", view_func=models_listing)
    app.add_url_rule("/api/v1/models/<name>", view_func=model_metadata)
    app.add_url_rule("/api/v1/aliases", view_func=aliases_view)
    app.add_url_rule(
        "/api/v1/aliases/candidate", view_func=candidate_view, methods=["PUT", "DELETE"]
    )
    app.add_url_rule("/api/v1/aliases/promote", view_func=promote_view, methods=["POST"])
    app.add_url_rule("/api/v1/aliases/rollback", view_func=rollback_view, methods=["POST"])
    blueprint, app.extensions["jobs_metrics"], app.extensions["jobs_store"] = jobs.routes(
        require_bearer_token, parse_options, BodyStream, settings, resolve_model, IN_FLIGHT
    )
    app.register_blueprint(blueprint)
    app.register_blueprint(v2.rest.routes(ws_answer, require_bearer_token, read_body))
    ws.route(app, ws_answer, require_bearer_token, checked_token, refuse_guesser, IN_FLIGHT)
    app.add_url_rule("/", view_func=page)
    app.add_url_rule("/health", view_func=health)
    app.add_url_rule("/ready", view_func=ready)
    app.add_url_rule("/openapi.json", view_func=lambda: current_app.extensions["openapi"])
    app.add_url_rule("/metrics", view_func=metrics)
    return app


def reload(app):
    """Load the tokens and the models afresh; all or none replace the current ones."""
    settings = app.extensions["settings"]
    tokens = settings.tokens()
    admin = settings.tokens("ADMIN_TOKEN", "admin token", required=False)
    if set(admin) & set(tokens):
        raise RuntimeError(
            "an admin token is also an API token: give ADMIN_TOKEN a value of its own"
        )
    models = registry.load(
        settings["MODELS_FILE"],
        aliases_file=settings["ALIASES_FILE"],
        database_url=settings["DATABASE_URL"],
    )
    app.extensions.update(tokens=tokens, admin_tokens=admin, registry=models)


def share(name, value):
    """A setting that is a number from 0 to 1; RuntimeError naming it otherwise."""
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    if not 0 <= number <= 1:
        raise RuntimeError(f"{name} must be a number from 0 to 1, got {value!r}")
    return number


def token_is_valid(token, extensions=None, kind="tokens"):
    """Compare against every valid token (of `kind`: "tokens" or "admin_tokens") in constant
    time."""
    candidate = token.encode("utf-8", "surrogatepass")  # whatever str a client sent
    valid = False
    for known in (extensions or current_app.extensions)[kind]:
        valid |= hmac.compare_digest(candidate, known)
    return valid


class Guesses:
    """Wrong tokens by client address, in one worker: past `most` of them within `seconds` of the
    first, the address gets 429 with Retry-After, whatever token it sends, until those seconds
    are over. Its tokens are not checked meanwhile: a valid token is never counted, but answered
    at once it would tell a right guess from a wrong one. At most MAX addresses are held.

    An address is the client's as the server sees it (clients behind one proxy or NAT share
    theirs), IPv6 by its /64; each worker counts its own, so an address gets up to `most` times
    the workers' number of guesses a window."""

    MAX = 10_000

    def __init__(self, most, seconds):
        self.most, self.seconds = most, seconds
        self.windows = {}  # address: [end of its window, wrong tokens in it], oldest first
        self.blocked = {}  # address: the end of its window, once past `most`

    def refuse(self, environ):
        """429 if the request's address is blocked (one truth test when none is)."""
        left = self.blocked and self.seconds_left(environ)
        if left:
            raise TooManyRequests(
                f"too many wrong tokens from this address; try again in {left} s",
                retry_after=left,
            )

    def seconds_left(self, environ):
        """Whole seconds until the request's address is let in again; 0 if it is not blocked."""
        address = client_key(environ.get("REMOTE_ADDR", ""))
        until = self.blocked.get(address)
        if until is None:
            return 0
        left = math.ceil(until - time.monotonic())
        if left <= 0:
            del self.blocked[address]
            return 0
        return left

    def failed(self, environ):
        """Count a wrong token against the request's address."""
        now, address = time.monotonic(), client_key(environ.get("REMOTE_ADDR", ""))
        window = self.windows.get(address)
        if window is None or window[0] <= now:
            self.windows.pop(address, None)
            if len(self.windows) >= self.MAX:
                self.forget(now)
            window = self.windows[address] = [now + self.seconds, 0]
        window[1] += 1
        if window[1] >= self.most:
            self.blocked[address] = window[0]

    def forget(self, now):
        """Drop the windows that are over, and if that is not enough, the oldest tenth."""
        over = [a for a, (end, _) in self.windows.items() if end <= now]
        if len(self.windows) - len(over) >= self.MAX:
            over += list(self.windows)[: self.MAX // 10]
        for address in over:
            self.windows.pop(address, None)
            self.blocked.pop(address, None)


def client_key(address):
    """A client's address as counted: IPv4 whole, IPv6 by its /64 (what one subscriber gets)."""
    if ":" not in address:
        return address
    try:
        ip = ipaddress.IPv6Address(address.partition("%")[0])
    except ValueError:
        return address
    return str(ip.ipv4_mapped) if ip.ipv4_mapped else ip.exploded[:19]


def predict_with_path_token(token):
    if not checked_token(token):
        raise NotFound()  # the same answer as any unknown path
    return predict()


def checked_token(token):
    """token_is_valid, for a request: 429 if its address has sent too many wrong tokens of late,
    and a wrong one counted against it."""
    guesses = current_app.extensions["guesses"]
    guesses.refuse(request.environ)
    if token_is_valid(token):
        return True
    guesses.failed(request.environ)
    return False


def refuse_guesser():
    """429 if this request's address has sent too many wrong tokens of late."""
    current_app.extensions["guesses"].refuse(request.environ)


def bearer_token(authorization):
    """Return the token of an 'Authorization: Bearer <token>' header's value, or None."""
    scheme, _, token = authorization.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def require_bearer_token():
    """401 unless the request has a valid Bearer token; its holder's id (the start of the token's
    SHA-256, which reveals nothing of it) in the environ as "api.client", whose jobs are its own."""
    token = bearer_token(request.headers.get("Authorization", ""))
    if token is None or not checked_token(token):
        raise Unauthorized(
            "send a valid token as 'Authorization: Bearer <token>'",
            www_authenticate=WWWAuthenticate("bearer"),
        )
    request.environ["api.client"] = service.client_id(token)


def predict_with_bearer_token():
    require_bearer_token()
    return predict()


def resolve_model(name=None, version=None, request_id=None):
    """The registry.Served for a name and version (the default for None: with a request id, the
    canary's share goes to the candidate), from the models loaded now: a HUP may have replaced
    them."""
    models = current_app.extensions["registry"]
    if name is None and version is None:
        return models.route(request_id)  # no id: get()'s
    return models.get(name, version)


def predict_named(name, version=None):
    """Predict with a model named in the path, and a version of it if named."""
    require_bearer_token()
    return predict(name, version)


def predict(name=None, version=None):
    """Label each tweet of a JSON object {"id": "tweet", ...}, keeping the ids and their order."""
    served = resolve_model(name, version, request.environ.get("api.request_id"))
    options = parse_options()
    if request.mimetype != "application/json":
        raise UnsupportedMediaType(
            f"Content-Type must be application/json, got {request.mimetype or 'none'}"
        )
    data = read_body(request.environ, current_app.config["MAX_CONTENT_LENGTH"])
    extensions = current_app.extensions
    tweets = contract.checked_batch(data, extensions["settings"])
    checked = tweets is not None
    if not checked:  # parsed again, for the error to name what is wrong
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise BadRequest(f"the body is not valid UTF-8: {e.reason} at byte {e.start}") from None
        tweets = contract.batch(contract.parse_json(text))
    request.environ["api.tweets"] = len(tweets)
    predictions = answer(extensions, served, tweets, checked=checked, **options)
    if any(options.values()):
        response = jsonify(predictions)
    else:
        body = extensions["labels_json"](predictions)
        response = current_app.response_class(body, mimetype="application/json")
    response.headers.extend(model_headers(served))
    return response


# An answer {id: label} is written by msgspec (a tenth of json's time for 1,000 labels) when that
# gives json's very bytes: both write ASCII alike, but for DEL (json's ensure_ascii escapes it).
LABELS_ENCODER = msgspec.json.Encoder()


def labels_writer(provider):
    """How an answer {id: label} is written as the JSON provider (compact) writes it, with its
    newline: by msgspec where that can give its bytes, else by one JSONEncoder made here (the
    provider makes a new one for every answer)."""
    encoder = json.JSONEncoder(
        ensure_ascii=provider.ensure_ascii, sort_keys=provider.sort_keys, separators=(",", ":")
    )

    def by_json(predictions):
        return f"{encoder.encode(predictions)}\n".encode()

    def by_msgspec(predictions):
        try:
            body = LABELS_ENCODER.encode(predictions)
        except UnicodeEncodeError:  # a lone surrogate, which json escapes
            return by_json(predictions)
        if body.isascii() and b"\x7f" not in body:
            return body + b"\n"
        return by_json(predictions)

    return by_msgspec if writes_compact_ascii(provider) else by_json


def writes_compact_ascii(provider):
    """Whether the JSON provider writes an answer as msgspec and contract_core do: ASCII, in the
    request's order (compact, as create_app sets it)."""
    return provider.ensure_ascii and not provider.sort_keys


def model_headers(served):
    """The headers every predict answer carries: which model and version answered."""
    return [("X-Model-Name", served.name), ("X-Model-Version", served.version)]


def ws_answer(tweets, scores=False, explain=False, name=None, version=None, request_id=None):
    """A websocket message's batch, answered as REST answers it: (predictions, served)."""
    served = resolve_model(name, version, request_id)
    extensions = current_app.extensions
    return answer(extensions, served, tweets, scores=scores, explain=explain), served


def answer(extensions, served, tweets, scores=False, explain=False, checked=False):
    """Ask the contract with a model and the app's settings, and count the tweets and labels.
    checked: the tweets are contract.checked_batch()'s."""
    predictions = contract.predict(
        served.model,
        tweets,
        extensions["settings"],
        scores=scores,
        explain=explain,
        checked=checked,
    )
    tally(served, contract.labels_of(predictions))
    return predictions


def tally(served, labels):
    """Count a batch's tweets, and its labels by the model and version that gave them."""
    TALLY.observe(TWEETS, len(labels))
    left = len(labels)
    for label in model.LABELS:  # the last one's count is what the others leave
        count = contract.count_of(labels, label) if label != model.LABELS[-1] else left
        left -= count
        if count:
            TALLY.inc(predictions_metric(served.name, served.version, label), count)


def parse_options(also=()):
    """Return the query options, each true or false; refuse unknown ones (but those in `also`,
    which the caller reads)."""
    if not request.query_string:
        return dict.fromkeys(OPTIONS, False)
    unknown = sorted(set(request.args) - set(OPTIONS) - set(also))
    if unknown:
        allowed = [*OPTIONS, *also]
        raise BadRequest(f"unknown query parameter(s) {unknown}; allowed: {allowed}")
    options = {}
    for name in OPTIONS:
        value = request.args.get(name, "false")
        if value not in ("true", "false", "1", "0"):  # as openapi.json says
            raise BadRequest(f"query parameter {name} must be true, false, 1 or 0, got {value!r}")
        options[name] = value in ("true", "1")
    return options


def model_metadata(name=None):
    """A model's (the default's if none is named) version, labels, limits, input and output
    schemas, training data and figures."""
    require_bearer_token()
    settings = current_app.extensions["settings"]
    served = resolve_model(name)
    return contract.metadata(served, settings, settings["MAX_BODY_BYTES"])


def models_listing():
    """Every registered model: name, description, version served, default or not, its state."""
    require_bearer_token()
    return {"models": current_app.extensions["registry"].listing()}


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
    """Every model models.json requires is loaded (checked against its manifest, and answers);
    the body names each model's state. The token is not needed: it says nothing of tweets."""
    models = current_app.extensions.get("registry")
    if models is None:
        raise ServiceUnavailable("no model is loaded")
    is_ready, states, problem = models.ready()
    if STOPPING:
        is_ready, problem = False, "the server is stopping (STOP_DRAIN_SECONDS)"
    followed = {} if models.aliases is None else {"aliases": models.aliases.health()}
    if is_ready:
        version = models.get().version
        return {"status": "ready", "model_version": version, "models": states, **followed}
    body = {"error": 503, "text": "Service Unavailable", "detail": problem}
    return {**body, "status": "not ready", "models": states, **followed}, 503


def metrics():
    """The Prometheus metrics of every worker; the token is needed, as a Bearer token."""
    require_bearer_token()
    TALLY.flush()  # this worker's own, to the moment; the others' within METRICS_FLUSH_MS
    for name, version in current_app.extensions["registry"].known:
        MODEL_INFO.labels(name, version).set(1)
    text = prometheus_client.generate_latest(metrics_collector())
    text += prometheus_client.generate_latest(current_app.extensions["jobs_metrics"])
    text += prometheus_client.generate_latest(Families(guard_families(aliases_state())))
    return Response(text, mimetype="text/plain")


class Families(prometheus_client.CollectorRegistry):
    """Metric families made for one scrape, as a registry generate_latest() can write."""

    def __init__(self, families):
        super().__init__(auto_describe=False)
        self.families = families

    def collect(self):
        return iter(self.families)


GUARD_LABELS = ["stable_model", "stable_version", "candidate_model", "candidate_version"]


def guard_families(state):
    """The promotion guard's evidence for the candidate, from GET /api/v1/aliases's answer: the
    distinct shadowed tweets summed over every process, both models on the labelled reference
    set, and whether it may be promoted (prometheus/rules.yml alerts on them)."""
    candidate, shadow, labelled = state["candidate"], state["shadow"], state["labelled"]
    if candidate is None or "unavailable" in shadow:
        return []
    labels = [*aliases.pair(state["stable"]), *aliases.pair(candidate)]
    figures = {
        "api_guard_shadow_pairs": ("Distinct tweets the candidate shadowed", shadow["pairs"]),
        "api_guard_shadow_agreeing": ("Of them, those both labelled alike", shadow["agreeing"]),
        "api_guard_promotable": (
            "1 if the guard would promote the candidate now",
            int(state["guard"]["promotable"]),
        ),
    }
    if "unavailable" not in labelled:
        figures.update(
            api_guard_stable_balanced_accuracy=(
                "Stable's balanced accuracy on the labelled reference set",
                labelled["stable"]["balanced_accuracy"],
            ),
            api_guard_candidate_balanced_accuracy=(
                "The candidate's balanced accuracy on the labelled reference set",
                labelled["candidate"]["balanced_accuracy"],
            ),
            api_guard_labelled_agreement=(
                "The share of the labelled reference set both models label alike",
                labelled["agreement"],
            ),
        )
    families = []
    for name, (documentation, value) in figures.items():
        family = GaugeMetricFamily(name, documentation, labels=GUARD_LABELS)
        family.add_metric(labels, value)
        families.append(family)
    return families


def metrics_collector():
    """Every worker's metrics under gunicorn; this process's otherwise."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        return prometheus_client.REGISTRY
    collector = prometheus_client.CollectorRegistry()
    multiprocess.MultiProcessCollector(collector)
    return collector


# Aliases (aliases/): read with a prediction or admin token, moved with the admin token only.


def require_admin_token(read_only=False):
    """401 without a valid token; 403 for a prediction token where the admin token is needed."""
    token = bearer_token(request.headers.get("Authorization", ""))
    refuse_guesser()
    if token is not None and token_is_valid(token, kind="admin_tokens"):
        return
    if token is not None and token_is_valid(token):
        if read_only:
            return
        configured = (
            ""
            if current_app.extensions["admin_tokens"]
            else ("; none is configured: set ADMIN_TOKEN or create ADMIN_TOKEN_FILE")
        )
        raise Forbidden(f"a prediction token cannot move aliases: send the admin token{configured}")
    if token is not None:
        current_app.extensions["guesses"].failed(request.environ)
    raise Unauthorized(
        "send a valid token as 'Authorization: Bearer <token>'",
        www_authenticate=WWWAuthenticate("bearer"),
    )


def aliases_state(state=None):
    """The aliases (read now, unless a change gives them), where they live, and the guard's
    evidence for the candidate, as GET /api/v1/aliases answers."""
    models = current_app.extensions["registry"]
    state = state or models.aliases.current(fresh=True)
    candidate = state.candidate
    answer = {
        "stable": state.stable,
        "candidate": candidate,
        "previous": state.previous,
        "version": state.version,
        "home": models.aliases.health(),
        "shadow": {"pairs": 0, "agreeing": 0, "agreement": None},
        "labelled": None,
        "guard": None,
        "canary_percent": candidate.get("canary_percent", 0) if candidate else 0,
    }
    if candidate is None:
        return answer
    try:
        shadow = aliases.live_summary(models.aliases.totals(state.epoch))
    except aliases.Unavailable as e:
        answer["shadow"] = {"unavailable": str(e), "shadow_percent": candidate["shadow_percent"]}
        return answer
    answer["shadow"] = {**shadow, "shadow_percent": candidate["shadow_percent"]}
    answer["labelled"] = evidence(models, state)
    why = guard_reason(models, state, shadow, answer["labelled"])
    answer["guard"] = {"promotable": why is None, "reason": why}
    return answer


def evidence(models, state):
    """Stable's and the candidate's figures on the labelled reference set (aliases/guard.py)."""
    stable, candidate = state.stable, state.candidate
    return current_app.extensions["reference"].evidence(
        models.find(stable["model"], stable["version"]),
        models.find(candidate["model"], candidate["version"]),
    )


def guard_reason(models, state, shadow, labelled):
    # Every worker forks from the master's preloaded registry: loaded here is loaded in all.
    ready = aliases.pair(state.candidate) in models.known
    return aliases.reason(current_app.extensions["settings"], ready, shadow, labelled)


def aliases_view():
    require_admin_token(read_only=True)
    return aliases_state()


def change_aliases(edit, what):
    """Store a change of the aliases and answer the new state; log who changed what."""
    models = current_app.extensions["registry"]
    try:
        state = models.aliases.change(edit)
    except aliases.Refused as e:
        raise Conflict(str(e)) from None
    except aliases.Invalid as e:
        raise BadRequest(str(e)) from None
    except aliases.Unavailable as e:  # the server's fault: nothing changed, say what to mend
        raise ServiceUnavailable(str(e), retry_after=RETRY_AFTER_SECONDS) from None
    log.info(
        "aliases: %s; stable %s, candidate %s, previous %s; version %d",
        what,
        aliases.pair(state.stable),
        aliases.pair(state.candidate),
        aliases.pair(state.previous),
        state.version,
        extra={"request_id": request.environ.get("api.request_id", "-")},
    )
    return aliases_state(state)  # as this change left them, whatever came after


def json_body(default=None):
    """The body as a JSON object (any content type), or default when it is empty; 400 otherwise,
    nested too deeply included."""
    data = read_body(request.environ, current_app.config["MAX_CONTENT_LENGTH"])
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise BadRequest(f"the body is not valid UTF-8: {e.reason} at byte {e.start}") from None
    if not text.strip():
        return default
    try:
        document = contract.parse_json(text)
    except contract.PredictionError as e:
        raise BadRequest(e.detail) from None
    # The admin routes read the fields of a flat object: a nested value is refused by them.
    return dict(document) if isinstance(document, contract.Pairs) else document


def candidate_view():
    require_admin_token()
    if request.method == "DELETE":
        json_body()  # read, so that a body sent is not left on the connection
        return change_aliases(aliases.clear_candidate, "candidate removed")
    models = current_app.extensions["registry"]
    return change_aliases(aliases.set_candidate(models.get, json_body()), "candidate set")


def promote_view():
    require_admin_token()
    body = json_body({})
    if not isinstance(body, dict) or not isinstance(body.get("force", False), bool):
        raise BadRequest('send nothing, or {"force": true} to skip the guard')
    models, force = current_app.extensions["registry"], body.get("force", False)

    def guard(state, totals):
        if force:
            return None
        shadow = aliases.live_summary(totals)
        return guard_reason(models, state, shadow, evidence(models, state))

    return change_aliases(aliases.promote(guard), "promoted" + (" (forced)" * force))


def rollback_view():
    require_admin_token()
    json_body()  # read, so that a body sent is not left on the connection
    return change_aliases(aliases.rollback, "rolled back")


def openapi(settings):
    """Return the OpenAPI document with this app's limits filled in."""
    document = json.loads(OPENAPI_FILE.read_text(encoding="utf-8"))
    schemas = document["components"]["schemas"]
    for name, most in (("Tweets", "MAX_TWEETS"), ("JobTweets", "MAX_JOB_TWEETS")):
        schemas[name]["maxProperties"] = settings[most]
        schemas[name]["additionalProperties"]["maxLength"] = settings["MAX_TWEET_CHARS"]
    return document


# Request bodies: read only once the token is known to be good, never past the size limit
# (Content-Length or not), within the worker's budget of bytes in flight, reserved as they arrive,
# and with the WSGI server's read failures as HTTP errors. gunicorn.conf.py gives each read a
# time-out (CLIENT_TIMEOUT), and BodyStream the whole body one, so that a client that stalls or
# trickles mid-body ends as a 408, not a held worker.


class InFlight:
    """The bytes of request bodies, websocket messages and answers this worker holds, within a
    budget: however many clients upload or read at once, a worker's memory stays bounded."""

    def __init__(self, limit=0):
        self.limit, self.used = limit, 0

    def take(self, size, always=False):
        """Reserve size bytes; False if that would go past the budget, unless `always` (what
        is made already, or small: counted, never refused)."""
        if self.used + size > self.limit and not always:
            return False
        self.used += size
        return True

    def give(self, size):
        self.used -= size

    def refusal(self, size, what):
        """Why an answer or reply (`what`) of size bytes was refused: past the budget as it
        stands, or past any budget."""
        if size <= self.limit:
            return (
                f"this worker holds as many answers as it may; try again (this {what} is "
                f"{size} bytes)"
            )
        return f"the {what} would be {size} bytes, more than a worker may hold (MAX_INFLIGHT_BYTES)"


IN_FLIGHT = InFlight()  # a gevent worker's greenlets share it; one thread, so no lock
PIECE = 65536  # read_body reads and reserves a body this much at a time


def content_length(environ):
    length = environ.get("CONTENT_LENGTH", "")
    return int(length) if length.isdigit() else None


class Late(Exception):
    """A body's time is up (BodyStream): thrown into the greenlet waiting for it."""


class BodyStream(io.RawIOBase):
    """A request's body, refusing to go past `limit` bytes (413), and turning the server's read
    failures into HTTP errors: a client that stalls, or sends too slowly, 408; broken chunked
    framing or a body cut short 400.

    A body may take `grace` seconds (CLIENT_TIMEOUT), and a second more for every `rate` bytes
    (BODY_MIN_BYTES_PER_SECOND) that have arrived, and must bring CLIENT_TIMEOUT times
    CLIENT_MIN_BYTES_PER_SECOND bytes every CLIENT_TIMEOUT until it ends (pace.Arrival): a
    client sending a byte every 10 s had a per-read time-out only, and held its upload (and, as
    it was, the worker's budget) for good; one sending 8 MiB at once but for a byte, then a byte
    every 20 s, held it 157 s on the allowance its first bytes earned.
    """

    rate = 64 * 1024  # create_app sets it

    def __init__(self, environ, limit):
        super().__init__()
        self.input, self.limit, self.read_so_far = environ["wsgi.input"], limit, 0
        self.expected = content_length(environ)
        self.pace = pace.Arrival(self.rate)
        self.waits = "gunicorn.socket" in environ  # a read may wait for the client (gevent)

    def readable(self):
        return True

    def take(self, size):
        """Return up to size bytes of the body (b"" at its end)."""
        size = min(size, self.limit + 1 - self.read_so_far)  # one byte past the limit shows it
        now = time.monotonic()
        left = self.pace.deadline(self.read_so_far) - now
        try:
            if left <= 0:
                raise Late()
            if not self.waits:
                data = self.input.read(size)
            else:  # a timer on the whole read: gunicorn's read() reads until it has size bytes
                timer = gevent.get_hub().loop.timer(left)
                timer.start(gevent.getcurrent().throw, Late)
                try:
                    data = self.input.read(size)
                finally:
                    timer.close()
        except Late:
            raise RequestTimeout(self.pace.describe(self.read_so_far, "the body")) from None
        except TimeoutError:
            raise RequestTimeout("the body stalled: nothing arrived for too long") from None
        except ParseException as e:
            raise BadRequest(f"the body's chunked framing is broken: {describe(e)}") from None
        self.read_so_far += len(data)
        self.pace.arrived(self.read_so_far, time.monotonic())
        if self.read_so_far > self.limit:
            raise RequestEntityTooLarge(f"the body must be at most {self.limit} bytes")
        if not data and self.expected is not None and self.read_so_far < self.expected:
            raise BadRequest(
                f"the body ended after {self.read_so_far} of its {self.expected} bytes"
            )
        return data

    def readinto(self, buffer):
        data = self.take(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def read_body(environ, limit):
    """Return the whole body (bytes): 413 over the limit, 503 when this worker already holds its
    budget of bodies, and BodyStream's errors. Read once: the fast path leaves it for Flask.

    The budget is reserved a PIECE at a time as the body arrives, not for the whole of a declared
    Content-Length (or the limit, chunked) up front: 10 uploads that declared 8 MB and sent a byte
    every 10 s got every other upload of the worker a 503."""
    if "api.body_error" in environ:
        raise environ["api.body_error"]
    if "api.body" in environ:
        return environ["api.body"]
    length = content_length(environ)
    if length is not None and length > limit:
        raise RequestEntityTooLarge(f"the body must be at most {limit} bytes, got {length}")
    body, parts = BodyStream(environ, limit), []
    while length is None or body.read_so_far < length:
        size = PIECE if length is None else min(PIECE, length - body.read_so_far)
        small = length is not None and length <= SMALL_ANSWER_BYTES
        if not IN_FLIGHT.take(size, always=small):
            raise ServiceUnavailable("this worker is reading as many bodies as it may; try again")
        environ["api.reserved"] = environ.get("api.reserved", 0) + size
        part = body.take(size)
        IN_FLIGHT.give(size - len(part))  # what did not come: past the limit, or the end
        environ["api.reserved"] -= size - len(part)
        if not part:
            break
        parts.append(part)
    data = environ["api.body"] = parts[0] if len(parts) == 1 else b"".join(parts)
    return data


def describe(error):
    """Name a gunicorn parse error without echoing what the client sent (it may hold a token)."""
    return re.sub(r"(?<!^)(?=[A-Z])", " ", type(error).__name__).lower()


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


# The hot path of the REST predict routes and of the Open Inference Protocol's REST infer
# (v2/rest.py's fast_infer). A request that is well formed is answered here, straight from the
# WSGI environ, without Flask's request context, routing, hooks and response objects, which cost
# more than the model and the contract together. Every other request, and any request this path
# does not take as it stands (an error, a query string, another content type), goes to Flask:
# its views and error handlers stay the reference, and tests/test_api.py and tests/test_v2.py
# check that both give the same bytes, and that labels_writer's writer writes what Flask's JSON
# provider writes. A predict body is read by contract.scanned_batch, else checked_batch, and, when
# neither takes it, Flask's view parses it as before, to name what is wrong.

PREDICT_PREFIX, PREDICT_SUFFIX = PATH_TOKEN_ROUTE.split("<token>")
# The Open Inference Protocol's infer routes (v2/rest.py), as Flask names them.
V2_PREFIX, V2_SUFFIX = "/v2/models/", "/infer"
V2_ROUTES = {1: f"/v2{v2.rest.MODEL}/infer", 3: f"/v2{v2.rest.VERSION}/infer"}


class FastPredict:
    """WSGI: answer well-formed predict requests; hand everything else to the Flask app."""

    def __init__(self, app):
        self.app, self.flask = app, app.wsgi_app
        self.guesses, self.labels_json = app.extensions["guesses"], app.extensions["labels_json"]
        self.scans = writes_compact_ascii(app.json)  # as contract_core writes an answer

    def __call__(self, environ, start_response):
        answered = self.answer(environ)
        if answered is None:
            return self.flask(environ, start_response)
        body, headers, _ = answered
        start_response("200 OK", headers)
        return [body]

    def answer(self, environ):
        """Return the answer's bytes and headers and the registry.Served that answered; or None
        for Flask to answer, with what was read of the body (or the error reading it) left in
        the environ."""
        route, token, model_path = self.route_and_token(environ)
        if (
            route is None
            or environ.get("QUERY_STRING")
            or (model_path is None and environ.get("CONTENT_TYPE") != "application/json")
            or (self.guesses.blocked and self.guesses.seconds_left(environ))  # Flask: 429
            or not token_is_valid(token, self.app.extensions)  # nothing is read for a wrong one
        ):
            return None
        try:
            data = read_body(environ, self.app.config["MAX_CONTENT_LENGTH"])  # Flask's limit
        except HTTPException as e:
            environ["api.body_error"] = e
            return None
        if model_path is not None:
            return self.infer(environ, route, model_path, data)
        answered = self.labels(environ, route, data)
        if answered is None:
            return None
        body, served = answered
        headers = [
            ("Content-Type", "application/json"),
            ("Content-Length", str(len(body))),
            *model_headers(served),
        ]
        return body, headers, served

    def infer(self, environ, route, model_path, data):
        """The Open Inference Protocol's infer, as v2/rest.py's view answers it: (body, headers,
        served), or None for the view to answer."""
        if environ.get("HTTP_CONTENT_ENCODING", "identity").lower() != "identity":
            return None  # the view: 415
        extensions = self.app.extensions
        try:
            answered = v2.rest.fast_infer(
                data,
                environ.get("HTTP_INFERENCE_HEADER_CONTENT_LENGTH"),
                *model_path,
                extensions["registry"],
                environ.get("api.request_id"),
                extensions["settings"],
            )
        except Exception:  # a bug, or a model that failed: the view answers as it always does
            return None
        if answered is None:
            return None
        body, headers, served, labels = answered
        tally(served, labels)
        environ["api.route"], environ["api.tweets"] = route, len(labels)
        return body, headers, served

    def labels(self, environ, route, data):
        """Return the labels of a body's tweets as JSON bytes and the registry.Served that
        answered, or None if Flask must answer."""
        extensions = self.app.extensions
        settings = extensions["settings"]
        try:
            served = extensions["registry"].route(environ.get("api.request_id"))
            # Read by contract_core (the tweets left in the body for the model's core to read),
            # the answer written from the body's own ids, where it can; else parsed and checked
            # by msgspec, the answer written from a dict.
            scanned = contract.scanned_batch(data, settings, served.model) if self.scans else None
            if scanned is not None:
                body, labels = contract.predict_scanned(served.model, scanned)
                tally(served, labels)
                count = len(labels)
            else:
                tweets = contract.checked_batch(data, settings)
                if tweets is None:  # bad input: Flask's view names what is wrong
                    return None
                body = self.labels_json(answer(extensions, served, tweets, checked=True))
                count = len(tweets)
        except Exception:  # a bug, or a model that failed: Flask answers as it always does
            return None
        environ["api.route"], environ["api.tweets"] = route, count
        return body, served

    @staticmethod
    def route_and_token(environ):
        """Return the predict or infer route a POST asks for, the token it carries, and for an
        infer route the model's name and version (None for none) in the path; or three Nones."""
        path = environ.get("PATH_INFO", "")
        if environ["REQUEST_METHOD"] != "POST" or not path.isascii():
            return None, None, None
        if path == BEARER_ROUTE:
            route, model_path = BEARER_ROUTE, None
        elif path.startswith(PREDICT_PREFIX) and path.endswith(PREDICT_SUFFIX):
            token = path[len(PREDICT_PREFIX) : -len(PREDICT_SUFFIX)]
            if token and "/" not in token:
                return PATH_TOKEN_ROUTE, token, None
            return None, None, None
        elif path.startswith(V2_PREFIX) and path.endswith(V2_SUFFIX):
            parts = path[len(V2_PREFIX) : -len(V2_SUFFIX)].split("/")
            if (
                not all(parts)
                or len(parts) not in V2_ROUTES
                or parts[1:2] not in ([], ["versions"])
            ):
                return None, None, None
            route, model_path = V2_ROUTES[len(parts)], (parts[0], parts[2] if parts[2:] else None)
        else:
            return None, None, None
        token = bearer_token(environ.get("HTTP_AUTHORIZATION", ""))
        if token is None or not token.isascii():
            return None, None, None
        return route, token, model_path


# Request ids, metrics and one JSON log line per request: never the token (routes are logged as
# their rule), never a tweet.


class Observed:
    """WSGI middleware: give each request an id, hold its answer within the worker's budget
    until it is sent, and count, time and log it once answered.

    The body's share of the budget is given back once the app has answered, and the answer's
    taken (IN_FLIGHT) until the server closes it, written: 24 clients reading a 23.6 MB answer
    at a trickle each held theirs outside the budget, +1.3 GB (issue 37, round 3). An answer
    the budget cannot take is dropped for a 503, once made; the app's start_response is called
    once that is known (no app here writes through the callable start_response returns).
    """

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
        started = []

        def start_response_with_id(status_line, headers, exc_info=None):
            headers.append(("X-Request-ID", request_id))
            started[:] = status_line, headers
            return unwritable

        try:
            response = self.wsgi_app(environ, start_response_with_id)
        except StopIteration:  # a websocket has ended (under gunicorn): 101, its life
            self.observe(environ, request_id, 101, start)
            raise
        finally:
            IN_FLIGHT.give(environ.pop("api.reserved", 0))
        environ.pop("api.body", None)  # answered: the body goes before the answer is sent
        status_line, headers = started
        if "gunicorn.socket" in environ:  # a client that reads slowly holds it (in-process: no)
            size = answer_bytes(response, headers)
            if IN_FLIGHT.take(size, always=size <= SMALL_ANSWER_BYTES):
                response = (HeldList if type(response) is list else Held)(response, size)
            else:
                status_line, headers, response = refusal(response, size, request_id)
        start_response(status_line, headers)
        self.observe(environ, request_id, int(status_line[:3]), start)
        return response

    @staticmethod
    def observe(environ, request_id, status, start):
        seconds = time.perf_counter() - start
        rule, method = environ.get("api.route", "<unmatched>"), environ["REQUEST_METHOD"]
        requests, latency = request_metrics(rule, method, status)
        TALLY.inc(requests)
        TALLY.observe(latency, seconds)
        if log.isEnabledFor(logging.INFO):
            fields = {
                "request_id": request_id,
                "method": method,
                "route": rule,
                "status": status,
                "latency_ms": round(seconds * 1000, 3),
                "tweets": environ.get("api.tweets", 0),
            }
            TALLY.lines.append(service.json_line("info", "request", fields))
        if time.monotonic() - TALLY.flushed >= TALLY.interval:
            TALLY.flush()


def unwritable(data):
    raise RuntimeError("an app here returns its answer: none writes it")


# An answer this small (an error, a few tweets' labels), and a body this small (read_body), is
# taken whatever the budget holds, counted in it: refused, the uploads or held downloads that
# filled it made every 408 and small predict a 503 (40 downloads at a trickle: 24 of 40 payload.json
# predicts). The connections bound them (WORKER_CONNECTIONS of them, 16 MiB at most each way).
SMALL_ANSWER_BYTES = 16 * 1024
STREAMED_BYTES = 512 * 1024  # what a streamed answer (a job's result) holds at once, at most


def answer_bytes(response, headers):
    """What an answer holds until it is sent: its bytes (FastPredict's list, or Content-Length);
    a streamed one, a piece of STREAMED_BYTES at a time (Held counts a bigger piece)."""
    if type(response) is list:
        return sum(map(len, response))
    for name, value in headers:
        if name == "Content-Length":
            return int(value)
    return STREAMED_BYTES


def refusal(response, size, request_id):
    """Drop an answer the worker's budget cannot take: the 503 to send in its place."""
    close = getattr(response, "close", None)
    if close is not None:
        close()
    detail = IN_FLIGHT.refusal(size, "answer")
    error = {"error": 503, "text": "Service Unavailable", "detail": detail}
    body = f"{json.dumps(error, separators=(',', ':'))}\n".encode()
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(body))),
        ("X-Request-ID", request_id),
    ]
    return "503 SERVICE UNAVAILABLE", headers, [body]


class HeldList(list):
    """An answer of whole bytes (FastPredict's), its share of the budget given back when the
    server closes it."""

    __slots__ = ("size",)

    def __init__(self, response, size):
        super().__init__(response)
        self.size = size

    def close(self):
        IN_FLIGHT.give(self.size)
        self.size = 0


class Held:
    """An answer (Flask's), its share of the budget given back when the server closes it; a
    streamed one's share grows to its biggest piece."""

    __slots__ = ("response", "size")

    def __init__(self, response, size):
        self.response, self.size = response, size

    def __iter__(self):
        for piece in self.response:
            if len(piece) > self.size:  # past the budget if need be: it is made already
                IN_FLIGHT.take(len(piece) - self.size, always=True)
                self.size = len(piece)
            yield piece

    def close(self):
        IN_FLIGHT.give(self.size)
        self.size = 0
        close = getattr(self.response, "close", None)
        if close is not None:
            close()


# Metrics and request log lines are held in the worker's memory and written out together, at most
# every METRICS_FLUSH_MS (by the next request, or by gunicorn.conf.py's flusher when the worker is
# idle), at every scrape of /metrics and when the worker exits: a request then costs a few dict
# updates, where prometheus_client's multiprocess mode costs a locked write to a memory-mapped file
# for each counter and bucket, seven per predict request, and a log line a write to stderr each.
# /metrics may lag another worker's requests by METRICS_FLUSH_MS; a worker that is killed (not
# stopped) loses at most its last METRICS_FLUSH_MS.


class Tally:
    """Increments of counters and observations of histograms (prometheus_client children), and log
    lines, not yet written out."""

    def __init__(self, interval=0.1):
        self.counts, self.histograms, self.lines = {}, {}, []
        self.flushed, self.interval = time.monotonic(), interval

    def inc(self, child, amount=1):
        self.counts[child] = self.counts.get(child, 0) + amount

    def observe(self, child, value):
        """As Histogram.observe: the value in the first bucket whose upper bound is >= it."""
        held = self.histograms.get(child)
        if held is None:
            held = self.histograms[child] = aliases.HeldObservations(child)
        held.observe(value)

    def flush(self):
        counts, histograms, lines = self.counts, self.histograms, self.lines
        self.counts, self.histograms, self.lines = {}, {}, []
        self.flushed = time.monotonic()
        for child, amount in counts.items():
            child.inc(amount)
        for held in histograms.values():
            held.write()
        if lines:
            sys.stderr.write("".join(lines))
            sys.stderr.flush()


TALLY = Tally()


class Stopping:
    """When this server's stop began, shared by gunicorn's master and every worker it forked (8
    bytes of memory they share): the master sets it on TERM, /ready answers 503 from then on, and
    serving ends STOP_DRAIN_SECONDS later (gunicorn.conf.py)."""

    def __init__(self):
        self.memory = mmap.mmap(-1, 8)

    def begin(self):
        """Start the stop, unless it has started; return when it began (time.time())."""
        if not self.began:
            self.memory[:8] = struct.pack("d", time.time())
        return self.began

    @property
    def began(self):
        return struct.unpack("d", self.memory[:8])[0]

    def __bool__(self):
        return self.began != 0


STOPPING = Stopping()


# The metrics' children, looked up once per label values: prometheus_client's labels() takes a lock
# and checks its arguments on every call, half the metrics' cost per request.


@functools.cache
def request_metrics(rule, method, status):
    method = method if method in METHODS else "other"
    return REQUESTS.labels(rule, method, status), LATENCY.labels(rule)


@functools.cache
def predictions_metric(name, version, label):
    return PREDICTIONS.labels(name, version, label)


def note_route(response):
    """Keep the route for the log line and metrics."""
    request.environ["api.route"] = route()
    return response


def route():
    """The matched route's rule, which names the token as <token>; never the raw path."""
    rule = request.url_rule
    return rule.rule if rule else "<unmatched>"
