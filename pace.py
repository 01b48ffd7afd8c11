"""The pace a client must keep while the server holds something for it: a body or websocket
message it is sending (Arrival), an answer it is taking (send_all). One rule for every door that
reads from or writes to a client: REST and job bodies (api.BodyStream), websocket messages and
replies (ws.py), REST answers and job results (gunicorn.conf.py).

Whatever a transfer's size, each CLIENT_TIMEOUT must move at least CLIENT_TIMEOUT times
CLIENT_MIN_BYTES_PER_SECOND bytes of it until it ends. Without it, an allowance earned by bytes
already moved let a client hold what the server held for it at a trickle: 8 MiB sent at once but
for a byte, then a byte every 20 s, held an upload 157 s; a reader of 17 KiB every 25 s held a
23.6 MB answer for hours; a websocket message never finished, for good (issue 37, round 3).
"""

import contextlib
import socket
import struct
import time

import gevent

# Set by api.create_app from the settings (CLIENT_TIMEOUT, CLIENT_MIN_BYTES_PER_SECOND) before
# gunicorn forks its workers.
GRACE = 30
FLOOR = 16 * 1024


def configure(grace, floor):
    global GRACE, FLOOR
    GRACE, FLOOR = grace, floor


class Arrival:
    """When a body or message on its way must be done by: GRACE seconds and a second more for
    every `rate` bytes that have arrived (the average), and never more than GRACE after the
    last GRACE x FLOOR bytes began to arrive (every window), so that bytes sent at once do not
    buy a trickle after them."""

    __slots__ = ("started", "rate", "mark", "due")

    def __init__(self, rate, now=None):
        self.started = time.monotonic() if now is None else now
        self.rate, self.mark, self.due = rate, 0, self.started + GRACE

    def deadline(self, count):
        """When a transfer of which `count` bytes have arrived must be done by."""
        return min(self.started + GRACE + count / self.rate, self.due)

    def arrived(self, count, now):
        """Note that `count` bytes have arrived so far: a window's bytes move the window on."""
        if count - self.mark >= GRACE * FLOOR:
            self.mark, self.due = count, now + GRACE

    def describe(self, count, what):
        seconds = time.monotonic() - self.started
        return (
            f"{what} came too slowly or stalled: {count} bytes in {seconds:.0f} s; it may take "
            f"{GRACE} s "
            f"and a second more for every {self.rate} bytes, and must bring "
            f"{GRACE * FLOOR} bytes every {GRACE} s until it ends"
        )


class Slow(TimeoutError):
    """A client took too little of what it was sent, in time: cut off (gunicorn.conf.py and
    ws.py take a TimeoutError for a client to drop)."""


class Watch:
    """Samples what a client has acknowledged (Linux's TCP_INFO) every GRACE / 2 seconds while
    a send waits for it, and cuts it off (Slow, thrown into the sending greenlet) once the last
    GRACE seconds brought less than GRACE x FLOOR bytes. A timer, not a system call, is all it
    costs an answer that is sent at once: the first sample is taken half a window in."""

    __slots__ = ("sock", "greenlet", "timer", "samples", "blind")

    def __init__(self, sock):
        self.sock, self.greenlet, self.samples, self.blind = sock, gevent.getcurrent(), [], False
        self.timer = gevent.get_hub().loop.timer(GRACE / 2, GRACE / 2)
        self.timer.start(self.sample)

    def sample(self):
        taken = acknowledged(self.sock)
        if taken is None:  # nothing to go by: the socket's own time-out alone
            self.blind = True
            self.timer.close()
            return
        self.samples.append(taken)
        if len(self.samples) == 3:
            first = self.samples.pop(0)
            if taken - first < GRACE * FLOOR:
                self.timer.close()
                self.greenlet.throw(
                    Slow(f"took {taken - first} bytes in {GRACE} s, less than {GRACE * FLOOR}")
                )

    def stop(self):
        self.timer.close()


def send_all(sock, *pieces):
    """Send the pieces (bytes) in turn, as sendall() would, cutting the client off once it
    takes too little (Watch); a wait for room that times out (the socket's CLIENT_TIMEOUT) is
    no cut by itself while the client keeps the pace.

    gevent's sendall() gives a whole write CLIENT_TIMEOUT, and the kernel's buffer, megabytes on
    a fast link, may have no room for that long while a slow client drains it: a client reading
    a 13 MB job result at a steady 40 kB/s was cut off 30 s in. One reading 17 KiB every 25 s
    made room often enough never to time out, and held the answer for hours. (sendall() also
    asks the kernel its buffer's size on every call, a system call that send() does not make.)
    """
    watch = Watch(sock)
    try:
        for data in pieces:
            view = memoryview(data)
            while view:
                try:
                    view = view[sock.send(view) :]  # a TLS socket sends it all, waiting
                except Slow:
                    raise
                except TimeoutError:
                    if watch.blind:
                        raise
                    # the same view again: TLS wants the same buffer when it retries
    finally:
        watch.stop()


def reset_on_close(sock):
    """Have the socket's close reset the connection, dropping what the kernel still holds for a
    client cut off (megabytes a connection, counted against the container's memory), where a
    plain close would go on sending it at the client's trickle."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


def acknowledged(sock):
    """The bytes the client has acknowledged on this connection (Linux's TCP_INFO), or None."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 136)
    except (OSError, AttributeError):
        return None
    return struct.unpack_from("Q", info, 120)[0] if len(info) >= 128 else None
