"""A plain service: serves its pid; records start, SIGTERM and SIGHUP."""

import os
import signal

import childlib as c

c.touch("ran")


def on_term(signum, frame):
    c.event("term")
    os._exit(0)


def on_hup(signum, frame):
    c.event("hup")


signal.signal(signal.SIGTERM, on_term)
signal.signal(signal.SIGHUP, on_hup)
sock = c.listener()
c.event("start")
c.serve(sock)
