"""Every shell session printed in README.md and docs/ (the lines that start with "$ ") runs here
against a real `make api-start`, and prints what the page shows, so the pages cannot go stale.

Output is compared with its lines joined (the pages wrap long JSON) and "..." standing for anything
the page leaves out. The longer examples of one door (websocket, jobs, ZeroRPC, Kafka) run in that
door's tests, from the same pages.
"""

import os
import re
import shutil
import subprocess
import time

import pytest
from conftest import ROOT, running_server, shared_file

import aliases
import reference

pytestmark = pytest.mark.slow
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


# Sessions under these marks run elsewhere, against what they need (several replicas:
# tests/test_cluster.py), not against this module's one server.
ELSEWHERE = ("cluster",)


def sessions(pages=PAGES, mark=None):
    """Yield (page, line, command, expected output) for each "$ " command of the pages: those of
    the blocks under `<!-- test: mark -->` if a mark is given, else all but those of ELSEWHERE."""
    for page in pages:
        lines = page.read_text().splitlines()
        n, inside, above, block = 0, False, None, None
        while n < len(lines):
            line = lines[n]
            if line.startswith("<!-- test:"):
                above = line.removeprefix("<!-- test:").removesuffix("-->").strip()
            elif line.startswith("```"):
                inside = not inside
                block, above = (above if inside else None), None
            if not line.startswith("$ ") or (block != mark if mark else block in ELSEWHERE):
                n += 1
                continue
            start, command = n + 1, [line[2:]]
            while command[-1].endswith("\\"):
                n += 1
                command.append(lines[n])
            n += 1
            output = []
            while n < len(lines) and not lines[n].startswith(("$ ", "```")):
                output.append(lines[n])
                n += 1
            yield page.relative_to(ROOT), start, "\n".join(command), "\n".join(output)


SESSIONS = list(sessions())
# Sessions under `<!-- test: labelled -->` print what the guard reads from the labelled reference
# set, a file of ../shared that a fresh clone lacks: without it they are skipped, outside CI only.
LABELLED = {(page, line) for page, line, *_ in sessions(mark="labelled")}


def matches(expected, actual):
    """Whether the output matches the page's, lines joined, "..." for anything.

    A page wraps a long line where the output has a space or nothing: a wrap matches either."""
    joined = "\n".join(line.rstrip() for line in expected.splitlines())
    pattern = ".*?".join(re.escape(part).replace("\\\n", " ?") for part in joined.split("..."))
    return re.fullmatch(pattern, "".join(line.rstrip() for line in actual.splitlines())) is not None


def test_the_pages_have_sessions_to_run():
    assert len(SESSIONS) >= 6
    assert {str(page) for page, *_ in SESSIONS} >= {"README.md", "docs/models.md", "docs/rest.md"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("docs")
    shutil.copy(ROOT / "payload.json", folder / "payload.json")
    with running_server(folder) as started:  # no API_TOKEN: the token file, as a newcomer has
        yield started


@pytest.mark.parametrize(
    "page, line, command, expected", SESSIONS, ids=[f"{p}:{n}" for p, n, *_ in SESSIONS]
)
def test_each_session_prints_what_the_page_shows(server, page, line, command, expected):
    if (page, line) in LABELLED:
        shared_file(reference.REFERENCE_FILE)
    folder = server["folder"]
    out = {"labels.csv": str(folder / "labels.csv")}  # files a session writes: not in the project
    out["labels.errors.csv"] = str(folder / "labels.errors.csv")
    for name, path in out.items():
        command = re.sub(rf"(?<![\w/.]){re.escape(name)}", path, command)
        expected = re.sub(rf"(?<![\w/.]){re.escape(name)}", path, expected)
    command = command.replace("localhost:5000", f"localhost:{server['port']}")
    if command.startswith("make train"):  # the model's folder: the test's, not the project's
        made = folder / "my-model"
        command += f" OUT={made}"
        expected = expected.replace("artifacts/my-model", str(made))
    # make runs in the project (the data path is relative to it); curl beside the token file.
    cwd = ROOT if command.startswith("make ") else folder
    # As a terminal runs it: not as a child of `make test` (a nested make names its directory).
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    # make's targets that talk to the server (make promote) find it as in the server's folder.
    env.update(
        PORT=str(server["port"]),
        TLS_CERT=str(folder / "server.crt"),
        API_TOKEN_FILE=str(folder / ".api_token"),
        ADMIN_TOKEN_FILE=str(folder / ".admin_token"),
    )
    result = subprocess.run(
        ["bash", "-c", command], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    if re.search(r"make (candidate|promote|rollback)|/aliases/", command):
        time.sleep(2 * aliases.REFRESH_SECONDS)  # every worker follows, as the page says
    printed = result.stdout.replace("\r", "")
    # What a terminal shows: the output, then (make score) the lines on standard error.
    assert matches(expected, printed) or matches(expected, printed + result.stderr), (
        f"{page}:{line} printed\n{printed}{result.stderr}\nnot\n{expected}"
    )
