"""The Open Inference Protocol over the contract: a BYTES input of tweets in, labels and scores out.

Each door (rest.py, grpc_server.py) reads its transport into an Inference, asks the contract for
the answers, and writes the outputs back in its form. Errors are the contract's kinds
(contract.PredictionError: 400, 404, 413, 422, 503), which each door says in its own way: the
status and {"error": "..."} over HTTP, a status code and its details over gRPC.

The tweets go to the contract as a batch {index: text}, so an error about tweets names them by
their index in the tensor ("0", "1", ...), the order in which labels and scores come back.
"""

import dataclasses
import json
import struct

import contract
import model
import service

INPUT = "text"  # the one input: the tweets, BYTES (UTF-8 text)
OUTPUTS = {"label": "BYTES", "score": "FP32"}  # "Positive"/"Negative"; the probability of Positive
STABLE = "stable"  # a model name that reaches whatever the stable alias serves
EXTENSIONS = ["binary_tensor_data"]  # Triton's name for the binary tensor extension
SERVER_NAME = "tweet-sentiment"
SERVER_VERSION = json.loads((service.ROOT / "openapi.json").read_text())["info"]["version"]
NAME_SHOWN = 64  # characters of a client's name for a tensor quoted back in an error
LENGTH = struct.Struct("<I")  # a BYTES element's length, before its bytes


@dataclasses.dataclass
class Inference:
    """What a request asks: its tweets {index: text}, the input's shape (the outputs take it), the
    outputs wanted in order, which of them in binary (REST), and its id."""

    tweets: dict
    shape: list
    outputs: list
    binary: dict = dataclasses.field(default_factory=dict)
    id: str = ""


def quoted(name):
    """A client's tensor name, quoted for an error message: ASCII, at most NAME_SHOWN characters."""
    return json.dumps(str(name)[:NAME_SHOWN])


def check_input(name, datatype, shape):
    """BadInput unless a tensor is the input `text`, BYTES, of shape [N] or [N, 1]; return N."""
    if name != INPUT:
        raise contract.BadInput(
            f"unknown input {quoted(name)}: the model takes one input, {INPUT!r} (BYTES)"
        )
    if datatype != "BYTES":
        raise contract.BadInput(
            f"input {INPUT!r} must be BYTES (UTF-8 text), got datatype {quoted(datatype)}"
        )
    dimensions = len(shape) if isinstance(shape, list) else 0
    if (
        not (dimensions == 1 or (dimensions == 2 and type(shape[1]) is int and shape[1] == 1))
        or type(shape[0]) is not int
        or shape[0] < 0
    ):
        raise contract.BadInput(
            f"input {INPUT!r} must have shape [N] or [N, 1], got {json.dumps(shape)[:80]}"
        )
    return shape[0]


def check_count(shape, count):
    """BadInput unless the elements sent are as many as the shape says."""
    if count != shape[0]:
        raise contract.BadInput(
            f"input {INPUT!r} has shape {json.dumps(shape)}, which is {shape[0]} elements, "
            f"but it holds {count}"
        )


def texts_of_bytes(elements):
    """Return the UTF-8 text of BYTES elements; NotUnicode naming the first that is not."""
    try:
        return [element.decode("utf-8") for element in elements]
    except UnicodeDecodeError:
        for index, element in enumerate(elements):
            try:
                element.decode("utf-8")
            except UnicodeDecodeError as e:
                raise contract.NotUnicode(
                    f"input {INPUT!r}: element {index} is not valid UTF-8 "
                    f"({e.reason} at byte {e.start})"
                ) from None
        raise


def split_bytes(buffer, shape):
    """The elements of a BYTES tensor in the protocol's binary form: each a 4-byte little-endian
    length and that many bytes. BadInput unless the buffer holds as many as the shape says."""
    elements, offset, size, count = [], 0, len(buffer), shape[0]
    view = memoryview(buffer)
    while offset < size:
        if len(elements) == count:  # one more: no need to read them all to say so
            raise contract.BadInput(
                f"input {INPUT!r} has shape {json.dumps(shape)}, which is {count} elements, "
                f"but it holds more"
            )
        if offset + 4 > size:
            raise contract.BadInput(
                f"input {INPUT!r}: its binary data ends inside the length of element "
                f"{len(elements)}"
            )
        (length,) = LENGTH.unpack_from(view, offset)
        offset += 4
        if offset + length > size:
            raise contract.BadInput(
                f"input {INPUT!r}: element {len(elements)} says {length} bytes, but only "
                f"{size - offset} are left"
            )
        elements.append(bytes(view[offset : offset + length]))
        offset += length
    check_count(shape, len(elements))
    return elements


def flatten(data):
    """A JSON tensor's elements in row-major order: nested lists flattened, as the spec allows."""
    if not any(isinstance(item, list) for item in data):
        return data
    flat, stack = [], [iter(data)]
    while stack:
        for item in stack[-1]:
            if isinstance(item, list):
                stack.append(iter(item))
                break
            flat.append(item)
        else:
            stack.pop()
    return flat


def batch(texts):
    """The tweets as the contract takes them: {index: text}."""
    if not texts:
        raise contract.BadInput(f"input {INPUT!r} must hold at least one tweet: its shape is [0]")
    return {str(i): text for i, text in enumerate(texts)}


def refuse_surrogates(texts):
    """NotUnicode for a lone surrogate (JSON's "\\ud800" alone), naming the element, as the
    contract refuses them elsewhere; only JSON's escapes make one (UTF-8 bytes cannot)."""
    for i, text in enumerate(texts):
        if isinstance(text, str) and contract.SURROGATE.search(text):
            raise contract.NotUnicode(
                f"input {INPUT!r}: element {i} is not valid Unicode: a lone surrogate "
                "(\\ud800-\\udfff with no partner)"
            )


def wanted_outputs(names):
    """The outputs a request lists, in its order: every output when it lists none. BadInput for
    a name the model has not, or one listed twice."""
    if not names:
        return list(OUTPUTS)
    for name in names:
        if name not in OUTPUTS:
            known = ", ".join(f"{n!r} ({t})" for n, t in OUTPUTS.items())
            raise contract.BadInput(f"unknown output {quoted(name)}; the model's outputs: {known}")
    if len(set(names)) < len(names):
        raise contract.BadInput("each output may be asked for once")
    return list(names)


def scored_in_place(models, name, version, key, tensor, names, data, limits, count=None):
    """The hot paths' step (rest.fast_infer, grpc_server.Door.infer_in_place): a well-formed
    input's tweets read where they are in data (the JSON array of its "data", or with count its
    binary form; or already read, a contract.Scanned) and scored. tensor: the input's (name,
    datatype, shape); names: the outputs asked for. (served, outputs, probabilities, labels), or
    None for any request the doors' other way must read or refuse, naming what is wrong. The
    probabilities are a sequence of floats, not always a list (contract.scanned_scores)."""
    shape = tensor[2]
    try:
        check_input(*tensor)
        outputs = wanted_outputs(names)
        served = resolve(models, name, version, key)
    except contract.PredictionError:
        return None
    scanned = (
        data
        if type(data) is contract.Scanned
        else contract.scanned_tensor(data, limits, served.model, count)
    )
    if scanned is None or len(scanned.texts) != shape[0]:
        return None
    probabilities = contract.scanned_scores(served.model, scanned, packed=True)
    return served, outputs, probabilities, model.labels(probabilities)


def about_input(error):
    """A contract error about tweets, saying which input it means and how it names them."""
    return type(error)(f"input {INPUT!r} (its elements named by index): {error.detail}")


def values_of(predictions, scores):
    """(labels, scores or None) of a contract.predict answer."""
    if not scores:
        return list(predictions.values()), None
    values = predictions.values()
    return [p["label"] for p in values], [p["score"] for p in values]


def label_bytes(labels):
    """Labels as a BYTES tensor's binary form."""
    return contract.write_elements(labels)


def score_bytes(scores, decimals=None):
    """Scores (each first rounded, given decimals) as an FP32 tensor's binary form:
    little-endian, as the protocol says."""
    return contract.pack_floats(scores, decimals)


def output_bytes(name, labels, scores, decimals=None):
    return label_bytes(labels) if name == "label" else score_bytes(scores, decimals)


def resolve(models, name, version, key=None):
    """The registry.Served a request names. `stable` is the stable alias: with no version, the
    canary's share (chosen by key) goes to the candidate, as for our REST routes' default."""
    if name == STABLE:
        return models.route(key) if not version else models.get(None, version)
    return models.get(name, version or None)


def model_metadata(served):
    """A model's metadata as the protocol gives it: name, versions, platform, tensors."""
    tensor = {"datatype": "BYTES", "shape": [-1]}
    return {
        "name": served.name,
        "versions": list(served.entry.versions),
        "platform": served.entry.kind,
        "inputs": [{"name": INPUT, **tensor}],
        "outputs": [{"name": n, "datatype": t, "shape": [-1]} for n, t in OUTPUTS.items()],
    }


def server_metadata():
    return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS}
