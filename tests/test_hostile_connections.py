"""Hostile input, round 2 (issue #37), items 1 to 4 and 16: connections that wait, slow bodies,
slow readers, websocket bursts, wrong tokens and the small HTTP and TLS items, each sent to the
real server (`make api-start`, two workers), with what a legitimate client gets meanwhile and the
workers' memory from /proc. Every test's figures are printed at the end of the run
(conftest.FIGURES).

Crowds of clients (thousands of sockets) run in a process of their own, this file run as a script
(`python test_hostile_connections.py idle|upgrade ...`), so that the legitimate client a test
times is slowed by the server only, not by the crowd's share of this process.
"""

import asyncio
import concurrent.futures
import contextlib
import json
import socket
import ssl
import subprocess
import sys
import time

import pytest
from conftest import TOKEN, reporter, running_server
from test_hostile import (
    MB,
    PAYLOAD,
    call,
    client_frame,
    context,
    json_error,
    log_is_clean,
    measured,
    parse_response,
    read_response,
    server_frame,
    still_serving,
    submit,
    wait_done,
)

pytestmark = pytest.mark.slow
MAX_BODY = 2 * MB
INFLIGHT = 8 * MB  # four bodies of MAX_BODY: what a worker may hold at once
CLIENT_TIMEOUT = 3
HANDSHAKE_SECONDS = 2
WS_MAX_CONNECTIONS = 100  # per worker, so 200 for the server
WS_MAX_UNAUTHENTICATED = 50
AUTH_FAILURES, AUTH_FAILURES_SECONDS = 10, 6
WORKERS = 2


report = reporter("hostile round 2 #")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile-connections")
    with running_server(
        folder,
        API_TOKEN=TOKEN,
        MAX_BODY_BYTES=str(MAX_BODY),
        MAX_INFLIGHT_BYTES=str(INFLIGHT),
        CLIENT_TIMEOUT=str(CLIENT_TIMEOUT),
        KEEPALIVE="2",
        HANDSHAKE_SECONDS=str(HANDSHAKE_SECONDS),
        WS_MAX_CONNECTIONS=str(WS_MAX_CONNECTIONS),
        WS_MAX_UNAUTHENTICATED=str(WS_MAX_UNAUTHENTICATED),
        WS_AUTH_SECONDS="5",
        AUTH_FAILURES=str(AUTH_FAILURES),
        AUTH_FAILURES_SECONDS=str(AUTH_FAILURES_SECONDS),
        JOB_CHUNK_TWEETS="50000",  # a job's result written a few MB at a time
    ) as started:
        yield started


# Clients: from any address of 127.0.0.0/8 (each a client address of its own to the server).


def tls_from(server, address="127.0.0.1", timeout=10, rcvbuf=None):
    raw = socket.socket()
    if rcvbuf:
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    raw.settimeout(timeout)
    raw.bind((address, 0))
    raw.connect(("127.0.0.1", server["port"]))
    return context(server).wrap_socket(raw, server_hostname="127.0.0.1")


def request_from(server, address, method, path, body=b"", headers=(), timeout=10):
    """(status, headers, body) of one request on a fresh connection from an address."""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    with tls_from(server, address, timeout) as sock:
        sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        return read_response(sock)


def timed_predict(server, timeout):
    """(status, seconds) of a predict on a fresh connection; status None if none came in time."""
    started = time.monotonic()
    try:
        status, _, body = call(
            server,
            "POST",
            f"/api/v1/{TOKEN}/predict",
            json.dumps(PAYLOAD),
            {"Content-Type": "application/json"},
            timeout=timeout,
        )
        if status == 200:
            assert list(json.loads(body)) == list(PAYLOAD)
    except OSError:
        status = None
    return status, time.monotonic() - started


def crowd(server, *args):
    """Start this file as a script with args: a crowd of clients in a process of its own."""
    return subprocess.Popen(
        [
            sys.executable,
            __file__,
            str(server["port"]),
            str(server["folder"] / "server.crt"),
            *args,
        ],
        stdout=subprocess.PIPE,
        text=True,
    )


def crowd_figures(process, timeout=120):
    out, _ = process.communicate(timeout=timeout)
    return json.loads(out)


# Item 1: connections that send nothing, or finish TLS and then nothing.


def test_1_bare_connects_are_dropped_and_do_not_keep_other_clients_out(server):
    """2,100 connect()s from 127.0.0.1 that send nothing, held; 13 predicts from the same address
    meanwhile (before: 0 of 13 answered, every connect held for good)."""
    held = []
    with measured(server) as memory:
        for _ in range(2100):
            sock = socket.socket()
            sock.setblocking(False)
            sock.connect_ex(("127.0.0.1", server["port"]))
            held.append(sock)
        time.sleep(1)
        with concurrent.futures.ThreadPoolExecutor(13) as pool:
            answers = list(pool.map(lambda _: timed_predict(server, 10), range(13)))
        time.sleep(HANDSHAKE_SECONDS + 1.5)
        closed = 0
        for sock in held:
            try:
                closed += sock.recv(1) == b""
            except BlockingIOError:
                pass  # still open
            except OSError:
                closed += 1  # reset
        # One connect of its own, at rest: its handshake's time-out, not another's arrival, ends it.
        lone = socket.create_connection(("127.0.0.1", server["port"]), timeout=10)
        started = time.monotonic()
        try:
            lone_closed = lone.recv(1) == b""
        except TimeoutError:
            lone_closed = False  # still open after 10 s
        except OSError:
            lone_closed = True  # reset
        lone_seconds = time.monotonic() - started
        lone.close()
        for sock in held:
            sock.close()
    answered = [seconds for status, seconds in answers if status == 200]
    figures = {
        "bare_connects": len(held),
        "answered_of_13": len(answered),
        "slowest_answer_s": round(max(answered, default=0), 2),
        "closed_by_the_server": closed,
        "lone_connect": f"{'closed' if lone_closed else 'open'} after {lone_seconds:.1f} s",
        **memory.figures(),
        "after": still_serving(server),
    }
    report("1 connections: 2,100 bare connect()s", figures)
    assert len(answered) == 13, figures
    assert closed == len(held), figures
    assert lone_closed and lone_seconds < HANDSHAKE_SECONDS + 2, figures
    memory.check(50)


@pytest.mark.parametrize(
    "addresses",
    ["127.0.0.1", ",".join(f"127.0.1.{n}" for n in range(1, 26))],
    ids=["from the client's own address", "from 25 other addresses"],
)
def test_1_clients_idle_after_tls_do_not_keep_other_clients_out(server, addresses):
    """2,500 clients that finish TLS and send nothing, each connecting again when closed, for
    12 s, from the legitimate client's own address (MAX_IDLE_PER_ADDRESS binds) or from 25 others
    (the pool's drain binds); a predict at a time meanwhile (before: 3 answers in 12 s)."""
    spread = addresses.count(",") + 1
    with measured(server) as memory:
        attack = crowd(server, "idle", addresses, "2500", "12")
        time.sleep(2)
        answers, until = [], time.monotonic() + 10
        while time.monotonic() < until:
            answers.append(timed_predict(server, 5))
        attacked = crowd_figures(attack)
    answered = sorted(seconds for status, seconds in answers if status == 200)
    figures = {
        "idle_clients": 2500,
        "addresses": spread,
        "crowd": attacked,
        "legitimate_sent": len(answers),
        "legitimate_answered": len(answered),
        "median_answer_s": round(answered[len(answered) // 2], 3) if answered else None,
        "kb_per_connection_held": round(
            (memory.peak - memory.before) * 1024 / max(attacked["most_open_at_once"], 1)
        ),
        "slowest_answer_s": round(max(answered, default=0), 2),
        **memory.figures(),
        "after": still_serving(server),
    }
    report(f"1 connections: 2,500 clients idle after TLS, from {spread} address(es)", figures)
    assert len(answered) == len(answers) and len(answered) >= 10, figures
    assert max(answered) < 2, figures
    if spread == 1:  # MAX_IDLE_PER_ADDRESS (100) waiting connections a worker, and a margin
        assert attacked["most_open_at_once"] <= 100 * WORKERS * 1.5, figures
        memory.check(60)
    else:  # the pools full (1,000 a worker), each connection 60 KB or so, and no more
        memory.check(WORKERS * 1000 * 80 / 1024)


# Item 2: uploads that trickle.


def test_2_slow_uploads_neither_hold_the_budget_nor_last(server):
    """10 uploads with a valid token, 5 declaring Content-Length: MAX_BODY and 5 chunked, a byte a
    second; predicts meanwhile (before: 503 to every one while the uploads were held)."""
    heads = [
        (
            f"POST /api/v1/{TOKEN}/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            f"\r\nContent-Length: {MAX_BODY}\r\n\r\n"
        ).encode()
    ] * 5 + [
        (
            f"POST /api/v1/{TOKEN}/predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
            "\r\nTransfer-Encoding: chunked\r\n\r\n"
        ).encode()
    ] * 5
    chunked = [False] * 5 + [True] * 5
    with measured(server) as memory, contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(tls_from(server, timeout=20)) for _ in heads]
        started = time.monotonic()
        for sock, head in zip(sockets, heads, strict=True):
            sock.sendall(head)
        statuses, answers, ended = {}, {}, {}
        while time.monotonic() - started < CLIENT_TIMEOUT + 4 and len(ended) < len(sockets):
            for n, sock in enumerate(sockets):
                if n in ended:
                    continue
                try:
                    sock.sendall(b"1\r\n \r\n" if chunked[n] else b" ")
                except OSError:
                    ended[n] = time.monotonic() - started
            status = timed_predict(server, 10)[0]
            statuses[status] = statuses.get(status, 0) + 1
            time.sleep(0.5)
        for n, sock in enumerate(sockets):
            sock.settimeout(5)
            try:
                answers[n] = read_response(sock)
            except OSError:
                answers[n] = (None, {}, b"")
            ended.setdefault(n, time.monotonic() - started)
    upload_statuses = [answers[n][0] for n in range(len(sockets))]
    figures = {
        "slow_uploads": len(sockets),
        "other_predicts": statuses,
        "upload_statuses": upload_statuses,
        "uploads_ended_after_s": round(max(ended.values()), 1),
        **memory.figures(),
        "after": still_serving(server),
    }
    report("2 REST: 10 uploads of a byte a second, 5 of 2 MiB declared, 5 chunked", figures)
    assert set(statuses) == {200}, figures
    for status, _, body in answers.values():
        json_error(status, body, 408, "too slowly")
    assert max(ended.values()) < CLIENT_TIMEOUT + 3, figures
    memory.check(50)


# Item 3: a slow but steady reader of a big streamed answer.


def read_result(server, job_id, rate, seconds, rcvbuf, piece):
    """Read a job's result at `rate` bytes a second for `seconds`, `piece` bytes at a time, then
    at once to its end: (bytes, whether it ended as a chunked answer ends)."""
    sock = tls_from(server, timeout=30, rcvbuf=rcvbuf)
    sock.sendall(
        f"GET /api/v1/jobs/{job_id}/result HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {TOKEN}\r\n\r\n".encode()
    )
    started, received, tail = time.monotonic(), 0, b""
    with contextlib.suppress(OSError), sock:
        while not tail.endswith(b"\r\n0\r\n\r\n"):
            elapsed = time.monotonic() - started
            chunk = sock.recv(piece if elapsed < seconds else 1 << 20)
            if not chunk:
                break
            received += len(chunk)
            tail = (tail + chunk)[-16:]
            if elapsed < seconds:
                time.sleep(max(0.0, received / rate - elapsed))
    return received, tail.endswith(b"\r\n0\r\n\r\n")


def test_3_a_steady_slow_reader_of_a_job_result_is_not_cut_off(server):
    """A job of 20,000 tweets explained (a result of several MB, written a few MB at a time),
    read at 40 kB/s for four times CLIENT_TIMEOUT, then at once to its end (before: cut off,
    "a client took nothing"); beside it, one reading 1 KB a second, which is cut off."""
    words = ["happy", "sad", "good", "bad", "great", "awful", "love", "hate", "fine", "nice"]
    tweets = {str(i): " ".join(words[(i * 7 + k) % 10] for k in range(8)) for i in range(20000)}
    status, answer = submit(server, json.dumps(tweets), query="?explain=true")
    assert status == 202, answer
    wait_done(server, answer["job_id"], seconds=120)
    before = server["log"].read_text(errors="replace").count("a client took")
    slow_seconds = CLIENT_TIMEOUT * 4
    job = answer["job_id"]
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        steady = pool.submit(read_result, server, job, 40_000, slow_seconds, 16384, 4096)
        trickle = pool.submit(read_result, server, job, 1000, slow_seconds, 4096, 100)
        (received, complete), (trickled, trickle_complete) = steady.result(), trickle.result()
    time.sleep(0.5)
    cut = server["log"].read_text(errors="replace").count("a client took") - before
    figures = {
        "result_bytes": received,
        "complete": complete,
        "read_at_40kB_s_for_s": slow_seconds,
        "reader_of_1kB_s_complete": trickle_complete,
        "reader_of_1kB_s_bytes": trickled,
        "cut_off_lines_in_log": cut,
        "after": still_serving(server),
    }
    report("3 jobs: a 20,000-tweet explained result read at 40 kB/s, and at 1 kB/s", figures)
    assert complete and received > 2 * MB, figures  # more than the buffers: the reader's pace
    assert not trickle_complete and cut == 1, figures  # the trickle only


# Item 4: websocket upgrades in a burst.


def test_4_a_burst_of_websocket_upgrades_stays_within_the_quotas(server):
    """600 upgrades without a token at once, then 300 with one, from six addresses (before: 249
    to 600 opened against a quota of 100; 1,400 against 1,000)."""
    addresses = ",".join(f"127.0.0.{n}" for n in range(10, 16))
    with measured(server) as memory:
        without = crowd_figures(crowd(server, "upgrade", addresses, "600", "", "2"))
        time.sleep(6)  # WS_AUTH_SECONDS: the ones let in are closed, their slots free again
        with_token = crowd_figures(crowd(server, "upgrade", addresses, "300", TOKEN, "2"))
        time.sleep(2)
    figures = {
        "without_token": without,
        "with_token": with_token,
        **memory.figures(),
        "after": still_serving(server),
    }
    report("4 websocket: 600 upgrades at once without a token, 300 with", figures)
    assert without.get("101", 0) <= WS_MAX_UNAUTHENTICATED * WORKERS, figures
    assert without.get("101", 0) >= WS_MAX_UNAUTHENTICATED, figures  # the quota is let in
    assert with_token.get("101", 0) <= WS_MAX_CONNECTIONS * WORKERS, figures
    assert with_token.get("101", 0) >= WS_MAX_CONNECTIONS, figures
    assert set(without) | set(with_token) <= {"101", "503"}, figures
    memory.check(60)


# Item 16: wrong tokens, and the small HTTP and TLS items.


def test_16_wrong_tokens_get_429_and_valid_tokens_elsewhere_are_not_slowed(server):
    """60 wrong tokens from one address on fresh connections (both workers), by every door that
    checks one; a valid client from another address meanwhile (before: never a 429)."""
    guesser = "127.0.0.20"
    doors = [
        ("POST", "/api/v1/WRONG-TOKEN/predict", ["Content-Type: application/json"]),
        ("POST", "/api/v1/predict", ["Authorization: Bearer WRONG", "Content-Type: x"]),
        ("GET", "/api/v1/models", ["Authorization: Bearer WRONG"]),
        ("GET", "/metrics", ["Authorization: Bearer WRONG"]),
        ("GET", "/api/v1/jobs/x", ["Authorization: Bearer WRONG"]),
    ]
    statuses, retry_after, valid = [], set(), []
    started = time.monotonic()
    for n in range(60):
        method, path, headers = doors[n % len(doors)]
        status, answer_headers, body = request_from(server, guesser, method, path, b"{}", headers)
        statuses.append(status)
        if status == 429:
            json_error(status, body, 429, "too many wrong tokens")
            retry_after.add(int(answer_headers["retry-after"]))
        valid.append(timed_predict(server, 10))
    guessing_seconds = time.monotonic() - started
    # A valid token from the address refused meanwhile is refused too (a shared address: see
    # docs/operations.md); once the window is over it is let in.
    blocked_valid = request_from(
        server, guesser, "POST", f"/api/v1/{TOKEN}/predict", json.dumps(PAYLOAD).encode(),
        ["Content-Type: application/json"],
    )[0]  # fmt: skip
    websocket_blocked = request_from(
        server, guesser, "GET", "/api/v1/ws",
        headers=["Upgrade: websocket", "Connection: Upgrade", "Sec-WebSocket-Version: 13",
                 "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="],
    )[0]  # fmt: skip
    time.sleep(max(retry_after, default=0) + 0.5)
    later = request_from(
        server, guesser, "POST", f"/api/v1/{TOKEN}/predict", json.dumps(PAYLOAD).encode(),
        ["Content-Type: application/json"],
    )[0]  # fmt: skip
    refused = [s for s in statuses if s != 429]
    figures = {
        "wrong_tokens_sent": len(statuses),
        "answered_401_or_404": len(refused),
        "statuses": {str(s): statuses.count(s) for s in sorted(set(statuses))},
        "first_429_at": statuses.index(429) if 429 in statuses else None,
        "retry_after_s": sorted(retry_after),
        "guesses_per_s": round(len(statuses) / guessing_seconds, 1),
        "valid_client_elsewhere": sorted({s for s, _ in valid}, key=str),
        "valid_client_slowest_s": round(max(s for _, s in valid), 3),
        "valid_token_from_the_refused_address": blocked_valid,
        "websocket_upgrade_from_it": websocket_blocked,
        "valid_token_from_it_after_the_window": later,
    }
    report("16 REST: 60 wrong tokens from one address", figures)
    assert set(refused) <= {401, 404}, figures
    assert len(refused) <= AUTH_FAILURES * WORKERS, figures  # each worker counts its own
    assert retry_after and max(retry_after) <= AUTH_FAILURES_SECONDS, figures
    assert {s for s, _ in valid} == {200}, figures
    assert blocked_valid == 429 and websocket_blocked == 429 and later == 200, figures


def test_16_websocket_auth_messages_with_wrong_tokens_count_too(server):
    import websocket

    guesser = "127.0.0.21"
    codes = []
    for _ in range(AUTH_FAILURES * WORKERS + 4):
        sock = tls_from(server, guesser)
        sock.sendall(
            b"GET /api/v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        status, _, body = read_response(sock)
        if status == 101:
            sock.sendall(client_frame(b'{"type": "auth", "token": "WRONG"}'))
            opcode, payload = server_frame(sock)
            codes.append(int.from_bytes(payload[:2], "big") if opcode == 0x8 else opcode)
        else:
            json_error(status, body, 429, "too many wrong tokens")
            codes.append(status)
        sock.close()
    report("16 websocket: wrong tokens in auth messages", {"close_codes_then_statuses": codes})
    assert set(codes) <= {1008, 429} and codes.count(1008) <= AUTH_FAILURES * WORKERS, codes
    assert websocket  # the client library is at hand, as test_websocket needs


def test_16_wrong_token_counts_are_bounded_and_count_an_ipv6_subscriber_once():
    """In-process: however many addresses guess, a worker holds at most Guesses.MAX of them; an
    IPv6 client is counted by its /64, an IPv4 one mapped into IPv6 as itself."""
    import api

    guesses = api.Guesses(3, 60)
    started = time.process_time()
    for n in range(3 * api.Guesses.MAX):
        guesses.failed({"REMOTE_ADDR": f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"})
    per_failure_us = (time.process_time() - started) / (3 * api.Guesses.MAX) * 1e6
    held = len(guesses.windows), len(guesses.blocked)
    for n in range(3):
        guesses.failed({"REMOTE_ADDR": f"2001:db8:1:2::{n + 1}"})
    refused = []
    for address in ("2001:db8:1:2:ffff::9", "2001:db8:1:3::1", "::ffff:10.9.9.9", "10.9.9.9"):
        try:
            guesses.refuse({"REMOTE_ADDR": address})
            refused.append(False)
        except api.TooManyRequests:
            refused.append(True)
    report(
        "16 in-process: 30,000 guessing addresses",
        {"held": held, "per_failure_us": round(per_failure_us, 2), "refused": refused},
    )
    assert max(held) <= api.Guesses.MAX, held
    assert refused == [True, False, False, False], refused
    assert api.client_key("::ffff:10.0.0.1") == "10.0.0.1"
    assert api.client_key("2001:db8:1:2:aaaa::1") == api.client_key("2001:db8:1:2:bbbb::2")


def test_16_http_headers_options_and_redirects(server):
    port = server["port"]
    answers = {
        "health": call(server, "GET", "/health"),
        "predict": call(
            server,
            "POST",
            f"/api/v1/{TOKEN}/predict",
            json.dumps(PAYLOAD),
            {"Content-Type": "application/json"},
        ),  # fmt: skip
        "not found": call(server, "GET", "/nowhere"),
        "double slash, evil Host": call(
            server, "GET", "/api/v1/jobs//result", headers={"Host": "evil.example"}
        ),
    }
    for path in ("/", "/health", "/api/v1/predict", f"/api/v1/{TOKEN}/predict", "/api/v1/jobs"):
        answers[f"OPTIONS {path}"] = call(server, "OPTIONS", path)
    with tls_from(server) as sock:  # what gunicorn answers itself: a malformed request
        sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n")
        answer = b""
        with contextlib.suppress(OSError):
            while chunk := sock.recv(65536):
                answer += chunk
    answers["malformed"] = parse_response(answer)
    figures = {}
    for name, (status, headers, _) in answers.items():
        headers = {k.lower(): v for k, v in headers.items()}
        figures[name] = {
            "status": status,
            "hsts": headers.get("strict-transport-security"),
            "server": headers.get("server"),
            "location": headers.get("location"),
            "content_type": headers.get("content-type"),
        }
    report("16 REST: HSTS, Server, OPTIONS, a Host in a redirect", figures)
    for name, seen in figures.items():
        assert seen["hsts"] == "max-age=31536000", (name, seen)
        assert seen["server"] is None, (name, seen)
        assert seen["location"] is None or "evil" not in seen["location"], (name, seen)
        assert seen["content_type"] == "application/json", (name, seen)
    for name, (status, headers, body) in answers.items():
        if name.startswith("OPTIONS"):
            json_error(status, body, 405)
            assert "OPTIONS" not in {k.lower(): v for k, v in headers.items()}["allow"]
    json_error(answers["double slash, evil Host"][0], answers["double slash, evil Host"][2], 404)
    assert port


def test_16_tls_1_2_offers_only_forward_secret_aead_suites(server):
    def handshake(cipher, version=ssl.TLSVersion.TLSv1_2):
        client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        client.load_verify_locations(server["folder"] / "server.crt")
        client.minimum_version = client.maximum_version = version
        if cipher:
            client.set_ciphers(cipher)
        try:
            with (
                socket.create_connection(("127.0.0.1", server["port"]), timeout=5) as raw,
                client.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
            ):
                return sock.cipher()[0]
        except ssl.SSLError:
            return None

    cbc = ["ECDHE-ECDSA-AES128-SHA256", "ECDHE-ECDSA-AES256-SHA384", "ECDHE-ECDSA-AES128-SHA"]
    aead = ["ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-AES256-GCM-SHA384"]
    aead.append("ECDHE-ECDSA-CHACHA20-POLY1305")
    figures = {cipher: handshake(cipher) for cipher in cbc + aead}
    figures["TLS 1.3"] = handshake(None, ssl.TLSVersion.TLSv1_3)
    report("16 TLS: the suites TLS 1.2 agrees to", figures)
    assert all(figures[c] is None for c in cbc), figures
    assert all(figures[c] == c for c in aead), figures
    assert figures["TLS 1.3"] is not None
    time.sleep(0.5)
    log_is_clean(server)  # failed handshakes: no traceback


# The crowds, run as a script: python test_hostile_connections.py PORT CAFILE MODE ARGS...


async def idle_client(port, tls, address, until, counts):
    """Connect, finish TLS, send nothing; when the server closes the connection, again."""
    while time.monotonic() < until:
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=tls, local_addr=(address, 0), server_hostname="127.0.0.1"
            )
        except (TimeoutError, OSError):
            counts["failed"] += 1
            await asyncio.sleep(0.1)
            continue
        counts["made"] += 1
        counts["open"] += 1
        counts["most_open_at_once"] = max(counts["most_open_at_once"], counts["open"])
        with contextlib.suppress(OSError, asyncio.TimeoutError, ssl.SSLError):
            await asyncio.wait_for(reader.read(1), timeout=max(0.01, until - time.monotonic()))
        counts["open"] -= 1
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, asyncio.TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), timeout=1)


async def idle_crowd(port, tls, addresses, count, seconds):
    """count clients over the addresses, each idle after TLS, connecting again when closed."""
    counts = {"made": 0, "failed": 0, "open": 0, "most_open_at_once": 0}
    until, spread = time.monotonic() + float(seconds), addresses.split(",")
    await asyncio.gather(
        *(idle_client(port, tls, spread[n % len(spread)], until, counts) for n in range(count))
    )
    del counts["open"]
    return counts


async def upgrade_crowd(port, tls, addresses, count, token, hold):
    """count clients over the addresses connect; once all have, all send an upgrade at once;
    the statuses answered (or "dropped"), the connections held `hold` seconds."""
    go, statuses = asyncio.Event(), {}
    connected = []

    async def client(address):
        try:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=tls, local_addr=(address, 0), server_hostname="127.0.0.1"
            )
        except (OSError, ssl.SSLError):
            statuses["not connected"] = statuses.get("not connected", 0) + 1
            return
        connected.append(1)
        if len(connected) == count:
            go.set()
        await go.wait()
        auth = f"Authorization: Bearer {token}\r\n" if token else ""
        writer.write(
            (
                "GET /api/v1/ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade"
                "\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                f"{auth}\r\n"
            ).encode()
        )
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=20)
            status = line.split()[1].decode() if line else "dropped"
        except (TimeoutError, OSError, ssl.SSLError, IndexError):
            status = "dropped"
        statuses[status] = statuses.get(status, 0) + 1
        await asyncio.sleep(float(hold))
        writer.close()

    spread = addresses.split(",")
    tasks = [client(spread[n % len(spread)]) for n in range(count)]

    async def release():  # should a connect fail, the others go all the same
        await asyncio.sleep(10)
        go.set()

    waiter = asyncio.ensure_future(release())
    await asyncio.gather(*tasks)
    waiter.cancel()
    return statuses


def main(port, cafile, mode, *args):
    tls = ssl.create_default_context(cafile=cafile)
    run = {"idle": idle_crowd, "upgrade": upgrade_crowd}[mode]
    if mode == "idle":
        addresses, count, seconds = args
        figures = asyncio.run(run(int(port), tls, addresses, int(count), seconds))
    else:
        addresses, count, token, hold = args
        figures = asyncio.run(run(int(port), tls, addresses, int(count), token, hold))
    print(json.dumps(figures))


if __name__ == "__main__":
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    main(*sys.argv[1:])
