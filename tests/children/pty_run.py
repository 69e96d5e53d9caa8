"""Run a command on a new pseudo-terminal, as a person at a terminal would:
`pty_run.py OUTFILE ARGV...`. The command is a session leader with the pty
as its controlling terminal; everything it writes there is copied to
OUTFILE. Exits with the command's exit code (128+N for signal N).
"""

import os
import pty
import sys

out = sys.argv[1]
argv = sys.argv[2:]
pid, fd = pty.fork()
if pid == 0:
    try:
        os.execvp(argv[0], argv)
    finally:
        os._exit(127)
with open(out, "wb", buffering=0) as f:
    while True:
        try:
            data = os.read(fd, 65536)
        except OSError:
            break
        if not data:
            break
        f.write(data)
_, status = os.waitpid(pid, 0)
if os.WIFSIGNALED(status):
    sys.exit(128 + os.WTERMSIG(status))
sys.exit(os.WEXITSTATUS(status))
