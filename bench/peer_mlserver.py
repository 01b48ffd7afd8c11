"""A peer for the V2 benchmark: MLServer serving the same model.py through a custom runtime, as
MLServer's documentation has one written (an MLModel whose load() loads the model and whose
predict() decodes the input with a codec and encodes the outputs with codecs). The same input
`text` (BYTES) and outputs `label` (BYTES) and `score` (FP32) as the V2 door; no token, limits or
metrics of ours. Runs in its own environment (requirements-mlserver.txt, .venv-mlserver)."""

import numpy as np
from mlserver import MLModel
from mlserver.codecs import NumpyCodec, StringCodec
from mlserver.types import InferenceRequest, InferenceResponse

import model
import registry


class Sentiment(MLModel):
    async def load(self):
        self.model = registry.load_one().get().model
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        texts = StringCodec.decode_input(payload.inputs[0])
        probabilities = self.model.scores(texts)
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            id=payload.id,
            outputs=[
                StringCodec.encode_output("label", model.labels(probabilities)),
                NumpyCodec.encode_output("score", np.array(probabilities, dtype=np.float32)),
            ],
        )
