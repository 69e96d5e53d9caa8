"""A minimal WSGI app for the gunicorn test: every request is answered with
"wsgi <worker pid> <master pid>\n"."""

import os


def app(environ, start_response):
    body = b"wsgi %d %d\n" % (os.getpid(), os.getppid())
    start_response(
        "200 OK",
        [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))],
    )
    return [body]
