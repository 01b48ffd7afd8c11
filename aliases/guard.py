"""The promotion guard: what a candidate must show before it replaces stable.

1. It is loaded and ready.
2. Labelled evidence: on the reference set (tweets people labelled, read from
   GUARD_REFERENCE_FILE, rows whose id starts with one of GUARD_REFERENCE_IDS), its balanced
   accuracy is at most PROMOTE_MAX_DROP below stable's. A better model disagrees with a worse one,
   so agreement alone would refuse it; the labels say which of two disagreeing models people side
   with. No client's traffic enters this figure.
3. Live evidence: it has shadowed PROMOTE_MIN_PAIRS distinct tweets of default traffic (shadow.py:
   a tweet is the pair of scores the two models give it, so texts they cannot tell apart count
   once, whoever sends them and however often; at most 100 new from one batch) and agrees with
   stable on them at least as often as the lower of PROMOTE_MIN_AGREEMENT and its agreement with
   stable on the reference set less AGREEMENT_MARGIN. The alarm for a candidate that is broken on
   what users send, or that treats it wildly unlike the labelled tweets.

Without the reference set (its file absent) the guard refuses, saying why: live traffic is what
clients send, and agreement alone would let one client promote a model (and refuses a model much
better than stable). Send force then, knowingly, or mount the set.
"""

import dataclasses
import functools
import logging
import threading
from pathlib import Path

import model
import reference

AGREEMENT_MARGIN = 0.1
log = logging.getLogger("aliases")


class Missing(Exception):
    """The reference set cannot be read: its message says why, naming the file."""


@dataclasses.dataclass(frozen=True)
class Judged:
    """A model's figures on the reference set, and its labels there (1 Positive, 0 Negative)."""

    accuracy: float
    balanced_accuracy: float
    labels: bytes

    def figures(self):
        return {"accuracy": self.accuracy, "balanced_accuracy": self.balanced_accuracy}


class Reference:
    """The labelled reference set, read when first needed, and each model's figures on it, worked
    out once per model version in this process (a few tens of milliseconds)."""

    def __init__(self, path, sources):
        """sources: GUARD_REFERENCE_IDS, the sources (se16dev, ...) its rows' ids name."""
        self.path = Path(path)
        self.sources = tuple(p.strip() for p in sources.split(",") if p.strip())
        self.lock = threading.Lock()

    @functools.cached_property
    def rows(self):
        """(texts, labels): the reference set (reference.py reads it); Missing naming the file
        and what is wrong."""
        try:
            found = reference.reference_set(self.path, self.sources)
        except reference.ReferenceSetError as e:
            raise Missing(str(e)) from None
        labels = bytes(model.LABELS.index(label) for _, _, label in found)
        if len(set(labels)) < 2:
            raise Missing(f"{self.path}: the rows of {', '.join(self.sources)} are of one label")
        return [text for _, text, _ in found], labels

    @functools.cache  # noqa: B019 (one Reference per app: the models it judges live as long)
    def judge(self, name, version, scorer):
        """The figures of a model version (scorer: its model) on the reference set."""
        texts, truth = self.rows
        with self.lock:
            labels = bytes(p >= model.THRESHOLD for p in scorer.scores(texts))
        return Judged(*figures(labels, truth), labels)

    def evidence(self, stable, candidate):
        """Both models' figures and their agreement on the reference set; or {"unavailable":
        why}. stable and candidate are registry.Served of the models themselves (registry.find),
        never a shadowed one: judging must not count shadow pairs."""
        try:
            ours = self.judge(stable.name, stable.version, stable.model)
            theirs = self.judge(candidate.name, candidate.version, candidate.model)
        except Missing as e:
            return {"unavailable": str(e)}
        same = sum(a == b for a, b in zip(ours.labels, theirs.labels, strict=True))
        return {
            "tweets": len(ours.labels),
            "stable": ours.figures(),
            "candidate": theirs.figures(),
            "agreement": round(same / len(ours.labels), 4),
        }


def figures(labels, truth):
    """Accuracy and balanced accuracy (the mean of each class's recall), rounded to 4 places."""
    right = [0, 0]
    count = [0, 0]
    for guess, label in zip(labels, truth, strict=True):
        count[label] += 1
        right[label] += guess == label
    accuracy = sum(right) / len(truth)
    balanced = sum(r / c for r, c in zip(right, count, strict=True) if c) / 2
    return round(accuracy, 4), round(balanced, 4)


def live_summary(totals):
    """The shadow figures of GET /api/v1/aliases from summed totals."""
    pairs = totals["pairs"]
    agreement = round(totals["agreeing"] / pairs, 6) if pairs else None
    return {"pairs": pairs, "agreeing": totals["agreeing"], "agreement": agreement}


def reason(settings, ready, live, labelled):
    """Why a candidate may not be promoted yet, or None. live: live_summary(); labelled:
    Reference.evidence()."""
    if not ready:
        return "it is not loaded and ready"
    if "unavailable" in labelled:  # live traffic alone: what a client sends could decide
        return (
            f"there is no labelled evidence ({labelled['unavailable']}); the guard judges a "
            "candidate on tweets people labelled, never on live traffic alone: set "
            "GUARD_REFERENCE_FILE"
        )
    ours, theirs = labelled["stable"], labelled["candidate"]
    drop = settings["PROMOTE_MAX_DROP"]
    if theirs["balanced_accuracy"] < ours["balanced_accuracy"] - drop:
        return (
            f"on the {labelled['tweets']} labelled tweets of the reference set its balanced "
            f"accuracy is {theirs['balanced_accuracy']:.4f} (accuracy "
            f"{theirs['accuracy']:.4f}), stable's {ours['balanced_accuracy']:.4f} (accuracy "
            f"{ours['accuracy']:.4f}): more than PROMOTE_MAX_DROP ({drop}) below"
        )
    floor = min(
        settings["PROMOTE_MIN_AGREEMENT"], round(labelled["agreement"] - AGREEMENT_MARGIN, 4)
    )
    pairs, min_pairs = live["pairs"], settings["PROMOTE_MIN_PAIRS"]
    if pairs < min_pairs:
        return f"{pairs} distinct shadowed tweets, fewer than PROMOTE_MIN_PAIRS ({min_pairs})"
    if live["agreement"] < floor:
        return (
            f"it agrees with stable on {live['agreement']:.4f} of {pairs} distinct shadowed "
            f"tweets, less than {floor}, the lower of PROMOTE_MIN_AGREEMENT "
            f"({settings['PROMOTE_MIN_AGREEMENT']}) and its agreement with stable on the "
            f"labelled tweets ({labelled['agreement']}) less {AGREEMENT_MARGIN}"
        )
    return None
