"""The shadow: stable answers, the candidate scores the same tweets beside it. Two records of it:
Prometheus's confusion table of every tweet scored twice (for dashboards), and this process's
counts for the promotion guard (Counts), which no one request, client or repeated text decides."""

import bisect
import functools
import hashlib
import logging
import random
import threading

from prometheus_client import Counter, Histogram

import model

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

# The guard's counts. A tweet's evidence is what the two models make of it: its key is the pair of
# their scores (to 6 places), so that texts the models cannot tell apart (the same words in another
# case or spacing, or with words neither model knows) are one piece of evidence, however many
# clients send them, however often. A batch adds at most MAX_PAIRS_A_BATCH new keys, so that no
# one request decides. Each process writes its new keys to the aliases' home (stores.py), where
# the keys of every process, replica and restart are counted once.
MAX_PAIRS_A_BATCH = 100
SCAN_A_BATCH = 4 * MAX_PAIRS_A_BATCH  # tweets looked at in a batch, at most: a bounded cost
# Keys this process has seen, so that it sends each once: at most this many (about 3 MB), then it
# starts again (its home counts a key sent twice once).
MAX_SEEN = 50_000
SCALE = 1_000_000  # scores to 6 places: a key is two whole numbers of at most 10**6


def evidence_key(ours, theirs):
    """A tweet's key: its two scores to 6 places, as one whole number under 2**63."""
    return round(ours * SCALE) * (SCALE + 1) + round(theirs * SCALE)


class Counts:
    """This process's new shadow keys for the guard, under the current candidate's epoch, until
    its home takes them."""

    def __init__(self, current):
        """current() is the epoch of the candidate now followed: a batch of another (one in
        flight as the candidate changed) is not counted."""
        self.current, self.epoch, self.seen, self.new = current, None, set(), []
        self.lock = threading.Lock()

    def add(self, epoch, ours, theirs):
        if epoch != self.current():
            return
        threshold = model.THRESHOLD
        with self.lock:
            if epoch != self.epoch:
                self.epoch, self.seen, self.new = epoch, set(), []
            seen, added = self.seen, 0
            for i in range(min(len(ours), SCAN_A_BATCH)):
                key = evidence_key(ours[i], theirs[i])
                if key in seen:
                    continue
                if len(seen) >= MAX_SEEN:
                    seen.clear()
                seen.add(key)
                self.new.append((key, (ours[i] >= threshold) == (theirs[i] >= threshold)))
                added += 1
                if added == MAX_PAIRS_A_BATCH:
                    break

    def take(self):
        """(epoch, [(key, agreeing), ...]) new since the last take, or None."""
        with self.lock:
            if not self.new:
                return None
            taken, self.new = self.new, []
            return self.epoch, taken

    def give_back(self, epoch, taken):
        """Keys its home could not take: kept for the next write, if still this epoch's."""
        with self.lock:
            if epoch == self.epoch:
                self.new[:0] = taken


class Shadowed:
    """Stable's model, scoring shadow_percent of its batches with the candidate too. Answers are
    always stable's: a candidate's failure is counted and logged, never seen by the client."""

    def __init__(self, stable, candidate, percent, epoch, counts):
        """epoch: the candidate's, under which counts (the Counts of the aliases followed) keeps
        the guard's pairs."""
        self.stable, self.candidate, self.percent = stable, candidate, percent
        self.epoch, self.counts = epoch, counts

    def __getattr__(self, name):  # version, evaluation, explain, ...: stable's
        return getattr(self.stable.model, name)

    def scores(self, tweets):
        probabilities = self.stable.model.scores(tweets)
        if self.percent >= 100 or random.random() * 100 < self.percent:  # noqa: S311 (a sample)
            shadow(self.stable, self.candidate, tweets, probabilities, self.epoch, self.counts)
        return probabilities

    def run(self, tweets):
        return model.labels(self.scores(tweets))


def shadow(stable, candidate, tweets, probabilities, epoch=None, counts=None):
    try:
        theirs = candidate.model.scores(tweets)
    except Exception as e:  # noqa: BLE001 (the candidate's fault: counted, never the answer's)
        shadow_errors(candidate.name, candidate.version).inc()
        log.warning("the candidate %s failed to score: %s", candidate.name, type(e).__name__)
        return
    if counts is not None:
        counts.add(epoch, probabilities, theirs)
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
