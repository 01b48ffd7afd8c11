"""The Open Inference Protocol door (KServe's "V2", Triton's and MLServer's tongue).

    protocol.py            the protocol's tensors, names, errors and metadata, over the contract
    rest.py                /v2/... on the HTTPS server: a Flask blueprint api.create_app registers
    grpc_server.py         inference.GRPCInferenceService, a process of its own (make api-start)
    supervisor.py          starts, reloads and stops the gRPC processes from gunicorn's master
    grpc_predict_v2.proto  the protocol's gRPC service; *_pb2*.py are generated from it and
                           committed (make v2-stubs), so the server needs no code generator

Both doors take one BYTES input `text` and answer the outputs `label` and `score` for every model of
the registry; the model name `stable` reaches whatever the stable alias serves (docs/v2.md).
"""

import service

OWN = {
    "HOST": "0.0.0.0",  # noqa: S104 (as gunicorn's bind: every interface, behind TLS and a token)
    "GRPC_PORT": 8001,  # Triton's
    "GRPC_WORKERS": 1,  # gRPC processes beside gunicorn (make api-start); 0 for none
    "GRPC_THREADS": 4,  # calls a gRPC process works on at once; more wait their turn
    "GRPC_MAX_CALLS": 128,  # calls a gRPC process holds at once, working or waiting; past it,
    # gRPC's RESOURCE_EXHAUSTED: a bound on the messages held, each up to MAX_BODY_BYTES
    "TLS_CERT": str(service.ROOT / "server.crt"),  # the certificate gunicorn serves
    "TLS_KEY": str(service.ROOT / "server.key"),
    "GRACEFUL_TIMEOUT": 8,  # seconds a stopping gRPC process gives the calls in flight
}
DOOR = service.Door(OWN, frozenset({"GRPC_WORKERS"}))
DEFAULTS = service.defaults(DOOR)  # what a gRPC process reads
