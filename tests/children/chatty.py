"""A service that logs on demand: every connection makes it print one line
of argv[2] bytes (default 1000) to stdout and one to stderr, tagged with a
request counter, before it answers with its pid. Lets a test fill a disk
through child.log at its own pace and then find a given line again."""

import os
import sys

import childlib as c

SIZE = int(sys.argv[2]) if len(sys.argv) > 2 else 1000

c.exit_on_term()
sock = c.listener()
c.event("start")
count = 0


def chat():
    global count
    count += 1
    tag = "chatty-%d-%d " % (os.getpid(), count)
    payload = (tag + "x" * max(0, SIZE - len(tag))) + "\n"
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.write(payload)
            stream.flush()
        except OSError:
            pass


c.serve(sock, on_request=chat)
