"""A WSGI app for the handover test under gunicorn. Importing it (in each
worker) takes APP_IMPORT_SECONDS (default 1), as an application that loads
its models does.

GET / answers "wsgi <worker pid> <master pid>"; GET /slow sleeps a second
first; GET /health answers "ok"."""

import os
import time

time.sleep(float(os.environ.get("APP_IMPORT_SECONDS", "1")))


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/health":
        body = b"ok\n"
    else:
        if path == "/slow":
            time.sleep(1)
        body = b"wsgi %d %d\n" % (os.getpid(), os.getppid())
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]
