"""The websocket door: {"type": "prediction_request", ...} in, prediction_response or
prediction_error out, one connection for many requests. The contract does the rest.

Every connection is bounded: no compression (an inflated message could be a thousand times its
wire size), at most WS_AUTH_MAX_BYTES before it has authenticated, at most MAX_BODY_BYTES of
messages received and not yet answered, which count against the worker's budget of bytes in flight
(api.IN_FLIGHT) too, as does a reply being sent; a message on its way and a reply being taken
keep the pace every body and answer keeps (pace.py), or the client is cut off. Unauthenticated
sockets have their own small quota, so they cannot take the slots of clients with a token, and
one token at most WS_MAX_CONNECTIONS_PER_TOKEN of a worker's.
"""

import _socket
import collections
import contextlib
import json
import logging
import sys
import time

import gevent
import gevent.lock
import simple_websocket
from flask import Response, current_app, request
from prometheus_client import Counter, Gauge, Histogram
from werkzeug.exceptions import ServiceUnavailable, TooManyRequests
from wsproto.events import TextMessage
from wsproto.frame_protocol import CloseReason

import contract
import pace
import service

ROUTE = "/api/v1/ws"
OPTIONS = contract.OPTIONS
FIELDS = {"type", "request_id", "tweets", "model", "version", *OPTIONS}
REQUEST_ID_MAX = 128
POLL_SECONDS = 0.5  # how often an idle handler looks whether the worker is stopping
DRAIN_SECONDS = 2  # how long a stopping worker answers a client that goes on sending
READ_BYTES = 65536  # one read takes a whole TLS record (16 KiB at most): see Connection
RETRY_SECONDS = 5  # a token with as many websockets as it may: try again then

log = logging.getLogger("api")

OPEN = Gauge("api_websockets_open", "Websockets open", multiprocess_mode="livesum")
MESSAGES = Counter("api_websocket_messages", "Websocket replies, by type", ["type"])
LATENCY = Histogram(
    "api_websocket_message_seconds",
    "Seconds from a websocket message to its reply",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
REFUSED = Counter("api_websockets_refused", "Websockets closed for a bound, by which", ["reason"])


class Websockets:
    """This worker's open websockets, by whether they have authenticated, and whether it is
    stopping (gunicorn.conf.py sets it)."""

    authenticated = 0
    unauthenticated = 0
    by_token = collections.Counter()  # a token's id (service.client_id): its websockets open
    stopping = False


QUOTAS = {"authenticated": "WS_MAX_CONNECTIONS", "unauthenticated": "WS_MAX_UNAUTHENTICATED"}


class Connection(simple_websocket.Server):
    """simple-websocket's server, holding at most `queue_bytes` of messages it has received and
    not yet handed over, within the worker's budget, each message on its way within its time
    (pace.Arrival, at `rate`), and writing to the client one frame at a time at the client's
    pace (pace.send_all), a reply within the budget.

    Its reader runs beside the handler: a client that sends and never reads fills the handler's
    send, and without a bound the reader would queue its messages without end. Its pings,
    pongs and close frames wait for the handler's reply to be written (Locked): written at once,
    they broke the reply's TLS write, and a client reading a reply slowly was cut off 90 s in.
    """

    def __init__(self, environ, queue_bytes, budget, rate, **options):
        self.queue_bytes, self.budget, self.held, self.overflow = queue_bytes, budget, 0, None
        self.rate, self.arrival, self.late = rate, None, None
        self.raw = None  # the socket itself; handshake() puts Locked in front of it
        self.lock, self.cut_off = gevent.lock.Semaphore(), False
        self.pong, self.acked_at_ping = True, 0
        super().__init__(environ, **options)

    def handshake(self):
        self.raw = self.sock
        self.sock = Locked(self)
        self.input_buffer = Messages()
        super().handshake()

    # A client whose pong is queued behind a reply it is still reading is alive if it has taken
    # what a client must take in the meantime (pace.FLOOR a second): simple-websocket's reader
    # closes a connection whose pong has not come by the next ping.

    @property
    def pong_received(self):
        if self.pong:
            return True
        taken = pace.acknowledged(self.raw)
        return taken is not None and taken - self.acked_at_ping >= pace.FLOOR * self.ping_interval

    @pong_received.setter
    def pong_received(self, value):
        self.pong = value
        if not value and self.raw is not None:
            self.acked_at_ping = pace.acknowledged(self.raw) or 0

    def _handle_events(self):
        done = self.input_buffer.count
        keep_going = super()._handle_events()
        if self.input_buffer.count != done and self.arrival is not None:  # a message is in
            self.arrival = None
            self.late.close()
        # Received and not handed over: in characters or bytes against queue_bytes, as the
        # messages' limit counts them; in memory against the budget (a text message of emoji
        # takes 4 bytes a character).
        queued = self.incoming_message_len + sum(map(len, self.input_buffer))
        held = sum(map(sys.getsizeof, self.input_buffer))
        if self.incoming_message is not None:
            held += sys.getsizeof(self.incoming_message)
        if queued > self.queue_bytes:
            self.overflow = "queue"
        elif held > self.held and not self.budget.take(held - self.held):
            self.overflow = "budget"
        elif self.incoming_message_len and self.arriving(self.incoming_message_len):
            self.overflow = "late"
        else:
            if held < self.held:
                self.budget.give(self.held - held)
            self.held = held
            return keep_going
        self.cut(self.overflow)
        return False

    def arriving(self, count):
        """Note a message on its way, `count` bytes so far; True once it is late."""
        now = time.monotonic()
        if self.arrival is None:
            self.arrival = pace.Arrival(self.rate, now)
            self.late = gevent.get_hub().loop.timer(pace.GRACE)
            self.late.start(self.too_late)
        self.arrival.arrived(count, now)
        return now >= self.arrival.deadline(count)

    def too_late(self):
        """The timer of a message on its way: cut off if it is late, else look again then."""
        count = self.incoming_message_len
        if not count or self.arrival is None:
            return
        left = self.arrival.deadline(count) - time.monotonic()
        if left > 0:
            self.late = gevent.get_hub().loop.timer(left)
            self.late.start(self.too_late)
        else:
            self.cut("late")

    def cut(self, reason):
        """Cut the client off: the client may not be reading, so no close frame can be relied
        upon; the reader wakes to a closed socket and the handler to a closed connection."""
        if self.late is not None:
            self.late.close()
        self.overflow = self.overflow or reason
        REFUSED.labels(reason).inc()
        self.cut_off = True
        self.connected = False
        self.event.set()
        if self.raw is not None and self.raw.fileno() >= 0:
            pace.reset_on_close(self.raw)
            with contextlib.suppress(OSError):
                peer = _socket.socket(fileno=self.raw.fileno())  # no gevent waiting on it
                try:
                    peer.shutdown(_socket.SHUT_RDWR)
                finally:
                    peer.detach()

    def close(self, reason=None, message=None):
        """Close the connection; one whose pong has not come (pong_received) is cut off: a
        close frame would wait behind the reply the client is not taking, and the kernel would
        go on sending that reply at the client's trickle after the server let go of it (8
        readers of 17 KiB every 2.5 s kept reading their 2.3 MB replies 12 s and more)."""
        if reason == CloseReason.POLICY_VIOLATION and message == "Ping/Pong timeout":
            self.cut("pong")
            return
        super().close(reason, message)

    def receive(self, timeout=None):
        message = super().receive(timeout)
        if message is not None:
            size = sys.getsizeof(message)
            self.budget.give(size)
            self.held -= size
        return message

    def reply(self, document):
        """The frame of a JSON text message, made now: what a reply holds while it is sent."""
        return self.ws.send(TextMessage(data=json.dumps(document, ensure_ascii=False)))

    def send_frame(self, frame):
        """Send a frame within the worker's budget, at the client's pace; False, and nothing
        sent, if the budget cannot take it."""
        if not self.budget.take(len(frame)):
            return False
        try:
            self.sock.send(frame)
        finally:
            self.budget.give(len(frame))
        return True

    def release(self):
        """Give the worker's budget back whatever is still held."""
        self.budget.give(self.held)
        self.held = 0
        if self.late is not None:
            self.late.close()


class Messages(list):
    """The messages received and not yet handed over, counting every one that came."""

    count = 0

    def append(self, message):
        self.count += 1
        super().append(message)


class Locked:
    """A websocket's socket whose writes go one at a time, at the client's pace: the reader's
    pings, pongs and close frames wait for the handler's reply. Once the client is cut off, a
    write fails at once."""

    def __init__(self, connection):
        self.connection = connection
        self.raw = connection.raw

    def send(self, data):
        connection = self.connection
        with connection.lock:
            if connection.cut_off:
                raise ConnectionAbortedError("the client was cut off")
            try:
                pace.send_all(self.raw, data)
            except TimeoutError:  # too slow a reader: cut off (pace.Slow), or nothing at all
                connection.cut("slow")
                raise
        return len(data)

    def __getattr__(self, name):  # recv, fileno, close: the socket's own
        return getattr(self.raw, name)


def route(app, answer, require_token, token_is_valid, refuse, budget):
    """Add the websocket route to the app: answer(tweets, name=, version=, **options) returns a
    batch's predictions, as REST labels them, and the registry.Served that answered;
    require_token() refuses a request without a valid Bearer token, token_is_valid(token) checks
    one (and counts a wrong one against the client), refuse() refuses a client that has sent too
    many wrong tokens, budget is the worker's bytes in flight."""
    settings = app.extensions["settings"]

    def upgrade():
        """Refuse a wrong token (401), a client of too many wrong ones (429), a token with as
        many websockets as it may have (429) or an upgrade over this worker's bounds (503),
        then talk until the client or the worker stops.

        The slot is taken before the handshake, which yields (its reader starts): counted after
        it, 600 upgrades at once all passed a quota of 100."""
        authenticated = "Authorization" in request.headers
        owner = None
        if authenticated:
            require_token()
            owner = request.environ["api.client"]
            if not token_room(owner, settings):
                REFUSED.labels("token").inc()
                raise TooManyRequests(
                    "this token has as many websockets open on this worker as a token may "
                    f"(WS_MAX_CONNECTIONS_PER_TOKEN, {settings['WS_MAX_CONNECTIONS_PER_TOKEN']}); "
                    "close one, or try again",
                    retry_after=RETRY_SECONDS,
                )
        else:
            refuse()
        kind = "authenticated" if authenticated else "unauthenticated"
        if Websockets.stopping or getattr(Websockets, kind) >= settings[QUOTAS[kind]]:
            REFUSED.labels("connections").inc()
            raise ServiceUnavailable("this worker has too many open websockets; try again")
        setattr(Websockets, kind, getattr(Websockets, kind) + 1)
        if owner is not None:
            Websockets.by_token[owner] += 1
        OPEN.inc()
        ws = None
        try:
            # Offered compression is declined: the handshake reads the offer from the environ.
            request.environ.pop("HTTP_SEC_WEBSOCKET_EXTENSIONS", None)
            ws = Connection(
                request.environ,
                queue_bytes=settings["MAX_BODY_BYTES"],
                budget=budget,
                rate=settings["BODY_MIN_BYTES_PER_SECOND"],
                receive_bytes=READ_BYTES,
                ping_interval=settings["WS_PING_SECONDS"],
                max_message_size=settings["MAX_BODY_BYTES"]
                if authenticated
                else settings["WS_AUTH_MAX_BYTES"],
            )
            if not authenticated:
                owner = authenticate(ws, settings, token_is_valid)
                if owner is None:
                    return Ended()
                Websockets.by_token[owner] += 1
                Websockets.unauthenticated -= 1
                Websockets.authenticated += 1
                kind = "authenticated"
            converse(ws, answer)
        except (simple_websocket.ConnectionClosed, OSError):
            pass  # the client left, or was cut off: nothing to answer
        finally:
            setattr(Websockets, kind, getattr(Websockets, kind) - 1)
            if owner is not None:
                Websockets.by_token[owner] -= 1
                if not Websockets.by_token[owner]:  # no token kept once its websockets are gone
                    del Websockets.by_token[owner]
            OPEN.dec()
            if ws is not None:
                ws.release()
                with contextlib.suppress(Exception):
                    ws.close()
        return Ended()

    app.add_url_rule(ROUTE, "websocket", upgrade, websocket=True)


class Ended(Response):
    """What a websocket's route returns once it is over: nothing more to write."""

    def __call__(self, environ, start_response):
        if "gunicorn.socket" in environ:
            raise StopIteration()  # gunicorn: the connection is the websocket's, and is done
        return super().__call__(environ, start_response)  # the development server


def token_room(owner, settings):
    """Whether a token may open one more websocket on this worker."""
    return Websockets.by_token[owner] < settings["WS_MAX_CONNECTIONS_PER_TOKEN"]


def authenticate(ws, settings, token_is_valid):
    """A first message {"type": "auth", "token": ...} within WS_AUTH_SECONDS: the token's id
    (service.client_id); the connection is closed with 1008 otherwise (1013 when the token
    has as many websockets as it may), and None."""
    seconds = settings["WS_AUTH_SECONDS"]
    first = ws.receive(timeout=seconds)
    document = None
    with contextlib.suppress(contract.PredictionError):
        document = contract.parse_json(first) if isinstance(first, str) else None
    fields = dict(document) if isinstance(document, contract.Pairs) else {}
    if fields.get("type") != "auth":
        ws.close(1008, f'send {{"type": "auth", "token": ...}} first, within {seconds} s')
        return None
    token = fields.get("token")
    try:
        valid = isinstance(token, str) and token_is_valid(token)
    except TooManyRequests:  # its address guessed meanwhile, on another connection
        ws.close(1008, "too many wrong tokens from this address; try again later")
        return None
    if not valid:
        ws.close(1008, "invalid token")
        return None
    owner = service.client_id(token)
    if not token_room(owner, settings):
        REFUSED.labels("token").inc()
        ws.close(1013, "this token has as many websockets open as it may; try again later")
        return None
    ws.max_message_size = settings["MAX_BODY_BYTES"]
    default = current_app.extensions["registry"].get()
    reply = {"type": "auth_ok", "model": default.name, "model_version": default.version}
    ws.send(json.dumps(reply))
    message_done("auth", 0, 0.0)
    return owner


def converse(ws, answer):
    """Answer every message; when the worker stops, answer what has arrived, then close 1001.

    A client that goes on sending while the worker stops gets DRAIN_SECONDS of answers, so that
    it cannot hold the old worker until gunicorn's graceful time-out kills it. While a reply is
    sent it alone is held, in the worker's budget: the message and the answer it was made from
    are let go first; one the budget cannot take is dropped for a prediction_error 503.
    """
    drain_until = None
    while True:
        if Websockets.stopping and drain_until is None:
            drain_until = time.monotonic() + DRAIN_SECONDS
        message = ws.receive(timeout=0 if drain_until else POLL_SECONDS)
        if message is None or (drain_until and time.monotonic() > drain_until):
            if drain_until:
                ws.close(1001, "the server is restarting; reconnect")
                return
            if not ws.connected:
                return
            continue
        start = time.perf_counter()
        try:
            kind, reply, tweets = reply_to(message, answer)
        except Exception as error:  # a bug: say so, log it, and keep the connection
            request_id = request.environ.get("api.request_id", "-")
            log.error("unexpected error", exc_info=error, extra={"request_id": request_id})
            detail = f"an unexpected error; request id {request_id}"
            kind, tweets = "prediction_error", 0
            reply = {"type": kind, "request_id": None, "error": 500}
            reply.update(text="Internal Server Error", detail=detail)
        message, request_id = None, reply.get("request_id")
        frame, reply = ws.reply(reply), None
        if not ws.send_frame(frame):
            size, frame = len(frame), None
            kind, tweets = "prediction_error", 0
            ws.send_frame(ws.reply(busy(request_id, ws.budget.refusal(size, "reply"))))
        message_done(kind, tweets, time.perf_counter() - start)


def busy(request_id, detail):
    """The prediction_error 503 sent for a reply the worker's budget cannot take."""
    error = {"error": 503, "text": "Service Unavailable", "detail": detail}
    return {"type": "prediction_error", "request_id": request_id, **error}


def reply_to(message, answer):
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
        if not isinstance(request_id, str):
            request_id = None
        kind = fields.get("type")
        if kind != "prediction_request":
            raise contract.BadInput(
                'missing field "type"'
                if kind is None
                else f"unknown message type {kind!r}; expected prediction_request"
            )
        unknown = sorted(set(fields) - FIELDS)
        if unknown:
            raise contract.BadInput(f"unknown field(s) {unknown}; allowed: {sorted(FIELDS)}")
        if request_id is None or not 0 < len(request_id) <= REQUEST_ID_MAX:
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
        for name in ("model", "version"):
            if not isinstance(fields.get(name, ""), str):
                raise contract.BadInput(
                    f'field "{name}" must be a string, got {contract.json_type(fields[name])}'
                )
        if "tweets" not in fields:
            raise contract.BadInput('missing field "tweets": {"id": "tweet text", ...}')
        tweets = contract.batch(fields["tweets"], 'field "tweets"')
        predictions, served = answer(
            tweets,
            name=fields.get("model"),
            version=fields.get("version"),
            request_id=request_id,
            **options,
        )
    except contract.PredictionError as e:
        reply = {"type": "prediction_error", "request_id": request_id, **e.as_dict()}
        return "prediction_error", reply, 0
    reply = {"type": "prediction_response", "request_id": request_id, "predictions": predictions}
    reply.update(model=served.name, model_version=served.version)
    return "prediction_response", reply, len(predictions)


def message_done(kind, tweets, seconds):
    """Count, time and log one message: its kind and size, never its token or tweets."""
    MESSAGES.labels(kind).inc()
    LATENCY.observe(seconds)
    if log.isEnabledFor(logging.INFO):
        fields = {
            "request_id": request.environ.get("api.request_id", "-"),
            "route": ROUTE,
            "reply": kind,
            "latency_ms": round(seconds * 1000, 3),
            "tweets": tweets,
        }
        sys.stderr.write(service.json_line("info", "websocket message", fields))
