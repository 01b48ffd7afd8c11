"""Aliases (aliases/) through the app: who may move them, what each route refuses, the guard, the
shadow and the canary, and the file every process follows. The real server's load through a
promotion and a rollback is tests/test_lifecycle.py's."""

import csv
import hashlib
import json
import random
import shutil
import time
import uuid
from pathlib import Path

import pytest
from conftest import ADMIN_TOKEN, OTHER_TOKEN, TOKEN, absent, evidence

import aliases
import api
import jobs
import model
import registry
import rpc

LARGE, SMALL, OLD = "tweet-sentiment-large", "tweet-sentiment", "tweet-sentiment-2020"
DEFAULT = registry.read_catalogue(registry.MODELS_FILE)["default"]
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
        ({"model": DEFAULT}, 409, "is stable already"),
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


def test_shadow_never_changes_an_answer(client, tweets):
    plain = predict(client, tweets)
    scored = client.post(f"/api/v1/{TOKEN}/predict?scores=true", json=tweets).json
    assert put_candidate(client, model=OLD).status_code == 200
    shadowed = predict(client, tweets)
    assert shadowed.data == plain.data and shadowed.headers["X-Model-Name"] == DEFAULT
    assert client.post(f"/api/v1/{TOKEN}/predict?scores=true", json=tweets).json == scored


def test_the_guard_counts_what_the_models_tell_apart_once_and_100_from_a_batch(client, tweets):
    """Issue #37 items 12 and the probe after it: a tweet is the pair of scores both models give
    it, so texts they cannot tell apart (case, spacing, words neither knows) count once; no batch
    adds more than 100."""
    put_candidate(client, model=OLD)
    texts = list(tweets.values())
    first = {str(i): t for i, t in enumerate(texts[:80])}
    predict(client, first)
    shadow = client.get("/api/v1/aliases", headers=USER).json["shadow"]
    expected = evidence(DEFAULT, OLD, texts[:80])
    assert (shadow["pairs"], shadow["agreeing"]) == (expected["pairs"], expected["agreeing"])
    predict(client, first)  # the same tweets again: nothing more
    assert client.get("/api/v1/aliases", headers=USER).json["shadow"]["pairs"] == shadow["pairs"]
    copies = {str(i): f"{'HAPPY  happy' if i % 2 else ' happy happy'} zq{i}x" for i in range(9_000)}
    predict(client, copies)  # one piece of evidence: neither model knows "zq1x", "zq2x", ...
    copies_too = evidence(DEFAULT, OLD, [*texts[:80], *copies.values()])["pairs"]
    assert copies_too == shadow["pairs"] + 1
    assert client.get("/api/v1/aliases", headers=USER).json["shadow"]["pairs"] == copies_too
    predict(client, {str(i): t for i, t in enumerate(texts[80:])})  # 320 new: 100 counted
    assert (
        client.get("/api/v1/aliases", headers=USER).json["shadow"]["pairs"]
        == copies_too + aliases.MAX_PAIRS_A_BATCH
    )


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


@pytest.fixture(scope="module")
def reference():
    """The labelled reference set the guard reads (api.DEFAULTS), or a skip naming it."""
    path = Path(api.DEFAULTS["GUARD_REFERENCE_FILE"])
    if not path.is_file():
        absent(f"the guard's labelled reference set is absent: {path} (see shared/data)")
    return path


def shadow_many(client, tweets, batch=90):
    """Send the tweets in batches under the guard's cap, so that every distinct one counts."""
    items = list(tweets.items())
    for start in range(0, len(items), batch):
        predict(client, dict(items[start : start + batch]))


def force(client, model):
    assert put_candidate(client, model=model).status_code == 200
    forced = client.post("/api/v1/aliases/promote", headers=ADMIN, json={"force": True})
    assert forced.status_code == 200 and forced.json["stable"]["model"] == model


def test_the_guard_refuses_a_model_worse_on_labelled_tweets_naming_both(tmp_path, reference):
    """The 2020 model against the default: refused on the labels, before any traffic, with both
    figures; forced, it is promoted."""
    client = make_app(tmp_path).test_client()
    put_candidate(client, model=OLD)
    refused = client.post("/api/v1/aliases/promote", headers=ADMIN)
    state = client.get("/api/v1/aliases", headers=USER).json
    ours, theirs = state["labelled"]["stable"], state["labelled"]["candidate"]
    assert theirs["balanced_accuracy"] < ours["balanced_accuracy"] - 0.05
    detail = refused.json["detail"]
    assert refused.status_code == 409 and "labelled tweets" in detail, refused.json
    assert f"{theirs['balanced_accuracy']:.4f}" in detail
    assert f"{ours['balanced_accuracy']:.4f}" in detail
    assert state["guard"] == {
        "promotable": False,
        "reason": detail.split(": ", 1)[1].rsplit(";", 1)[0],
    }
    assert client.get("/api/v1/aliases", headers=USER).json["stable"]["model"] == DEFAULT
    force(client, OLD)
    assert predict(client, {"1": "I love it"}).headers["X-Model-Name"] == OLD


def test_a_model_with_its_labels_flipped_is_refused(tmp_path, reference):
    models_file = flipped_catalogue(tmp_path)
    client = make_app(tmp_path, MODELS_FILE=str(models_file)).test_client()
    put_candidate(client, model="flipped")
    refused = client.post("/api/v1/aliases/promote", headers=ADMIN)
    labelled = client.get("/api/v1/aliases", headers=USER).json["labelled"]
    assert (
        labelled["candidate"]["balanced_accuracy"] < 0.5 < labelled["stable"]["balanced_accuracy"]
    )
    assert labelled["agreement"] < 0.05
    assert refused.status_code == 409 and "labelled tweets" in refused.json["detail"]


def flipped_catalogue(folder):
    """models.json with one more model: the default's artifacts with every weight's sign
    turned, so that its every score s becomes 1 - s, with its manifest made again."""
    catalogue = json.loads(registry.MODELS_FILE.read_text())
    default = next(m for m in catalogue["models"] if m["name"] == catalogue["default"])
    flipped = folder / "flipped"
    shutil.copytree(
        registry.MODELS_FILE.parent / default["versions"][0],
        flipped,
        ignore=shutil.ignore_patterns("tweet-*"),
    )
    weights = json.loads((flipped / model.MODEL_FILE).read_text())
    for key in ("coefficients", "dense_coefficients"):
        weights[key] = [-w for w in weights[key]]
    weights["intercept"] = -weights["intercept"]
    (flipped / model.MODEL_FILE).write_text(json.dumps(weights))
    names = sorted(p.name for p in flipped.iterdir() if p.name != model.MANIFEST_FILE)
    digests = [hashlib.sha256((flipped / n).read_bytes()).hexdigest() for n in names]
    (flipped / model.MANIFEST_FILE).write_text(
        "".join(f"{d}  {n}\n" for d, n in zip(digests, names, strict=True))
    )
    for entry in catalogue["models"]:
        entry["versions"] = [str(registry.MODELS_FILE.parent / v) for v in entry["versions"]]
    catalogue["models"].append(
        {
            "name": "flipped",
            "kind": default["kind"],
            "display_name": "Flipped",
            "description": "the default with its labels flipped",
            "required": False,
            "versions": [str(flipped)],
        }
    )
    path = folder / "models.json"
    path.write_text(json.dumps(catalogue))
    return path


def test_a_better_model_is_promoted_without_force_and_rolled_back(tmp_path, tweets, reference):
    """The 2020 model forced in as stable; tweet-sentiment, better on the labels, passes the
    guard once it has shadowed PROMOTE_MIN_PAIRS distinct tweets."""
    client = make_app(tmp_path, PROMOTE_MIN_PAIRS=len(tweets)).test_client()
    force(client, OLD)
    before = client.get("/api/v1/aliases", headers=USER).json["stable"]
    put_candidate(client, model=SMALL)
    few = client.post("/api/v1/aliases/promote", headers=ADMIN)
    assert few.status_code == 409 and "fewer than PROMOTE_MIN_PAIRS" in few.json["detail"]
    shadow_many(client, tweets)
    state = client.get("/api/v1/aliases", headers=USER).json
    expected = evidence(OLD, SMALL, tweets.values())["pairs"]
    assert state["shadow"]["pairs"] == expected >= 0.95 * len(tweets)
    assert state["guard"] == {"promotable": True, "reason": None}, state
    promoted = client.post("/api/v1/aliases/promote", headers=ADMIN)
    assert promoted.status_code == 200, promoted.json
    assert promoted.json["stable"]["model"] == SMALL and promoted.json["previous"] == before
    assert promoted.json["candidate"] is None
    assert predict(client, tweets).headers["X-Model-Name"] == SMALL
    back = client.post("/api/v1/aliases/rollback", headers=ADMIN).json
    assert back["stable"] == before and back["previous"]["model"] == SMALL
    assert predict(client, tweets).headers["X-Model-Name"] == OLD


def test_without_the_reference_set_the_guard_refuses_naming_it(tmp_path, tweets):
    """Live traffic alone could be one client's: with no labelled evidence nothing is promoted
    but by force (the probe after #37 promoted the 2020 model with 11 requests)."""
    missing = tmp_path / "no-such.csv"
    client = make_app(
        tmp_path, GUARD_REFERENCE_FILE=str(missing), PROMOTE_MIN_PAIRS=len(tweets)
    ).test_client()
    force(client, "tweet-sentiment-large")
    put_candidate(client, model=SMALL)
    shadow_many(client, tweets)
    state = client.get("/api/v1/aliases", headers=USER).json
    assert str(missing) in state["labelled"]["unavailable"]
    assert state["shadow"]["agreement"] >= 0.9  # it would have passed on agreement alone
    refused = client.post("/api/v1/aliases/promote", headers=ADMIN)
    assert refused.status_code == 409 and "no labelled evidence" in refused.json["detail"]
    assert str(missing) in refused.json["detail"]
    assert (
        client.post("/api/v1/aliases/promote", headers=ADMIN, json={"force": True}).status_code
        == 200
    )


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
        assert seen == {SMALL if aliases.canary_share(request_id) < 20 else DEFAULT}


def test_a_named_model_is_never_the_canarys(client):
    put_candidate(client, model=SMALL, canary_percent=100)
    assert predict(client, {"1": "ok"}).headers["X-Model-Name"] == SMALL
    named = client.post(f"/api/v1/models/{LARGE}/predict", json={"1": "ok"}, headers=USER)
    assert named.headers["X-Model-Name"] == LARGE


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
    assert predict(client, {"1": "ok"}).headers["X-Model-Name"] == DEFAULT
    assert "names models not loaded here: stable ('gone', '0')" in caplog.text
    for broken in ("{broken", "[]", '{"stable": "tweet-sentiment"}'):
        (tmp_path / "aliases.json").write_text(broken)
        served = registry.load(aliases_file=tmp_path / "aliases.json").get()
        assert served.name == DEFAULT, broken
        assert predict(client, {"1": "ok"}).headers["X-Model-Name"] == DEFAULT, broken
        time.sleep(aliases.REFRESH_SECONDS)  # the running app reads each one too


def test_every_other_door_follows_stable_and_is_shadowed(tmp_path, tweets):
    """The ZeroRPC service and a job worker, in this process, on the same aliases file."""
    path = tmp_path / "aliases.json"
    settings = {"ALIASES_FILE": str(path), "JOBS_DIR": str(tmp_path / "jobs")}
    service = rpc.Sentiment(rpc_settings(settings))
    worker_models = jobs.Worker(jobs.settings_of(settings)).models
    before = service.predict_with_model(tweets)
    assert before["model"] == DEFAULT
    own = registry.load(aliases_file=path)
    own.aliases.change(aliases.set_candidate(own.get, {"model": OLD}))
    time.sleep(aliases.REFRESH_SECONDS)
    labels = {
        "stable_model": DEFAULT,
        "stable_version": before["model_version"],
        "candidate_model": OLD,
        "candidate_version": own.get(OLD).version,
    }
    start = shadow_pairs(labels)
    shadowed = service.predict_with_model(tweets)
    assert shadowed == before, "the shadow changed an answer"
    assert shadow_pairs(labels) == start + len(tweets)
    assert isinstance(worker_models.get().model, aliases.Shadowed)
    own.aliases.change(aliases.promote(lambda state, totals: None))
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
    assert predict(client, {"1": "ok"}).headers["X-Model-Name"] == DEFAULT


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
    put_candidate(client, model=DEFAULT)
    predict(client, tweets)
    back = client.post("/api/v1/aliases/rollback", headers=ADMIN).json
    assert back["stable"]["model"] == DEFAULT and back["candidate"] is None
    assert back["shadow"]["pairs"] == 0
    refused = client.post("/api/v1/aliases/promote", headers=ADMIN)
    assert refused.status_code == 409 and "no candidate" in refused.json["detail"]


def test_counts_belong_to_their_candidate_and_outlive_the_process(tmp_path, tweets):
    """Issue #37 item 13: setting a candidate again starts its counts at 0 (a new epoch); what
    each process counted is kept beside the aliases file, keys every process counts once, so a
    restart neither loses nor inflates them, and the agreement is never above 1."""
    client = make_app(tmp_path).test_client()
    put_candidate(client, model=OLD)
    texts = list(tweets.values())
    shadow_many(client, {str(i): t for i, t in enumerate(texts[:200])})
    put_candidate(client, model=OLD)
    assert client.get("/api/v1/aliases", headers=USER).json["shadow"]["pairs"] == 0
    shadow_many(client, {str(i): t for i, t in enumerate(texts[200:])})
    state = client.get("/api/v1/aliases", headers=USER).json
    assert state["shadow"]["pairs"] == evidence(DEFAULT, OLD, texts[200:])["pairs"]
    folder = tmp_path / "aliases.json.shadow"
    assert [p.name.split("--")[0] for p in folder.iterdir()] == [state["candidate"]["epoch"]]
    restarted = make_app(tmp_path).test_client()  # a process of its own, as after a restart
    shadow_many(restarted, {str(i): t for i, t in enumerate(texts[200:])})  # the same again
    again = restarted.get("/api/v1/aliases", headers=USER).json
    assert again["shadow"] == state["shadow"] and again["shadow"]["agreement"] <= 1


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("put", "/api/v1/aliases/candidate"),
        ("delete", "/api/v1/aliases/candidate"),
        ("post", "/api/v1/aliases/promote"),
        ("post", "/api/v1/aliases/rollback"),
    ],
)
def test_deeply_nested_json_to_the_admin_routes_is_a_400(client, method, path):
    """Issue #37 item 14 (it was a RecursionError, a 500)."""
    body = "[" * 50_000 + "]" * 50_000
    for text in (body, '{"force": ' + body + "}", '{"model": ' + "{" * 30_000 + "}"):
        response = getattr(client, method)(path, headers=ADMIN, data=text)
        assert response.status_code == 400, (text[:20], response.json)
    deep = client.put("/api/v1/aliases/candidate", headers=ADMIN, data=body)
    assert deep.status_code == 400 and "nested too deeply" in deep.json["detail"]


def test_a_damaged_aliases_file_is_a_503_naming_it_and_ready_says_so(tmp_path):
    """Issue #37 item 15: every admin change was a 500 while /ready and GET reported the old
    state."""
    client = make_app(tmp_path).test_client()
    path = tmp_path / "aliases.json"
    path.write_text('{"stable": null}')
    time.sleep(aliases.REFRESH_SECONDS)
    for response in (
        put_candidate(client, model=SMALL),
        client.post("/api/v1/aliases/promote", headers=ADMIN, json={"force": True}),
        client.post("/api/v1/aliases/rollback", headers=ADMIN),
        client.delete("/api/v1/aliases/candidate", headers=ADMIN),
    ):
        assert response.status_code == 503, response.json
        assert (
            str(path) in response.json["detail"] and "stable must name" in response.json["detail"]
        )
        assert response.headers["Retry-After"] == "5"
    ready = client.get("/ready")  # it read the aliases before: it serves them, and says so
    assert ready.status_code == 200 and str(path) in ready.json["aliases"]["problem"]
    assert str(path) in client.get("/api/v1/aliases", headers=USER).json["home"]["problem"]
    assert predict(client, {"1": "ok"}).headers["X-Model-Name"] == DEFAULT
    started = make_app(tmp_path).test_client().get("/ready")  # never read them: not ready
    assert started.status_code == 503 and str(path) in started.json["detail"]
    path.unlink()
    assert put_candidate(client, model=SMALL).status_code == 200


def test_of_two_admins_at_once_the_later_is_told_what_changed(tmp_path):
    first, second = make_app(tmp_path).test_client(), make_app(tmp_path).test_client()
    put_candidate(first, model=SMALL)
    assert second.get("/api/v1/aliases", headers=USER).json["candidate"]["model"] == SMALL
    forced = {"force": True}
    assert first.post("/api/v1/aliases/promote", headers=ADMIN, json=forced).status_code == 200
    late = second.post("/api/v1/aliases/promote", headers=ADMIN, json=forced)
    assert late.status_code == 409 and "no candidate" in late.json["detail"]
    assert "changed meanwhile: version 2: stable tweet-sentiment" in late.json["detail"]
    assert second.get("/api/v1/aliases", headers=USER).json["stable"]["model"] == SMALL


def test_the_peoples_labels_model_replaces_the_large_one_without_force(tmp_path, tweets, reference):
    """Issue #38 item 3, the lifecycle that made tweet-sentiment-people the default: with
    tweet-sentiment-large stable, people's model passes the guard on the labelled tweets (where
    it disagrees with large on about a quarter) and, once it has shadowed enough distinct live
    tweets, is promoted without force."""
    people, large = "tweet-sentiment-people", "tweet-sentiment-large"
    client = make_app(tmp_path, PROMOTE_MIN_PAIRS=300).test_client()
    force(client, large)
    put_candidate(client, model=people)
    early = client.get("/api/v1/aliases", headers=USER).json
    labelled = early["labelled"]
    assert (
        labelled["candidate"]["balanced_accuracy"] > labelled["stable"]["balanced_accuracy"] + 0.1
    )
    assert "fewer than PROMOTE_MIN_PAIRS (300)" in early["guard"]["reason"]
    shadow_many(client, tweets)
    state = client.get("/api/v1/aliases", headers=USER).json
    assert state["shadow"]["pairs"] == evidence(large, people, tweets.values())["pairs"] >= 300
    assert state["guard"] == {"promotable": True, "reason": None}, state
    promoted = client.post("/api/v1/aliases/promote", headers=ADMIN)
    assert promoted.status_code == 200 and promoted.json["stable"]["model"] == people
