"""The ZeroRPC door: the model as a remote procedure, MessagePack over ZeroMQ.

    make rpc-start                          # RPC_BIND=tcp://127.0.0.1:4242

Methods: predict(tweets, options=None) (options "scores", "explain", "model", "version"),
predict_with_model (the same, saying which model answered), <model>_predict for each model
(tweet_sentiment_predict, ...), get_models(), get_model_metadata(name), get_model() (the
default's), health(). A contract error arrives at the
client as a RemoteError named after its kind (BadInput, TooLarge, Unprocessable) whose message
names the ids; never a traceback. TERM stops accepting, answers the calls in flight and exits 0;
HUP loads the models again. ZeroRPC has no authentication and no encryption: binding anything
but loopback needs RPC_ALLOW_UNAUTHENTICATED_NETWORK=yes.
"""

import functools
import inspect
import ipaddress
import logging
import signal
import struct
import sys
import time

import gevent
import msgpack
import zerorpc
import zmq
from prometheus_client import Counter, Gauge, Histogram
from zerorpc.events import Event, get_pyzmq_frame_buffer

import contract
import model
import registry
import service

DEFAULTS = {
    **service.SHARED,
    "RPC_BIND": "tcp://127.0.0.1:4242",
    "RPC_ALLOW_UNAUTHENTICATED_NETWORK": "no",
    "RPC_HEARTBEAT_SECONDS": 5,  # a client silent for twice this is taken for dead
    "RPC_MAX_CALLS": 4,  # calls answered at once; the others wait, queued in ZeroMQ (docs/rpc.md)
    "RPC_MAX_PEERS": 16,  # connections served at once; a new one past it is refused (Peers)
    "RPC_METRICS_PORT": 9242,  # Prometheus metrics, on RPC_METRICS_HOST
    "RPC_METRICS_HOST": "127.0.0.1",
}
log = logging.getLogger("rpc")

CALLS = Counter("rpc_calls", "Calls answered, by method and outcome", ["method", "outcome"])
LATENCY = Histogram(
    "rpc_call_seconds",
    "Seconds from call to answer, by method",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
TWEETS = Counter("rpc_tweets", "Tweets labelled")
REFUSED = Counter("rpc_connections_refused", "New connections refused: RPC_MAX_PEERS were open")
MODEL_INFO = Gauge(
    "rpc_model_info",
    "Each model version loaded: 1, labelled with its name and version",
    ["model", "version"],
)


def remote(method):
    """Count, time and log a call (never its tweets), and tell zerorpc its arguments.

    zerorpc 0.6.3 lists a method's arguments with inspect.getargspec, which Python 3.11 removed;
    it asks the function's own _zerorpc_args first, which this provides.
    """
    parameters = [p for p in inspect.signature(method).parameters.values() if p.name != "self"]
    names = [p.name for p in parameters]
    defaults = tuple(p.default for p in parameters if p.default is not inspect.Parameter.empty)

    @functools.wraps(method)
    def observed(self, *args):
        start, outcome, tweets = time.perf_counter(), "ok", 0
        try:
            answer = method(self, *args)
            if method.__name__ == "predict_with_model":
                tweets = len(answer["predictions"])
            elif method.__name__.endswith("predict"):
                tweets = len(answer)
            return answer
        except contract.PredictionError as e:
            outcome = type(e).__name__
            raise
        except Exception:
            outcome = "error"
            raise
        finally:
            seconds = time.perf_counter() - start
            CALLS.labels(method.__name__, outcome).inc()
            LATENCY.labels(method.__name__).observe(seconds)
            TWEETS.inc(tweets)
            if log.isEnabledFor(logging.INFO):
                fields = {
                    "method": method.__name__,
                    "outcome": outcome,
                    "latency_ms": round(seconds * 1000, 3),
                    "tweets": tweets,
                }
                sys.stderr.write(service.json_line("info", "rpc call", fields))

    observed._zerorpc_args = lambda: (names, None, None, defaults or None)
    return observed


class Sentiment:
    """Tweet sentiment: is each tweet Positive or Negative? Every model models.json names."""

    def __init__(self, settings):
        self.settings = settings
        self.models = self.load()

    def load(self):
        models = registry.load(
            self.settings["MODELS_FILE"],
            aliases_file=self.settings["ALIASES_FILE"],
            database_url=self.settings["DATABASE_URL"],
        )
        for name, version in models.known:
            MODEL_INFO.labels(name, version).set(1)
        return models

    def reload(self):
        """On HUP: load the models again; keep those in service if the new ones are broken."""
        try:
            self.models = self.load()
            log.info("reloaded the models, default %s", self.models.get().version)
        except (RuntimeError, model.ArtifactError) as e:
            log.error("reload failed; keeping the models in use: %s", e)

    def label(self, tweets, options, name=None):
        """Return (predictions, registry.Served): the model named, or options' "model" and
        "version", or the default."""
        flags, wanted, version = parse_options(options)
        served = self.models.get(name or wanted, version)
        batch = contract.batch(tweets, "tweets")
        return contract.predict(served.model, batch, self.settings, **flags), served

    @remote
    def predict(self, tweets, options=None):
        """Label tweets {id: text} as POST /api/v1/predict does; options may name the model.

        options {"scores", "explain", "model", "version"}, each optional.

        Answers {id: label}, or with an option {id: {"label", "score"?, "explanation"?}}.
        """
        return self.label(tweets, options)[0]

    @remote
    def predict_with_model(self, tweets, options=None):
        """As predict, answering {"model", "model_version", "predictions"}: which model answered."""
        predictions, served = self.label(tweets, options)
        return {"model": served.name, "model_version": served.version, "predictions": predictions}

    def model_predict(self, name):
        """The method <name>_predict(tweets, options=None): predict with that model."""

        def predict(self, tweets, options=None):
            return self.label(tweets, options, name)[0]

        predict.__name__ = predict.__qualname__ = f"{name.replace('-', '_')}_predict"
        predict.__doc__ = f"Label tweets {{id: text}} with the model {name}, as predict does."
        return remote(predict).__get__(self)

    @remote
    def get_models(self):
        """Every model: name, display name, description, version served, default, state."""
        return self.models.listing()

    @remote
    def get_model_metadata(self, name):
        """A model's version, labels, limits, schemas, training data and figures."""
        if not isinstance(name, str):
            raise contract.BadInput(f"name must be a string, got {contract.json_type(name)}")
        served = self.models.get(name)
        return contract.metadata(served, self.settings, self.settings["MAX_BODY_BYTES"])

    @remote
    def get_model(self):
        """The default model's metadata, as get_model_metadata gives it."""
        served = self.models.get()
        return contract.metadata(served, self.settings, self.settings["MAX_BODY_BYTES"])

    @remote
    def health(self):
        """{"status": "ok", "model_version": the default's, "models": {name: state}}."""
        _, states, _ = self.models.ready()
        return {"status": "ok", "model_version": self.models.get().version, "models": states}


def parse_options(options):
    """Return the options as booleans; BadInput for anything else."""
    if options is None:
        return {}, None, None
    if not isinstance(options, dict):
        shape = '{"scores": bool, "explain": bool, "model": str, "version": str}'
        raise contract.BadInput(f"options must be a map {shape}, got {contract.json_type(options)}")
    allowed = [*contract.OPTIONS, "model", "version"]
    unknown = sorted(map(str, set(options) - set(allowed)))
    if unknown:
        raise contract.BadInput(f"unknown option(s) {unknown}; allowed: {allowed}")
    flags = {}
    for name, value in options.items():
        wanted = bool if name in contract.OPTIONS else str
        if not isinstance(value, wanted):
            what = "true or false" if wanted is bool else "a string"
            raise contract.BadInput(
                f"option {name} must be {what}, got {contract.json_type(value)}"
            )
        if wanted is bool:
            flags[name] = value
    return flags, options.get("model"), options.get("version")


class Server(zerorpc.Server):
    """zerorpc's server, sending errors without tracebacks: a kind, and a message naming the ids."""

    def _print_traceback(self, protocol_v1, exc_infos):
        error = exc_infos[1]
        if isinstance(error, contract.PredictionError):
            name, message = type(error).__name__, f"{error.status} {error.text}: {error.detail}"
        elif isinstance(error, NameError):  # an unknown method
            name, message = "NameError", f"no such method: {error}"
        else:
            log.error("unexpected error", exc_info=tuple(exc_infos))
            name, message = "InternalError", "an unexpected error; the server's log has it"
        return (message,) if protocol_v1 else (name, message, "")


# Calls zerorpc itself cannot take: one over MAX_BODY_BYTES, or one it cannot decode. Answered
# with the contract's error, where the call's header can be read, rather than left unanswered.
# ZeroMQ drops a peer that sends more than HARD_LIMIT times the limit before anything is read.
HARD_LIMIT = 4
# Messages ZeroMQ queues for one peer each way, calls in and answers out (its default, 1,000,
# queued 120 calls of 7.9 MB: +1.25 GB, issue 37, round 3); an answer past it to a peer that
# does not read is dropped (ZeroMQ's ROUTER).
QUEUED_PER_PEER = 1


def guard(events, limit):
    """Make the server's socket turn a call over `limit` bytes, or one that cannot be decoded,
    into a call of a method that raises the contract's error for it."""

    def recv(timeout=None):
        parts = events._recv(timeout=timeout)
        # As zerorpc's own recv: the routing identity, an empty frame, then the message.
        identity = parts[:-2] if len(parts) > 2 else parts[:-1] or None
        blob = get_pyzmq_frame_buffer(parts[-1])
        size = len(blob)
        try:
            event = Event.unpack(blob) if size <= limit else None
        except Exception:  # not MessagePack, not a call, or keys zerorpc's settings refuse
            event = None
        if event is None:
            unpacker = msgpack.Unpacker(raw=False, max_buffer_size=size)
            unpacker.feed(blob)
            try:
                unpacker.read_array_header()
                header = unpacker.unpack()
            except Exception:
                header = None
            if not isinstance(header, dict) or "message_id" not in header:
                log.warning("dropped a message that is no call (%d bytes): nothing to answer", size)
                return recv(timeout)
            name, args = ("_too_large", [size, limit]) if size > limit else ("_undecodable", [])
            event = Event(name, args, None, header)
        event.identity = identity
        return event

    events.recv = recv


class Peers:
    """At most `most` connections to the server's socket at once: ZeroMQ queues what each sends
    and is answered (QUEUED_PER_PEER each way, and a message being read or written), so without
    a bound on connections there is none on memory. ZeroMQ asks a handler of its own protocol,
    ZAP, about every new connection's handshake; this one counts the connections open from the
    socket's monitor and refuses a new one past `most` (the client's handshake fails; ZeroMQ
    clients try again on their own)."""

    EVENTS = zmq.EVENT_ACCEPTED | zmq.EVENT_DISCONNECTED

    def __init__(self, events, most):
        self.most, self.open, self.warned = most, set(), 0.0
        self.zap = events.context.socket(zmq.REP)
        self.zap.bind("inproc://zeromq.zap.01")  # ZAP's address, in the socket's context
        events.setsockopt(zmq.ZAP_DOMAIN, b"sentiment")  # asks ZAP with no security mechanism
        self.monitor = events._socket.get_monitor_socket(self.EVENTS)
        gevent.spawn(self.follow)
        gevent.spawn(self.answer)

    def follow(self):
        while True:
            self.note(self.monitor.recv_multipart())

    def note(self, frames):
        event, fd = struct.unpack("=HI", frames[0][:6])
        (self.open.add if event == zmq.EVENT_ACCEPTED else self.open.discard)(fd)

    def answer(self):
        while True:
            version, request_id, *_ = self.zap.recv_multipart()
            while True:  # what the monitor has said meanwhile: this connection, others closed
                try:
                    self.note(self.monitor.recv_multipart(zmq.NOBLOCK))
                except zmq.Again:
                    break
            allowed = len(self.open) <= self.most
            if not allowed:
                REFUSED.inc()
                if time.monotonic() - self.warned > 60:  # a refused client retries at once
                    self.warned = time.monotonic()
                    log.warning("refused a connection: RPC_MAX_PEERS (%d) are open", self.most)
            status = (b"200", b"OK") if allowed else (b"400", b"too many connections")
            self.zap.send_multipart([version, request_id, *status, b"", b""])


def too_large(size, limit):
    raise contract.TooLarge(f"a call must be at most {limit} bytes (MAX_BODY_BYTES), got {size}")


def undecodable():
    raise contract.BadInput(
        "the call could not be decoded: MessagePack with string keys only, [tweets, options]"
    )


class QuietLog(logging.Filter):
    """zerorpc's own log lines without what a client sent: its exceptions can quote a whole
    message (tweets included), so only their kind is kept."""

    def filter(self, record):
        if record.exc_info:
            kind = record.exc_info[0].__name__ if record.exc_info[0] else "error"
            record.msg, record.args = f"{record.getMessage()[:80]} ({kind})", None
            record.exc_info = record.exc_text = None
        return True


def check_bind(settings):
    """Refuse to bind beyond loopback unless the operator has accepted the risk by name."""
    address = settings["RPC_BIND"]
    if address.startswith(("ipc://", "inproc://")):
        return
    host = address.split("://", 1)[-1].rsplit(":", 1)[0].strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback and settings["RPC_ALLOW_UNAUTHENTICATED_NETWORK"] != "yes":
        raise RuntimeError(
            f"RPC_BIND={address} is reachable from other machines, and ZeroRPC has no "
            "authentication or encryption: anyone who can reach it can use it. Bind loopback, put "
            "it behind something that authenticates, or set RPC_ALLOW_UNAUTHENTICATED_NETWORK=yes."
        )


def main(config=None):
    service.setup_logging(log)
    for handler in service.setup_logging(logging.getLogger("zerorpc")).handlers:
        handler.addFilter(QuietLog())  # its children's records too, which a logger's would miss
    settings = service.Settings.load(DEFAULTS, config)
    check_bind(settings)
    sentiment = Sentiment(settings)
    names = ("predict", "predict_with_model", "get_models", "get_model_metadata", "get_model")
    methods = {name: getattr(sentiment, name) for name in (*names, "health")}
    for name in sentiment.models.entries:  # named at start; predict's "model" option follows HUP
        method = sentiment.model_predict(name)
        methods[method.__name__] = method
    limit = settings["MAX_BODY_BYTES"]
    methods.update(_too_large=too_large, _undecodable=undecodable)  # unlisted: names with _
    server = Server(
        methods,
        name="sentiment",
        heartbeat=settings["RPC_HEARTBEAT_SECONDS"],
        pool_size=settings["RPC_MAX_CALLS"],
    )
    guard(server._events, limit)
    server._events.setsockopt(zmq.MAXMSGSIZE, HARD_LIMIT * limit)
    server._events.setsockopt(zmq.RCVHWM, QUEUED_PER_PEER)
    server._events.setsockopt(zmq.SNDHWM, QUEUED_PER_PEER)
    Peers(server._events, settings["RPC_MAX_PEERS"])
    server._events.setsockopt(zmq.LINGER, 2000)  # answers in flight leave before the socket closes
    server.bind(settings["RPC_BIND"])
    port = service.serve_metrics(
        settings["RPC_METRICS_HOST"], settings["RPC_METRICS_PORT"], "RPC_METRICS_PORT"
    )
    gevent.signal_handler(signal.SIGTERM, server.stop)
    gevent.signal_handler(signal.SIGINT, server.stop)
    gevent.signal_handler(signal.SIGHUP, sentiment.reload)
    log.info(
        "serving ZeroRPC on %s, metrics on %s:%s, model %s",
        settings["RPC_BIND"],
        settings["RPC_METRICS_HOST"],
        port,
        sentiment.models.get().version,
    )
    server.run()  # returns on TERM once the calls in flight are answered
    server.close()
    log.info("stopped")


if __name__ == "__main__":
    try:
        main()
    except (RuntimeError, model.ArtifactError) as e:
        sys.exit(f"rpc: {e}")
