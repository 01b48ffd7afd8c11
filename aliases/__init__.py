"""Aliases: which model answers a request that names none, and the candidate tried beside it.

    stable     what every door serves by default
    candidate  the model being tried: shadowed (scored beside stable, never answering) on
               shadow_percent of default traffic, and answering canary_percent of REST and
               websocket requests, chosen by a hash of the request id
    previous   the model stable replaced, kept for a rollback

Each names a model and a version of the registry. Only moving an alias changes what is served:
registering a model or a version never does. With none stored, stable is models.json's default
and nothing else is set.

    state.py   the State and the edits an admin asks for (set a candidate, promote, roll back)
    stores.py  where they live (a file on one machine, PostgreSQL for several replicas) and how
               every process follows them
    shadow.py  the candidate scored beside stable, and the shadow pairs each process counts
    guard.py   what a candidate must show to be promoted: labelled evidence, then live traffic
"""

from pathlib import Path

from aliases.guard import Reference, live_summary, reason
from aliases.shadow import (
    MAX_PAIRS_A_BATCH,
    SHADOW_DIFFERENCE,
    HeldObservations,
    Shadowed,
    canary_share,
    evidence_key,
    shadow,
    shadow_difference,
)
from aliases.state import (
    Invalid,
    Refused,
    State,
    Unavailable,
    clear_candidate,
    pair,
    promote,
    rollback,
    set_candidate,
)
from aliases.stores import REFRESH_SECONDS, follow, write

ALIASES_FILE = Path(__file__).resolve().parent.parent / ".aliases.json"

__all__ = [
    "ALIASES_FILE",
    "MAX_PAIRS_A_BATCH",
    "REFRESH_SECONDS",
    "SHADOW_DIFFERENCE",
    "HeldObservations",
    "Invalid",
    "Reference",
    "Refused",
    "Shadowed",
    "State",
    "Unavailable",
    "canary_share",
    "clear_candidate",
    "evidence_key",
    "follow",
    "live_summary",
    "pair",
    "promote",
    "reason",
    "rollback",
    "set_candidate",
    "shadow",
    "shadow_difference",
    "write",
]
