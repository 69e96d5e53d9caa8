"""A notify-protocol child. argv[2] is the mode:

  ready AFTER        send READY=1 (and STATUS=) after AFTER seconds, then serve
  never              never send READY=1
  watchdog N         READY=1 at once, WATCHDOG=1 every WATCHDOG_USEC/4 for N
                     pings, then stop pinging (a frozen event loop)
"""

import os
import sys
import threading
import time

import childlib as c


mode = sys.argv[2]
c.exit_on_term()
sock = c.listener()
c.event("start", os.environ.get("WATCHDOG_USEC", "-"))
if mode == "ready":
    time.sleep(float(sys.argv[3]))
    c.notify("STATUS=warmed up\nREADY=1")
    c.event("ready")
elif mode == "watchdog":
    c.notify("READY=1")
    every = int(os.environ["WATCHDOG_USEC"]) / 4e6
    pings = int(sys.argv[3])

    def pinger():
        for _ in range(pings):
            c.notify("WATCHDOG=1")
            time.sleep(every)
        c.event("frozen")

    threading.Thread(target=pinger, daemon=True).start()
c.serve(sock)
