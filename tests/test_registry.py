"""The model registry: models.json read and checked, models loaded by kind, names and versions
resolved, failures held and reported; and the REST routes that address models by name."""

import hashlib
import json
import shutil
import sys

import pytest
from conftest import TOKEN

import api
import model
import registry

AUTH = {"Authorization": f"Bearer {TOKEN}"}
CATALOGUE = json.loads(registry.MODELS_FILE.read_text())
PAYLOAD = json.loads((registry.MODELS_FILE.parent / "payload.json").read_text())


def write(tmp_path, document):
    path = tmp_path / "models.json"
    path.write_text(json.dumps(document))
    return path


def entry(name="tweet-sentiment", versions=("artifacts",), **more):
    return {
        "name": name,
        "kind": "log-count-ratio-logistic",
        "display_name": name.title(),
        "description": f"the model {name}",
        "versions": [str(registry.MODELS_FILE.parent / v) for v in versions],
        **more,
    }


def second_version(tmp_path):
    """A copy of the shipped artifacts with one more note in evaluation.json: another version."""
    folder = shutil.copytree(
        model.ARTIFACTS_DIR, tmp_path / "v2", ignore=shutil.ignore_patterns("*-*")
    )
    evaluation = json.loads((folder / model.EVALUATION_FILE).read_text())
    (folder / model.EVALUATION_FILE).write_text(json.dumps({**evaluation, "note": "retrained"}))
    lines = [
        f"{hashlib.sha256((folder / n).read_bytes()).hexdigest()}  {n}\n"
        for n in sorted((model.EVALUATION_FILE, model.MODEL_FILE, model.PREPROCESSING_FILE))
    ]
    (folder / model.MANIFEST_FILE).write_text("".join(lines))
    return folder


def test_the_shipped_catalogue_loads_every_model_and_each_answers():
    models = registry.load()
    assert models.default == CATALOGUE["default"]
    assert [m["name"] for m in models.listing()] == [m["name"] for m in CATALOGUE["models"]]
    for item in models.listing():
        assert item["state"] == "loaded" and item["version"] in item["versions"]
        served = models.get(item["name"])
        assert served.model.run(["I love it", "I hate it"]) == ["Positive", "Negative"]
    assert models.ready() == (True, {m["name"]: "loaded" for m in CATALOGUE["models"]}, None)


@pytest.mark.parametrize(
    "document, problem",
    [
        ([], 'it needs {"default": name, "models": [...]}'),
        ({"default": "a", "models": []}, "it names no model"),
        ({"default": "a", "models": [{"name": "a"}]}, "model 0 needs the fields name, kind"),
        ({"default": "x", "models": [entry()]}, "default must name one of its models"),
        ({"default": "tweet-sentiment", "models": [entry(), entry()]}, "name appears twice"),
        ({"default": "tweet-sentiment", "models": [entry(versions=())]}, "list of version"),
        ({"default": "tweet-sentiment", "models": [entry(serve=3)]}, "serve must be a version"),
    ],
)
def test_a_malformed_catalogue_is_refused_naming_what_is_wrong(tmp_path, document, problem):
    path = write(tmp_path, document)
    with pytest.raises(RuntimeError) as raised:
        registry.load(path)
    assert str(raised.value).startswith(f"{path} is malformed: ") and problem in str(raised.value)


def test_a_catalogue_that_is_not_json_is_named(tmp_path):
    path = tmp_path / "models.json"
    path.write_text("{")
    with pytest.raises(RuntimeError, match=f"{path} is not valid JSON"):
        registry.load(path)
    with pytest.raises(RuntimeError, match="cannot read the model catalogue"):
        registry.load(tmp_path / "absent.json")


def test_a_name_resolves_to_the_version_served_never_the_newest(tmp_path):
    newer = second_version(tmp_path)
    shipped = model.load()
    two = entry(versions=("artifacts",))
    two["versions"].append(str(newer))
    with pytest.raises(RuntimeError, match="it lists 2 versions and serves none: set its serve"):
        registry.load(write(tmp_path, {"default": "tweet-sentiment", "models": [two]}))
    newer_version = model.load(newer).version
    for serve in (shipped.version, newer_version):
        document = {"default": "tweet-sentiment", "models": [{**two, "serve": serve}]}
        models = registry.load(write(tmp_path, document))
        assert models.get().version == serve
        assert set(models.entries["tweet-sentiment"].versions) == {shipped.version, newer_version}
        assert models.get("tweet-sentiment", newer_version).model.evaluation["note"] == "retrained"


def test_a_failed_optional_model_is_reported_and_the_others_serve(tmp_path):
    broken = entry("broken", versions=(), required=False)
    broken["versions"] = [str(tmp_path)]  # no artifacts there
    document = {"default": "tweet-sentiment", "models": [entry(), broken]}
    app = api.create_app({"API_TOKEN": TOKEN, "MODELS_FILE": str(write(tmp_path, document))})
    client = app.test_client()
    listing = client.get("/api/v1/models", headers=AUTH).json["models"]
    assert [(m["name"], m["state"]) for m in listing] == [
        ("tweet-sentiment", "loaded"),
        ("broken", "failed"),
    ]
    assert "MANIFEST.sha256" in listing[1]["error"]
    ready = client.get("/ready")
    assert ready.status_code == 200
    assert ready.json["models"] == {"tweet-sentiment": "loaded", "broken": "failed"}
    answer = client.post("/api/v1/models/broken/predict", json=PAYLOAD, headers=AUTH)
    assert answer.status_code == 503
    assert answer.json["detail"].startswith("model 'broken' failed to load: cannot read")
    assert client.post("/api/v1/predict", json=PAYLOAD, headers=AUTH).status_code == 200


def test_a_failed_required_model_makes_ready_503_naming_it(tmp_path):
    broken = entry("broken", versions=(), required=True)
    broken["versions"] = [str(tmp_path)]
    document = {"default": "tweet-sentiment", "models": [entry(), broken]}
    app = api.create_app({"API_TOKEN": TOKEN, "MODELS_FILE": str(write(tmp_path, document))})
    ready = app.test_client().get("/ready")
    assert ready.status_code == 503
    assert ready.json["status"] == "not ready" and ready.json["error"] == 503
    assert ready.json["detail"].startswith("broken: cannot read model manifest")


def test_the_default_failing_stops_start_up(tmp_path):
    broken = entry(versions=())
    broken["versions"] = [str(tmp_path)]
    path = write(tmp_path, {"default": "tweet-sentiment", "models": [broken]})
    with pytest.raises(RuntimeError, match="model 'tweet-sentiment' cannot load"):
        registry.load(path)


def test_a_model_of_a_new_kind_is_served_without_touching_a_door(tmp_path, monkeypatch):
    """A kind is a module with load(folder); the doors need nothing more."""
    (tmp_path / "kind_always_positive.py").write_text(
        "import model\n"
        "class Always:\n"
        "    version, evaluation = 'constant-1', {'note': 'always Positive'}\n"
        "    def scores(self, tweets):\n"
        "        return [0.9 for _ in tweets]\n"
        "    def run(self, tweets):\n"
        "        return model.labels(self.scores(tweets))\n"
        "    def explain(self, tweet):\n"
        "        return {'Positive': [['everything', 1.0]], 'Negative': []}\n"
        "def load(folder):\n"
        "    return Always()\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(registry.KINDS, "always-positive", "kind_always_positive")
    always = {**entry("always"), "kind": "always-positive", "versions": ["unused"]}
    document = {"default": "tweet-sentiment", "models": [entry(), always]}
    app = api.create_app({"API_TOKEN": TOKEN, "MODELS_FILE": str(write(tmp_path, document))})
    client = app.test_client()
    answer = client.post("/api/v1/models/always/predict", json={"1": "I hate it"}, headers=AUTH)
    assert answer.json == {"1": "Positive"}
    assert answer.headers["X-Model-Version"] == "constant-1"
    meta = client.get("/api/v1/models/always", headers=AUTH).json
    assert (meta["kind"], meta["note"]) == ("always-positive", "always Positive")
    sys.modules.pop("kind_always_positive", None)


def test_an_unknown_kind_is_held_as_a_failure_naming_the_known_ones(tmp_path):
    odd = {**entry("odd", required=False), "kind": "quantum"}
    models = registry.load(
        write(tmp_path, {"default": "tweet-sentiment", "models": [entry(), odd]})
    )
    assert models.entries["odd"].error.startswith("unknown kind 'quantum'; known kinds:")


# The REST routes, with the shipped models.


@pytest.mark.parametrize("query", ["", "?scores=true"])  # the fast path, and Flask's
def test_every_predict_answer_names_the_model_and_version(client, query):
    served = client.application.extensions["registry"].get()
    for path, headers in ((f"/api/v1/{TOKEN}/predict", {}), ("/api/v1/predict", AUTH)):
        answer = client.post(path + query, json=PAYLOAD, headers=headers)
        assert answer.status_code == 200
        assert answer.headers["X-Model-Name"] == served.name
        assert answer.headers["X-Model-Version"] == served.version


def test_each_model_is_reached_by_name_and_by_version(client):
    models = client.application.extensions["registry"]
    for item in client.get("/api/v1/models", headers=AUTH).json["models"]:
        name, version = item["name"], item["version"]
        expected = models.get(name).model.run(list(PAYLOAD.values()))
        for path in (
            f"/api/v1/models/{name}/predict",
            f"/api/v1/models/{name}/versions/{version}/predict",
        ):
            answer = client.post(path, json=PAYLOAD, headers=AUTH)
            assert list(answer.json.values()) == expected
            assert (answer.headers["X-Model-Name"], answer.headers["X-Model-Version"]) == (
                name,
                version,
            )
        meta = client.get(f"/api/v1/models/{name}", headers=AUTH).json
        assert (meta["name"], meta["version"], meta["kind"]) == (name, version, item["kind"])
        assert meta["labels"] == ["Negative", "Positive"] and meta["output"]["type"] == "object"
        assert "accuracy" in meta["figures"]["this_model"]


def test_the_default_model_is_what_the_design_card_route_answers(client):
    listing = client.get("/api/v1/models", headers=AUTH).json["models"]
    default = [m for m in listing if m["default"]]
    assert [m["name"] for m in default] == [CATALOGUE["default"]]
    assert client.get("/api/v1/model", headers=AUTH).json["name"] == CATALOGUE["default"]


@pytest.mark.parametrize(
    "path, status, detail",
    [
        ("/api/v1/models/nope/predict", 404, "no model 'nope'; known models: 'tweet-sentiment"),
        ("/api/v1/models/tweet-sentiment/versions/0/predict", 404, "has no version '0'"),
    ],
)
def test_an_unknown_model_or_version_is_404_naming_the_known_ones(client, path, status, detail):
    answer = client.post(path, json=PAYLOAD, headers=AUTH)
    assert answer.status_code == status and detail in answer.json["detail"]
    assert answer.json["error"] == status
    assert client.get("/api/v1/models/nope", headers=AUTH).status_code == 404


def test_the_model_routes_need_a_token(client):
    for path in ("/api/v1/models", "/api/v1/models/tweet-sentiment"):
        assert client.get(path).status_code == 401
    answer = client.post("/api/v1/models/tweet-sentiment/predict", json=PAYLOAD)
    assert answer.status_code == 401
    # no model name is told to a client without a token
    assert "tweet-sentiment" not in client.post("/api/v1/models/nope/predict", json=PAYLOAD).text
