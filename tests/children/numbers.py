"""Prints numbered lines for the log tests and serves on fd 3.

argv: DIR MODE [ARGS...]
  serve           print only when asked (below)
  burst N WIDTH   print lines 0..N-1 at once in large writes, record
                  "done N", then serve
  tick MS         print one line every MS milliseconds from a thread, even
                  numbers on stdout and odd ones on stderr, while serving
  raw             write invalid UTF-8 lines on both streams, then 1,000,000
                  bytes without a newline on stdout; record "wrote"; serve

A numbered line is "n 0000042" padded with "x" to WIDTH bytes (at least the
number), then a newline; numbers never repeat within one child. A
connection that sends "print N WIDTH" gets N more lines printed before the
reply; every reply is "PID NEXT" where NEXT is the next number to print.
On SIGTERM the child records "last NEXT" (nothing numbered is being written
then) and exits 0.
"""

import os
import signal
import sys
import threading
import time

import childlib as c

lock = threading.Lock()
next_n = 0


def emit(count, width, fd=1):
    """Prints `count` numbered lines on `fd`, in writes of at most 64 KiB."""
    global next_n
    with lock:
        buf = []
        size = 0
        for _ in range(count):
            line = ("n %07d " % next_n).ljust(width, "x") + "\n"
            next_n += 1
            buf.append(line)
            size += len(line)
            if size >= 65536:
                write_all(fd, "".join(buf).encode())
                buf, size = [], 0
        if buf:
            write_all(fd, "".join(buf).encode())


def write_all(fd, data):
    while data:
        data = data[os.write(fd, data):]


def on_term(signum, frame):
    with lock:
        c.event("last", next_n)
        os._exit(0)


def ticker(ms):
    while True:
        emit(1, 0, 1 if next_n % 2 == 0 else 2)
        time.sleep(ms / 1000.0)


def serve(sock):
    while True:
        conn, _ = sock.accept()
        with conn:
            conn.settimeout(5)
            try:
                words = conn.recv(1024).split()
                if len(words) == 3 and words[0] == b"print":
                    emit(int(words[1]), int(words[2]))
                conn.sendall(b"%d %d\n" % (os.getpid(), next_n))
            except OSError:
                pass


signal.signal(signal.SIGTERM, on_term)
sock = c.listener()
mode = sys.argv[2]
c.event("start", mode)
if mode == "burst":
    n = int(sys.argv[3])
    emit(n, int(sys.argv[4]))
    c.event("done", n)
elif mode == "tick":
    threading.Thread(target=ticker, args=(float(sys.argv[3]),), daemon=True).start()
elif mode == "raw":
    write_all(1, b"bad \xff\xfe utf-8 \xc3\x28 and a NUL \x00 on stdout\n")
    write_all(2, b"bad \x80\x81 on stderr\r\n")
    write_all(1, bytes(ord("a") + i % 26 for i in range(1000000)))
    c.event("wrote")
serve(sock)
