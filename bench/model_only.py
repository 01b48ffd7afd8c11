"""The model with no API around it: the floor's Flask app, parsing the body and labelling it with no
token check, validation, request id, log line or metrics. Served like the floor by `make bench`, it
shows how much of the gap between the service and the floor is the model's own cost."""

import json

from flask import Flask, request

import model

loaded = model.load()
app = Flask(__name__)
app.json.sort_keys = False


@app.post("/api/v1/<token>/predict")
def predict(token):
    tweets = json.loads(request.get_data())
    return dict(zip(tweets, loaded.run(list(tweets.values())), strict=True))
