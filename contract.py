"""The prediction contract every door calls: the input, the limits, the answer and the error kinds.

A door parses its own protocol, calls predict() with a batch {id: text} and the options, and turns
a PredictionError into its protocol's own error form (an HTTP status and JSON body, a websocket
prediction_error message, ...). The rules live here once.
"""

import functools
import itertools
import json
import re
import struct
from typing import Annotated, NamedTuple

import msgspec

import model

try:  # core/contract_core.c, built where a C compiler is, as the model's core
    from contract_core import (
        count_of,
        pack_floats,
        rounded,
        scan,
        scan_elements,
        scan_strings,
        texts_of,
        unescaped_quotes,
        write_elements,
        write_floats,
        write_labels,
    )
except ImportError:  # without it: every body checked_batch's way, quotes counted in Python
    scan = scan_elements = scan_strings = texts_of = unescaped_quotes = write_labels = None

    def rounded(values, decimals):
        """[round(v, decimals) for v in values]: contract_core's, ten times as fast, the same."""
        return [round(value, decimals) for value in values]

    def write_floats(values, decimals=None):
        """A list of floats (each first rounded, given decimals) as JSON: contract_core's, ten
        times as fast for scores, writes the same."""
        values = values if decimals is None else rounded(values, decimals)
        return json.dumps(values, separators=(",", ":"), allow_nan=False).encode()

    def write_elements(texts):
        """A list of str as a BYTES tensor's binary form: each a 4-byte little-endian length and
        its UTF-8."""
        encoded = [text.encode() for text in texts]
        return b"".join([struct.pack("<I", len(e)) + e for e in encoded])

    def pack_floats(values, decimals=None):
        """A list of floats (each first rounded, given decimals) as FP32, little-endian."""
        values = values if decimals is None else rounded(values, decimals)
        return struct.pack(f"<{len(values)}f", *values)

    def count_of(values, value):
        """values.count(value): contract_core's counts a batch's labels five times as fast."""
        return values.count(value)


# What a request may hold, and so what its answer holds: an answer repeats each id, and with
# explain=true adds each tweet's strongest terms. An id is at most MAX_ID_CHARS (twice a UUID's
# 36 and more than any tweet id or file path a client keys on; the websocket's request_id is
# 128); an explained request at most MAX_EXPLAINED_TWEETS tweets, each explanation at most
# EXPLAIN_TERMS terms a side: before these a 7.9 MB explained body made a 42.9 MB answer and a
# worker 373 MB larger (issue 37), now an explained answer is at most about 1 KB a tweet
# beside its id (docs/operations.md, "Memory budget").
LIMITS = {
    "MAX_TWEETS": 10_000,
    "MAX_TWEET_CHARS": 5_000,
    "MAX_ID_CHARS": 256,
    "MAX_EXPLAINED_TWEETS": 1_000,
}
EXPLAIN_TERMS = 10  # the strongest terms each side of an explanation; the rest are left out
ID_SHOWN = 40  # an error names an over-long id by its start, never whole
OPTIONS = ("scores", "explain")
MAX_IDS_NAMED = 10  # an error names at most this many ids, then says how many more
DECIMALS = 6  # scores and explanation weights in answers
# A lone surrogate (JSON's "\ud800" with no partner) is no character: it cannot be written as
# UTF-8, so an answer, a log line or a Kafka header holding one would fail. Refused on input.
SURROGATE = re.compile("[\ud800-\udfff]")
# \ud or \uD in JSON text, found by a pattern: `"\\ud" in text` is five times as slow on Python
# 3.11 (135 against 29 µs for a 1,000-tweet body).
ESCAPED_SURROGATE = re.compile(r"\\u[dD]")
# Cells a spreadsheet would run as a formula (OWASP, "CSV Injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class PredictionError(Exception):
    """Bad input. status is its kind, the HTTP status the REST door answers with."""

    status, text = 400, "Bad Request"

    def __init__(self, detail):
        super().__init__(detail)
        self.detail = detail

    def as_dict(self):
        """The error as every door reports it: {"error": status, "text": ..., "detail": ...}."""
        return {"error": self.status, "text": self.text, "detail": self.detail}


class BadInput(PredictionError):
    """Not the shape the contract takes: not JSON, not an object, repeated ids, bad options."""


class NotUnicode(BadInput):
    """Text that is no valid Unicode: a lone surrogate."""


class TooLarge(PredictionError):
    """More tweets than the limit."""

    status, text = 413, "Request Entity Too Large"


class UnknownModel(PredictionError):
    """A model name, or a version of one, that the registry does not hold."""

    status, text = 404, "Not Found"


class Unprocessable(PredictionError):
    """Well-formed, but a tweet is not a string or is too long."""

    status, text = 422, "Unprocessable Entity"


class Pairs(list):
    """A JSON object as its (key, value) pairs, so that duplicate ids can be seen."""


def _refuse_constant(name):
    raise ValueError(f"{name} is not valid JSON")


# Made once: json.loads with arguments builds a new decoder for every call.
DECODER = json.JSONDecoder(object_pairs_hook=Pairs, parse_constant=_refuse_constant)


def parse_json(text, what="the body"):
    """Parse JSON text, objects as Pairs; BadInput naming what was not valid JSON, or text that
    is not valid Unicode."""
    try:
        document = DECODER.decode(text)
    except ValueError as e:
        raise BadInput(f"{what} is not valid JSON: {e}") from None
    except RecursionError:
        raise BadInput(f"{what} is not valid JSON: it is nested too deeply") from None
    if "\\u" in text and ESCAPED_SURROGATE.search(text):  # only an escape makes a lone one
        check_unicode(document, what)
    return document


def check_unicode(document, what="the body"):
    """BadInput if a string of a parsed document holds a lone surrogate, naming its id."""
    stack = [(None, document)]
    while stack:
        where, value = stack.pop()
        if isinstance(value, str):
            if SURROGATE.search(value):
                raise NotUnicode(
                    f"{what} is not valid Unicode: a lone surrogate (\\ud800-\\udfff with no "
                    f"partner) in {'an id' if where is None else 'id ' + name_ids([where])}"
                )
        elif isinstance(value, Pairs):
            for key, item in value:
                stack.append((None, key))
                stack.append((key if value is document else where, item))
        elif isinstance(value, dict):
            stack.extend((None, key) for key in value)
            stack.extend((key if value is document else where, v) for key, v in value.items())
        elif isinstance(value, list):
            stack.extend((where, item) for item in value)


# A request body's batch, parsed and checked in one pass by msgspec's decoder (C): an object of
# strings, each id and tweet within its length (msgspec counts characters as len() does). About a
# third of what json.loads into Pairs, then batch() and check(), cost (docs/performance.md). What
# it does not take, it leaves to those, which name what is wrong.
ESCAPES = re.compile(rb'\\[\\"]')  # the escapes of a quote or a backslash, read from the left


@functools.cache
def batch_decoder(id_chars, tweet_chars):
    """A decoder of {id: tweet} for these limits, made once."""
    ids = Annotated[str, msgspec.Meta(max_length=id_chars)]
    return msgspec.json.Decoder(dict[ids, Annotated[str, msgspec.Meta(max_length=tweet_chars)]])


def checked_batch(data, limits):
    """Return the tweets {id: text} of a JSON body (bytes) that batch(parse_json()) takes and that
    passes check(); None for any other, for the door to parse as before and name what is wrong.

    msgspec's decoder, as json's with a plain dict, keeps the last of a repeated id: the object's
    members are counted in the text (members()) and must be as many as the ids."""
    decoder = batch_decoder(
        limits.get("MAX_ID_CHARS", LIMITS["MAX_ID_CHARS"]), limits["MAX_TWEET_CHARS"]
    )
    try:
        tweets = decoder.decode(data)
    except (msgspec.DecodeError, ValueError):  # not JSON, not UTF-8, not {id: tweet}, a limit
        return None
    if 0 < len(tweets) <= limits["MAX_TWEETS"] and members(data) == len(tweets):
        return tweets
    return None


class Scanned(NamedTuple):
    """A body's tweets as contract_core.scan read them. ids and tweets: where each id and tweet
    is in the body (a start and a length each, packed); texts: the tweets as str, or None where
    the model's core reads one in the body (ASCII, no escape)."""

    data: bytes
    ids: bytes
    tweets: bytes
    texts: list


def scanned_batch(data, limits, classifier=None):
    """A predict body whose answer {id: label} contract_core can write (an object of strings,
    each id printable ASCII with no quote or backslash, the limits met, every id once), as
    Scanned, its tweets left in the body where the classifier's compiled core can read them
    there; None for any other body, or without contract_core: checked_batch's way then. About
    half of what checked_batch and writing the answer from a dict cost (docs/performance.md)."""
    if scan is None:
        return None
    found = scan(
        data,
        limits.get("MAX_ID_CHARS", LIMITS["MAX_ID_CHARS"]),
        limits["MAX_TWEET_CHARS"],
        limits["MAX_TWEETS"],
        reads_in_place(classifier),
    )
    return None if found is None else Scanned(data, *found)


def reads_in_place(classifier):
    """Whether a classifier scores tweets where they are in a body: model.Model's compiled core
    (a shadowed model, or the 2020 one, is given each tweet as a str)."""
    return type(classifier) is model.Model and classifier.core is not None


def scanned_tensor(data, limits, classifier, count=None):
    """The tweets of a V2 BYTES input as Scanned (ids None; their indices name them), read in
    place as scanned_batch reads a body's: data is the JSON array of its "data" or, with count,
    its binary form (count elements, each a 4-byte little-endian length and UTF-8 bytes). None
    for any input that predict() would not take as it stands (v2/ names what is wrong)."""
    if scan_strings is None:
        return None
    in_place, chars = reads_in_place(classifier), limits["MAX_TWEET_CHARS"]
    if count is None:
        found = scan_strings(data, chars, limits["MAX_TWEETS"], in_place)
    elif 0 < count <= limits["MAX_TWEETS"]:
        found = scan_elements(data, count, chars, in_place)
    else:
        found = None
    return None if found is None else Scanned(data, None, *found)


def scanned_array(body, start, limits):
    """The tweets of a V2 BYTES input's JSON "data" array that starts at offset start of a
    body, whatever follows it, read as scanned_tensor reads them but left in place for any
    classifier (scanned_scores gives one that does not read them there their texts): (Scanned,
    the offset just past the array), or None where scanned_tensor would give None."""
    if scan_strings is None:
        return None
    found = scan_strings(body, limits["MAX_TWEET_CHARS"], limits["MAX_TWEETS"], True, start)
    return None if found is None else (Scanned(body, None, found[0], found[1]), found[2])


def scanned_scores(classifier, scanned, packed=False):
    """The probability of Positive for each of a Scanned batch's tweets: a list; or packed, a
    sequence of floats, a memoryview of doubles where the model's core gives one (write_floats
    and pack_floats read it as it is)."""
    if reads_in_place(classifier):  # None for a tweet left in place
        return classifier.scores_in(scanned.data, scanned.tweets, scanned.texts, packed)
    texts = scanned.texts
    if None in texts:  # left in place (scanned_array, contract_core's): ASCII, no escape
        texts = texts_of(scanned.data, scanned.tweets, texts)
    return classifier.scores(texts)


def predict_scanned(classifier, scanned):
    """predict()'s answer {id: label} for a Scanned batch, as the JSON bytes (and newline) that
    json.dumps(answer, separators=(",", ":")) gives, and the labels."""
    labels = model.labels(scanned_scores(classifier, scanned))
    return write_labels(scanned.data, scanned.ids, labels), labels


def members(data):
    """The members of a JSON object of strings (valid JSON text, bytes): 4 quotes each that no
    backslash escapes."""
    return (quotes(data) if unescaped_quotes is None else unescaped_quotes(data)) // 4


def quotes(data):
    """The quotes of valid JSON text (bytes) that no backslash escapes: contract_core's, in
    Python. A backslash is in a string only, where it starts an escape of one character: read
    from the left, the escapes ESCAPES finds are the text's own."""
    count = data.count(b'"')
    if b"\\" in data:
        count -= ESCAPES.findall(data).count(b'\\"')
    return count


def batch(document, what="the body"):
    """Return tweets {id: text} from a parsed JSON object (Pairs) or a decoded map (dict).

    BadInput unless it is a non-empty object, each id appearing once.
    """
    if not isinstance(document, Pairs | dict):
        shape = '{"id": "tweet text", ...}'
        raise BadInput(f"{what} must be a JSON object of {shape}, got {json_type(document)}")
    if not document:
        raise BadInput(f'{what} must hold at least one tweet: {{"id": "tweet text", ...}}')
    tweets = dict(document)
    if len(tweets) < len(document):
        seen, repeated = set(), []
        for key, _ in document:
            if key in seen and key not in repeated:
                repeated.append(key)
            seen.add(key)
        raise BadInput(f"each id must appear once; repeated: {name_ids(repeated)}")
    return tweets


def check(tweets, limits):
    """Enforce the count limit (413), then the ids' length, string values and the length limit
    (422)."""
    if len(tweets) > limits["MAX_TWEETS"]:
        raise TooLarge(f"at most {limits['MAX_TWEETS']} tweets per request, got {len(tweets)}")
    check_ids(tweets, limits.get("MAX_ID_CHARS", LIMITS["MAX_ID_CHARS"]))
    texts = tweets.values()
    try:
        "".join(texts)  # in C: a TypeError names no id, so the ids are looked for only then
    except TypeError:
        wrong = {i: json_type(t) for i, t in tweets.items() if not isinstance(t, str)}
        kinds = sorted(set(wrong.values()))
        raise Unprocessable(
            f"each tweet must be a string; not a string ({', '.join(kinds)}): {name_ids(wrong)}"
        ) from None
    limit = limits["MAX_TWEET_CHARS"]
    if max(map(len, texts), default=0) > limit:
        long = [i for i, t in tweets.items() if len(t) > limit]
        raise Unprocessable(f"each tweet must be at most {limit} characters: {name_ids(long)}")


def check_ids(tweets, limit):
    """422 if an id is longer than limit characters, naming the start of each such id."""
    try:
        longest = max(map(len, tweets), default=0)  # in C: ids are strings on every door
    except TypeError:
        longest = max((len(i) for i in tweets if isinstance(i, str)), default=0)
    if longest > limit:
        long = [i[:ID_SHOWN] + "..." for i in tweets if isinstance(i, str) and len(i) > limit]
        raise Unprocessable(f"each id must be at most {limit} characters: {name_ids(long)}")


def check_part(tweets, limits, seen, before, most, what="job"):
    """Check one part of a batch that arrives in parts (a job of up to `most` tweets, of which
    `before` came in earlier parts): the count (413), ids not in `seen`, the ids of earlier parts
    (400), then the values as check() does (422). Adds this part's ids to `seen`."""
    if before + len(tweets) > most:
        raise TooLarge(f"at most {most} tweets per {what}, got more")
    repeated = [i for i in tweets if i in seen]
    if repeated:
        raise BadInput(f"each id must appear once; repeated: {name_ids(repeated)}")
    check(tweets, {**limits, "MAX_TWEETS": len(tweets)})
    seen.update(tweets)


def partition(tweets, limits):
    """Split a batch into the tweets that pass the checks and {id: error} for those that do not.

    For doors that label what they can and report the rest row by row (files, Spark): the batch
    is checked whole, and only when that fails is each tweet checked on its own.
    """
    try:
        check(tweets, {**limits, "MAX_TWEETS": len(tweets)})
        return tweets, {}
    except PredictionError:
        good, refused = {}, {}
        for i, text in tweets.items():
            try:
                check({i: text}, limits)
                good[i] = text
            except PredictionError as e:
                refused[i] = e
        return good, refused


def predict(classifier, tweets, limits, scores=False, explain=False, checked=False):
    """Label a batch {id: text}, keeping ids and order: {id: label}, or with options
    {id: {"label", "score"?, "explanation"?}}. PredictionError for bad input; with explain, more
    than MAX_EXPLAINED_TWEETS is 413. checked: the batch is checked_batch()'s, which check() would
    pass: not checked again."""
    if not checked:
        check(tweets, limits)
    most = limits.get("MAX_EXPLAINED_TWEETS", LIMITS["MAX_EXPLAINED_TWEETS"])
    if explain and len(tweets) > most:
        raise TooLarge(
            f"at most {most} tweets per request with explain, got {len(tweets)}: send the rest "
            "in more requests, or ask without explain"
        )
    texts = list(tweets.values())
    probabilities = classifier.scores(texts)
    labels = model.labels(probabilities)
    if not (scores or explain):
        # The ids' table copied whole, then each one's label set: a fifth faster than dict(zip()).
        answer = dict(tweets)
        answer.update(zip(tweets, labels, strict=True))
        return answer
    answer = {}
    rounded_scores = rounded(probabilities, DECIMALS) if scores else probabilities
    for i, text, score, label in zip(tweets, texts, rounded_scores, labels, strict=True):
        answer[i] = {"label": label}
        if scores:
            answer[i]["score"] = score
        if explain:
            # A term whose pull rounds to 0 pulls neither way at the answer's precision: left out;
            # of the others, the EXPLAIN_TERMS strongest (the model ranks them).
            answer[i]["explanation"] = {
                side: [
                    {"term": t, "weight": w}
                    for t, w in itertools.islice(
                        ((t, round(w, DECIMALS)) for t, w in pulls if round(w, DECIMALS)),
                        EXPLAIN_TERMS,
                    )
                ]
                for side, pulls in classifier.explain(text).items()
            }
    return answer


def labels_of(answer):
    """Return the labels of an answer, whichever shape predict() gave it."""
    values = list(answer.values())
    if not values or isinstance(values[0], str):  # {id: label}: the values are the labels
        return values
    return [a["label"] for a in values]


def metadata(served, limits, max_bytes):
    """Describe a model and the contract: what /api/v1/models/<name> answers and other doors
    serve. served: a registry.Served."""
    labels = list(model.LABELS)
    return {
        "name": served.name,
        "display_name": served.entry.display_name,
        "description": served.entry.description,
        "kind": served.entry.kind,
        "version": served.version,
        "versions": list(served.entry.versions),
        "labels": labels,
        "limits": {
            "max_tweets": limits["MAX_TWEETS"],
            "max_tweet_chars": limits["MAX_TWEET_CHARS"],
            "max_body_bytes": max_bytes,
        },
        "options": list(OPTIONS),
        "input": {
            "type": "object",
            "description": "tweets by id: {id: text}, answered in the same order",
            "minProperties": 1,
            "maxProperties": limits["MAX_TWEETS"],
            "additionalProperties": {"type": "string", "maxLength": limits["MAX_TWEET_CHARS"]},
        },
        "output": {
            "type": "object",
            "description": "labels by id, in the input's order; with options, objects",
            "additionalProperties": {
                "oneOf": [
                    {"enum": labels},
                    {
                        "type": "object",
                        "required": ["label"],
                        "properties": {
                            "label": {"enum": labels},
                            "score": {"type": "number", "minimum": 0, "maximum": 1},
                            "explanation": {"type": "object"},
                        },
                    },
                ]
            },
        },
        **served.model.evaluation,
    }


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
    if isinstance(value, bytes):
        return "binary"
    return "object" if isinstance(value, Pairs | dict) else "array"


def csv_cell(text):
    """Return text as a CSV cell a spreadsheet shows and never runs: a leading ' before =, +, -,
    @, a tab or a carriage return (OWASP's advice against formula injection), spaces and line
    breaks before them included (some spreadsheets pass over them)."""
    return "'" + text if text.lstrip(" \n").startswith(FORMULA_STARTS) else text


def name_ids(ids):
    """Name the first ids, and how many more there are."""
    ids = list(ids)
    named = ", ".join(json.dumps(i, ensure_ascii=False) for i in ids[:MAX_IDS_NAMED])
    more = len(ids) - MAX_IDS_NAMED
    return named + (f" and {more} more" if more > 0 else "")
