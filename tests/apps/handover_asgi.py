"""A Starlette app (FastAPI's own routing and request handling; FastAPI
adds only validation and docs on top) for the handover test under uvicorn.
Importing it takes APP_IMPORT_SECONDS (default 1), as an application that
loads its models does; uvicorn accepts nothing until then.

GET / answers "asgi <pid>"; GET /slow?s=SECS answers "asgi <pid> slow"
after SECS seconds (default 1); GET /health answers "ok"."""

import asyncio
import os
import time

from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

time.sleep(float(os.environ.get("APP_IMPORT_SECONDS", "1")))


async def home(request):
    return PlainTextResponse("asgi %d\n" % os.getpid())


async def slow(request):
    await asyncio.sleep(float(request.query_params.get("s", "1")))
    return PlainTextResponse("asgi %d slow\n" % os.getpid())


async def health(request):
    return PlainTextResponse("ok\n")


app = Starlette(
    routes=[Route("/", home), Route("/slow", slow), Route("/health", health)]
)
