"""A job's body, read as it streams (JSON or CSV) in parts of bounded size, and its result, written
as it streams (the predict route's JSON, or CSV)."""

import csv
import io
import json
import sys

import ijson

import contract

MAX_DEPTH = 64  # a job's JSON nested deeper is refused; a tweet is a string, at depth 1
READ_BYTES = 65536  # what a parser reads of a body at once
# A JSON string escapes a character in at most 12 bytes (a pair of \\uXXXX for one past U+FFFF).
ESCAPED_CHAR_BYTES = 12
NUMBER_BYTES = b"0123456789+-.eE"
# A CSV row (a record, however many lines it spans) of more characters is refused before it is
# built: 120 M commas were a list of 120 M fields, +1.04 GB (issue 37). A tweet at most 5,000
# characters, its id 256, quotes doubled, leave room for many other columns.
MAX_ROW_CHARS = 1024 * 1024


class TokenBound(io.RawIOBase):
    """A JSON body that refuses, as it streams, a string or number longer than `most` bytes.

    yajl (ijson's C backend) lexes again from its start a token that spans the buffers it is fed,
    so a token of n bytes costs n squared over the buffer size: a 120 MB id or tweet held a worker
    until gunicorn killed it, 16 MB took 0.5 s, a 16 MB number 8 s (issue 37). No id or tweet the
    contract takes is longer than `most` bytes however it is escaped, so a longer token is
    refused here, before yajl has buffered it, in time linear in the body. The checks are C's
    (bytes.replace, find, count) on each read; the exact limits stay the contract's.
    """

    def __init__(self, stream, most):
        super().__init__()
        self.stream, self.most = stream, most
        self.offset = 0  # bytes of the body read so far
        self.inside = False  # within a string at the end of the last read
        self.run = 0  # bytes of that string, or of the number the last read ended in
        self.backslash = b""  # a backslash that ended the last read escapes the next byte

    def readable(self):
        return True

    def readinto(self, buffer):
        data = self.stream.read(min(len(buffer), READ_BYTES))
        self.check(data)
        buffer[: len(data)] = data
        self.offset += len(data)
        return len(data)

    def check(self, data):
        """Follow the strings and numbers across reads; Unprocessable for one too long."""
        # Escape pairs as two plain bytes: what is left of '"' opens or closes a string.
        text = (self.backslash + data).replace(b"\\\\", b"__").replace(b'\\"', b"__")
        self.backslash = b"\\" if text.endswith(b"\\") else b""
        text = text[: len(text) - len(self.backslash)]
        if self.inside:
            first = text.find(b'"')
            if first < 0:
                self.run += len(text)
                return self.refuse_if_long("a string", self.run, len(text))
            self.refuse_if_long("a string", self.run + first, first)
        else:  # a number the last read ended in may go on
            lead = len(text) - len(text.lstrip(NUMBER_BYTES))
            self.refuse_if_long("a number", self.run + lead, lead)
            if lead == len(text):
                self.run += lead
                return None
        self.inside ^= text.count(b'"') % 2 == 1
        if self.inside:
            self.run = len(text) - text.rfind(b'"') - 1
        else:
            self.run = len(text) - len(text.rstrip(NUMBER_BYTES))
        return None

    def refuse_if_long(self, what, size, end):
        """Unprocessable if the string or number of `size` bytes, `end` bytes into this read, is
        longer than any id or tweet may be."""
        if size > self.most:
            raise contract.Unprocessable(
                f"the body holds {what} of more than {self.most} bytes from byte "
                f"{self.offset + end - size}: longer than any id or tweet may be"
            )


NESTED = {"start_map": contract.Pairs, "start_array": list}  # no tweet: json_type names it
FIRST = {"start_array": "array", "string": "string", "boolean": "boolean", "null": "null"}


class Unheld:
    """What a reader holds, counted nowhere (the default): json_parts and csv_parts take(n)
    bytes as a part grows and give(n) them back once it is handed over."""

    def take(self, size):
        pass

    def give(self, size):
        pass


UNHELD = Unheld()
# What a part's entry takes beside its id's and text's own strings (sys.getsizeof): the dict's
# slot and its share of the table, measured at about 70 bytes, and a margin.
ENTRY_BYTES = 100


def json_parts(stream, size, chars, limits=contract.LIMITS, held=UNHELD):
    """Yield {id: value} parts of a JSON object read from a stream, of at most `size` tweets and
    about `chars` characters of ids and text, without holding it whole: a value that is no
    string is kept as an empty one of its type (the contract names it), never built, and is
    nested at most MAX_DEPTH deep; a string or number too long for any id or tweet of `limits`
    is refused as it streams (TokenBound), an id too long as soon as it has come. What a part
    holds is taken from `held` as it grows, and given back once the caller has had it.

    Ids were counted neither against an id's limit nor in a part's characters until the part
    was checked: 4,000 ids of 60 KB with empty tweets made a part of 240 MB (issue 37, round 3).
    """
    longest = max(limits["MAX_TWEET_CHARS"], limits.get("MAX_ID_CHARS", 0))
    most_id = limits.get("MAX_ID_CHARS", contract.LIMITS["MAX_ID_CHARS"])
    stream = TokenBound(stream, ESCAPED_CHAR_BYTES * longest + 2)
    events = ijson.basic_parse(stream, use_float=True, buf_size=READ_BYTES)
    part, taken = {}, 0
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
        count, key, depth = 0, None, 0
        for event, value in events:
            if depth:  # within a value that is no string: pass over it
                depth += (event in NESTED) - (event in ("end_map", "end_array"))
                if depth > MAX_DEPTH:
                    raise contract.BadInput(f"the body is nested more than {MAX_DEPTH} deep")
                continue
            if event == "map_key":
                if len(value) > most_id:  # the contract's own words for it
                    contract.check_ids((value,), most_id)
                key = value
                continue
            if event == "end_map":
                break
            if key in part:
                raise contract.BadInput(f"each id must appear once; repeated: {json.dumps(key)}")
            if event in NESTED:
                value, depth = NESTED[event](), 1
            cost = sys.getsizeof(key) + sys.getsizeof(value) + ENTRY_BYTES
            held.take(cost)
            taken += cost
            part[key] = value
            count += len(key) + (len(value) if isinstance(value, str) else 0)
            if len(part) == size or count >= chars:
                yield part
                part, count = {}, 0
                held.give(taken)
                taken = 0
        for _ in events:  # whatever follows the object: nothing, or an error
            pass
    except ijson.IncompleteJSONError as e:
        raise contract.BadInput(f"the body is not valid JSON: {e}") from None
    except (ijson.JSONError, UnicodeDecodeError) as e:
        raise contract.BadInput(f"the body is not valid JSON: {e}") from None
    if part:
        yield part
        held.give(taken)


def csv_parts(stream, size, chars, limits=contract.LIMITS, held=UNHELD):
    """Yield {id: text} parts of a CSV with a header row naming id and text columns, of at most
    `size` tweets and about `chars` characters of ids and text. Every row has as many fields as
    the header; a row of more than MAX_ROW_CHARS characters is refused before it is built. What
    a part holds is taken from `held`, as json_parts does."""
    text = io.TextIOWrapper(stream, encoding="utf-8-sig", newline="")
    lines = BoundedLines(text, MAX_ROW_CHARS)
    rows = csv.reader(lines)
    try:
        header = next(rows, None)
        if header is None or "id" not in header or "text" not in header:
            raise contract.BadInput(
                f"the CSV's first row must name an id and a text column, got {header or 'nothing'}"
                if len(str(header)) < 1000
                else "the CSV's first row must name an id and a text column"
            )
        id_at, text_at = header.index("id"), header.index("text")
        part, numbers, count, taken = {}, {}, 0, 0
        lines.row_done()
        for row in rows:
            lines.row_done()
            line = rows.line_num
            if len(row) != len(header):
                raise contract.BadInput(
                    f"line {line} has {len(row)} fields, the header {len(header)}"
                )
            tweet_id, tweet = row[id_at], row[text_at]
            row = None
            if not tweet_id:
                raise contract.BadInput(f"line {line} has an empty id")
            if tweet_id in part:
                raise contract.BadInput(
                    f"each id must appear once; {json.dumps(tweet_id)} is on lines "
                    f"{numbers[tweet_id]} and {line}"
                )
            cost = sys.getsizeof(tweet_id) + sys.getsizeof(tweet) + 2 * ENTRY_BYTES
            held.take(cost)
            taken += cost
            part[tweet_id], numbers[tweet_id] = tweet, line
            count += len(tweet_id) + len(tweet)
            if len(part) == size or count >= chars:
                yield part
                part, numbers, count = {}, {}, 0
                held.give(taken)
                taken = 0
        if part:
            yield part
            held.give(taken)
    except UnicodeDecodeError as e:
        raise contract.BadInput(f"the body is not valid UTF-8: {e.reason}") from None
    except csv.Error as e:
        raise contract.BadInput(f"the CSV is malformed at line {rows.line_num}: {e}") from None


class BoundedLines:
    """The lines of a text stream for csv.reader, refusing a row (the lines it takes for one
    record) of more than `most` characters: a line is read at most `most` + 1 characters at a
    time, so a row of 120 M commas is refused after `most`, never split into 120 M fields."""

    def __init__(self, text, most):
        self.text, self.most, self.held, self.number = text, most, 0, 0

    def __iter__(self):
        return self

    def __next__(self):
        line = self.text.readline(self.most + 1 - self.held)
        if not line:
            raise StopIteration
        self.held += len(line)
        self.number += 1
        if self.held > self.most:
            raise contract.BadInput(
                f"line {self.number} is part of a row of more than {self.most} characters"
            )
        return line

    def row_done(self):
        self.held = 0


def json_result(chunks, options):
    """The answers as the predict route gives them, a piece of the store's at a time, as bytes:
    while a piece waits for a slow client, it alone is held, not the rows it was made from (a
    download held 2 to 3 MB, issue 37, round 3)."""
    yield b"{"
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
        piece = out.getvalue().encode()
        out = rows = None
        yield piece
        piece = None
    yield b"}"


def csv_result(chunks):
    """The answers as CSV, id,label,score; ids that a spreadsheet would run are neutralised."""
    yield b"id,label,score\r\n"
    for rows in chunks:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerows((contract.csv_cell(i), label, score) for i, label, score, *_ in rows)
        piece = out.getvalue().encode()
        out = writer = rows = None
        yield piece
        piece = None
