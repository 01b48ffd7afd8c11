"""The batch-jobs door: submit up to a million tweets, get a job id at once, fetch the labels later.

    make api-start                          # serves /api/v1/jobs and supervises a local worker
    make worker-start                       # one more worker (python -m jobs), here or elsewhere

The API streams a job's tweets into the job store in chunks, checking each with the shared
contract, then sends one Celery task per chunk to the broker. Workers label a chunk with the same
contract and model, store its answers (a chunk done twice is stored once), and the job is done when
every chunk is.

Production: RabbitMQ as the broker (BROKER_URL=amqp://...) and PostgreSQL as the store
(JOB_STORE_URL=postgresql+psycopg://...), so every API replica and worker sees the same jobs. The
embedded default needs no server: both on SQLite files in JOBS_DIR, one machine only.

One module per part: settings (the door's own), store (the tables), worker (Celery, the sweep,
main), routes (HTTP), bodies (a job's body read and its result written as they stream),
supervisor (the workers make api-start runs beside the API).
"""

from jobs.bodies import csv_parts, csv_result, json_parts, json_result
from jobs.routes import routes
from jobs.settings import DEFAULTS, DOOR, settings_of
from jobs.store import CHUNKS, JOBS, Store
from jobs.supervisor import LocalWorkers
from jobs.worker import SENT_AGAIN, Worker, main

__all__ = [
    "CHUNKS",
    "DEFAULTS",
    "DOOR",
    "JOBS",
    "SENT_AGAIN",
    "LocalWorkers",
    "Store",
    "Worker",
    "csv_parts",
    "csv_result",
    "json_parts",
    "json_result",
    "main",
    "routes",
    "settings_of",
]
