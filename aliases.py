"""Aliases: which model answers a request that names none, and the candidate tried beside it.

    stable     what every door serves by default
    candidate  the model being tried: shadowed (scored beside stable, never answering) on
               shadow_percent of default traffic, and answering canary_percent of REST and
               websocket requests, chosen by a hash of the request id
    previous   the model stable replaced, kept for a rollback

Each names a model and a version of the registry. Only moving an alias changes what is served:
registering a model or a version never does. With no aliases file, stable is models.json's
default and nothing else is set.

The aliases live in one JSON file (ALIASES_FILE), written whole and renamed into place under a
lock, so a change is durable and every process sees either the old or the new file. Every process
that serves (each gunicorn worker, job worker, Kafka processor, ZeroRPC service) looks at the
file's stat at most every REFRESH_SECONDS and reads it again when it changed: a change reaches
every door within a quarter of a second, with no restart. A request resolves its model once, so a
request in flight finishes on the model it started with.
"""

import bisect
import contextlib
import dataclasses
import fcntl
import functools
import hashlib
import json
import logging
import os
import random
import time
from pathlib import Path

from prometheus_client import Counter, Histogram

import model

ALIASES_FILE = Path(__file__).resolve().parent / ".aliases.json"
REFRESH_SECONDS = 0.25  # an os.stat four times a second: nothing, next to a request
NAMES = ("stable", "candidate", "previous")
CANDIDATE_FIELDS = {"model", "version", "shadow_percent", "canary_percent"}

log = logging.getLogger("aliases")

# Counted by every door's process: under gunicorn they add up across workers (api.py's /metrics);
# the other doors serve them on their own metrics port.
SHADOW = Counter(
    "api_shadow_predictions",
    "Tweets of default traffic scored by the candidate too, by both models' labels",
    [
        "stable_model",
        "stable_version",
        "candidate_model",
        "candidate_version",
        "stable_label",
        "candidate_label",
    ],
)
SHADOW_DIFFERENCE = Histogram(
    "api_shadow_score_difference",
    "How far the candidate's score of a tweet is from stable's (absolute)",
    ["candidate_model", "candidate_version"],
    buckets=(0.001, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1),
)
SHADOW_ERRORS = Counter(
    "api_shadow_errors",
    "Shadow batches the candidate failed to score (the answer was stable's, unchanged)",
    ["candidate_model", "candidate_version"],
)


class Refused(Exception):
    """A change of the aliases that cannot be made now (409): no candidate, the guard, ..."""


class Invalid(Exception):
    """A change asked for in a malformed way (400): an unknown model, a percent out of range."""


@dataclasses.dataclass(frozen=True)
class State:
    """The aliases as stored: each a dict {"model", "version", ...} or None."""

    stable: dict
    candidate: dict | None = None
    previous: dict | None = None

    def as_dict(self):
        return {"stable": self.stable, "candidate": self.candidate, "previous": self.previous}


def pair(alias):
    return None if alias is None else (alias["model"], alias["version"])


class Aliases:
    """One process's view of the aliases file, read again when it changes."""

    def __init__(self, path, known, fallback):
        """known: the (name, version) pairs this process has loaded; fallback: the stable pair
        when there is no file (models.json's default)."""
        self.path, self.known = Path(path), known
        self.fallback = State({"model": fallback[0], "version": fallback[1]})
        self.state, self.stamp, self.checked = self.fallback, None, 0.0
        self.refresh()

    def current(self, fresh=False):
        """The aliases now: the file's stat is looked at most every REFRESH_SECONDS, or now if
        fresh (an admin reading them back)."""
        now = time.monotonic()
        if fresh or now - self.checked >= REFRESH_SECONDS:
            self.checked = now
            self.refresh()
        return self.state

    def refresh(self):
        stamp = file_stamp(self.path)
        if stamp == self.stamp:
            return
        self.stamp = stamp
        try:
            state = read(self.path, self.fallback)
            problem = self.unknown(state)
        except (OSError, ValueError, KeyError, TypeError) as e:
            problem = f"it cannot be read: {e}"
        if problem:  # a process that lacks a model keeps serving what it served
            log.warning("%s: %s; still serving %s", self.path, problem, pair(self.state.stable))
            return
        self.state = state

    def unknown(self, state):
        """Name the aliases whose model and version this process has not loaded, or None."""
        missing = [
            f"{name} {pair(alias)}"
            for name, alias in zip(NAMES, state.as_dict().values(), strict=True)
            if alias is not None and pair(alias) not in self.known
        ]
        return f"names models not loaded here: {', '.join(missing)}" if missing else None

    def change(self, edit):
        """Apply edit(state) -> State under the file's lock, store it durably, and return it.
        edit raises Refused or Invalid to change nothing."""
        with locked(self.path):
            state = edit(read(self.path, self.fallback))
            problem = self.unknown(state)
            if problem:
                raise Invalid(problem)
            write(self.path, state)
        self.state, self.stamp, self.checked = state, file_stamp(self.path), time.monotonic()
        return state


def file_stamp(path):
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):  # no file: the fallback
        return None
    return info.st_mtime_ns, info.st_size, info.st_ino


def read(path, fallback):
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError):
        return fallback
    if not isinstance(data, dict):
        raise ValueError("it must be a JSON object")
    for name in NAMES:
        alias = data.get(name)
        if alias is not None and not (
            isinstance(alias, dict)
            and isinstance(alias.get("model"), str)
            and isinstance(alias.get("version"), str)
        ):
            raise ValueError(f"{name} must be null or name a model and a version")
    if data.get("stable") is None:
        raise ValueError("stable must name a model and a version")
    return State(data["stable"], data.get("candidate"), data.get("previous"))


def write(path, state):
    """Write the whole file beside it, flush it to disk, and rename it into place."""
    path = Path(path)
    temporary = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with open(temporary, "w", encoding="utf-8") as f:
        json.dump(state.as_dict(), f, indent=2)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


@contextlib.contextmanager
def locked(path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(f"{path.name}.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# The changes an admin asks for (api.py's routes): each an edit for Aliases.change.


def set_candidate(resolve, body, baseline):
    """An edit setting the candidate from a PUT body {"model", "version"?, "shadow_percent"?,
    "canary_percent"?}; resolve(name, version) is the registry's get (UnknownModel otherwise);
    baseline(stable, candidate) the shadow counts so far, so that agreement counts from now."""

    def edit(state):
        served, percents = checked_candidate(resolve, body)
        candidate = {"model": served.name, "version": served.version}
        if pair(candidate) == pair(state.stable):
            raise Refused(f"{served.name} {served.version} is stable already")
        since = baseline(state.stable, candidate)
        candidate.update(percents, set_at=time.time(), baseline=since)
        return dataclasses.replace(state, candidate=candidate)

    return edit


def checked_candidate(resolve, body):
    """The Served a PUT body names and its percents; Invalid naming what is wrong."""
    if not isinstance(body, dict) or not isinstance(body.get("model"), str):
        raise Invalid('send {"model": name, "version"?, "shadow_percent"?, "canary_percent"?}')
    unknown = sorted(body.keys() - CANDIDATE_FIELDS)
    if unknown:
        raise Invalid(f"unknown field(s) {unknown}; allowed: {sorted(CANDIDATE_FIELDS)}")
    if "version" in body and not isinstance(body["version"], str):
        raise Invalid("version must be a string")
    served = resolve(body["model"], body.get("version"))
    percents = {}
    for name, default in (("shadow_percent", 100), ("canary_percent", 0)):
        value = body.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 100:
            raise Invalid(f"{name} must be a number from 0 to 100, got {json.dumps(value)}")
        percents[name] = value
    return served, percents


def clear_candidate(state):
    return dataclasses.replace(state, candidate=None)


def promote(guard):
    """An edit moving candidate to stable and stable to previous; guard(state) names why not."""

    def edit(state):
        if state.candidate is None:
            raise Refused("there is no candidate to promote: PUT /api/v1/aliases/candidate first")
        reason = guard(state)
        if reason:
            raise Refused(f"the candidate is not promoted: {reason}; send force to promote anyway")
        return State(alias_of(state.candidate), None, state.stable)

    return edit


def rollback(state):
    """previous back to stable; the stable it replaces becomes previous (so it can be undone).
    A candidate is removed: its shadow pairs were counted against the stable rolled back from,
    and it may be the new stable itself."""
    if state.previous is None:
        raise Refused("there is no previous model to roll back to")
    return State(state.previous, None, state.stable)


def alias_of(candidate):
    return {"model": candidate["model"], "version": candidate["version"]}


def guard_reason(summary, ready, min_pairs, min_agreement):
    """Why a candidate may not be promoted yet, or None."""
    if not ready:
        return "it is not loaded and ready"
    if summary["pairs"] < min_pairs:
        return f"{summary['pairs']} shadow pairs, fewer than PROMOTE_MIN_PAIRS ({min_pairs})"
    if summary["agreement"] < min_agreement:
        return (
            f"it agrees with stable on {summary['agreement']:.4f} of {summary['pairs']} pairs, "
            f"less than PROMOTE_MIN_AGREEMENT ({min_agreement})"
        )
    return None


# Shadow counts, read back from the metrics (every worker's, under gunicorn).


def shadow_counts(collector, stable, candidate):
    """Return {"pairs", "agreeing"}: the shadow counter's tweets for this stable and candidate."""
    want = {
        "stable_model": stable["model"],
        "stable_version": stable["version"],
        "candidate_model": candidate["model"],
        "candidate_version": candidate["version"],
    }
    pairs = agreeing = 0
    for family in collector.collect():
        if family.name != "api_shadow_predictions":
            continue
        for sample in family.samples:
            labels = sample.labels
            if not sample.name.endswith("_total") or any(
                labels.get(k) != v for k, v in want.items()
            ):
                continue
            pairs += sample.value
            if labels["stable_label"] == labels["candidate_label"]:
                agreeing += sample.value
    return {"pairs": int(pairs), "agreeing": int(agreeing)}


def shadow_summary(collector, state):
    """The shadow figures since the candidate was set: pairs, agreeing, agreement (None before
    any pair). A restart of the service starts its counters again from 0."""
    candidate = state.candidate
    if candidate is None:
        return {"pairs": 0, "agreeing": 0, "agreement": None}
    counts = shadow_counts(collector, state.stable, candidate)
    base = candidate.get("baseline") or {"pairs": 0, "agreeing": 0}
    if counts["pairs"] >= base["pairs"]:  # else the counters restarted since it was set
        counts = {k: counts[k] - base[k] for k in counts}
    pairs = counts["pairs"]
    agreement = round(counts["agreeing"] / pairs, 6) if pairs else None
    return {**counts, "agreement": agreement, "shadow_percent": candidate["shadow_percent"]}


# Serving: what a default request is answered by.


class Shadowed:
    """Stable's model, scoring shadow_percent of its batches with the candidate too. Answers are
    always stable's: a candidate's failure is counted and logged, never seen by the client."""

    def __init__(self, stable, candidate, percent):
        self.stable, self.candidate, self.percent = stable, candidate, percent

    def __getattr__(self, name):  # version, evaluation, explain, ...: stable's
        return getattr(self.stable.model, name)

    def scores(self, tweets):
        probabilities = self.stable.model.scores(tweets)
        if self.percent >= 100 or random.random() * 100 < self.percent:  # noqa: S311 (a sample)
            shadow(self.stable, self.candidate, tweets, probabilities)
        return probabilities

    def run(self, tweets):
        return model.labels(self.scores(tweets))


def shadow(stable, candidate, tweets, probabilities):
    try:
        theirs = candidate.model.scores(tweets)
    except Exception as e:  # noqa: BLE001 (the candidate's fault: counted, never the answer's)
        shadow_errors(candidate.name, candidate.version).inc()
        log.warning("the candidate %s failed to score: %s", candidate.name, type(e).__name__)
        return
    counts = {}
    difference = HeldObservations(shadow_difference(candidate.name, candidate.version))
    for ours, other in zip(probabilities, theirs, strict=True):
        key = (ours >= model.THRESHOLD, other >= model.THRESHOLD)
        counts[key] = counts.get(key, 0) + 1
        difference.observe(abs(other - ours))
    difference.write()
    for (ours, other), count in counts.items():
        shadow_pairs(
            stable.name, stable.version, candidate.name, candidate.version, ours, other
        ).inc(count)


class HeldObservations:
    """Observations of a Histogram child, held and then written at once: their sum, and how many
    fell in each bucket (the first whose upper bound is >= the value, as Histogram.observe counts).
    Under multiprocess metrics every write is a locked one to a shared file: one per bucket, not
    two per observation. prometheus_client 0.26's layout."""

    def __init__(self, child):
        self.child, self.total, self.buckets = child, 0.0, [0] * len(child._upper_bounds)

    def observe(self, value):
        self.total += value
        self.buckets[bisect.bisect_left(self.child._upper_bounds, value)] += 1

    def write(self):
        self.child._sum.inc(self.total)
        for bucket, count in zip(self.child._buckets, self.buckets, strict=True):
            if count:
                bucket.inc(count)


def canary_share(request_id):
    """A request id's place in [0, 100): the same id always gets the same model."""
    digest = hashlib.blake2b(request_id.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % 10_000 / 100


# Metric children, looked up once per label values (as api.py does).


@functools.cache
def shadow_pairs(stable_name, stable_version, name, version, stable_positive, candidate_positive):
    labels = [
        model.LABELS[1] if p else model.LABELS[0] for p in (stable_positive, candidate_positive)
    ]
    return SHADOW.labels(stable_name, stable_version, name, version, *labels)


@functools.cache
def shadow_difference(name, version):
    return SHADOW_DIFFERENCE.labels(name, version)


@functools.cache
def shadow_errors(name, version):
    return SHADOW_ERRORS.labels(name, version)
