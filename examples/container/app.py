#!/usr/bin/env python3
"""A small web service the way it runs in the container image: it never
binds a port. The supervisor (PID 1 of the container) binds 0.0.0.0:8420
and starts this process with the listening socket as fd 3 (LISTEN_FDS=1,
LISTEN_PID=<our pid>); uvicorn serves on that socket. GET /healthz is what
the supervisor's `[health] http` probe asks (2xx = healthy), GET / the
service itself. Logs go to stdout, which is the supervisor's stdout and so
the container engine's log (`log.to = "stdout"`).
"""

import logging
import os
import socket
import sys

import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Route

log = logging.getLogger("app")


async def index(request):
    return JSONResponse({"pid": os.getpid(), "hostname": socket.gethostname()})


async def healthz(request):
    return PlainTextResponse("ok\n")


def inherited_socket():
    """fd 3 from the supervisor, or None when not started by it."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
        return None
    return socket.socket(fileno=3)


def main():
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(name)s: %(message)s")
    sock = inherited_socket()
    if sock is None:
        sys.exit("app: no listening socket handed over; run it under `supervisor run`")
    log.info("serving (pid %d) on %s:%d", os.getpid(), *sock.getsockname()[:2])
    app = Starlette(routes=[Route("/", index), Route("/healthz", healthz)])
    uvicorn.Server(uvicorn.Config(app, log_level="info")).run(sockets=[sock])


if __name__ == "__main__":
    main()
