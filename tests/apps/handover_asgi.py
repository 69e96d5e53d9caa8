"""A Starlette app (FastAPI's own routing and request handling; FastAPI
adds only validation and docs on top) for the handover test under uvicorn.
Importing it takes APP_IMPORT_SECONDS (default 1), as an application that
loads its models does; uvicorn accepts nothing until then.

GET / answers "asgi <pid>"; GET /slow?s=SECS answers "asgi <pid> slow"
after SECS seconds (default 1); GET /health answers "ok". A request with
`id=ID` in its query has ID appended to `seen.log` beside this file the
moment the app is handed it, before anything else: the test tells a
request the server never read from one it failed to answer."""

import asyncio
import os
import time

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

time.sleep(float(os.environ.get("APP_IMPORT_SECONDS", "1")))

SEEN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "seen.log")


def saw(request):
    """One O_APPEND write per request with an id."""
    rid = request.query_params.get("id")
    if rid is None:
        return
    fd = os.open(SEEN, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (rid + "\n").encode())
    finally:
        os.close(fd)


async def home(request):
    saw(request)
    return PlainTextResponse("asgi %d\n" % os.getpid())


async def slow(request):
    saw(request)
    await asyncio.sleep(float(request.query_params.get("s", "1")))
    return PlainTextResponse("asgi %d slow\n" % os.getpid())


async def health(request):
    return PlainTextResponse("ok\n")


app = Starlette(
    routes=[Route("/", home), Route("/slow", slow), Route("/health", health)]
)
