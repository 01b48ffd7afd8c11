"""The jobs door's HTTP routes, registered by api.create_app on the same token rules as predict.

The API streams a job's tweets into the job store in chunks, checking each with the shared
contract, then sends one Celery task per chunk to the broker. Web requests never wait on Celery:
they only store and send, and read the job store.
"""

import array
import io
import json
import logging
import secrets
import sys
import time

import prometheus_client
import sqlalchemy as sa
from flask import Blueprint, Response, current_app, jsonify, request
from prometheus_client.core import GaugeMetricFamily
from werkzeug.exceptions import (
    Conflict,
    HTTPException,
    NotFound,
    RequestEntityTooLarge,
    ServiceUnavailable,
    TooManyRequests,
    UnsupportedMediaType,
)

import contract
from jobs.bodies import csv_parts, csv_result, json_parts, json_result
from jobs.store import CHUNKS, JOBS, Store, add_usage, reckoned, remove
from jobs.worker import configure, send

log = logging.getLogger("jobs")


class InsufficientStorage(HTTPException):
    code, description = 507, "the job store is full; try again later"


def routes(require_token, parse_options, body_stream, settings, resolve, budget):
    """The jobs API as a blueprint, a registry of its metrics, and its store.

    require_token refuses a request without a valid token, and leaves its holder's id (a hash of
    the token) in the environ as "api.client"; parse_options reads the query options as the
    predict route does; body_stream(environ, limit) is the body as a stream that refuses to go
    past limit bytes; resolve(name, version) is the registry.Served a job pins (the default
    for None); budget is the worker's bytes in flight (api.IN_FLIGHT), which what an upload
    holds counts against.
    """
    configure(settings)
    store = Store(settings["JOB_STORE_URL"])
    try:
        store.create()
    except sa.exc.OperationalError as e:  # unreachable: made at first use (Store.ready)
        log.warning("the job store cannot be reached: %s", unreachable(e))
    collector = prometheus_client.CollectorRegistry()
    collector.register(Metrics(store))
    jobs = Blueprint("jobs", __name__)
    jobs.before_request(require_token)

    @jobs.errorhandler(sa.exc.OperationalError)
    def store_down(error):
        """The store cannot be reached (PostgreSQL down): 503, and try again."""
        log.warning("the job store cannot be reached: %s", unreachable(error))
        refusal = ServiceUnavailable("the job store cannot be reached; try again later")
        refusal.retry_after = 5
        return current_app.handle_http_exception(refusal)  # the app's own JSON error

    @jobs.post("/api/v1/jobs")
    def submit():
        """Store a job's tweets (JSON object or CSV) chunk by chunk, then queue them: 202."""
        options = parse_options(("model", "version"))
        served = resolve(request.args.get("model"), request.args.get("version"))
        reader = {"application/json": json_parts, "text/csv": csv_parts}.get(request.mimetype)
        if reader is None:
            raise UnsupportedMediaType(
                "Content-Type must be application/json or text/csv, "
                f"got {request.mimetype or 'none'}"
            )
        limit, length = settings["MAX_JOB_BODY_BYTES"], request.content_length
        if length is not None and length > limit:  # before anything is read, as predict does
            raise RequestEntityTooLarge(f"the body must be at most {limit} bytes, got {length}")
        owner = request.environ["api.client"]
        if store.active(owner) >= settings["JOB_MAX_ACTIVE"]:
            raise TooManyRequests(
                f"at most {settings['JOB_MAX_ACTIVE']} unfinished jobs per token: wait for one to "
                "finish, or cancel one",
                retry_after=10,
            )
        if store.jobs(owner) >= settings["JOB_MAX_PER_TOKEN"]:
            raise TooManyRequests(
                f"at most {settings['JOB_MAX_PER_TOKEN']} jobs per token in the store: delete "
                f"some, or wait for them to expire ({settings['JOB_TTL_HOURS']} h after "
                "submission)",
                retry_after=60,
            )
        store.make_usage(owner)
        room(store.size(), store.size(owner))
        body = io.BufferedReader(body_stream(request.environ, settings["MAX_JOB_BODY_BYTES"]))
        job_id, now = secrets.token_hex(16), time.time()
        stale = settings["JOB_UPLOAD_STALE_SECONDS"]
        with store.begin() as db:
            db.execute(
                sa.insert(JOBS).values(
                    id=job_id,
                    status="receiving",
                    tweets=0,
                    chunks=0,
                    options=json.dumps(options),
                    created_at=now,
                    expires_at=now + stale,  # moved on with each chunk while it is received
                    owner=owner,
                    model=served.name,
                    model_version=served.version,
                )
            )
        held = Upload(budget)
        try:
            count, number = 0, 0
            lease = now + settings["JOB_LEASE_SECONDS"]
            parts = reader(
                body, settings["JOB_CHUNK_TWEETS"], settings["JOB_CHUNK_CHARS"], settings, held
            )
            for part in checked(parts, settings, held):
                text = json.dumps(list(part.items()), ensure_ascii=False)
                size, charge = len(part), len(text) + reckoned(part, options["explain"])
                part = None
                held.take(sys.getsizeof(text))
                with store.begin() as db:
                    db.execute(
                        sa.insert(CHUNKS).values(
                            job_id=job_id,
                            number=number,
                            size=size,
                            tweets=text,
                            done=False,
                            attempts=0,
                            lease_until=lease,
                            charge=charge,
                        )
                    )
                    room(*add_usage(db, owner, charge))  # 507 rolls the chunk back
                    db.execute(
                        sa.update(JOBS)
                        .where(JOBS.c.id == job_id)
                        .values(expires_at=time.time() + stale)
                    )
                held.give(sys.getsizeof(text))
                text = None
                count, number = count + size, number + 1
                time.sleep(0)  # under gevent, let the worker's other requests run between chunks
            if count == 0:
                raise contract.BadInput('the job must hold at least one tweet: {"id": "text"}')
            with store.begin() as db:
                db.execute(
                    sa.update(JOBS)
                    .where(JOBS.c.id == job_id)
                    .values(
                        status="queued",
                        tweets=count,
                        chunks=number,
                        expires_at=now + settings["JOB_TTL_HOURS"] * 3600,
                    )
                )
            send([(job_id, n) for n in range(number)])
        except BaseException:
            with store.begin() as db:
                remove(db, [job_id])
            raise
        finally:
            held.close()
        request.environ["api.tweets"] = count
        response = jsonify(
            job_id=job_id,
            status="queued",
            tweets=count,
            model=served.name,
            model_version=served.version,
        )
        response.status_code = 202
        response.headers["Location"] = f"/api/v1/jobs/{job_id}"
        return response

    def room(total, owners):
        """507 when the store, or this token's share of it, is full."""
        if total > settings["JOB_STORE_MAX_CHARS"]:
            raise InsufficientStorage()
        if owners > settings["JOB_STORE_MAX_CHARS_PER_TOKEN"]:
            raise InsufficientStorage(
                f"this token's jobs hold as much of the store as a token may "
                f"(JOB_STORE_MAX_CHARS_PER_TOKEN, {settings['JOB_STORE_MAX_CHARS_PER_TOKEN']} "
                "characters of tweets and answers): delete some, or wait for them to expire"
            )

    def found(job_id):
        job = store.job(job_id, request.environ["api.client"])
        if job is None:
            raise NotFound(f"no job {job_id!r}: it is unknown, or it expired and was removed")
        return job

    @jobs.get("/api/v1/jobs/<job_id>")
    def status(job_id):
        """A job's state, progress and times; for a failure, its reason."""
        job = found(job_id)
        answer = {
            "job_id": job_id,
            "status": job["status"],
            "tweets": job["tweets"],
            "done_tweets": job["done_tweets"],
            "options": json.loads(job["options"]),
            "model": job["model"],
            "model_version": job["model_version"],
        }
        for moment in ("created_at", "started_at", "finished_at", "expires_at"):
            answer[moment] = iso(job[moment])
        if job["status"] == "failed":
            answer["reason"] = job["reason"]
        return answer

    @jobs.get("/api/v1/jobs/<job_id>/result")
    def result(job_id):
        """The labels, streamed: the predict route's JSON shape, or CSV (id,label,score)."""
        job = found(job_id)
        if job["status"] != "done":
            raise Conflict(f"the job is {job['status']}, not done: its result is not ready")
        options = json.loads(job["options"])
        wants_csv = request.accept_mimetypes.best_match(["application/json", "text/csv"])
        if wants_csv == "text/csv":
            return Response(csv_result(store.answers(job_id)), mimetype="text/csv")
        return Response(json_result(store.answers(job_id), options), mimetype="application/json")

    @jobs.delete("/api/v1/jobs/<job_id>")
    def cancel(job_id):
        """Cancel the job and delete its tweets and answers at once."""
        found(job_id)
        store.cancel(job_id)
        return {"job_id": job_id, "status": "cancelled"}

    return jobs, collector, store


def iso(moment):
    return None if moment is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


def checked(parts, settings, held):
    """Check each part of a job with the contract as it arrives; ids must be unique in the job
    (Seen, in `held`)."""
    seen, count = Seen(), 0
    for part in parts:
        seen.look(part)
        contract.check_part(part, settings, seen, count, settings["MAX_JOB_TWEETS"])
        held.take(Seen.BYTES * len(part))
        count += len(part)
        yield part
        del part  # held no more while the next part is read


class Upload:
    """What a job upload holds, in the worker's budget (api.IN_FLIGHT): the part being read,
    the text of the chunk being stored, the ids seen. 503 past the budget; all of it given back
    when the upload ends, whichever way.

    Job bodies were outside the budget: 4 uploads held 917 MB in parts (issue 37, round 3)."""

    def __init__(self, budget):
        self.budget, self.bytes = budget, 0

    def take(self, size):
        if not self.budget.take(size):
            raise ServiceUnavailable(
                "this worker holds as much for its clients as it may (MAX_INFLIGHT_BYTES); "
                "send the job again later"
            )
        self.bytes += size

    def give(self, size):
        self.budget.give(size)
        self.bytes -= size

    def close(self):
        self.budget.give(self.bytes)
        self.bytes = 0


class Seen:
    """The ids of a job's earlier parts, for contract.check_part (`id in seen`, then
    update(part)), as their 64-bit hashes in an array: 8 bytes an id, where a set of the ids
    took 90 bytes and more (a million short ids, 90 MB; long ones of emoji, a GB). look(part)
    finds a part's ids among them in one pass in C: 30 ms for a part against a million.

    Two ids with one hash would be taken for one, refusing the job: Python's string hash is
    keyed at random when the server starts, so no client can make that happen, and by chance it
    has about 1 in 30 million for a job of a million tweets."""

    BYTES = 8

    def __init__(self):
        self.hashes, self.coming, self.repeated = array.array("q"), {}, ()

    def look(self, part):
        self.coming = {hash(i): i for i in part}
        if self.coming.keys().isdisjoint(self.hashes):
            self.repeated = ()
        else:
            self.repeated = {self.coming[h] for h in self.hashes if h in self.coming}

    def __contains__(self, tweet_id):
        return tweet_id in self.repeated

    def update(self, part):
        """Add the part look() was last given."""
        self.hashes.extend(self.coming)
        self.coming = {}


class Metrics:
    """Prometheus collector: jobs by state and the backlog, read from the store at each scrape."""

    def __init__(self, store):
        self.store = store

    def collect(self):
        try:
            states, chunks, tweets = self.store.counts()
        except sa.exc.OperationalError as e:  # the store down: the other metrics still served
            log.warning("the job store cannot be reached: %s", unreachable(e))
            return
        jobs = GaugeMetricFamily("api_jobs", "Jobs in the store, by state", labels=["state"])
        for state, count in states.items():
            jobs.add_metric([state], count)
        yield jobs
        yield GaugeMetricFamily("api_jobs_queue_chunks", "Chunks not yet labelled", value=chunks)
        yield GaugeMetricFamily("api_jobs_queue_tweets", "Tweets not yet labelled", value=tweets)


def unreachable(error):
    """The first line of the database's complaint (no password is in it)."""
    return str(getattr(error, "orig", error)).strip().splitlines()[0]
