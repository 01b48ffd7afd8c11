"""Files of tweets: the command line (score.py) and the Spark job (spark_score.py)."""

import csv
import json
import os
import random
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT, TOKEN

import contract
import model

BAD = {  # what a row holds -> the reason its line gets in the errors file
    "long": ("a" * 5_001, 'each tweet must be at most 5000 characters: "{id}"'),
    "no text": (None, "no text"),
}


def generated(count, seed=0):
    """Rows (id, text) from the model's own words, and a bad row every 997th."""
    rng = random.Random(seed)
    words = [t for t in model.default_model().ratios if " " not in t][:5_000]
    rows = []
    for i in range(count):
        if i % 997 == 500:
            rows.append((f"t{i}", BAD["long" if i % 2 else "no text"][0]))
        else:
            rows.append((f"t{i}", " ".join(rng.choices(words, k=rng.randint(3, 15)))))
    return rows


def write_csv(path, rows):
    with path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "date", "text", "target"])
        for id_, text in rows:
            writer.writerow([id_, "2009", text, 0] if text is not None else [id_, "2009"])


def run_score(*args):
    return subprocess.run(
        [sys.executable, "-m", "score", *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def read_rows(path):
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


@pytest.mark.slow
def test_100000_rows_labels_equal_the_apis_and_errors_are_exact(tmp_path, client, default_model):
    rows = generated(100_000)
    source, target = tmp_path / "tweets.csv", tmp_path / "labels.csv"
    write_csv(source, rows)
    result = run_score(source, target)
    assert result.returncode == 1, result.stderr  # there were bad rows
    good = [(i, t) for i, t in rows if t is not None and len(t) <= 5_000]
    written = read_rows(target)
    assert written[0] == ["id", "label", "score"]
    assert [r[0] for r in written[1:]] == [i for i, _ in good]  # input order
    expected = [round(s, 6) for s in default_model.scores([t for _, t in good])]
    assert [float(r[2]) for r in written[1:]] == expected
    sample = dict(good[:40])
    rest = client.post(f"/api/v1/{TOKEN}/predict", json=sample).json
    assert [r[1] for r in written[1:41]] == list(rest.values())
    errors = read_rows(tmp_path / "labels.errors.csv")
    assert errors[0] == ["line", "id", "reason"]
    bad = [(n + 2, i, t) for n, (i, t) in enumerate(rows) if t is None or len(t) > 5_000]
    assert [(int(e[0]), e[1]) for e in errors[1:]] == [(line, i) for line, i, _ in bad]
    for (_, id_, text), error in zip(bad, errors[1:], strict=True):
        assert error[2] == (BAD["no text"][1] if text is None else BAD["long"][1].format(id=id_))


@pytest.mark.slow
def test_memory_stays_bounded_whatever_the_file_size(tmp_path):
    """Peak RSS for 200,000 rows is within a few MB of that for 20,000."""
    peaks = {}
    for count in (20_000, 200_000):
        source = tmp_path / f"{count}.csv"
        write_csv(source, [(i, t) for i, t in generated(count, seed=count) if t is not None])
        command = [sys.executable, "-m", "score", str(source), str(tmp_path / "out.csv")]
        code = (
            "import resource, subprocess, sys; "
            f"r = subprocess.run({command!r}, cwd={str(ROOT)!r}); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
        )
        measured = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        peaks[count] = int(measured.stdout.split()[-1]) / 1024  # MB
    assert peaks[200_000] - peaks[20_000] < 15, peaks


@pytest.mark.parametrize("processes", ["1", "2"])
def test_json_lines_and_every_kind_of_bad_line(tmp_path, processes, default_model):
    lines = [
        json.dumps({"id": "a", "text": "I love it"}).encode(),
        json.dumps({"id": "b"}).encode(),
        b"not json",
        json.dumps({"id": "c", "text": 5}).encode(),
        b'{"id": "d", "text": "bad \xff byte"}',
        b"[1, 2]",
        b"",
        json.dumps({"id": 7, "text": "not good at all", "lang": "en"}).encode(),
    ]
    source = tmp_path / "t.jsonl"
    source.write_bytes(b"\n".join(lines) + b"\n")
    result = run_score(source, tmp_path / "out.csv", "--processes", processes)
    assert result.returncode == 1
    labels = default_model.run(["I love it", "not good at all"])
    assert [r[:2] for r in read_rows(tmp_path / "out.csv")] == [
        ["id", "label"],
        ["a", labels[0]],
        ["7", labels[1]],
    ]
    assert read_rows(tmp_path / "out.errors.csv")[1:] == [
        ["2", "b", "no text"],
        ["3", "", "the line is not valid JSON: Expecting value: line 1 column 1 (char 0)"],
        ["4", "c", 'each tweet must be a string; not a string (number): "c"'],
        ["5", "", "the line is not valid UTF-8"],
        ["6", "", "the line is not a JSON object"],
    ]


def test_invalid_utf8_in_a_csv_row_is_that_rows_error(tmp_path):
    source = tmp_path / "t.csv"
    source.write_bytes(b"id,text\n1,fine\n2,bad \xff\n3,ok\n")
    result = run_score(source, tmp_path / "out.csv")
    assert result.returncode == 1
    assert [r[0] for r in read_rows(tmp_path / "out.csv")[1:]] == ["1", "3"]
    assert read_rows(tmp_path / "out.errors.csv")[1:] == [["3", "2", "the text is not valid UTF-8"]]


def test_all_good_exits_0_and_a_file_without_the_columns_exits_2(tmp_path):
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    good.write_text("id,text\n1,happy\n")
    bad.write_text("name,tweet\n1,happy\n")
    assert run_score(good, tmp_path / "o.csv").returncode == 0
    refused = run_score(bad, tmp_path / "o.csv")
    assert refused.returncode == 2
    assert "no column id or text" in refused.stderr and "Traceback" not in refused.stderr
    assert run_score(tmp_path / "absent.csv", tmp_path / "o.csv").returncode == 2


def test_make_score_runs_the_module(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("id,text\nx,so happy today\n")
    result = subprocess.run(
        ["make", "--no-print-directory", "score", f"IN={source}", f"OUT={tmp_path / 'out.csv'}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert read_rows(tmp_path / "out.csv")[1][:2] == ["x", "Positive"]


@pytest.mark.slow
def test_spark_job_on_local_2_equals_the_command_line(tmp_path):
    if not shutil.which("java"):
        message = "Java is absent: Spark needs it (apt-get install openjdk-17-jre-headless)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    rows = generated(100_000, seed=1)
    source = tmp_path / "tweets.csv"
    write_csv(source, rows)
    assert run_score(source, tmp_path / "cli.csv").returncode == 1
    spark = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "spark-submit"), "--master", "local[2]",
         "spark_score.py", str(source), str(tmp_path / "spark.parquet")],
        cwd=ROOT, capture_output=True, text=True, timeout=900,
        env={**os.environ, "PYSPARK_PYTHON": sys.executable},
    )  # fmt: skip
    assert spark.returncode == 0, spark.stderr[-3000:]
    assert "labelled 99,900 rows" in spark.stdout
    import pyarrow.parquet as pq

    table = pq.read_table(tmp_path / "spark.parquet").to_pydict()
    by_id = {
        i: (label, score)
        for i, label, score in zip(table["id"], table["label"], table["score"], strict=True)
    }
    cli = read_rows(tmp_path / "cli.csv")[1:]
    assert len(by_id) == len(rows)
    assert {r[0]: (r[1], float(r[2])) for r in cli} == {i: v for i, v in by_id.items() if v[0]}
    refused = {i for i, (label, _) in by_id.items() if label is None}
    assert refused == {
        i for i, t in rows if t is None or len(t) > contract.LIMITS["MAX_TWEET_CHARS"]
    }
