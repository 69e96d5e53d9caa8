"""The incident's service: at start-up it "creates a topic" (appends to
topics.txt) whenever its state file has no id, then stores the id. Some
runs crash (exit 1) shortly after start-up. Records "start ... alive=..."
with earlier children still alive, touches ready-PID once started, and
records "crash" or "serving" once it has decided."""

import json
import os
import random
import sys
import time

import childlib as c

others = c.live_predecessors()
c.event("start", "alive=" + ",".join(str(p) for p in others))
try:
    with open(c.path("app_state.json")) as f:
        data = json.load(f)
except (OSError, ValueError):
    data = {}
if not data.get("id"):
    time.sleep(0.05)  # the remote API call
    tid = "topic-%d" % os.getpid()
    c.append("topics.txt", tid)
    c.write_atomic("app_state.json", json.dumps({"id": tid}))
c.touch("ready-%d" % os.getpid())
if random.random() < float(os.environ.get("CRASH_P", "0.3")):
    time.sleep(random.uniform(0.1, 0.4))
    c.event("crash")
    sys.exit(1)
c.event("serving")
c.serve(c.listener())
