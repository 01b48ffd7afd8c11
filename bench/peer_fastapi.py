"""A peer for the benchmark: the same model.py behind FastAPI on uvicorn, as its documentation
suggests (a lifespan that loads the model once, a path parameter, JSON in and out), with the token
check and no limits or metrics. Runs in the benchmark's own environment (requirements-bench.txt)."""

import hmac
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException

import registry

TOKEN = os.environ["API_TOKEN"].encode()
state = {}


@asynccontextmanager
async def lifespan(app):
    state["model"] = registry.load_one().get().model
    yield


app = FastAPI(lifespan=lifespan)


@app.post("/api/v1/{token}/predict")
def predict(token: str, tweets: dict[str, str]) -> dict[str, str]:
    if not hmac.compare_digest(token.encode(), TOKEN):
        raise HTTPException(status_code=404)
    return dict(zip(tweets, state["model"].run(list(tweets.values())), strict=True))
