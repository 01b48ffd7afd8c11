"""What every door's process shares: settings from the environment, and JSON log lines.

The settings every door reads are SHARED, loaded here (load()); each door adds its own as a Door
(jobs.settings.DOOR, api.DOOR, ...). The rules of a prediction live in contract.py, not here.
"""

import functools
import hashlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import aliases
import contract
import registry

ROOT = Path(__file__).resolve().parent
SHARED = {
    "API_TOKEN": "",  # comma-separated; empty means: read API_TOKEN_FILE
    "API_TOKEN_FILE": str(ROOT / ".api_token"),
    "MODELS_FILE": str(registry.MODELS_FILE),  # the models served, and the default
    "ALIASES_FILE": str(aliases.ALIASES_FILE),  # stable, candidate, previous (aliases/)
    # A postgresql:// URI: where several replicas keep the aliases, the guard's counts and the
    # jobs. Empty: ALIASES_FILE and the embedded job store, one machine.
    "DATABASE_URL": "",
    **contract.LIMITS,
    "MAX_BODY_BYTES": 8 * 1024 * 1024,  # a REST body, a websocket message, an RPC call
}


def client_id(token):
    """A token's holder, as jobs and quotas know it: the start of the token's SHA-256, which
    reveals nothing of it."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class CutShort(BaseException):  # noqa: N818 (not an error of the request's: the server's word)
    """A streamed answer that cannot be finished (its job was deleted meanwhile, say). The WSGI
    server drops the connection (gunicorn.conf.py), so the client sees a broken transfer, never
    a complete-looking one. A BaseException, so that no handler on the way answers it."""


class Settings(dict):
    """A door's settings: its defaults, then the environment, then what the caller passes."""

    @classmethod
    def load(cls, defaults, config=None, zero_allowed=()):
        """zero_allowed: whole-number settings that may be 0; the others must be above 0."""
        settings = cls(defaults)
        for key in defaults.keys() & os.environ.keys():
            value = os.environ[key]
            if isinstance(defaults[key], int):
                least = 0 if key in zero_allowed else 1
                if not value.isdigit() or int(value) < least:
                    what = "0 or more" if least == 0 else "above 0"
                    raise RuntimeError(f"{key} must be a whole number {what}, got {value!r}")
                value = int(value)
            settings[key] = value
        settings.update(config or {})
        return settings

    def tokens(self, key="API_TOKEN", what="API token", required=True):
        """Return the valid tokens: the setting `key` (API_TOKEN), or else the lines or commas of
        the file its `key`_FILE names. Not required (ADMIN_TOKEN): [] when neither is set."""
        raw = self[key]
        if not raw:
            path = Path(self[f"{key}_FILE"])
            try:
                raw = path.read_text(encoding="utf-8")
            except OSError as e:
                if not required and isinstance(e, FileNotFoundError):
                    return []
                raise RuntimeError(
                    f"no {what}: set {key} or create {path} (make api-start does): {e.strerror}"
                ) from None
        tokens = [t.strip() for t in raw.replace("\n", ",").split(",") if t.strip()]
        if not tokens and required:
            raise RuntimeError(f"no {what}: {key} and the token file are empty")
        return [t.encode() for t in tokens]


class Door(NamedTuple):
    """A door's own settings: defaults added to SHARED, the whole numbers among them that may be
    0, and finish(settings), which works out what follows from the loaded settings."""

    defaults: dict
    zero_allowed: frozenset = frozenset()
    finish: Callable | None = None


def defaults(*doors):
    """SHARED and the doors' own defaults: every setting a process serving them reads."""
    return {**SHARED, **{k: v for door in doors for k, v in door.defaults.items()}}


def load(*doors, config=None):
    """The settings of a process serving these doors: SHARED and the doors' defaults, then the
    environment, then config; then each door finishes its own."""
    zero_allowed = set().union(*(door.zero_allowed for door in doors))
    settings = Settings.load(defaults(*doors), config, zero_allowed=zero_allowed)
    for door in doors:
        if door.finish is not None:
            door.finish(settings)
    return settings


METRICS_PORTS_TRIED = 16


def serve_metrics(host, port, setting):
    """Serve this process's Prometheus metrics on the first free port from `port` on, so that
    several processes of a door run side by side with the defaults; return the port. Fails in
    one line naming the setting when none of METRICS_PORTS_TRIED is free."""
    import prometheus_client

    for candidate in range(port, port + METRICS_PORTS_TRIED):
        try:
            prometheus_client.start_http_server(candidate, host)
            return candidate
        except OSError:
            continue
    last = port + METRICS_PORTS_TRIED - 1
    raise RuntimeError(f"ports {port} to {last} on {host} are all in use: set {setting} to another")


@functools.lru_cache(maxsize=1)
def local_time(second):
    """A log line's time, local with its offset: made once a second, not once a line."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(second))


QUOTE = json.encoder.encode_basestring_ascii  # a str as json.dumps writes it


def json_value(value):
    """A field's value as json.dumps writes it: the common kinds at once, the rest by json."""
    kind = type(value)
    if kind is str:
        return QUOTE(value)
    if kind is int or (kind is float and math.isfinite(value)):
        return repr(value)
    return json.dumps(value)


def json_line(level, message, fields):
    """Return a log line: one JSON object with the time, level, message and fields, as
    json.dumps writes it, without json.dumps's set-up for every call (a REST worker writes one
    per request: 2.5 µs here against 4.4)."""
    if "time" in fields or "level" in fields or "message" in fields:
        raise ValueError("a field may not be named time, level or message")
    rest = "".join([f", {QUOTE(key)}: {json_value(value)}" for key, value in fields.items()])
    head = f'{{"time": "{local_time(int(time.time()))}", "level": {QUOTE(level)}'
    return f'{head}, "message": {QUOTE(message)}{rest}}}\n'


class JSONFormatter(logging.Formatter):
    """Format a record as one JSON line with its extra fields, as request lines are written."""

    FIELDS = ("request_id", "route")

    def format(self, record):
        fields = {f: getattr(record, f) for f in self.FIELDS if hasattr(record, f)}
        if record.exc_info:
            fields["exception"] = self.formatException(record.exc_info)
        return json_line(record.levelname.lower(), record.getMessage(), fields).rstrip("\n")


def setup_logging(log):
    """Send a logger's records to standard error as JSON lines, once."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JSONFormatter())
        log.addHandler(handler)
        log.setLevel(os.environ.get("LOG_LEVEL", "INFO").upper())
        log.propagate = False
    return log
