"""Reports the process attributes it started with into <dir>/attrs-PID.json
(every resource limit, umask, nice value, uid), then serves.

With "hog STEP_MIB CAP_MIB" after the dir it then grows its memory by
STEP_MIB every 50 ms up to CAP_MIB (pages touched, so they are resident),
recording "rss BYTES" events as it goes; with "grandhog ..." a grandchild in
its process group does the growing instead. With "hold MIB" it holds that
much and no more. SIGTERM is recorded as a "term" event, then it exits.
"""

import json
import os
import resource
import signal
import sys
import time

import childlib as c

LIMITS = {
    "core": resource.RLIMIT_CORE,
    "cpu": resource.RLIMIT_CPU,
    "data": resource.RLIMIT_DATA,
    "fsize": resource.RLIMIT_FSIZE,
    "memlock": resource.RLIMIT_MEMLOCK,
    "nofile": resource.RLIMIT_NOFILE,
    "nproc": resource.RLIMIT_NPROC,
    "stack": resource.RLIMIT_STACK,
}
MIB = 1 << 20


def limit(n):
    return "unlimited" if n == resource.RLIM_INFINITY else n


def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def grow(step_mib, cap_mib):
    held = []
    while len(held) * step_mib < cap_mib:
        block = bytearray(step_mib * MIB)
        block[::4096] = b"\x01" * (len(block) // 4096)  # make every page resident
        held.append(block)
        c.event("rss", rss())
        time.sleep(0.05)
    c.event("capped", rss())
    while True:
        time.sleep(3600)


def on_term(signum, frame):
    c.event("term")
    os._exit(0)


signal.signal(signal.SIGTERM, on_term)

mask = os.umask(0)
os.umask(mask)
report = {
    "pid": os.getpid(),
    "uid": os.getuid(),
    "umask": "%03o" % mask,
    "nice": os.nice(0),
    "limits": {
        name: [limit(x) for x in resource.getrlimit(r)] for name, r in LIMITS.items()
    },
}
c.write_atomic("attrs-%d.json" % os.getpid(), json.dumps(report))

mode = sys.argv[2] if len(sys.argv) > 2 else ""
if mode == "hog":
    c.event("start")
    grow(int(sys.argv[3]), int(sys.argv[4]))
elif mode == "grandhog":
    if os.fork() == 0:
        # Stays in the child's process group.
        signal.signal(signal.SIGTERM, on_term)
        grow(int(sys.argv[3]), int(sys.argv[4]))
    c.event("start")
    c.serve(c.listener())
elif mode == "hold":
    block = bytearray(int(sys.argv[3]) * MIB)
    block[::4096] = b"\x01" * (len(block) // 4096)
    c.event("start", rss())
    c.serve(c.listener())
else:
    c.event("start")
    c.serve(c.listener())
