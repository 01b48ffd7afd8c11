"""The prediction contract on its own: input, limits, answers and error kinds."""

import gc
import json
import math
import os
import random
import shutil
import struct
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import contract
import model
import registry
from v2 import protocol

try:
    import contract_core
except ImportError:  # the tests that need it skip
    contract_core = None

LIMITS = {"MAX_TWEETS": 3, "MAX_TWEET_CHARS": 10}


def parsed(text):
    return contract.batch(contract.parse_json(text))


@pytest.mark.parametrize(
    "text, kind, status, detail",
    [
        ("{bad", contract.BadInput, 400, "the body is not valid JSON: Expecting property name"),
        ('{"1": NaN}', contract.BadInput, 400, "NaN is not valid JSON"),
        ("[" * 100_000, contract.BadInput, 400, "nested too deeply"),
        (
            '["a"]',
            contract.BadInput,
            400,
            'must be a JSON object of {"id": "tweet text", ...}, got array',
        ),
        ('"a"', contract.BadInput, 400, "got string"),
        ("null", contract.BadInput, 400, "got null"),
        ("{}", contract.BadInput, 400, "must hold at least one tweet"),
        ('{"1": "a", "1": "b", "2": "c"}', contract.BadInput, 400, 'repeated: "1"'),
        (
            '{"1": "a", "2": "b", "3": "c", "4": "d"}',
            contract.TooLarge,
            413,
            "at most 3 tweets per request, got 4",
        ),
        (
            '{"1": 7, "2": null, "3": "ok"}',
            contract.Unprocessable,
            422,
            'not a string (null, number): "1", "2"',
        ),
        ('{"1": {"text": "a"}}', contract.Unprocessable, 422, 'not a string (object): "1"'),
        (
            '{"1": "x", "2": "eleven char"}',
            contract.Unprocessable,
            422,
            'at most 10 characters: "2"',
        ),
    ],
)
def test_bad_input_raises_one_error_type_with_its_kind(text, kind, status, detail):
    with pytest.raises(kind) as caught:
        contract.predict(model.default_model(), parsed(text), LIMITS)
    assert isinstance(caught.value, contract.PredictionError)
    assert caught.value.status == status
    assert detail in caught.value.detail


@pytest.mark.parametrize(
    "text, where",
    [
        ('{"1": "ok", "2": "\\ud800 alone"}', 'id "2"'),
        ('{"1": "a lone low \\uDFFF"}', 'id "1"'),
        ('{"\\uDbff": "a lone high in an id"}', "an id"),
        ('{"1": "paired, then alone: \\ud83d\\ude00\\ud83d"}', 'id "1"'),
        ('{"1": ["nested", {"x": "\\udc00"}]}', 'id "1"'),
        ('{"1": "an escaped backslash, then a lone one: \\\\\\ud800"}', 'id "1"'),
    ],
)
def test_a_lone_surrogate_escape_is_refused_however_it_is_written(text, where):
    with pytest.raises(contract.NotUnicode, match=f"a lone surrogate .* in {where}$"):
        contract.parse_json(text)


def test_paired_and_literal_escapes_are_not_lone_surrogates():
    text = '{"1": "\\ud83d\\ude00 and \\uD83D\\uDE00", "2": "not an escape: \\\\ud800", '
    text += '"3": "\\u00e9"}'
    assert contract.parse_json(text) == [
        ("1", "😀 and 😀"),
        ("2", "not an escape: \\ud800"),
        ("3", "é"),
    ]


def test_errors_name_at_most_ten_ids_then_count_the_rest():
    tweets = {str(i): i for i in range(14)}
    with pytest.raises(contract.Unprocessable, match='"9" and 4 more$'):
        contract.check(tweets, {"MAX_TWEETS": 100, "MAX_TWEET_CHARS": 10})


def test_what_names_the_part_that_was_wrong():
    with pytest.raises(contract.BadInput, match='^field "tweets" must be a JSON object'):
        contract.batch(contract.parse_json("[1]"), 'field "tweets"')


@pytest.mark.parametrize(
    "options, shape",
    [
        ({}, lambda a: isinstance(a, str)),
        ({"scores": True}, lambda a: set(a) == {"label", "score"}),
        ({"explain": True}, lambda a: set(a) == {"label", "explanation"}),
        ({"scores": True, "explain": True}, lambda a: set(a) == {"label", "score", "explanation"}),
    ],
)
def test_answer_keeps_ids_and_order_in_the_rest_shape(shipped, options, shape):
    tweets = {"z": "I love it", "a": "not good at all", "m": ""}
    answer = contract.predict(shipped, tweets, contract.LIMITS, **options)
    assert list(answer) == ["z", "a", "m"]
    assert all(shape(a) for a in answer.values())
    assert contract.labels_of(answer) == shipped.run(list(tweets.values()))


def test_scores_and_weights_are_the_models_rounded(shipped):
    answer = contract.predict(shipped, {"1": "so happy :)"}, contract.LIMITS, True, True)["1"]
    assert answer["score"] == round(shipped.scores(["so happy :)"])[0], 6)
    explained = shipped.explain("so happy :)")
    assert answer["explanation"]["Positive"] == [
        {"term": t, "weight": round(w, 6)} for t, w in explained["Positive"]
    ]


def test_metadata_describes_the_model_and_the_limits(shipped):
    served = registry.load().get("tweet-sentiment")
    meta = contract.metadata(served, LIMITS, 1000)
    assert (meta["name"], meta["version"]) == ("tweet-sentiment", shipped.version)
    assert meta["versions"] == [shipped.version] and meta["kind"] == "log-count-ratio-logistic"
    assert meta["labels"] == list(model.LABELS)
    assert meta["limits"] == {"max_tweets": 3, "max_tweet_chars": 10, "max_body_bytes": 1000}
    assert meta["input"]["maxProperties"] == 3
    assert meta["input"]["additionalProperties"]["maxLength"] == 10
    assert meta["figures"]["this_model"]["accuracy"] > meta["figures"]["approach_2020"]["accuracy"]
    assert meta["training_data"]["tweets"] == 10_000


def test_partition_keeps_what_passes_and_names_what_does_not():
    tweets = {"a": "fine", "b": 7, "c": "x" * 11, "d": "also fine"}
    good, refused = contract.partition(tweets, LIMITS)
    assert good == {"a": "fine", "d": "also fine"}
    assert {i: type(e) for i, e in refused.items()} == {
        "b": contract.Unprocessable,
        "c": contract.Unprocessable,
    }
    assert 'not a string (number): "b"' in refused["b"].detail
    assert contract.partition({"a": "fine"}, LIMITS) == ({"a": "fine"}, {})


def test_an_error_reports_itself_in_the_shape_every_door_uses():
    error = contract.TooLarge("at most 3 tweets per request, got 4")
    assert error.as_dict() == {
        "error": 413,
        "text": "Request Entity Too Large",
        "detail": "at most 3 tweets per request, got 4",
    }


# What an answer holds (issue 37): ids of at most MAX_ID_CHARS, explanations of at most
# EXPLAIN_TERMS terms a side, at most MAX_EXPLAINED_TWEETS explained tweets a request.


def test_an_id_over_the_limit_is_422_naming_its_start_only(shipped):
    long_id = "x" * 257
    with pytest.raises(contract.Unprocessable) as caught:
        contract.predict(shipped, {"ok": "fine", long_id: "fine"}, contract.LIMITS)
    assert "each id must be at most 256 characters" in caught.value.detail
    assert "x" * 40 + "..." in caught.value.detail and long_id not in caught.value.detail
    assert list(contract.predict(shipped, {"x" * 256: "fine"}, contract.LIMITS)) == ["x" * 256]


def test_an_explanation_names_the_strongest_terms_and_explained_requests_are_bounded(shipped):
    words = [t for t in shipped.ratios if " " not in t and t.isalpha()][:400]
    tweet = " ".join(words)
    pulls = shipped.explain(tweet)
    assert min(len(p) for p in pulls.values()) > contract.EXPLAIN_TERMS  # more than are shown
    answer = contract.predict(shipped, {"1": tweet}, contract.LIMITS, explain=True)["1"]
    for side, terms in answer["explanation"].items():
        assert [t["term"] for t in terms] == [t for t, _ in pulls[side][: contract.EXPLAIN_TERMS]]
    many = {str(i): "fine" for i in range(1001)}
    with pytest.raises(contract.TooLarge, match="at most 1000 tweets per request with explain"):
        contract.predict(shipped, many, contract.LIMITS, explain=True)
    assert len(contract.predict(shipped, many, contract.LIMITS, scores=True)) == 1001


# A request body's batch in one pass (checked_batch, issue 36): it takes exactly what the
# reference takes, json into Pairs, batch() and check(), and gives the same tweets in the same
# order; anything else is None, for the door to parse as before and name what is wrong.

BODY_LIMITS = {"MAX_TWEETS": 6, "MAX_TWEET_CHARS": 12, "MAX_ID_CHARS": 5}


def reference_batch(body, limits):
    try:
        tweets = contract.batch(contract.parse_json(body.decode("utf-8")))
        contract.check(tweets, limits)
    except (UnicodeDecodeError, contract.PredictionError):
        return None
    return list(tweets.items())


def taken(body, limits=BODY_LIMITS):
    tweets = contract.checked_batch(body, limits)
    return None if tweets is None else list(tweets.items())


BODIES = [
    b'{"1": "a", "2": "b"}',
    b' \n{"1":"a"}\t',
    b'{"1": "a", "1": "b"}',  # a repeated id
    b'{"1": 1, "1": "b"}',  # a repeated id, the one kept a string
    b'{"a\\"": "x\\"", "a\\"": "y"}',  # repeated, escaped quotes in both
    b'{"\\\\": "\\\\\\"", "b": "\\\\"}',  # escaped backslashes before quotes
    b'{"1": "\\ud83d\\ude00", "2": "\\u00e9t\\u00e9"}',  # escapes, a pair
    b'{"1": "\\ud800"}',  # a lone surrogate
    b'{"1": "\\udc00x"}',
    b'{"1": "\xff"}',  # not UTF-8
    b'{"1": "a\x01"}',  # a raw control character
    b'{"1": "\x7f"}',
    b'{"1": "123456789012"}',
    b'{"1": "1234567890123"}',  # one character too long
    '{"1": "12345678901😀"}'.encode(),  # characters, not bytes
    b'{"123456": "a"}',  # an id too long
    b'{"1": "a", "2": "b", "3": "c", "4": "d", "5": "e", "6": "f"}',
    b'{"1": "a", "2": "b", "3": "c", "4": "d", "5": "e", "6": "f", "7": "g"}',
    b'{"1": null}',
    b'{"1": ["a"]}',
    b'{"1": {"a": "b"}}',
    b'{"1": NaN}',
    b"{}",
    b"[]",
    b'"a"',
    b"",
    b'\xef\xbb\xbf{"1": "a"}',  # a byte order mark
    b'{"1": "a"} x',
    b'{"1": "a",}',
    b"[" * 5000,
]


@pytest.mark.parametrize("body", BODIES)
def test_checked_batch_takes_what_the_reference_takes(body):
    assert taken(body) == reference_batch(body, BODY_LIMITS)


characters = st.characters(codec="utf-8") | st.sampled_from('"\\\x00\x1f\x7f\ud800\udfff😀:{},')
json_values = st.text(characters, max_size=14) | st.none() | st.integers() | st.lists(st.text())


@settings(max_examples=500, deadline=None)
@given(
    members=st.lists(st.tuples(st.text(characters, max_size=6), json_values), max_size=8),
    repeat=st.booleans(),
    ascii_only=st.booleans(),
    spaced=st.booleans(),
)
def test_checked_batch_agrees_with_the_reference_on_any_batch(members, repeat, ascii_only, spaced):
    if repeat and members:
        members.append((members[0][0], "again"))
    sep, colon = (", ", ": ") if spaced else (",", ":")
    text = (
        "{"
        + sep.join(
            json.dumps(k, ensure_ascii=ascii_only) + colon + json.dumps(v, ensure_ascii=ascii_only)
            for k, v in members
        )
        + "}"
    )
    body = text.encode("utf-8", "surrogatepass")  # a raw lone surrogate: not UTF-8
    assert taken(body) == reference_batch(body, BODY_LIMITS)


# contract_core.scan and write_labels (issue 36): a body is taken only if checked_batch takes it,
# its tweets read alike, and the answer written with json's very bytes; every other body is left
# to checked_batch (None).


def scanned_alike(body, limits=BODY_LIMITS):
    """Whether scan took the body; if it did, assert it agrees with checked_batch and json."""
    scanned = contract.scanned_batch(body, limits)
    if scanned is None:
        return False
    tweets = contract.checked_batch(body, limits)
    assert tweets is not None and scanned.texts == list(tweets.values())
    labels = [model.LABELS[len(text) % 2] for text in scanned.texts]
    answer = (
        json.dumps(dict(zip(tweets, labels, strict=True)), separators=(",", ":")).encode() + b"\n"
    )
    assert contract.write_labels(body, scanned.ids, labels) == answer
    # In place, for the model's core: None where the tweet is the body's ASCII bytes as they are.
    limits = {**contract.LIMITS, **limits}
    most = limits["MAX_ID_CHARS"], limits["MAX_TWEET_CHARS"], limits["MAX_TWEETS"]
    _, places, texts = contract.scan(body, *most, True)
    places = memoryview(places).cast("n")
    for n, (text, tweet) in enumerate(zip(texts, tweets.values(), strict=True)):
        start, length = places[2 * n], places[2 * n + 1]
        assert text == tweet or (text is None and body[start : start + length] == tweet.encode())
        assert text is not None or tweet.isascii()
    return True


@pytest.mark.parametrize("body", BODIES)
def test_scan_takes_only_what_checked_batch_takes_and_answers_alike(body):
    pytest.importorskip("contract_core")
    scanned_alike(body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"1": "a", "2": "b"}',
        b' \n{"1":"a"}\t',
        b'{"1": "\\ud83d\\ude00", "2": "\\u00e9t\\u00e9"}',
        b'{"1": "\\\\\\"\\/\\b\\f\\n\\r\\t\\u0000"}',
        b'{"1": "\x7f"}',
        '{"1": "12345678901😀", "a b": "é"}'.encode(),
        b'{"1": "a", "2": "b", "3": "c", "4": "d", "5": "e", "6": "f"}',
        b'{"": "", "~!#$%": "x"}',
    ],
)
def test_scan_takes_the_common_bodies(body):
    pytest.importorskip("contract_core")
    assert scanned_alike(body)


@pytest.mark.parametrize(
    "body",
    [
        b'{"1": "a", "1": "b"}',  # a repeated id
        b'{"\\u0031": "a"}',  # an escape in an id: written back otherwise by json
        '{"é": "a"}'.encode(),  # an id not ASCII
        b'{"a\x7f": "a"}',  # DEL in an id: json escapes it
        b'{"1": "\\ud800"}',  # a lone surrogate
        b'{"1": "\\u12"}',  # an escape cut short
        b'{"1": "\\x"}',  # no such escape
        b'{"1": "a\x01"}',  # a raw control character
        b'{"1": "\xed\xa0\x80"}',  # a surrogate in UTF-8: not UTF-8
    ],
)
def test_scan_leaves_what_it_cannot_write_back_to_checked_batch(body):
    pytest.importorskip("contract_core")
    assert not scanned_alike(body)


ascii_ids = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7F), max_size=6)
# What scan takes, mostly: printable ASCII ids with no quote or backslash, tweets of characters
# (never a lone surrogate) that json.dumps escapes or not.
written_ids = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='"\\'), max_size=5
)
tweets = st.text(
    st.characters(codec="utf-8") | st.sampled_from('"\\/\x00\x1f\x7f😀é\u2028'), max_size=12
)


@settings(max_examples=1000, deadline=None)
@given(
    members=st.lists(
        st.tuples(written_ids, tweets), min_size=1, max_size=6, unique_by=lambda m: m[0]
    )
    | st.lists(st.tuples(ascii_ids, st.text(characters, max_size=12)), max_size=6)
    | st.lists(st.tuples(ascii_ids | st.text(characters, max_size=6), json_values), max_size=8),
    repeat=st.booleans(),
    ascii_only=st.booleans(),
    spaces=st.sampled_from(["", " ", "\n\t ", "\r"]),
)
def test_scan_agrees_with_checked_batch_on_any_batch(members, repeat, ascii_only, spaces):
    pytest.importorskip("contract_core")
    if repeat and members:
        members.append((members[0][0], "again"))
    text = spaces + "{" + spaces + ("," + spaces).join(
        json.dumps(k, ensure_ascii=ascii_only) + spaces + ":" + spaces
        + json.dumps(v, ensure_ascii=ascii_only) + spaces
        for k, v in members
    ) + "}" + spaces  # fmt: skip
    scanned_alike(text.encode("utf-8", "surrogatepass"))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=40) | st.builds(lambda a, b: a + b, st.sampled_from(BODIES), st.binary()))
def test_scan_is_safe_on_any_bytes(body):
    pytest.importorskip("contract_core")
    scanned_alike(body)


def test_scan_reads_no_further_than_a_body_cut_short_anywhere():
    pytest.importorskip("contract_core")
    body = json.dumps({"ab": 'x "y" \\ é 😀 \n' * 3, "c": "d"}).encode()
    limits = {"MAX_TWEETS": 6, "MAX_TWEET_CHARS": 100, "MAX_ID_CHARS": 5}
    assert scanned_alike(body, limits)
    for end in range(len(body)):
        assert contract.scanned_batch(body[:end], limits) is None


# The V2 door's tensors (v2/rest.py's hot path): a JSON array of strings, or the binary form.


def reference_tensor(data, limits, count=None):
    """The tweets the V2 door's view takes from a tensor's data, or None: json and protocol."""
    try:
        if count is None:
            texts = json.loads(data.decode("utf-8"))
        else:
            texts = protocol.texts_of_bytes(protocol.split_bytes(data, [count]))
    except (ValueError, contract.PredictionError):
        return None
    if not (
        isinstance(texts, list)
        and 0 < len(texts) <= limits["MAX_TWEETS"]
        and all(isinstance(t, str) for t in texts)
        and not any(
            len(t) > limits["MAX_TWEET_CHARS"] or contract.SURROGATE.search(t) for t in texts
        )
    ):
        return None
    return texts


def tensor_alike(data, limits=BODY_LIMITS, count=None):
    """Whether contract_core took a tensor's data; if it did, assert it agrees with the view's
    reading, in place too (None only for ASCII tweets, there in the data as they are)."""
    scanned = contract.scanned_tensor(data, limits, None, count)
    if scanned is None:
        return False
    assert scanned.texts == reference_tensor(data, limits, count)
    scan = contract_core.scan_strings if count is None else contract_core.scan_elements
    chars, most = limits["MAX_TWEET_CHARS"], limits["MAX_TWEETS"]
    spans, texts = (
        scan(data, chars, most, True) if count is None else scan(data, count, chars, True)
    )
    spans = memoryview(spans).cast("n")
    for n, (text, tweet) in enumerate(zip(texts, scanned.texts, strict=True)):
        start, length = spans[2 * n], spans[2 * n + 1]
        assert text == tweet or (text is None and data[start : start + length] == tweet.encode())
        assert text is not None or tweet.isascii()
    assert contract_core.texts_of(data, spans.tobytes(), texts) == scanned.texts  # for a str
    if count is None:  # as it is in a body (scanned_array): the same, where it is
        prefix = b'{"inputs": [{"data":'
        found = contract.scanned_array(prefix + data + b"}]}", len(prefix), limits)
        assert found is not None and found[1] == len(prefix) + len(data.rstrip())
        at = memoryview(found[0].tweets).cast("n")
        assert list(at) == [s + len(prefix) * (n % 2 == 0) for n, s in enumerate(spans)]
        assert found[0].texts == texts
    return True


@pytest.mark.parametrize(
    "data, taken",
    [
        (b'["a", "b"]', True),
        (b' ["\\ud83d\\ude00 \\u00e9", "\\"\\\\\\n", ""]\n', True),
        ('["é 😀", "x"]'.encode(), True),
        (b'["' + b"x" * 12 + b'"]', True),
        (b'["' + b"x" * 13 + b'"]', False),  # over MAX_TWEET_CHARS
        (json.dumps(["a"] * 7).encode(), False),  # over MAX_TWEETS
        (b"[]", False),
        (b'[["a"]]', False),  # nested: the view flattens it
        (b'["a", 1]', False),
        (b'["a"] x', False),
        (b'["\\ud800"]', False),
        (b'["\xff"]', False),
        (b'["a\x01"]', False),
        (b"null", False),
    ],
)
def test_scan_strings_takes_what_the_v2_view_takes(data, taken):
    pytest.importorskip("contract_core")
    assert tensor_alike(data) is taken


@pytest.mark.parametrize(
    "data, end",
    [
        (b'["a"] x', 5), (b'[ "a" , "b" ]}', 13), (b'[["a"]]', None), (b'["a", 1]', None),
        (b"[]", None), (b'["\\ud800"]', None), (b"null", None), (b'["a"', None), (b"", None),
    ],
)  # fmt: skip
def test_scan_strings_from_an_offset_says_where_the_array_ends(data, end):
    pytest.importorskip("contract_core")
    found = contract.scanned_array(b"xy" + data, 2, BODY_LIMITS)
    assert (found and found[1]) == (end and end + 2)
    assert contract.scanned_array(data, len(data) + 5, BODY_LIMITS) is None  # past the end


def elements(*texts):
    return b"".join(len(t).to_bytes(4, "little") + t for t in texts)


@pytest.mark.parametrize(
    "data, count, taken",
    [
        (elements(b"a", b"", "é 😀".encode(), b'"\\\x00\n'), 4, True),
        (elements(b"x" * 12, "é".encode() * 12), 2, True),
        (elements(b"x" * 13), 1, False),  # over MAX_TWEET_CHARS
        (elements(*[b"a"] * 7), 7, False),  # over MAX_TWEETS
        (elements(b"a", b"b"), 1, False),
        (elements(b"a"), 2, False),
        (elements(b"caf\xc3"), 1, False),
        (elements(b"\xed\xa0\x80"), 1, False),  # a surrogate in UTF-8
        (elements(b"abc")[:-1], 1, False),
        (elements(b"abc")[:3], 1, False),
        (b"", 0, False),
    ],
)
def test_scan_elements_takes_what_the_v2_view_takes(data, count, taken):
    pytest.importorskip("contract_core")
    assert tensor_alike(data, count=count) is taken


def test_scan_elements_tells_ascii_wherever_the_blocks_fall():
    """scan_elements looks at an element's bytes only where a 64-byte block it is in holds a
    byte over 0x7F: an element beside one that does, at every offset, is read as the view
    reads it (in place only where it is ASCII)."""
    pytest.importorskip("contract_core")
    limits = {**BODY_LIMITS, "MAX_TWEET_CHARS": 200}
    for offset in range(0, 140, 3):
        texts = [b"a" * offset, "é".encode(), b"b" * 130, b"", "😀".encode() * 20, b"x" * 63]
        assert tensor_alike(elements(*texts), limits, count=len(texts))
        assert tensor_alike(elements(*texts[:3]), limits, count=3)


@settings(max_examples=500, deadline=None)
@given(
    texts=st.lists(st.text(characters, max_size=14), max_size=8),
    ascii_only=st.booleans(),
    binary=st.booleans(),
    cut=st.integers(0, 2),
)
def test_the_tensor_scans_agree_with_the_v2_view_on_any_tensor(texts, ascii_only, binary, cut):
    """Taken exactly when the view takes it (lone surrogates, too long, too many, cut short)."""
    pytest.importorskip("contract_core")
    count = len(texts) if binary else None
    if binary:
        data = elements(*(t.encode("utf-8", "surrogatepass") for t in texts))
        data = data[: len(data) - cut]
    else:
        data = json.dumps(texts, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    taken = tensor_alike(data, count=count)
    assert taken == (reference_tensor(data, BODY_LIMITS, count) is not None)


def test_rounded_rounds_as_round():
    """contract_core.rounded, the scores' rounding in C, against round() where rounding is hard:
    halfway between two decimals, a bit either side, exact ties (j / 128 at 6 decimals), and
    values that are no float or out of its range."""
    pytest.importorskip("contract_core")
    values = [j / 128 for j in range(129)] + [0.0, -0.0, 5e-324, 1e-300, 2.5, -2.5, 0.5, 1.5]
    for k in range(0, 1_000_000, 37):
        halfway = (k + 0.5) / 1e6
        values += [halfway, math.nextafter(halfway, 0), math.nextafter(halfway, 1), k / 1e6]
    rng = random.Random(36)
    values += [rng.random() for _ in range(20_000)] + [rng.uniform(-1e6, 1e6) for _ in range(2_000)]
    values += [1e20, -1e20, math.inf, -math.inf, 3, True]
    for decimals in (6, 0, 3, 12):
        expected = [round(v, decimals) for v in values]
        got = contract_core.rounded(values, decimals)
        assert [(g, math.copysign(1, g)) for g in got] == [
            (e, math.copysign(1, e)) for e in expected
        ]
        assert [type(g) for g in got] == [type(e) for e in expected]
    assert math.isnan(contract_core.rounded((math.nan,), 6)[0])
    assert contract.rounded([0.1234565, 0.9999995], 6) == [round(0.1234565, 6), 1.0]


def test_write_floats_writes_every_score_as_json_does():
    """Every score to 6 decimals (k / 10**6, the V2 door's) and other floats, as json writes
    them; what JSON has no number for is refused."""
    values = [k / 1e6 for k in range(1_000_001)]
    values += [-0.0, 1.5, -2.5e-7, 1e300, 5e-324, 0.1 + 0.2, 1 / 3, 1e16, 123456.789, -1.0]
    assert contract.write_floats(values) == json.dumps(values, separators=(",", ":")).encode()
    assert contract.write_floats([]) == b"[]"
    for bad in ([math.nan], [math.inf]):
        with pytest.raises(ValueError):
            contract.write_floats(bad)


def test_scores_are_rounded_as_they_are_written_or_packed():
    """write_floats and pack_floats with decimals: json's and struct's bytes of round()'s
    values, for a model's probabilities and the halfway points where rounding is hard."""
    rng = random.Random(36)
    values = [rng.random() for _ in range(50_000)] + [j / 128 for j in range(129)]
    values += [(k + 0.5) / 1e6 for k in range(0, 1_000_000, 101)] + [1e-7, 4.9e-7, 5e-7, 0.0]
    values += [-v for v in values[:1000]] + [-0.0, -4.9e-7, 1e20, -3e9, 2.0**52, 1e-300]
    for decimals in (6, 2):
        expected = [round(v, decimals) for v in values]
        assert (
            contract.write_floats(values, decimals)
            == json.dumps(expected, separators=(",", ":")).encode()
        )
        assert contract.pack_floats(values, decimals) == struct.pack(f"<{len(values)}f", *expected)
    assert contract.pack_floats(values) == struct.pack(f"<{len(values)}f", *values)
    with pytest.raises(OverflowError):
        contract.pack_floats([1e300])
    with pytest.raises(TypeError):
        contract.write_floats([1], 6)  # round(1, 6) is an int: no score


def test_floats_are_written_and_packed_alike_from_a_list_or_doubles():
    """write_floats and pack_floats read the model core's packed scores (a memoryview of
    doubles) as they read a list of the same floats."""
    rng = random.Random(36)
    values = [rng.random() for _ in range(5000)] + [0.0, -0.0, 1.0, 5e-7, 0.5e-6, -2.5, 1e20]
    doubles = memoryview(struct.pack(f"{len(values)}d", *values)).cast("d")
    for decimals in (None, 6, 2, 0):
        assert contract.write_floats(doubles, decimals) == contract.write_floats(values, decimals)
        assert contract.pack_floats(doubles, decimals) == contract.pack_floats(values, decimals)
    assert contract.write_floats(doubles[:0]) == b"[]"
    with pytest.raises(TypeError):
        contract.write_floats(b"\x00" * 8)  # bytes, not doubles
    with pytest.raises(ValueError):
        contract.write_floats(memoryview(struct.pack("d", math.inf)).cast("d"))


def test_write_elements_writes_the_binary_form_split_bytes_reads():
    texts = ["Positive", "", "é 😀", "Negative" * 100, "\x00"]
    data = contract.write_elements(texts)
    assert protocol.texts_of_bytes(protocol.split_bytes(data, [len(texts)])) == texts
    assert data[:12] == b"\x08\x00\x00\x00Positive" and contract.write_elements([]) == b""
    with pytest.raises(UnicodeEncodeError):
        contract.write_elements(["\ud800"])


def test_write_labels_refuses_what_does_not_fit_its_ids():
    core = pytest.importorskip("contract_core")
    body = b'{"1": "a", "2": "b"}'
    scanned = contract.scanned_batch(body, BODY_LIMITS)
    assert core.write_labels(body, scanned.ids, ["Positive", "Negative"]) == (
        b'{"1":"Positive","2":"Negative"}\n'
    )
    for labels in (["Positive"], ["Positive", "Négative"], ["Positive", 'Neg"ative'], []):
        with pytest.raises(ValueError):
            core.write_labels(body, scanned.ids, labels)
    with pytest.raises(ValueError):  # ids past the body's end
        core.write_labels(body[:3], scanned.ids, ["Positive", "Negative"])


@settings(max_examples=500, deadline=None)
@given(
    document=st.recursive(
        st.none() | st.integers() | st.text(characters),
        lambda inner: (
            st.lists(inner, max_size=4) | st.dictionaries(st.text(characters), inner, max_size=4)
        ),
        max_leaves=20,
    ),
    ascii_only=st.booleans(),
)
def test_the_compiled_quote_count_is_pythons(document, ascii_only):
    core = pytest.importorskip("contract_core")
    text = json.dumps(document, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    assert core.unescaped_quotes(text) == contract.quotes(text)
    assert core.unescaped_quotes(bytearray(text)) == core.unescaped_quotes(memoryview(text))
    if isinstance(document, dict) and all(isinstance(v, str) for v in document.values()):
        assert contract.members(text) == len(document)


def test_the_quote_count_is_safe_on_any_bytes():
    core = pytest.importorskip("contract_core")
    for text in (b"", b"\\", b'"\\', b'\\"', b'\\\\"', b"x" * 1000 + b"\\"):
        assert core.unescaped_quotes(text) == contract.quotes(text)
    with pytest.raises(TypeError):
        core.unescaped_quotes("a str")


def test_a_checked_batch_is_not_checked_again_and_is_labelled_alike(shipped):
    body = b'{"b": "I love it", "a": "I hate it"}'
    tweets = contract.checked_batch(body, contract.LIMITS)
    assert contract.predict(shipped, tweets, contract.LIMITS, checked=True) == contract.predict(
        shipped, contract.batch(contract.parse_json(body.decode())), contract.LIMITS
    )
    assert list(contract.predict(shipped, tweets, contract.LIMITS, checked=True)) == ["b", "a"]


def test_texts_of_takes_only_ascii_inside_the_data():
    pytest.importorskip("contract_core")
    data, spans = "ab é".encode(), struct.pack("4n", 0, 2, 3, 2)
    assert contract_core.texts_of(data, spans, [None, "é"]) == ["ab", "é"]
    for texts, places in (([None, None], spans), ([None], struct.pack("2n", 2, 9))):
        with pytest.raises(ValueError):  # é is not ASCII; 2 + 9 is past the data
            contract_core.texts_of(data, places, texts)


def test_count_of_counts_as_list_count():
    rng = random.Random(36)
    negative, positive = "Negative", "Positive"
    labels = [rng.choice((negative, positive)) for _ in range(1000)]
    same = "".join(["Posi", "tive"])  # equal, not the same object
    for values in (labels, [*labels, same, 1, None, 1.0, True], [], [same] * 3):
        for value in (positive, negative, same, 1, "x"):
            assert contract.count_of(values, value) == values.count(value)

    class Changes:  # an __eq__ that empties the list as it is counted
        def __eq__(self, other):
            changed.clear()
            return False

    changed = [Changes(), positive, positive]
    assert contract.count_of(changed, positive) == 0


def test_the_texts_hold_none_as_they_count_it():
    """The scans make their texts' list at once and raise None's count once for the tweets left
    in place: it must be what the list holds, neither more nor less."""
    pytest.importorskip("contract_core")
    body, data = b'{"1": "a", "2": "\\u00e9", "3": "b"}', b'["a", "\\u00e9", "b"]'
    scans = [  # (a scan, where its texts are in what it gives)
        (lambda: contract_core.scan(body, 10, 10, 10, True), 2),
        (lambda: contract_core.scan_strings(data, 10, 10, True), 1),
        (lambda: contract_core.scan_strings(b"x" + data + b"}", 10, 10, True, 1), 1),
        (lambda: contract_core.scan_elements(elements(b"a", "é".encode(), b"b"), 3, 10, True), 1),
    ]
    gc.disable()  # a collection would free other holders of None meanwhile
    try:
        for scan, texts in scans:
            scan()  # anything made once, made
            found = [None] * 1000
            before = sys.getrefcount(None)
            for i in range(1000):
                found[i] = scan()  # one None in the list less, two in the texts more
            held = sys.getrefcount(None) - before
            right = all(f[texts] == [None, "é", None] for f in found)
            del found
            after = sys.getrefcount(None) - before  # measured before an assert's own names
            assert (held, after, right) == (1000, -1000, True)
    finally:
        gc.enable()


# Where SSE2 is not (ARM), contract_core reads bytes one at a time: those loops, built here with
# __SSE2__ undefined, must read every input as the build in use does.

BYTE_LOOPS = """
import json, random, struct, sys
import contract_core as core
assert core.__file__.startswith(sys.argv[1]), core.__file__
rng = random.Random(36)
alphabet = 'ab "\\\\/\\n\\x01\\x7f' + "é😀\\u2028" + "xyz" * 5
answers = []
for n in range(400):
    texts = ["".join(rng.choices(alphabet, k=rng.choice((0, 1, 7, 15, 16, 17, 63, 64, 65, 130))))
             for _ in range(rng.randint(1, 6))]
    body = json.dumps({str(i): t for i, t in enumerate(texts)}, ensure_ascii=n % 2 == 0).encode()
    array = json.dumps(texts, ensure_ascii=n % 3 == 0).encode()
    elements = b"".join(struct.pack("<I", len(t.encode("utf-8", "surrogatepass")))
                        + t.encode("utf-8", "surrogatepass") for t in texts)
    answers.append([
        core.unescaped_quotes(body), core.scan(body, 20, 100, 10, n % 2),
        core.scan_strings(array, 100, 10, n % 2), core.scan_strings(b"[" + array, 100, 10, 1, 1),
        core.scan_elements(elements, len(texts), 100, n % 2),
    ])
print(repr(answers))
"""


def test_the_byte_loops_read_as_the_sse2_build_does(tmp_path):
    pytest.importorskip("contract_core")
    compiler = shutil.which("cc") or shutil.which("gcc")
    assert compiler, "no C compiler, yet contract_core was built: make builds it with one"
    built, script = tmp_path / "built", tmp_path / "script" / "loops.py"
    built.mkdir()
    script.parent.mkdir()
    script.write_text(BYTE_LOOPS)
    source = Path(__file__).resolve().parent.parent / "core" / "contract_core.c"
    subprocess.run(
        [compiler, "-O2", "-shared", "-fPIC", "-U__SSE2__",
         f"-I{sysconfig.get_paths()['include']}", str(source), "-o",
         str(built / f"contract_core{sysconfig.get_config_var('EXT_SUFFIX')}")],
        check=True,
    )  # fmt: skip
    theirs, ours = (
        subprocess.run(
            [sys.executable, str(script), str(folder)],
            env={**os.environ, "PYTHONPATH": str(folder)},
            capture_output=True, text=True, check=True,
        ).stdout
        for folder in (built, Path(contract_core.__file__).parent)
    )  # fmt: skip
    assert theirs == ours and len(theirs) > 10_000
