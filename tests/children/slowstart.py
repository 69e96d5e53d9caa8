"""A child that takes argv[2] seconds (default 60) before it serves, as an
application importing a large code base does. Records "start" at once,
"term" on SIGTERM (then exits 0), and "serving" once it serves."""

import sys
import time

import childlib as c

c.exit_on_term()
c.event("start")
time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 60.0)
sock = c.listener()
c.event("serving")
c.serve(sock)
