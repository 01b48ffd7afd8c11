"""The entry point: gunicorn imports `app`; `python wsgi.py` runs a TLS development server."""

import logging
import os

from api import create_app

app = create_app()

if __name__ == "__main__":
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # its request lines show the token
    app.run(
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "5000")),
        ssl_context=(
            os.environ.get("TLS_CERT", "server.crt"),
            os.environ.get("TLS_KEY", "server.key"),
        ),
    )
