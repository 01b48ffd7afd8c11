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
