"""The model registry: the one place models are loaded. Every door asks it for a model by name.

models.json (MODELS_FILE) names each model the service serves: its kind, display name,
description, and the folder of each of its versions. A version is the content hash of its
artifacts (model.read_manifest), so it says exactly what answered. A name resolves to the version
models.json's "serve" names; a model of one version serves it; a model of several versions with
no "serve" is a configuration error, never silently the newest.

A kind is a module with load(folder) returning an object with version, evaluation,
scores(tweets), run(tweets) and explain(tweet), as model.Model has: a model of a new kind is a
module and a line in KINDS, and no door changes.

A model that fails to load is held with its reason, shown in the listing and /ready, and the
others serve; start-up fails only when the default cannot load.

A request that names no model gets the stable alias (aliases/: with none stored, models.json's
default), shadowed by the candidate when one is set; route(request_id) may give it the candidate
instead, as its canary share says.
"""

import dataclasses
import importlib
import json
from pathlib import Path

import aliases
import contract
import model

MODELS_FILE = Path(__file__).resolve().parent / "models.json"
KINDS = {  # kind: the module that loads and scores it
    "log-count-ratio-logistic": "model",
    "summed-frequency-linear": "model_2020",
}
SMOKE_TWEET = "a model that cannot answer does not replace the one in service"


@dataclasses.dataclass
class Entry:
    """A model's name and description, its loaded versions, and what failed to load."""

    name: str
    kind: str
    display_name: str
    description: str
    required: bool
    serve: str | None = None  # the version the name resolves to
    versions: dict = dataclasses.field(default_factory=dict)  # version: loaded model
    folders: dict = dataclasses.field(default_factory=dict)  # version: its artifacts' folder
    error: str | None = None

    @property
    def state(self):
        return "loaded" if self.error is None else "failed"


@dataclasses.dataclass(frozen=True)
class Served:
    """What a door asked for: the model's name, the version that answers, and the model."""

    name: str
    version: str
    model: object
    entry: Entry


class Registry:
    def __init__(self, entries, default, aliases_file=None, database_url=""):
        self.entries, self.configured = entries, default
        # Metric labels and headers take only these values: registered names and versions.
        self.known = {(n, v) for n, e in entries.items() for v in e.versions}
        self.aliases = None
        if aliases_file is not None or database_url:
            fallback = (default, entries[default].serve)
            self.aliases = aliases.follow(self.known, fallback, aliases_file, database_url)

    @property
    def default(self):
        """The name a request that names none is answered by: stable's, or models.json's."""
        return self.configured if self.aliases is None else self.aliases.current().stable["model"]

    def get(self, name=None, version=None):
        """Return the Served for a name (the default if None) and optional version; UnknownModel
        naming the known ones otherwise. The default is the stable alias; whatever asks for the
        stable model and version scores with the candidate beside it when a shadow is set."""
        if self.aliases is None:
            return self.find(self.configured if name is None else name, version)
        state = self.aliases.current()
        stable = state.stable
        served = self.find(
            stable["model"] if name is None else name,
            version or (stable["version"] if name is None else None),
        )
        candidate = state.candidate
        if (
            candidate is None
            or not candidate.get("shadow_percent")
            or (served.name, served.version) != (stable["model"], stable["version"])
        ):
            return served
        other = self.find(candidate["model"], candidate["version"])
        shadowed = aliases.Shadowed(
            served, other, candidate["shadow_percent"], state.epoch, self.aliases.counts
        )
        return dataclasses.replace(served, model=shadowed)

    def route(self, request_id):
        """The Served for a default request with this id: the candidate for its canary share,
        else get()'s."""
        if self.aliases is not None and request_id is not None:
            candidate = self.aliases.current().candidate
            percent = candidate.get("canary_percent", 0) if candidate else 0
            if percent and aliases.canary_share(request_id) < percent:
                return self.find(candidate["model"], candidate["version"])
        return self.get()

    def find(self, name, version=None):
        entry = self.entries.get(name)
        if entry is None:
            raise contract.UnknownModel(
                f"no model {name!r}; known models: {', '.join(map(repr, self.entries))}"
            )
        if entry.error is not None:
            raise ModelUnavailable(f"model {name!r} failed to load: {entry.error}")
        version = entry.serve if version is None else version
        if version not in entry.versions:
            raise contract.UnknownModel(
                f"model {name!r} has no version {version!r}; its versions: "
                f"{', '.join(map(repr, entry.versions))}"
            )
        return Served(name, version, entry.versions[version], entry)

    def listing(self):
        """Every model, loaded or not, as GET /api/v1/models lists them."""
        models, default = [], self.default
        state = self.aliases.current().as_dict() if self.aliases else {}
        for name, entry in self.entries.items():
            item = {
                "name": name,
                "display_name": entry.display_name,
                "description": entry.description,
                "kind": entry.kind,
                "version": entry.serve,
                "versions": list(entry.versions),
                "default": name == default,
                "aliases": [a for a, v in state.items() if v is not None and v["model"] == name],
                "state": entry.state,
            }
            if entry.error is not None:
                item["error"] = entry.error
            models.append(item)
        return models

    def ready(self):
        """Return (ready, {name: state}, problem): ready when every required model is loaded and
        the aliases, if followed, have been read and name only models loaded here."""
        states = {n: e.state for n, e in self.entries.items()}
        default = self.default
        required = [e for e in self.entries.values() if e.required or e.name == default]
        problems = [f"{e.name}: {e.error}" for e in required if e.error is not None]
        if self.aliases is not None and not self.aliases.ready():
            problems.append(self.aliases.problem or "the aliases have not been read yet")
        return bool(required) and not problems, states, "; ".join(problems) or None


class ModelUnavailable(contract.PredictionError):
    """A registered model that failed to load: the server's fault, not the request's."""

    status, text = 503, "Service Unavailable"


def load(path=MODELS_FILE, only=None, aliases_file=None, database_url=""):
    """Load the models that models.json at `path` names (or only those named in `only`); with
    aliases_file or database_url, a request that names no model follows the aliases there.

    RuntimeError naming the file when models.json is unreadable or malformed, or when the
    default (or a model in `only`) cannot load; other models that fail are held with the reason.
    """
    path = Path(path)
    catalogue = read_catalogue(path)
    default = catalogue["default"]
    wanted = set(only) if only else None
    entries = {}
    for item in catalogue["models"]:
        if wanted is not None and item["name"] not in wanted:
            continue
        entries[item["name"]] = entry = load_entry(item, path.parent)
        if entry.error is not None and (item["name"] == default or wanted):
            raise RuntimeError(f"model {item['name']!r} cannot load: {entry.error}")
    if wanted is not None:
        if wanted - entries.keys():
            missing = ", ".join(sorted(wanted - entries.keys()))
            known = ", ".join(catalogue_names(catalogue))
            raise RuntimeError(f"{path} has no model {missing}; it has: {known}")
        if default not in entries:  # a door that serves other models only: its first is its own
            default = only[0]
    return Registry(entries, default, aliases_file, database_url)


def load_one(path=MODELS_FILE, name=None):
    """Load one model, `name` or else models.json's default: for a door that serves one."""
    return load(path, only=[name or read_catalogue(Path(path))["default"]])


def catalogue_names(catalogue):
    return [item["name"] for item in catalogue["models"]]


def read_catalogue(path):
    """Return models.json, checked: RuntimeError naming the file and what is wrong."""
    try:
        catalogue = json.loads(path.read_text(encoding="utf-8"))
    except OSError as e:
        raise RuntimeError(f"cannot read the model catalogue {path}: {e.strerror}") from None
    except ValueError as e:
        raise RuntimeError(f"{path} is not valid JSON: {e}") from None
    problem = None
    fields = {"name": str, "kind": str, "display_name": str, "description": str, "versions": list}
    if not isinstance(catalogue, dict) or not isinstance(catalogue.get("models"), list):
        problem = 'it needs {"default": name, "models": [...]}'
    elif not catalogue["models"]:
        problem = "it names no model"
    else:
        names = [m.get("name") for m in catalogue["models"] if isinstance(m, dict)]
        for i, item in enumerate(catalogue["models"]):
            if not isinstance(item, dict) or not all(
                isinstance(item.get(f), t) for f, t in fields.items()
            ):
                problem = f"model {i} needs the fields {', '.join(fields)}"
            elif not item["versions"] or not all(isinstance(v, str) for v in item["versions"]):
                problem = f"model {item['name']!r} needs a list of version folders"
            elif "serve" in item and not isinstance(item["serve"], str):
                problem = f"model {item['name']!r}: serve must be a version"
            if problem:
                break
        if problem is None and len(set(names)) < len(names):
            problem = "a model name appears twice"
        elif problem is None and catalogue.get("default") not in names:
            problem = f"default must name one of its models ({', '.join(names)})"
    if problem:
        raise RuntimeError(f"{path} is malformed: {problem}")
    return catalogue


def load_entry(item, root):
    """Load every version of one model; the reason in entry.error if it cannot serve."""
    entry = Entry(
        item["name"],
        item["kind"],
        item["display_name"],
        item["description"],
        bool(item.get("required", True)),
        item.get("serve"),
    )
    if entry.kind not in KINDS:
        entry.error = f"unknown kind {entry.kind!r}; known kinds: {', '.join(KINDS)}"
        return entry
    kind = importlib.import_module(KINDS[entry.kind])
    errors = []
    for folder in item["versions"]:
        try:
            loaded = kind.load(root / folder)
            if loaded.run([SMOKE_TWEET])[0] not in model.LABELS:
                raise model.ArtifactError(f"{root / folder} answers no label")
        except model.ArtifactError as e:
            errors.append(str(e))
            continue
        entry.versions[loaded.version] = loaded
        entry.folders[loaded.version] = root / folder
    if entry.serve is None and len(item["versions"]) == 1 and entry.versions:
        entry.serve = next(iter(entry.versions))
    if entry.serve is None:
        errors.append(
            f"it lists {len(item['versions'])} versions and serves none: set its serve to one"
            if len(item["versions"]) > 1
            else ""
        )
    elif entry.serve not in entry.versions:
        errors.append(f"the version it serves, {entry.serve!r}, is not among those loaded")
    if entry.serve is None or entry.serve not in entry.versions:
        entry.error = "; ".join(e for e in errors if e) or "no version loaded"
    return entry
