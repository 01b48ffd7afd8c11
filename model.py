"""The sentiment model: load the artifacts, preprocess, frequency features, logistic regression,
postprocess.

The model is NB-weighted logistic regression (Wang & Manning, 2012): each term (a stemmed word or a
pair of neighbouring words) present in a tweet contributes its log-count ratio, how much more often
it appeared in positive than in negative training tweets, times its logistic-regression
coefficient. The artifacts are plain JSON, checked against a SHA-256 manifest; nothing is unpickled
and nothing is downloaded.
"""

import functools
import hashlib
import html
import itertools
import json
import math
import re
from pathlib import Path

from nltk.stem.porter import PorterStemmer

LABELS = ("Negative", "Positive")
ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"
MANIFEST_FILE = "MANIFEST.sha256"
PREPROCESSING_FILE = "preprocessing.json"
MODEL_FILE = "model.json"
EVALUATION_FILE = "evaluation.json"  # the model card's figures, for clients to read
FORMAT_VERSION = 1
# Tweets repeat words, so normalised tokens are cached: up to a bound, so odd input cannot grow
# the cache forever.
TOKEN_CACHE_SIZE = 50_000


class ArtifactError(Exception):
    """An artifact is missing, corrupt or altered."""


class Preprocessor:
    """Turn a tweet into normalised tokens, as the settings saved with the model say."""

    def __init__(self, settings):
        self.strip = re.compile(settings["strip_pattern"])
        self.fold_characters = settings["fold_characters"]
        self.token = re.compile(settings["token_pattern"])
        self.elongation = re.compile(settings["elongation_pattern"])
        self.repeat = r"\1" * settings["max_repeat"]
        self.stop_words = frozenset(settings["stop_words"])
        self.ngrams = settings["ngrams"]
        if settings["stemmer"] != "porter-nltk-extensions":
            raise ValueError(f"unknown stemmer {settings['stemmer']!r}")
        self.stemmer = PorterStemmer(PorterStemmer.NLTK_EXTENSIONS)
        self.normalised = TokenCache(self.normalise, TOKEN_CACHE_SIZE)

    def tokens(self, text):
        """Case-fold, drop URLs, @mentions and HTML entities, tokenise, normalise each token."""
        text = self.strip.sub(" ", html.unescape(text).lower())
        for character in self.fold_characters:
            text = text.replace(character, "")
        tokens = map(self.normalised.__getitem__, self.token.findall(text))
        return [t for t in tokens if t] if self.stop_words else list(tokens)

    def normalise(self, token):
        """Return a token with elongations cut and stemmed, or "" for a stop word."""
        token = self.elongation.sub(self.repeat, token)
        return "" if token in self.stop_words else self.stemmer.stem(token)

    def terms(self, tokens):
        """Return the set of terms: the tokens, and with ngrams=2 each pair of neighbours."""
        if self.ngrams == 2:
            return {*tokens, *map(" ".join, zip(tokens, tokens[1:], strict=False))}
        return set(tokens)


class TokenCache(dict):
    """A dictionary that computes what it lacks, and is emptied when it reaches its size limit."""

    def __init__(self, compute, limit):
        super().__init__()
        self.compute, self.limit = compute, limit

    def __missing__(self, key):
        if len(self) >= self.limit:
            self.clear()
        value = self[key] = self.compute(key)
        return value


def default_settings(stop_words=()):
    """Return the preprocessing settings train.py saves with a model."""
    return {
        # URLs and @mentions carry no sentiment of their own. Matched after case-folding.
        "strip_pattern": r"https?://\S+|www\.\S+|@\w+",
        # Letters repeated three or more times are cut to two, as Sentiment140's authors did:
        # "loooove" and "looooove" become one word, still apart from "love".
        "elongation_pattern": r"([^\W\d_])\1{2,}",
        "max_repeat": 2,
        # "don't" and "dont" are one word in tweets.
        "fold_characters": "'\u2019",
        # Runs of letters and digits, "!" and "?", hearts, emoticons (after case-folding).
        "token_pattern": r"[^\W_]+|[!?]|<3|(?<!\w)[:;=][-o*]?[()\[\]dp/\\|*]+",
        "stop_words": sorted(stop_words),
        "stemmer": "porter-nltk-extensions",
        "ngrams": 2,
    }


class Model:
    """A trained model: preprocessing, log-count ratios and logistic-regression coefficients."""

    def __init__(self, preprocessing, weights, version="unversioned", evaluation=None):
        self.preprocessor = Preprocessor(preprocessing)
        self.version = version
        self.evaluation = evaluation or {}
        self.intercept = weights["intercept"]
        terms = weights["terms"]
        self.ratios = dict(zip(terms, weights["log_count_ratios"], strict=True))
        self.coefficients = dict(zip(terms, weights["coefficients"], strict=True))
        # A term's feature is its ratio, so its pull on the logit is coefficient * ratio. Computed
        # once here so that a prediction is one dictionary look-up per term.
        self.pulls = {t: self.coefficients[t] * r for t, r in self.ratios.items()}

    def preprocess(self, tweet):
        """Return the terms of one tweet."""
        return self.preprocessor.terms(self.preprocessor.tokens(tweet))

    def features(self, terms):
        """Return the frequency features: the log-count ratio of each known term."""
        ratios = self.ratios
        return {t: ratios[t] for t in terms if t in ratios}

    def logit(self, terms):
        """Return the logistic regression's log-odds of Positive for a set of terms."""
        # fsum: the same answer whatever order the set iterates in (it varies with the hash seed).
        return self.intercept + math.fsum(map(self.pulls.get, terms, itertools.repeat(0.0)))

    def scores(self, tweets):
        """Return the probability of Positive for each tweet."""
        check_tweets(tweets)
        preprocess, logit = self.preprocess, self.logit
        return [sigmoid(logit(preprocess(t))) for t in tweets]

    def run(self, tweets):
        """Return the label of each tweet, in input order."""
        return [postprocess(p) for p in self.scores(tweets)]

    def explain(self, tweet):
        """Return the terms that pushed a tweet toward each label, with their pull on the logit."""
        check_tweets([tweet])
        pulls = {t: self.pulls[t] for t in self.features(self.preprocess(tweet))}
        ranked = sorted(pulls.items(), key=lambda item: (-abs(item[1]), item[0]))
        return {
            "Positive": [[t, w] for t, w in ranked if w > 0],
            "Negative": [[t, w] for t, w in ranked if w < 0],
        }


def check_tweets(tweets):
    """Raise TypeError naming the first item that is not a string."""
    if isinstance(tweets, str):
        raise TypeError("tweets must be a list of strings, got a single string")
    for i, tweet in enumerate(tweets):
        if not isinstance(tweet, str):
            raise TypeError(f"tweet at index {i} must be a str, got {type(tweet).__name__}")


def sigmoid(z):
    """Return 1 / (1 + e^-z) without overflowing."""
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def postprocess(score):
    """Return the label for a probability of Positive; exactly 0.5 is Positive."""
    return LABELS[score >= 0.5]


def load(directory=ARTIFACTS_DIR):
    """Load the artifacts, checking each against the manifest; fail naming the file."""
    directory = Path(directory)
    manifest, version = read_manifest(directory)
    documents = {}
    for name in (PREPROCESSING_FILE, MODEL_FILE, EVALUATION_FILE):
        path = directory / name
        if name not in manifest:
            raise ArtifactError(f"{directory / MANIFEST_FILE} does not list {name}")
        try:
            data = path.read_bytes()
        except OSError as e:
            raise ArtifactError(f"cannot read model artifact {path}: {e.strerror}") from None
        if hashlib.sha256(data).hexdigest() != manifest[name]:
            raise ArtifactError(
                f"{path} does not match its SHA-256 in {MANIFEST_FILE}: it is corrupt or altered"
            )
        try:
            documents[name] = json.loads(data)
        except ValueError as e:
            raise ArtifactError(f"{path} is not valid JSON: {e}") from None
    preprocessing, weights = documents[PREPROCESSING_FILE], documents[MODEL_FILE]
    check_weights(weights, directory / MODEL_FILE)
    if not isinstance(documents[EVALUATION_FILE], dict):
        raise ArtifactError(f"{directory / EVALUATION_FILE} is malformed: not a JSON object")
    try:
        return Model(preprocessing, weights, version, documents[EVALUATION_FILE])
    except (KeyError, TypeError, ValueError, re.error) as e:
        raise ArtifactError(f"{directory / PREPROCESSING_FILE} is malformed: {e!r}") from None


def read_manifest(directory):
    """Return {file name: SHA-256} from the manifest (`sha256sum` format), and the model version.

    The version is the start of the manifest's own SHA-256: it changes when any artifact does.
    """
    path = directory / MANIFEST_FILE
    try:
        raw = path.read_bytes()
        lines = raw.decode("utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ArtifactError(f"cannot read model manifest {path}: {e}") from None
    manifest = {}
    for line in lines:
        digest, _, name = line.partition("  ")
        if not re.fullmatch(r"[0-9a-f]{64}", digest) or not name:
            raise ArtifactError(f"{path} is malformed: {line!r}")
        manifest[name] = digest
    return manifest, hashlib.sha256(raw).hexdigest()[:12]


def check_weights(weights, path):
    """Raise ArtifactError unless the weights are a well-formed model of this format."""
    columns = ("terms", "positive_counts", "negative_counts", "log_count_ratios", "coefficients")
    problem = None
    if not isinstance(weights, dict) or weights.get("format_version") != FORMAT_VERSION:
        problem = f"format_version is not {FORMAT_VERSION}"
    elif not all(isinstance(weights.get(c), list) for c in columns):
        problem = f"it needs the lists {', '.join(columns)}"
    elif len({len(weights[c]) for c in columns}) != 1:
        problem = "its lists differ in length"
    elif not all(
        isinstance(x, int | float) and math.isfinite(x)
        for x in [weights.get("intercept"), *weights["log_count_ratios"], *weights["coefficients"]]
    ):
        problem = "a ratio, coefficient or the intercept is missing or not a finite number"
    if problem:
        raise ArtifactError(f"{path} is malformed: {problem}")


@functools.cache
def default_model():
    """Load the shipped model once per process."""
    return load()


def run(tweets):
    """Return "Positive" or "Negative" for each tweet, in input order."""
    return default_model().run(tweets)


def scores(tweets):
    """Return the probability of Positive for each tweet."""
    return default_model().scores(tweets)
