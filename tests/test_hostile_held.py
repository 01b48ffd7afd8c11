"""Hostile input, round 3 (issue 37, the red team's second probe): what a client makes the server
hold for it, answers and uploads, and for how long. Each item is sent to the real server
(`make api-start`, two workers; ZeroRPC's `make rpc-start`), with a legitimate client beside it
and the memory of the processes from /proc, before, at the peak and after (test_hostile.Memory);
every test's figures are printed at the end of the run (conftest.FIGURES).

Sizes are those of the probe scaled to the limits here: bodies of MAX_BODY (2 MiB) where it sent
8 MiB, CLIENT_TIMEOUT 3 s where it waited 30, a trickle of 17 KiB every 2.5 s where it read 17 KiB
every 25 s.
"""

import base64
import concurrent.futures
import contextlib
import json
import os
import select
import signal
import socket
import ssl
import struct
import threading
import time
import urllib.request

import pytest
from conftest import ROOT, TOKEN, make_child, reporter, running_server, wait_for_workers
from test_hostile import (
    MB,
    Memory,
    call,
    client_frame,
    context,
    json_error,
    measured,
    read_response,
    server_frame,
    still_serving,
    tls,
)

pytestmark = pytest.mark.slow
OTHER = "other-token-0123456789"
MAX_BODY = 2 * MB
INFLIGHT = 8 * MB  # four bodies of MAX_BODY: what a worker may hold at once
CLIENT_TIMEOUT = 3
FLOOR = 16 * 1024  # CLIENT_MIN_BYTES_PER_SECOND's default: 48 KiB every CLIENT_TIMEOUT here
PING_SECONDS = 2
WS_MAX, WS_PER_TOKEN = 20, 10  # websockets with a token a worker, and of one token
WORKERS = 2
PAYLOAD = json.loads((ROOT / "payload.json").read_text())
TRICKLE = (17 * 1024, CLIENT_TIMEOUT - 0.5)  # the probe's reader: 17 KiB every 25 s, scaled


report = reporter("hostile round 3 #")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile-held")
    with running_server(
        folder,
        API_TOKEN=f"{TOKEN},{OTHER}",
        MAX_BODY_BYTES=str(MAX_BODY),
        MAX_INFLIGHT_BYTES=str(INFLIGHT),
        CLIENT_TIMEOUT=str(CLIENT_TIMEOUT),
        KEEPALIVE="2",
        WS_PING_SECONDS=str(PING_SECONDS),
        WS_MAX_CONNECTIONS=str(WS_MAX),
        WS_MAX_CONNECTIONS_PER_TOKEN=str(WS_PER_TOKEN),
        JOB_CHUNK_CHARS=str(256 * 1024),  # a part of emoji ids: 1 MiB, within the budget
    ) as started:
        yield started


@pytest.fixture
def fresh(server):
    """New workers (a HUP) before a test that measures memory: what an earlier test made a
    worker hold and free is kept by its allocator, and a later test would grow into it unseen."""
    master = make_child(server)
    old = wait_for_workers(master, WORKERS)
    os.kill(master, signal.SIGHUP)
    wait_for_workers(master, WORKERS, exclude=old, seconds=60)
    still_serving(server)
    return server


def emoji_ids(count, emoji=49):
    """{id: ""}: ids of 5 digits and `emoji` 4-byte characters, which an answer escapes in 12
    bytes each (ensure_ascii): 2 MB of body answer 6 MB, the most an answer may outgrow one."""
    return {f"{i:05d}" + "\U0001f600" * emoji: "" for i in range(count)}


BODY = json.dumps(emoji_ids(10_000), ensure_ascii=False).encode()  # 2.07 MB, under MAX_BODY


def predict_head(size, token=TOKEN):
    return (
        f"POST /api/v1/{token}/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
        f"\r\nContent-Length: {size}\r\n\r\n"
    ).encode()


class Legit:
    """A legitimate client beside a test: payload.json predicts, one every 0.25 s on a fresh
    connection; the statuses it got, and its slowest answer."""

    def __init__(self, server):
        self.server, self.statuses, self.slowest = server, {}, 0.0
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.wait(0.25):
            started = time.monotonic()
            try:
                status = call(
                    self.server,
                    "POST",
                    f"/api/v1/{TOKEN}/predict",
                    json.dumps(PAYLOAD),
                    {"Content-Type": "application/json"},
                    timeout=10,
                )[0]
            except OSError as e:
                status = type(e).__name__
            self.slowest = max(self.slowest, time.monotonic() - started)
            self.statuses[status] = self.statuses.get(status, 0) + 1

    def __enter__(self):
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join()

    def figures(self):
        return {"legit_statuses": self.statuses, "legit_slowest_s": round(self.slowest, 2)}


def trickle_reader(sock, until, first=2048, piece=TRICKLE[0], every=TRICKLE[1]):
    """Read `first` bytes of an answer, then `piece` bytes every `every` seconds, until the
    server closes the connection or `until`: (what came first, bytes read, seconds it lasted
    if the server closed it, else None)."""
    started, head, got_bytes = time.monotonic(), b"", 0
    try:
        head = sock.recv(first)
        got_bytes = len(head)
        while time.monotonic() < until:
            time.sleep(every)
            taken = 0
            while taken < piece:
                data = sock.recv(piece - taken)
                if not data:
                    return head, got_bytes, time.monotonic() - started
                taken += len(data)
                got_bytes += len(data)
        return head, got_bytes, None
    except OSError:
        return head, got_bytes, time.monotonic() - started


def status_of(head):
    return int(head.split(b" ", 2)[1]) if head.startswith(b"HTTP/1.1 ") else None


# Item 1: REST answers in the budget, and cut off at a trickle.


def test_1_rest_answers_held_at_a_trickle_stay_in_the_budget_and_are_cut_off(fresh):
    """12 clients with a 4 KiB receive buffer each post 2 MB of emoji ids (an answer of 6 MB),
    then read 17 KiB every 2.5 s (before: every answer held, outside the budget, as long as
    the client liked: the probe's 24 took +1.3 GB for 100 s)."""
    server = fresh
    clients, hold = 12, 4 * CLIENT_TIMEOUT
    with measured(server) as memory, Legit(server) as legit, contextlib.ExitStack() as stack:
        sockets = [
            stack.enter_context(tls(server, timeout=30, rcvbuf=4096)) for _ in range(clients)
        ]
        until = time.monotonic() + hold
        with concurrent.futures.ThreadPoolExecutor(clients) as pool:
            for sock in sockets:
                sock.sendall(predict_head(len(BODY)) + BODY)
            results = list(pool.map(lambda s: trickle_reader(s, until), sockets))
    statuses = [status_of(head) for head, _, _ in results]
    held = [(got, lasted) for (head, got, lasted) in results if status_of(head) == 200]
    figures = {
        "clients": clients,
        "answer_mb": 6.1,
        "statuses": {str(s): statuses.count(s) for s in sorted(set(statuses), key=str)},
        "answers_held": len(held),
        "held_cut_after_s": sorted(round(lasted, 1) for _, lasted in held if lasted),
        "held_never_cut": sum(1 for _, lasted in held if lasted is None),
        **memory.figures(),
        **legit.figures(),
        "after": still_serving(server),
    }
    report("1 REST: 12 answers of 6 MB read at 17 KiB every 2.5 s", figures)
    refused = [head for head, _, _ in results if status_of(head) == 503]
    for head in refused:  # the answer past the budget, or the body when the bodies filled it
        detail = json_error(503, head.partition(b"\r\n\r\n")[2], 503)
        assert "as many answers" in detail or "as many bodies" in detail, detail
    assert set(statuses) <= {200, 503} and refused, figures
    assert len(held) <= WORKERS * (INFLIGHT // (6 * MB)), figures  # one 6 MB answer a worker
    assert all(lasted and lasted < 2.5 * CLIENT_TIMEOUT for _, lasted in held), figures
    assert set(legit.statuses) == {200}, figures
    memory.check(60, peak_bound_mb=90)


def test_1_a_steady_reader_of_a_big_rest_answer_is_not_cut_off(server):
    """The same 6 MB answer read at 40 kB/s for four times CLIENT_TIMEOUT, then at once: whole
    (issue 37 item 3's reader, on REST)."""
    sock = tls(server, timeout=30, rcvbuf=16384)
    sock.sendall(predict_head(len(BODY)) + BODY)
    started, answer = time.monotonic(), b""
    with sock:
        while True:
            elapsed = time.monotonic() - started
            slow = elapsed < 4 * CLIENT_TIMEOUT
            chunk = sock.recv(4000 if slow else 1 << 20)
            if not chunk:
                break
            answer += chunk
            head, _, body = answer.partition(b"\r\n\r\n")
            if body and len(body) >= int(dict(_headers(head)).get("content-length", 1 << 40)):
                break
            if slow:
                time.sleep(max(0.0, len(answer) / 40_000 - elapsed))
    head, _, body = answer.partition(b"\r\n\r\n")
    figures = {"answer_bytes": len(body), "read_at_40kB_s_for_s": 4 * CLIENT_TIMEOUT}
    report("1 REST: a 6 MB answer read at 40 kB/s", figures)
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    assert list(json.loads(body)) == list(json.loads(BODY)), figures


def _headers(head):
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.decode("latin-1").partition(":")
        yield name.strip().lower(), value.strip()


# Websockets by hand: an upgrade on a raw socket, frames read and pings answered.


def ws_open(server, token=TOKEN, rcvbuf=None, address="127.0.0.1"):
    """A websocket with a token on the upgrade: (socket, status)."""
    raw = socket.socket()
    if rcvbuf:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    raw.settimeout(30)
    raw.bind((address, 0))
    raw.connect(("127.0.0.1", server["port"]))
    sock = context(server).wrap_socket(raw, server_hostname="127.0.0.1")
    key = base64.b64encode(os.urandom(16)).decode()
    auth = f"Authorization: Bearer {token}\r\n" if token else ""
    sock.sendall(
        (
            "GET /api/v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n{auth}\r\n"
        ).encode()
    )
    status, _, _ = read_response(sock)
    return sock, status


def fast_frame(payload, opcode=0x1, fin=True):
    """A client frame with a zero mask: quick to make for megabytes (client_frame's XOR is not)."""
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", first, 0x80 | size)
    elif size < 65536:
        head = struct.pack("!BBH", first, 0x80 | 126, size)
    else:
        head = struct.pack("!BBQ", first, 0x80 | 127, size)
    return head + b"\0\0\0\0" + payload


def ws_request(tweets, **options):
    message = {"type": "prediction_request", "request_id": "r", "tweets": tweets, **options}
    return json.dumps(message, ensure_ascii=False).encode()


# Items 1 and 7: websocket replies in the budget, a trickle cut off, a steady reader served.


def test_1_websocket_replies_read_at_a_trickle_stay_in_the_budget_and_are_cut_off(fresh):
    """8 websockets (4 KiB receive buffers) each send 2 MB of emoji ids with scores, then read
    17 KiB every 2.5 s (before: each reply held outside the budget; the probe's 20 unread
    replies took +725 MB until cut at 25 s)."""
    server = fresh
    message = fast_frame(ws_request(emoji_ids(10_000), scores=True))
    sockets, hold = [], 4 * CLIENT_TIMEOUT
    with measured(server) as memory, Legit(server) as legit:
        for n in range(8):
            sock, status = ws_open(server, rcvbuf=4096, address=f"127.0.3.{n + 1}")
            assert status == 101
            sockets.append(sock)
        until = time.monotonic() + hold
        with concurrent.futures.ThreadPoolExecutor(len(sockets)) as pool:
            for sock in sockets:
                sock.sendall(message)
            results = list(pool.map(lambda s: trickle_reader(s, until), sockets))
        for sock in sockets:
            sock.close()
    lasted = [seconds for _, _, seconds in results]
    kinds = [first_type(head) for head, _, _ in results]
    figures = {
        "websockets": len(sockets),
        "message_mb": round(len(message) / MB, 2),
        "first_frames": {k: kinds.count(k) for k in sorted(set(kinds))},
        "cut_after_s": sorted(round(s, 1) for s in lasted if s),
        "never_cut": lasted.count(None),
        **memory.figures(),
        **legit.figures(),
        "after": still_serving(server),
    }
    report("1 websocket: 8 replies of 2.3 MB read at 17 KiB every 2.5 s", figures)
    assert None not in lasted and max(lasted) < 2.5 * CLIENT_TIMEOUT, figures
    assert set(legit.statuses) == {200}, figures
    memory.check(60, peak_bound_mb=90)


def first_type(head):
    """The type of the first message of a websocket's frames' start, and its error if any."""
    start = head[head.index(b"{") :] if b"{" in head else b""
    kind = start[9 : start.index(b",")].strip(b'" ').decode() if b"," in start else "none"
    if kind == "prediction_error" and b'"error": 503' in start:
        return "prediction_error 503"
    return kind


def test_7_a_steady_slow_websocket_reader_gets_its_whole_reply(server):
    """One websocket reads a 2.2 MB reply at 40 kB/s for four times CLIENT_TIMEOUT, then at
    once, answering the server's pings (every 2 s) as it finds them (before: cut off, the pings
    written into the reply being written; the probe's reader of 8 MB was cut 90 s in)."""
    tweets = emoji_ids(10_000)
    sock, status = ws_open(server, rcvbuf=16384)
    assert status == 101
    sock.sendall(fast_frame(ws_request(tweets)))
    started, buffer, reply, pings, closed, slow = time.monotonic(), b"", None, 0, None, 0
    with sock:
        while reply is None and closed is None and time.monotonic() - started < 60:
            elapsed = time.monotonic() - started
            try:
                chunk = sock.recv(4000 if elapsed < 4 * CLIENT_TIMEOUT else 1 << 20)
            except OSError as e:
                closed = type(e).__name__
                break
            if not chunk:
                closed = "closed"
                break
            buffer += chunk
            if elapsed < 4 * CLIENT_TIMEOUT:
                slow += len(chunk)
                time.sleep(max(0.0, slow / 40_000 - elapsed))
            while len(buffer) >= 2:  # whole frames at the head of what has come
                size, at = buffer[1] & 0x7F, 2
                if size == 126:
                    size, at = struct.unpack("!H", buffer[2:4])[0], 4
                elif size == 127:
                    size, at = struct.unpack("!Q", buffer[2:10])[0], 10
                if len(buffer) < at + size:
                    break
                opcode, payload = buffer[0] & 0x0F, buffer[at : at + size]
                buffer = buffer[at + size :]
                if opcode == 0x9:
                    pings += 1
                    sock.sendall(client_frame(payload, opcode=0xA))
                elif opcode == 0x1:
                    reply = json.loads(payload)
                elif opcode == 0x8:
                    closed = int.from_bytes(payload[:2], "big")
    figures = {
        "reply": reply and reply["type"],
        "read_at_40kB_s": slow,
        "seconds": round(time.monotonic() - started, 1),
        "pings_answered": pings,
        "closed": closed,
    }
    report("7 websocket: a 2.2 MB reply read at 40 kB/s, then at once", figures)
    assert reply is not None and list(reply["predictions"]) == list(tweets), figures
    assert slow > 400_000, figures  # read slowly for longer than the client time-out, by far


# Item 8: one token cannot take every websocket.


def test_8_one_token_takes_at_most_its_share_of_the_websockets(server):
    """40 upgrades of one token at once from 4 addresses, against 20 slots a worker, then a
    websocket of another token (before: the first token took every slot, the other got 503)."""
    with concurrent.futures.ThreadPoolExecutor(40) as pool:
        results = list(
            pool.map(lambda n: ws_open(server, address=f"127.0.4.{n % 4 + 1}"), range(40))
        )
    statuses = [status for _, status in results]
    other_sock, other_status = ws_open(server, token=OTHER)
    answer = None
    if other_status == 101:
        other_sock.sendall(client_frame(ws_request({"a": "I love it"})))
        opcode, payload = server_frame(other_sock)
        answer = json.loads(payload)["type"] if opcode == 0x1 else opcode
    # An unauthenticated socket that authenticates with the token at its share: closed 1013.
    late_sock, late_status = ws_open(server, token=None)
    late_sock.sendall(client_frame(json.dumps({"type": "auth", "token": TOKEN}).encode()))
    late_code = None
    while late_code is None:
        opcode, payload = server_frame(late_sock)
        if opcode in (0x8, None):
            late_code = int.from_bytes(payload[:2], "big") if payload else "dropped"
        elif opcode == 0x1:
            late_code = json.loads(payload)["type"]
    for sock, _ in results + [(other_sock, 0), (late_sock, 0)]:
        sock.close()
    figures = {
        "one_token_statuses": {str(s): statuses.count(s) for s in sorted(set(statuses))},
        "other_token": other_status,
        "other_token_answer": answer,
        "auth_message_with_the_token_at_its_share": late_code,
    }
    report("8 websocket: 40 upgrades of one token, then another token", figures)
    assert statuses.count(101) <= WORKERS * WS_PER_TOKEN, figures
    assert statuses.count(101) >= WS_PER_TOKEN, figures
    assert set(statuses) <= {101, 429}, figures
    assert other_status == 101 and answer == "prediction_response", figures
    assert late_code in (1013, "auth_ok"), figures  # auth_ok: the worker had a slot to spare


# Item 5: a websocket message never finished.


def test_5_a_websocket_message_never_finished_is_cut_off(fresh):
    """4 websockets each send 1.9 MB of a fragmented message and never its last fragment,
    answering the server's pings (before: held, in the budget, for as long as they liked)."""
    server = fresh
    sockets, ended, stop = [], {}, threading.Event()
    first = b'{"type":"prediction_request","request_id":"1","tweets":{"a":"'
    started = time.monotonic()

    def hold(n, sock):
        sock.sendall(fast_frame(first, fin=False))
        for _ in range(19):
            sock.sendall(fast_frame(b"x" * 100_000, opcode=0x0, fin=False))
        while not stop.is_set():
            if not sock.pending() and not select.select([sock], [], [], 0.2)[0]:
                continue
            opcode, payload = server_frame(sock)
            if opcode is None or opcode == 0x8:
                ended[n] = time.monotonic() - started
                return
            if opcode == 0x9:
                sock.sendall(client_frame(payload, opcode=0xA))

    with measured(server) as memory, Legit(server) as legit:
        for n in range(4):
            sock, status = ws_open(server, address=f"127.0.5.{n + 1}")
            assert status == 101
            sockets.append(sock)
        threads = [threading.Thread(target=hold, args=item) for item in enumerate(sockets)]
        for thread in threads:
            thread.start()
        time.sleep(4 * CLIENT_TIMEOUT)
        stop.set()
        for thread in threads:
            thread.join()
        for sock in sockets:
            sock.close()
    figures = {
        "websockets": len(sockets),
        "cut_after_s": sorted(round(s, 1) for s in ended.values()),
        "never_cut": len(sockets) - len(ended),
        **memory.figures(),
        **legit.figures(),
        "after": still_serving(server),
    }
    report("5 websocket: 4 messages of 1.9 MB never finished, pings answered", figures)
    assert len(ended) == len(sockets), figures
    assert max(ended.values()) < 3 * CLIENT_TIMEOUT, figures
    memory.check(40)


# Item 4: a body sent at once but for its last byte, then trickled.


def test_4_a_body_sent_fast_then_trickled_is_cut_off_within_the_client_time_out(fresh):
    """8 uploads declaring MAX_BODY and 4 chunked ones send all but their last byte at once,
    then a byte every 2.5 s (before: held CLIENT_TIMEOUT + MAX_BODY / 64 KiB, 35 s here and
    157 s at the defaults, on the allowance their first bytes earned)."""
    server = fresh
    heads = [predict_head(MAX_BODY)] * 8 + [
        (
            f"POST /api/v1/{TOKEN}/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            "\r\nTransfer-Encoding: chunked\r\n\r\n"
        ).encode()
    ] * 4
    burst = b'{"a":"' + b"x" * (MAX_BODY - 20)
    ended, answers = {}, {}
    with measured(server) as memory, Legit(server) as legit, contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(tls(server, timeout=30)) for _ in heads]
        for n, (sock, head) in enumerate(zip(sockets, heads, strict=True)):
            chunked = n >= 8
            sock.sendall(head + (b"%X\r\n%s\r\n" % (len(burst), burst) if chunked else burst))
        started = time.monotonic()
        while len(ended) < len(sockets) and time.monotonic() - started < 6 * CLIENT_TIMEOUT:
            time.sleep(TRICKLE[1])
            for n, sock in enumerate(sockets):
                if n in ended:
                    continue
                try:
                    sock.sendall(b"1\r\nx\r\n" if n >= 8 else b"x")
                except OSError:
                    ended[n] = time.monotonic() - started
                    continue
                if sock.pending() or select.select([sock], [], [], 0)[0]:  # answered, or closed
                    ended[n] = time.monotonic() - started
        for n, sock in enumerate(sockets):
            sock.settimeout(5)
            try:
                answers[n] = read_response(sock)
            except OSError:
                answers[n] = (None, {}, b"")
    figures = {
        "uploads": len(sockets),
        "ended_after_s": sorted(round(s, 1) for s in ended.values()),
        "statuses": sorted(str(status) for status, _, _ in answers.values()),
        **memory.figures(),
        **legit.figures(),
        "after": still_serving(server),
    }
    report("4 REST: 12 uploads of MAX_BODY but a byte, then a byte every 2.5 s", figures)
    assert len(ended) == len(sockets) and max(ended.values()) < 2 * CLIENT_TIMEOUT, figures
    # The budget holds four bodies of MAX_BODY a worker: those past it were refused at once.
    # How the 12 connections spread over the two workers is the kernel's and the workers'
    # accept race (CI's run of 1a829b8 saw 11 and 1: 4 + 1 held, 7 refused), so what is sure is
    # a worker's four, not half.
    for status, _, body in answers.values():
        if status == 503:
            json_error(status, body, 503, "as many bodies as it may")
        else:
            json_error(status, body, 408, "too slowly")
    held = INFLIGHT // MAX_BODY
    assert [status for status, _, _ in answers.values()].count(408) >= held, figures
    assert set(legit.statuses) == {200}, figures
    memory.check(40)


# Item 2: a job's ids, bounded as they stream, counted in a part and in the budget.


def job_head(size, token=TOKEN):
    return (
        f"POST /api/v1/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n"
    ).encode()


def test_2_a_job_id_past_the_limit_is_refused_as_it_arrives(fresh):
    """A job of 600 ids of 14,997 emoji (60 KB each, under the bound on any string) and empty
    tweets, sent a piece at a time until the server answers (before: the whole body built into
    one part, +228 MB for the probe's 240 MB, then 422)."""
    server = fresh
    entry = '"{n}' + "\U0001f600" * 14_997 + '":""'
    pieces = [("{" + entry.format(n=0)).encode()]
    pieces += [("," + entry.format(n=n)).encode() for n in range(1, 600)]
    pieces.append(b"}")
    size = sum(map(len, pieces))
    sock = tls(server, timeout=30)
    sent, answer = 0, b""
    with measured(server) as memory, sock:
        sock.sendall(job_head(size))
        for piece in pieces:
            try:
                sock.sendall(piece)
            except OSError:
                break
            sent += len(piece)
            sock.setblocking(False)
            with contextlib.suppress(BlockingIOError, ssl.SSLWantReadError):
                answer += sock.recv(65536)
            sock.settimeout(30)
            if answer:
                break
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in answer or not answer.endswith(b"}\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
    status, _, body = answer.partition(b"\r\n\r\n")
    figures = {
        "body_mb": round(size / MB, 1),
        "sent_mb_before_the_answer": round(sent / MB, 1),
        "status": status[:12].decode(),
        **memory.figures(),
    }
    report("2 jobs: 600 ids of 60 KB, refused as they come", figures)
    json_error(int(status.split()[1]), body, 422, "each id must be at most 256 characters")
    assert sent < size / 4, figures
    memory.check(20, peak_bound_mb=30)


def test_2_job_uploads_held_short_of_their_end_stay_in_the_budget_and_are_cut_off(fresh):
    """JOB_MAX_ACTIVE (4) uploads of one token, each 12,000 ids of 256 emoji (the longest an id
    may be) and empty tweets, sent whole but the closing brace, then a space every 2.5 s
    (before: a part grew to JOB_CHUNK_TWEETS ids, its ids uncounted, and every id seen was
    held whole; the probe's 4 held +917 MB for the upload's hour)."""
    server = fresh
    entry = '"{n:05d}' + "\U0001f600" * 251 + '":""'
    body = ("{" + ",".join(entry.format(n=n) for n in range(12_000))).encode()
    ended, answers = {}, {}
    with measured(server) as memory, Legit(server) as legit, contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(tls(server, timeout=60)) for _ in range(4)]
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(lambda s: s.sendall(job_head(len(body) + 40) + body), sockets))
        started = time.monotonic()
        while len(ended) < len(sockets) and time.monotonic() - started < 6 * CLIENT_TIMEOUT:
            time.sleep(TRICKLE[1])
            for n, sock in enumerate(sockets):
                if n not in ended:
                    try:
                        sock.sendall(b" ")
                    except OSError:
                        ended[n] = time.monotonic() - started
        for n, sock in enumerate(sockets):
            sock.settimeout(10)
            try:
                answers[n] = read_response(sock)
            except OSError:
                answers[n] = (None, {}, b"")
            ended.setdefault(n, time.monotonic() - started)
    figures = {
        "uploads": len(sockets),
        "body_mb": round(len(body) / MB, 1),
        "ended_after_s": sorted(round(s, 1) for s in ended.values()),
        "statuses": sorted(str(status) for status, _, _ in answers.values()),
        **memory.figures(),
        **legit.figures(),
        "after": still_serving(server),
    }
    report("2 jobs: 4 uploads of 12.4 MB of long ids held short of their end", figures)
    for status, _, answer in answers.values():
        assert status in (408, 503), figures
        json_error(status, answer, status)
    assert max(ended.values()) < 4 * CLIENT_TIMEOUT, figures
    memory.check(40, peak_bound_mb=60)


# Item 6: held downloads of a job's result.


def test_6_held_downloads_stay_in_the_budget_and_are_cut_off(fresh):
    """40 downloads of an explained 10,000-tweet job's result (more than the kernel's buffers
    take), each reading 2 KB then 17 KiB every 2.5 s (before: each held a piece of the result,
    2 to 3 MB, however many; the probe's 400 took +1 GB). A download is cut off once a piece
    has waited for it too long, so only after the kernel's send buffer, megabytes on loopback,
    is full: 12 to 15 s in here; meanwhile the budget they hold makes some other requests 503."""
    server = fresh
    words = ["love", "hate", "good", "bad", "happy", "sad", "great", "awful", "nice", "fun"]
    tweets = {
        f"t{i}": " ".join(words[(i * 7 + k * 3) % len(words)] for k in range(60))
        for i in range(10_000)
    }
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    status, _, answer = call(
        server, "POST", "/api/v1/jobs?explain=true&scores=true", json.dumps(tweets), headers
    )
    assert status == 202, answer
    job_id = json.loads(answer)["job_id"]
    deadline = time.monotonic() + 120
    while (
        json.loads(call(server, "GET", f"/api/v1/jobs/{job_id}", headers=headers)[2])["status"]
        != "done"
    ):
        assert time.monotonic() < deadline, "the job was not done in time"
        time.sleep(0.3)
    request = (
        f"GET /api/v1/jobs/{job_id}/result HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}"
        "\r\n\r\n"
    ).encode()
    downloads, hold = 40, 8 * CLIENT_TIMEOUT
    with measured(server) as memory, Legit(server) as legit, contextlib.ExitStack() as stack:
        sockets = [
            stack.enter_context(tls(server, timeout=30, rcvbuf=4096)) for _ in range(downloads)
        ]
        until = time.monotonic() + hold
        with concurrent.futures.ThreadPoolExecutor(downloads) as pool:
            for sock in sockets:
                sock.sendall(request)
            results = list(pool.map(lambda s: trickle_reader(s, until), sockets))
    statuses = [status_of(head) for head, _, _ in results]
    held = [lasted for head, _, lasted in results if status_of(head) == 200]
    whole = call(server, "GET", f"/api/v1/jobs/{job_id}/result", headers=headers)
    figures = {
        "downloads": downloads,
        "result_mb": round(len(whole[2]) / MB, 1),
        "statuses": {str(s): statuses.count(s) for s in sorted(set(statuses), key=str)},
        "held_cut_after_s": sorted(round(s, 1) for s in held if s),
        "held_never_cut": held.count(None),
        **memory.figures(),
        **legit.figures(),
        "after": still_serving(server),
    }
    report("6 jobs: 40 downloads of an explained 10,000-tweet result at a trickle", figures)
    assert whole[0] == 200 and list(json.loads(whole[2])) == list(tweets)
    assert None not in held and max(held) < hold, figures
    assert set(statuses) <= {200, 503}, figures
    assert set(legit.statuses) == {200}, figures  # small predicts: never refused for the budget
    # Both workers' budgets (16 MB) held, and what building the pieces leaves in the allocator.
    memory.check(50, peak_bound_mb=60)


def test_the_server_logged_no_traceback_and_no_token(server):
    time.sleep(0.5)
    text = server["log"].read_text(errors="replace")
    assert "Traceback" not in text, text[-3000:]
    assert TOKEN not in text and OTHER not in text
    assert "took too little of its answer" in text


# Item 3: ZeroRPC holds a bounded number of calls, whatever its peers send.


def rpc_flood(address, calls, tweets):
    """A DEALER that sends up to `calls` calls at once, reads nothing (RCVHWM 1, a 4 KiB kernel
    buffer), and stays connected until closed. A peer the server refused has nowhere to queue
    them: its sends stop there (ZeroMQ's would block for good)."""
    import msgpack
    import zmq

    sock = zmq.Context.instance().socket(zmq.DEALER)
    sock.setsockopt(zmq.RCVHWM, 1)
    sock.setsockopt(zmq.RCVBUF, 4096)
    sock.setsockopt(zmq.SNDHWM, 100_000)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(address)
    for _ in range(calls):
        header = {"message_id": os.urandom(16).hex(), "v": 3}
        call = msgpack.packb([header, "predict", [tweets, {"scores": True}]])
        try:
            sock.send_multipart([b"", call], flags=zmq.NOBLOCK)
        except zmq.Again:
            break
    return sock


def rpc_refused(metrics_port):
    with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    line = next(li for li in text.splitlines() if li.startswith("rpc_connections_refused_total"))
    return float(line.split()[1])


def test_3_zerorpc_holds_a_bounded_number_of_calls_whatever_its_peers_send(tmp_path):
    """One peer sends 60 calls of 2 MB and reads nothing, then 6 peers 20 each; a legitimate
    client calls meanwhile (before: every call queued, 1,000 a peer: the probe's 120 calls of
    7.9 MB took +1.25 GB)."""
    import zerorpc
    from test_rpc import rpc_server

    tweets = emoji_ids(10_000)
    peers = 4
    with rpc_server(
        tmp_path, MAX_BODY_BYTES=str(MAX_BODY), RPC_MAX_PEERS=str(peers), RPC_MAX_CALLS="4"
    ) as started:
        client = zerorpc.Client(timeout=20)
        client.connect(started["address"])
        assert client.predict(PAYLOAD)  # connected, and counted, before the floods
        with Memory([make_child(started)]) as one:
            flood = rpc_flood(started["address"], 60, tweets)
            time.sleep(8)
            legit_one = client.predict(PAYLOAD)
            flood.close()
        time.sleep(1)
        with Memory([make_child(started)]) as several:
            floods = [rpc_flood(started["address"], 20, tweets) for _ in range(6)]
            time.sleep(8)
            legit_several = client.predict(PAYLOAD)
            for flood in floods:
                flood.close()
        refused = rpc_refused(started["metrics"])
        client.close()
    figures = {
        "call_mb": round(len(json.dumps(tweets, ensure_ascii=False).encode()) / MB, 1),
        "one_peer_60_calls": one.figures(),
        "six_peers_20_calls_each": several.figures(),
        "connections_refused": refused,
        "legit_answered": [sorted(set(legit_one.values())), sorted(set(legit_several.values()))],
    }
    report("3 ZeroRPC: 60 calls of 2 MB unread, then 6 peers of 20", figures)
    assert list(legit_one) == list(PAYLOAD) and list(legit_several) == list(PAYLOAD)
    assert refused >= 6 + 1 - peers, figures  # the legitimate client holds one of the slots
    one.check(80, peak_bound_mb=80)
    several.check(120, peak_bound_mb=120)
