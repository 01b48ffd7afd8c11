"""gunicorn settings: TLS 1.2+, gevent workers, the app preloaded; read from the environment."""

import _socket
import contextlib
import functools
import gc
import importlib.util
import json
import logging
import os
import re
import shutil
import ssl
import sys
import tempfile
import time

# Metrics add up across workers: prometheus_client's multiprocess mode keeps each process's figures
# in files here. Set before the app (and prometheus_client) is imported.
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="sentiment-metrics-")
    os.environ["METRICS_DIR_MADE_HERE"] = "1"

import gevent  # noqa: E402
from gunicorn import arbiter as gunicorn_arbiter  # noqa: E402
from gunicorn import util  # noqa: E402
from gunicorn.http import errors, message, wsgi  # noqa: E402
from gunicorn.workers import base_async, ggevent  # noqa: E402
from prometheus_client import multiprocess  # noqa: E402

import pace  # noqa: E402

ROOT = os.path.dirname(os.path.abspath(__file__))


def env_int(name, default):
    return int(os.environ.get(name, default))


bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '5000')}"  # noqa: S104
# The master's pid, for kill -TERM / -HUP; gunicorn removes it when the master exits. None where
# the project folder is read-only (the image in Kubernetes), where signals go to the container.
pidfile = os.environ.get(
    "PID_FILE", os.path.join(ROOT, "run", f"api-{os.environ.get('PORT', '5000')}.pid")
)
try:
    os.makedirs(os.path.dirname(pidfile), exist_ok=True)
    if not os.access(os.path.dirname(pidfile), os.W_OK):
        pidfile = None
except OSError:
    pidfile = None
certfile = os.environ.get("TLS_CERT", os.path.join(ROOT, "server.crt"))
keyfile = os.environ.get("TLS_KEY", os.path.join(ROOT, "server.key"))


class StreamServer(ggevent.StreamServer):
    """gevent's server, which on close only stops accepting, gives a TLS handshake
    HANDSHAKE_SECONDS, and counts its connections (CONNECTIONS).

    A connection accepted just before close() may still be in its TLS handshake. gevent's close()
    drops the handler and closes the listening socket, which that connection needs afterwards
    (gevent#2071, gunicorn#3315): it then dies unanswered, AttributeError or EBADF in the log.
    Here that lost 1 to 4 of about 3,000 requests across a HUP. The other workers go on accepting
    from the shared socket, and the socket is closed when this worker exits.

    gevent does the handshake on a socket with no time-out, before the worker's handle() sets
    one: 2,100 bare connect()s were held for good, the worker's pool full, nothing answered.
    """

    def close(self):
        self.stop_accepting()

    def wrap_socket_and_handle(self, client_socket, address):
        client = None
        try:
            # No I/O yet: the handshake is done below, within its time.
            client = self.wrap_socket(client_socket, do_handshake_on_connect=False, **self.ssl_args)
            CONNECTIONS.opened(client, address[0] if address else "")
            with gevent.Timeout(handshake_seconds, HandshakeTimeout):  # the whole of it
                client.do_handshake()
        except (HandshakeTimeout, OSError) as e:  # ssl.SSLError is an OSError
            # A scanner, a client of TLS 1.0, a bare connect(): a line, no traceback.
            TLS_LOG.debug("TLS handshake failed: %s", getattr(e, "reason", None) or e)
            CONNECTIONS.closed(client)
            (client or client_socket).close()
            return None
        try:
            return self.handle(client, address)
        finally:
            CONNECTIONS.closed(client)
            client.close()


class HandshakeTimeout(Exception):
    def __str__(self):
        return f"not done within {handshake_seconds} s"


TLS_LOG = logging.getLogger("gunicorn.error")


class Connections:
    """This worker's connections, and which of them wait (for their TLS handshake or for a
    request), longest-waiting first, by client address.

    A connection that waits costs its client nothing, and gevent stops accepting once the pool
    (WORKER_CONNECTIONS) is full: 2,100 bare connect()s, or 2,500 clients idle after their
    handshake, kept every other client out. Here a new connection closes the longest-waiting one
    of its own address past MAX_IDLE_PER_ADDRESS, and of the worker's when the pool is full (as
    nginx drains idle keep-alive connections when it runs out), so that waiting connections never
    keep a new one out. A connection in the middle of a request is never closed here.
    """

    def __init__(self, size, per_address):
        self.size, self.per_address = size, per_address
        self.open = {}  # socket: its client's address
        self.waiting = {}  # socket: None, longest-waiting first (dicts keep their order)
        self.addresses = {}  # address: [its connections, {socket: None} of those waiting]

    def opened(self, sock, address):
        """Count a new connection, waiting; close others to make room as need be."""
        peers = self.addresses.get(address)
        if peers is None:
            peers = self.addresses[address] = [0, {}]
        elif self.per_address and len(peers[1]) >= self.per_address:
            self.drop(next(iter(peers[1])))
        if len(self.open) + 1 >= self.size and self.waiting:  # the pool counts this one
            self.drop(next(iter(self.waiting)))
        self.open[sock] = address
        peers[0] += 1
        self.waiting[sock] = peers[1][sock] = None

    def work(self, sock):
        """The connection is in a request: it waits no more."""
        if self.waiting.pop(sock, 0) is None:
            del self.addresses[self.open[sock]][1][sock]

    def wait(self, sock):
        """The connection waits for its next request."""
        address = self.open.get(sock)
        if address is not None:
            self.waiting[sock] = self.addresses[address][1][sock] = None

    def closed(self, sock):
        address = self.open.pop(sock, None)
        if address is not None:
            self.waiting.pop(sock, None)
            peers = self.addresses[address]
            peers[1].pop(sock, None)
            peers[0] -= 1
            if not peers[0]:
                del self.addresses[address]

    def drop(self, sock):
        """Close a waiting connection: its handshake or read ends as if the client had left."""
        self.closed(sock)
        fd = sock.fileno()  # -1 once closed: a number freed is never touched
        if fd >= 0:
            with contextlib.suppress(OSError):
                peer = _socket.socket(fileno=fd)  # not a gevent socket: no waiting on it
                try:
                    peer.shutdown(_socket.SHUT_RDWR)
                finally:
                    peer.detach()  # the descriptor stays its own socket's, to close


ggevent.StreamServer = StreamServer  # the class gunicorn's gevent worker builds its servers from


class _Held:
    """A socket stand-in that keeps what is sent to it."""

    data = b""

    def sendall(self, data):
        self.data += data

    def gettimeout(self):
        return 0.0  # it never waits: write() hands it the data in one sendall()


class OneWriteResponse(wsgi.Response):
    """gunicorn's response, sending the head with the body when the body is one whole piece, with
    HSTS and without gunicorn's Server header.

    gunicorn writes a response's head, then its body: two TLS records and two sends for every
    answer, where one does. Every answer the API makes has a Content-Length and one piece of body;
    streamed ones (job results, chunked) go out as gunicorn sends them.
    """

    def default_headers(self):
        headers = super().default_headers()
        headers[1] = HSTS if self.cfg.is_ssl else ""  # gunicorn's "Server: gunicorn"
        return headers

    def write(self, arg):
        if (
            self.headers_sent
            or self.chunked
            or self._omits_body
            or not isinstance(arg, bytes)
            or self.response_length != len(arg)
        ):
            return super().write(arg)
        sock, self.sock = self.sock, _Held()
        try:
            self.send_headers()  # gunicorn's own head, into _Held
        finally:
            head, self.sock = self.sock.data, sock
        self.sent = len(arg)
        if len(arg) <= ONE_WRITE_BYTES:
            pace.send_all(sock, head + arg)
        else:  # no copy of a big answer (23.6 MB at most) to put its head before it
            pace.send_all(sock, head, arg)


wsgi.Response = OneWriteResponse  # the class gunicorn's wsgi.create() makes responses from
ONE_WRITE_BYTES = 65536  # an answer's head goes out with its body when the body is this or less
# Every answer over TLS tells browsers to come back over TLS only, for a year.
HSTS = "Strict-Transport-Security: max-age=31536000\r\n"


def write(sock, data, chunked=False):
    """gunicorn's util.write, with pace.send_all(): a chunk of a streamed answer (a job's result)
    given to a slow but steady client is not cut off, and one given to a trickle is."""
    if isinstance(data, str):
        data = data.encode("utf-8")
    pieces = (data,)
    if chunked:
        pieces = (b"%X\r\n" % len(data), data, b"\r\n")  # a piece of a result is not copied
    if sock.gettimeout() == 0.0:  # util.write_nonblock's: one try, as gunicorn's
        return sock.sendall(b"".join(pieces))
    return pace.send_all(sock, *pieces)


util.write = write  # what gunicorn's Response and write_nonblock call
util.write_chunk = functools.partial(write, chunked=True)  # Response.close's last chunk

# What gunicorn works out anew for every request, each a few µs of Python, kept instead: the
# Date header's text, made once a second; whether a peer's address is in forwarded_allow_ips (so
# that it may set X-Forwarded-*), once an address and list; the environ's wsgi.errors stream, a
# logging lookup, once; the settings (FairGeventWorker.run): all fixed for a worker's life.
_http_date = util.http_date
_date_of_second = functools.lru_cache(maxsize=1)(_http_date)


def http_date(timestamp=None):
    return _http_date(timestamp) if timestamp is not None else _date_of_second(int(time.time()))


util.http_date = http_date  # what gunicorn's Response.default_headers() calls
_ip_in_allow_list, _allowed = message._ip_in_allow_list, {}


def ip_in_allow_list(ip, allow_list, networks):
    key = ip, tuple(allow_list)
    allowed = _allowed.get(key)
    if allowed is None:
        if len(_allowed) >= 10_000:  # many clients: never more than this many held
            _allowed.clear()
        allowed = _allowed[key] = _ip_in_allow_list(ip, allow_list, networks)
    return allowed


message._ip_in_allow_list = ip_in_allow_list  # what gunicorn's HeaderPolicy calls
wsgi.WSGIErrorsWrapper = functools.cache(wsgi.WSGIErrorsWrapper)  # one per worker's settings


# What gunicorn answers itself, before the app sees a request, by the kind of malformation; the
# rest of its parse errors are 400. As JSON in the API's shape, and never echoing the request.
MALFORMED = {
    errors.LimitRequestLine: (414, "URI Too Long"),
    errors.LimitRequestHeaders: (431, "Request Header Fields Too Large"),
    errors.UnsupportedTransferCoding: (501, "Not Implemented"),
    errors.ExpectationFailed: (417, "Expectation Failed"),
    errors.ForbiddenProxyRequest: (403, "Forbidden"),
}


class FairGeventWorker(ggevent.GeventWorker):
    """gunicorn's gevent worker, letting every connection take its turn, with a time-out on every
    read and write, and malformed requests answered as the API answers errors.

    After a response, gevent's worker reads the connection's next request at once; under load the
    client has often sent it already, so the read succeeds without a switch and one keep-alive
    connection is served again and again while the others wait (p99 139 ms against a p50 of 6 ms
    at 16 connections, bench/RESULTS.md). Waiting for the event loop to go idle between requests
    serves them in turn, at no cost in throughput.
    """

    def run(self):
        """Serve, with a greenlet writing out the metrics and log lines held in memory (api.TALLY)
        every METRICS_FLUSH_MS while requests are few."""
        import api  # already imported: the app is preloaded

        # Each setting read once: gunicorn reads them through Config.__getattr__, a lookup and a
        # call, a dozen times a request, and a worker's settings never change (a HUP makes new
        # workers). A value in the instance's dict is found before __getattr__ is asked.
        self.cfg.__dict__.update({k: v.get() for k, v in self.cfg.settings.items()})

        def flusher():
            while self.alive:
                gevent.sleep(api.TALLY.interval)
                if api.TALLY.lines or api.TALLY.counts or api.TALLY.histograms:
                    api.TALLY.flush()

        gevent.spawn(flusher)
        super().run()

    def handle_exit(self, sig, frame):
        """On TERM: a HUP's old worker, or a stop. With STOP_DRAIN_SECONDS, a worker that gets
        the TERM with its master (`docker stop` signals the whole process group) serves on until
        the master's drain ends: it looks, half a second on, whether the master is stopping."""
        if stop_drain_seconds:
            gevent.spawn_later(0.5, self.after_drain, sig, frame)
        else:
            self.stop_serving(sig, frame)

    def after_drain(self, sig, frame):
        import api  # already imported: the app is preloaded

        left = api.STOPPING.began + stop_drain_seconds - time.time() if api.STOPPING else 0
        gevent.spawn_later(max(0.0, left), self.stop_serving, sig, frame)

    def stop_serving(self, sig, frame):
        """Stop accepting, and let websockets answer what has arrived and close with 1001."""
        super().handle_exit(sig, frame)
        import ws  # already imported: the app is preloaded

        ws.Websockets.stopping = True

    def handle(self, listener, client, addr):
        # gunicorn reads headers within KEEPALIVE, but a body or a websocket frame without end,
        # and writes to a client that never reads: a time-out on the socket bounds them all.
        client.settimeout(client_timeout)
        base_async.AsyncWorker.handle(self, listener, client, addr)

    def handle_request(self, listener_name, req, sock, addr):
        CONNECTIONS.work(sock)  # in a request: never closed to make room (Connections)
        try:
            return super().handle_request(listener_name, req, sock, addr)
        except TimeoutError as e:  # a write the client did not take in time: drop the connection
            self.log.info(
                "a client took too little of its answer (%s): connection closed",
                e if isinstance(e, pace.Slow) else f"nothing for {client_timeout} s",
            )
            pace.reset_on_close(sock)
            raise StopIteration() from None
        except BaseException as e:
            import service  # already imported: the app is preloaded

            if not isinstance(e, service.CutShort):
                raise
            self.log.warning("a response was cut short: %s", e)
            raise StopIteration() from None
        finally:
            CONNECTIONS.wait(sock)
            gevent.idle()

    def handle_error(self, req, client, addr, exc):
        """A request gunicorn could not parse: a JSON error, and a log line naming its kind only
        (gunicorn's own would write the request line, and the token in its path)."""
        if isinstance(exc, errors.ParseException | ssl.SSLError):
            status, reason = next(
                (v for k, v in MALFORMED.items() if isinstance(exc, k)), (400, "Bad Request")
            )
            kind = re.sub(r"(?<!^)(?=[A-Z])", " ", type(exc).__name__).lower()
            self.log.warning("malformed request from %s: %s", (addr or ("-",))[0], kind)
            detail = f"the request is not valid HTTP/1.1: {kind}"
        else:
            status, reason, detail = 500, "Internal Server Error", "an unexpected error"
            self.log.error("unexpected error before the app: %s", type(exc).__name__)
        body = json.dumps({"error": status, "text": reason, "detail": detail}).encode()
        head = (
            f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\n{HSTS if self.cfg.is_ssl else ''}"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        try:
            util.write_nonblock(client, head.encode() + body)
        except Exception:  # the client has gone: nothing to answer
            self.log.debug("could not send the error")


# A stop behind a balancer: on TERM, /ready answers 503 for STOP_DRAIN_SECONDS while every
# request is still answered, so that the balancer's health check takes this server out before it
# closes its socket; then the usual graceful stop. 0 (the default, one machine): at once.
stop_drain_seconds = env_int("STOP_DRAIN_SECONDS", 0)


def handle_term(arbiter):
    """The master's TERM: /ready answers 503 and every request is still answered until the drain
    ends; then gunicorn's graceful stop."""
    if stop_drain_seconds:
        import api  # already imported: the app is preloaded

        began = api.STOPPING.begin()
        arbiter.log.info("stopping: /ready answers 503 for %s s first", stop_drain_seconds)
        time.sleep(max(0.0, began + stop_drain_seconds - time.time()))
    raise StopIteration  # gunicorn's own handle_term: the graceful stop


gunicorn_arbiter.Arbiter.handle_term = handle_term

# One gevent worker per core: the model is fast and CPU-bound, and gevent keeps connections
# alive without a thread each, so slow clients cannot tie the workers up.
workers = env_int("WORKERS", os.cpu_count() or 1)
worker_class = FairGeventWorker
worker_connections = env_int("WORKER_CONNECTIONS", 1000)
keepalive = env_int("KEEPALIVE", 5)
timeout = env_int("TIMEOUT", 30)
graceful_timeout = env_int("GRACEFUL_TIMEOUT", 8)  # inside Docker's 10 s before SIGKILL
max_requests = env_int("MAX_REQUESTS", 50_000)  # a fresh worker now and then bounds slow leaks
max_requests_jitter = env_int("MAX_REQUESTS_JITTER", 5_000)
limit_request_line = 1024
limit_request_fields = 50
# gunicorn's HTTP parser in C where it was built (requirements-compiled.txt): "fast" stops gunicorn
# at start, rather than falling back in silence, should a setting here ever rule it out.
http_parser = "fast" if importlib.util.find_spec("gunicorn_h1c") else "python"
client_timeout = env_int("CLIENT_TIMEOUT", 30)  # seconds a read or write may wait on a client
handshake_seconds = env_int("HANDSHAKE_SECONDS", 5)  # the most a TLS handshake may take
if handshake_seconds < 1:
    raise SystemExit(f"HANDSHAKE_SECONDS must be 1 or more, got {handshake_seconds}")
# Connections of one client address a worker holds that wait (for their TLS handshake, or for a
# request): past it, a new one from that address closes its longest-waiting one. 0: no bound.
max_idle_per_address = env_int("MAX_IDLE_PER_ADDRESS", 100)
CONNECTIONS = Connections(worker_connections, max_idle_per_address)
if (
    client_timeout <= keepalive
):  # an idle kept-alive socket would time out mid-read, logged as an error
    raise SystemExit(
        f"CLIENT_TIMEOUT ({client_timeout} s) must be more than KEEPALIVE ({keepalive} s): raise "
        "CLIENT_TIMEOUT or lower KEEPALIVE"
    )

# Loaded once in the master and shared by the forked workers.
preload_app = True

# Managed by signals (see the README); gunicorn's control socket is one more door to guard.
control_socket_disable = True

# The app writes one JSON line per request with the token redacted; gunicorn's access log would
# write the path, token and all.
accesslog = None
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info").lower()


def ssl_context(conf, default_ssl_context_factory):
    """TLS 1.2 and 1.3; on 1.2, forward secrecy and AEAD ciphers only (no CBC, no finite-field
    DHE): TLS 1.3's suites are all of that kind already."""
    context = default_ssl_context_factory()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers("ECDHE+AESGCM:ECDHE+CHACHA20")
    return context


def when_ready(server):
    """Start the job workers make api-start supervises (JOB_WORKERS_WITH_API, see jobs/), and
    the gRPC door's processes (GRPC_WORKERS, see v2/supervisor.py)."""
    import jobs
    import v2.supervisor

    server.job_workers = jobs.LocalWorkers(jobs.settings_of())
    server.job_workers.start()
    server.v2_grpc = v2.supervisor.start()


def post_worker_init(worker):
    """psycopg chose how to wait for the database when the master imported it (for the aliases
    or the job store in PostgreSQL), before gevent patched this worker: a C poll that blocks
    every request of the worker while a query or a LISTEN waits. Choose again as psycopg chooses
    under gevent, so that waiting for the database yields to the other requests."""
    waiting = sys.modules.get("psycopg.waiting")
    if waiting is not None and waiting._is_select_patched():
        import selectors

        waiting.DefaultSelector = selectors.DefaultSelector  # gevent's, for connecting
        waiting.wait = waiting.wait_poll  # select.poll, gevent's since the patch
    # The aliases are followed from the worker's start, not from its first request, which would
    # get what the master read when it started (in PostgreSQL: versions ago, maybe).
    stores = sys.modules.get("aliases.stores")
    if stores is not None:
        stores.follow_here()


def pre_fork(server, worker):
    """Keep what the master loaded (the app, its libraries) out of the workers' garbage collector.

    Every worker inherits tens of thousands of objects from the preloaded app; a full collection
    walks them all, a pause of 10 ms and more at 1 connection's p99 here. Frozen, they are never
    walked, and their memory pages stay shared with the master.
    """
    gc.freeze()


def worker_exit(server, worker):
    """Flush and let go of the worker's log handlers before Python's exit tears gevent down.

    Otherwise a handler collected at exit calls back into logging, whose lock asks gevent for the
    thread, which is gone by then: "Exception ignored in: <function _removeHandlerRef ...>", a
    clean stop looking like a crash, from every worker at every stop and HUP.
    """
    import logging

    import api  # already imported: the app is preloaded

    api.TALLY.flush()  # the metrics and log lines still held: nothing is lost at a stop or HUP
    logging.shutdown()
    logging._handlerList.clear()  # their weak references: none is left to call back at exit


def child_exit(server, worker):
    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if hasattr(server, "v2_grpc"):
        server.v2_grpc.terminate()  # TERM now: they answer their calls while the jobs finish
    if hasattr(server, "job_workers"):
        server.job_workers.stop(graceful_timeout)
    if hasattr(server, "v2_grpc"):
        server.v2_grpc.stop(graceful_timeout)
    if os.environ.get("METRICS_DIR_MADE_HERE"):
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def on_reload(server):
    """On SIGHUP, before new workers fork: read the tokens and the artifacts again."""
    import api

    try:
        api.reload(server.app.wsgi())
        server.log.info("reloaded the API tokens and the models")
        if hasattr(server, "job_workers"):
            server.job_workers.restart()  # they load the new model as they start again
        if hasattr(server, "v2_grpc"):
            server.v2_grpc.reload()  # HUP: the gRPC processes read them again too
    except Exception as e:  # a bad new model must not take the running service down
        server.log.error("reload failed; keeping the tokens and models in use: %s", e)
