"""The floor: the same Flask and gunicorn answering the predict route with a constant, no model."""

from flask import Flask

ANSWER = {str(i): "Positive" for i in range(1, 9)}

app = Flask(__name__)
app.json.sort_keys = False


@app.post("/api/v1/<token>/predict")
def predict(token):
    return ANSWER
