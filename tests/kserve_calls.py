"""The KServe SDK's clients, unchanged, for tests/test_v2_clients.py, in a process of their own.

Reads {"door": "rest" or "grpc", "url", "cafile", "token", "models", "tweets"} on standard input;
prints, for each model, whether the server and model are ready and what infer answered:
{name: {"ready", "model_name", "model_version", "id", "label", "score"}}.
"""

import asyncio
import json
import sys

import numpy as np
from kserve import (
    InferenceGRPCClient,
    InferenceRESTClient,
    InferInput,
    InferRequest,
    RESTConfig,
)


def request(name, tweets, door):
    tensor = InferInput("text", [len(tweets)], "BYTES")
    tensor.set_data_from_numpy(np.array(tweets, dtype=np.object_))
    return InferRequest(name, [tensor], request_id=f"kserve-{door}")


async def over_rest(call, name):
    client = InferenceRESTClient(RESTConfig(protocol="v2", verify=call["cafile"], retries=0))
    try:
        url = call["url"]
        ready = await client.is_server_ready(url) and await client.is_model_ready(url, name)
        headers, seen = {"Authorization": f"Bearer {call['token']}"}, {}
        answer = await client.infer(
            url,
            request(name, call["tweets"], "rest"),
            model_name=name,
            headers=headers,
            response_headers=seen,
        )
        # The SDK's InferResponse.from_bytes keeps no model_version (the answer's JSON has it):
        # the X-Model-Version header says it too.
        answer.model_version = answer.model_version or seen.get("x-model-version")
        return ready, answer
    finally:
        await client.close()


async def over_grpc(call, name):
    async with InferenceGRPCClient(
        call["url"], use_ssl=True, root_certificates=call["cafile"], retries=0
    ) as client:
        ready = await client.is_server_ready() and await client.is_model_ready(name)
        metadata = (("authorization", f"Bearer {call['token']}"),)
        answer = await client.infer(request(name, call["tweets"], "grpc"), headers=metadata)
        return ready, answer


def main():
    call = json.load(sys.stdin)
    results = {}
    for name in call["models"]:
        ready, answer = asyncio.run(
            (over_rest if call["door"] == "rest" else over_grpc)(call, name)
        )
        outputs = {output.name: output.as_numpy() for output in answer.outputs}
        labels = [x.decode() if isinstance(x, bytes) else x for x in outputs["label"].tolist()]
        results[name] = {
            "ready": bool(ready),
            "model_name": answer.model_name,
            "model_version": answer.model_version,
            "id": answer.id,
            "label": labels,
            "score": outputs["score"].astype(np.float32).tolist(),
        }
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
