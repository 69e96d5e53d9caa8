"""A child that takes argv[2] seconds (default 60) before it serves, as an
application importing a large code base does. Records "start" at once,
"term" on SIGTERM (then exits 0), and "serving" once it serves."""

import os
import signal
import sys
import time

import childlib as c


def on_term(signum, frame):
    c.event("term")
    os._exit(0)


signal.signal(signal.SIGTERM, on_term)
c.event("start")
time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 60.0)
sock = c.listener()
c.event("serving")
c.serve(sock)
