"""tweet-sentiment-people: the labelled reference set it was chosen on (reference.py), its
artifacts, its figures on tweets people labelled and on the seed's reference test rows, and
retraining with the recorded choice reproducing every file byte for byte."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, absent
from test_model import kernel_sets

import model
import reference
import train

PEOPLE_DIR = train.PEOPLE_DIR
JSON_FILES = (model.PREPROCESSING_FILE, model.MODEL_FILE, model.EVALUATION_FILE)
COMPARED = (*JSON_FILES, model.MANIFEST_FILE, train.CARD_FILE, train.PLOT_FILE)


@pytest.fixture(scope="module")
def people():
    return model.load(PEOPLE_DIR)


@pytest.fixture(scope="module")
def labelled(semeval_path):
    """The reference set as the guard reads it: [(id, text, label)]."""
    return reference.reference_set(semeval_path)


def balanced_accuracy(labels, truth):
    recalls = [
        np.mean([got == want for got, want in zip(labels, truth, strict=True) if want == label])
        for label in model.LABELS
    ]
    return float(np.mean(recalls))


# The reference set (reference.py): what the promotion guard scores candidates on.


def test_the_reference_set_is_the_validation_split_by_id_prefix(labelled):
    assert len(labelled) == 2547
    assert {reference.source(i) for i, _, _ in labelled} == {"se16dev", "se16devtest"}
    assert {label for *_, label in labelled} == set(model.LABELS)
    assert sum(label == "Positive" for *_, label in labelled) == 1832
    sarcasm = reference.reference_set(prefixes=reference.SARCASM)
    assert len(sarcasm) == 73 and not {i for i, *_ in sarcasm} & {i for i, *_ in labelled}
    # "se16dev" names its own source, not every id that starts with those letters.
    only_dev = reference.reference_set(prefixes=["se16dev"])
    assert len(only_dev) == 1234


def test_the_reference_set_is_what_training_held_out(semeval_path, data_path, extra_data_path):
    sources, validation, sarcasm, test = train.people_sources(
        semeval_path, data_path, extra_data_path
    )
    assert validation["id"].tolist() == [i for i, _, _ in reference.reference_set(semeval_path)]
    trained = set().union(*(set(frame["text"]) for frame in sources.values()))
    assert trained.isdisjoint(validation["text"]) and trained.isdisjoint(sarcasm["text"])
    # The seed's 2,000 reference test rows: not among the 10K set's training rows (which repeat 3
    # of their texts: "homework", ...), nor in the 80K file or the SemEval file.
    assert set(test["id"]).isdisjoint(sources["10K"]["id"])
    assert set(test["text"]).isdisjoint({*sources["80K"]["text"], *sources["SemEval"]["text"]})
    assert not sources["SemEval"]["id"].map(reference.source).isin(reference.HELD_OUT).any()


def test_the_guard_judges_on_the_validation_split(labelled):
    """aliases/guard.py reads its reference set itself, from api.DEFAULTS: the same rows, in the
    same order, with the same labels, as the split the default was chosen on."""
    import aliases
    import api

    guard = aliases.Reference(
        api.DEFAULTS["GUARD_REFERENCE_FILE"], api.DEFAULTS["GUARD_REFERENCE_IDS"]
    )
    texts, labels = guard.rows
    assert texts == [text for _, text, _ in labelled]
    assert [model.LABELS[label] for label in labels] == [label for *_, label in labelled]


def test_the_server_environment_reads_it_without_pandas(semeval_path):
    """The server's .venv has no numpy, pandas or scikit-learn: reference.py needs none."""
    python = ROOT / ".venv" / "bin" / "python"
    if not python.exists():
        absent(f"{python} is absent: make .venv/.installed makes the server's environment")
    code = (
        "import sys, reference; rows = reference.reference_set(sys.argv[1]); "
        "print(len(rows), sorted({'numpy', 'pandas', 'sklearn'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [python, "-c", code, str(semeval_path)], cwd=ROOT, capture_output=True, text=True
    )
    assert result.stdout.split("\n")[0] == "2547 []", result.stderr


@pytest.mark.parametrize(
    "content, message",
    [
        (None, "cannot read the reference set"),
        ("id,text\nse16dev_1,hello\n", "no column target"),
        ("id,date,text,target\nse16dev_1,,hello,2\n", "line 2: target '2' is not 0 or 1"),
        ("id,date,text,target\nse13train_1,,hello,1\n", "no row's id starts with se16dev_"),
    ],
)
def test_a_bad_reference_file_is_named(tmp_path, content, message):
    path = tmp_path / "reference.csv"
    if content is not None:
        path.write_text(content)
    with pytest.raises(reference.ReferenceSetError, match=message) as caught:
        reference.reference_set(path)
    assert str(path) in str(caught.value)


def test_a_reference_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "reference.csv"
    path.write_bytes(b"id,date,text,target\nse16dev_1,,caf\xe9,1\n")
    with pytest.raises(reference.ReferenceSetError, match="not a UTF-8 CSV"):
        reference.reference_set(path)


# The model.


def test_the_artifacts_load_and_are_small_plain_data(people):
    files = [p for p in PEOPLE_DIR.iterdir() if p.is_file()]
    assert {p.name for p in files} == set(COMPARED)
    assert sum(p.stat().st_size for p in files) <= 10_000_000
    for name in JSON_FILES:
        assert isinstance(json.loads((PEOPLE_DIR / name).read_text(encoding="utf-8")), dict)
    assert people.version not in (model.load().version, model.load(train.LARGE_DIR).version)


def test_the_compiled_core_scores_it(people, labelled, data_path):
    if people.core is None:
        absent("the compiled core is not installed (make installs it where a C compiler is)")
    tweets = [text for _, text, _ in labelled]
    tweets += pd.read_csv(data_path, keep_default_na=False)["text"].tolist()
    assert people.scores(tweets) == people.python_scores(tweets)


@pytest.mark.parametrize(
    "tweet, label",
    [
        ("I love this so much", "Positive"),
        ("I hate this, worst day ever", "Negative"),
        ("I don't like it", "Negative"),
        ("not happy", "Negative"),
    ],
)
def test_obvious_tweets_get_obvious_labels(people, tweet, label):
    assert people.run([tweet]) == [label]


@pytest.mark.parametrize(
    "better, worse",
    [("good", "not good"), ("happy", "not happy"), ("I like it", "I don't like it")],
)
def test_negation_lowers_the_score(people, better, worse):
    high, low = people.scores([better, worse])
    assert high > low


def test_it_agrees_with_people_where_the_shipped_models_do_not(people, labelled):
    """On the reference set (people's labels, none of these models trained on it): the figures its
    evaluation.json records, and far above the large model's balanced accuracy."""
    texts, truth = [t for _, t, _ in labelled], [label for *_, label in labelled]
    ours = people.run(texts)
    large = model.load(train.LARGE_DIR).run(texts)
    figures = people.evaluation["figures"]
    assert round(balanced_accuracy(ours, truth), 4) == figures["this_model"]["balanced_accuracy"]
    assert figures["this_model"]["balanced_accuracy"] >= 0.80
    assert figures["this_model"]["accuracy"] >= 0.80
    assert balanced_accuracy(ours, truth) >= balanced_accuracy(large, truth) + 0.08


def test_it_keeps_the_seeds_ground(people, data_path):
    """The seed's 2,000 reference test rows (emoticon labels, never trained on): at least the
    floor the choice required."""
    _, test_rows = train.reference_split(train.read_data(data_path))
    labels = people.run(test_rows["text"].tolist())
    truth = [model.LABELS[t] for t in test_rows["target"]]
    accuracy = float(np.mean([a == b for a, b in zip(labels, truth, strict=True)]))
    assert accuracy >= train.SEED_FLOOR
    assert round(accuracy, 4) == people.evaluation["figures"]["reference_test"]["accuracy"]


def test_the_choice_follows_its_rule(people):
    """The chosen row is of our kind, at or above the floor on the 2,000 rows, and no such row has
    a higher balanced accuracy on the validation split."""
    choice = people.evaluation["choice"]
    rows = {(c["mix"], c["recipe"]): c for c in choice["candidates"]}
    assert len(rows) == len(train.PEOPLE_MIXES) * len(train.PEOPLE_RECIPES)
    chosen = rows[choice["chosen"]["mix"], choice["chosen"]["recipe"]]
    eligible = [
        c
        for (_, recipe), c in rows.items()
        if train.PEOPLE_RECIPES[recipe]["kind"] == "ours"
        and c["reference_test"]["accuracy"] >= train.SEED_FLOOR
    ]
    best = max(c["validation"]["balanced_accuracy"] for c in eligible)
    assert chosen in eligible and chosen["validation"]["balanced_accuracy"] == best


@pytest.mark.slow
def test_retraining_with_the_recorded_choice_reproduces_the_artifacts(
    semeval_path, data_path, extra_data_path, tmp_path
):
    """The choice and table recorded in evaluation.json, nothing chosen again: every file, byte
    for byte."""
    train.main(
        [
            *("--data", str(data_path), "--extra-data", str(extra_data_path)),
            *("--semeval", str(semeval_path), "--model", train.PEOPLE_MODEL),
            *("--choice", "recorded", "--out", str(tmp_path)),
        ]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(COMPARED)
    for name in COMPARED:
        assert (tmp_path / name).read_bytes() == (PEOPLE_DIR / name).read_bytes(), name


@pytest.mark.slow
@pytest.mark.skipif(os.uname().machine != "x86_64", reason="the forced kernel sets are x86-64's")
def test_retraining_is_byte_identical_whatever_kernels_run(
    semeval_path, data_path, extra_data_path, tmp_path
):
    """Two recorded retrainings under different BLAS and NumPy kernels give the committed files."""
    runs = {}
    for name, forced in kernel_sets().items():
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("OPENBLAS_CORETYPE", "NPY_DISABLE_CPU_FEATURES")
        }
        command = [
            *(sys.executable, "train.py", "--data", str(data_path)),
            *("--extra-data", str(extra_data_path), "--semeval", str(semeval_path)),
            *("--model", train.PEOPLE_MODEL, "--choice", "recorded"),
            *("--out", str(tmp_path / name)),
        ]
        runs[name] = subprocess.Popen(
            command,
            cwd=ROOT,
            env={**env, **forced},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    for name, process in runs.items():
        output = process.communicate(timeout=900)[0]
        assert process.returncode == 0, f"training with the {name} kernels failed:\n{output}"
    for path_name in COMPARED:
        for name in runs:
            made = (tmp_path / name / path_name).read_bytes()
            assert made == (PEOPLE_DIR / path_name).read_bytes(), f"{path_name}, {name} kernels"
