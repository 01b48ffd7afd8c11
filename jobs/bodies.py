"""A job's body, read as it streams (JSON or CSV) in parts of bounded size, and its result, written
as it streams (the predict route's JSON, or CSV)."""

import csv
import io
import json

import ijson

import contract

MAX_DEPTH = 64  # a job's JSON nested deeper is refused; a tweet is a string, at depth 1


NESTED = {"start_map": contract.Pairs, "start_array": list}  # no tweet: json_type names it
FIRST = {"start_array": "array", "string": "string", "boolean": "boolean", "null": "null"}


def json_parts(stream, size, chars):
    """Yield {id: value} parts of a JSON object read from a stream, of at most `size` tweets and
    about `chars` characters, without holding it whole: a value that is no string is kept as an
    empty one of its type (the contract names it), never built, and is nested at most MAX_DEPTH
    deep."""
    events = ijson.basic_parse(stream, use_float=True, buf_size=65536)
    try:
        try:
            first, _ = next(events, (None, None))
        except ijson.IncompleteJSONError:  # an empty body
            first = None
        if first != "start_map":
            got = "nothing" if first is None else FIRST.get(first, "a number")
            raise contract.BadInput(
                f'the body must be a JSON object of {{"id": "tweet text", ...}}, got {got}'
            )
        part, held, key, depth = {}, 0, None, 0
        for event, value in events:
            if depth:  # within a value that is no string: pass over it
                depth += (event in NESTED) - (event in ("end_map", "end_array"))
                if depth > MAX_DEPTH:
                    raise contract.BadInput(f"the body is nested more than {MAX_DEPTH} deep")
                continue
            if event == "map_key":
                key = value
                continue
            if event == "end_map":
                break
            if key in part:
                raise contract.BadInput(f"each id must appear once; repeated: {json.dumps(key)}")
            if event in NESTED:
                value, depth = NESTED[event](), 1
            part[key] = value
            held += len(value) if isinstance(value, str) else 0
            if len(part) == size or held >= chars:
                yield part
                part, held = {}, 0
        for _ in events:  # whatever follows the object: nothing, or an error
            pass
    except ijson.IncompleteJSONError as e:
        raise contract.BadInput(f"the body is not valid JSON: {e}") from None
    except (ijson.JSONError, UnicodeDecodeError) as e:
        raise contract.BadInput(f"the body is not valid JSON: {e}") from None
    if part:
        yield part


def csv_parts(stream, size, chars):
    """Yield {id: text} parts of a CSV with a header row naming id and text columns, of at most
    `size` tweets and about `chars` characters. Every row has as many fields as the header."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    rows = csv.reader(text)
    try:
        header = next(rows, None)
        if header is None or "id" not in header or "text" not in header:
            raise contract.BadInput(
                f"the CSV's first row must name an id and a text column, got {header or 'nothing'}"
            )
        id_at, text_at = header.index("id"), header.index("text")
        part, lines, held = {}, {}, 0
        for row in rows:
            line = rows.line_num
            if len(row) != len(header):
                raise contract.BadInput(
                    f"line {line} has {len(row)} fields, the header {len(header)}"
                )
            tweet_id = row[id_at]
            if not tweet_id:
                raise contract.BadInput(f"line {line} has an empty id")
            if tweet_id in part:
                raise contract.BadInput(
                    f"each id must appear once; {json.dumps(tweet_id)} is on lines "
                    f"{lines[tweet_id]} and {line}"
                )
            part[tweet_id], lines[tweet_id] = row[text_at], line
            held += len(row[text_at])
            if len(part) == size or held >= chars:
                yield part
                part, lines, held = {}, {}, 0
        if part:
            yield part
    except UnicodeDecodeError as e:
        raise contract.BadInput(f"the body is not valid UTF-8: {e.reason}") from None
    except csv.Error as e:
        raise contract.BadInput(f"the CSV is malformed at line {rows.line_num}: {e}") from None


def json_result(chunks, options):
    """The answers as the predict route gives them, one chunk at a time."""
    yield "{"
    first = True
    for rows in chunks:
        out = io.StringIO()
        for tweet_id, label, score, *explanation in rows:
            if options["scores"] or options["explain"]:
                answer = {"label": label}
                if options["scores"]:
                    answer["score"] = score
                if explanation:
                    answer["explanation"] = explanation[0]
            else:
                answer = label
            out.write(("" if first else ",") + json.dumps(tweet_id, ensure_ascii=False) + ":")
            out.write(json.dumps(answer, ensure_ascii=False, separators=(",", ":")))
            first = False
        yield out.getvalue()
    yield "}"


def csv_result(chunks):
    """The answers as CSV, id,label,score; ids that a spreadsheet would run are neutralised."""
    yield "id,label,score\r\n"
    for rows in chunks:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerows((contract.csv_cell(i), label, score) for i, label, score, *_ in rows)
        yield out.getvalue()
