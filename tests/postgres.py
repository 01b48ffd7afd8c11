"""A PostgreSQL server of a test's own (Debian's binaries, as .ci/run installs them): made in a
folder, started, stopped and started again on the same port, so that a test can take the database
away from the service and give it back."""

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from conftest import absent, free_port

BINARIES = sorted(Path("/usr/lib/postgresql").glob("*/bin"))


class Postgres:
    def __init__(self):
        if not BINARIES:
            absent(
                "PostgreSQL's server is absent (/usr/lib/postgresql/*/bin): "
                "apt-get install postgresql"
            )
        self.bin, self.port = BINARIES[-1], free_port()
        # PostgreSQL refuses to run as root: there, as Debian's postgres user.
        self.user = "postgres" if os.getuid() == 0 else pwd.getpwuid(os.getuid()).pw_name
        self.folder = Path(tempfile.mkdtemp(prefix="sentiment-pg-"))
        self.data = self.folder / "data"
        if os.getuid() == 0:
            shutil.chown(self.folder, self.user)
        self.run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def run(self, program, *args):
        command = [str(self.bin / program), *args]
        if os.getuid() == 0:
            command = ["runuser", "-u", self.user, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, check=True, cwd=self.folder)

    def start(self):
        options = f"-p {self.port} -h 127.0.0.1 -k {self.folder} -c fsync=off"
        log = str(self.folder / "server.log")
        self.run("pg_ctl", "-D", str(self.data), "-o", options, "-l", log, "-w", "start")

    def stop(self):
        self.run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def close(self):
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.contextmanager
def postgres():
    """A started server of its own; removed with its data at the end."""
    server = Postgres()
    try:
        server.start()
        yield server
    finally:
        server.close()
