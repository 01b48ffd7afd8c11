"""The job workers make api-start supervises (gunicorn.conf.py): started with the API, started
again when one dies, stopped with it, restarted on HUP so that they load the new model."""

import contextlib
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import service

log = logging.getLogger("jobs")
# How a worker is started: `python -m jobs` in the project folder (jobs/__main__.py).
COMMAND = [sys.executable, "-m", "jobs"]


class LocalWorkers:
    """Supervise JOB_WORKERS_WITH_API worker processes beside the API."""

    def __init__(self, settings):
        self.count = settings["JOB_WORKERS_WITH_API"]
        self.port = settings["WORKER_METRICS_PORT"]
        self.processes, self.stopping = {}, False
        self.restarting = set()  # TERMed on HUP: their exit is expected
        self.failures = {}  # index: exits in a row that were not asked for, for the back-off
        self.lock = threading.Lock()

    def start(self):
        for index in range(self.count):
            self.spawn(index)
        if self.count:
            threading.Thread(target=self.watch, daemon=True, name="job-workers").start()

    def spawn(self, index):
        # The API's own metrics files are not the worker's: it serves its metrics on its port.
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("PROMETHEUS_MULTIPROC_DIR", "METRICS_DIR_MADE_HERE")
        }
        env["WORKER_METRICS_PORT"] = str(self.port + index)
        process = subprocess.Popen(  # noqa: S603
            COMMAND, cwd=service.ROOT, env=env, stdin=subprocess.DEVNULL
        )
        process.started = time.monotonic()
        self.processes[index] = process
        log.info("started job worker %d (pid %d)", index, process.pid)

    def watch(self):
        """Start again a worker that exited: at once after a HUP, else after a back-off that
        doubles with each exit in a row (1 s to a minute), so a worker that cannot start says why
        a few times, not in a loop."""
        due = {}
        while not self.stopping:
            time.sleep(0.5)
            with self.lock:
                for index, process in list(self.processes.items()):
                    if self.stopping or process.poll() is None:
                        continue
                    if index in self.restarting:
                        self.restarting.discard(index)
                        log.info("job worker %d stopped to load the new model", index)
                        self.spawn(index)
                        continue
                    if index not in due:
                        code = process.returncode
                        how = f"killed by signal {-code}" if code < 0 else f"exited with {code}"
                        self.failures[index] = self.failures.get(index, 0) + 1
                        wait = min(60, 2 ** (self.failures[index] - 1))
                        log.warning("job worker %d %s; starting it again in %d s", index, how, wait)
                        due[index] = time.monotonic() + wait
                    elif time.monotonic() >= due[index]:
                        del due[index]
                        self.spawn(index)
                for index, process in self.processes.items():  # up a minute: no longer failing
                    if process.poll() is None and time.monotonic() - process.started > 60:
                        self.failures.pop(index, None)

    def restart(self):
        """TERM each worker (it finishes its chunk); the watcher starts new ones."""
        with self.lock:
            for index, process in self.processes.items():
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
                    self.restarting.add(index)

    def stop(self, seconds=8):
        self.stopping = True
        with self.lock:
            for process in self.processes.values():
                with contextlib.suppress(ProcessLookupError):
                    process.send_signal(signal.SIGTERM)
            deadline = time.monotonic() + seconds
            for process in self.processes.values():
                try:
                    process.wait(max(0.1, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
