"""Hostile input, round 2 (issue #37), the guard: items 12 and 13 against the real server (`make
api-start`, 2 workers), each with the figures before (as the issue found them on 156fd8d) and
after printed at the end of the run. Items 14 and 15, the admin routes' bodies and a damaged
aliases file, are tests/test_aliases.py's, in-process.
"""

import http.client
import json
import ssl
import time

import pytest
from conftest import TOKEN, evidence, guard_refusal, reporter, running_server, stop

import registry

pytestmark = pytest.mark.slow
OLD, SMALL = "tweet-sentiment-2020", "tweet-sentiment"
DEFAULT = registry.read_catalogue(registry.MODELS_FILE)["default"]  # stable at start
MIN_PAIRS = 300


report = reporter("hostile #")


def call(server, method, path, body=None, token=TOKEN):
    context = ssl.create_default_context(cafile=str(server["folder"] / "server.crt"))
    connection = http.client.HTTPSConnection("127.0.0.1", server["port"], context=context)
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
    try:
        connection.request(method, path, None if body is None else json.dumps(body), headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"null")
    finally:
        connection.close()


def admin(server, method, path, body=None):
    token = (server["folder"] / ".admin_token").read_text().strip()
    return call(server, method, f"/api/v1/aliases{path}", body, token)


def shadow(server, at_least=0, seconds=10):
    """The guard's live figures, once every worker has written its counts out (within 2 s)."""
    deadline = time.monotonic() + seconds
    while True:
        status, state = call(server, "GET", "/api/v1/aliases")
        assert status == 200, state
        if state["shadow"]["pairs"] >= at_least or time.monotonic() > deadline:
            return state["shadow"]
        time.sleep(0.25)


WORDS = ("love", "hate", "great", "awful", "fine", "sad", "happy", "bored", "nice", "bad")
OTHER_WORDS = ("amazing", "terrible", "cute", "ugly", "fun", "boring", "win", "lost", "yay", "ugh")


def distinct_tweets(start, count, words=WORDS):
    """Tweets that differ in words, not only in case or spacing."""
    return {
        str(i): f"day {i}: {words[i % 10]} {words[(i // 10) % 10]} {words[(i // 100) % 10]}"
        for i in range(start, start + count)
    }


def send(server, tweets, batch=90):
    items = list(tweets.items())
    for at in range(0, len(items), batch):
        status, body = call(server, "POST", "/api/v1/predict", dict(items[at : at + batch]))
        assert status == 200, body


def test_12_one_request_of_repeated_text_does_not_decide_the_guard(tmp_path):
    """Before: the 2020 model as candidate, one predict of 10,000 copies of "happy happy", then
    promote without force: pairs 10,000, agreement 1.0, promoted. 10,000 blank tweets blocked a
    good candidate the same way. And the probe after the first fix: near-copies with words no
    model knows ("happy happy zq17x") counted each, enough to block tweet-sentiment (agreement
    0.64 after 9 requests) or, with no labelled set, to promote the 2020 model (11 requests)."""
    with running_server(tmp_path, API_TOKEN=TOKEN, PROMOTE_MIN_PAIRS=str(MIN_PAIRS)) as server:
        assert admin(server, "PUT", "/candidate", {"model": OLD})[0] == 200
        time.sleep(0.5)  # both workers follow within a quarter of a second
        copies = {str(i): "happy happy" if i % 2 else "Happy  HAPPY " for i in range(10_000)}
        assert call(server, "POST", "/api/v1/predict", copies)[0] == 200
        near = {str(i): f"happy happy zq{i}x" for i in range(10_000)}
        for start in range(0, 10_000, 90):  # near-copies, in batches under the cap
            batch = dict(list(near.items())[start : start + 90])
            assert call(server, "POST", "/api/v1/predict", batch)[0] == 200
        time.sleep(2.5)  # every worker has written its counts out
        after_copies = shadow(server)
        status, refused = admin(server, "POST", "/promote")
        assert status == 409, refused
        assert after_copies["pairs"] == 1, after_copies  # words no model knows change nothing
        # A good candidate is not blocked by blank tweets: one piece of evidence in all.
        assert admin(server, "DELETE", "/candidate")[0] == 200
        assert admin(server, "PUT", "/candidate", {"model": SMALL})[0] == 200
        time.sleep(0.5)
        blank = {str(i): " " * (i % 7) for i in range(10_000)}
        assert call(server, "POST", "/api/v1/predict", blank)[0] == 200
        time.sleep(2.5)
        assert shadow(server)["pairs"] == 1
        # Nor by one request of many distinct tweets: it adds at most 100.
        assert call(server, "POST", "/api/v1/predict", distinct_tweets(0, 5_000))[0] == 200
        one_request = shadow(server, at_least=101)
        assert one_request["pairs"] == 101, one_request
        more = distinct_tweets(5_000, MIN_PAIRS, OTHER_WORDS)  # none of the first request's
        send(server, more)
        expected = 101 + evidence(DEFAULT, SMALL, more.values())["pairs"]
        enough = shadow(server, at_least=expected)
        status, state = call(server, "GET", "/api/v1/aliases")
        report(
            "12 the guard's counts",
            {
                "10,000 copies of happy happy, then 10,000 near-copies: pairs": 1,
                "promote": refused["detail"],
                "10,000 blank tweets: pairs": 1,
                "one request of 5,000 distinct: pairs": one_request["pairs"] - 1,
                "then 300 more in batches of 90": enough,
                "guard": state["guard"],
            },
        )
        assert enough["pairs"] == expected, enough


def test_13_a_restart_keeps_the_counts_of_the_candidate_and_no_impossible_figure(tmp_path):
    """Before: candidate set, traffic, candidate set again, TERM, make api-start, 22,000 pairs at
    54.5% agreement: GET said 1,000 pairs at 1.0 and promote passed. Now the counts belong to the
    candidate's epoch and are kept beside the aliases file, each tweet once: the restarted server
    reads the same figures, the same tweets sent again add nothing (the probe after the first fix
    counted them again in each worker and after each restart), and new ones add."""
    folder = tmp_path
    env = {"API_TOKEN": TOKEN, "PROMOTE_MIN_PAIRS": str(10 * MIN_PAIRS)}
    stable = DEFAULT
    with running_server(folder, **env) as server:
        assert admin(server, "PUT", "/candidate", {"model": OLD})[0] == 200
        time.sleep(0.5)
        send(server, distinct_tweets(0, 400))
        first = shadow(
            server, at_least=evidence(stable, OLD, distinct_tweets(0, 400).values())["pairs"]
        )
        assert admin(server, "PUT", "/candidate", {"model": OLD})[0] == 200  # again: from 0
        time.sleep(0.5)
        assert shadow(server)["pairs"] == 0
        tweets = distinct_tweets(1_000, 450)
        expected = evidence(stable, OLD, tweets.values())
        for _ in range(3):  # the same tweets, three times over, through both workers
            send(server, tweets)
        before = shadow(server, at_least=expected["pairs"])
        time.sleep(2.5)  # every worker has written its counts out
        stop(server["process"])
    with running_server(folder, **env) as server:
        after = shadow(server)
        send(server, tweets)  # again, after the restart
        time.sleep(2.5)
        again = shadow(server)
        more = distinct_tweets(2_000, 180)
        send(server, more)
        both = evidence(stable, OLD, [*tweets.values(), *more.values()])
        grown = shadow(server, at_least=both["pairs"])
        status, refused = admin(server, "POST", "/promote")
    report(
        "13 the counts across a restart",
        {"first candidate": first, "set again, sent 3 times": before, "restarted": after,
         "the same again": again, "more": grown},
    )  # fmt: skip
    assert (before["pairs"], before["agreeing"]) == (expected["pairs"], expected["agreeing"])
    assert after == before == again, (before, after, again)
    assert (grown["pairs"], grown["agreeing"]) == (both["pairs"], both["agreeing"])
    assert 0 <= grown["agreement"] <= 1
    assert status == 409 and guard_refusal("labelled tweets") in refused["detail"], refused


def test_a_server_that_cannot_read_its_aliases_at_start_is_not_ready(tmp_path):
    """Item 15 on the real server: a damaged file at start, /ready 503 naming it; mended, ready
    without a restart."""
    (tmp_path / "aliases.json").write_text('{"stable": null}')
    env = {"API_TOKEN": TOKEN}
    with running_server(tmp_path, **env) as server:
        status, body = call(server, "GET", "/ready")
        assert status == 503 and str(tmp_path / "aliases.json") in body["detail"], body
        status, answer = admin(server, "POST", "/rollback")
        assert status == 503 and "aliases.json" in answer["detail"], answer
        (tmp_path / "aliases.json").unlink()
        deadline = time.monotonic() + 5
        while call(server, "GET", "/ready")[0] != 200:  # both workers, on fresh connections
            assert time.monotonic() < deadline, "not ready after the file was removed"
            time.sleep(0.2)
