"""The model: each pipeline stage, the artifact checks, training, the shipped model's behaviour."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest

import model
import train

PAYLOAD_TWEETS = list(
    json.loads((model.ARTIFACTS_DIR.parent / "payload.json").read_text()).values()
)


@pytest.fixture(scope="module")
def pre():
    return model.Preprocessor(model.default_settings(stop_words=["the", "a"]))


@pytest.mark.parametrize(
    "text, tokens",
    [
        ("Hello World", ["hello", "world"]),
        ("see http://t.co/abc and www.example.com now", ["see", "and", "now"]),
        ("HTTPS://T.CO/X ok", ["ok"]),
        ("@bob_1 thanks @alice", ["thank"]),
        ("fish &amp; chips", ["fish", "chip"]),
        ("i &lt;3 you", ["i", "<3", "you"]),
        ("the cat", ["cat"]),
        ("not good, no way", ["not", "good", "no", "way"]),
        ("don't, dont, don’t", ["dont", "dont", "dont"]),
        ("loooove it", ["loov", "it"]),
        ("happy :) sad :( :D", ["happi", ":)", "sad", ":(", ":d"]),
        ("wow!!! really?", ["wow", "!", "!", "!", "realli", "?"]),
        ("#blessed... yes", ["bless", "ye"]),
        ("", []),
        ("   \t\n", []),
        ("\x00\u200f\u202e", []),
        ("日本語 текст", ["日本語", "текст"]),
    ],
)
def test_tokens(pre, text, tokens):
    assert pre.tokens(text) == tokens


def test_elongations_of_any_length_are_one_token(pre):
    assert pre.tokens("loooove") == pre.tokens("looooooooove") != pre.tokens("love")


def test_terms_are_tokens_and_neighbour_pairs(pre):
    assert pre.terms(["not", "good", "!"]) == {"not", "good", "!", "not good", "good !"}
    unigram = model.Preprocessor({**model.default_settings(), "ngrams": 1})
    assert unigram.terms(["not", "good"]) == {"not", "good"}


def test_unknown_stemmer_is_refused():
    with pytest.raises(ValueError, match="unknown stemmer"):
        model.Preprocessor({**model.default_settings(), "stemmer": "snowball"})


def test_token_cache_is_bounded():
    cache = model.TokenCache(str.upper, limit=3)
    for word in "abcdefg":
        assert cache[word] == word.upper()
    assert len(cache) <= 3


NO_DENSE = (0.0, 0.0, 0.0, 0.0)


def test_features_are_ratios_of_known_terms_and_the_dense_features_not_zero(shipped):
    features = shipped.features(({"good", "not good", "zzzunknownzzz"}, (0.5, 0.0, 1.0, 0.0)))
    assert features == {
        "good": shipped.ratios["good"],
        "not good": shipped.ratios["not good"],
        "lexicon: positive words": 0.5,
        "URL": 1.0,
    }


def test_logit_is_intercept_plus_coefficient_times_feature(shipped):
    reading = ({"good", "not good", "zzzunknownzzz"}, (0.5, 0.25, 1.0, 0.0))
    expected = shipped.intercept + sum(
        shipped.coefficients[t] * x if t in shipped.coefficients else shipped.dense[t] * x
        for t, x in shipped.features(reading).items()
    )
    assert shipped.logit(reading) == pytest.approx(expected, abs=1e-12)
    assert shipped.logit((set(), NO_DENSE)) == shipped.intercept


@pytest.mark.parametrize(
    "z, p",
    [
        (-1000.0, 0.0),
        (-5.0, 1 / (1 + math.exp(5))),
        (0.0, 0.5),
        (5.0, 1 / (1 + math.exp(-5))),
        (1000.0, 1.0),
    ],
)
def test_sigmoid(z, p):
    assert model.sigmoid(z) == pytest.approx(p)


@pytest.mark.parametrize(
    "score, label", [(0.0, "Negative"), (0.4999, "Negative"), (0.5, "Positive"), (1.0, "Positive")]
)
def test_postprocess(score, label):
    assert model.postprocess(score) == label


def test_labels_are_postprocess_of_each_score():
    scores = [0.0, math.nextafter(0.5, 0), 0.5, math.nextafter(0.5, 1), 1.0, math.nan, 0.25]
    assert model.labels(scores) == [model.postprocess(s) for s in scores]
    assert model.labels(scores)[1:4] == ["Negative", "Positive", "Positive"]


def test_run_keeps_order_and_gives_labels(shipped):
    tweets = ["I love this", "I hate this", "I love this"]
    assert shipped.run(tweets) == ["Positive", "Negative", "Positive"]
    assert shipped.run([]) == []
    assert model.run(tweets) == shipped.run(tweets)


def test_scores_are_probabilities(shipped):
    scores = shipped.scores(PAYLOAD_TWEETS)
    assert all(0 < s < 1 for s in scores)
    assert [model.postprocess(s) for s in scores] == shipped.run(PAYLOAD_TWEETS)


@pytest.mark.parametrize(
    "tweets, message",
    [
        (["ok", None], "tweet at index 1 must be a str, got NoneType"),
        ([3], "tweet at index 0 must be a str, got int"),
        (["ok", "fine", b"bytes"], "tweet at index 2 must be a str, got bytes"),
        ("a single string", "a list of strings, got a single string"),
    ],
)
def test_run_refuses_non_strings(shipped, tweets, message):
    with pytest.raises(TypeError, match=message):
        shipped.run(tweets)


# Negation scope, the lexicon prior and the flags.


@pytest.fixture(scope="module")
def reader():
    settings = model.default_settings(
        negators=["not", "no", "dont"], scope=3, valences={"happy": 2.7, "sad": -2.1, "good": 1.9}
    )
    return model.Preprocessor(settings)


@pytest.mark.parametrize(
    "text, negated",
    [
        ("not happy today at all", {"not → happi", "not → today", "not → at"}),
        ("not bad, good", {"not → bad"}),  # the clause ends at the comma
        ("no! happy", set()),
        ("I don't like it. Love it", {"not → like", "not → it"}),
        ("not not happy", {"not → happi"}),  # a negator is not negated; it starts a new scope
        ("happy", set()),
    ],
)
def test_negation_marks_the_next_tokens_of_the_clause(reader, text, negated):
    terms, _ = reader.read(text)
    assert {t for t in terms if t.startswith("not → ")} == negated
    assert set(reader.tokens(text)) <= terms  # the plain tokens stay terms too


@pytest.mark.parametrize(
    "text, positive, negative",
    [
        ("happy", 2.7, 0.0),
        ("not happy", 0.0, 2.7),  # flipped within the scope
        ("happy, not sad", 2.7 + 2.1, 0.0),
        ("sad. not happy", 0.0, 2.1 + 2.7),
        ("haaaaappy goooood", 1.9, 0.0),  # elongations cut: "haappy" is no entry, "good" is
        ("", 0.0, 0.0),
    ],
)
def test_lexicon_features_sum_the_valences(reader, text, positive, negative):
    _, dense = reader.read(text)
    scale = reader.lexicon_scale
    assert dense[:2] == pytest.approx((math.log1p(positive) * scale, math.log1p(negative) * scale))


@pytest.mark.parametrize(
    "text, flags",
    [
        ("plain words", (0.0, 0.0)),
        ("see http://t.co/x", (1.0, 0.0)),
        ("WWW.EXAMPLE.COM is down", (1.0, 0.0)),
        ("@bob hi", (0.0, 1.0)),
        ("@bob look: https://x.y", (1.0, 1.0)),
    ],
)
def test_flags_say_whether_a_url_or_a_mention_was_dropped(reader, text, flags):
    terms, dense = reader.read(text)
    assert dense[2:] == flags
    assert reader.dense_names[2:] == ("URL", "@mention")
    assert not any("http" in t or "bob" in t for t in terms)


def test_the_word_by_word_pass_agrees_with_the_fast_path(shipped):
    """Tweets without a negator skip the word-by-word pass: both give the same stems, valences."""
    reader = shipped.preprocessor
    tweets = [*PAYLOAD_TWEETS, "a. b, c; d: e! f? g", "#tag &amp; :) <3 :-( xD", "日本語 текст"]
    if train.DEFAULT_DATA.is_file():
        tweets += pd.read_csv(train.DEFAULT_DATA, keep_default_na=False)["text"].tolist()
    checked = 0
    for text in tweets:
        raw, _ = reader.raw_tokens(model.html.unescape(text))
        if not reader.negators.isdisjoint(raw):
            continue
        tokens, valences, negated = reader.negated(raw)
        assert tokens == reader.tokens(text) and not negated
        assert valences == list(filter(None, map(reader.valence.__getitem__, raw)))
        checked += 1
    assert checked > len(tweets) / 2


def test_explanation_names_the_dense_features_and_negated_terms(shipped):
    explanation = shipped.explain("not happy at all @bob")
    pulls = dict(explanation["Positive"] + explanation["Negative"])
    _, dense = shipped.preprocess("not happy at all @bob")
    assert pulls["not → happi"] == shipped.pulls["not → happi"]
    assert pulls["lexicon: negative words"] == shipped.dense["lexicon: negative words"] * dense[1]
    assert pulls["@mention"] == shipped.dense["@mention"]
    assert "lexicon: positive words" not in pulls  # zero features are left out


def test_explanation_adds_up_to_the_logit(shipped):
    tweet = "not good at all, I hate mondays but love fridays"
    explanation = shipped.explain(tweet)
    assert explanation["Positive"] and explanation["Negative"]
    assert all(w > 0 for _, w in explanation["Positive"])
    assert all(w < 0 for _, w in explanation["Negative"])
    total = sum(w for _, w in explanation["Positive"] + explanation["Negative"])
    assert shipped.intercept + total == pytest.approx(shipped.logit(shipped.preprocess(tweet)))
    assert explanation["Negative"][0][0] == "hate"


# The artifact checks: each broken artifact stops loading with a message naming the file.


@pytest.fixture
def artifacts(tmp_path):
    return shutil.copytree(model.ARTIFACTS_DIR, tmp_path / "artifacts")


def reseal(directory):
    """Rewrite the manifest to match the files, as if the damage were done before sealing."""
    digests = {
        n: model.hashlib.sha256((directory / n).read_bytes()).hexdigest()
        for n in (model.PREPROCESSING_FILE, model.MODEL_FILE, model.EVALUATION_FILE)
    }
    lines = (f"{d}  {n}\n" for n, d in digests.items())
    (directory / model.MANIFEST_FILE).write_text("".join(lines))


def test_copied_artifacts_load(artifacts):
    assert model.load(artifacts).run(["I love it"]) == ["Positive"]


@pytest.mark.parametrize(
    "name",
    [model.MODEL_FILE, model.PREPROCESSING_FILE, model.EVALUATION_FILE, model.MANIFEST_FILE],
)
def test_missing_artifact_is_named(artifacts, name):
    (artifacts / name).unlink()
    with pytest.raises(model.ArtifactError, match=f"{name}"):
        model.load(artifacts)


@pytest.mark.parametrize("name", [model.MODEL_FILE, model.PREPROCESSING_FILE])
def test_corrupt_artifact_is_named(artifacts, name):
    path = artifacts / name
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(model.ArtifactError, match=f"{name} does not match its SHA-256"):
        model.load(artifacts)


def test_altered_weight_is_caught(artifacts):
    path = artifacts / model.MODEL_FILE
    weights = json.loads(path.read_text())
    weights["coefficients"][0] += 1.0
    path.write_text(json.dumps(weights))
    with pytest.raises(model.ArtifactError, match="model.json does not match its SHA-256"):
        model.load(artifacts)


@pytest.mark.parametrize(
    "name, content, message",
    [
        (model.MODEL_FILE, "{not json", "model.json is not valid JSON"),
        (model.MODEL_FILE, '{"format_version": 99}', "model.json is malformed: format_version"),
        (
            model.MODEL_FILE,
            '{"format_version": 2, "intercept": 0, "terms": ["a"], "positive_counts": [1],'
            ' "negative_counts": [1], "log_count_ratios": [], "coefficients": [1],'
            ' "dense_features": [], "dense_coefficients": []}',
            "model.json is malformed: its lists of terms differ in length",
        ),
        (
            model.MODEL_FILE,
            '{"format_version": 2, "intercept": 0, "terms": ["a"], "positive_counts": [1],'
            ' "negative_counts": [1], "log_count_ratios": [1], "coefficients": [1],'
            ' "dense_features": ["URL"], "dense_coefficients": []}',
            "model.json is malformed: its dense features and their coefficients differ",
        ),
        (
            model.MODEL_FILE,
            '{"format_version": 2, "intercept": NaN, "terms": ["a"], "positive_counts": [1],'
            ' "negative_counts": [1], "log_count_ratios": [1], "coefficients": [1],'
            ' "dense_features": [], "dense_coefficients": []}',
            "model.json is malformed: a ratio, coefficient or the intercept",
        ),
        (model.PREPROCESSING_FILE, '{"ngrams": 2}', "preprocessing.json is malformed"),
        (model.EVALUATION_FILE, "[]", "evaluation.json is malformed: not a JSON object"),
    ],
)
def test_malformed_artifact_is_named(artifacts, name, content, message):
    (artifacts / name).write_text(content)
    reseal(artifacts)
    with pytest.raises(model.ArtifactError, match=message):
        model.load(artifacts)


def test_malformed_manifest_is_named(artifacts):
    (artifacts / model.MANIFEST_FILE).write_text("not a checksum line\n")
    with pytest.raises(model.ArtifactError, match="MANIFEST.sha256 is malformed"):
        model.load(artifacts)


def test_artifacts_are_small_plain_data():
    files = [p for p in model.ARTIFACTS_DIR.iterdir() if p.is_file()]
    assert sum(p.stat().st_size for p in files) < 5_000_000
    assert not [p for p in files if p.suffix in (".pkl", ".pickle", ".joblib")]


# Training on the real data.


def test_reference_split_is_first_80_percent_of_each_class():
    df = pd.DataFrame({"text": [str(i) for i in range(20)], "target": [0] * 10 + [1] * 10})
    train_rows, test_rows = train.reference_split(df)
    assert train_rows["text"].tolist() == [str(i) for i in [*range(8), *range(10, 18)]]
    assert test_rows["text"].tolist() == ["8", "9", "18", "19"]


@pytest.mark.slow
def test_training_reproduces_the_shipped_artifacts(data_path, tmp_path, capsys):
    """Training is deterministic, beats the bar, and made exactly the artifacts in the repo."""
    figures = train.main(["--data", str(data_path), "--out", str(tmp_path)])
    assert figures["ours"]["accuracy"] >= 0.775 and figures["cv"] >= 0.77
    assert figures["ours"]["accuracy"] > figures["frequency only"]["accuracy"]
    assert figures["ours"]["accuracy"] >= figures["2020"]["accuracy"] + 0.10
    printed = capsys.readouterr().out
    accuracy_line = next(line for line in printed.splitlines() if line.startswith("accuracy"))
    columns = ("ours", "frequency only", "2020")
    assert accuracy_line.split()[1:] == [f"{figures[k]['accuracy']:.4f}" for k in columns]
    # Every file of both models: artifacts/ itself and the 2020 approach's folder.
    folder = model.ARTIFACTS_DIR
    shipped = [p for p in folder.iterdir() if p.is_file()]
    shipped += list((folder / train.MODEL_2020_DIR).iterdir())
    made = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert sorted(p.relative_to(tmp_path) for p in made) == sorted(
        p.relative_to(folder) for p in shipped
    )
    for path in shipped:
        name = path.relative_to(folder)
        assert (tmp_path / name).read_bytes() == path.read_bytes(), name
    assert (tmp_path / train.PLOT_FILE).stat().st_size > 10_000


def kernel_sets():
    """Two sets of run-time kernels this CPU can run: OpenBLAS's and NumPy's SIMD dispatch.

    One takes OpenBLAS's Haswell kernels (AVX2) where the CPU has AVX2, else its own choice, and
    NumPy's best; the other OpenBLAS's Prescott kernels (SSE3, every x86-64 CPU since 2005) and
    NumPy's baseline only, as an older CPU would.
    """
    import numpy as np

    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    newest = {"OPENBLAS_CORETYPE": "Haswell"} if " avx2 " in flags else {}
    dispatched = np.__config__.CONFIG["SIMD Extensions"].get("found", [])
    oldest = {"OPENBLAS_CORETYPE": "Prescott", "NPY_DISABLE_CPU_FEATURES": " ".join(dispatched)}
    return {"newest": newest, "oldest": oldest}


@pytest.mark.slow
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the forced kernel sets are x86-64's")
def test_training_is_byte_identical_whatever_kernels_run(data_path, tmp_path):
    """Two trainings under different BLAS and NumPy kernels give the committed artifacts."""
    runs = {}
    for name, forced in kernel_sets().items():
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("OPENBLAS_CORETYPE", "NPY_DISABLE_CPU_FEATURES")
        }
        command = [
            sys.executable,
            "train.py",
            "--data",
            str(data_path),
            "--out",
            str(tmp_path / name),
        ]
        runs[name] = subprocess.Popen(
            command,
            cwd=model.ARTIFACTS_DIR.parent,
            env={**env, **forced},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    for name, process in runs.items():
        output = process.communicate(timeout=900)[0]
        assert process.returncode == 0, f"training with the {name} kernels failed:\n{output}"
    folder = model.ARTIFACTS_DIR
    shipped = [p for p in folder.iterdir() if p.is_file()]
    shipped += list((folder / train.MODEL_2020_DIR).iterdir())  # the 2020 approach, made beside
    for path in sorted(shipped):
        for name in runs:
            made = (tmp_path / name / path.relative_to(folder)).read_bytes()
            assert made == path.read_bytes(), f"{path.name} differs with the {name} kernels"


def test_rounding_measures_the_distance_to_a_boundary():
    values, margins = train.rounded([0.12344, 0.00005 + 1e-13, -0.00016])
    assert values.tolist() == [0.1234, 0.0001, -0.0002]
    assert margins[0] > 1e-6 and margins[1] < train.ROUNDING_MARGIN


def test_training_stops_on_a_number_too_near_a_boundary():
    import numpy as np

    steps = {
        "features": SimpleNamespace(
            names=lambda: ["good", "bad"], ratio_margins_=np.array([1e-5, 1e-5])
        ),
        "lr": SimpleNamespace(margins_=np.array([1e-5, 1e-13, 1e-5])),
    }
    with pytest.raises(SystemExit, match="coefficient of 'bad' lies 1.0e-13 from a rounding"):
        train.check_rounding(SimpleNamespace(named_steps=steps))


# The shipped model's behaviour: minimum functionality, direction, invariance.


@pytest.mark.parametrize(
    "tweet, label",
    [
        ("I love this so much", "Positive"),
        ("best day ever, thank you all", "Positive"),
        ("I hate this, worst day ever", "Negative"),
        ("so sad and tired", "Negative"),
        ("I don't like it", "Negative"),
        ("not happy", "Negative"),
        ("not bad", "Positive"),
    ],
)
def test_obvious_tweets_get_obvious_labels(shipped, tweet, label):
    assert shipped.run([tweet]) == [label]


@pytest.mark.parametrize(
    "better, worse",
    [
        ("good", "not good"),
        ("happy", "not happy"),
        ("I like it", "I don't like it"),
        ("this is great", "this is never great"),
        ("a good day", "a good day, not"),
        ("not bad", "bad"),
    ],
)
def test_negation_lowers_the_score(shipped, better, worse):
    high, low = shipped.scores([better, worse])
    assert high > low


@pytest.mark.parametrize("addition", [" http://t.co/abc123", "@friend "])
def test_a_url_or_mention_does_not_flip_a_clear_label(shipped, addition):
    tweets = [t for t in PAYLOAD_TWEETS if abs(shipped.logit(shipped.preprocess(t))) > 1]
    changed = [t + addition if addition.startswith(" ") else addition + t for t in tweets]
    assert len(tweets) >= 4
    assert shipped.run(changed) == shipped.run(tweets)


def test_words_only_the_lexicon_knows_get_its_direction(shipped):
    """A tweet of one lexicon word that no training tweet taught the model: the lexicon decides."""
    reader = shipped.preprocessor
    unseen = {
        word: valence
        for word, valence in reader.valences.items()
        if abs(valence) >= 1 and word.isalpha() and not reader.read(word)[0] & shipped.ratios.keys()
    }
    assert len(unseen) > 500 and "ecstatic" in unseen
    labels = shipped.run(list(unseen))
    expected = ["Positive" if v > 0 else "Negative" for v in unseen.values()]
    wrong = [w for w, got, want in zip(unseen, labels, expected, strict=True) if got != want]
    assert not wrong


def test_the_artifacts_carry_the_lexicon_and_its_notice():
    settings = json.loads((model.ARTIFACTS_DIR / model.PREPROCESSING_FILE).read_text())
    assert len(settings["lexicon"]["valences"]) > 7000
    card = (model.ARTIFACTS_DIR / train.CARD_FILE).read_text()
    assert "vaderSentiment 3.3.2" in card and "MIT License" in card and "C.J. Hutto" in card
