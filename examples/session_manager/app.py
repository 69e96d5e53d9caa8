#!/usr/bin/env python3
"""A runnable miniature of the session manager, migrated to the supervisor.

What changed on the application side (see docs/session-manager.md):

1. It never binds port 8420. The supervisor binds it, then starts this
   process with the listening socket as fd 3 (LISTEN_FDS=1,
   LISTEN_PID=<our pid>); uvicorn serves on that socket:
       uvicorn.Server(config).run(sockets=[socket.socket(fileno=3)])
   Without a handed-over socket it exits at once, before any side effect.
2. The start-up side effect (creating a chat topic for every session that
   has none) runs in the ASGI lifespan, so only in a process that already
   serves the port the supervisor holds - never in a doomed duplicate.
3. The new topic id is saved at once (atomic replace), so a crash right
   after start-up does not make the next start create the topic again.

The "chat API" is the local stub in topic_stub.py (SM_TOPIC_API). With
SM_CRASH_FLAG pointing at a file that exists, every start crashes shortly
after start-up (os._exit(1), like the watchdog did): a crash loop to watch.

Written against Starlette; with FastAPI it is the same code with
`app = FastAPI(lifespan=lifespan)`.
"""

import argparse
import asyncio
import contextlib
import json
import logging
import os
import socket
import sys
import urllib.request

import uvicorn
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

log = logging.getLogger("session_manager")

DEFAULT_SESSIONS = [
    {"id": "c1d607d3", "friendly_name": "codex-doc-reviewer", "telegram_thread_id": None},
]


class SessionManager:
    def __init__(self, state_dir, topic_api):
        self.state_file = os.path.join(state_dir, "sessions.json")
        self.topic_api = topic_api.rstrip("/")
        os.makedirs(state_dir, exist_ok=True)
        self.sessions = self._load_state()

    def _load_state(self):
        try:
            with open(self.state_file) as f:
                return json.load(f)
        except FileNotFoundError:
            return [dict(s) for s in DEFAULT_SESSIONS]

    def _save_state(self):
        tmp = "%s.tmp%d" % (self.state_file, os.getpid())
        with open(tmp, "w") as f:
            json.dump(self.sessions, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_file)

    def _create_topic(self, name):
        req = urllib.request.Request(
            self.topic_api + "/createForumTopic",
            data=json.dumps({"name": name}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.load(resp)["result"]["message_thread_id"]

    async def reconcile_topics(self):
        """The side effect: one topic per session that has none."""
        for s in self.sessions:
            if s.get("telegram_thread_id"):
                continue
            name = "%s [%s]" % (s.get("friendly_name") or "session", s["id"])
            thread_id = await asyncio.to_thread(self._create_topic, name)
            s["telegram_thread_id"] = thread_id
            self._save_state()  # at once: a crash now must not cause a second topic
            log.info("Auto-created topic for session %s thread=%s", s["id"], thread_id)


def build_app(sm, crash_flag):
    @contextlib.asynccontextmanager
    async def lifespan(app):
        # Runs only once uvicorn serves the inherited socket: this process
        # holds the port, and the supervisor guarantees it is the only one.
        await sm.reconcile_topics()
        log.info("Session manager ready (pid %d)", os.getpid())
        if crash_flag and os.path.exists(crash_flag):
            log.error("crash flag %s present: crashing after start-up", crash_flag)
            asyncio.get_running_loop().call_later(0.05, os._exit, 1)
        yield
        log.info("Session manager shutting down (pid %d)", os.getpid())

    async def index(request):
        return JSONResponse({"pid": os.getpid(), "sessions": sm.sessions})

    return Starlette(routes=[Route("/", index)], lifespan=lifespan)


def inherited_socket():
    """fd 3 from the supervisor, or None when not started by it."""
    if os.environ.get("LISTEN_PID") != str(os.getpid()) or os.environ.get("LISTEN_FDS") != "1":
        return None
    return socket.socket(fileno=3)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--state-dir", default=os.environ.get("SM_STATE_DIR", "state"))
    p.add_argument("--topic-api", default=os.environ.get("SM_TOPIC_API", "http://127.0.0.1:8421"))
    p.add_argument("--crash-flag", default=os.environ.get("SM_CRASH_FLAG"))
    args = p.parse_args()
    logging.basicConfig(
        level=logging.INFO, stream=sys.stdout, format="%(levelname)s %(name)s: %(message)s"
    )

    sock = inherited_socket()
    if sock is None:
        # Nothing has happened yet: no state read, no topic, no port.
        sys.exit("session_manager: no listening socket handed over; run it under `supervisor run`")
    log.info("Starting Claude Session Manager (pid %d) on %s:%d", os.getpid(), *sock.getsockname()[:2])

    sm = SessionManager(args.state_dir, args.topic_api)
    config = uvicorn.Config(build_app(sm, args.crash_flag), log_level="info", lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])


if __name__ == "__main__":
    main()
