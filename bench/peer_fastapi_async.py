"""The stronger FastAPI peer: what FastAPI's documentation points performance-minded users to. An
`async def` endpoint (no hop to a thread pool), the body still validated as dict[str, str], the
answer as ORJSONResponse, the token in the path checked with hmac.compare_digest; run on uvicorn
with uvloop, httptools and no access log, 2 workers. The same model as the service's default (the
registry's), loaded once per worker. Runs in the benchmark's environment, requirements-bench.txt.
"""

import hmac
import os
from contextlib import asynccontextmanager

from fastapi import FastAPI, HTTPException
from fastapi.responses import ORJSONResponse

import registry

TOKEN = os.environ["API_TOKEN"].encode()
state = {}


@asynccontextmanager
async def lifespan(app):
    state["model"] = registry.load_one().get().model
    yield


app = FastAPI(lifespan=lifespan, default_response_class=ORJSONResponse)


@app.post("/api/v1/{token}/predict")
async def predict(token: str, tweets: dict[str, str]) -> ORJSONResponse:
    if not hmac.compare_digest(token.encode(), TOKEN):
        raise HTTPException(status_code=404)
    return ORJSONResponse(dict(zip(tweets, state["model"].run(list(tweets.values())), strict=True)))
