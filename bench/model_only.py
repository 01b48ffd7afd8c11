"""The model with no API around it: a WSGI callable, served like the floors by `make bench`, that
parses the body and labels it with no framework, token check, validation, request id, log line or
metrics. Beside the bare floor it shows the model's own cost; beside the service, the API's."""

import json

import registry

loaded = registry.load_one().get().model


def app(environ, start_response):
    tweets = json.loads(environ["wsgi.input"].read(int(environ["CONTENT_LENGTH"])))
    labels = dict(zip(tweets, loaded.run(list(tweets.values())), strict=True))
    body = (json.dumps(labels, separators=(",", ":")) + "\n").encode()
    start_response(
        "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
    )
    return [body]
