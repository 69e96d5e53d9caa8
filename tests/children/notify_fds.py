"""A notify client that passes descriptors, as real ones do.

It sends READY=1 and a STATUS= with the read ends of two pipes attached
(as a client handing over a file-descriptor store would), then checks that
the supervisor closed them: writing to the pipes fails with EPIPE once no
reader is left ("fds-closed", else "fds-open" after 5 s). Then it sends a
barrier as sd_notify_barrier() does: BARRIER=1 with the write end of a
pipe, and waits up to 5 s for that end to be closed ("barrier ok" or
"barrier timeout"). Then it serves.
"""

import os
import select
import time

import childlib as c


def all_readers_gone(w, deadline):
    while time.monotonic() < deadline:
        try:
            os.write(w, b"x")
        except BrokenPipeError:
            return True
        except BlockingIOError:
            pass
        time.sleep(0.01)
    return False


sock = c.listener()
c.event("start")

pipes = [os.pipe() for _ in range(2)]
for _, w in pipes:
    os.set_blocking(w, False)
c.notify("READY=1\nSTATUS=passed two fds", [r for r, _ in pipes])
for r, _ in pipes:
    os.close(r)
deadline = time.monotonic() + 5
closed = all(all_readers_gone(w, deadline) for _, w in pipes)
c.event("fds-closed" if closed else "fds-open")

r, w = os.pipe()
c.notify("BARRIER=1", [w])
os.close(w)
p = select.poll()
p.register(r, select.POLLHUP)
c.event("barrier", "ok" if p.poll(5000) else "timeout")

c.serve(sock)
