"""The Open Inference Protocol over gRPC: inference.GRPCInferenceService, in a process of its own.

    make api-start              # GRPC_WORKERS of them beside gunicorn, on GRPC_PORT (8001)
    .venv/bin/python -m v2.grpc_server                   # one, by hand

TLS with gunicorn's certificate (TLS_CERT, TLS_KEY); the same tokens, as the metadata
`authorization: Bearer <token>` (ServerLive, ServerReady and ModelReady need none: probes ask
them); messages of at most MAX_BODY_BYTES each way (past it, gRPC's own RESOURCE_EXHAUSTED).
Outputs go in raw_output_contents, which tritonclient's as_numpy() reads. TERM or INT: take no new
call, answer those in flight (GRACEFUL_TIMEOUT), exit 0. HUP: read the tokens, the models and the
certificate again, keeping those in use if the new ones fail. It exits when its parent does, so
that none is left holding the port. Never under gevent: grpcio in a gevent-patched worker hung.
"""

import functools
import hmac
import logging
import os
import random
import signal
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
from prometheus_client import Counter, Histogram

import contract
import model
import registry
import service
import v2
from v2 import grpc_predict_v2_pb2 as pb2
from v2 import grpc_predict_v2_pb2_grpc as pb2_grpc
from v2 import protocol

log = logging.getLogger("v2")
# The contract's kinds as gRPC status codes. Over the tweet limit is a bad argument, not gRPC's
# RESOURCE_EXHAUSTED, which clients may retry: the same request would be refused again.
CODES = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
}
REQUEST_ID_MAX = 128  # as X-Request-ID on REST
PARENT_CHECK_SECONDS = 0.5

# Under make api-start, PROMETHEUS_MULTIPROC_DIR is gunicorn's: these add up in its /metrics.
REQUESTS = Counter(
    "v2_grpc_requests", "gRPC calls answered, by method and status code", ["method", "code"]
)
LATENCY = Histogram(
    "v2_grpc_request_duration_seconds",
    "Seconds from a gRPC call to its answer, by method",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
PREDICTIONS = Counter(
    "v2_grpc_predictions",
    "Labels given over gRPC, by model, version and label",
    ["model", "version", "label"],
)


class Unauthenticated(Exception):
    """No valid token in the call's metadata."""


def call(needs_token=True):
    """A method of the service: the token checked, errors as gRPC status codes with the contract's
    words (never a traceback), and each call counted, timed and logged (never its tweets)."""

    def wrap(method):
        name = method.__name__

        @functools.wraps(method)
        def handler(self, request, context):
            start, code, tweets = time.perf_counter(), grpc.StatusCode.OK, 0
            metadata = dict(context.invocation_metadata())
            request_id = metadata.get("x-request-id", "")
            if not (0 < len(request_id) <= REQUEST_ID_MAX and request_id.isprintable()):
                request_id = f"{random.getrandbits(128):032x}"
            try:
                if needs_token:
                    self.authenticate(metadata.get("authorization", ""))
                response, tweets = method(self, request, request_id)
                return response
            except Unauthenticated:
                code = grpc.StatusCode.UNAUTHENTICATED
                details = "send a valid token as the metadata 'authorization: Bearer <token>'"
            except contract.PredictionError as e:
                code, details = CODES.get(e.status, grpc.StatusCode.INVALID_ARGUMENT), e.detail
            except Exception:
                log.exception("unexpected error", extra={"request_id": request_id})
                code = grpc.StatusCode.INTERNAL
                details = f"an unexpected error; request id {request_id}"
            finally:
                observe(name, code, tweets, request_id, time.perf_counter() - start)
            context.abort(code, details)

        return handler

    return wrap


def observe(method, code, tweets, request_id, seconds):
    REQUESTS.labels(method, code.name).inc()
    LATENCY.labels(method).observe(seconds)
    if log.isEnabledFor(logging.INFO):
        fields = {
            "request_id": request_id,
            "method": method,
            "code": code.name,
            "latency_ms": round(seconds * 1000, 3),
            "tweets": tweets,
        }
        sys.stderr.write(service.json_line("info", "grpc call", fields))


class Door(pb2_grpc.GRPCInferenceServiceServicer):
    """The service over the registry's models, with the tokens and settings of this process."""

    def __init__(self, settings):
        self.settings = settings
        self.tokens, self.models = self.load()

    def load(self):
        tokens = self.settings.tokens()
        models = registry.load(
            self.settings["MODELS_FILE"],
            aliases_file=self.settings["ALIASES_FILE"],
            database_url=self.settings["DATABASE_URL"],
        )
        return tokens, models

    def reload(self):
        """On HUP: the tokens and models afresh, all or none; the old stay if the new fail."""
        try:
            self.tokens, self.models = self.load()
            log.info(
                "reloaded the API tokens and the models, default %s", self.models.get().version
            )
        except (RuntimeError, model.ArtifactError) as e:
            log.error("reload failed; keeping the tokens and models in use: %s", e)

    def authenticate(self, authorization):
        """Unauthenticated unless `authorization` is "Bearer <a valid token>", compared with every
        token in constant time."""
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            raise Unauthenticated()
        candidate, valid = token.strip().encode("utf-8", "surrogatepass"), False
        for known in self.tokens:
            valid |= hmac.compare_digest(candidate, known)
        if not valid:
            raise Unauthenticated()

    @call(needs_token=False)
    def ServerLive(self, request, request_id):  # noqa: N802 (the protocol's names)
        return pb2.ServerLiveResponse(live=True), 0

    @call(needs_token=False)
    def ServerReady(self, request, request_id):  # noqa: N802
        return pb2.ServerReadyResponse(ready=self.models.ready()[0]), 0

    @call(needs_token=False)
    def ModelReady(self, request, request_id):  # noqa: N802
        """Ready if loaded; not ready if registered but failed; NOT_FOUND if unknown."""
        try:
            protocol.resolve(self.models, request.name, request.version)
        except registry.ModelUnavailable:
            return pb2.ModelReadyResponse(ready=False), 0
        return pb2.ModelReadyResponse(ready=True), 0

    @call()
    def ServerMetadata(self, request, request_id):  # noqa: N802
        return pb2.ServerMetadataResponse(**protocol.server_metadata()), 0

    @call()
    def ModelMetadata(self, request, request_id):  # noqa: N802
        served = protocol.resolve(self.models, request.name, request.version)
        return pb2.ModelMetadataResponse(**protocol.model_metadata(served)), 0

    @call()
    def ModelInfer(self, request, request_id):  # noqa: N802
        """Label the tweets of the input `text`; the outputs asked for, in raw_output_contents."""
        answered = self.infer_in_place(request, request_id)
        if answered is not None:
            return answered
        inference = read(request)
        key = inference.id or request_id  # the canary's share follows the request's id
        served = protocol.resolve(self.models, request.model_name, request.model_version, key)
        wants_scores = "score" in inference.outputs
        try:
            predictions = contract.predict(
                served.model, inference.tweets, self.settings, scores=wants_scores
            )
        except (contract.TooLarge, contract.Unprocessable) as e:
            raise protocol.about_input(e) from None
        labels, scores = protocol.values_of(predictions, wants_scores)
        return answer(served, inference, labels, scores), len(labels)

    def infer_in_place(self, request, request_id):
        """ModelInfer's answer to a well-formed request whose tweets are in raw_input_contents
        (tritonclient's way), read there by contract_core for the model's core, as REST's hot
        path reads them: the same answer in about a third of the time (docs/performance.md).
        None for any other request, which read() and contract.predict answer or refuse."""
        inputs, raw = request.inputs, request.raw_input_contents
        if len(inputs) != 1 or len(raw) != 1 or inputs[0].contents.bytes_contents:
            return None
        tensor, shape = inputs[0], list(inputs[0].shape)
        scored = protocol.scored_in_place(
            self.models,
            request.model_name,
            request.model_version,
            request.id or request_id,
            (tensor.name, tensor.datatype, shape),
            [output.name for output in request.outputs],
            raw[0],
            self.settings,
            shape[0],
        )
        if scored is None:
            return None
        served, outputs, probabilities, labels = scored
        inference = protocol.Inference(None, shape, outputs, id=request.id)
        return answer(served, inference, labels, probabilities, contract.DECIMALS), len(labels)


def answer(served, inference, labels, scores, decimals=None):
    """The ModelInferResponse, the labels counted. scores: rounded, or given decimals, each to
    be rounded to as many (as round() does) as it is packed."""
    for label in model.LABELS:
        count = labels.count(label)
        if count:
            PREDICTIONS.labels(served.name, served.version, label).inc(count)
    response = pb2.ModelInferResponse(
        model_name=served.name, model_version=served.version, id=inference.id
    )
    for name in inference.outputs:
        response.outputs.add(name=name, datatype=protocol.OUTPUTS[name], shape=inference.shape)
        response.raw_output_contents.append(protocol.output_bytes(name, labels, scores, decimals))
    return response


def read(request):
    """A ModelInferRequest's protocol.Inference: its one input, from raw_input_contents or typed
    contents, checked as REST checks it."""
    inputs = request.inputs
    if not inputs:
        raise contract.BadInput(f"missing input {protocol.INPUT!r}: send one, BYTES, of shape [N]")
    if len(inputs) > 1:
        names = ", ".join(protocol.quoted(t.name) for t in inputs)
        raise contract.BadInput(
            f"the model takes one input, {protocol.INPUT!r} (BYTES); got {len(inputs)}: {names}"
        )
    tensor, shape = inputs[0], list(inputs[0].shape)
    protocol.check_input(tensor.name, tensor.datatype, shape)
    raw = request.raw_input_contents
    if raw:
        if len(raw) != 1 or tensor.contents.bytes_contents:
            raise contract.BadInput(
                "raw_input_contents must hold one entry, the input's, and the input no contents"
            )
        elements = protocol.split_bytes(raw[0], shape)
    else:
        elements = tensor.contents.bytes_contents
        protocol.check_count(shape, len(elements))
    texts = protocol.texts_of_bytes(elements)
    outputs = protocol.wanted_outputs([output.name for output in request.outputs])
    return protocol.Inference(protocol.batch(texts), shape, outputs, id=request.id)


def certificate(settings):
    """gunicorn's certificate and key, read now: a HUP reads them again."""
    key, chain = (Path(settings[k]).read_bytes() for k in ("TLS_KEY", "TLS_CERT"))
    return grpc.ssl_server_certificate_configuration([(key, chain)])


def serve(settings):
    """Serve until TERM or INT, or until the parent process is gone; return once stopped."""
    door = Door(settings)
    initial = certificate(settings)
    renewed = []  # a HUP's certificate, handed to the next TLS handshake

    def fetch_certificate():
        return renewed.pop() if renewed else None

    credentials = grpc.dynamic_ssl_server_credentials(initial, fetch_certificate)
    limit = settings["MAX_BODY_BYTES"]
    threads = settings["GRPC_THREADS"]
    options = [
        ("grpc.max_receive_message_length", limit),
        ("grpc.max_send_message_length", limit),
        # Several processes share the port only when asked for: one alone must not share it with
        # a stranger (another server left on the same port would take half the calls).
        ("grpc.so_reuseport", int(settings["GRPC_WORKERS"] > 1)),
    ]
    server = grpc.server(
        ThreadPoolExecutor(max_workers=threads, thread_name_prefix="grpc"),
        options=options,
        maximum_concurrent_rpcs=settings["GRPC_MAX_CALLS"],
    )
    pb2_grpc.add_GRPCInferenceServiceServicer_to_server(door, server)
    address = f"{settings['HOST']}:{settings['GRPC_PORT']}"
    try:
        server.add_secure_port(address, credentials)
    except RuntimeError:
        raise RuntimeError(
            f"cannot listen on {address}: is GRPC_PORT {settings['GRPC_PORT']} in use? Set "
            "GRPC_PORT to another, or GRPC_WORKERS=0 for no gRPC door"
        ) from None

    stopping, reloading = threading.Event(), threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    signal.signal(signal.SIGHUP, lambda *_: reloading.set())
    server.start()
    parent = os.getppid()
    log.info(
        "serving gRPC on %s (TLS), %d threads, default model %s",
        address,
        threads,
        door.models.get().version,
    )
    while not stopping.wait(PARENT_CHECK_SECONDS):
        if reloading.is_set():
            reloading.clear()
            door.reload()
            try:
                renewed[:] = [certificate(settings)]
            except OSError as e:
                log.error("keeping the certificate in use: cannot read the new one: %s", e)
        if os.getppid() != parent:
            log.warning("the parent process is gone: stopping")
            break
    server.stop(settings["GRACEFUL_TIMEOUT"]).wait()
    log.info("stopped")


def main(config=None):
    service.setup_logging(log)
    settings = service.load(v2.DOOR, config=config)
    serve(settings)


if __name__ == "__main__":
    try:
        main()
    except (RuntimeError, OSError, model.ArtifactError) as e:
        sys.exit(f"v2.grpc_server: {e}")
