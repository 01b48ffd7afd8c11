"""The labelled reference set: tweets people labelled that no shipped model trained on.

It is a split of ../shared/data/semeval_2013_2016.csv (the SemEval sentiment tasks of 2013-2016,
each tweet labelled by five crowd workers) chosen by the source its id names, `se<year><split>_…`:

    VALIDATION   se16dev, se16devtest   2,547 tweets (72% positive): tweet-sentiment-people's mix
                                        and recipe were chosen on them; the promotion guard
                                        (aliases/guard.py) judges a candidate on the same rows, by
                                        its defaults GUARD_REFERENCE_FILE and GUARD_REFERENCE_IDS
                                        (tests/test_people.py checks that they are these rows)
    SARCASM      se14sarcasm            73 tweets, for the model card's errors only
    the rest     se13…, se14test, se15test, se16train, se16test: tweet-sentiment-people trains on
                 them; the other shipped models never saw the file

The file is read at run time from where it lies, never copied into the repository (the data's
licence and the team's rule). Plain `csv`, no pandas: the server imports this module.
"""

import csv
from pathlib import Path

import model

ROOT = Path(__file__).resolve().parent
REFERENCE_FILE = ROOT.parent / "shared" / "data" / "semeval_2013_2016.csv"
VALIDATION = ("se16dev", "se16devtest")
SARCASM = ("se14sarcasm",)
HELD_OUT = (*VALIDATION, *SARCASM)  # no shipped model trains on these sources
REFERENCE_PREFIXES = VALIDATION  # what the guard scores candidates on, by default
COLUMNS = ("id", "text", "target")


class ReferenceSetError(Exception):
    """The reference file is missing, unreadable or malformed; the message names it and the row."""


def source(row_id):
    """Return the source an id names: "se16dev" of "se16dev_263…"."""
    return row_id.partition("_")[0]


def rows(path=REFERENCE_FILE):
    """Yield (id, text, target) for every row of a SemEval-style CSV (id, date, text, target; target
    0 negative, 1 positive); ReferenceSetError naming the file and line if it is not one."""
    path = Path(path)
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
            if missing:
                raise ReferenceSetError(f"{path}: no column {', '.join(missing)}")
            for row in reader:
                target = row["target"]
                if target not in ("0", "1"):
                    raise ReferenceSetError(
                        f"{path}: line {reader.line_num}: target {target!r} is not 0 or 1"
                    )
                yield row["id"], row["text"], int(target)
    except OSError as e:
        raise ReferenceSetError(f"cannot read the reference set {path}: {e.strerror}") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise ReferenceSetError(f"{path} is not a UTF-8 CSV: {e}") from None


def reference_set(path=REFERENCE_FILE, prefixes=REFERENCE_PREFIXES):
    """Return [(id, text, label)] of the rows whose id's source is one of prefixes, in file order;
    label is "Negative" or "Positive", as model.labels gives them."""
    wanted = frozenset(prefixes)
    found = [(i, text, model.LABELS[t]) for i, text, t in rows(path) if source(i) in wanted]
    if not found:
        starts = " or ".join(f"{prefix}_" for prefix in sorted(wanted))
        raise ReferenceSetError(f"{path}: no row's id starts with {starts}")
    return found
