"""A plain service: serves its pid; records start, SIGTERM and SIGHUP."""

import signal

import childlib as c

c.touch("ran")


def on_hup(signum, frame):
    c.event("hup")

c.exit_on_term()
signal.signal(signal.SIGHUP, on_hup)
sock = c.listener()
c.event("start")
c.serve(sock)
