"""The aliases as stored, and the changes an admin asks for: each an edit of the State."""

import dataclasses
import json
import secrets
import time

NAMES = ("stable", "candidate", "previous")
CANDIDATE_FIELDS = {"model", "version", "shadow_percent", "canary_percent"}


class Refused(Exception):
    """A change of the aliases that cannot be made now (409): no candidate, the guard, ..."""


class Invalid(Exception):
    """A change asked for in a malformed way (400): an unknown model, a percent out of range."""


class Unavailable(Exception):
    """The aliases' home cannot be read or written (503): a damaged file, PostgreSQL down."""


@dataclasses.dataclass(frozen=True)
class State:
    """The aliases as stored: each a dict {"model", "version", ...} or None. version counts the
    changes made (0 before the first); a candidate carries the epoch its shadow counts are kept
    under, new each time one is set."""

    stable: dict
    candidate: dict | None = None
    previous: dict | None = None
    version: int = 0

    def as_dict(self):
        return {"stable": self.stable, "candidate": self.candidate, "previous": self.previous}

    def stored(self):
        """What is written: the aliases and the version."""
        return {**self.as_dict(), "version": self.version}

    @property
    def epoch(self):
        """The candidate's epoch (a file written before epochs: one of its own), or None."""
        return None if self.candidate is None else self.candidate.get("epoch", "unnamed")


def pair(alias):
    return None if alias is None else (alias["model"], alias["version"])


def alias_of(candidate):
    return {"model": candidate["model"], "version": candidate["version"]}


def from_stored(data):
    """A State from what was stored; ValueError naming what is wrong."""
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
    candidate = data.get("candidate")
    if candidate is not None:
        candidate = {**candidate}  # in its stored order: what a change answered, a read answers
        candidate.setdefault("shadow_percent", 100)
        candidate.setdefault("canary_percent", 0)
        for name in ("shadow_percent", "canary_percent"):
            value = candidate[name]
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not 0 <= value <= 100
            ):
                raise ValueError(f"the candidate's {name} must be a number from 0 to 100")
        if not isinstance(candidate.get("epoch", ""), str):
            raise ValueError("the candidate's epoch must be a string")
    version = data.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError("version must be a whole number")
    return State(data["stable"], candidate, data.get("previous"), version)


def decode(text):
    """A State from stored JSON text; ValueError naming what is wrong."""
    try:
        data = json.loads(text)
    except RecursionError:
        raise ValueError("it is nested too deeply") from None
    return from_stored(data)


def encode(state):
    return json.dumps(state.stored(), indent=2) + "\n"


# The edits: each takes the State and the shadow totals of an epoch (summed over every process
# that counted them) and returns the new State, or raises Refused or Invalid.


def set_candidate(resolve, body):
    """An edit setting the candidate from a PUT body {"model", "version"?, "shadow_percent"?,
    "canary_percent"?}; resolve(name, version) is the registry's get (UnknownModel otherwise).
    Its shadow counts start at 0 under a new epoch."""

    def edit(state, _totals):
        served, percents = checked_candidate(resolve, body)
        candidate = {"model": served.name, "version": served.version}
        if pair(candidate) == pair(state.stable):
            raise Refused(f"{served.name} {served.version} is stable already")
        candidate.update(percents, set_at=time.time(), epoch=secrets.token_hex(8))
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


def clear_candidate(state, _totals):
    return dataclasses.replace(state, candidate=None)


def promote(guard):
    """An edit moving candidate to stable and stable to previous; guard(state, totals) names
    why not, or None."""

    def edit(state, totals):
        if state.candidate is None:
            raise Refused("there is no candidate to promote: PUT /api/v1/aliases/candidate first")
        reason = guard(state, totals(state.epoch))
        if reason:
            raise Refused(f"the candidate is not promoted: {reason}; send force to promote anyway")
        return State(alias_of(state.candidate), None, state.stable, state.version)

    return edit


def rollback(state, _totals):
    """previous back to stable; the stable it replaces becomes previous (so it can be undone).
    A candidate is removed: its shadow pairs were counted against the stable rolled back from,
    and it may be the new stable itself."""
    if state.previous is None:
        raise Refused("there is no previous model to roll back to")
    return State(state.previous, None, state.stable, state.version)
