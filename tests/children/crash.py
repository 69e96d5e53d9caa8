"""Records its start, optionally runs for argv[2] seconds, records its exit
and exits 1."""

import sys
import time

import childlib as c

c.event("start")
if len(sys.argv) > 2:
    time.sleep(float(sys.argv[2]))
c.event("exit")
sys.exit(1)
