"""The sentiment model: load the artifacts, preprocess, frequency features, logistic regression,
postprocess.

The model is NB-weighted logistic regression (Wang & Manning, 2012): each term (a stemmed word, a
pair of neighbouring words, or a word within a negation's scope, "not → happi") present in a tweet
contributes its log-count ratio, how much more often it appeared in positive than in negative
training tweets, times its logistic-regression coefficient. A few dense features sit beside the
terms, each with its own coefficient: the tweet's positive and negative words by VADER's sentiment
lexicon (valences flipped within a negation's scope), and flags such as an @mention or a URL. The
artifacts are plain JSON, checked against a SHA-256 manifest; nothing is unpickled and nothing is
downloaded.
"""

import functools
import hashlib
import html
import itertools
import json
import math
import operator
import os
import re
import warnings
from pathlib import Path

from nltk.stem.porter import PorterStemmer

LABELS = ("Negative", "Positive")
THRESHOLD = 0.5  # a probability of Positive at or above it is Positive
ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"
MANIFEST_FILE = "MANIFEST.sha256"
PREPROCESSING_FILE = "preprocessing.json"
MODEL_FILE = "model.json"
EVALUATION_FILE = "evaluation.json"  # the model card's figures, for clients to read
FORMAT_VERSION = 2
# The dense features' names, in the order of their coefficients: how explanations name them.
DENSE_COLUMNS = ("dense_features", "dense_coefficients")
LEXICON_FEATURES = ("lexicon: positive words", "lexicon: negative words")
# Tweets repeat words, so normalised tokens and their valences are cached: up to a bound, so odd
# input cannot grow the caches forever. A token longer than TOKEN_KEEP_CHARS is no word anyone
# repeats, and is worked out anew each time it is seen: so the caches' memory is bounded too, by
# count and length (a few MB), whatever is sent.
TOKEN_CACHE_SIZE = 50_000
TOKEN_KEEP_CHARS = 64  # the compiled core keeps tokens of at most this many bytes, likewise
ZERO = 0.0


class ArtifactError(Exception):
    """An artifact is missing, corrupt or altered."""


class Preprocessor:
    """Turn a tweet into terms and dense features, as the settings saved with the model say."""

    def __init__(self, settings):
        # What is dropped from the words (URLs, @mentions), in order; with flags, whether each was
        # there is a dense feature of that name.
        self.strip = [re.compile(p) for p in settings["strip_patterns"].values()]
        self.flags = tuple(settings["strip_patterns"]) if settings["flags"] else ()
        self.fold_characters = settings["fold_characters"]
        self.token = re.compile(settings["token_pattern"])
        self.elongation = re.compile(settings["elongation_pattern"])
        self.repeat = r"\1" * settings["max_repeat"]
        self.stop_words = frozenset(settings["stop_words"])
        self.ngrams = settings["ngrams"]
        if settings["stemmer"] != "porter-nltk-extensions":
            raise ValueError(f"unknown stemmer {settings['stemmer']!r}")
        self.stemmer = PorterStemmer(PorterStemmer.NLTK_EXTENSIONS)
        negation = settings["negation"]
        self.negators = frozenset(negation["negators"])
        self.scope = negation["scope"]  # tokens after a negator, within its clause
        self.mark = negation["mark"]
        self.clause_ends = frozenset(negation["clause_ends"])
        self.separators = frozenset(negation["separators"])  # clause ends that are not terms
        lexicon = settings["lexicon"]
        self.valences = lexicon["valences"]
        self.lexicon_scale = lexicon["scale"]
        self.dense_names = (*LEXICON_FEATURES, *self.flags)
        # Tweets repeat words: each token's stem and valence are computed once.
        self.normalised = TokenCache(self.normalise, TOKEN_CACHE_SIZE)
        self.valence = TokenCache(self.lexicon_valence, TOKEN_CACHE_SIZE)

    def raw_tokens(self, text):
        """Case-fold, drop URLs and @mentions, fold apostrophes, tokenise; and return, for each
        strip pattern, 1.0 if it dropped something, else 0.0."""
        text = text.lower()
        found = []
        for pattern in self.strip:
            text, count = pattern.subn(" ", text)
            found.append(1.0 if count else 0.0)
        for character in self.fold_characters:
            text = text.replace(character, "")
        return self.token.findall(text), found

    def tokens(self, text):
        """Return the tweet's normalised tokens (stems), without stop words and separators."""
        raw, _ = self.raw_tokens(html.unescape(text))
        return list(filter(None, map(self.normalised.__getitem__, raw)))

    def normalise(self, token):
        """Return a token (case-folded) stemmed with elongations cut; "" for a stop word or a
        separator."""
        token = self.elongation.sub(self.repeat, token)
        if token in self.stop_words or token in self.separators:
            return ""
        return self.stemmer.stem(token)

    def lexicon_valence(self, token):
        """Return the lexicon's valence for a token (case-folded) with elongations cut, or 0.0."""
        return self.valences.get(self.elongation.sub(self.repeat, token), 0.0)

    def read(self, text):
        """Return a tweet's terms (a set) and its dense features (a tuple of numbers)."""
        raw, flags = self.raw_tokens(html.unescape(text))
        if self.negators.isdisjoint(raw):  # most tweets: no negation, so no word-by-word pass
            terms = self.terms(list(filter(None, map(self.normalised.__getitem__, raw))))
            valences = list(filter(None, map(self.valence.__getitem__, raw)))
        else:
            tokens, valences, negated = self.negated(raw)
            terms = self.terms(tokens)
            terms.update(negated)
        positive = negative = 0.0
        if valences:
            positive = math.fsum(filter(ZERO.__lt__, valences))
            negative = 0.0 - math.fsum(filter(ZERO.__gt__, valences))
        scale = self.lexicon_scale
        lexicon = (math.log1p(positive) * scale, math.log1p(negative) * scale)
        return terms, (*lexicon, *flags) if self.flags else lexicon

    def negated(self, raw):
        """Return the stems of a tweet with a negator, its valences (flipped within a negation's
        scope), and its negated terms ("not → happi")."""
        stems, valence_of, negators = self.normalised, self.valence, self.negators
        clause_ends, scope, mark = self.clause_ends, self.scope, self.mark
        tokens, valences, negated = [], [], []
        since = scope  # tokens since the last negator of this clause, once past its scope
        for token in raw:
            term, valence = stems[token], valence_of[token]
            if token in negators:
                since = 0
            elif token in clause_ends:
                since = scope
            elif since < scope:
                since += 1
                valence = -valence
                if term:
                    negated.append(mark + term)
            if valence:
                valences.append(valence)
            if term:
                tokens.append(term)
        return tokens, valences, negated

    def terms(self, tokens):
        """Return the set of terms: the tokens, and with ngrams=2 each pair of neighbours."""
        if self.ngrams == 2:
            return {*tokens, *map(" ".join, zip(tokens, tokens[1:], strict=False))}
        return set(tokens)


class TokenCache(dict):
    """A dictionary that computes what it lacks, and is emptied when it reaches its size limit;
    keys longer than TOKEN_KEEP_CHARS are computed and not kept."""

    def __init__(self, compute, limit):
        super().__init__()
        self.compute, self.limit = compute, limit

    def __missing__(self, key):
        if len(key) > TOKEN_KEEP_CHARS:
            return self.compute(key)
        if len(self) >= self.limit:
            self.clear()
        value = self[key] = self.compute(key)
        return value


def default_settings(stop_words=(), negators=(), scope=3, valences=None, flags=True):
    """Return the preprocessing settings train.py saves with a model.

    negators start a negation's scope of `scope` tokens; valences are the lexicon's, by word;
    flags=False leaves the flags out (train.py compares the model with and without them).
    """
    return {
        # URLs and @mentions are no words, but whether a tweet has them can be a flag (below).
        # Matched after case-folding, in this order.
        "strip_patterns": {"URL": r"https?://\S+|www\.\S+", "@mention": r"@\w+"},
        # Letters repeated three or more times are cut to two, as Sentiment140's authors did:
        # "loooove" and "looooove" become one word, still apart from "love".
        "elongation_pattern": r"([^\W\d_])\1{2,}",
        "max_repeat": 2,
        # "don't" and "dont" are one word in tweets.
        "fold_characters": "'\u2019",
        # Runs of letters and digits, "!" and "?", hearts, emoticons (after case-folding), and the
        # punctuation that ends a clause.
        "token_pattern": r"[^\W_]+|[!?]|<3|(?<!\w)[:;=][-o*]?[()\[\]dp/\\|*]+|[.,;:]",
        "stop_words": sorted(stop_words),
        "stemmer": "porter-nltk-extensions",
        "ngrams": 2,
        # "not happy": the tokens after a negator, up to the end of its clause, are terms of their
        # own too ("not → happi"), and their lexicon valences count the other way.
        "negation": {
            "negators": sorted(negators),
            "scope": scope,
            "mark": "not → ",
            "clause_ends": [".", ",", ";", ":", "!", "?"],
            "separators": [".", ",", ";", ":"],  # clause ends that are not terms
        },
        # log(1 + the summed positive valences of the tweet's words), and of the negative ones,
        # times scale; looked up by the word as typed (case-folded, elongations cut), not its stem.
        "lexicon": {"scale": 0.25, "valences": dict(sorted((valences or {}).items()))},
        # With flags, each strip pattern is a dense feature too: 1 if it dropped something.
        "flags": flags,
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
        if tuple(weights["dense_features"]) != self.preprocessor.dense_names:
            raise ValueError("the dense features of model.json and preprocessing.json differ")
        self.dense = dict(
            zip(weights["dense_features"], weights["dense_coefficients"], strict=True)
        )
        self.dense_coefficients = tuple(self.dense.values())
        self.core = compiled_core(self, preprocessing)

    def preprocess(self, tweet):
        """Return what the model reads of one tweet: its terms (a set) and its dense features."""
        return self.preprocessor.read(tweet)

    def features(self, reading):
        """Return the frequency features, the log-count ratio of each known term, and the dense
        features that are not zero, by name."""
        terms, dense = reading
        ratios = self.ratios
        features = {t: ratios[t] for t in terms if t in ratios}
        features.update((n, x) for n, x in zip(self.dense, dense, strict=True) if x)
        return features

    def logit(self, reading):
        """Return the logistic regression's log-odds of Positive for what was read of a tweet."""
        terms, dense = reading
        # fsum: the same answer whatever order the set iterates in (it varies with the hash seed),
        # and on any Python (sum() of floats rounds otherwise since 3.12); the C core does the same.
        pulls = math.fsum(map(self.pulls.get, terms, itertools.repeat(0.0)))
        return self.intercept + pulls + math.fsum(map(operator.mul, self.dense_coefficients, dense))

    def scores(self, tweets):
        """Return the probability of Positive for each tweet."""
        if self.core is not None:
            return self.core.scores(tweets)
        return self.python_scores(tweets)

    def scores_in(self, data, spans, texts, packed=False):
        """scores() of a JSON body's tweets as contract_core.scan read them in place: texts[i],
        or where it is None the ASCII bytes of data at spans' i-th start and length. By the
        compiled core only (contract.py asks only a model that has one). packed: the scores as
        a memoryview of doubles, no float object made for each."""
        if packed:
            return memoryview(self.core.scores_in(data, spans, texts, True)).cast("d")
        return self.core.scores_in(data, spans, texts)

    def python_scores(self, tweets):
        """The scores by this module alone: the reference the compiled core is checked against."""
        check_tweets(tweets)
        preprocess, logit = self.preprocess, self.logit
        return [sigmoid(logit(preprocess(t))) for t in tweets]

    def run(self, tweets):
        """Return the label of each tweet, in input order."""
        return labels(self.scores(tweets))

    def explain(self, tweet):
        """Return the terms and dense features that pushed a tweet toward each label, with their
        pull on the logit."""
        check_tweets([tweet])
        features = self.features(self.preprocess(tweet))
        pulls = {
            n: self.pulls[n] if n in self.pulls else self.dense[n] * x for n, x in features.items()
        }
        ranked = sorted(pulls.items(), key=lambda item: (-abs(item[1]), item[0]))
        return {
            "Positive": [[t, w] for t, w in ranked if w > 0],
            "Negative": [[t, w] for t, w in ranked if w < 0],
        }


# What the compiled core (core/sentiment_core.c) reads as this module does: these settings, as
# default_settings gives them. Artifacts with other settings are scored in Python.
CORE_READS = (
    "strip_patterns",
    "fold_characters",
    "token_pattern",
    "elongation_pattern",
    "max_repeat",
    "stemmer",
)
CORE_NEGATION = ("clause_ends", "separators")
CORE_VERSION = 5  # core/sentiment_core.c's VERSION: what it takes and how it reads


def compiled_core(model, preprocessing, token_limit=TOKEN_CACHE_SIZE):
    """The compiled scorer for this model, or None: not installed, turned off with
    SENTIMENT_CORE=python, built from other sources than this module expects (it warns), or the
    model's settings are not the ones it implements."""
    if os.environ.get("SENTIMENT_CORE") == "python":
        return None
    try:
        import sentiment_core
    except ImportError:
        return None
    if getattr(sentiment_core, "VERSION", None) != CORE_VERSION:
        warnings.warn(
            f"the compiled core is version {getattr(sentiment_core, 'VERSION', 1)}, model.py needs"
            f" {CORE_VERSION}: scoring in pure Python until it is rebuilt (make does it)",
            RuntimeWarning,
            stacklevel=2,
        )
        return None
    default = default_settings()
    if any(preprocessing[k] != default[k] for k in CORE_READS) or any(
        preprocessing["negation"][k] != default["negation"][k] for k in CORE_NEGATION
    ):
        return None
    # Terms by stem ids: words and negated words by the id of their stem, pairs by both ids.
    reader, mark = model.preprocessor, model.preprocessor.mark
    words, negated, pairs = {}, {}, {}
    for term, pull in model.pulls.items():
        if term.startswith(mark):
            negated[term.removeprefix(mark)] = pull
        elif " " in term:
            pairs[tuple(term.split(" "))] = pull
        else:
            words[term] = pull
    stems = sorted({*words, *negated, *(stem for pair in pairs for stem in pair)})
    ids = {stem: i for i, stem in enumerate(stems)}
    return sentiment_core.Scorer(
        stem_ids=ids,
        word_pulls=[words.get(s, 0.0) for s in stems],
        negated_pulls=[negated.get(s, 0.0) for s in stems],
        pair_pulls=[(ids[a], ids[b], pull) for (a, b), pull in pairs.items()],
        # What the core reads of a token it sees for the first time: ASCII tokens it stems
        # itself, others it takes from this module's token caches.
        negators=reader.negators,
        unstemmed=reader.stop_words | reader.separators,
        lexicon=reader.valences,
        stems=reader.normalised,
        valences=reader.valence,
        # Tweets that are not ASCII once unescaped are tokenised here, and scored there.
        raw_tokens=reader.raw_tokens,
        intercept=model.intercept,
        scale=reader.lexicon_scale,
        coefficients=model.dense_coefficients,
        scope=reader.scope,
        pairs=reader.ngrams == 2,
        unescape=html.unescape,
        token_limit=token_limit,
    )


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
    return LABELS[score >= THRESHOLD]


def labels(scores):
    """Return the label for each probability, as postprocess does, without a call for each."""
    negative, positive, threshold = LABELS[0], LABELS[1], THRESHOLD  # a fifth faster than
    return [positive if score >= threshold else negative for score in scores]  # LABELS[...]


def load(directory=ARTIFACTS_DIR):
    """Load the artifacts, checking each against the manifest; fail naming the file."""
    directory = Path(directory)
    documents, version = read_checked(directory, (PREPROCESSING_FILE, MODEL_FILE, EVALUATION_FILE))
    preprocessing, weights = documents[PREPROCESSING_FILE], documents[MODEL_FILE]
    check_weights(weights, directory / MODEL_FILE)
    if not isinstance(documents[EVALUATION_FILE], dict):
        raise ArtifactError(f"{directory / EVALUATION_FILE} is malformed: not a JSON object")
    try:
        return Model(preprocessing, weights, version, documents[EVALUATION_FILE])
    except (KeyError, TypeError, ValueError, re.error) as e:
        raise ArtifactError(f"{directory / PREPROCESSING_FILE} is malformed: {e!r}") from None


def read_checked(directory, names):
    """Return ({name: parsed JSON}, version) for artifact files checked against the manifest;
    ArtifactError naming the file otherwise. Every model kind loads its files through it."""
    manifest, version = read_manifest(directory)
    documents = {}
    for name in names:
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
    return documents, version


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
    elif not all(isinstance(weights.get(c), list) for c in (*columns, *DENSE_COLUMNS)):
        problem = f"it needs the lists {', '.join((*columns, *DENSE_COLUMNS))}"
    elif len({len(weights[c]) for c in columns}) != 1:
        problem = "its lists of terms differ in length"
    elif len(weights["dense_features"]) != len(weights["dense_coefficients"]):
        problem = "its dense features and their coefficients differ in length"
    elif not all(
        isinstance(x, int | float) and math.isfinite(x)
        for x in [
            weights.get("intercept"),
            *weights["log_count_ratios"],
            *weights["coefficients"],
            *weights["dense_coefficients"],
        ]
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
