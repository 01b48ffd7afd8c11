"""The compiled core (core/sentiment_core.c) against model.py's pure-Python scorer: the same
scores, bit for bit, on the data set, on generated junk and on what it hands back to Python."""

import json
import os
import random

import pandas as pd
import pytest
from conftest import absent

import contract
import model
import train

# What the core must read exactly as model.py does: every alternative of the token pattern and
# the strip patterns, their edges, negation, and what it leaves to Python (non-ASCII, entities).
PIECES = [
    "not", "no", "never", "dont", "don't", "won’t", "happy", "sad", "good", "bad", "I", "at all",
    ":)", ":-(", ":*", ";p", ":o)", "=d", ":D", ":-", "==)", "3:)", "x:)", "_:)", "<3", "<", "3",
    "!", "?", ".", ",", ";", ":", "...", "=", "*", "(", "|", "\\", "/",
    "http://t.co/x", "https://a.b/c?d=e", "HTTP://X.Y", "http://", "https:/x", "www.x.y", "www.",
    "@bob", "@", "@_x", "@@a", "a@b", "_", "a_b", "12", "1.5", "HAPPY", "LoOoOve", "soooo",
    "it's", "'", "&amp;", "&lt;3", "&quot;", "&#39;", "&eacute;", "&bogus;", "&", "café", "日本",
    "\t", "\n", "\x0b", "\x1c", "\x1f", "\x00", "\x7f", "\u00a0", "\ud800",
]  # fmt: skip


@pytest.fixture(scope="module")
def shipped_core():
    shipped = model.load()
    if shipped.core is None:
        absent("the compiled core is not installed (make installs it where a C compiler is)")
    return shipped


def junk(count, seed):
    rng = random.Random(seed)
    glue = ["", " ", "  ", "\t"]
    made = [
        "".join(rng.choice(PIECES) + rng.choice(glue) for _ in range(rng.randint(0, 30)))
        for _ in range(count)
    ]
    made += [
        "".join(chr(rng.randint(1, 127)) for _ in range(rng.randint(0, 80))) for _ in range(count)
    ]
    return made


def test_the_core_gives_the_reference_scores_on_the_data_set(shipped_core, data_path):
    tweets = pd.read_csv(data_path, keep_default_na=False)["text"].tolist()
    assert shipped_core.scores(tweets) == shipped_core.python_scores(tweets)


# The fast path's tweets read in place (issue 36): contract_core.scan leaves each ASCII tweet
# with no escape in the body, and the core reads it there as it would read its str.


def scores_in_place(shipped, tweets):
    body = json.dumps({str(i): t for i, t in enumerate(tweets)}).encode()
    limits = {**contract.LIMITS, "MAX_TWEETS": len(tweets) or 1}
    scanned = contract.scanned_batch(body, limits, shipped)
    assert scanned is not None and None in scanned.texts
    scores = shipped.scores_in(scanned.data, scanned.tweets, scanned.texts)
    packed = shipped.scores_in(scanned.data, scanned.tweets, scanned.texts, packed=True)
    assert packed.format == "d" and packed.tolist() == scores  # the same doubles, as they are
    return scores


def test_the_core_reads_tweets_in_a_body_as_their_strs(shipped_core, data_path):
    pytest.importorskip("contract_core")
    tweets = pd.read_csv(data_path, keep_default_na=False)["text"].tolist()
    assert scores_in_place(shipped_core, tweets) == shipped_core.python_scores(tweets)
    for seed in range(4):
        made = junk(2500, seed)  # a lone surrogate is refused: not Unicode
        tweets = [t for t in made if len(t) <= 5000 and "\ud800" not in t]
        assert scores_in_place(shipped_core, tweets) == shipped_core.python_scores(tweets)


def test_scores_in_refuses_places_outside_the_body(shipped_core):
    body = b'{"1": "happy"}'
    scanned = contract.scanned_batch(body, contract.LIMITS, shipped_core)
    assert scanned.texts == [None]
    with pytest.raises(ValueError):
        shipped_core.scores_in(body[:8], scanned.tweets, scanned.texts)
    with pytest.raises(ValueError):
        shipped_core.scores_in(body, scanned.tweets, [None, None])
    with pytest.raises(TypeError):
        shipped_core.scores_in(body, scanned.tweets, [b"happy"])


@pytest.mark.parametrize("seed", range(4))
def test_the_core_gives_the_reference_scores_on_junk(shipped_core, seed):
    tweets = junk(5000, seed)
    core, reference = shipped_core.scores(tweets), shipped_core.python_scores(tweets)
    assert [(t, c) for t, c, r in zip(tweets, core, reference, strict=True) if c != r] == []
    assert [model.postprocess(p) for p in core] == shipped_core.run(tweets)


@pytest.mark.parametrize(
    "tweet",
    ["café", "I &lt;3 you", "&eacute;t&eacute;", "&#128512; yes", "\ud800", "", "&", "&amp;amp;"],
)
def test_what_the_core_leaves_to_python_gets_the_same_score(shipped_core, tweet):
    assert shipped_core.scores([tweet]) == shipped_core.python_scores([tweet])


@pytest.mark.parametrize(
    "tweets, message",
    [
        (["ok", None], "tweet at index 1 must be a str, got NoneType"),
        ([3], "tweet at index 0 must be a str, got int"),
        ("a single string", "a list of strings, got a single string"),
    ],
)
def test_the_core_refuses_what_python_refuses(shipped_core, tweets, message):
    with pytest.raises(TypeError, match=message):
        shipped_core.core.scores(tweets)


SHIPPED_SETTINGS = json.loads((model.ARTIFACTS_DIR / model.PREPROCESSING_FILE).read_text())


def test_a_bounded_token_table_is_emptied_and_still_answers_the_same(shipped_core):
    small = model.compiled_core(shipped_core, SHIPPED_SETTINGS, token_limit=7)
    tweets = junk(500, 9)
    assert small.scores(tweets) == shipped_core.python_scores(tweets)


def test_the_core_can_be_turned_off_and_other_settings_are_scored_in_python(monkeypatch):
    monkeypatch.setenv("SENTIMENT_CORE", "python")
    assert model.load().core is None
    monkeypatch.delenv("SENTIMENT_CORE")
    other = {**SHIPPED_SETTINGS, "token_pattern": r"\w+"}
    assert model.compiled_core(model.load(), other) is None


def test_a_core_built_from_other_sources_is_not_used_and_says_so(shipped_core, monkeypatch):
    import sentiment_core

    monkeypatch.setattr(sentiment_core, "VERSION", model.CORE_VERSION - 1)
    with pytest.warns(RuntimeWarning, match="rebuilt"):
        assert model.load().core is None


def test_ci_has_the_core():
    if os.environ.get("CI"):
        assert model.load().core is not None, "the compiled core did not build in CI"


# The core's Porter stemmer (core/porter.c) against NLTK's, which stays the reference.

# Stems of every shape the rules look at: measures 0 to 3, vowels and 'y' as either, double
# consonants, cvc endings (with w, x, y), the stems NLTK's irregular forms name.
STEMS = [
    "", "a", "b", "y", "yy", "by", "ay", "tr", "ee", "tree", "oat", "ivy", "troubl", "privat",
    "hop", "fil", "fail", "conflat", "siz", "hiss", "fizz", "fall", "tann", "agr", "plaster",
    "bl", "s", "sk", "d", "l", "ski", "cann", "inn", "out", "succ", "exc", "proc", "syzyg",
    "rel", "gener", "electr", "form", "geo", "arch", "x", "wh", "bow", "box", "play", "enjoy",
]  # fmt: skip
# Every suffix a rule names, and the endings that lead to them.
SUFFIXES = [
    "", "s", "ss", "sses", "ies", "ied", "eed", "ed", "ing", "y", "at", "bl", "iz", "*d",
    "ational", "tional", "enci", "anci", "izer", "bli", "abli", "alli", "entli", "eli", "ousli",
    "ization", "ation", "ator", "alism", "iveness", "fulness", "ousness", "aliti", "iviti",
    "biliti", "fulli", "logi", "icate", "ative", "alize", "iciti", "ical", "ful", "ness", "al",
    "ance", "ence", "er", "ic", "able", "ible", "ant", "ement", "ment", "ent", "sion", "tion",
    "ion", "ou", "ism", "ate", "iti", "ous", "ive", "ize", "e", "ll", "ally", "ingly", "edly",
]  # fmt: skip


def nltk_stem():
    from nltk.stem.porter import PorterStemmer

    return PorterStemmer(PorterStemmer.NLTK_EXTENSIONS).stem


def words_of_the_model_and_data(shipped_core):
    """Every ASCII token of the data set, raw and with elongations cut, and the lexicon's words."""
    reader = shipped_core.preprocessor
    words = {w for w in reader.valences if w.isascii()}
    if train.DEFAULT_DATA.is_file():
        for text in pd.read_csv(train.DEFAULT_DATA, keep_default_na=False)["text"]:
            words.update(t for t in reader.raw_tokens(text.lower())[0] if t.isascii())
    return words | {reader.elongation.sub(reader.repeat, w) for w in words}


def test_the_cores_stemmer_is_nltks_on_the_data_and_the_lexicon(shipped_core):
    import sentiment_core

    stem, words = nltk_stem(), sorted(words_of_the_model_and_data(shipped_core))
    assert len(words) > 7000
    assert [(w, stem(w)) for w in words if sentiment_core.porter_stem(w) != stem(w)] == []


def test_the_cores_stemmer_is_nltks_on_every_rule_and_random_words(shipped_core):
    import sentiment_core

    rng = random.Random(17)
    words = {a + b + c for a in STEMS for b in SUFFIXES for c in ("", "s", "ed", "ing", "ly")}
    letters = "aeiouyylsztdbgnmrcpkwx*"  # vowels, 'y' twice, the letters rules name, a '*'
    words |= {"".join(rng.choices(letters, k=rng.randint(1, 14))) for _ in range(100_000)}
    stem = nltk_stem()
    assert [(w, stem(w)) for w in sorted(words) if sentiment_core.porter_stem(w) != stem(w)] == []


@pytest.mark.parametrize(
    "tweet",
    [
        "so happy &amp; not sad &lt;3 &gt;3 &quot;great&quot; don&#39;t",  # decoded by the core
        "it&#039;s not good &nbsp; &copy; &ampersand; &amp",  # by html.unescape, then the core
        "naïve, not good at all 😀 but happy",  # tokenised by model.py, scored by the core
        "ＨＡＰＰＹ not Ｈａｐｐｙ İstanbul Kelvin K",  # case-folds to other lengths
        "café @bob http://t.co/x not good. no no never happy!!",
    ],
)
def test_tweets_read_through_model_py_get_the_reference_score(shipped_core, tweet):
    assert shipped_core.scores([tweet]) == shipped_core.python_scores([tweet])


def test_a_cold_core_learns_each_word_as_the_reference_reads_it(shipped_core):
    cold = model.load()  # a new scorer, every token seen for the first time
    tweets = junk(2000, 11)
    assert cold.scores(tweets) == shipped_core.python_scores(tweets)


# The pulls' exact sum (fixed point in 128 bits, rounded once) against math.fsum, on models made
# for it: words k0, k1, ... (NLTK stems them to themselves), each term's pull its coefficient.


def made_model(pulls, pairs=(), negated=()):
    """A model of words k<i> with these pulls, pairs (i, j, pull) and negated words (i, pull)."""
    terms = [f"k{i}" for i in range(len(pulls))]
    terms += [f"k{i} k{j}" for i, j, _ in pairs] + [f"not → k{i}" for i, _ in negated]
    values = [*pulls, *(p for *_, p in pairs), *(p for _, p in negated)]
    settings = model.default_settings(negators=["not"])
    dense = [*model.LEXICON_FEATURES, *settings["strip_patterns"]]
    weights = {"terms": terms, "log_count_ratios": [1.0] * len(terms), "coefficients": values}
    weights.update(intercept=0.0, dense_features=dense, dense_coefficients=[0.0] * 4)
    made = model.Model(settings, weights)
    if made.core is None:
        absent("the compiled core is not installed (make installs it where a C compiler is)")
    return made


def sparse_pulls(rng, count):
    """Pulls of few significant bits over 80 binary orders: their sums often fall half-way."""
    sign, bits, exponent = (-1, 1), (1, 1023), (-80, 0)
    return [
        rng.choice(sign) * rng.randint(*bits) * 2.0 ** rng.randint(*exponent) for _ in range(count)
    ]


def made_tweets(rng, words, count):
    return [" ".join(rng.choices([*words, "not", "."], k=rng.randint(0, 40))) for _ in range(count)]


def reference_logits(made, tweets):
    return [made.logit(made.preprocess(t)) for t in tweets]


@pytest.mark.parametrize("seed", range(3))
def test_the_fixed_point_sum_rounds_as_fsum_does(seed):
    rng = random.Random(seed)
    pulls = sparse_pulls(rng, 30)
    pairs = [(rng.randrange(30), rng.randrange(30), p) for p in sparse_pulls(rng, 60)]
    pairs = list({(i, j): (i, j, p) for i, j, p in pairs}.values())
    negated = [(i, p) for i, p in zip(range(0, 30, 2), sparse_pulls(rng, 15), strict=False)]
    made = made_model(pulls, pairs, negated)
    assert made.core.exact == 1
    tweets = made_tweets(rng, [f"k{i}" for i in range(30)], 3000)
    assert made.core.logits(tweets) == reference_logits(made, tweets)


def test_a_sum_half_way_between_two_doubles_rounds_to_the_even_one():
    made = made_model([1.0, 2.0**-53, 3 * 2.0**-53, -(2.0**-53), 2.0**-105])
    tweets = ["k0 k1", "k0 k2", "k3 k0", "k0 k1 k4", "k1 k2"]
    assert made.core.logits(tweets) == reference_logits(made, tweets)
    assert made.core.logits(tweets)[:3] == [1.0, 1.0 + 2 * 2.0**-52, 1.0 - 2.0**-53]


def test_pulls_too_far_apart_for_fixed_point_are_summed_as_fsum_does():
    rng = random.Random(5)
    made = made_model([1e-300, 1.0, 1e300, -1.0, *sparse_pulls(rng, 10)])
    assert made.core.exact == 0
    tweets = made_tweets(rng, [f"k{i}" for i in range(14)], 2000)
    assert made.core.logits(tweets) == reference_logits(made, tweets)


def test_threads_sharing_a_model_each_get_the_reference_scores(shipped_core):
    """A thread inside a call back to Python (a token that is not ASCII) lets others run: each
    call to the core must still read its tweets alone."""
    import sys
    import threading

    tweets = junk(400, 21) + ["naïve not good at all but happy", "café não é bom 😀 not bad"] * 50
    reference = shipped_core.python_scores(tweets)
    shared, wrong = model.load(), []

    def score():
        for _ in range(15):
            got = shared.scores(tweets)
            wrong.extend(i for i, (g, r) in enumerate(zip(got, reference, strict=True)) if g != r)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=score) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert wrong == []
