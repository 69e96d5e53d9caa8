#!/usr/bin/env python3
"""A local stand-in for the chat API (Telegram's createForumTopic).

POST /createForumTopic {"name": ...} appends one line "THREAD_ID NAME" to
--log and answers {"ok": true, "result": {"message_thread_id": N}}.
GET /topics lists what was created. Standard library only.

    python3 examples/session_manager/topic_stub.py --port 8421 --log run/topics.log
"""

import argparse
import http.server
import json
import os
import threading


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=8421, help="0 picks a free port")
    p.add_argument("--log", default="topics.log", help="one line per topic created")
    p.add_argument("--port-file", help="write the port here once listening")
    args = p.parse_args()
    lock = threading.Lock()

    def topics():
        try:
            with open(args.log) as f:
                return [line.rstrip("\n") for line in f if line.strip()]
        except FileNotFoundError:
            return []

    class Handler(http.server.BaseHTTPRequestHandler):
        def reply(self, obj, status=200):
            body = json.dumps(obj).encode() + b"\n"
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            if self.path == "/topics":
                self.reply({"ok": True, "result": topics()})
            else:
                self.reply({"ok": False, "description": "not found"}, 404)

        def do_POST(self):
            if self.path != "/createForumTopic":
                return self.reply({"ok": False, "description": "not found"}, 404)
            n = int(self.headers.get("Content-Length") or 0)
            name = json.loads(self.rfile.read(n) or b"{}").get("name", "?")
            with lock:
                thread_id = 8000 + len(topics()) + 1
                fd = os.open(args.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
                try:
                    os.write(fd, ("%d %s\n" % (thread_id, name)).encode())
                finally:
                    os.close(fd)
            self.reply({"ok": True, "result": {"message_thread_id": thread_id, "name": name}})

        def log_message(self, fmt, *a):
            print("topic_stub: " + fmt % a, flush=True)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    port = server.server_address[1]
    if args.port_file:
        tmp = args.port_file + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.replace(tmp, args.port_file)
    print("topic_stub listening on 127.0.0.1:%d, topics in %s" % (port, args.log), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
