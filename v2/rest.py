"""The Open Inference Protocol's REST routes, /v2/..., on the HTTPS server (api.create_app).

JSON as the protocol gives it, and Triton's binary tensor extension both ways: a request whose
`Inference-Header-Content-Length` header says how much of the body is JSON carries each input's
data after it (tritonclient's default for BYTES); an output asked for with "binary_data" (or every
output, with the request's "binary_data_output") comes back after the JSON the same way.
Every error is {"error": "..."} with its status, as the protocol says, 401 included.
"""

import json
import logging
import re

import msgspec
from flask import Blueprint, Response, current_app, request
from werkzeug.exceptions import HTTPException, UnsupportedMediaType

import contract
from v2 import protocol

HEADER_LENGTH = "Inference-Header-Content-Length"
MODEL = "/models/<name>"
VERSION = "/models/<name>/versions/<version>"
log = logging.getLogger("api")
# Made once: json.loads with arguments builds a decoder for every call. NaN and Infinity are no
# JSON, as the contract says.
DECODER = json.JSONDecoder(parse_constant=contract._refuse_constant)
ENCODE = json.JSONEncoder(separators=(",", ":")).encode
ENCODER = msgspec.json.Encoder()


def routes(answer, require_token, read_body):
    """The blueprint. answer(tweets, scores=, name=, version=, request_id=) returns a batch's
    predictions and the registry.Served that answered, counted as REST counts them (api.py's
    ws_answer; name None is the default, the stable alias); require_token() refuses a request
    without a valid Bearer token; read_body(environ, limit) reads a body within the limits."""
    v2 = Blueprint("v2", __name__, url_prefix="/v2")

    @v2.get("/health/live")
    def live():
        return {"live": True}

    @v2.get("/health/ready")
    def ready():
        """Every model the server must serve is loaded (as /ready): a probe's question."""
        models = current_app.extensions["registry"]
        is_ready = models.ready()[0]
        if is_ready:
            return {"ready": True}
        failed = [f"{n}: {e.error}" for n, e in models.entries.items() if e.error is not None]
        return {"ready": False, "error": "; ".join(failed) or "no model is loaded"}, 503

    @v2.get("")
    def server_metadata():
        require_token()
        return protocol.server_metadata()

    def model_ready(name, version=None):
        """The model is loaded and answers: 200 if so, 503 (ready false) if it failed to load."""
        models = current_app.extensions["registry"]
        try:
            served = protocol.resolve(models, name, version)
        except contract.PredictionError as e:
            if e.status != 503:
                raise
            return {"name": name, "ready": False, "error": e.detail}, 503
        return {"name": served.name, "ready": True}

    def model_metadata(name, version=None):
        require_token()
        models = current_app.extensions["registry"]
        return protocol.model_metadata(protocol.resolve(models, name, version))

    def infer(name, version=None):
        """Label the tweets of the input `text`; answer the outputs asked for."""
        require_token()
        environ = request.environ
        encoding = environ.get("HTTP_CONTENT_ENCODING", "identity")
        if encoding.lower() != "identity":
            raise UnsupportedMediaType(
                f"Content-Encoding {encoding[:40]!r} is not accepted: send the body uncompressed"
            )
        body = read_body(environ, current_app.config["MAX_CONTENT_LENGTH"])
        inference = parse(body, environ.get("HTTP_INFERENCE_HEADER_CONTENT_LENGTH"))
        environ["api.tweets"] = len(inference.tweets)
        try:
            predictions, served = answer(
                inference.tweets,
                scores="score" in inference.outputs,
                name=None if name == protocol.STABLE else name,
                version=version,
                request_id=inference.id or environ.get("api.request_id"),
            )
        except (contract.TooLarge, contract.Unprocessable) as e:
            raise protocol.about_input(e) from None
        labels, scores = protocol.values_of(predictions, "score" in inference.outputs)
        body, header_length = encode(inference, served, labels, scores)
        return Response(body, headers=answer_headers(served, header_length))

    for prefix in (MODEL, VERSION):
        v2.add_url_rule(prefix, view_func=model_metadata, endpoint=f"metadata{prefix}")
        v2.add_url_rule(f"{prefix}/ready", view_func=model_ready, endpoint=f"ready{prefix}")
        v2.add_url_rule(
            f"{prefix}/infer", view_func=infer, methods=["POST"], endpoint=f"infer{prefix}"
        )
    v2.register_error_handler(contract.PredictionError, prediction_error)
    v2.register_error_handler(HTTPException, http_error)
    v2.register_error_handler(Exception, unexpected_error)
    return v2


# Requests.


# The hot path (api.FastPredict): an inference request of the fields parse() reads and no other,
# each of the type it wants, read by msgspec (C) in one pass, its tweets by contract_core where
# they are (the JSON's "data", or the binary data after the JSON), left there for the model's
# core. parse() and the Flask view take every request this does not (an unknown field, nested
# data, a parameter of an extension: forbid_unknown_fields), and name what is wrong;
# tests/test_v2.py holds both ways' answers to the same bytes.


class TensorParameters(msgspec.Struct, forbid_unknown_fields=True):
    binary_data_size: int | None = None


class Tensor(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    datatype: str
    shape: list[int]
    data: msgspec.Raw = msgspec.Raw()
    parameters: TensorParameters = msgspec.field(default_factory=TensorParameters)


class OutputParameters(msgspec.Struct, forbid_unknown_fields=True):
    binary_data: bool | msgspec.UnsetType = msgspec.UNSET


class Output(msgspec.Struct, forbid_unknown_fields=True):
    name: str
    parameters: OutputParameters = msgspec.field(default_factory=OutputParameters)


class Parameters(msgspec.Struct, forbid_unknown_fields=True):
    binary_data_output: bool = False


class Request(msgspec.Struct, forbid_unknown_fields=True):
    inputs: list[Tensor]
    id: str = ""
    parameters: Parameters = msgspec.field(default_factory=Parameters)
    outputs: list[Output] = []


REQUEST = msgspec.json.Decoder(Request)


def fast_infer(body, header_length, name, version, models, request_id, limits):
    """Answer a well-formed inference request as infer() answers it: (the answer's bytes, its
    headers, the registry.Served that answered, the labels). None for any request that infer()
    must answer (an error among them, named there)."""
    head = read_head(body, header_length, limits)
    if head is None:
        return None
    document, tensor, binary = head
    size = tensor.parameters.binary_data_size
    data = tensor.data if size is None else binary  # or the tweets, already read
    scored = protocol.scored_in_place(
        models,
        name,
        version,
        document.id or request_id,
        (tensor.name, tensor.datatype, tensor.shape),
        [output.name for output in document.outputs],
        data,
        limits,
        None if size is None else tensor.shape[0],
    )
    if scored is None:
        return None
    served, outputs, probabilities, labels = scored
    default = document.parameters.binary_data_output
    binary_asked = {
        output.name: default if output.parameters.binary_data is msgspec.UNSET
        else output.parameters.binary_data
        for output in document.outputs
    }  # fmt: skip
    wanted = {output: binary_asked.get(output, default) for output in outputs}
    inference = protocol.Inference(None, tensor.shape, outputs, wanted, document.id)
    answer, length = encode(inference, served, labels, probabilities, contract.DECIMALS)
    return answer, answer_headers(served, length, len(answer)), served, labels


def read_head(body, header_length, limits):
    """(the Request, its one input Tensor, the binary data after the JSON) for a request the hot
    path takes as far as its JSON goes; None for any other. A JSON request's tweets are read
    where they are (without_data): its Tensor's data is then a contract.Scanned."""
    binary, scanned = b"", None
    if header_length is None:
        found = without_data(body, limits)
        if found is not None:
            body, scanned = found  # the JSON with [] for the tweets, and the tweets
    else:
        if not (header_length.isascii() and header_length.isdigit()):
            return None
        length = int(header_length)
        if length > len(body):
            return None
        body, binary = memoryview(body)[:length], memoryview(body)[length:]
    try:
        document = REQUEST.decode(body)
    except (msgspec.DecodeError, ValueError):
        return None
    if len(document.inputs) != 1 or (document.id and contract.SURROGATE.search(document.id)):
        return None
    tensor = document.inputs[0]
    size = tensor.parameters.binary_data_size
    if (size is None and binary) or (size is not None and size != len(binary)):
        return None
    if scanned is not None:  # the [] in its place is the input's data (without_data says why)
        if bytes(tensor.data) != b"[]":
            return None
        tensor.data = scanned
    return document, tensor, binary


# A JSON request's "data" key: the first in the body, followed by a colon.
DATA_KEY, COLON = b'"data"', re.compile(rb"[ \t\n\r]*:")


def without_data(body, limits):
    """(the body with its input's "data" array as [], the array's tweets as contract.Scanned):
    msgspec does not walk 100 KB of tweets that contract_core reads anyway, ~20 µs of a
    1,000-tweet request. None where it cannot tell that the array is the input's "data".

    It can tell where no backslash is in the rest of the body: nothing is escaped, so each
    '"data"' is a string, and the first followed by a colon the first key "data" (there is no
    other way to write it); and where no '"data"' follows the array: no other key "data".
    read_head's Request, which refuses every field it does not know, takes that key only in
    its one input. Replacing a valid array by another leaves valid JSON valid and invalid
    invalid, with the same meaning but for the array."""
    key, colon = -1, None
    while colon is None:  # past a value "data"
        key = body.find(DATA_KEY, key + 1)
        if key < 0 or body.find(b"\\", 0, key) >= 0:
            return None
        colon = COLON.match(body, key + len(DATA_KEY))
    start = colon.end()
    found = contract.scanned_array(body, start, limits)
    if found is None:
        return None
    scanned, end = found
    if body.find(b"\\", end) >= 0 or body.find(DATA_KEY, end) >= 0:
        return None
    return b"".join((body[:start], b"[]", body[end:])), scanned


def parse(body, header_length):
    """Read an inference request, JSON alone or JSON and binary data: a protocol.Inference.

    BadInput for anything the protocol does not allow or the model does not take, naming it."""
    binary = b""
    if header_length is not None:
        if not header_length.isdigit() or int(header_length) > len(body):
            raise contract.BadInput(
                f"{HEADER_LENGTH} must be the JSON's length in bytes, at most the body's "
                f"{len(body)}; got {header_length[:20]!r}"
            )
        body, binary = body[: int(header_length)], memoryview(body)[int(header_length) :]
    try:
        text = body.decode("utf-8")
        document = DECODER.decode(text)
    except UnicodeDecodeError as e:
        raise contract.BadInput(
            f"the inference request is not valid UTF-8: {e.reason} at byte {e.start}"
        ) from None
    except ValueError as e:
        raise contract.BadInput(f"the inference request is not valid JSON: {e}") from None
    except RecursionError:
        raise contract.BadInput("the inference request is nested too deeply") from None
    if not isinstance(document, dict):
        raise contract.BadInput(
            f"the inference request must be a JSON object, got {contract.json_type(document)}"
        )
    request_id = field(document, "id", str, "")
    if contract.SURROGATE.search(request_id):
        raise contract.NotUnicode("the request's id is not valid Unicode: a lone surrogate")
    parameters = field(document, "parameters", dict, {})
    binary_default = field(parameters, "binary_data_output", bool, False, "parameter")
    tensor, size = the_input(field(document, "inputs", list, None))
    if size is None:
        if binary:
            raise contract.BadInput(
                f"the body has {len(binary)} bytes after the JSON, but no input has "
                '"binary_data_size"'
            )
        data = tensor.get("data")
        if not isinstance(data, list):
            raise contract.BadInput(
                f'input {protocol.INPUT!r} needs "data", a list of strings (or "parameters": '
                '{"binary_data_size": ...} and its bytes after the JSON)'
            )
        texts = protocol.flatten(data)
        protocol.check_count(tensor["shape"], len(texts))
        if "\\u" in text and contract.ESCAPED_SURROGATE.search(text):  # only \\ud... makes one
            protocol.refuse_surrogates(texts)
    else:
        if size != len(binary):
            raise contract.BadInput(
                f'input {protocol.INPUT!r} says "binary_data_size" {size}, but {len(binary)} '
                "bytes follow the JSON"
            )
        texts = protocol.texts_of_bytes(protocol.split_bytes(binary, tensor["shape"]))
    asked = field(document, "outputs", list, [])
    names, binary_asked = [], {}
    for output in asked:
        if not isinstance(output, dict) or not isinstance(output.get("name"), str):
            raise contract.BadInput('each of "outputs" must be an object with a "name"')
        names.append(output["name"])
        options = field(output, "parameters", dict, {})
        binary_asked[output["name"]] = field(
            options, "binary_data", bool, binary_default, "parameter"
        )
    outputs = protocol.wanted_outputs(names)
    binary = {name: binary_asked.get(name, binary_default) for name in outputs}
    return protocol.Inference(protocol.batch(texts), tensor["shape"], outputs, binary, request_id)


def the_input(inputs):
    """The one input, checked: (its JSON object, its binary_data_size or None)."""
    if not inputs:
        raise contract.BadInput(
            f'missing input {protocol.INPUT!r}: "inputs" must hold one, BYTES, of shape [N]'
        )
    if len(inputs) > 1 or not isinstance(inputs[0], dict):
        names = ", ".join(protocol.quoted(t.get("name")) for t in inputs if isinstance(t, dict))
        raise contract.BadInput(
            f"the model takes one input, {protocol.INPUT!r} (BYTES); got {len(inputs)}: {names}"
        )
    tensor = inputs[0]
    protocol.check_input(tensor.get("name"), tensor.get("datatype"), tensor.get("shape"))
    size = field(field(tensor, "parameters", dict, {}), "binary_data_size", int, None, "parameter")
    if size is not None and size < 0:
        raise contract.BadInput('"binary_data_size" must be a whole number of bytes')
    return tensor, size


def field(document, name, kind, default, what="field"):
    """A field of a JSON object, of the kind expected, or the default when it is absent."""
    value = document.get(name, default)
    if value is default:
        return default
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        wanted = {str: "a string", dict: "an object", list: "a list", bool: "true or false"}
        raise contract.BadInput(
            f"{what} {name!r} must be {wanted.get(kind, 'a whole number')}, "
            f"got {contract.json_type(value)}"
        )
    return value


# Answers.


def encode(inference, served, labels, scores, decimals=None):
    """The answer's body, and the length of its JSON when binary outputs follow it (else None).
    scores: rounded, or given decimals, each to be rounded to as many (as round() does) as it is
    written."""
    header = {"model_name": served.name, "model_version": served.version}
    if inference.id:
        header["id"] = inference.id
    tensors, parts = [], []
    for name in inference.outputs:
        tensor = {"name": name, "datatype": protocol.OUTPUTS[name], "shape": inference.shape}
        if inference.binary[name]:
            data = protocol.output_bytes(name, labels, scores, decimals)
            tensor["parameters"] = {"binary_data_size": len(data)}
            parts.append(data)
        else:
            tensor["data"] = labels if name == "label" else scores
        tensors.append(tensor)
    header["outputs"] = tensors
    text = written(header, inference.id, decimals)
    if text is None:
        if decimals is not None:
            for tensor in tensors:
                if tensor["datatype"] == "FP32" and "data" in tensor:
                    tensor["data"] = contract.rounded(scores, decimals)
        text = ENCODE(header).encode()
    if not parts:
        return text + b"\n", None  # a newline, as every JSON answer of the server ends
    return b"".join([text, *parts]), len(text)


def written(header, request_id, decimals=None):
    """An answer's JSON as ENCODE writes it (its scores rounded, given decimals), by msgspec and
    contract.write_floats, ten times as fast; None where they may write it otherwise: a request
    id of other than printable ASCII (ENCODE escapes all else, msgspec some), a character ENCODE
    escapes elsewhere. msgspec writes the scores as json does but under 0.0001 (1e-6 for
    1e-06): write_floats writes them."""
    if request_id and not (request_id.isascii() and request_id.isprintable()):
        return None
    outputs = [
        {**tensor, "data": msgspec.Raw(contract.write_floats(tensor["data"], decimals))}
        if tensor["datatype"] == "FP32" and "data" in tensor
        else tensor
        for tensor in header["outputs"]
    ]
    text = ENCODER.encode({**header, "outputs": outputs})
    return text if text.isascii() and b"\x7f" not in text else None


def answer_headers(served, header_length, length=None):
    """An answer's headers: its type (binary data after the JSON: its length too), its length
    when known, and which model and version answered."""
    headers = [("Content-Type", "application/json")]
    if length is not None:
        headers.append(("Content-Length", str(length)))
    if header_length is not None:
        headers[0] = ("Content-Type", "application/octet-stream")
        headers.append((HEADER_LENGTH, str(header_length)))
    return [*headers, ("X-Model-Name", served.name), ("X-Model-Version", served.version)]


# Errors: {"error": "..."} with the status, as the protocol says.


def error_response(status, message, headers=()):
    body = ENCODE({"error": message}) + "\n"
    response = Response(body, status, mimetype="application/json")
    for name, value in headers:
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def prediction_error(error):
    return error_response(error.status, error.detail)


def http_error(error):
    if error.code is None or error.code < 400:
        return error  # a redirect, not an error
    return error_response(error.code, error.description, error.get_headers())


def unexpected_error(error):
    request_id = request.environ.get("api.request_id", "-")
    rule = request.url_rule.rule if request.url_rule else "<unmatched>"
    log.error("unexpected error", exc_info=error, extra={"request_id": request_id, "route": rule})
    return error_response(500, f"an unexpected error; request id {request_id}")
