"""Records its start with the earlier children still alive at that moment
("start PID T alive=..."); on SIGTERM takes 0.5 s before exiting, recording
"term" and "exit"."""

import os
import signal
import time

import childlib as c


def on_term(signum, frame):
    c.event("term")
    time.sleep(0.5)
    c.event("exit")
    os._exit(0)


signal.signal(signal.SIGTERM, on_term)
others = c.live_predecessors()
c.event("start", "alive=" + ",".join(str(p) for p in others))
c.serve(c.listener())
