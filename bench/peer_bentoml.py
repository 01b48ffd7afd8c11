"""A peer for the benchmark: the same model.py as a BentoML 1.4 service, as its documentation
suggests (a service class that loads the model once, an @bentoml.api method), 2 workers. BentoML
puts the argument in the body by name: POST /predict with {"tweets": {...}}. No token, limits or
metrics. Runs in the benchmark's own environment (requirements-bench.txt)."""

import bentoml

import registry


@bentoml.service(workers=2)
class Sentiment:
    def __init__(self):
        self.model = registry.load_one().get().model

    @bentoml.api
    def predict(self, tweets: dict[str, str]) -> dict[str, str]:
        return dict(zip(tweets, self.model.run(list(tweets.values())), strict=True))
