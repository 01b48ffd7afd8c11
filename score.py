"""Label a file of tweets: CSV or JSON Lines in, `id,label,score` CSV out, in input order.

    python -m score tweets.csv labels.csv          # or: make score IN=tweets.csv OUT=labels.csv
    python -m score tweets.jsonl labels.csv --processes 1 --model tweet-sentiment

The input has columns (CSV, with a header row) or keys (JSON Lines) `id` and `text`; other
columns are ignored, so the training CSV works as it is. The file is read and written in chunks,
in bounded memory whatever its size, and the chunks are labelled on every core. A row that cannot
be labelled (no text, text not a string, invalid UTF-8, too long) goes to the errors file,
`line,id,reason`, and the exit status is 1; 0 when every row was labelled, 2 when the file itself
cannot be read.
"""

import argparse
import collections
import csv
import multiprocessing
import os
import re
import sys
from pathlib import Path

from tqdm import tqdm

import contract
import model
import registry
import service

CHUNK = 5_000  # rows labelled per task
UNDECODABLE = re.compile("[\udc80-\udcff]")  # what surrogateescape makes of invalid UTF-8
WINDOW = 4  # tasks in flight per process: what bounds memory


class InputError(Exception):
    """The file itself cannot be read as tweets."""


def rows(path):
    """Yield (line number, id, text or an error reason) for each row of a CSV or JSON Lines file."""
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        yield from json_lines(path)
    else:
        yield from csv_rows(path)


def csv_rows(path):
    # surrogateescape: a row with invalid UTF-8 is reported, not the whole file refused;
    # utf-8-sig: a byte-order mark, as spreadsheets write, is no part of the first column's name.
    with path.open(newline="", encoding="utf-8-sig", errors="surrogateescape") as f:
        reader = csv.DictReader(f)
        missing = [c for c in ("id", "text") if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError(f"{path}: no column {' or '.join(missing)} in the header row")
        for row in reader:
            yield checked(reader.line_num, row.get("id"), row.get("text"))


def json_lines(path):
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            try:
                record = contract.parse_json(raw.decode("utf-8"), "the line")
            except UnicodeDecodeError:
                yield number, None, contract.BadInput("the line is not valid UTF-8")
                continue
            except contract.PredictionError as e:  # not JSON, too deep, a lone surrogate
                yield number, None, e
                continue
            if not isinstance(record, contract.Pairs):
                yield number, None, contract.BadInput("the line is not a JSON object")
                continue
            record = dict(record)
            yield checked(number, record.get("id"), record.get("text"))


def checked(number, id_, text):
    """Return (line, id, text), or (line, id, error) when the row cannot be labelled."""
    id_ = None if id_ is None else str(id_)
    if id_ is not None and UNDECODABLE.search(id_):
        shown = id_.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        return number, shown, contract.BadInput("the id is not valid UTF-8")
    if text is None:
        return number, id_, contract.BadInput("no text")
    if isinstance(text, str) and UNDECODABLE.search(text):
        return number, id_, contract.BadInput("the text is not valid UTF-8")
    return number, id_, text


def label(chunk):
    """Label one chunk [(line, id, text or error)] by the contract every door keeps.

    Returns [(line, id, label, score)] and [(line, id, reason)]. The chunk is checked whole; only
    when that fails is each row checked on its own, to name the rows that failed and why.
    """
    classifier, limits = LOADED
    errors = [(n, i, t.detail) for n, i, t in chunk if isinstance(t, contract.PredictionError)]
    rows = {str(n): (i, t) for n, i, t in chunk if not isinstance(t, contract.PredictionError)}
    texts = {key: text for key, (_, text) in rows.items()}
    try:
        answer = contract.predict(classifier, texts, limits, scores=True) if texts else {}
    except contract.PredictionError:
        for key, (id_, text) in rows.items():
            try:
                contract.check({id_: text}, limits)
            except contract.PredictionError as e:
                errors.append((int(key), id_, e.detail))
                del texts[key]
        answer = contract.predict(classifier, texts, limits, scores=True) if texts else {}
    labelled = [(int(k), rows[k][0], a["label"], a["score"]) for k, a in answer.items()]
    return labelled, sorted(errors)


LOADED = None  # (model, limits) in each process: loaded once, before the workers fork


def cell(tweet_id):
    return None if tweet_id is None else contract.csv_cell(tweet_id)


def chunks(iterable):
    chunk = []
    for row in iterable:
        chunk.append(row)
        if len(chunk) == CHUNK:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def score(source, target, errors_path, processes, name=None):
    """Label source into target with the model `name` (models.json's default if None), and
    refused rows into errors_path; return both counts."""
    global LOADED
    settings = service.Settings.load(service.SHARED)
    served = registry.load_one(settings["MODELS_FILE"], name).get()
    LOADED = (served.model, {**settings, "MAX_TWEETS": CHUNK})
    print(f"labelling with {served.name} {served.version}", file=sys.stderr)
    counts = {"labelled": 0, "refused": 0}
    with (
        target.open("w", newline="", encoding="utf-8") as out,
        errors_path.open("w", newline="", encoding="utf-8") as err,
        tqdm(unit=" rows", unit_scale=True, disable=None, file=sys.stderr) as progress,
    ):
        writer, errors = csv.writer(out), csv.writer(err)
        writer.writerow(["id", "label", "score"])
        errors.writerow(["line", "id", "reason"])

        def write(result):  # chunks arrive in input order; ids a spreadsheet would run, defused
            labelled, refused = result
            writer.writerows((cell(i), label, score) for _, i, label, score in labelled)
            errors.writerows((n, cell(i), reason) for n, i, reason in refused)
            counts["labelled"] += len(labelled)
            counts["refused"] += len(refused)
            progress.update(len(labelled) + len(refused))

        if processes == 1:
            for chunk in chunks(rows(source)):
                write(label(chunk))
        else:
            with multiprocessing.get_context("fork").Pool(processes) as pool:
                pending = collections.deque()
                for chunk in chunks(rows(source)):
                    pending.append(pool.apply_async(label, (chunk,)))
                    if len(pending) >= WINDOW * processes:
                        write(pending.popleft().get())
                while pending:
                    write(pending.popleft().get())
    return counts["labelled"], counts["refused"]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="CSV or JSON Lines (.jsonl) with id and text")
    parser.add_argument("target", type=Path, help="CSV to write: id,label,score")
    parser.add_argument("--errors", type=Path, help="default: TARGET with .errors.csv")
    parser.add_argument("--processes", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--model", help="a model's name in models.json; default: its default")
    args = parser.parse_args(argv)
    errors = args.errors or args.target.with_suffix(".errors.csv")
    try:
        processes = max(1, args.processes)
        done, refused = score(args.source, args.target, errors, processes, args.model)
    except (OSError, InputError, RuntimeError, model.ArtifactError) as e:
        print(f"score: {e}", file=sys.stderr)
        return 2
    print(
        f"labelled {done:,} rows into {args.target}; {refused:,} refused, in {errors}",
        file=sys.stderr,
    )
    return 1 if refused else 0


if __name__ == "__main__":
    sys.exit(main())
