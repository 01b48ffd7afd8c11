"""Aliases (aliases.py) through the app: who may move them, what each route refuses, the guard, the
shadow and the canary, and the file every process follows. The real server's load through a
promotion and a rollback is tests/test_lifecycle.py's."""

import csv
import json
import random
import time
import uuid

import pytest
from conftest import ADMIN_TOKEN, OTHER_TOKEN, TOKEN

import aliases
import api
import contract
import jobs
import registry
import rpc

# STABLE: models.json's default, stable when no alias moved.
STABLE, SMALL, OLD = "tweet-sentiment-people", "tweet-sentiment", "tweet-sentiment-2020"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
USER = {"Authorization": f"Bearer {TOKEN}"}


def make_app(folder, **config):
    return api.create_app(
        {
            "API_TOKEN": f"{TOKEN},{OTHER_TOKEN}",
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "ALIASES_FILE": str(folder / "aliases.json"),
            "JOBS_DIR": str(folder / "jobs"),
            **config,
        }
    )


@pytest.fixture
def client(tmp_path):
    return make_app(tmp_path).test_client()


@pytest.fixture(scope="module")
def tweets():
    """400 tweets of the seed's data, or generated ones when the data is absent."""
    import train

    if not train.DEFAULT_DATA.is_file():
        return {str(i): f"tweet {i} {'love' if i % 3 else 'hate'} it" for i in range(400)}
    with open(train.DEFAULT_DATA, newline="", encoding="utf-8") as f:
        rows = [r for _, r in zip(range(400), csv.DictReader(f), strict=False)]
    column = "text" if "text" in rows[0] else next(iter(rows[0]))
    return {str(i): r[column][:280] for i, r in enumerate(rows)}


def predict(client, tweets, **headers):
    response = client.post(f"/api/v1/{TOKEN}/predict", json=tweets, headers=headers)
    assert response.status_code == 200, response.json
    return response


def put_candidate(client, **body):
    return client.put("/api/v1/aliases/candidate", headers=ADMIN, json=body)


def test_with_no_aliases_file_stable_is_the_catalogues_default(client):
    state = client.get("/api/v1/aliases", headers=USER).json
    default = registry.load_one().get()
    assert state["stable"] == {"model": default.name, "version": default.version}
    assert state["candidate"] is None and state["previous"] is None
    assert state["shadow"]["pairs"] == 0 and state["canary_percent"] == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("put", "/api/v1/aliases/candidate"),
        ("delete", "/api/v1/aliases/candidate"),
        ("post", "/api/v1/aliases/promote"),
        ("post", "/api/v1/aliases/rollback"),
    ],
)
def test_only_the_admin_token_moves_aliases(client, method, path):
    send = getattr(client, method)
    assert send(path).status_code == 401
    assert send(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
    refused = send(path, headers=USER)
    assert refused.status_code == 403 and "admin token" in refused.json["detail"]
    assert client.get("/api/v1/aliases").status_code == 401


def test_the_admin_token_asks_for_no_prediction(client):
    assert client.post(f"/api/v1/{ADMIN_TOKEN}/predict", json={"1": "hi"}).status_code == 404
    assert client.post("/api/v1/predict", json={"1": "hi"}, headers=ADMIN).status_code == 401


def test_an_admin_token_that_is_also_an_api_token_is_refused_at_start(tmp_path):
    with pytest.raises(RuntimeError, match="admin token is also an API token"):
        make_app(tmp_path, ADMIN_TOKEN=TOKEN)


def test_without_an_admin_token_the_routes_say_how_to_make_one(tmp_path):
    client = make_app(
        tmp_path, ADMIN_TOKEN="", ADMIN_TOKEN_FILE=str(tmp_path / "none")
    ).test_client()
    refused = client.post("/api/v1/aliases/promote", headers=USER)
    assert refused.status_code == 403 and "ADMIN_TOKEN" in refused.json["detail"]
    assert client.get("/api/v1/aliases", headers=USER).status_code == 200


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"model": "nope"}, 404, "no model 'nope'"),
        ({"model": SMALL, "version": "0"}, 404, "has no version '0'"),
        ({"model": SMALL, "canary_percent": 101}, 400, "canary_percent must be a number from 0"),
        ({"model": SMALL, "shadow_percent": True}, 400, "shadow_percent must be a number"),
        ({"model": SMALL, "weight": 1}, 400, "unknown field(s) ['weight']"),
        ({"name": SMALL}, 400, 'send {"model"'),
        ([SMALL], 400, 'send {"model"'),
        ({"model": STABLE}, 409, "is stable already"),
    ],
)
def test_a_candidate_is_refused_naming_what_is_wrong(client, body, status, detail):
    response = put_candidate(client, **body) if isinstance(body, dict) else None
    if response is None:
        response = client.put("/api/v1/aliases/candidate", headers=ADMIN, json=body)
    assert response.status_code == status and detail in response.json["detail"], response.json
    assert client.get("/api/v1/aliases", headers=USER).json["candidate"] is None


def test_a_body_that_is_not_json_is_a_400(client):
    response = client.put("/api/v1/aliases/candidate", headers=ADMIN, data=b"{nope")
    assert response.status_code == 400 and "not valid JSON" in response.json["detail"]


def test_nothing_to_promote_or_roll_back_is_a_409(client):
    promote = client.post("/api/v1/aliases/promote", headers=ADMIN)
    assert promote.status_code == 409 and "no candidate" in promote.json["detail"]
    rollback = client.post("/api/v1/aliases/rollback", headers=ADMIN)
    assert rollback.status_code == 409 and "no previous" in rollback.json["detail"]


def test_shadow_never_changes_an_answer_and_counts_every_pair(client, tweets):
    plain = predict(client, tweets)
    scored = client.post(f"/api/v1/{TOKEN}/predict?scores=true", json=tweets).json
    assert put_candidate(client, model=OLD).status_code == 200
    shadowed = predict(client, tweets)
    assert shadowed.data == plain.data and shadowed.headers["X-Model-Name"] == STABLE
    assert client.post(f"/api/v1/{TOKEN}/predict?scores=true", json=tweets).json == scored
    ours = contract.labels_of(scored)
    theirs = registry.load_one(name=OLD).get().model.run(list(tweets.values()))
    expected = sum(a == b for a, b in zip(ours, theirs, strict=True))
    shadow = client.get("/api/v1/aliases", headers=USER).json["shadow"]
    # Two requests were shadowed (the plain and the scored), each of every tweet.
    assert shadow["pairs"] == 2 * len(tweets) and shadow["agreeing"] == 2 * expected
    assert shadow["agreement"] == round(expected / len(tweets), 6)


def test_the_score_differences_are_counted_as_observing_each_would(tweets):
    """shadow() writes a batch's differences once per bucket: the same sum and buckets as
    Histogram.observe of each tweet's difference."""
    from prometheus_client import CollectorRegistry, Histogram

    models = registry.load()
    stable, candidate = models.get(SMALL), models.get(OLD)
    texts = list(tweets.values())
    ours, theirs = stable.model.scores(texts), candidate.model.scores(texts)
    child = aliases.shadow_difference(candidate.name, candidate.version)

    def held():
        return child._sum.get(), [bucket.get() for bucket in child._buckets]

    reference = Histogram(
        "reference",
        "",
        buckets=aliases.SHADOW_DIFFERENCE._upper_bounds[:-1],
        registry=CollectorRegistry(),
    )
    for a, b in zip(ours, theirs, strict=True):
        reference.observe(abs(b - a))
    before = held()
    aliases.shadow(stable, candidate, texts, ours)
    after = held()
    assert after[0] - before[0] == pytest.approx(reference._sum.get())
    counted = [b - a for a, b in zip(before[1], after[1], strict=True)]
    assert counted == [bucket.get() for bucket in reference._buckets]
    assert sum(counted) == len(texts) and sum(1 for c in counted if c) > 1


def test_shadow_percent_0_scores_nothing_beside(client, tweets):
    assert put_candidate(client, model=OLD, shadow_percent=0).status_code == 200
    predict(client, tweets)
    assert client.get("/api/v1/aliases", headers=USER).json["shadow"]["pairs"] == 0


def test_the_agreement_counts_from_when_the_candidate_was_set(client, tweets):
    put_candidate(client, model=SMALL)
    predict(client, tweets)
    assert client.delete("/api/v1/aliases/candidate", headers=ADMIN).status_code == 200
    put_candidate(client, model=SMALL)
    assert client.get("/api/v1/aliases", headers=USER).json["shadow"]["pairs"] == 0


def test_the_guard_refuses_a_poor_candidate_and_too_few_pairs(tmp_path, tweets):
    client = make_app(tmp_path, PROMOTE_MIN_PAIRS=len(tweets)).test_client()
    put_candidate(client, model=OLD)
    few = client.post("/api/v1/aliases/promote", headers=ADMIN)
    assert few.status_code == 409 and "fewer than PROMOTE_MIN_PAIRS" in few.json["detail"]
    predict(client, tweets)
    poor = client.post("/api/v1/aliases/promote", headers=ADMIN)
    agreement = client.get("/api/v1/aliases", headers=USER).json["shadow"]["agreement"]
    assert agreement < 0.9, "the 2020 model should disagree with stable"
    assert poor.status_code == 409 and "less than PROMOTE_MIN_AGREEMENT" in poor.json["detail"]
    assert client.get("/api/v1/aliases", headers=USER).json["stable"]["model"] == STABLE
    forced = client.post("/api/v1/aliases/promote", headers=ADMIN, json={"force": True})
    assert forced.status_code == 200 and forced.json["stable"]["model"] == OLD
    assert predict(client, {"1": "I love it"}).headers["X-Model-Name"] == OLD


def test_a_candidate_that_agrees_enough_is_promoted_and_rolled_back(tmp_path, tweets):
    client = make_app(
        tmp_path, PROMOTE_MIN_PAIRS=len(tweets), PROMOTE_MIN_AGREEMENT="0.5"
    ).test_client()
    before = client.get("/api/v1/aliases", headers=USER).json["stable"]
    put_candidate(client, model=SMALL)
    predict(client, tweets)
    promoted = client.post("/api/v1/aliases/promote", headers=ADMIN)
    assert promoted.status_code == 200, promoted.json
    assert promoted.json["stable"]["model"] == SMALL and promoted.json["previous"] == before
    assert promoted.json["candidate"] is None
    assert predict(client, tweets).headers["X-Model-Name"] == SMALL
    back = client.post("/api/v1/aliases/rollback", headers=ADMIN).json
    assert back["stable"] == before and back["previous"]["model"] == SMALL
    assert predict(client, tweets).headers["X-Model-Name"] == STABLE


def test_a_20_percent_canary_answers_about_a_fifth_by_request_id(client):
    put_candidate(client, model=SMALL, canary_percent=20)
    ids = random.Random(20)  # the same 2,000 ids every run: the share cannot flake
    names = [
        predict(client, {"1": "ok"}, **{"X-Request-ID": f"{ids.getrandbits(128):032x}"}).headers[
            "X-Model-Name"
        ]
        for _ in range(2000)
    ]
    assert 0.17 <= names.count(SMALL) / 2000 <= 0.23, names.count(SMALL)
    for _ in range(20):
        request_id = uuid.uuid4().hex
        seen = {
            predict(client, {"1": "ok"}, **{"X-Request-ID": request_id}).headers["X-Model-Name"]
            for _ in range(3)
        }
        assert len(seen) == 1
        assert seen == {SMALL if aliases.canary_share(request_id) < 20 else STABLE}


def test_a_named_model_is_never_the_canarys(client):
    put_candidate(client, model=SMALL, canary_percent=100)
    assert predict(client, {"1": "ok"}).headers["X-Model-Name"] == SMALL
    named = client.post(f"/api/v1/models/{STABLE}/predict", json={"1": "ok"}, headers=USER)
    assert named.headers["X-Model-Name"] == STABLE


def test_aliases_survive_a_restart_and_reach_another_process(tmp_path):
    first, second = make_app(tmp_path).test_client(), make_app(tmp_path).test_client()
    put_candidate(first, model=SMALL)
    assert (
        first.post("/api/v1/aliases/promote", headers=ADMIN, json={"force": True}).status_code
        == 200
    )
    deadline = time.monotonic() + aliases.REFRESH_SECONDS + 1
    while predict(second, {"1": "ok"}).headers["X-Model-Name"] != SMALL:
        assert time.monotonic() < deadline, "the other process did not follow within 2 s"
        time.sleep(0.05)
    restarted = make_app(tmp_path).test_client()
    assert restarted.get("/api/v1/aliases", headers=USER).json["stable"]["model"] == SMALL
    assert predict(restarted, {"1": "ok"}).headers["X-Model-Name"] == SMALL


def test_a_file_naming_a_model_not_loaded_is_ignored_with_a_warning(tmp_path, caplog):
    (tmp_path / "aliases.json").write_text(
        json.dumps({"stable": {"model": "gone", "version": "0"}, "candidate": None})
    )
    client = make_app(tmp_path).test_client()
    assert predict(client, {"1": "ok"}).headers["X-Model-Name"] == STABLE
    assert "names models not loaded here: stable ('gone', '0')" in caplog.text
    for broken in ("{broken", "[]", '{"stable": "tweet-sentiment"}'):
        (tmp_path / "aliases.json").write_text(broken)
        served = registry.load(aliases_file=tmp_path / "aliases.json").get()
        assert served.name == STABLE, broken
        assert predict(client, {"1": "ok"}).headers["X-Model-Name"] == STABLE, broken
        time.sleep(aliases.REFRESH_SECONDS)  # the running app reads each one too


def test_every_other_door_follows_stable_and_is_shadowed(tmp_path, tweets):
    """The ZeroRPC service and a job worker, in this process, on the same aliases file."""
    path = tmp_path / "aliases.json"
    settings = {"ALIASES_FILE": str(path), "JOBS_DIR": str(tmp_path / "jobs")}
    service = rpc.Sentiment(rpc_settings(settings))
    worker_models = jobs.Worker(jobs.settings_of(settings)).models
    before = service.predict_with_model(tweets)
    assert before["model"] == STABLE
    own = registry.load(aliases_file=path)
    own.aliases.change(
        aliases.set_candidate(own.get, {"model": OLD}, lambda *_: {"pairs": 0, "agreeing": 0})
    )
    time.sleep(aliases.REFRESH_SECONDS)
    labels = {
        "stable_model": STABLE,
        "stable_version": before["model_version"],
        "candidate_model": OLD,
        "candidate_version": own.get(OLD).version,
    }
    start = shadow_pairs(labels)
    shadowed = service.predict_with_model(tweets)
    assert shadowed == before, "the shadow changed an answer"
    assert shadow_pairs(labels) == start + len(tweets)
    assert isinstance(worker_models.get().model, aliases.Shadowed)
    own.aliases.change(aliases.promote(lambda state: None))
    time.sleep(aliases.REFRESH_SECONDS)
    assert service.predict_with_model(tweets)["model"] == OLD
    assert worker_models.get().name == OLD


def shadow_pairs(labels):
    """This process's shadow pairs of one stable and candidate, every label."""
    import prometheus_client

    return sum(
        prometheus_client.REGISTRY.get_sample_value(
            "api_shadow_predictions_total", {**labels, "stable_label": a, "candidate_label": b}
        )
        or 0
        for a in ("Negative", "Positive")
        for b in ("Negative", "Positive")
    )


def rpc_settings(config):
    import service

    return service.Settings.load(rpc.DEFAULTS, config)


def test_an_aliases_file_that_cannot_be_written_is_a_503_naming_the_setting(tmp_path):
    (tmp_path / "a-file").write_text("")  # a folder no user can make, root included
    client = make_app(
        tmp_path, ALIASES_FILE=str(tmp_path / "a-file" / "aliases.json")
    ).test_client()
    response = put_candidate(client, model=SMALL)
    assert response.status_code == 503 and "ALIASES_FILE" in response.json["detail"]
    assert predict(client, {"1": "ok"}).headers["X-Model-Name"] == STABLE


def test_a_rollback_removes_the_candidate_and_its_pairs(tmp_path, tweets):
    """A candidate kept through a rollback could equal the new stable, and carry pairs counted
    against the stable rolled back from (found by tests/test_lifecycle.py's author)."""
    client = make_app(
        tmp_path, PROMOTE_MIN_PAIRS=len(tweets), PROMOTE_MIN_AGREEMENT="0.5"
    ).test_client()
    put_candidate(client, model=SMALL)
    assert (
        client.post("/api/v1/aliases/promote", headers=ADMIN, json={"force": True}).status_code
        == 200
    )
    put_candidate(client, model=STABLE)
    predict(client, tweets)
    back = client.post("/api/v1/aliases/rollback", headers=ADMIN).json
    assert back["stable"]["model"] == STABLE and back["candidate"] is None
    assert back["shadow"]["pairs"] == 0
    refused = client.post("/api/v1/aliases/promote", headers=ADMIN)
    assert refused.status_code == 409 and "no candidate" in refused.json["detail"]
