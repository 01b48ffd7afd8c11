"""The 2020 approach, served: a model kind of the registry ("summed-frequency-linear").

Each tweet becomes two numbers, the summed counts of its stems in the positive and in the negative
training tweets, and a linear regression of the label on those two gives its score, clipped to
[0, 1]: Positive at 0.5 or more, as model.py's threshold. train.py fits it (train.Baseline2020) and
writes its artifacts; the tokens here are that class's, bug for bug: stop words are dropped before
case-folding, so "Not" stays and "not" goes. It is kept to compare with, not for its accuracy
(0.637 on the reference test rows, the model card says).

Artifacts, in a folder of their own: model.json (format_version, stop_words, positive and
negative counts by stem, intercept, coefficients), evaluation.json (its figures, for clients), and
MANIFEST.sha256 listing both. The version is the manifest's hash, as model.py's.
"""

import functools
import math
import re
from pathlib import Path

from nltk.stem.porter import PorterStemmer

import model

FORMAT_VERSION = 1
MODEL_FILE, EVALUATION_FILE = "model.json", "evaluation.json"
STRIP = re.compile(r"https?://\S+|#|@\w+|^RT\s+")
TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
STEM_CACHE = 20_000  # stems of the most recent distinct words: bounded, whatever the input


def tokens(text, stop_words, stem):
    """The 2020 tokens of a tweet: links, hashtag signs, mentions and "RT" removed, words found,
    stop words dropped (before case-folding, its bug), the rest lower-cased and stemmed."""
    text = STRIP.sub("", text)
    return [stem(t.lower()) for t in TOKEN.findall(text) if t not in stop_words]


class Model2020:
    def __init__(self, document, version="unversioned", evaluation=None):
        self.stop_words = frozenset(document["stop_words"])
        self.positive, self.negative = document["positive"], document["negative"]
        self.intercept = float(document["intercept"])
        self.weight_positive, self.weight_negative = map(float, document["coefficients"])
        self.version, self.evaluation = version, evaluation or {}
        self.stem = functools.lru_cache(maxsize=STEM_CACHE)(PorterStemmer().stem)

    def tokens(self, tweet):
        return tokens(tweet, self.stop_words, self.stem)

    def pull(self, stem):
        """A stem's part of the regression's output."""
        return self.weight_positive * self.positive.get(
            stem, 0
        ) + self.weight_negative * self.negative.get(stem, 0)

    def scores(self, tweets):
        """Return each tweet's regression output, clipped to [0, 1]."""
        model.check_tweets(tweets)
        out = []
        for tweet in tweets:
            stems = self.tokens(tweet)
            positive = sum(self.positive.get(s, 0) for s in stems)
            negative = sum(self.negative.get(s, 0) for s in stems)
            value = self.intercept + self.weight_positive * positive
            value += self.weight_negative * negative
            out.append(min(1.0, max(0.0, value)))
        return out

    def run(self, tweets):
        return model.labels(self.scores(tweets))

    def explain(self, tweet):
        """Return the stems that pushed a tweet toward each label, with their part of the score."""
        model.check_tweets([tweet])
        pulls = {s: self.pull(s) for s in self.tokens(tweet)}
        ranked = sorted(pulls.items(), key=lambda item: (-abs(item[1]), item[0]))
        return {
            "Positive": [[t, w] for t, w in ranked if w > 0],
            "Negative": [[t, w] for t, w in ranked if w < 0],
        }


def load(directory):
    """Load the artifacts, checking each against the manifest; ArtifactError naming the file."""
    directory = Path(directory)
    documents, version = model.read_checked(directory, (MODEL_FILE, EVALUATION_FILE))
    document = documents[MODEL_FILE]
    check(document, directory / MODEL_FILE)
    if not isinstance(documents[EVALUATION_FILE], dict):
        raise model.ArtifactError(f"{directory / EVALUATION_FILE} is malformed: not an object")
    return Model2020(document, version, documents[EVALUATION_FILE])


def check(document, path):
    """Raise ArtifactError unless the document is a well-formed model of this kind."""
    problem = None
    numbers = (int, float)
    if not isinstance(document, dict) or document.get("format_version") != FORMAT_VERSION:
        problem = f"format_version is not {FORMAT_VERSION}"
    elif not isinstance(document.get("stop_words"), list) or not all(
        isinstance(w, str) for w in document["stop_words"]
    ):
        problem = "stop_words must be a list of strings"
    elif not all(
        isinstance(document.get(side), dict)
        and all(isinstance(c, int) and c >= 0 for c in document[side].values())
        for side in ("positive", "negative")
    ):
        problem = "positive and negative must map stems to counts"
    elif not (
        isinstance(document.get("coefficients"), list)
        and len(document["coefficients"]) == 2
        and all(
            isinstance(x, numbers) and math.isfinite(x)
            for x in [*document["coefficients"], document.get("intercept")]
        )
    ):
        problem = "it needs an intercept and two coefficients, finite numbers"
    if problem:
        raise model.ArtifactError(f"{path} is malformed: {problem}")
