"""The floors: the same gunicorn answering the predict route with a constant, no model.

`app` is a Flask app (the floor the service is measured against); `bare` is a WSGI callable with
no framework at all: what gunicorn, gevent and TLS cost alone.
"""

import json

from flask import Flask

ANSWER = {str(i): "Positive" for i in range(1, 9)}
ANSWER_BYTES = (json.dumps(ANSWER, separators=(",", ":")) + "\n").encode()

app = Flask(__name__)
app.json.sort_keys = False


@app.post("/api/v1/<token>/predict")
def predict(token):
    return ANSWER


def bare(environ, start_response):
    """The same answer, from WSGI alone."""
    headers = [("Content-Type", "application/json"), ("Content-Length", str(len(ANSWER_BYTES)))]
    start_response("200 OK", headers)
    return [ANSWER_BYTES]


async def lifespan(receive, send):
    """ASGI's lifespan, for an app with nothing to start or stop."""
    while (await receive())["type"] != "lifespan.shutdown":
        await send({"type": "lifespan.startup.complete"})
    await send({"type": "lifespan.shutdown.complete"})


async def bare_asgi(scope, receive, send):
    """The same answer, from ASGI alone: what gunicorn's own `asgi` worker and TLS cost."""
    if scope["type"] == "lifespan":
        return await lifespan(receive, send)
    more = True
    while more:
        more = (await receive()).get("more_body", False)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", b"%d" % len(ANSWER_BYTES)),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": ANSWER_BYTES})
