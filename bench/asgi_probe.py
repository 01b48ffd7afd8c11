"""A probe, not a door: what the service's predict path would do on gunicorn's own `asgi` worker.

The service's WSGI app (api.create_app: request id, token check, the contract, the registry, the
metrics and the log line) is called unchanged, inline on the event loop, from a minimal ASGI shim:
only what a well-formed predict request needs, nothing for slow clients, websockets or the rest of
the routes. `make bench` loads it beside the service to show what moving the service to that worker
(issue #26) would be worth before anyone builds it; `floor.bare_asgi` is that worker's floor.
"""

import io

import api
from bench.floor import lifespan

APP = api.create_app()


async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        return await lifespan(receive, send)
    if scope["type"] != "http":
        return
    body, more = [], True
    while more:
        message = await receive()
        body.append(message.get("body", b""))
        more = message.get("more_body", False)
    data = b"".join(body)
    headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
    environ = {
        "REQUEST_METHOD": scope["method"],
        "PATH_INFO": scope["path"],
        "QUERY_STRING": scope["query_string"].decode("latin-1"),
        "CONTENT_TYPE": headers.get("content-type", ""),
        "CONTENT_LENGTH": str(len(data)),
        "SERVER_NAME": "localhost",
        "SERVER_PORT": "443",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "wsgi.url_scheme": "https",
        "wsgi.input": io.BytesIO(data),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }
    for name, value in headers.items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    answered = []

    def start_response(status, response_headers, exc_info=None):
        answered[:] = [int(status[:3]), response_headers]

    chunks = APP(environ, start_response)
    content = b"".join(chunks)
    if hasattr(chunks, "close"):
        chunks.close()
    status, response_headers = answered
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(k.lower().encode(), v.encode()) for k, v in response_headers],
        }
    )
    await send({"type": "http.response.body", "body": content})
