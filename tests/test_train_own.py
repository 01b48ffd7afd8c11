"""make train DATA=my.csv MODEL=my-model: a model of our kind on anyone's CSV of labelled tweets,
with a validation split held out; bad data stops with one line naming the file, the line and the
fault, never a traceback."""

import json
import random
import subprocess
import sys

import pytest
from conftest import ROOT

import model
import registry
import train

OUR_TWEETS = ROOT / "docs" / "tweets.csv"  # the team's own made-up tweets: the docs' examples
FILES = {
    model.PREPROCESSING_FILE,
    model.MODEL_FILE,
    model.EVALUATION_FILE,
    model.MANIFEST_FILE,
    train.CARD_FILE,
}


def run_train(data, out, name="my-model"):
    return subprocess.run(
        [sys.executable, "train.py", "--data", str(data), "--model", name, "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_our_tweets_are_our_own_and_balanced():
    rows = train.read_labelled(OUR_TWEETS)
    assert 40 <= len(rows) <= 60
    assert sum(target for *_, target in rows) * 2 == len(rows)


@pytest.mark.slow
def test_make_train_writes_a_model_the_registry_serves(tmp_path):
    out = tmp_path / "my-model"
    result = subprocess.run(
        [
            "make",
            "--no-print-directory",
            "train",
            f"DATA={OUR_TWEETS}",
            "MODEL=my-model",
            f"OUT={out}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}/" in result.stdout
    assert {p.name for p in out.iterdir()} == FILES
    trained = model.load(out)
    evaluation = trained.evaluation
    assert evaluation["training_data"]["tweets"] == 50
    assert evaluation["training_data"]["validation"] == 10
    assert 0 <= evaluation["figures"]["this_model"]["balanced_accuracy"] <= 1
    assert "# Model card: my-model" in (out / train.CARD_FILE).read_text()
    # As docs/models.md adds it: an entry of models.json beside the shipped ones.
    catalogue = json.loads(registry.MODELS_FILE.read_text())
    catalogue["models"] = [
        {**m, "versions": [str(ROOT / v) for v in m["versions"]]} for m in catalogue["models"]
    ]
    catalogue["models"].append(
        {
            "name": "my-model",
            "kind": "log-count-ratio-logistic",
            "display_name": "My model",
            "description": "trained on docs/tweets.csv",
            "required": False,
            "versions": [str(out)],
        }
    )
    (tmp_path / "models.json").write_text(json.dumps(catalogue))
    served = registry.load(tmp_path / "models.json").get("my-model")
    assert served.version == trained.version
    assert served.model.run(["I love it", "I hate it"]) == ["Positive", "Negative"]


@pytest.mark.slow
def test_training_twice_gives_the_same_bytes(tmp_path):
    for name in ("a", "b"):
        assert run_train(OUR_TWEETS, tmp_path / name).returncode == 0
    for name in FILES:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_the_validation_split_holds_each_class_whatever_the_row_order():
    rows = train.read_labelled(OUR_TWEETS)
    shuffled = random.Random(0).sample(rows, len(rows))
    first, second = train.validation_split(rows), train.validation_split(shuffled)
    assert sorted(first[1]["id"]) == sorted(second[1]["id"])
    assert first[1]["target"].value_counts().to_dict() == {0: 5, 1: 5}
    assert set(first[0]["id"]).isdisjoint(first[1]["id"])
    assert len(first[0]) + len(first[1]) == len(rows)


GOOD = "id,text,label\n" + "".join(
    f"{i},tweet number {i} {'good' if i % 2 else 'bad'},{'positive' if i % 2 else 'negative'}\n"
    for i in range(12)
)


@pytest.mark.parametrize(
    "content, fault",
    [
        (b"", "the file is empty"),
        (b"id,tweet,label\n1,hello,1\n", "line 1: no column text (the header is id,tweet,label)"),
        (b"id,text\n1,hello\n", "line 1: no column label"),
        (
            "id,text,label\n" + "".join(f"{i},x {i},1\n" for i in range(20)),
            "every row's label is Positive",
        ),
        (
            "id,text,label\n" + "".join(f"{i},x {i},{i % 2}\n" for i in range(6)),
            "3 Negative rows: a validation split needs at least 5",
        ),
        (
            GOOD.replace("3,tweet number 3 good,positive", "3,tweet number 3,neutral"),
            "line 5: the label 'neutral' is not 0, 1, negative or positive",
        ),
        (GOOD.replace("4,tweet number 4 bad,negative", "4,,negative"), "line 6: the text is empty"),
        (GOOD.replace("5,tweet", "1,tweet"), "line 7: the id '1' is also on line 3"),
        (
            GOOD.replace("6,tweet number 6 bad,negative", "6,a,b,negative"),
            "line 8: 4 fields where the header has 3",
        ),
        (
            GOOD.encode().replace(b"number 7", b"n\xfamero 7"),
            "line 9: the text is not UTF-8 (byte 0xfa)",
        ),
        (GOOD.replace("8,tweet", '8,"tweet').encode(), "not CSV"),
    ],
)
def test_bad_data_gets_one_line_naming_the_file_the_line_and_the_fault(tmp_path, content, fault):
    data = tmp_path / "my.csv"
    data.write_bytes(content if isinstance(content, bytes) else content.encode())
    result = run_train(data, tmp_path / "out")
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stderr.startswith(f"{data}: ") and fault in result.stderr, result.stderr
    assert not (tmp_path / "out").exists()


def test_a_missing_file_and_a_bad_name_are_named(tmp_path):
    result = run_train(tmp_path / "nothing.csv", tmp_path / "out")
    assert result.returncode == 1 and result.stderr.startswith(f"no data at {tmp_path}/nothing.csv")
    result = run_train(OUR_TWEETS, tmp_path / "out", name="My Model!")
    assert result.returncode == 1 and "'My Model!' is not a model name" in result.stderr
    assert result.stderr.count("\n") == 1
