"""The gRPC door's processes beside gunicorn: gunicorn.conf.py's hooks start them when gunicorn is
ready, send them HUP when it reloads and stop them when it exits; one that exits unasked is started
again after a back-off. Each is a fresh interpreter (v2/grpc_server.py), never a fork of gunicorn's
master: grpcio must start clean, outside gevent. This module imports no grpc itself.
"""

import contextlib
import errno
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import service
import v2

log = logging.getLogger("v2")
WATCH_SECONDS = 0.5
STEADY_SECONDS = 60  # up this long: no longer counted as failing


def in_use(host, port):
    """Whether something already listens on host:port (a second server with the same GRPC_PORT:
    several gRPC processes share the port, so each alone would not notice a stranger on it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return True
            raise
    return False


class Processes:
    """GRPC_WORKERS gRPC processes, on GRPC_PORT."""

    def __init__(self, settings):
        self.settings, self.count = settings, settings["GRPC_WORKERS"]
        self.processes, self.failures, self.stopping = {}, {}, False
        self.lock = threading.Lock()

    def start(self):
        if not self.count:
            return
        host, port = self.settings["HOST"], self.settings["GRPC_PORT"]
        if in_use(host, port):
            log.error(
                "GRPC_PORT %d on %s is in use: no gRPC door. Set GRPC_PORT to a free port "
                "(or GRPC_WORKERS=0) and restart",
                port,
                host,
            )
            return
        for index in range(self.count):
            self.spawn(index)
        threading.Thread(target=self.watch, daemon=True, name="grpc-processes").start()

    def spawn(self, index):
        env = {**os.environ, "PYTHONPATH": str(service.ROOT)}  # -m v2.grpc_server from anywhere
        command = [sys.executable, "-m", "v2.grpc_server"]
        # A session of its own: a signal to the terminal's or container's process group (Ctrl-C,
        # tini -g) reaches gunicorn's master alone, whose on_exit stops these after their calls;
        # were it to reach them too, the watcher would take their exit for a crash.
        process = subprocess.Popen(  # noqa: S603
            command, env=env, stdin=subprocess.DEVNULL, start_new_session=True
        )
        process.started = time.monotonic()
        self.processes[index] = process
        log.info("started gRPC process %d (pid %d)", index, process.pid)

    def watch(self):
        """Start again a process that exited, after a back-off that doubles with each exit in a
        row (1 s to a minute), so one that cannot start says why a few times, not in a loop."""
        due = {}
        while not self.stopping:
            time.sleep(WATCH_SECONDS)
            with self.lock:
                for index, process in list(self.processes.items()):
                    if self.stopping or process.poll() is None:
                        if time.monotonic() - process.started > STEADY_SECONDS:
                            self.failures.pop(index, None)
                        continue
                    if index not in due:
                        # gunicorn's master reaps every child it has (os.waitpid(-1)), so the
                        # status is often lost: poll() then says 0.
                        code = process.returncode
                        how = f"killed by signal {-code}" if code < 0 else "exited"
                        how += f" with {code}" if code > 0 else ""
                        self.failures[index] = self.failures.get(index, 0) + 1
                        wait = min(60, 2 ** (self.failures[index] - 1))
                        log.warning(
                            "gRPC process %d %s; starting it again in %d s", index, how, wait
                        )
                        due[index] = time.monotonic() + wait
                    elif time.monotonic() >= due[index]:
                        del due[index]
                        self.spawn(index)

    def signal(self, number):
        for process in self.processes.values():
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(number)

    def reload(self):
        """HUP: each reads the tokens, the models and the certificate again, as gunicorn does."""
        with self.lock:
            self.signal(signal.SIGHUP)

    def terminate(self):
        """TERM, starting none again: each stops taking calls and answers those in flight."""
        self.stopping = True
        with self.lock:
            self.signal(signal.SIGTERM)

    def stop(self, seconds):
        """TERM, then wait up to `seconds` for each to exit, then KILL."""
        self.terminate()
        with self.lock:
            deadline = time.monotonic() + seconds
            for process in self.processes.values():
                try:
                    process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def start():
    """Start the gRPC processes make api-start serves beside gunicorn; return their supervisor."""
    service.setup_logging(log)
    settings = service.load(v2.DOOR)
    processes = Processes(settings)
    processes.start()
    return processes
